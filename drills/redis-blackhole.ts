import { FaultProxy } from '../test/support/fault-proxy';
import { RedisServer } from '../test/support/redis-server';
import { Upstream } from '../test/support/upstream';
import {
  EnvoyFront,
  Inspector,
  Recorder,
  load,
  parseAnswer,
  percentile,
  spawnReplica,
  stateHistogram,
  statusHistogram,
  stopReplica,
  type Drill,
  type Replica,
  type Sent,
} from './lib';

/**
 * Blackhole Redis (the fault proxy swallows every byte, connections stay open): async requests
 * must get a 503 well inside Envoy's 2 s message timeout, and the sidecar must recover by itself
 * once the network passes again.
 */
export const redisBlackholeDrill: Drill = {
  id: 'redis-blackhole',
  title: 'Blackhole Redis, then let it pass again',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    const holeMs = ctx.mode === 'full' ? 30_000 : 10_000;
    const redis = await RedisServer.start();
    const proxy = await FaultProxy.start({ port: redis.port });
    const app = await Upstream.start(Upstream.json(200, { ok: true }));
    const inspector = new Inspector(redis.url);
    let side: Replica | undefined;
    let envoy: EnvoyFront | undefined;
    try {
      side = await spawnReplica('S', { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, DISPATCH_URL: app.url, LEASE_TIMEOUT: '5' });
      envoy = await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${side.extprocPort}`, app: `127.0.0.1:${app.port}` } });
      rec.setup.push(
        'one spawned sidecar whose REDIS_URL points at a FaultProxy in front of redis-server; REDIS_COMMAND_TIMEOUT=1 (default); the real Envoy on the shipped envoy.yaml (message_timeout 2 s)',
        `phase 1: 20 async POSTs; phase 2: proxy set to \`blackhole\` for ${holeMs / 1000} s while 4 clients keep sending; phase 3: proxy back to \`pass\`, clients keep sending until 20 more 202s (at most 60 s)`,
      );
      const send =
        (phase: string) =>
        async (i: number): Promise<Omit<Sent, 'i' | 'at' | 'latencyMs'>> => {
          const r = await envoy!.process({ method: 'POST', path: `/${phase}/${i}?async=true`, headers: { 'content-type': 'text/plain' }, body: 'x' });
          return { ...parseAnswer(r.status, r.body), method: 'POST', via: phase };
        };
      const before = await load({ total: 20, concurrency: 4, send: send('before') });

      proxy.setMode('blackhole');
      const holeAt = Date.now();
      const during = await load({ total: 100_000, concurrency: 4, paceMs: 100, stop: () => Date.now() - holeAt > holeMs, send: send('during') });
      proxy.setMode('pass');
      const passAt = Date.now();
      let afterOk = 0;
      let firstOkAt = 0;
      const after = await load({
        total: 100_000,
        concurrency: 4,
        paceMs: 50,
        stop: () => afterOk >= 20 || Date.now() - passAt > 60_000,
        send: async (i) => {
          const r = await send('after')(i);
          if (r.status === 202) {
            afterOk++;
            if (!firstOkAt) firstOkAt = Date.now();
          }
          return r;
        },
      });
      const lat = during.map((s) => s.latencyMs);
      const ok = [...before, ...during, ...after].filter((s) => s.status === 202 && s.id);
      const final = await inspector.waitFinal(
        ok.map((s) => s.id!),
        20_000,
      );
      const missing = [...final.runs.values()].filter((r) => r.status === '').length;
      const okIds = new Set(ok.map((s) => s.id!));
      const unseen = (await inspector.allIds()).filter((id) => !okIds.has(id));
      const ready = await fetch(`http://127.0.0.1:${side.adminPort}/readyz`)
        .then((r) => r.status)
        .catch(() => -1);

      rec.count('phase 1 answers', statusHistogram(before));
      rec.count(`phase 2 answers (blackhole ${holeMs / 1000} s)`, statusHistogram(during));
      rec.count('phase 2 latency p50 / p99 / max', `${percentile(lat, 50)} / ${percentile(lat, 99)} / ${Math.max(0, ...lat)} ms`);
      rec.count('phase 3 answers', statusHistogram(after));
      rec.count('time from `pass` to the first 202', firstOkAt ? `${((firstOkAt - passAt) / 1000).toFixed(1)} s` : 'never (within 60 s)');
      rec.count('202 runs found / final states', `${ok.length - missing} of ${ok.length} / ${stateHistogram(final.runs)}`);
      rec.count('runs in Redis whose client got no 202 (a 503 for a run that exists)', unseen.length);
      rec.count('/readyz after the drill', ready);
      rec.check(
        "no request hung past Envoy's 2 s message timeout (no 504)",
        during.every((s) => s.status !== 504) && Math.max(0, ...lat) < 2000,
        `max ${Math.max(0, ...lat)} ms`,
      );
      rec.check('blackholed async requests got 503 store_unavailable', during.length > 0 && during.every((s) => s.status === 503), statusHistogram(during));
      rec.check('recovered by itself: 20 new 202s after the network passed again', afterOk >= 20, `${afterOk} 202s in 60 s`);
      rec.check('no run exists whose client was told 503', unseen.length === 0, `${unseen.length} runs`);
      rec.check('every 202 has a run that ended', missing === 0 && final.live === 0, `${missing} missing, ${final.live} live`);
      if (afterOk < 20) {
        const cmd = await inspector.redis.client('LIST');
        rec.notes.push(
          `Redis CLIENT LIST at the end (the sidecar's connections through the proxy): ${String(cmd)
            .split('\n')
            .filter((l) => l.includes('name=eas'))
            .map((l) =>
              l.replace(
                / (fd|age|idle|flags|db|sub|psub|ssub|multi|qbuf|qbuf-free|argv-mem|multi-mem|rbs|rbp|obl|oll|omem|tot-mem|events|user|redir|resp|laddr|id)=\S*/g,
                '',
              ),
            )
            .join(' ; ')}`,
        );
      }
    } finally {
      await envoy?.close();
      await stopReplica(side);
      await inspector.close();
      await proxy.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
