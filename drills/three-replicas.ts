import { RedisServer } from '../test/support/redis-server';
import { Upstream } from '../test/support/upstream';
import {
  EnvoyFront,
  Inspector,
  Recorder,
  countLogs,
  histogram,
  load,
  parseAnswer,
  spawnReplica,
  stateHistogram,
  statusHistogram,
  stopReplica,
  type Drill,
  type Replica,
} from './lib';

/** Three replicas on one queue under load: each run reaches the upstream exactly once. */
export const threeReplicasDrill: Drill = {
  id: 'three-replicas',
  title: 'Three replicas sharing one queue under load',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    const total = ctx.mode === 'full' ? 600 : 200;
    const redis = await RedisServer.start();
    const app = await Upstream.start((req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'), 20);
    });
    const inspector = new Inspector(redis.url);
    const reps: Replica[] = [];
    const envoys: EnvoyFront[] = [];
    try {
      const env = { REDIS_URL: redis.url, DISPATCH_URL: app.url, DISPATCH_CONCURRENCY: '8' };
      for (const n of ['A', 'B', 'C']) reps.push(await spawnReplica(n, env));
      for (const r of reps) envoys.push(await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${r.extprocPort}`, app: `127.0.0.1:${app.port}` } }));
      rec.setup.push(
        `3 spawned replicas (role all, DISPATCH_CONCURRENCY=8) on one Redis queue; ${total} async requests (GET and POST) from 12 clients spread over the 3 replicas; upstream answers after 20 ms; dispatches counted by x-async-run-id at the upstream`,
      );
      const sent = await load({
        total,
        concurrency: 12,
        send: async (i) => {
          const method = i % 2 ? 'POST' : 'GET';
          const r = await envoys[i % 3]!.process({ method, path: `/r/${i}?async=true`, body: method === 'POST' ? 'x' : undefined });
          return { ...parseAnswer(r.status, r.body), method, via: reps[i % 3]!.name };
        },
      });
      const ids = sent.filter((s) => s.status === 202 && s.id).map((s) => s.id!);
      const final = await inspector.waitFinal(ids, 30_000);
      const per = new Map<string, number>();
      for (const r of app.requests) {
        const id = r.headers.find(([k]) => k === 'x-async-run-id')?.[1] ?? 'none';
        per.set(id, (per.get(id) ?? 0) + 1);
      }
      const once = ids.filter((id) => per.get(id) === 1).length;
      rec.count('answers', statusHistogram(sent));
      rec.count('final states', stateHistogram(final.runs));
      rec.count('upstream requests', app.requests.length);
      rec.count('dispatches per run', histogram(ids.map((id) => per.get(id) ?? 0)));
      rec.count('runs started per replica (from its logs)', reps.map((r) => `${r.name} ${countLogs(r, 'run started')}`).join(', '));
      rec.check('every 202 run dispatched exactly once', once === ids.length && app.requests.length === ids.length, `${once} of ${ids.length}`);
      rec.check(
        'every run succeeded',
        [...final.runs.values()].every((r) => r.status === 'succeeded'),
      );
      rec.check(
        'all replicas took part',
        reps.every((r) => countLogs(r, 'run started') > 0),
      );
    } finally {
      for (const e of envoys) await e.close();
      for (const r of reps) await stopReplica(r);
      await inspector.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
