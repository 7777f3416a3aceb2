/**
 * Completion path: the sidecar's worker against a minimal BullMQ + undici worker
 * (bench/bullmq-baseline.ts), each taking the same pre-written backlog, replaying it to the no-op
 * upstream and POSTing a webhook per run to the no-op receiver. The clock and the CPU readings run
 * from releasing the backlog to the last webhook. The sidecar runs twice: as configured by default,
 * and with a CONFIG_FILE that gives the default queue a max_concurrency of DISPATCH_CONCURRENCY
 * (fair share on, as by default), a limit that never binds, so that the second row costs only the
 * limit's bookkeeping in the claim and complete scripts (README "Queues").
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { BenchEnv, BenchRedis, Noop, Scenario } from '../env';
import { cpuMicros, cpuPlan, fmt, median, pinProcess, roundCount, sleep, type CpuPlan } from '../lib';
import { NORMAL_RING_KEY } from '../load';
import { RUN_BODY, RUN_HEADERS, RUN_TARGET } from '../run-shape';
import { createRuns, newStore } from '../runs';
import type { BenchJob } from '../bullmq-baseline';

const CONCURRENCY = 64;

export interface CompletionRow {
  /** `sidecar_limited`: the sidecar with the default queue's max_concurrency set (`queueLimit`). */
  worker: 'sidecar' | 'sidecar_limited' | 'bullmq';
  /** The default queue's max_concurrency, when set. */
  queueLimit?: number;
  n: number;
  seconds: number;
  perSec: number;
  cpuUsPerRun: number;
  redisCpuUsPerRun: number;
  /** Redis commands per run (INFO commandstats over the measured span), all and by command, most first. */
  redisCallsPerRun?: number;
  redisCalls?: Array<[string, number]>;
  /** Final states of the runs (sidecar: status/webhook status) or jobs (BullMQ: job counts) and their counts. */
  verified: Array<[string, number]>;
  /** Throughput of each round, in the order run; the row's figures are the medians over the rounds. */
  perSecRounds?: number[];
}

export interface CompletionResults {
  n: number;
  concurrency: number;
  /** Rounds per worker (each round runs every worker once, in a rotated order). */
  rounds?: number;
  /** Whether the worker under test had a core of its own (bench/lib.ts cpuPlan; BENCH_PIN=0 turns it off). */
  pinned?: boolean;
  rows: CompletionRow[];
}

/** BENCH_RUNS, else 20,000 (BENCH_QUICK: 5,000). */
const runCount = (env: BenchEnv) => Number(process.env.BENCH_RUNS ?? (env.quick ? 5000 : 20_000));
export const completion: Scenario<CompletionResults> = {
  uses: ['redis', 'noop'],
  async run(env: BenchEnv): Promise<CompletionResults> {
    const [redis, noop] = [await env.redis(), await env.noop()];
    const n = runCount(env);
    const rounds = roundCount(env.quick, 5);
    // The worker under test on a core of its own, the rest on the others (bench/lib.ts cpuPlan).
    const cpus = process.env.BENCH_PIN === '0' ? null : cpuPlan();
    const others = [process.pid, redis.server.pid, noop.child.pid];
    if (cpus) for (const pid of others) pinProcess(pid, cpus.rest);
    const workers: Array<() => Promise<CompletionRow>> = [
      () => sidecarWorker(env, redis, noop, n, cpus),
      () => sidecarWorker(env, redis, noop, n, cpus, CONCURRENCY),
      () => bullmqWorker(env, redis, noop, n, cpus),
    ];
    const measured: CompletionRow[][] = workers.map(() => []);
    try {
      for (let round = 0; round < rounds; round++) {
        // Rotated, so that no worker always runs first (after the bench's set-up) or last.
        for (let k = 0; k < workers.length; k++) {
          const w = (round + k) % workers.length;
          measured[w]!.push(await workers[w]!());
        }
      }
    } finally {
      if (cpus) for (const pid of others) pinProcess(pid, cpus.all);
    }
    return { n, concurrency: CONCURRENCY, rounds, pinned: cpus !== null, rows: measured.map(medianRow) };
  },
};

/** One worker's rounds as one row: the median of each figure; the final states summed over all rounds. */
function medianRow(rows: CompletionRow[]): CompletionRow {
  const mid = (f: (r: CompletionRow) => number) => median(rows.map(f));
  const verified = new Map<string, number>();
  for (const r of rows) for (const [state, count] of r.verified) verified.set(state, (verified.get(state) ?? 0) + count);
  return {
    ...rows[0]!,
    verified: [...verified],
    seconds: mid((r) => r.seconds),
    perSec: mid((r) => r.perSec),
    cpuUsPerRun: mid((r) => r.cpuUsPerRun),
    redisCpuUsPerRun: mid((r) => r.redisCpuUsPerRun),
    redisCallsPerRun: mid((r) => r.redisCallsPerRun ?? 0),
    perSecRounds: rows.map((r) => r.perSec),
  };
}

/**
 * Redis commands per run since the last CONFIG RESETSTAT, read from INFO commandstats (the reading
 * itself and the bench's own INFO are not counted). Tells a change in round trips from a change in
 * the cost of each.
 */
async function commandCalls(redis: BenchRedis, n: number): Promise<Pick<CompletionRow, 'redisCallsPerRun' | 'redisCalls'>> {
  const info = (await redis.client.info('commandstats')) as string;
  const calls: Array<[string, number]> = [];
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const name = m[1]!;
    if (name === 'info' || name === 'config') continue;
    calls.push([name, Number(m[2]) / n]);
  }
  calls.sort((a, b) => b[1] - a[1]);
  return {
    redisCallsPerRun: calls.reduce((s, [, c]) => s + c, 0),
    redisCalls: calls.map(([name, c]) => [name, Math.round(c * 100) / 100]),
  };
}

async function waitHooks(noop: Noop, n: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const s = await noop.stats();
    if (s.hooks >= n) return;
    await sleep(50);
  }
  const s = await noop.stats();
  throw new Error(`completion: only ${s.hooks}/${n} webhooks (${s.upstream} upstream calls) within ${timeoutMs} ms`);
}

/** The worker's CONFIG_FILE for a run with the default queue limited to `limit` runs at once. */
function limitConfig(env: BenchEnv, limit: number): string {
  const path = join(env.tmp, `completion-queue-limit-${limit}.yaml`);
  writeFileSync(path, `queues:\n  default: { max_concurrency: ${limit}, fair_share: true }\n`);
  return path;
}

async function sidecarWorker(env: BenchEnv, redis: BenchRedis, noop: Noop, n: number, cpus: CpuPlan | null, queueLimit?: number): Promise<CompletionRow> {
  await redis.client.flushall();
  const store = newStore(redis.client);
  const ids = await createRuns(store, n, `http://127.0.0.1:${noop.port}/hook`);
  // Hold the queue back while the worker starts, so that start-up is not measured.
  await redis.client.rename(NORMAL_RING_KEY, 'bench:staging');
  const worker = await env.startSidecar(
    'worker',
    redis.server.url,
    {
      DISPATCH_URL: `http://127.0.0.1:${noop.port}`,
      DISPATCH_CONCURRENCY: String(CONCURRENCY),
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      ...(queueLimit === undefined ? {} : { CONFIG_FILE: limitConfig(env, queueLimit) }),
    },
    { profileLabel: env.settings.profile ? `worker (completion path${queueLimit === undefined ? '' : ', queue limit'})` : undefined },
  );
  if (cpus) pinProcess(worker.child.pid, cpus.tested);
  // The worker serves the queue with the limit it was given (GET /queues on its admin port).
  const served = (await (await fetch(`http://127.0.0.1:${worker.adminPort}/queues`)).json()) as {
    queues: Array<{ name: string; max_concurrency: number | null }>;
  };
  const limitServed = served.queues.find((q) => q.name === 'default')?.max_concurrency ?? null;
  if (limitServed !== (queueLimit ?? null))
    throw new Error(`completion: the worker serves the default queue with max_concurrency ${limitServed}, not ${queueLimit ?? null}`);
  await sleep(500);
  noop.send({ cmd: 'reset' });
  await redis.client.config('RESETSTAT');
  const cpu0 = cpuMicros(worker.child.pid);
  const rcpu0 = cpuMicros(redis.server.pid);
  const t0 = performance.now();
  await redis.client.rename('bench:staging', NORMAL_RING_KEY);
  await redis.client.publish('eas:events', 'queued:default');
  await waitHooks(noop, n, 180_000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuMicros(worker.child.pid);
  const rcpu1 = cpuMicros(redis.server.pid);
  const calls = await commandCalls(redis, n);
  await worker.child.stop('SIGTERM', 10_000);
  // Verify: every run succeeded and its webhook was delivered.
  const counts = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 1000) {
    const p = redis.client.pipeline();
    for (const id of ids.slice(i, i + 1000)) p.hmget(store.keys.run(id), 'status', 'wh_status');
    for (const [, v] of (await p.exec()) ?? []) {
      const [status, wh] = v as [string, string];
      counts.set(`${status}/${wh}`, (counts.get(`${status}/${wh}`) ?? 0) + 1);
    }
  }
  const row: CompletionRow = {
    worker: queueLimit === undefined ? 'sidecar' : 'sidecar_limited',
    ...(queueLimit === undefined ? {} : { queueLimit }),
    n,
    seconds,
    perSec: n / seconds,
    cpuUsPerRun: (cpu1 - cpu0) / n,
    redisCpuUsPerRun: (rcpu1 - rcpu0) / n,
    ...calls,
    verified: [...counts],
  };
  env.log(
    `completion ${row.worker}: ${fmt(row.perSec)}/s, ${fmt(row.cpuUsPerRun)} µs CPU/run, ${row.redisCallsPerRun?.toFixed(2)} Redis calls/run ${JSON.stringify(row.redisCalls)}; ${JSON.stringify(row.verified)}`,
  );
  return row;
}

async function bullmqWorker(env: BenchEnv, redis: BenchRedis, noop: Noop, n: number, cpus: CpuPlan | null): Promise<CompletionRow> {
  await redis.client.flushall();
  const queueName = 'bench';
  const queue = new Queue<BenchJob>(queueName, { connection: { host: '127.0.0.1', port: redis.server.port } });
  for (let i = 0; i < n; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      const id = randomUUID();
      jobs.push({ name: 'run', data: { method: 'POST', target: RUN_TARGET, headers: RUN_HEADERS(id), body: RUN_BODY.toString() }, opts: { jobId: id } });
    }
    await queue.addBulk(jobs);
  }
  const args = [String(redis.server.port), queueName, String(CONCURRENCY), `http://127.0.0.1:${noop.port}`, `http://127.0.0.1:${noop.port}/hook`];
  const child = env.nodeChild('bullmq-baseline.js', args, 'bullmq', {}, true);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bullmq baseline not ready in 15 s')), 15_000);
    child.proc.once('message', () => {
      clearTimeout(t);
      resolve();
    });
  });
  if (cpus) pinProcess(child.pid, cpus.tested);
  await sleep(500);
  noop.send({ cmd: 'reset' });
  await redis.client.config('RESETSTAT');
  const cpu0 = cpuMicros(child.pid);
  const rcpu0 = cpuMicros(redis.server.pid);
  const t0 = performance.now();
  child.proc.send({ cmd: 'go' });
  await waitHooks(noop, n, 180_000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuMicros(child.pid);
  const rcpu1 = cpuMicros(redis.server.pid);
  const calls = await commandCalls(redis, n);
  // BullMQ marks a job completed just after its processor returns: give it a moment.
  let jc: Record<string, number> = {};
  for (let i = 0; i < 50; i++) {
    jc = await queue.getJobCounts('completed', 'failed', 'active', 'wait');
    if ((jc.completed ?? 0) + (jc.failed ?? 0) >= n) break;
    await sleep(100);
  }
  await child.stop('SIGTERM', 5000);
  await queue.close();
  const row: CompletionRow = {
    worker: 'bullmq',
    n,
    seconds,
    perSec: n / seconds,
    cpuUsPerRun: (cpu1 - cpu0) / n,
    redisCpuUsPerRun: (rcpu1 - rcpu0) / n,
    ...calls,
    verified: Object.entries(jc),
  };
  env.log(
    `completion bullmq: ${fmt(row.perSec)}/s, ${fmt(row.cpuUsPerRun)} µs CPU/run, ${row.redisCallsPerRun?.toFixed(2)} Redis calls/run ${JSON.stringify(row.redisCalls)}; ${JSON.stringify(row.verified)}`,
  );
  return row;
}
