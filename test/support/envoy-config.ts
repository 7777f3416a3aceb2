/**
 * Envoy configuration in tests:
 *  - `validateEnvoyConfig`: the real Envoy's judgement (`envoy --mode validate`), which checks
 *    every field, enum, `@type` and protoc-gen-validate rule of the Envoy that will run the file.
 *  - `snippetBootstrap` / `istioPatchesBootstrap`: envoy/snippets/ pasted into a minimal
 *    "existing" Envoy, the way a user would, so that Envoy can judge them too.
 *  - a small typed model (`envoyConfigFromYaml`, `loadEnvoyConfig`) read by the Envoy stand-in
 *    (test/support/envoy/stand-in.ts) and the topology tests. It does not validate anything.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml, stringify } from 'yaml';
import { loadExtProcProto } from '../../src/extproc/proto';
import { findEnvoy } from './real-envoy';

export const REPO_ROOT = resolve(__dirname, '..', '..');

const execFileAsync = promisify(execFile);

export type ValidateResult = { ok: true } | { ok: false; error: string };

/**
 * envoy/envoy.yaml with Envoy's OpenTelemetry tracing switched on the way its comments say: every
 * line between `# >>> tracing` and `# <<< tracing` loses its first `# `. Throws when there is no
 * such block or one is not closed, so a test cannot pass on a config whose blocks went missing.
 */
export function withEnvoyTracing(yamlText: string): { text: string; blocks: number } {
  let inside = false;
  let blocks = 0;
  const lines = yamlText.split('\n').map((line, i) => {
    if (/^\s*# >>> tracing\s*$/.test(line)) {
      if (inside) throw new Error(`line ${i + 1}: tracing block opened twice`);
      inside = true;
      blocks++;
      return line;
    }
    if (/^\s*# <<< tracing\s*$/.test(line)) {
      inside = false;
      return line;
    }
    if (!inside) return line;
    const m = /^(\s*)# ?(.*)$/.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a commented line inside a tracing block: ${line}`);
    return m[1]! + m[2]!;
  });
  if (inside) throw new Error('a tracing block is not closed');
  if (blocks === 0) throw new Error('no "# >>> tracing" block');
  return { text: lines.join('\n'), blocks };
}

/**
 * Runs `envoy --mode validate` on the YAML text: Envoy builds every listener, cluster and filter
 * from it without binding ports, connecting or resolving DNS (STRICT_DNS names need not resolve).
 * `error` is Envoy's own message, for assertions on why it refused. Not checked by Envoy here:
 * that an ext_proc filter's `envoy_grpc.cluster_name` names an existing cluster (measured on 1.40).
 */
export async function validateEnvoyConfig(yamlText: string): Promise<ValidateResult> {
  const found = findEnvoy();
  if (found.bin === undefined) throw new Error(`no Envoy: ${found.reason}`);
  const dir = await mkdtemp(join(tmpdir(), 'eas-envoy-validate-'));
  try {
    const file = join(dir, 'envoy.yaml');
    await writeFile(file, yamlText);
    try {
      await execFileAsync(found.bin, ['--mode', 'validate', '-c', file, '--log-level', 'critical', '--disable-hot-restart'], {
        maxBuffer: 16 * 1024 * 1024,
      });
      return { ok: true };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      const text = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim() || e.message;
      // The message may span lines (a validate rule failure prints the offending proto).
      const at = text.indexOf('error initializing configuration');
      return { ok: false, error: at >= 0 ? text.slice(at) : text };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

type Obj = Record<string, unknown>;

const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER_FILTER = { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } };

function staticCluster(name: string, port: number): Obj {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
  };
}

export interface SnippetParts {
  /** HTTP filters, placed before the router (http-filter.yaml, composite-filter.yaml). */
  filters?: Obj[];
  /** Routes, placed before the existing catch-all route (routes.yaml). */
  routes?: Obj[];
  /** Clusters, added to the existing `app` cluster (cluster.yaml). */
  clusters?: Obj[];
  /** Cluster the existing catch-all route goes to (default `app`). */
  appCluster?: string;
  /** Port of the existing listener (default 8080). */
  listenerPort?: number;
  /** Name of the existing listener (default `existing`; RealEnvoy's `url` is the one named `ingress`). */
  listenerName?: string;
  /** Fields merged into the existing virtual host (e.g. request_body_buffer_limit). */
  virtualHost?: Obj;
}

/**
 * An "existing" Envoy (admin, one listener `existing` with one HTTP connection manager whose
 * virtual host ends with a catch-all route to the app cluster, and that cluster) with the snippets
 * pasted where envoy/snippets/ says they go. Returns the bootstrap YAML.
 */
export function snippetBootstrap(parts: SnippetParts): string {
  const app = parts.appCluster ?? 'app';
  return stringify({
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 9901 } } },
    static_resources: {
      listeners: [
        {
          name: parts.listenerName ?? 'existing',
          address: { socket_address: { address: '127.0.0.1', port_value: parts.listenerPort ?? 8080 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': HCM_TYPE,
                    stat_prefix: 'existing',
                    route_config: {
                      name: 'existing',
                      virtual_hosts: [
                        {
                          name: 'all',
                          domains: ['*'],
                          routes: [...(parts.routes ?? []), { name: 'existing', match: { prefix: '/' }, route: { cluster: app } }],
                          ...parts.virtualHost,
                        },
                      ],
                    },
                    http_filters: [...(parts.filters ?? []), ROUTER_FILTER],
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [staticCluster(app, 8000), ...(parts.clusters ?? [])],
    },
  });
}

interface IstioPatch {
  applyTo: string;
  match?: { context?: string; listener?: { portNumber?: number }; routeConfiguration?: { portNumber?: number } };
  patch: { operation: string; value: Obj };
}

/**
 * The patches of an Istio EnvoyFilter applied to a stand-in of Istio's inbound config for one
 * port: a listener whose HCM has the router and a catch-all route to `inbound|<port>||` (Istio's
 * generated cluster name). Handles CLUSTER ADD, HTTP_FILTER INSERT_BEFORE the router,
 * HTTP_ROUTE INSERT_FIRST (each goes to the top, so the last one applied ends up first) and
 * VIRTUAL_HOST MERGE. Anything else is an error, so a new kind of patch gets a test.
 */
export function istioPatchesBootstrap(envoyFilter: { spec: { configPatches: IstioPatch[] } }, opts: { port?: number; listenerName?: string } = {}): string {
  const port = opts.port ?? 8000;
  const filters: Obj[] = [];
  const routes: Obj[] = [];
  const clusters: Obj[] = [];
  let virtualHost: Obj = {};
  for (const p of envoyFilter.spec.configPatches) {
    const op = `${p.applyTo} ${p.patch.operation}`;
    if (op === 'CLUSTER ADD') clusters.push(p.patch.value);
    else if (op === 'HTTP_FILTER INSERT_BEFORE') filters.push(p.patch.value);
    else if (op === 'HTTP_ROUTE INSERT_FIRST') routes.unshift(p.patch.value);
    else if (op === 'VIRTUAL_HOST MERGE') virtualHost = { ...virtualHost, ...p.patch.value };
    else throw new Error(`istioPatchesBootstrap: ${op} is not handled`);
  }
  return snippetBootstrap({ filters, routes, clusters, virtualHost, appCluster: `inbound|${port}||`, listenerPort: port, listenerName: opts.listenerName });
}

// ───────────────────────────── typed-ish model used by the Envoy stand-in ─────────────────────────────

export type HeaderSendMode = 'DEFAULT' | 'SEND' | 'SKIP';
export type BodySendMode = 'NONE' | 'STREAMED' | 'BUFFERED' | 'BUFFERED_PARTIAL' | 'FULL_DUPLEX_STREAMED';

export interface ProcessingModeModel {
  request_header_mode: HeaderSendMode;
  response_header_mode: HeaderSendMode;
  request_body_mode: BodySendMode;
  response_body_mode: BodySendMode;
  request_trailer_mode: HeaderSendMode;
  response_trailer_mode: HeaderSendMode;
}

export interface StringMatchModel {
  exact?: string;
  prefix?: string;
  suffix?: string;
  contains?: string;
  safe_regex?: { regex: string };
  ignore_case?: boolean;
}

export interface RouteModel {
  name?: string;
  match: {
    prefix?: string;
    path?: string;
    safe_regex?: { regex: string };
    case_sensitive?: boolean;
    query_parameters: { name: string; string_match?: StringMatchModel; present_match?: boolean }[];
    headers: {
      name: string;
      string_match?: StringMatchModel;
      exact_match?: string;
      prefix_match?: string;
      present_match?: boolean;
      invert_match?: boolean;
    }[];
  };
  cluster?: string;
  /** Route timeout in ms; 0 = disabled; Envoy's default is 15 s. */
  timeoutMs: number;
  idleTimeoutMs?: number;
  /** Route.request_body_buffer_limit (Envoy >= 1.36): the BUFFERED body limit on this route, above the listener's. */
  requestBodyBufferLimit?: number;
  /** typed_per_filter_config entries by filter name (raw objects, `@type` kept). */
  perFilterConfig: Record<string, Record<string, unknown>>;
}

export interface ExtProcFilterModel {
  name: string;
  disabled: boolean;
  clusterName: string;
  failureModeAllow: boolean;
  messageTimeoutMs: number;
  maxMessageTimeoutMs: number;
  allowModeOverride: boolean;
  processingMode: ProcessingModeModel;
  /** status_on_error (Envoy >= 1.36) as a number: what gRPC errors and spurious messages answer; 500 unless set. */
  statusOnError: number;
}

export interface HttpFilterModel {
  name: string;
  disabled: boolean;
  type: string;
  config: Record<string, unknown>;
}

export interface ListenerModel {
  name: string;
  address: string;
  port: number;
  perConnectionBufferLimitBytes: number;
  hcm: {
    statPrefix: string;
    streamIdleTimeoutMs?: number;
    requestTimeoutMs?: number;
    /** VirtualHost.request_body_buffer_limit (Envoy >= 1.36) of the first virtual host: for routes without their own. */
    virtualHostBufferLimit?: number;
    routes: RouteModel[];
    httpFilters: HttpFilterModel[];
    extProc?: ExtProcFilterModel;
  };
}

export interface ClusterModel {
  name: string;
  type: string;
  /** 'host:port' of the first endpoint. */
  endpoint: string;
  http2: boolean;
  /** Streams Envoy sends on one upstream connection before opening a new one (unset: no limit). */
  maxRequestsPerConnection: number | null;
  circuitBreakers: { max_connections?: number; max_pending_requests?: number; max_requests?: number; max_retries?: number }[];
  healthChecks: Record<string, unknown>[];
}

export interface EnvoyConfigModel {
  raw: Record<string, unknown>;
  listeners: ListenerModel[];
  clusters: Record<string, ClusterModel>;
  listener(name: string): ListenerModel;
}

const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
const num = (v: unknown, d: number): number => (v === undefined || v === null ? d : Number(v));

/** protojson Duration ("1.5s") or {seconds, nanos} → ms. */
export function durationMs(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') {
    const m = /^(-?\d+(?:\.\d+)?)s$/.exec(v.trim());
    if (!m) throw new Error(`bad duration ${v}`);
    return Math.round(Number(m[1]) * 1000);
  }
  const o = obj(v);
  return num(o.seconds, 0) * 1000 + Math.round(num(o.nanos, 0) / 1e6);
}

export const DEFAULT_PROCESSING_MODE: ProcessingModeModel = {
  request_header_mode: 'SEND',
  response_header_mode: 'SEND',
  request_body_mode: 'NONE',
  response_body_mode: 'NONE',
  request_trailer_mode: 'SKIP',
  response_trailer_mode: 'SKIP',
};

/** A ProcessingMode message as Envoy sees it: unset fields are their proto zero values (DEFAULT / NONE). */
export function processingModeFrom(v: unknown): ProcessingModeModel {
  const o = obj(v);
  const h = (x: unknown): HeaderSendMode => (x === undefined ? 'DEFAULT' : (x as HeaderSendMode));
  const b = (x: unknown): BodySendMode => (x === undefined ? 'NONE' : (x as BodySendMode));
  return {
    request_header_mode: h(o.request_header_mode),
    response_header_mode: h(o.response_header_mode),
    request_body_mode: b(o.request_body_mode),
    response_body_mode: b(o.response_body_mode),
    request_trailer_mode: h(o.request_trailer_mode),
    response_trailer_mode: h(o.response_trailer_mode),
  };
}

const EXT_PROC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor';

function routeModel(r: Obj): RouteModel {
  const match = obj(r.match);
  const action = obj(r.route);
  return {
    name: r.name as string | undefined,
    match: {
      prefix: match.prefix as string | undefined,
      path: match.path as string | undefined,
      safe_regex: match.safe_regex as { regex: string } | undefined,
      case_sensitive: match.case_sensitive as boolean | undefined,
      query_parameters: arr(match.query_parameters) as unknown as RouteModel['match']['query_parameters'],
      headers: arr(match.headers) as unknown as RouteModel['match']['headers'],
    },
    cluster: action.cluster as string | undefined,
    timeoutMs: durationMs(action.timeout) ?? 15000,
    idleTimeoutMs: durationMs(action.idle_timeout),
    requestBodyBufferLimit: r.request_body_buffer_limit === undefined ? undefined : Number(r.request_body_buffer_limit),
    perFilterConfig: obj(r.typed_per_filter_config) as Record<string, Obj>,
  };
}

let statusCodes: Map<string, number> | undefined;

/** envoy.type.v3.StatusCode by name (`ServiceUnavailable` → 503), from Envoy's protos. */
function statusCodeNumber(name: string): number | undefined {
  if (!statusCodes) {
    const values = (loadExtProcProto() as unknown as { envoy: { type: { v3: { StatusCode: { type: { value: { name: string; number: number }[] } } } } } }).envoy
      .type.v3.StatusCode.type.value;
    statusCodes = new Map(values.map((v) => [v.name, v.number]));
  }
  return statusCodes.get(name);
}

/**
 * ExternalProcessor.status_on_error ({code: <StatusCode name or number>}) as Envoy applies it:
 * unset, or a code outside 4xx/5xx, is 500 (toErrorCode in ext_proc.cc).
 */
export function statusOnError(v: unknown): number {
  const code = obj(v).code;
  const n = typeof code === 'number' ? code : typeof code === 'string' ? (/^\d+$/.test(code) ? Number(code) : statusCodeNumber(code)) : undefined;
  return n !== undefined && n >= 400 && n <= 599 ? n : 500;
}

function extProcModel(f: HttpFilterModel): ExtProcFilterModel {
  const c = f.config;
  const grpc = obj(c.grpc_service);
  return {
    name: f.name,
    disabled: f.disabled,
    clusterName: String(obj(grpc.envoy_grpc).cluster_name ?? ''),
    failureModeAllow: c.failure_mode_allow === true,
    messageTimeoutMs: durationMs(c.message_timeout) ?? 200,
    maxMessageTimeoutMs: durationMs(c.max_message_timeout) ?? 0,
    allowModeOverride: c.allow_mode_override === true,
    // The filter-level mode: unset fields take the documented defaults (SEND headers, NONE bodies).
    processingMode: c.processing_mode === undefined ? { ...DEFAULT_PROCESSING_MODE } : processingModeFrom(c.processing_mode),
    statusOnError: statusOnError(c.status_on_error),
  };
}

/** Reads the YAML into the model (no validation: the real Envoy does that). */
export function envoyConfigFromYaml(yamlText: string): EnvoyConfigModel {
  const raw = obj(parseYaml(yamlText));
  const sr = obj(raw.static_resources);
  const listeners: ListenerModel[] = arr(sr.listeners).map((l) => {
    const sa = obj(obj(l.address).socket_address);
    const filters = arr(obj(arr(l.filter_chains)[0]).filters);
    const hcmFilter = filters.find((f) => obj(f.typed_config)['@type'] === HCM_TYPE);
    const hcm = obj(hcmFilter?.typed_config);
    const httpFilters: HttpFilterModel[] = arr(hcm.http_filters).map((f) => ({
      name: String(f.name),
      disabled: f.disabled === true,
      type: String(obj(f.typed_config)['@type'] ?? ''),
      config: obj(f.typed_config),
    }));
    const ep = httpFilters.find((f) => f.type === EXT_PROC_TYPE);
    const vhost = obj(arr(obj(hcm.route_config).virtual_hosts)[0]);
    return {
      name: String(l.name),
      address: String(sa.address),
      port: num(sa.port_value, 0),
      perConnectionBufferLimitBytes: num(l.per_connection_buffer_limit_bytes, 1024 * 1024),
      hcm: {
        statPrefix: String(hcm.stat_prefix ?? ''),
        streamIdleTimeoutMs: durationMs(hcm.stream_idle_timeout),
        requestTimeoutMs: durationMs(hcm.request_timeout),
        virtualHostBufferLimit: vhost.request_body_buffer_limit === undefined ? undefined : Number(vhost.request_body_buffer_limit),
        routes: arr(vhost.routes).map(routeModel),
        httpFilters,
        extProc: ep ? extProcModel(ep) : undefined,
      },
    };
  });
  const clusters: Record<string, ClusterModel> = {};
  for (const c of arr(sr.clusters)) {
    const ep = obj(obj(obj(arr(obj(arr(obj(c.load_assignment).endpoints)[0]).lb_endpoints)[0]).endpoint).address);
    const sa = obj(ep.socket_address);
    const opts = obj(obj(c.typed_extension_protocol_options)['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']);
    clusters[String(c.name)] = {
      name: String(c.name),
      type: String(c.type ?? 'STATIC'),
      endpoint: `${String(sa.address)}:${num(sa.port_value, 0)}`,
      http2: obj(opts.explicit_http_config).http2_protocol_options !== undefined || c.http2_protocol_options !== undefined,
      maxRequestsPerConnection:
        obj(opts.common_http_protocol_options).max_requests_per_connection !== undefined
          ? num(obj(opts.common_http_protocol_options).max_requests_per_connection, 0)
          : c.max_requests_per_connection !== undefined
            ? num(c.max_requests_per_connection, 0)
            : null,
      circuitBreakers: arr(obj(c.circuit_breakers).thresholds) as ClusterModel['circuitBreakers'],
      healthChecks: arr(c.health_checks),
    };
  }
  return {
    raw,
    listeners,
    clusters,
    listener(name: string): ListenerModel {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener ${name}`);
      return l;
    },
  };
}

/** Reads envoy.yaml (path relative to the repo root unless absolute) into the model. */
export async function loadEnvoyConfig(path = 'envoy/envoy.yaml'): Promise<EnvoyConfigModel> {
  const full = isAbsolute(path) ? path : join(REPO_ROOT, path);
  return envoyConfigFromYaml(await readFile(full, 'utf8'));
}
