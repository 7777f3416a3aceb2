import { Cluster, Redis } from 'ioredis';
import { connect } from 'node:net';
import { request } from 'undici';
import { RunKeys, tagOfRunId } from '../src/runs/keys';
import { freePort } from '../test/support/ports';
import { RealEnvoy } from '../test/support/real-envoy';
import { ensureBuilt, spawnSidecar, type SidecarProcess } from '../test/support/process';

/** One drill's outcome, rendered into docs/RELIABILITY.md. */
export interface DrillResult {
  id: string;
  title: string;
  setup: string[];
  counts: Array<[string, string | number]>;
  checks: Array<{ name: string; ok: boolean; detail?: string }>;
  notes: string[];
  durationMs: number;
  /** Extra markdown (tables) appended under the drill. */
  extra?: string;
}

export type DrillMode = 'fast' | 'full';

export interface DrillContext {
  mode: DrillMode;
  log: (msg: string) => void;
}

export interface Drill {
  id: string;
  title: string;
  run(ctx: DrillContext): Promise<DrillResult>;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);

/** Builds a DrillResult step by step. */
export class Recorder {
  readonly started = Date.now();
  readonly setup: string[] = [];
  readonly counts: Array<[string, string | number]> = [];
  readonly checks: Array<{ name: string; ok: boolean; detail?: string }> = [];
  readonly notes: string[] = [];
  extra?: string;

  constructor(
    readonly id: string,
    readonly title: string,
  ) {}

  count(name: string, value: string | number): void {
    this.counts.push([name, value]);
  }

  check(name: string, ok: boolean, detail?: string): boolean {
    this.checks.push({ name, ok, detail });
    return ok;
  }

  result(): DrillResult {
    return {
      id: this.id,
      title: this.title,
      setup: this.setup,
      counts: this.counts,
      checks: this.checks,
      notes: this.notes,
      durationMs: Date.now() - this.started,
      extra: this.extra,
    };
  }
}

/** Reads runs straight from Redis, the way an operator would check them. */
export class Inspector {
  readonly redis: Redis | Cluster;
  readonly keys = new RunKeys('eas');

  /** A Redis URL, or a client of another topology (a Cluster, or a Redis found through Sentinel). */
  constructor(target: string | Redis | Cluster) {
    if (typeof target !== 'string') this.redis = target;
    else this.redis = new Redis(target, { maxRetriesPerRequest: 1, lazyConnect: false, retryStrategy: () => 200 });
    this.redis.on('error', () => undefined);
  }

  /** status, error code and attempts per id ('' status = missing). One pipeline per run tag: a Cluster pipeline stays in one slot. */
  async runs(ids: string[]): Promise<Map<string, { status: string; error: string; attempt: number; method: string; finishedAt: number }>> {
    const out = new Map<string, { status: string; error: string; attempt: number; method: string; finishedAt: number }>();
    const byTag = new Map<string, string[]>();
    for (const id of ids) {
      const tag = tagOfRunId(id);
      if (tag === null) out.set(id, { status: '', error: '', attempt: 0, method: '', finishedAt: 0 });
      else byTag.set(tag, [...(byTag.get(tag) ?? []), id]);
    }
    for (const group of byTag.values()) {
      for (let i = 0; i < group.length; i += 500) {
        const slice = group.slice(i, i + 500);
        const p = this.redis.pipeline();
        for (const id of slice) p.hmget(this.keys.run(id), 'status', 'error', 'attempt', 'method', 'finished_at');
        const rows = (await p.exec()) ?? [];
        slice.forEach((id, j) => {
          const f = (rows[j]?.[1] ?? []) as Array<string | null>;
          out.set(id, { status: f[0] ?? '', error: f[1] ?? '', attempt: Number(f[2] ?? 0), method: f[3] ?? '', finishedAt: Number(f[4] ?? 0) });
        });
      }
    }
    return new Map(ids.map((id) => [id, out.get(id)!]));
  }

  /** Every run id in the creation index of the queues' tags (default: the `default` queue). */
  async allIds(queues: readonly string[] = ['default']): Promise<string[]> {
    const indexes = [...new Set(queues.map((q) => this.keys.queue(q).index))];
    return (await Promise.all(indexes.map((k) => this.redis.zrange(k, '0', '-1')))).flat();
  }

  /** Polls until every id is in a final state (or missing), or the deadline; returns the last read. */
  async waitFinal(ids: string[], timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const runs = await this.runs(ids);
      const live = [...runs.values()].filter((r) => r.status === 'queued' || r.status === 'running').length;
      if (live === 0 || Date.now() > deadline) return { runs, live, at: Date.now() };
      await sleep(200);
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** Histogram of final states, e.g. "succeeded 120, failed/interrupted 3". */
export function stateHistogram(runs: Map<string, { status: string; error: string }>): string {
  const h = new Map<string, number>();
  for (const r of runs.values()) {
    const key = r.status === '' ? 'MISSING' : r.status === 'failed' && r.error ? `failed/${r.error}` : r.status;
    h.set(key, (h.get(key) ?? 0) + 1);
  }
  return (
    [...h.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || '-'
  );
}

export function histogram(values: Iterable<string | number>): string {
  const h = new Map<string, number>();
  for (const v of values) h.set(String(v), (h.get(String(v)) ?? 0) + 1);
  return (
    [...h.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}×${v}`)
      .join(', ') || '-'
  );
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export interface Replica {
  proc: SidecarProcess;
  extprocPort: number;
  adminPort: number;
  name: string;
}

/** Spawns the built sidecar (node dist/src/main.js) on free ports and waits until it is ready. */
export async function spawnReplica(name: string, env: Record<string, string>, args: string[] = []): Promise<Replica> {
  ensureBuilt();
  const extprocPort = await freePort();
  const adminPort = await freePort();
  const proc = spawnSidecar(
    { EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, ADMIN_ADDR: `127.0.0.1:${adminPort}`, LOG_LEVEL: 'info', WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', ...env },
    args,
  );
  await proc.waitForLog('envoy-async-sidecar started', 15_000);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const r = await request(`http://127.0.0.1:${adminPort}/readyz`);
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready`);
    await sleep(50);
  }
  return { proc, extprocPort, adminPort, name };
}

/** SIGTERMs (or SIGKILLs) a replica and waits for it to exit. */
export async function stopReplica(r: Replica | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!r || r.proc.child.exitCode !== null || r.proc.child.signalCode !== null) return;
  r.proc.kill(signal);
  const t = setTimeout(() => r.proc.kill('SIGKILL'), 10_000);
  await r.proc.exited;
  clearTimeout(t);
}

/** Counts log lines with a given msg in a replica's stdout. */
export function countLogs(r: Replica, msg: string): number {
  let n = 0;
  for (const line of r.proc.stdout().split('\n')) {
    if (line.startsWith('{') && line.includes(`"msg":"${msg}"`)) n++;
  }
  return n;
}

export interface Sent {
  i: number;
  status: number;
  id?: string;
  code?: string;
  method: string;
  at: number;
  latencyMs: number;
  via: string;
}

/**
 * Runs `total` requests with `concurrency` loops (or until `stopAt()`), each produced by `send`.
 * Returns every answer with its time.
 */
export async function load(opts: {
  total: number;
  concurrency: number;
  send: (i: number) => Promise<Omit<Sent, 'i' | 'at' | 'latencyMs'>>;
  paceMs?: number;
  stop?: () => boolean;
}): Promise<Sent[]> {
  const out: Sent[] = [];
  let next = 0;
  const loop = async () => {
    for (;;) {
      if (opts.stop?.()) return;
      const i = next++;
      if (i >= opts.total) return;
      const t0 = Date.now();
      try {
        const r = await opts.send(i);
        out.push({ ...r, i, at: Date.now(), latencyMs: Date.now() - t0 });
      } catch (err) {
        out.push({ i, status: -1, code: (err as Error).message.slice(0, 60), method: '?', at: Date.now(), latencyMs: Date.now() - t0, via: '?' });
      }
      if (opts.paceMs) await sleep(opts.paceMs);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, loop));
  return out;
}

/** Parses an answer through Envoy into status, run id (of a 202, or the one an error names) and error code. */
export function parseAnswer(status: number, body: Buffer): { status: number; id?: string; code?: string } {
  try {
    const j = JSON.parse(body.toString()) as { run_id?: string; error?: { code?: string; run_id?: string } };
    return { status, id: j.run_id ?? j.error?.run_id, code: j.error?.code };
  } catch {
    return { status };
  }
}

export function statusHistogram(sent: Sent[]): string {
  return histogram(sent.map((s) => (s.code ? `${s.status} ${s.code}` : String(s.status))));
}

export interface FrontRequest {
  method: string;
  path: string;
  headers?: Record<string, string> | Array<[string, string]>;
  body?: Buffer | string;
}

/**
 * The real Envoy (scripts/envoy.sh, the shipped envoy/envoy.yaml rendered for loopback) as the
 * drills' front door: `process()` sends one HTTP/1.1 request to its ingress listener over a raw
 * socket, so the bytes a drill means (a lying content-length, non-UTF-8 header values) reach
 * Envoy as written, and returns Envoy's status and body. A request Envoy does not answer within
 * `timeoutMs` gets status 0.
 */
export class EnvoyFront {
  private constructor(readonly envoy: RealEnvoy) {}

  static async start(opts: { clusters: Record<string, string> }): Promise<EnvoyFront> {
    // One worker thread: drills run several Envoys, sidecars and Redis on two cores.
    return new EnvoyFront(await RealEnvoy.start({ clusters: opts.clusters, concurrency: 1 }));
  }

  get url(): string {
    return this.envoy.url;
  }

  process(req: FrontRequest, timeoutMs = 10_000): Promise<{ status: number; body: Buffer; headers: Record<string, string> }> {
    const { port } = new URL(this.envoy.url);
    const headers = Array.isArray(req.headers) ? req.headers : Object.entries(req.headers ?? {});
    const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
    let head = `${req.method} ${req.path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: close\r\n`;
    for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
    if (body && !headers.some(([k]) => k.toLowerCase() === 'content-length')) head += `content-length: ${body.length}\r\n`;
    head += '\r\n';
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const socket = connect(Number(port), '127.0.0.1');
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.destroy();
        resolve(parseHttpResponse(Buffer.concat(chunks)));
      };
      const timer = setTimeout(finish, timeoutMs);
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', finish);
      socket.on('close', finish);
      socket.on('error', finish);
      // latin1: every header byte as written (obs-text included).
      socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body ?? Buffer.alloc(0)]));
    });
  }

  close(): Promise<void> {
    return this.envoy.close();
  }
}

/** The first HTTP/1.1 response in `raw` (status 0 when there is none). */
function parseHttpResponse(raw: Buffer): { status: number; body: Buffer; headers: Record<string, string> } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, body: Buffer.alloc(0), headers: {} };
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = raw.subarray(end + 4);
  if (headers['content-length'] !== undefined) body = body.subarray(0, Number(headers['content-length']));
  else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = [];
    let rest = body;
    for (let n = 0; n < 10_000; n++) {
      const nl = rest.indexOf('\r\n');
      if (nl < 0) break;
      const size = parseInt(rest.subarray(0, nl).toString(), 16);
      if (!(size > 0)) break;
      parts.push(rest.subarray(nl + 2, nl + 2 + size));
      rest = rest.subarray(nl + 2 + size + 2);
    }
    body = Buffer.concat(parts);
  }
  return { status, body, headers };
}
