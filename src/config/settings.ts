import { z } from 'zod';
import { DEFAULT_RETRY_SCHEDULE, parseRetrySchedule } from '../webhooks/retry';

/**
 * Every setting the sidecar reads from the environment, in one table: the schema parses and
 * validates it, and `--help` and the README's configuration table are generated from it.
 */

/** The longest grace period (12 h): the dispatch listener's route timeout in envoy/envoy.yaml matches it. */
export const MAX_GRACE_SECONDS = 43200;

/** Orphaned runs that are dispatched again; the type comes from the same list. */
export const REDISPATCH_POLICIES = ['never', 'idempotent', 'always'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** OTLP protocols the sidecar exports traces with (grpc would need another exporter). */
export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json'] as const;
/** The OpenTelemetry SDK's built-in samplers (OTEL_TRACES_SAMPLER). */
export const TRACE_SAMPLERS = [
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
  'always_on',
  'always_off',
  'traceidratio',
] as const;

const seconds = (max?: number) => {
  let schema = z.coerce.number().positive();
  if (max !== undefined) schema = schema.max(max);
  return schema;
};
const positiveInt = (max?: number) => {
  let schema = z.coerce.number().int().positive();
  if (max !== undefined) schema = schema.max(max);
  return schema;
};
const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const hostPort = z
  .string()
  .trim()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'must be host:port (IPv6 in brackets)')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');
const httpUrl = z
  .string()
  .trim()
  .refine((v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an absolute http:// or https:// URL');
const optionalHttpUrl = z.union([z.literal(''), httpUrl]);
/** '' (unset: the value another setting gives) or an OTLP protocol this sidecar exports with. */
const otlpProtocol = z
  .string()
  .trim()
  .refine((v) => v !== 'grpc', 'this sidecar exports traces over OTLP/HTTP only; use http/protobuf (the Collector port 4318) or http/json')
  .refine((v) => v === '' || (OTLP_PROTOCOLS as readonly string[]).includes(v), 'must be http/protobuf or http/json');
/** Comma-separated host:port entries (none: ''), as addresses. */
const hostPortList = z
  .string()
  .trim()
  .superRefine((v, ctx) => {
    if (v === '') return;
    for (const entry of v.split(',').map((e) => e.trim())) {
      const r = hostPort.safeParse(entry);
      if (!r.success)
        ctx.addIssue({ code: 'custom', message: `${JSON.stringify(entry)} ${r.error.issues[0]?.message ?? 'is not host:port'}; separate entries with commas` });
    }
  })
  .transform((v) =>
    v === ''
      ? []
      : v.split(',').map((e) => {
          const entry = e.trim();
          const i = entry.lastIndexOf(':');
          return { host: entry.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(entry.slice(i + 1)) };
        }),
  );
const redisUrl = z
  .string()
  .trim()
  .refine((v) => /^rediss?:\/\//.test(v) && URL.canParse(v), 'must be a redis:// or rediss:// URL');

export interface SettingSpec {
  /** Environment variable name. */
  env: string;
  /** Default as the user would write it ('' for "unset"). */
  default: string;
  /** Parses the raw string; its output type is the setting's type in Config. */
  schema: z.ZodType;
  description: string;
  /** Secrets are never echoed back in error messages. */
  secret?: boolean;
  /** Shows a value in an error message without its secret parts. */
  redact?: (value: string) => string;
}

/** Standard Webhooks: `whsec_` + base64 of a 24-64 byte key (shorter keys are guessable, and
 * a key that decodes to nothing signs as an empty key would). */
function webhookSecretProblem(secret: string): string | null {
  const m = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret);
  if (!m) return 'must be whsec_<base64>';
  const key = Buffer.from(m[1]!, 'base64');
  if (key.toString('base64').replace(/=+$/, '') !== m[1]!.replace(/=+$/, '')) return 'is not valid base64';
  if (key.length < 24 || key.length > 64) return `must decode to 24-64 bytes (this one is ${key.length})`;
  return null;
}

/** AES-256-GCM: a key is base64 of exactly 32 bytes. */
function encryptionKeyProblem(key: string): string | null {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key)) return 'must be base64';
  const bytes = Buffer.from(key, 'base64');
  if (bytes.toString('base64').replace(/=+$/, '') !== key.replace(/=+$/, '')) return 'is not valid base64';
  if (bytes.length !== 32) return `must decode to 32 bytes (this one is ${bytes.length})`;
  return null;
}

/**
 * The longest `Prefer: wait` hold: Envoy must let the sidecar extend its message timeout that
 * far plus the answer's margin (envoy/envoy.yaml: max_message_timeout 65 s).
 */
export const MAX_SYNC_WAIT_SECONDS = 60;

export const SETTINGS = {
  extprocAddr: {
    env: 'EXTPROC_ADDR',
    default: '127.0.0.1:50051',
    schema: hostPort,
    description:
      'Where the ext_proc gRPC server (and grpc.health.v1.Health) listens. Loopback by default: Envoy in the same pod or host reaches it; set 0.0.0.0 only where Envoy runs elsewhere (compose), with EXTPROC_TOKEN.',
  },
  extprocToken: {
    env: 'EXTPROC_TOKEN',
    default: '',
    schema: z
      .string()
      .trim()
      .refine((v) => v === '' || /^[\x21-\x7e]{16,256}$/.test(v), 'must be 16-256 visible ASCII characters'),
    secret: true,
    description:
      'When set, every ext_proc stream must carry the gRPC metadata `x-async-sidecar-token: <token>` (Envoy: `grpc_service.initial_metadata`); others are refused UNAUTHENTICATED. Health checks need none.',
  },
  extprocTokenFile: {
    env: 'EXTPROC_TOKEN_FILE',
    default: '',
    schema: z.string(),
    description: 'A file holding EXTPROC_TOKEN (read at start; e.g. written per pod by an init container). Not both.',
  },
  extprocStreamIdleTimeout: {
    env: 'EXTPROC_STREAM_IDLE_TIMEOUT',
    default: '30',
    schema: seconds(3600),
    description:
      "Seconds an ext_proc stream may wait for Envoy's next message before its request is decided (headers, then each body chunk); then it is ended DEADLINE_EXCEEDED.",
  },
  extprocBufferBudget: {
    env: 'EXTPROC_BUFFER_BUDGET_BYTES',
    default: '268435456',
    schema: positiveInt(64 * 1024 * 1024 * 1024),
    description:
      'Request-body bytes all ext_proc streams of this process may hold at once while they are received and stored; a stream past it is ended RESOURCE_EXHAUSTED. At least MAX_BODY_BYTES.',
  },
  adminAddr: {
    env: 'ADMIN_ADDR',
    default: '127.0.0.1:9090',
    schema: hostPort,
    description: 'Admin HTTP server: /healthz, /readyz, /metrics, the runs API (unscoped). Loopback by default.',
  },
  adminToken: {
    env: 'ADMIN_TOKEN',
    default: '',
    schema: z.string(),
    secret: true,
    description: 'When set, the runs API on the admin port requires `Authorization: Bearer <token>`. Required when ADMIN_ADDR is not a loopback address.',
  },
  adminAllowedHosts: {
    env: 'ADMIN_ALLOWED_HOSTS',
    default: '',
    schema: z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9.,\s-]*$/, 'must be comma-separated host names'),
    description:
      'Comma-separated host names the admin port answers to in `Host`, besides IP addresses and `localhost` (a defence against DNS rebinding); others get 403.',
  },
  redisUrl: {
    env: 'REDIS_URL',
    default: 'redis://127.0.0.1:6379',
    schema: redisUrl,
    redact: (v: string) => v.replace(/\/\/[^@/]*@/, '//<credentials>@'),
    description:
      'Redis holding runs and the queue (redis:// or rediss://). With REDIS_CLUSTER_NODES or REDIS_SENTINELS only its credentials and TLS (and, with sentinels, its database) are used.',
  },
  redisClusterNodes: {
    env: 'REDIS_CLUSTER_NODES',
    default: '',
    schema: hostPortList,
    description:
      'Comma-separated host:port seed nodes of a Redis Cluster (Redis 7 or later: sharded pub/sub). When set, the sidecar uses the Cluster client; each queue lives on the shard of its hash tag (README "Redis topologies").',
  },
  redisSentinels: {
    env: 'REDIS_SENTINELS',
    default: '',
    schema: hostPortList,
    description:
      'Comma-separated host:port of Redis Sentinels. When set, the sidecar connects to the primary they name for REDIS_SENTINEL_NAME and follows their failovers.',
  },
  redisSentinelName: {
    env: 'REDIS_SENTINEL_NAME',
    default: '',
    schema: z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9_.:-]*$/, 'must be a Sentinel master name ([A-Za-z0-9_.:-])'),
    description: 'The name the sentinels monitor the primary under (`sentinel monitor <name> ...`); required with REDIS_SENTINELS.',
  },
  redisMinReplicasAck: {
    env: 'REDIS_MIN_REPLICAS_ACK',
    default: '0',
    schema: z.coerce.number().int().min(0).max(16),
    description:
      "Replicas that must have a new run before its 202 is sent (WAIT on the run's primary, within REDIS_COMMAND_TIMEOUT); when fewer confirm in time the client gets 503 `store_not_replicated`. 0: the primary's answer is enough, and a failover can lose runs answered just before it.",
  },
  redisKeyPrefix: {
    env: 'REDIS_KEY_PREFIX',
    default: 'eas',
    schema: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 of [A-Za-z0-9_.:-]'),
    description: 'Prefix of every Redis key; each queue\'s keys also carry its Redis Cluster hash tag (README "Queues").',
  },
  redisCommandTimeout: {
    env: 'REDIS_COMMAND_TIMEOUT',
    default: '1',
    schema: seconds(60),
    description: "Seconds a Redis command may take before the request fails (an async request then gets 503, well within Envoy's message timeout).",
  },
  dispatchUrl: {
    env: 'DISPATCH_URL',
    default: 'http://127.0.0.1:8081',
    schema: httpUrl,
    description: "Base URL runs are replayed to: Envoy's internal dispatch listener, or the app itself.",
  },
  dispatchConcurrency: {
    env: 'DISPATCH_CONCURRENCY',
    default: '100',
    schema: positiveInt(100000),
    description: 'Runs one worker process dispatches at once; the rest wait in the Redis queue, oldest first.',
  },
  responseGracePeriod: {
    env: 'RESPONSE_GRACE_PERIOD',
    default: '900',
    schema: seconds(MAX_GRACE_SECONDS),
    description: 'Seconds a run may take upstream before it is aborted as `timed_out` (at most 43200 = 12 h).',
  },
  leaseTimeout: {
    env: 'LEASE_TIMEOUT',
    default: '30',
    schema: seconds(3600),
    description: 'Seconds without a heartbeat after which a running run is taken to be orphaned by a dead worker.',
  },
  redispatchInterrupted: {
    env: 'REDISPATCH_INTERRUPTED',
    default: 'idempotent',
    schema: z.enum(REDISPATCH_POLICIES),
    description:
      'Which orphaned runs are dispatched again instead of ending `failed`/`interrupted`: never, idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE), or always.',
  },
  maxDispatchAttempts: {
    env: 'MAX_DISPATCH_ATTEMPTS',
    default: '3',
    schema: positiveInt(100),
    description: 'Dispatch attempts a run may have in all (first dispatch plus re-dispatches after interruption).',
  },
  maxBodyBytes: {
    env: 'MAX_BODY_BYTES',
    default: '10485760',
    schema: positiveInt(256 * 1024 * 1024),
    description: 'Largest request body an async request may carry; larger gets 413.',
  },
  maxResultBytes: {
    env: 'MAX_RESULT_BYTES',
    default: '10485760',
    schema: positiveInt(256 * 1024 * 1024),
    description: 'Largest upstream response body stored with a run; the rest is read and dropped (`response.truncated`).',
  },
  maxSyncWait: {
    env: 'MAX_SYNC_WAIT',
    default: '60',
    schema: z.coerce.number().int().min(0).max(MAX_SYNC_WAIT_SECONDS),
    description:
      'Longest `Prefer: wait=N` (seconds) an async request is held for its run\'s result before the 202 (README "Sync if fast"); 0 turns holding off. Envoy\'s max_message_timeout must be at least this + 2 s (envoy/envoy.yaml: 65 s); Envoy Gateway has none: 0.',
  },
  runsApiPrefix: {
    env: 'RUNS_API_PREFIX',
    default: '/v1/runs',
    schema: z.string().regex(/^\/[A-Za-z0-9._~\-/]*[A-Za-z0-9._~-]$/, 'must be a path like /v1/runs, without a trailing slash'),
    description: 'Path prefix of the runs API, answered by the sidecar through Envoy and on the admin port.',
  },
  ownerRequired: {
    env: 'OWNER_REQUIRED',
    default: 'false',
    schema: bool,
    description:
      'Refuse async requests and runs API calls through Envoy that lack OWNER_HEADER (401 `owner_required`); otherwise such runs are readable by anyone else without the header who knows the id.',
  },
  ownerHeader: {
    env: 'OWNER_HEADER',
    default: 'authorization',
    schema: z
      .string()
      .trim()
      .toLowerCase()
      .regex(/^[a-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a header name'),
    description: 'Request header whose SHA-256 fingerprint scopes a run to its creator on the runs API through Envoy.',
  },
  runTtl: {
    env: 'RUN_TTL',
    default: '86400',
    schema: positiveInt(365 * 86400),
    description: 'Seconds a run and its result are kept after it ends (and after its webhook delivery ends).',
  },
  idempotencyKeyTtl: {
    env: 'IDEMPOTENCY_KEY_TTL',
    default: '86400',
    schema: positiveInt(30 * 86400),
    description:
      'Seconds an `Idempotency-Key` is remembered after the run it created was accepted: a repeat within that time gets the same run (README "Idempotency-Key").',
  },
  webhookSecret: {
    env: 'WEBHOOK_SECRET',
    default: '',
    secret: true,
    schema: z
      .string()
      .trim()
      .superRefine((v, ctx) => {
        if (v === '') return;
        v.split(/[\s,]+/).forEach((secret, i) => {
          const problem = webhookSecretProblem(secret);
          if (problem) ctx.addIssue({ code: 'custom', message: `secret ${i + 1} ${problem}; several are separated by spaces or commas` });
        });
      }),
    description: 'Standard Webhooks signing secret(s), `whsec_<base64>`; several (space or comma separated) sign with each, for rotation.',
  },
  webhookSecretEncryptionKey: {
    env: 'WEBHOOK_SECRET_ENCRYPTION_KEY',
    default: '',
    secret: true,
    schema: z
      .string()
      .trim()
      .superRefine((v, ctx) => {
        if (v === '') return;
        v.split(/[\s,]+/).forEach((key, i) => {
          const problem = encryptionKeyProblem(key);
          if (problem) ctx.addIssue({ code: 'custom', message: `key ${i + 1} ${problem}; several are separated by spaces or commas` });
        });
      }),
    description:
      'AES-256-GCM key(s), base64 of 32 bytes, that encrypt the per-request `X-Webhook-Secret` (Cerebrium-compatible signatures) stored with a run; the first encrypts, every one decrypts (rotation). Unset: requests with `X-Webhook-Secret` get 400.',
  },
  webhookTimeout: {
    env: 'WEBHOOK_TIMEOUT',
    default: '30',
    schema: seconds(600),
    description: 'Seconds one webhook attempt may take (connect, headers and body).',
  },
  webhookRetrySchedule: {
    env: 'WEBHOOK_RETRY_SCHEDULE',
    default: DEFAULT_RETRY_SCHEDULE,
    // Parsed here, with the grammar of src/webhooks/retry.ts: Config holds the delays in ms.
    schema: z
      .string()
      .trim()
      .transform((v, ctx) => {
        try {
          return parseRetrySchedule(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: `${(err as Error).message}; must be a comma-separated list of delays like 0,5s,5m,2h` });
          return z.NEVER;
        }
      }),
    description: 'Delay before each webhook attempt (the first is usually 0); its length is the number of attempts. Jittered by ±10%.',
  },
  webhookAllowPrivateNetworks: {
    env: 'WEBHOOK_ALLOW_PRIVATE_NETWORKS',
    default: 'false',
    schema: bool,
    description: 'Allow webhooks to private, loopback, link-local and other internal addresses (SSRF guard off).',
  },
  webhookAllowedHosts: {
    env: 'WEBHOOK_ALLOWED_HOSTS',
    default: '',
    schema: z.string(),
    description: 'Comma-separated host names or IPs that may be webhook targets even on internal addresses.',
  },
  webhookMaxBodyBytes: {
    env: 'WEBHOOK_MAX_BODY_BYTES',
    default: '10485760',
    schema: positiveInt(256 * 1024 * 1024),
    description: 'Largest body a webhook carries; a larger result is sent as a JSON envelope with a result URL.',
  },
  publicBaseUrl: {
    env: 'PUBLIC_BASE_URL',
    default: '',
    schema: z.union([z.literal(''), httpUrl]),
    description: 'Public base URL of Envoy, used to build absolute `result_url`s in webhook envelopes (relative when unset).',
  },
  shutdownGrace: {
    env: 'SHUTDOWN_GRACE',
    default: '30',
    schema: seconds(MAX_GRACE_SECONDS),
    description: 'Seconds in-flight dispatches get to finish after SIGTERM before they are handed back.',
  },
  logLevel: {
    env: 'LOG_LEVEL',
    default: 'info',
    schema: z.enum(LOG_LEVELS),
    description: 'pino log level.',
  },
  configFile: {
    env: 'CONFIG_FILE',
    default: '',
    schema: z.string(),
    description: 'Optional YAML file with named queues and per-route settings (queue, grace period, priority by path prefix): README "Queues".',
  },
  // OpenTelemetry (README "Tracing"): the standard variables, read as every OpenTelemetry SDK reads them.
  otelEndpoint: {
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    default: '',
    schema: optionalHttpUrl,
    redact: (v: string) => v.replace(/\/\/[^@/]*@/, '//<credentials>@'),
    description:
      'OTLP/HTTP receiver (an OpenTelemetry Collector) for traces, which go to `<url>/v1/traces`. Tracing is off while neither this nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.',
  },
  otelTracesEndpoint: {
    env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    default: '',
    schema: optionalHttpUrl,
    redact: (v: string) => v.replace(/\/\/[^@/]*@/, '//<credentials>@'),
    description: 'The full URL traces are sent to, instead of OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`.',
  },
  otelProtocol: {
    env: 'OTEL_EXPORTER_OTLP_PROTOCOL',
    default: 'http/protobuf',
    schema: otlpProtocol,
    description: 'OTLP encoding: `http/protobuf` or `http/json` (`grpc` is refused).',
  },
  otelTracesProtocol: {
    env: 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
    default: '',
    schema: otlpProtocol,
    description: 'OTLP encoding for traces, instead of OTEL_EXPORTER_OTLP_PROTOCOL.',
  },
  otelHeaders: {
    env: 'OTEL_EXPORTER_OTLP_HEADERS',
    default: '',
    schema: z.string(),
    secret: true,
    description: 'Headers sent with every export, `key=value,...` (e.g. a backend API key); read by the OpenTelemetry exporter.',
  },
  otelServiceName: {
    env: 'OTEL_SERVICE_NAME',
    default: 'envoy-async-sidecar',
    schema: z.string().trim().min(1, 'must not be empty'),
    description: 'The `service.name` of the spans; when unset, a `service.name` in OTEL_RESOURCE_ATTRIBUTES wins over this default.',
  },
  otelResourceAttributes: {
    env: 'OTEL_RESOURCE_ATTRIBUTES',
    default: '',
    schema: z.string(),
    description: 'More resource attributes, `key=value,...` (e.g. `deployment.environment.name=prod`); read by the OpenTelemetry SDK.',
  },
  otelTracesSampler: {
    env: 'OTEL_TRACES_SAMPLER',
    default: 'parentbased_always_on',
    schema: z.enum(TRACE_SAMPLERS),
    description:
      "Which requests are traced. The default follows the caller's sampled flag and traces every request that has none; `parentbased_traceidratio` with OTEL_TRACES_SAMPLER_ARG keeps a fraction.",
  },
  otelTracesSamplerArg: {
    env: 'OTEL_TRACES_SAMPLER_ARG',
    default: '',
    schema: z.union([z.literal(''), z.coerce.number().min(0).max(1)]),
    description: 'The fraction (0 to 1) of traces the `traceidratio` samplers keep; 1 when unset.',
  },
  otelTracesExporter: {
    env: 'OTEL_TRACES_EXPORTER',
    default: 'otlp',
    schema: z.enum(['otlp', 'none']),
    description: '`none` turns tracing off even with an endpoint set.',
  },
  otelSdkDisabled: {
    env: 'OTEL_SDK_DISABLED',
    default: 'false',
    schema: bool,
    description: '`true` turns tracing off even with an endpoint set.',
  },
} satisfies Record<string, SettingSpec>;

export type SettingKey = keyof typeof SETTINGS;
/** The parsed type of one setting, from its schema. */
export type SettingValue<K extends SettingKey> = z.output<(typeof SETTINGS)[K]['schema']>;
