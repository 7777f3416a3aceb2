/**
 * The two load generators on the ext_proc port: h2load (C, closed loop, for throughput) sending
 * pre-encoded Envoy-shaped streams, and bench/driver.ts (grpc-js, open loop at a fixed rate, for
 * latency) as a child process. One measured call each, with the CPU the server used.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { RunKeys } from '../src/runs';
import type { BenchEnv } from './env';
import { cpuMicros, envoyMaxRequestsPerConnection, fmt } from './lib';
import { PROCESS_PATH, streamBody, type Shape } from './messages';

/** h2load's connections and concurrent streams per connection on the ext_proc port. */
export const H2_CONNS = 4;
export const H2_STREAMS = 32;
/** Seconds per h2load measurement. */
export const h2Seconds = (env: BenchEnv) => (env.quick ? 4 : 8);
/** The driver's fixed rate (streams/s) and seconds per measurement. */
export const DRIVER_RATE = 2000;
export const driverSeconds = (env: BenchEnv) => (env.quick ? 4 : 10);
/** The default queue's set of queued runs: ZCARD after a measurement = runs stored (the extproc role does not dispatch). */
export const QUEUED_KEY = new RunKeys('eas').queue('default').queued;
/** The default queue's line of normal-priority owners: renamed away, no worker finds a run to take. */
export const NORMAL_RING_KEY = `${new RunKeys('eas').queue('default').prefix}:ring:1`;

export interface H2Result {
  seconds: number;
  reqPerSec: number;
  succeeded: number;
  failed: number;
  errored: number;
  meanMs: number;
  maxMs: number;
}

/** h2load's version line; throws when it is not on PATH (`npm run bench` installs it: scripts/bench.sh). */
export function h2loadVersion(): string {
  try {
    return execFileSync('h2load', ['--version']).toString().trim();
  } catch {
    throw new Error('h2load is not on PATH: `npm run bench` installs it (scripts/bench.sh), or apt-get install nghttp2-client');
  }
}

function frameFile(env: BenchEnv, shape: Shape): string {
  const f = join(env.tmp, `frames-${shape}.bin`);
  writeFileSync(f, streamBody(shape));
  return f;
}

function h2load(env: BenchEnv, port: number, shape: Shape, seconds: number): H2Result {
  const args = ['-D', String(seconds), '-c', String(H2_CONNS), '-m', String(H2_STREAMS), '-t', '1', '-d', frameFile(env, shape)];
  args.push('-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://127.0.0.1:${port}${PROCESS_PATH}`);
  const out = execFileSync('h2load', args, { timeout: (seconds + 30) * 1000, maxBuffer: 1 << 20 }).toString();
  const fin = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(out);
  const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const time = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  const ms = (v: string, u: string) => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  if (!fin || !reqs) throw new Error(`could not parse h2load output:\n${out}`);
  return {
    seconds: Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1),
    reqPerSec: Number(fin[3]),
    succeeded: Number(reqs[1]),
    failed: Number(reqs[2]),
    errored: Number(reqs[3]),
    meanMs: time ? ms(time[5]!, time[6]!) : NaN,
    maxMs: time ? ms(time[3]!, time[4]!) : NaN,
  };
}

export interface AcceptRow extends H2Result {
  server: 'floor' | 'sidecar';
  shape: Shape;
  cpuUsPerRun: number;
  redisCpuUsPerRun: number | null;
  stored: number | null;
}

/**
 * One measured h2load run against the server `pid` listening on `port`, after an unmeasured
 * warm-up (JIT, connections). `redis` given: the server is a sidecar, whose runs are counted in
 * Redis (flushed before the measurement) and whose Redis CPU is read too. `afterWarmup` runs
 * between the two.
 */
export async function acceptRun(
  env: BenchEnv,
  server: AcceptRow['server'],
  port: number,
  pid: number,
  shape: Shape,
  redis?: { client: Redis; pid: number },
  afterWarmup?: () => Promise<void>,
): Promise<AcceptRow> {
  h2load(env, port, shape, env.quick ? 1 : 2);
  await afterWarmup?.();
  if (redis) await redis.client.flushall();
  const cpu0 = cpuMicros(pid);
  const rcpu0 = redis ? cpuMicros(redis.pid) : 0;
  const r = h2load(env, port, shape, h2Seconds(env));
  const cpu1 = cpuMicros(pid);
  const rcpu1 = redis ? cpuMicros(redis.pid) : 0;
  const stored = redis ? await redis.client.zcard(QUEUED_KEY) : null;
  const runs = stored ?? r.succeeded;
  const row: AcceptRow = {
    ...r,
    server,
    shape,
    cpuUsPerRun: (cpu1 - cpu0) / Math.max(1, runs),
    redisCpuUsPerRun: redis ? (rcpu1 - rcpu0) / Math.max(1, runs) : null,
    stored,
  };
  env.log(`accept ${server} ${shape}: ${fmt(r.reqPerSec)} runs/s, ${fmt(row.cpuUsPerRun)} µs CPU/run, stored ${stored ?? '-'} of ${r.succeeded}`);
  return row;
}

/** Streams per driver connection, as Envoy's pool: `max_requests_per_connection` of the async_sidecar cluster in envoy/envoy.yaml. */
export const maxStreamsPerConn = (): number => envoyMaxRequestsPerConnection() ?? 0;

export interface DriverRow {
  server: 'floor' | 'sidecar';
  shape: Shape;
  /** Streams ended with a half-close only (no RST_STREAM), unlike Envoy. */
  halfClose: boolean;
  /** All streams on one connection (no max_requests_per_connection). */
  oneConnection: boolean;
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

/** One driver run (its own process) at `rate` streams/s (DRIVER_RATE by default) for the scenario's seconds, after its unrecorded second. */
export async function driverRun(
  env: BenchEnv,
  server: DriverRow['server'],
  port: number,
  shape: Shape,
  opts: { halfClose?: boolean; oneConnection?: boolean; rate?: number } = {},
): Promise<DriverRow> {
  const seconds = driverSeconds(env);
  const rate = opts.rate ?? DRIVER_RATE;
  const childEnv: NodeJS.ProcessEnv = { BENCH_MAX_STREAMS_PER_CONN: String(opts.oneConnection ? 0 : maxStreamsPerConn()) };
  if (opts.halfClose) childEnv.BENCH_GRACEFUL = '1';
  const child = env.nodeChild('driver.js', [String(port), shape, String(rate), String(seconds)], `driver-${server}`, childEnv);
  const line = await child.waitLine(/^RESULT /, (seconds + 30) * 1000);
  await child.stop();
  const r = JSON.parse(line.slice('RESULT '.length)) as Omit<DriverRow, 'server' | 'shape' | 'halfClose' | 'oneConnection'>;
  const variant = `${opts.halfClose ? ' half-close' : ''}${opts.oneConnection ? ' one-connection' : ''}`;
  env.log(
    `driver ${server}${variant} ${shape} @${rate}/s: p50 ${r.p50.toFixed(2)} p99 ${r.p99.toFixed(2)} p99.9 ${r.p999.toFixed(2)} ms, ok ${r.ok}/${r.sent}, errors ${r.errors}, connections ${r.connections}`,
  );
  return { server, shape, halfClose: opts.halfClose === true, oneConnection: opts.oneConnection === true, ...r };
}
