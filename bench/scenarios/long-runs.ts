/**
 * Long runs: a worker with DISPATCH_CONCURRENCY = N takes N runs whose upstream holds every
 * request open; the worker's RSS, heap after a full GC and Redis `used_memory` before the runs and
 * with all in flight. The floor, measured the same way in the same run: a bare undici Agent
 * process (bench/held-client.ts) holding the same N requests. Then the same with fewer runs and
 * large request bodies (100 of 1 MiB by default): how much memory the worker holds per body byte
 * in flight.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { HEAP_PROBE_ARGS, type BenchEnv, type Noop, type Scenario } from '../env';
import { fmt, heapAfterGc, rssBytes, sleep, type Child } from '../lib';
import { createRuns, newStore } from '../runs';

/** One process's memory: RSS, and heap used after a full GC (bench/heap-probe.ts). */
export interface MemoryAt {
  rss: number;
  heapUsed: number;
}

export interface LongRunsResults {
  n: number;
  inFlight: number;
  secondsToFill: number;
  rssBefore: number;
  rssAt: number;
  redisBefore: number;
  redisAt: number;
  /** The worker's heap after a full GC, idle and with the runs in flight (absent from results written before it). */
  heap?: { before: number; at: number };
  /** The bare undici process holding the same requests (absent from results written before it). */
  floor?: { inFlight: number; before: MemoryAt; at: MemoryAt };
  /** The large-body measurement (absent from results written before it). */
  bodies?: { n: number; bodyBytes: number; inFlight: number; rssBefore: number; rssAt: number };
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN);
}

export const longRuns: Scenario<LongRunsResults> = {
  uses: ['redis', 'noop'],
  optional: true,
  async run(env: BenchEnv): Promise<LongRunsResults> {
    const [redis, noop] = [await env.redis(), await env.noop()];
    const bodies = await largeBodies(env, redis.server.url, redis.client, noop);
    const n = Number(process.env.BENCH_INFLIGHT ?? 10_000);
    await redis.client.flushall();
    noop.send({ cmd: 'reset' });
    noop.send({ cmd: 'hold', on: true });
    const worker = await env.startSidecar(
      'worker',
      redis.server.url,
      { DISPATCH_URL: `http://127.0.0.1:${noop.port}`, DISPATCH_CONCURRENCY: String(n) },
      { heapProbe: true },
    );
    await sleep(1000);
    const before = await memoryOf(worker.child);
    const redisBefore = await usedMemory(redis.client);
    const t0 = performance.now();
    await createRuns(newStore(redis.client), n, null);
    const held = await heldRequests(noop, n);
    const secondsToFill = (performance.now() - t0) / 1000;
    await sleep(2000); // let GC and the lease heartbeat settle
    const at = await memoryOf(worker.child);
    const redisAt = await usedMemory(redis.client);
    noop.send({ cmd: 'release' });
    noop.send({ cmd: 'hold', on: false });
    await worker.child.stop('SIGTERM', 10_000);
    await redis.client.flushall();
    const floor = await heldByBareClient(env, noop, n);
    const mib = (b: number) => fmt(b / 2 ** 20);
    env.log(
      `long runs: ${held} in flight, RSS ${mib(before.rss)} -> ${mib(at.rss)} MiB (heap ${mib(before.heapUsed)} -> ${mib(at.heapUsed)}), ` +
        `bare undici ${floor.inFlight}: RSS ${mib(floor.before.rss)} -> ${mib(floor.at.rss)} MiB (heap ${mib(floor.before.heapUsed)} -> ${mib(floor.at.heapUsed)}), ` +
        `Redis ${fmt(redisBefore / 2 ** 20, 1)} -> ${fmt(redisAt / 2 ** 20, 1)} MiB`,
    );
    return {
      n,
      inFlight: held,
      secondsToFill,
      rssBefore: before.rss,
      rssAt: at.rss,
      redisBefore,
      redisAt,
      heap: { before: before.heapUsed, at: at.heapUsed },
      floor,
      bodies,
    };
  },
};

/** RSS as the kernel counts it (read first: the probe's GC changes it), and the heap after a full GC. */
async function memoryOf(child: Child): Promise<MemoryAt> {
  const rss = rssBytes(child.pid);
  return { rss, heapUsed: (await heapAfterGc(child)).heapUsed };
}

/** The floor: bench/held-client.ts sends the same n requests to the holding upstream; its memory idle and with them held. */
async function heldByBareClient(env: BenchEnv, noop: Noop, n: number): Promise<NonNullable<LongRunsResults['floor']>> {
  noop.send({ cmd: 'reset' });
  noop.send({ cmd: 'hold', on: true });
  const client = env.nodeChild('held-client.js', [String(noop.port), String(n)], 'held-client', {}, true, HEAP_PROBE_ARGS);
  try {
    await client.waitLine(/^READY/, 10_000);
    await sleep(1000);
    const before = await memoryOf(client);
    client.proc.send({ cmd: 'send' });
    const inFlight = await heldRequests(noop, n);
    await sleep(2000);
    return { inFlight, before, at: await memoryOf(client) };
  } finally {
    noop.send({ cmd: 'release' });
    noop.send({ cmd: 'hold', on: false });
    await client.stop('SIGTERM', 10_000);
  }
}

/** Waits until the upstream holds `n` requests (or 120 s pass); returns how many it holds. */
async function heldRequests(noop: Noop, n: number): Promise<number> {
  let held = 0;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    held = (await noop.stats()).held;
    if (held >= n) break;
    await sleep(100);
  }
  return held;
}

/**
 * BENCH_LARGE_INFLIGHT runs (100) with BENCH_LARGE_BODY-byte request bodies (1 MiB) in flight at
 * once, held by the upstream: the worker's RSS above its idle RSS, against the bodies' total.
 */
async function largeBodies(env: BenchEnv, redisUrl: string, redis: Redis, noop: Noop): Promise<NonNullable<LongRunsResults['bodies']>> {
  const n = Number(process.env.BENCH_LARGE_INFLIGHT ?? 100);
  const bodyBytes = Number(process.env.BENCH_LARGE_BODY ?? 2 ** 20);
  await redis.flushall();
  noop.send({ cmd: 'reset' });
  noop.send({ cmd: 'hold', on: true });
  const worker = await env.startSidecar('worker', redisUrl, { DISPATCH_URL: `http://127.0.0.1:${noop.port}`, DISPATCH_CONCURRENCY: String(n) });
  try {
    await sleep(1000);
    const rssBefore = rssBytes(worker.child.pid);
    // Each body different, so that nothing is shared by accident.
    const body = Buffer.alloc(bodyBytes, 'x');
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      body.writeUInt32BE(i, 0);
      ids.push(...(await createRuns(newStore(redis), 1, null, Buffer.from(body))));
    }
    const inFlight = await heldRequests(noop, n);
    await sleep(2000); // let GC settle
    const rssAt = rssBytes(worker.child.pid);
    env.log(
      `long runs, large bodies: ${inFlight} x ${fmt(bodyBytes / 2 ** 20, 1)} MiB in flight, RSS ${fmt(rssBefore / 2 ** 20)} -> ${fmt(rssAt / 2 ** 20)} MiB (${((rssAt - rssBefore) / (n * bodyBytes)).toFixed(2)} x the bodies)`,
    );
    return { n, bodyBytes, inFlight, rssBefore, rssAt };
  } finally {
    noop.send({ cmd: 'release' });
    noop.send({ cmd: 'hold', on: false });
    await worker.child.stop('SIGTERM', 10_000);
    await redis.flushall();
  }
}
