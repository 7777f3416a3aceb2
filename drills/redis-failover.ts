import { Redis } from 'ioredis';
import { queueTag } from '../src/runs/keys';
import { RedisCluster } from '../test/support/redis-cluster';
import { RedisSentinelSet } from '../test/support/redis-sentinel';
import type { RedisServer } from '../test/support/redis-server';
import { writeConfigFile } from '../test/support/sidecar';
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
  type DrillContext,
  type Replica,
  type Sent,
} from './lib';

/**
 * How much replication stream the dying primary must hold in its own memory for its frozen
 * replicas (CLIENT LIST `omem`) before it is killed. Sent bytes are not enough: on one machine a
 * killed process's socket buffers live on in the kernel (tens of MB on loopback), and a thawed
 * replica still applies them, which no host that goes away would allow. What the primary still
 * holds itself is lost with it, for sure.
 */
const HELD_BYTES = 1024 * 1024;
/** The longest freeze (when the primary never holds HELD_BYTES, e.g. when WAIT holds the writes back). */
const MAX_FREEZE_MS = 5000;
/** Request bodies: enough bytes per run that a frozen replica falls behind by HELD_BYTES within a second or two. */
const BODY = Buffer.alloc(16 * 1024, 'x');

/** Bytes the primary on `port` holds in its output buffers for its replicas. */
async function heldForReplicas(port: number): Promise<number> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, commandTimeout: 1000 });
  r.on('error', () => undefined);
  try {
    await r.connect();
    const list = (await r.call('CLIENT', 'LIST', 'TYPE', 'replica')) as string;
    return [...list.matchAll(/\bomem=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  } catch {
    return 0;
  } finally {
    r.disconnect();
  }
}

/** One Redis topology the drill breaks: how to reach it, which primary dies and what stands in its place. */
interface Topology {
  kind: 'cluster' | 'sentinel';
  /** The sidecar's settings that name it. */
  env: Record<string, string>;
  /** Queues the load spreads over (routes /q/<name>), and the one whose primary dies. */
  queues: string[];
  victimQueue: string;
  /** Replicas of each primary when the topology is whole. */
  replicas: number;
  /** The primary that will die, and the replicas that are frozen before. */
  victim(): Promise<{ primary: RedisServer; replicas: RedisServer[] }>;
  /** Resolves once another node serves the victim's data (the failover happened). */
  waitFailover(old: RedisServer, timeoutMs: number): Promise<void>;
  /** Until the topology is whole again, with `replicas` synced replicas per primary. */
  waitHealthy(timeoutMs: number, replicas: number): Promise<unknown>;
  inspector(): Inspector;
  destroy(): Promise<void>;
}

async function clusterTopology(): Promise<Topology> {
  const cluster = await RedisCluster.start({ nodeTimeoutMs: 1000 });
  // One queue per primary (by its tag's slot), so that every shard takes runs.
  const byPrimary = new Map<number, string>();
  for (let i = 0; byPrimary.size < 3 && i < 200; i++) {
    const port = await cluster.primaryOf(`{t:${queueTag(`q${i}`)}}`);
    if (!byPrimary.has(port)) byPrimary.set(port, `q${i}`);
  }
  const queues = [...byPrimary.values()];
  const config = writeConfigFile(
    ['queues:', ...queues.map((q) => `  ${q}: {}`), 'routes:', ...queues.map((q) => `  - { prefix: /q/${q}, queue: ${q} }`), ''].join('\n'),
  );
  const victimQueue = queues[0]!;
  return {
    kind: 'cluster',
    env: { REDIS_CLUSTER_NODES: cluster.seeds, CONFIG_FILE: config },
    queues,
    victimQueue,
    replicas: 1,
    async victim() {
      const port = await cluster.primaryOf(`{t:${queueTag(victimQueue)}}`);
      return { primary: cluster.node(port), replicas: (await cluster.replicasOf(port)).map((p) => cluster.node(p)) };
    },
    async waitFailover(old, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const port = await cluster.primaryOf(`{t:${queueTag(victimQueue)}}`).catch(() => old.port);
        if (port !== old.port) return;
        await sleep(50);
      }
      throw new Error(`no replica took over from ${old.port} within ${timeoutMs} ms`);
    },
    waitHealthy: (timeoutMs, replicas) => cluster.waitHealthy(timeoutMs, replicas),
    inspector: () => new Inspector(cluster.client()),
    destroy: () => cluster.destroy(),
  };
}

async function sentinelTopology(): Promise<Topology> {
  const set = await RedisSentinelSet.start({ replicas: 2, sentinels: 3, downAfterMs: 1000, failoverTimeoutMs: 3000 });
  return {
    kind: 'sentinel',
    env: { REDIS_SENTINELS: set.sentinels, REDIS_SENTINEL_NAME: set.name },
    queues: ['default'],
    victimQueue: 'default',
    replicas: 2,
    async victim() {
      const port = await set.primaryPort();
      return { primary: set.node(port), replicas: set.nodes.filter((n) => n.port !== port) };
    },
    async waitFailover(old, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const port = await set.primaryPort().catch(() => old.port);
        if (port !== old.port) return;
        await sleep(50);
      }
      throw new Error(`the sentinels promoted no replica within ${timeoutMs} ms`);
    },
    waitHealthy: (timeoutMs, replicas) => set.waitHealthy(timeoutMs, replicas),
    inspector: () => {
      const sentinels = set.sentinels.split(',').map((a) => ({ host: '127.0.0.1', port: Number(a.split(':')[1]) }));
      return new Inspector(new Redis({ sentinels, name: set.name, maxRetriesPerRequest: 1, retryStrategy: () => 200 }));
    },
    destroy: () => set.destroy(),
  };
}

interface RoundResult {
  lost: number;
  live: number;
  slow: number;
  freezeMs: number;
}

/**
 * One round: load through the real Envoy, then the victim's replicas freeze (SIGSTOP, see HELD_BYTES),
 * its primary is SIGKILLed, the replicas thaw and one is promoted; the killed node is started
 * again (it rejoins as a replica) while the load goes on. Every 202 is looked up afterwards.
 */
async function round(
  ctx: DrillContext,
  topo: Topology,
  minReplicasAck: number,
  rec: Recorder,
  perClient: number,
  freezeMs: number | undefined,
): Promise<RoundResult> {
  const name = `${topo.kind}, REDIS_MIN_REPLICAS_ACK=${minReplicasAck}`;
  const app = await Upstream.start((_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'), 20));
  let side: Replica | undefined;
  let envoy: EnvoyFront | undefined;
  const inspector = topo.inspector();
  try {
    side = await spawnReplica('S', {
      ...topo.env,
      DISPATCH_URL: app.url,
      REDIS_MIN_REPLICAS_ACK: String(minReplicasAck),
      LEASE_TIMEOUT: '2',
      DISPATCH_CONCURRENCY: '20',
    });
    envoy = await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${side.extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const { primary, replicas } = await topo.victim();
    let accepted = 0;
    let held = 0;
    let sentCount = 0;
    let done = false;
    const at = { freeze: 0, kill: 0, failover: 0, rejoined: 0, end: 0 };
    const chaos = (async () => {
      try {
        while (accepted < perClient * 8 * 0.3) await sleep(5);
        at.freeze = Date.now();
        for (const r of replicas) r.signal('SIGSTOP');
        // The first round freezes until the primary holds HELD_BYTES; the second as long as the first did.
        const until = at.freeze + (freezeMs ?? MAX_FREEZE_MS);
        while (Date.now() < until && (freezeMs !== undefined || (await heldForReplicas(primary.port)) < HELD_BYTES)) await sleep(25);
        held = await heldForReplicas(primary.port);
        at.kill = Date.now();
        await primary.stop('SIGKILL');
        for (const r of replicas) r.signal('SIGCONT');
        await topo.waitFailover(primary, 30_000);
        at.failover = Date.now();
        await primary.startProcess();
        await topo.waitHealthy(30_000, topo.replicas);
        at.rejoined = Date.now();
        ctx.log(
          `${name}: froze ${replicas.length} replica(s), killed ${primary.port} after ${accepted} 202s; failover in ${at.failover - at.kill} ms, healthy again after ${at.rejoined - at.kill} ms`,
        );
        await sleep(1000); // load on the healed topology
      } finally {
        for (const r of replicas) r.signal('SIGCONT');
        done = true;
      }
    })();
    // At least perClient × 8 requests, and on until the topology is whole again (and a second after).
    const sent = await load({
      total: Number.MAX_SAFE_INTEGER,
      concurrency: 8,
      paceMs: 10,
      stop: () => done && sentCount >= perClient * 8,
      send: async (i) => {
        sentCount++;
        const queue = topo.queues[i % topo.queues.length]!;
        const r = await envoy!.process({ method: 'POST', path: `/q/${queue}/job-${i}?async=true`, headers: { 'content-type': 'text/plain' }, body: BODY });
        const p = parseAnswer(r.status, r.body);
        if (p.status === 202) accepted++;
        else await sleep(50);
        return { ...p, method: 'POST', via: queue };
      },
    });
    await chaos;
    at.end = Date.now();
    const ok = sent.filter((s) => s.status === 202 && s.id);
    const final = await inspector.waitFinal(
      ok.map((s) => s.id!),
      30_000,
    );
    const lost = ok.filter((s) => final.runs.get(s.id!)?.status === '');
    const found = new Map([...final.runs].filter(([, r]) => r.status !== ''));
    const victimOk = ok.filter((s) => s.via === topo.victimQueue);
    const inWindow = (s: Sent) => s.at >= at.freeze && s.at <= at.kill;
    const maybe = sent.filter((s) => s.status === 503 && s.id && (s.code === 'store_not_replicated' || s.code === 'store_uncertain'));
    const maybeRuns = await inspector.runs(maybe.map((s) => s.id!));
    const slow = sent.filter((s) => s.latencyMs >= 2000).length;
    const perRun = new Map<string, number>();
    for (const r of app.requests) {
      const id = r.headers.find(([k]) => k === 'x-async-run-id')?.[1] ?? 'none';
      perRun.set(id, (perRun.get(id) ?? 0) + 1);
    }
    const dispatchedLost = lost.filter((s) => perRun.has(s.id!)).length;
    rec.count(`${name}: requests / answers`, `${sent.length} / ${statusHistogram(sent)}`);
    const phase = (s: Sent) =>
      s.at < at.freeze ? 'before the freeze' : s.at <= at.kill ? 'while frozen' : s.at <= at.failover ? 'before the failover' : 'after the failover';
    rec.count(
      `${name}: 202s / found afterwards / lost`,
      `${ok.length} / ${ok.length - lost.length} / ${lost.length}${lost.length ? ` (answered ${histogram(lost.map(phase))}; ${dispatchedLost} of them had reached the app)` : ''}`,
    );
    rec.count(
      `${name}: replica(s) frozen for / replication stream the primary held for them when killed`,
      `${((at.kill - at.freeze) / 1000).toFixed(1)} s / ${(held / 2 ** 20).toFixed(1)} MiB`,
    );
    rec.count(
      `${name}: 202s for the victim's queue while its replica(s) were frozen`,
      `${victimOk.filter(inWindow).length} of ${sent.filter((s) => s.via === topo.victimQueue && inWindow(s)).length} answers`,
    );
    rec.count(
      `${name}: 503s naming a run (store_not_replicated, store_uncertain) / their runs found afterwards`,
      `${maybe.length} / ${[...maybeRuns.values()].filter((r) => r.status !== '').length}`,
    );
    rec.count(
      `${name}: failover (SIGKILL → another node serves the shard) / whole again`,
      `${((at.failover - at.kill) / 1000).toFixed(1)} s / ${((at.rejoined - at.kill) / 1000).toFixed(1)} s`,
    );
    rec.count(`${name}: answers taking ≥ 2 s (Envoy's message timeout)`, slow);
    rec.count(`${name}: final states of the runs found`, stateHistogram(found));
    rec.count(`${name}: still queued/running after 30 s`, final.live);
    rec.count(
      `${name}: runs dispatched more than once`,
      `${[...perRun.values()].filter((n) => n > 1).length} (${histogram([...perRun.values()].filter((n) => n > 1))})`,
    );
    return { lost: lost.length, live: final.live, slow, freezeMs: at.kill - at.freeze };
  } finally {
    await envoy?.close();
    await stopReplica(side);
    await inspector.close();
    await app.close();
  }
}

function failoverDrill(kind: Topology['kind']): Drill {
  const cluster = kind === 'cluster';
  return {
    id: `${kind}-failover`,
    title: cluster
      ? 'Redis Cluster: SIGKILL a primary under load while its replica lags; the replica takes over'
      : 'Redis Sentinel: SIGKILL the primary under load while its replicas lag; the sentinels promote one',
    async run(ctx) {
      const rec = new Recorder(this.id, this.title);
      const perClient = ctx.mode === 'full' ? 400 : 120;
      rec.setup.push(
        cluster
          ? '3 primaries + 3 replicas (`redis-server --cluster-enabled yes`, `redis-cli --cluster create … --cluster-replicas 1`, cluster-node-timeout 1000 ms); one queue per primary'
          : 'one primary, two replicas (`--replicaof`), three sentinels (`redis-server --sentinel`, quorum 2, down-after-milliseconds 1000, failover-timeout 3000)',
        `one spawned sidecar (role all) behind a real Envoy, per round; ${perClient * 8} async POSTs (${BODY.length / 1024} KiB bodies) from 8 clients${cluster ? ' spread over the queues' : ''}, 10 ms apart (50 ms after a refusal), and on until the topology is whole again; the app answers in 20 ms`,
        `once 30% of the 202s are in: the replica(s) of the ${cluster ? "first queue's " : ''}primary are frozen (SIGSTOP), so that they fall behind as a slow or partitioned replica would, until that primary holds ${HELD_BYTES / 2 ** 20} MiB of replication stream for them in its own memory (at most ${MAX_FREEZE_MS / 1000} s); then it is SIGKILLed and the replicas thawed (SIGCONT); once a replica serves in its place, the killed node is started again and rejoins as a replica`,
        'two rounds on the same Redis, each once every replica is in sync: REDIS_MIN_REPLICAS_ACK=0, then =1 (with the replicas frozen as long as in the first round); afterwards every 202 is looked up on the new topology',
      );
      const topo = cluster ? await clusterTopology() : await sentinelTopology();
      try {
        let freezeMs: number | undefined;
        for (const ack of [0, 1]) {
          await topo.waitHealthy(30_000, topo.replicas);
          const r = await round(ctx, topo, ack, rec, perClient, freezeMs);
          freezeMs = r.freezeMs;
          const name = `REDIS_MIN_REPLICAS_ACK=${ack}`;
          if (ack > 0) rec.check(`${name}: no 202 lost`, r.lost === 0, `${r.lost} lost`);
          rec.check(`${name}: every run found reached a final state`, r.live === 0, `${r.live} live`);
          rec.check(`${name}: every answer within Envoy's 2 s message timeout`, r.slow === 0, `${r.slow} took longer`);
        }
      } finally {
        await topo.destroy();
      }
      rec.notes.push(
        'Redis replicates asynchronously: a primary answers the accepting script before its replicas have it. When the primary dies, the replica that takes over has what it had received, and the runs answered `202` after that are gone. The replicas were frozen here to open that window wide enough to count (on loopback a replica is otherwise a few writes behind; in production it is as far behind as it is slow or cut off). With `REDIS_MIN_REPLICAS_ACK=1` the sidecar sends the 202 only once `WAIT` says a replica has the run: while none answers, clients get `503 store_not_replicated` naming the run (it exists on the primary only, and is gone if that primary dies, as the 503 warned), and every 202 survives.',
        'A failover also takes back what the lost primary did after the accept: a claim (the run is claimed again and dispatched a second time, counted above) or an outcome (the run ends `failed`/`interrupted` by lease recovery, or runs again if its method is idempotent). `REDIS_MIN_REPLICAS_ACK` covers the accept only.',
        'Before each round every replica is in sync: in an early version of this drill a round started while a restarted node was still syncing, the sentinels promoted it, and runs that the other replica had confirmed were lost. `WAIT n` counts replicas of the primary the sidecar writes to; a 202 survives the failover when the replica promoted is one that confirmed it (Sentinel and Redis Cluster both prefer the replica with the most replicated data).',
      );
      return rec.result();
    },
  };
}

export const clusterFailoverDrill = failoverDrill('cluster');
export const sentinelFailoverDrill = failoverDrill('sentinel');
