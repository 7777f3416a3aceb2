/**
 * Long runs: a worker with DISPATCH_CONCURRENCY = N takes N runs whose upstream holds every
 * request open; the worker's RSS and Redis `used_memory` before the runs and with all in flight.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import type { BenchEnv, Scenario } from '../env';
import { fmt, rssBytes, sleep } from '../lib';
import { createRuns, newStore } from '../runs';

export interface LongRunsResults {
  n: number;
  inFlight: number;
  secondsToFill: number;
  rssBefore: number;
  rssAt: number;
  redisBefore: number;
  redisAt: number;
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
    const n = Number(process.env.BENCH_INFLIGHT ?? 10_000);
    await redis.client.flushall();
    noop.send({ cmd: 'reset' });
    noop.send({ cmd: 'hold', on: true });
    const worker = await env.startSidecar('worker', redis.server.url, { DISPATCH_URL: `http://127.0.0.1:${noop.port}`, DISPATCH_CONCURRENCY: String(n) });
    await sleep(1000);
    const rssBefore = rssBytes(worker.child.pid);
    const redisBefore = await usedMemory(redis.client);
    const t0 = performance.now();
    await createRuns(newStore(redis.client), n, null);
    let held = 0;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      held = (await noop.stats()).held;
      if (held >= n) break;
      await sleep(100);
    }
    const secondsToFill = (performance.now() - t0) / 1000;
    await sleep(2000); // let GC and the lease heartbeat settle
    const rssAt = rssBytes(worker.child.pid);
    const redisAt = await usedMemory(redis.client);
    noop.send({ cmd: 'release' });
    noop.send({ cmd: 'hold', on: false });
    await worker.child.stop('SIGTERM', 10_000);
    await redis.client.flushall();
    env.log(
      `long runs: ${held} in flight, RSS ${fmt(rssBefore / 2 ** 20)} -> ${fmt(rssAt / 2 ** 20)} MiB, Redis ${fmt(redisBefore / 2 ** 20, 1)} -> ${fmt(redisAt / 2 ** 20, 1)} MiB`,
    );
    return { n, inFlight: held, secondsToFill, rssBefore, rssAt, redisBefore, redisAt };
  },
};
