import { RedisServer } from '../test/support/redis-server';
import { Upstream } from '../test/support/upstream';
import {
  EnvoyFront,
  Inspector,
  Recorder,
  histogram,
  load,
  parseAnswer,
  sleep,
  spawnReplica,
  stateHistogram,
  statusHistogram,
  stopReplica,
  type Drill,
  type Replica,
} from './lib';

/**
 * SIGKILL one of two replicas while it is accepting and dispatching. Every 202 must have a run,
 * every run must end within the lease, and only idempotent (GET) runs may reach the upstream twice.
 */
export const killSidecarDrill: Drill = {
  id: 'kill-sidecar',
  title: 'SIGKILL a replica mid-accept and mid-dispatch (second replica running)',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    const total = ctx.mode === 'full' ? 400 : 120;
    const leaseS = 2;
    const redis = await RedisServer.start();
    const app = await Upstream.start((req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'), 300);
    });
    const inspector = new Inspector(redis.url);
    let a: Replica | undefined;
    let b: Replica | undefined;
    const envoys: EnvoyFront[] = [];
    try {
      const env = {
        REDIS_URL: redis.url,
        DISPATCH_URL: app.url,
        LEASE_TIMEOUT: String(leaseS),
        REDISPATCH_INTERRUPTED: 'idempotent',
        DISPATCH_CONCURRENCY: '10',
      };
      a = await spawnReplica('A', env);
      b = await spawnReplica('B', env);
      for (const r of [a, b]) envoys.push(await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${r.extprocPort}`, app: `127.0.0.1:${app.port}` } }));
      rec.setup.push(
        `2 spawned replicas (role all) sharing one Redis, each behind its own real Envoy (shipped envoy.yaml); LEASE_TIMEOUT=${leaseS}, REDISPATCH_INTERRUPTED=idempotent, MAX_DISPATCH_ATTEMPTS=3, DISPATCH_CONCURRENCY=10`,
        `${total} async requests from 8 concurrent clients, alternating replicas; every 3rd is GET, the rest POST; upstream answers after 300 ms`,
        'replica A is SIGKILLed once 40% of the 202s are in (it is then accepting and holding ~10 dispatches)',
      );
      let accepted = 0;
      let killAt = 0;
      const killing = (async () => {
        while (accepted < total * 0.4) await sleep(5);
        killAt = Date.now();
        a!.proc.kill('SIGKILL');
        ctx.log(`kill-sidecar: SIGKILL A after ${accepted} 202s`);
      })();
      const sent = await load({
        total,
        concurrency: 8,
        send: async (i) => {
          const method = i % 3 === 0 ? 'GET' : 'POST';
          const via = i % 2 === 0 ? 'A' : 'B';
          const envoy = envoys[i % 2]!;
          const r = await envoy.process({
            method,
            path: `/work/${i}?async=true`,
            headers: { 'content-type': 'text/plain' },
            body: method === 'GET' ? undefined : `body ${i}`,
          });
          const p = parseAnswer(r.status, r.body);
          if (p.status === 202) accepted++;
          return { ...p, method, via };
        },
      });
      await killing;
      const ok = sent.filter((s) => s.status === 202 && s.id);
      const ids = ok.map((s) => s.id!);
      const methodOf = new Map(ok.map((s) => [s.id!, s.method]));
      const final = await inspector.waitFinal(ids, 30_000);
      const recoveredAt = final.at;
      const all = await inspector.allIds();
      const unseen = all.filter((id) => !methodOf.has(id));
      const unseenRuns = await inspector.runs(unseen);
      await sleep(500);
      const perRun = new Map<string, number>();
      for (const r of app.requests) {
        const id = r.headers.find(([k]) => k === 'x-async-run-id')?.[1] ?? 'none';
        perRun.set(id, (perRun.get(id) ?? 0) + 1);
      }
      const dupes = [...perRun.entries()].filter(([, n]) => n > 1);
      const postDupes = dupes.filter(([id]) => (methodOf.get(id) ?? unseenRuns.get(id)?.method) !== 'GET');
      const missing = [...final.runs.values()].filter((r) => r.status === '').length;
      const interrupted = [...final.runs.entries()].filter(([, r]) => r.error === 'interrupted');
      const lateInterrupted = interrupted.filter(([, r]) => r.finishedAt - killAt > (leaseS + 2) * 1000);
      const notDispatched = ids.filter((id) => !perRun.has(id) && final.runs.get(id)?.error !== 'interrupted');

      rec.count('requests sent', sent.length);
      rec.count('answers', statusHistogram(sent));
      rec.count('202s via A / via B', `${ok.filter((s) => s.via === 'A').length} / ${ok.filter((s) => s.via === 'B').length}`);
      rec.count('202 ids found in Redis', `${ids.length - missing} of ${ids.length}`);
      rec.count('final states of 202 runs', stateHistogram(final.runs));
      rec.count('runs still queued/running at the end', final.live);
      rec.count('runs in Redis with no 202 seen (killed mid-accept)', `${unseen.length}${unseen.length ? ` (${stateHistogram(unseenRuns)})` : ''}`);
      rec.count('upstream requests', app.requests.length);
      rec.count(
        'runs dispatched more than once',
        `${dupes.length} (methods: ${histogram(dupes.map(([id]) => methodOf.get(id) ?? '?'))}; counts: ${histogram(dupes.map(([, n]) => n))})`,
      );
      rec.count('POST runs dispatched more than once', postDupes.length);
      rec.count('runs ended interrupted (POST orphans)', `${interrupted.length} (methods: ${histogram(interrupted.map(([id]) => methodOf.get(id) ?? '?'))})`);
      rec.count('time from SIGKILL to every 202 run final', `${((recoveredAt - killAt) / 1000).toFixed(1)} s`);
      rec.count(
        'latest interrupted run ended after SIGKILL',
        interrupted.length ? `${(Math.max(...interrupted.map(([, r]) => r.finishedAt - killAt)) / 1000).toFixed(1)} s` : '-',
      );
      rec.check('every 202 has a run', missing === 0, `${missing} missing`);
      rec.check('every run reached a final state', final.live === 0, `${final.live} live`);
      rec.check(`orphans ended within lease + recovery tick (${leaseS + 2} s)`, lateInterrupted.length === 0, `${lateInterrupted.length} later`);
      rec.check('no POST run dispatched twice', postDupes.length === 0, postDupes.map(([id, n]) => `${id}×${n}`).join(' '));
      rec.check('re-dispatches carry the same x-async-run-id (every upstream request has a known run id)', !perRun.has('none'));
      rec.check(
        'every succeeded/failed run (except interrupted) reached the upstream',
        notDispatched.filter((id) => final.runs.get(id)?.status === 'succeeded').length === 0,
        `${notDispatched.length} never dispatched`,
      );
      rec.check('A really died by SIGKILL', a.proc.child.signalCode === 'SIGKILL');
    } finally {
      for (const e of envoys) await e.close();
      await stopReplica(a, 'SIGKILL');
      await stopReplica(b);
      await inspector.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
