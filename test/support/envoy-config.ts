/**
 * Strict validation and a small typed model of Envoy bootstrap YAML (envoy/envoy.yaml, snippets).
 *
 * Strict parsing uses Envoy's own API protos as bundled by @grpc/grpc-js-xds (nothing copied into
 * the repo) and `buf` (devDependency @bufbuild/buf):
 *  1. `buf build` compiles an image of the Bootstrap proto plus every typed config we use, with
 *     imports, into a temp dir (once per process and proto set).
 *  2. `buf convert <image> --type <T> --from cfg.yaml#format=yaml`: buf's YAML reader (protoyaml)
 *     rejects unknown fields, unknown enum names, unresolvable `@type` in Any (also nested, e.g.
 *     typed_per_filter_config) and malformed values, with file:line:col in the message.
 *  3. The same document converted to JSON (package `yaml`) through `--from cfg.json#format=json`:
 *     protojson's value syntax, which is what Envoy's own YAML loader applies after YAML→JSON
 *     (e.g. durations must be "<n>s": protoyaml alone would accept "5m"). buf's JSON reader
 *     discards unknown fields, which is why step 2 is needed.
 * Not checked: PGV `validate.rules` constraints (buf only knows protovalidate), and anything
 * newer than the bundled protos (data-plane-api of mid-2024) is reported as an unknown field.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';

const execFileAsync = promisify(execFile);

export const REPO_ROOT = resolve(__dirname, '..', '..');
const BUF_BIN = join(REPO_ROOT, 'node_modules', '.bin', 'buf');
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');

/** Proto files (relative to deps/envoy-api) always compiled into the image: every typed config of envoy.yaml. */
export const DEFAULT_ENVOY_PROTO_FILES: readonly string[] = [
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
];

export interface StrictParseOptions {
  /** Fully-qualified message type; default envoy.config.bootstrap.v3.Bootstrap. */
  typeName?: string;
  /** More proto files (relative to deps/envoy-api) whose messages may appear in `@type`. */
  extraProtoFiles?: readonly string[];
}

const images = new Map<string, Promise<{ dir: string; image: string }>>();

/**
 * The bundled protoc-gen-validate predates `StringRules.ignore_empty` (field 26), which the bundled
 * Envoy protos use in an option annotation; buf refuses to compile that. Annotations do not affect
 * parsing, so the temp workspace gets a copy of validate.proto with that one option field added.
 */
async function buildImage(files: readonly string[]): Promise<{ dir: string; image: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'envoy-protos-'));
  for (const m of ['envoy-api', 'xds', 'googleapis']) await symlink(join(XDS_DEPS, m), join(dir, m));
  const validate = await readFile(join(XDS_DEPS, 'protoc-gen-validate', 'validate', 'validate.proto'), 'utf8');
  const patched = validate.includes('ignore_empty')
    ? validate
    : validate.replace(
        /^(\s*)optional bool strict = 25 \[default = true\];$/m,
        '$&\n$1optional bool ignore_empty = 26; // added for buf: see envoy-config.ts',
      );
  await mkdir(join(dir, 'pgv', 'validate'), { recursive: true });
  await writeFile(join(dir, 'pgv', 'validate', 'validate.proto'), patched);
  await writeFile(
    join(dir, 'buf.yaml'),
    'version: v2\nmodules:\n  - path: envoy-api\n  - path: xds\n  - path: googleapis\n  - path: pgv\n',
  );
  const image = join(dir, 'image.binpb');
  const args = ['build', dir, '-o', image];
  for (const f of files) args.push('--path', join(dir, 'envoy-api', f));
  await runBuf(args);
  return { dir, image };
}

async function runBuf(args: string[]): Promise<void> {
  try {
    await execFileAsync(BUF_BIN, args, { maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error((e.stderr || e.stdout || e.message).trim());
  }
}

function imageFor(files: readonly string[]): Promise<{ dir: string; image: string }> {
  const key = [...files].sort().join('\n');
  let p = images.get(key);
  if (!p) {
    p = buildImage(files);
    images.set(key, p);
    p.catch(() => images.delete(key));
  }
  return p;
}

let seq = 0;

/**
 * Parses Envoy YAML as `typeName` (default Bootstrap) strictly; resolves if valid, otherwise throws
 * an Error whose message is buf's (with line:column for YAML errors).
 */
export async function parseEnvoyBootstrapStrict(yamlText: string, options: StrictParseOptions = {}): Promise<void> {
  const typeName = options.typeName ?? 'envoy.config.bootstrap.v3.Bootstrap';
  const files = [...DEFAULT_ENVOY_PROTO_FILES, ...(options.extraProtoFiles ?? [])];
  const { dir, image } = await imageFor(files);
  let json: string;
  try {
    json = JSON.stringify(parseYaml(yamlText));
  } catch (err) {
    throw new Error(`YAML syntax: ${(err as Error).message}`);
  }
  const n = `${process.pid}-${++seq}`;
  const yamlPath = join(dir, `cfg-${n}.yaml`);
  const jsonPath = join(dir, `cfg-${n}.json`);
  await writeFile(yamlPath, yamlText);
  await writeFile(jsonPath, json);
  const convert = (from: string) => ['convert', image, '--type', typeName, '--from', from, '--to', join(dir, `out-${n}.binpb`)];
  await runBuf(convert(`${yamlPath}#format=yaml`)); // unknown fields / enums / @type, with line numbers
  await runBuf(convert(`${jsonPath}#format=json`)); // protojson value syntax, as Envoy parses it
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
  /** Route.request_body_buffer_limit (Envoy >= 1.36) if present. */
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
  /** status_on_error (Envoy >= 1.36; not in the bundled protos): 500 unless set. */
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

type Obj = Record<string, unknown>;
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
const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

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
    statusOnError: typeof obj(c.status_on_error).code === 'number' ? (obj(c.status_on_error).code as number) : 500,
  };
}

/** Parses the YAML (not strictly: use parseEnvoyBootstrapStrict for that) into plain objects. */
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
