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
    description: 'Redis holding runs and the queue (redis:// or rediss://).',
  },
  redisKeyPrefix: {
    env: 'REDIS_KEY_PREFIX',
    default: 'eas',
    schema: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 of [A-Za-z0-9_.:-]'),
    description: 'Prefix of every Redis key; all keys share one Redis Cluster hash tag.',
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
} satisfies Record<string, SettingSpec>;

export type SettingKey = keyof typeof SETTINGS;
/** The parsed type of one setting, from its schema. */
export type SettingValue<K extends SettingKey> = z.output<(typeof SETTINGS)[K]['schema']>;
