/** Helpers shared by the benchmark processes: ports, child processes, /proc readings, formatting. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import { parse as parseYaml } from 'yaml';
import { freePort } from '../test/support/ports';

export { freePort };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Repository root: the nearest folder with a package.json, whether this runs compiled (dist-bench/bench/) or from source (jest). */
export const ROOT = (() => {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process (all its threads), in microseconds. */
/**
 * CPUs for a measurement where one process is under test: it gets a core of its own (the last),
 * and everything else (the bench, Redis, the no-op server) shares the others. On this 2-core
 * machine, unpinned, the worker under test competed with Redis and the no-op server for both
 * cores, and one 20,000-run measurement of the same code ranged from 237 to 398 µs of worker CPU
 * per run; pinned, 246-259. Null when there is one core or no `taskset` (util-linux).
 */
export interface CpuPlan {
  /** The core of the process under test. */
  tested: string;
  /** The cores of everything else. */
  rest: string;
  /** All cores: what the pinned processes get back. */
  all: string;
}

export function cpuPlan(): CpuPlan | null {
  let n: number;
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
    n = Number(execFileSync('nproc', [], { encoding: 'utf8' }).trim());
  } catch {
    return null;
  }
  if (!(n >= 2)) return null;
  return { tested: String(n - 1), rest: n === 2 ? '0' : `0-${n - 2}`, all: `0-${n - 1}` };
}

/** Sets the CPUs of a process and all its threads. */
export function pinProcess(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/**
 * BENCH_ROUNDS, else `full` (BENCH_QUICK: 1): how often a scenario measures each of its rows,
 * interleaved, to report medians. On this shared 2-core machine one measurement of the same
 * code moved by up to ±25 % within minutes.
 */
export function roundCount(quick: boolean, full: number): number {
  return Math.max(1, Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : full)));
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

export function cpuMicros(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK;
}

/** Resident set size in bytes. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** What bench/heap-probe.ts prints: process.memoryUsage() right after a full GC. */
export interface HeapAfterGc {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** Asks a child started with bench/heap-probe.ts preloaded for its memory after a full GC. */
export async function heapAfterGc(child: Child): Promise<HeapAfterGc> {
  // An earlier answer would match first.
  for (let i = child.lines.length - 1; i >= 0; i--) if (child.lines[i]!.startsWith('HEAP ')) child.lines.splice(i, 1);
  child.proc.kill('SIGUSR2');
  return JSON.parse((await child.waitLine(/^HEAP /, 30_000)).slice('HEAP '.length)) as HeapAfterGc;
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Lines the child printed on stdout (the last 200). */
  lines: string[];
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
  /** Resolves with the first stdout line matching `re`, within `timeoutMs`. */
  waitLine(re: RegExp, timeoutMs: number): Promise<string>;
}

/** Spawns a process whose stdout lines are kept; stderr goes to ours (prefixed) unless quiet. */
export function spawnChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, name: string, ipc = false): Child {
  const proc = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    cwd: ROOT,
  });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      if (lines.length > 200) lines.shift();
      for (const w of [...waiters]) {
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  let errBuf = '';
  proc.stderr!.on('data', (d: Buffer) => {
    errBuf += d.toString();
    let i;
    while ((i = errBuf.indexOf('\n')) >= 0) {
      process.stderr.write(`[${name}] ${errBuf.slice(0, i)}\n`);
      errBuf = errBuf.slice(i + 1);
    }
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    pid: proc.pid!,
    lines,
    async stop(signal = 'SIGTERM', graceMs = 5000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    },
    waitLine(re, timeoutMs) {
      const seen = lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = {
          re,
          resolve: (l: string) => {
            clearTimeout(t);
            resolve(l);
          },
        };
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`${name}: no line matching ${re} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(w);
        void exited.then(() => {
          if (waiters.includes(w)) {
            clearTimeout(t);
            waiters.splice(waiters.indexOf(w), 1);
            reject(new Error(`${name} exited (code ${proc.exitCode}) before printing ${re}`));
          }
        });
      });
    },
  };
}

/** Polls an HTTP URL until it answers 200 (bounded). */
export async function waitHttpOk(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await request(url, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      /* not up yet */
    }
    await sleep(50);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`);
}

export function pct(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a';

/**
 * `max_requests_per_connection` of a cluster in envoy/envoy.yaml (cluster-level
 * `typed_extension_protocol_options` → `common_http_protocol_options`), or null when unset.
 * The driver opens a new connection after that many streams, as Envoy's connection pool does.
 */
export function envoyMaxRequestsPerConnection(cluster = 'async_sidecar', file = join(ROOT, 'envoy', 'envoy.yaml')): number | null {
  type Opts = { common_http_protocol_options?: { max_requests_per_connection?: number } };
  const doc = parseYaml(readFileSync(file, 'utf8')) as {
    static_resources?: { clusters?: Array<{ name: string; typed_extension_protocol_options?: Record<string, Opts> }> };
  };
  const c = doc.static_resources?.clusters?.find((x) => x.name === cluster);
  if (!c) throw new Error(`cluster ${cluster} not found in ${file}`);
  for (const o of Object.values(c.typed_extension_protocol_options ?? {})) {
    const n = o.common_http_protocol_options?.max_requests_per_connection;
    if (typeof n === 'number' && n > 0) return n;
  }
  return null;
}
