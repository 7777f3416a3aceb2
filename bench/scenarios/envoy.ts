/**
 * End to end through the real Envoy: HTTP/1.1 requests from h2load to Envoy's ingress
 * listener, with the shipped envoy/envoy.yaml rendered for loopback, against two floors measured
 * in the same run: Envoy answering the async route by itself (`direct_response`, the same status
 * and a 50-byte body) and Envoy with the bare ext_proc server (bench/floor-server.ts) as its sidecar.
 * Then the cost of the filter on ordinary pass-through traffic: the shipped `passthrough` route
 * (filter disabled) against the same route with the filter enabled for request headers only.
 *
 * One Envoy per config variant, all up at once; each measurement is repeated in interleaved
 * rounds so that a disturbance from other work on the shared cores shows as one bad round.
 * Every loop is bounded; only 127.0.0.1.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Document } from 'yaml';
import { RealEnvoy, findEnvoy } from '../../test/support/real-envoy';
import type { BenchEnv, Scenario } from '../env';
import { ROOT, cpuMicros, fmt, pct, sleep } from '../lib';
import { QUEUED_KEY, h2loadVersion } from '../load';
import { BODY_BYTES, bodyMessage } from '../messages';

/** A running process whose CPU time is read from /proc. */
interface Proc {
  pid: number;
  port: number;
}

interface E2EDeps {
  /** The sidecar, `--role extproc`, on its gRPC port, started with EXTPROC_TOKEN = `token` when that is set. */
  sidecar: Proc;
  /** What replaces envoy.yaml's `@EXTPROC_TOKEN@` (see `extprocToken`). */
  token: string;
  /** bench/floor-server.ts. */
  floor: Proc;
  /** bench/noop-http.ts: the app behind Envoy. */
  app: Proc;
  redis: { client: Redis; pid: number };
  quick: boolean;
  tmp: string;
  log(msg: string): void;
}

export type Request = 'async-get' | 'async-post' | 'pass';
export type Variant = 'direct_response' | 'bare ext_proc' | 'sidecar' | 'filter disabled' | 'filter on, bare ext_proc' | 'filter on, sidecar';

export interface EnvoyRow {
  variant: Variant;
  request: Request;
  mode: 'throughput' | 'rate';
  round?: number;
  /** Requests per second over the measurement (h2load's own figure). */
  rps: number;
  /** For `rate` rows: the rate asked for. */
  targetRps: number;
  seconds: number;
  ok: number;
  /** Responses with another status than the expected one, plus failed and errored requests. */
  bad: number;
  firstBad: string;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  /** CPU µs per request, by process ('h2load' = the load generator). */
  cpu: Record<string, number>;
  /** Envoy's counters over the measurement (deltas). */
  envoy: { extprocStreams: number; sidecarConnections: number; appRequests: number; clientConnections: number };
  /** Runs in the Redis queue afterwards (sidecar rows only). */
  stored: number | null;
}

export interface EnvoyResults {
  envoyVersion: string;
  h2load: string;
  connections: number;
  rateConnections: number;
  rate: number;
  seconds: number;
  rounds: number;
  /** Whether the sidecar checked an EXTPROC_TOKEN that Envoy sent (the shipped config's placeholder filled in). */
  token?: boolean;
  rows: EnvoyRow[];
  /** What the probe request of each variant got (status, content-type, body length). */
  probes: Array<{ variant: Variant; request: Request; status: number; contentType: string; bodyBytes: number }>;
  /** Envoy's log lines (its level is warning, so: warnings and errors) per config, at most 20 each. */
  envoyLog: Array<{ config: string; lines: string[] }>;
  at: string;
}

/** The 202 body the sidecar sends: `{"run_id":"<uuid>"}\n`, 50 bytes. The floor sends the same. */
const ACCEPT_BODY = '{"run_id":"00000000-0000-4000-8000-000000000000"}\n';
const ASYNC_PATH = '/v1/reports/generate?async=true&format=pdf';
const PASS_PATH = '/v1/reports/42?format=pdf';
/** Closed-loop throughput: HTTP/1.1 has one request in flight per connection. */
const CONNECTIONS = 64;
/** Fixed-rate latency: the rate is spread over this many connections so that one slow response delays few others. */
const RATE_CONNECTIONS = 40;
/** Below every variant's capacity here (the sidecar path is the slowest), so the rows compare latency, not queueing. */
const RATE = 1000;
const FILTER = 'envoy.filters.http.ext_proc';
/** Every measurement is repeated this often (BENCH_QUICK: once), interleaved; the report shows the best round and the spread. */
const ROUNDS = 2;
const seconds = (deps: E2EDeps) => (deps.quick ? 3 : 5);

// ---------------------------------------------------------------- Envoy configs

type Path = Array<string | number>;

/** Path of the ingress listener's route named `name` in the rendered document. */
function ingressRoute(doc: Document, name: string): Path {
  const listeners = (
    doc.toJS() as {
      static_resources: {
        listeners: Array<{
          name: string;
          filter_chains: Array<{ filters: Array<{ typed_config: { route_config?: { virtual_hosts: Array<{ routes: Array<{ name?: string }> }> } } }> }>;
        }>;
      };
    }
  ).static_resources.listeners;
  const li = listeners.findIndex((l) => l.name === 'ingress');
  const routes = listeners[li]?.filter_chains[0]?.filters[0]?.typed_config.route_config?.virtual_hosts[0]?.routes ?? [];
  const ri = routes.findIndex((r) => r.name === name);
  if (li < 0 || ri < 0) throw new Error(`envoy.yaml: no ingress route ${name}`);
  return ['static_resources', 'listeners', li, 'filter_chains', 0, 'filters', 0, 'typed_config', 'route_config', 'virtual_hosts', 0, 'routes', ri];
}

/**
 * The async_query route answered by Envoy itself: the throughput floor of any async path through
 * Envoy. A buffer filter reads the whole body first, as ext_proc's BUFFERED mode does: a
 * direct_response sent while a request body is still unread ends the HTTP/1.1 connection
 * (`connection: close`), so without it every POST would pay for a new TCP connection.
 */
export function directResponse(doc: Document): void {
  const r = ingressRoute(doc, 'async_query');
  const hcm = r.slice(0, r.indexOf('route_config'));
  const filters = doc.getIn([...hcm, 'http_filters']) as { items: unknown[] };
  const router = filters.items.findIndex((_, i) => doc.getIn([...hcm, 'http_filters', i, 'name']) === 'envoy.filters.http.router');
  filters.items.splice(
    router,
    0,
    doc.createNode({
      name: 'envoy.filters.http.buffer',
      typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer', max_request_bytes: 10_485_760 },
    }),
  );
  doc.deleteIn([...r, 'route']);
  doc.deleteIn([...r, 'typed_per_filter_config']);
  doc.setIn([...r, 'direct_response'], doc.createNode({ status: 202, body: { inline_string: ACCEPT_BODY } }));
  const h = (key: string, value: string) => ({ header: { key, value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' });
  doc.setIn(
    [...r, 'response_headers_to_add'],
    doc.createNode([h('content-type', 'application/json'), h('location', '/v1/runs/00000000-0000-4000-8000-000000000000')]),
  );
}

/** The passthrough route with the filter enabled for request headers only (the sidecar answers CONTINUE). */
export function filterOnPassthrough(doc: Document): void {
  const r = ingressRoute(doc, 'passthrough');
  doc.setIn(
    [...r, 'typed_per_filter_config'],
    doc.createNode({
      [FILTER]: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
        overrides: {
          processing_mode: {
            request_header_mode: 'SEND',
            response_header_mode: 'SKIP',
            request_body_mode: 'NONE',
            response_body_mode: 'NONE',
            request_trailer_mode: 'SKIP',
            response_trailer_mode: 'SKIP',
          },
        },
      },
    }),
  );
}

// ---------------------------------------------------------------- h2load

interface H2Out {
  seconds: number;
  rps: number;
  status2xx: number;
  failed: number;
  errored: number;
  meanMs: number;
  /** Per-request (status, µs) from --log-file. */
  log: Array<[number, number]>;
  /** CPU µs of h2load itself (bash `times`: children's user + sys). */
  cpuUs: number;
}

const requestArgs = (request: Request, bodyFile: string): string[] =>
  request === 'async-post' ? ['-d', bodyFile, '-H', 'content-type: application/json'] : [];

/**
 * One h2load run over HTTP/1.1. Without `rate`: closed loop for `seconds`. With `rate`: that many
 * requests/s in total, each connection sending rate/connections per second (`--rps`); the
 * connections are opened 1000/rate ms apart (`-r 1 --rate-period`), which staggers their send
 * timers evenly: started together, they would all send at the same instant (measured: bursts of
 * 40 requests every 40 ms, p50 5 ms instead of 0.7 ms through the bare ext_proc server).
 */
function h2load(url: string, request: Request, opts: { seconds: number; connections: number; rate?: number; bodyFile: string; logFile: string }): H2Out {
  const pace = opts.rate
    ? [
        '-n',
        String(Math.round(opts.rate * opts.seconds)),
        '-r',
        '1',
        `--rate-period=${Math.max(1, Math.round(1000 / opts.rate))}ms`,
        '--rps',
        String(opts.rate / opts.connections),
      ]
    : ['-D', String(opts.seconds)];
  const args = [
    '--h1',
    '-t',
    '1',
    '-c',
    String(opts.connections),
    '-m',
    '1',
    ...pace,
    '--log-file',
    opts.logFile,
    '-H',
    'accept: */*',
    '-H',
    'authorization: Bearer 3f1c9f1e2b7a4d7c8e0f5a6b7c8d9e0f',
    ...requestArgs(request, opts.bodyFile),
  ];
  args.push(`${url}${request === 'pass' ? PASS_PATH : ASYNC_PATH}`);
  rmSync(opts.logFile, { force: true }); // h2load appends to it
  // `times` reports the CPU of the shell's finished children, i.e. of h2load.
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const out = execFileSync('bash', ['-c', `h2load ${quoted}; rc=$?; times; exit $rc`], { timeout: (opts.seconds + 30) * 1000, maxBuffer: 1 << 20 }).toString();
  const fin = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(out);
  const reqs = /requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const codes = /status codes: (\d+) 2xx/.exec(out);
  const mean = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  const times = [...out.matchAll(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/g)].pop();
  if (!fin || !reqs || !codes) throw new Error(`could not parse h2load output:\n${out}`);
  const ms = (v: string, u: string) => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  const log: Array<[number, number]> = [];
  for (const line of readFileSync(opts.logFile, 'utf8').split('\n')) {
    const f = line.split('\t');
    if (f.length >= 3) log.push([Number(f[1]), Number(f[2])]);
  }
  const sec = (m: string, s: string) => Number(m) * 60 + Number(s);
  return {
    seconds: Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1),
    rps: Number(fin[3]),
    status2xx: Number(codes[1]),
    failed: Number(reqs[1]),
    errored: Number(reqs[2]),
    meanMs: mean ? ms(mean[1]!, mean[2]!) : NaN,
    log,
    cpuUs: times ? (sec(times[1]!, times[2]!) + sec(times[3]!, times[4]!)) * 1e6 : NaN,
  };
}

// ---------------------------------------------------------------- measuring

async function counters(envoy: RealEnvoy): Promise<EnvoyRow['envoy']> {
  const s = await envoy.stats();
  return {
    extprocStreams: s.get('http.ingress_http.ext_proc.streams_started') ?? 0,
    sidecarConnections: s.get('cluster.async_sidecar.upstream_cx_total') ?? 0,
    appRequests: s.get('cluster.app.upstream_rq_total') ?? 0,
    clientConnections: s.get('http.ingress_http.downstream_cx_total') ?? 0,
  };
}

async function measure(
  deps: E2EDeps,
  envoy: RealEnvoy,
  variant: Variant,
  request: Request,
  procs: Record<string, number>,
  mode: 'throughput' | 'rate',
): Promise<EnvoyRow> {
  const bodyFile = join(deps.tmp, 'e2e-body.json');
  writeFileSync(bodyFile, bodyMessage().request_body!.body as Buffer);
  const logFile = join(deps.tmp, 'e2e-h2load.log');
  const connections = mode === 'rate' ? RATE_CONNECTIONS : CONNECTIONS;
  const rate = mode === 'rate' ? RATE : undefined;
  // Warm-up, not measured: Envoy's upstream connections, the servers' JIT.
  h2load(envoy.url, request, { seconds: 1, connections, rate, bodyFile, logFile });
  // Requests cut off when the warm-up stopped may still be writing their runs: let them land
  // before the flush, so that runs stored counts only this measurement's.
  await sleep(300);
  const withRedis = 'redis' in procs;
  if (withRedis) await deps.redis.client.flushall();
  const c0 = await counters(envoy);
  const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuMicros(pid)]));
  const r = h2load(envoy.url, request, { seconds: seconds(deps), connections, rate, bodyFile, logFile });
  const cpu1 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuMicros(pid)]));
  const c1 = await counters(envoy);
  const stored = withRedis ? await deps.redis.client.zcard(QUEUED_KEY) : null;
  const expected = request === 'pass' ? 200 : 202;
  const lat: number[] = [];
  const other = new Map<number, number>();
  for (const [status, us] of r.log) {
    if (status === expected) lat.push(us / 1000);
    else other.set(status, (other.get(status) ?? 0) + 1);
  }
  lat.sort((a, b) => a - b);
  const n = Math.max(1, r.log.length);
  const cpu: Record<string, number> = {};
  for (const k of Object.keys(procs)) cpu[k] = (cpu1[k]! - cpu0[k]!) / n;
  cpu.h2load = r.cpuUs / n;
  const row: EnvoyRow = {
    variant,
    request,
    mode,
    rps: r.rps,
    targetRps: rate ?? 0,
    seconds: r.seconds,
    ok: lat.length,
    bad: r.log.length - lat.length + r.errored,
    firstBad: [...other].map(([s, c]) => `${c}× ${s === -1 ? 'failed' : s}`).join(', '),
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    p999: pct(lat, 99.9),
    max: lat.length ? lat[lat.length - 1]! : NaN,
    mean: r.meanMs,
    cpu,
    envoy: {
      extprocStreams: c1.extprocStreams - c0.extprocStreams,
      sidecarConnections: c1.sidecarConnections - c0.sidecarConnections,
      appRequests: c1.appRequests - c0.appRequests,
      clientConnections: c1.clientConnections - c0.clientConnections,
    },
    stored,
  };
  deps.log(
    `envoy ${variant} ${request} ${mode}: ${fmt(r.rps)} req/s, p50 ${row.p50.toFixed(2)} p99 ${row.p99.toFixed(2)} ms, ok ${row.ok} bad ${row.bad}${row.firstBad ? ` (${row.firstBad})` : ''}, CPU µs/req ${Object.entries(
      cpu,
    )
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(
        ' ',
      )}, ext_proc streams ${row.envoy.extprocStreams}, client connections ${row.envoy.clientConnections}, app requests ${row.envoy.appRequests}, stored ${stored ?? '-'}`,
  );
  return row;
}

/** One request through the variant's Envoy: what a client gets (asserted against the sidecar's answer in the report). */
async function probe(envoy: RealEnvoy, variant: Variant, request: Request): Promise<EnvoyResults['probes'][number]> {
  const res = await fetch(`${envoy.url}${request === 'pass' ? PASS_PATH : ASYNC_PATH}`, {
    method: request === 'async-post' ? 'POST' : 'GET',
    body: request === 'async-post' ? Buffer.alloc(BODY_BYTES, 'x') : undefined,
  });
  const body = Buffer.from(await res.arrayBuffer());
  return { variant, request, status: res.status, contentType: res.headers.get('content-type') ?? '', bodyBytes: body.length };
}

/**
 * The shipped envoy.yaml sends the shared secret as `@EXTPROC_TOKEN@`, which every deployment
 * replaces before Envoy starts: a fresh token for the bench to do the same (the sidecar then
 * checks it on every stream, as deployed), or '' when the config has no placeholder.
 */
function extprocToken(): string {
  return readFileSync(join(ROOT, 'envoy', 'envoy.yaml'), 'utf8').includes(TOKEN_PLACEHOLDER) ? `bench-${randomUUID()}` : '';
}
const TOKEN_PLACEHOLDER = '@EXTPROC_TOKEN@';

async function envoyE2E(deps: E2EDeps): Promise<EnvoyResults> {
  // `npm run bench` puts an Envoy where scripts/envoy.sh finds it (scripts/bench.sh installs one when missing).
  const found = findEnvoy();
  if (found.bin === undefined) throw new Error(`no Envoy: ${found.reason}`);
  const version = found.version;
  deps.log(`envoy ${version}`);
  const rounds = deps.quick ? 1 : ROUNDS;
  const report: EnvoyResults = {
    envoyVersion: version,
    h2load: h2loadVersion(),
    connections: CONNECTIONS,
    rateConnections: RATE_CONNECTIONS,
    rate: RATE,
    seconds: seconds(deps),
    rounds,
    token: deps.token !== '',
    rows: [],
    probes: [],
    envoyLog: [],
    at: new Date().toISOString(),
  };
  const app = `127.0.0.1:${deps.app.port}`;
  const serverName = (p: Proc) => (p === deps.sidecar ? 'sidecar' : 'ext_proc server');
  // The shipped config unchanged serves the sidecar's async rows and the filter-disabled
  // pass-through row; the others differ from it only where their variant says.
  const plans: Array<{ name: string; sidecar: Proc; edit?: (d: Document) => void; rows: Array<[Variant, Request]> }> = [
    {
      name: 'direct_response',
      sidecar: deps.floor,
      edit: directResponse,
      rows: [
        ['direct_response', 'async-get'],
        ['direct_response', 'async-post'],
      ],
    },
    {
      name: 'bare ext_proc, filter on passthrough',
      sidecar: deps.floor,
      edit: filterOnPassthrough,
      rows: [
        ['bare ext_proc', 'async-get'],
        ['bare ext_proc', 'async-post'],
        ['filter on, bare ext_proc', 'pass'],
      ],
    },
    {
      name: 'shipped',
      sidecar: deps.sidecar,
      rows: [
        ['sidecar', 'async-get'],
        ['sidecar', 'async-post'],
        ['filter disabled', 'pass'],
      ],
    },
    { name: 'sidecar, filter on passthrough', sidecar: deps.sidecar, edit: filterOnPassthrough, rows: [['filter on, sidecar', 'pass']] },
  ];
  const envoys: Array<{ name: string; envoy: RealEnvoy }> = [];
  // The config as a deployment hands it to Envoy: the token placeholder filled in.
  const configPath = join(deps.tmp, 'envoy-with-token.yaml');
  writeFileSync(
    configPath,
    readFileSync(join(ROOT, 'envoy', 'envoy.yaml'), 'utf8')
      .split(TOKEN_PLACEHOLDER)
      .join(deps.token),
  );
  try {
    // All Envoys up at once (idle ones cost only their health checks), so that every round can
    // measure the variants of one request back to back: a disturbance from other work on the
    // machine then hits one round of all variants rather than all rounds of one.
    const jobs: Array<{ envoy: RealEnvoy; variant: Variant; request: Request; procs: Record<string, number> }> = [];
    for (const plan of plans) {
      const envoy = await RealEnvoy.start({ configPath, clusters: { async_sidecar: `127.0.0.1:${plan.sidecar.port}`, app }, edit: plan.edit });
      envoys.push({ name: plan.name, envoy });
      for (const [variant, request] of plan.rows) {
        const procs: Record<string, number> = { envoy: envoy.pid };
        if (request === 'pass') procs.app = deps.app.pid;
        if (variant !== 'direct_response' && variant !== 'filter disabled') procs[serverName(plan.sidecar)] = plan.sidecar.pid;
        if (variant === 'sidecar') procs.redis = deps.redis.pid;
        jobs.push({ envoy, variant, request, procs });
      }
    }
    const order: Request[] = ['async-get', 'async-post', 'pass'];
    jobs.sort((a, b) => order.indexOf(a.request) - order.indexOf(b.request));
    for (const j of jobs) report.probes.push(await probe(j.envoy, j.variant, j.request));
    for (let round = 1; round <= rounds; round++) {
      for (const mode of ['throughput', 'rate'] as const) {
        for (const j of jobs) report.rows.push({ ...(await measure(deps, j.envoy, j.variant, j.request, j.procs, mode)), round });
      }
    }
  } finally {
    for (const { name, envoy } of envoys) {
      report.envoyLog.push({
        config: name,
        lines: envoy
          .log()
          .split('\n')
          .filter((l) => l.trim())
          .slice(0, 20),
      });
      await envoy.close();
    }
  }
  return report;
}

/**
 * Section 6 with its own sidecar: it checks EXTPROC_TOKEN as deployed, where the accept, latency
 * and pass-through scenarios drive the shared sidecar without gRPC metadata.
 */
export const envoy: Scenario<EnvoyResults> = {
  uses: ['redis', 'noop', 'floor'],
  async run(env: BenchEnv): Promise<EnvoyResults> {
    const [redis, noop, floor] = [await env.redis(), await env.noop(), await env.floor()];
    const token = extprocToken();
    const sidecar = await env.startSidecar('extproc', redis.server.url, token ? { EXTPROC_TOKEN: token } : {});
    try {
      return await envoyE2E({
        sidecar: { pid: sidecar.child.pid, port: sidecar.grpcPort },
        token,
        floor: { pid: floor.child.pid, port: floor.port },
        app: { pid: noop.child.pid, port: noop.port },
        redis: { client: redis.client, pid: redis.server.pid },
        quick: env.quick,
        tmp: env.tmp,
        log: env.log,
      });
    } finally {
      await sidecar.child.stop('SIGTERM', 10_000);
      await redis.client.flushall();
    }
  },
};
