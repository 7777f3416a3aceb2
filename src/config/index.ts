import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseConfigFile, type QueueSettings, type RouteSettings } from './config-file';
import { packageVersion } from './package';
import type { RedisTarget } from '../runs/connection';
import { LOG_LEVELS, OTLP_PROTOCOLS, REDISPATCH_POLICIES, SETTINGS, TRACE_SAMPLERS, type SettingKey, type SettingSpec, type SettingValue } from './settings';

export { SETTINGS } from './settings';
export { packageVersion } from './package';
export { DEFAULT_QUEUE, PRIORITIES, placementFor, type Priority, type QueueSettings, type RouteSettings, type RunPlacement } from './config-file';

const ROLES = ['all', 'extproc', 'worker'] as const;
export type Role = (typeof ROLES)[number];
export type RedispatchPolicy = (typeof REDISPATCH_POLICIES)[number];

export interface HostPort {
  host: string;
  port: number;
}

/** OpenTelemetry tracing (README "Tracing"); null in Config when it is off. */
export interface TracingConfig {
  /** Where spans are POSTed: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
  url: string;
  protocol: (typeof OTLP_PROTOCOLS)[number];
  serviceName: string;
  sampler: { name: (typeof TRACE_SAMPLERS)[number]; ratio: number };
}

/** The whole configuration, parsed once at start-up and passed down. Durations are in ms. */
export interface Config {
  role: Role;
  extprocAddr: HostPort;
  /** Required `x-async-sidecar-token` gRPC metadata on ext_proc streams; null: none required. */
  extprocToken: string | null;
  extprocStreamIdleTimeoutMs: number;
  extprocBufferBudgetBytes: number;
  adminAddr: HostPort;
  adminToken: string | null;
  /** Host names (lower case) the admin port answers to besides IP literals and localhost. */
  adminAllowedHosts: string[];
  redisUrl: string;
  /** One Redis (REDIS_URL), a Cluster (REDIS_CLUSTER_NODES) or a Sentinel-managed primary (REDIS_SENTINELS). */
  redis: RedisTarget;
  /** REDIS_MIN_REPLICAS_ACK: replicas that must confirm a new run before its 202. */
  redisMinReplicasAck: number;
  redisKeyPrefix: string;
  redisCommandTimeoutMs: number;
  /**
   * Command timeout of the worker's own connection (claims, body reads, completions): replies
   * carry bodies of up to MAX_BODY_BYTES, and no client waits on them, so they get longer than
   * the accept path, which must answer within Envoy's message timeout.
   */
  redisWorkerCommandTimeoutMs: number;
  dispatchUrl: string;
  dispatchConcurrency: number;
  gracePeriodMs: number;
  /** CONFIG_FILE routes, longest prefix first. */
  routes: RouteSettings[];
  /** CONFIG_FILE queues by name, `default` always among them. */
  queues: Map<string, QueueSettings>;
  leaseTimeoutMs: number;
  redispatchInterrupted: RedispatchPolicy;
  maxDispatchAttempts: number;
  maxBodyBytes: number;
  maxResultBytes: number;
  /** The longest `Prefer: wait` hold, seconds (0: none). */
  maxSyncWaitSeconds: number;
  runsApiPrefix: string;
  ownerHeader: string;
  ownerRequired: boolean;
  runTtlMs: number;
  /** How long an Idempotency-Key's record lasts after its run was accepted. */
  idempotencyKeyTtlMs: number;
  webhook: {
    secrets: string[];
    timeoutMs: number;
    /** Delay before each attempt, ms (parsed from WEBHOOK_RETRY_SCHEDULE). */
    retryScheduleMs: number[];
    /** How long a delivery taken by a worker stays hidden from the others. */
    visibilityMs: number;
    /** Deliveries one process sends at once. */
    concurrency: number;
    allowPrivateNetworks: boolean;
    allowedHosts: string[];
    maxBodyBytes: number;
    /** Keys (32 bytes each) for the stored X-Webhook-Secret values: the first encrypts. */
    secretEncryptionKeys: Buffer[];
  };
  publicBaseUrl: string;
  shutdownGraceMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
  tracing: TracingConfig | null;
}

/** A configuration problem: one line naming the setting, the value and what is allowed. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export class HelpRequested extends Error {
  override name = 'HelpRequested';
}

export class VersionRequested extends Error {
  override name = 'VersionRequested';
}

/** One setting, parsed by its schema into its own type (SettingValue<K>). */
function readSetting<K extends SettingKey>(key: K, env: NodeJS.ProcessEnv): SettingValue<K> {
  const spec: SettingSpec = SETTINGS[key];
  const raw = env[spec.env];
  const value = raw === undefined || raw === '' ? spec.default : raw;
  const result = spec.schema.safeParse(value);
  if (!result.success) {
    const shown = spec.secret ? '<redacted>' : JSON.stringify(spec.redact ? spec.redact(value) : value);
    const why = result.error.issues.map((i) => i.message).join('; ');
    throw new ConfigError(`invalid ${spec.env}=${shown}: ${why}`);
  }
  // The one cast: SETTINGS[key] widened to SettingSpec loses which schema K has.
  return result.data as SettingValue<K>;
}

/** EXTPROC_TOKEN, or the content of EXTPROC_TOKEN_FILE (trimmed), checked as the setting is. */
function readToken(token: string, file: string): string {
  if (file === '') return token;
  if (token !== '') throw new ConfigError('invalid EXTPROC_TOKEN_FILE: EXTPROC_TOKEN is set too; set one of them');
  let content: string;
  try {
    content = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`invalid EXTPROC_TOKEN_FILE=${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!SETTINGS.extprocToken.schema.safeParse(content).success) {
    throw new ConfigError(`invalid EXTPROC_TOKEN_FILE=${JSON.stringify(file)}: the token must be 16-256 visible ASCII characters`);
  }
  return content;
}

/** 127.0.0.0/8, ::1 and localhost: reachable from this network namespace only. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function splitHostPort(v: string): HostPort {
  const i = v.lastIndexOf(':');
  return { host: v.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(v.slice(i + 1)) };
}

/** The command line: everything else is configured by environment variables (SETTINGS). */
const ARGUMENTS = {
  role: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;
const ALLOWED_ARGUMENTS = `allowed are --role ${ROLES.join('|')}, --help and --version`;

/**
 * The role from `--role`, or HelpRequested / VersionRequested. parseArgs runs non-strict so that
 * every mistake gets one line in the words of this tool rather than node's.
 */
function parseRole(argv: readonly string[]): Role {
  const { tokens } = parseArgs({ args: [...argv], options: ARGUMENTS, strict: false, allowPositionals: true, tokens: true });
  let role: string = 'all';
  let help = false;
  let version = false;
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') throw new ConfigError(`unexpected argument ${JSON.stringify(token.value)}: ${ALLOWED_ARGUMENTS}`);
    if (!Object.hasOwn(ARGUMENTS, token.name)) throw new ConfigError(`unknown argument ${JSON.stringify(token.rawName)}: ${ALLOWED_ARGUMENTS}`);
    if (token.name === 'role') role = token.value ?? '';
    else if (token.value !== undefined) throw new ConfigError(`invalid ${token.rawName}=${JSON.stringify(token.value)}: ${token.rawName} takes no value`);
    else if (token.name === 'help') help = true;
    else version = true;
  }
  if (help) throw new HelpRequested();
  if (version) throw new VersionRequested();
  if (!(ROLES as readonly string[]).includes(role)) throw new ConfigError(`invalid --role ${JSON.stringify(role)}: must be one of ${ROLES.join(', ')}`);
  return role as Role;
}

function loadConfigFile(path: string): ReturnType<typeof parseConfigFile> {
  try {
    return parseConfigFile(path);
  } catch (err) {
    throw new ConfigError(`invalid CONFIG_FILE=${JSON.stringify(path)}: ${(err as Error).message}`);
  }
}

/**
 * Tracing from the standard OpenTelemetry variables, as the specification reads them: on only with
 * an endpoint, off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none; the traces-specific
 * endpoint and protocol win over the general ones, and a general endpoint gets `v1/traces` appended
 * (https://opentelemetry.io/docs/specs/otel/protocol/exporter/). Without an endpoint nothing else is
 * read: an environment written for other OpenTelemetry SDKs (say `grpc`) cannot stop a sidecar
 * that does not trace.
 */
function tracingConfig(s: <K extends SettingKey>(key: K) => SettingValue<K>): TracingConfig | null {
  const base = s('otelEndpoint');
  const specific = s('otelTracesEndpoint');
  if (base === '' && specific === '') return null;
  if (s('otelSdkDisabled') || s('otelTracesExporter') === 'none') return null;
  const url = specific !== '' ? specific : `${base}${base.endsWith('/') ? '' : '/'}v1/traces`;
  const protocol = (s('otelTracesProtocol') || s('otelProtocol')) as TracingConfig['protocol'];
  const arg = s('otelTracesSamplerArg');
  return { url, protocol, serviceName: s('otelServiceName'), sampler: { name: s('otelTracesSampler'), ratio: arg === '' ? 1 : arg } };
}

/** Which Redis topology the settings name; at most one of REDIS_CLUSTER_NODES and REDIS_SENTINELS. */
function redisTarget(url: string, clusterNodes: HostPort[], sentinels: HostPort[], sentinelName: string): RedisTarget {
  if (clusterNodes.length > 0 && sentinels.length > 0) {
    throw new ConfigError('invalid REDIS_CLUSTER_NODES with REDIS_SENTINELS: a Redis Cluster fails over by itself; set one of them');
  }
  if (clusterNodes.length > 0) {
    const db = new URL(url).pathname.replace(/^\//, '');
    if (db !== '' && db !== '0') throw new ConfigError(`invalid REDIS_URL database /${db} with REDIS_CLUSTER_NODES: a Redis Cluster has database 0 only`);
    return { mode: 'cluster', url, nodes: clusterNodes };
  }
  if (sentinels.length > 0) {
    if (sentinelName === '') throw new ConfigError('invalid REDIS_SENTINELS without REDIS_SENTINEL_NAME: name the primary the sentinels monitor');
    return { mode: 'sentinel', url, sentinels, name: sentinelName };
  }
  if (sentinelName !== '') throw new ConfigError('invalid REDIS_SENTINEL_NAME without REDIS_SENTINELS: list the sentinels (host:port, comma-separated)');
  return { mode: 'single', url };
}

/** Parses and validates the environment and arguments; throws ConfigError, HelpRequested or VersionRequested. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, argv: readonly string[] = process.argv.slice(2)): Config {
  const role = parseRole(argv);
  const s = <K extends SettingKey>(key: K) => readSetting(key, env);
  const secret = s('webhookSecret');
  const encryptionKey = s('webhookSecretEncryptionKey');
  const adminToken = s('adminToken');
  const extprocToken = readToken(s('extprocToken'), s('extprocTokenFile'));
  const maxBodyBytes = s('maxBodyBytes');
  const bufferBudget = s('extprocBufferBudget');
  const adminAddr = splitHostPort(s('adminAddr'));
  const redisCommandTimeoutMs = Math.round(s('redisCommandTimeout') * 1000);
  const dispatchConcurrency = s('dispatchConcurrency');
  const webhookTimeoutMs = Math.round(s('webhookTimeout') * 1000);
  if (!isLoopbackHost(adminAddr.host) && adminToken === '') {
    throw new ConfigError(
      `invalid ADMIN_ADDR=${JSON.stringify(`${adminAddr.host}:${adminAddr.port}`)} without ADMIN_TOKEN: the admin port serves every tenant's runs, so off loopback it needs ADMIN_TOKEN`,
    );
  }
  const redis = redisTarget(s('redisUrl'), s('redisClusterNodes'), s('redisSentinels'), s('redisSentinelName'));
  if (bufferBudget < maxBodyBytes) {
    throw new ConfigError(
      `invalid EXTPROC_BUFFER_BUDGET_BYTES=${bufferBudget}: must be at least MAX_BODY_BYTES (${maxBodyBytes}), or no body of the largest size could be received`,
    );
  }
  return {
    role,
    extprocAddr: splitHostPort(s('extprocAddr')),
    extprocToken: extprocToken === '' ? null : extprocToken,
    extprocStreamIdleTimeoutMs: Math.round(s('extprocStreamIdleTimeout') * 1000),
    extprocBufferBudgetBytes: bufferBudget,
    adminAddr,
    adminToken: adminToken === '' ? null : adminToken,
    adminAllowedHosts: s('adminAllowedHosts')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
    redisUrl: s('redisUrl'),
    redis,
    redisMinReplicasAck: s('redisMinReplicasAck'),
    redisKeyPrefix: s('redisKeyPrefix'),
    redisCommandTimeoutMs,
    redisWorkerCommandTimeoutMs: Math.max(5000, 5 * redisCommandTimeoutMs),
    dispatchUrl: s('dispatchUrl').replace(/\/+$/, ''),
    dispatchConcurrency,
    gracePeriodMs: Math.round(s('responseGracePeriod') * 1000),
    ...loadConfigFile(s('configFile')),
    leaseTimeoutMs: Math.round(s('leaseTimeout') * 1000),
    redispatchInterrupted: s('redispatchInterrupted'),
    maxDispatchAttempts: s('maxDispatchAttempts'),
    maxBodyBytes,
    maxResultBytes: s('maxResultBytes'),
    maxSyncWaitSeconds: s('maxSyncWait'),
    runsApiPrefix: s('runsApiPrefix'),
    ownerHeader: s('ownerHeader'),
    ownerRequired: s('ownerRequired'),
    runTtlMs: s('runTtl') * 1000,
    idempotencyKeyTtlMs: s('idempotencyKeyTtl') * 1000,
    webhook: {
      secrets: secret === '' ? [] : secret.split(/[\s,]+/),
      timeoutMs: webhookTimeoutMs,
      // A delivery a worker holds is hidden from the others for longer than one attempt can last.
      visibilityMs: webhookTimeoutMs + 30_000,
      // Deliveries follow dispatches one for one, within sane bounds for small and huge pools.
      concurrency: Math.max(16, Math.min(dispatchConcurrency, 256)),
      retryScheduleMs: s('webhookRetrySchedule'),
      allowPrivateNetworks: s('webhookAllowPrivateNetworks'),
      allowedHosts: s('webhookAllowedHosts')
        .split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean),
      maxBodyBytes: s('webhookMaxBodyBytes'),
      secretEncryptionKeys: encryptionKey === '' ? [] : encryptionKey.split(/[\s,]+/).map((k) => Buffer.from(k, 'base64')),
    },
    publicBaseUrl: s('publicBaseUrl').replace(/\/+$/, ''),
    shutdownGraceMs: Math.round(s('shutdownGrace') * 1000),
    logLevel: s('logLevel'),
    tracing: tracingConfig(s),
  };
}

/** `--help` text: the options, the roles and every setting with its default, generated from the schema table. */
export function helpText(): string {
  const rows = Object.values(SETTINGS as Record<string, SettingSpec>).map(
    (spec) => `  ${spec.env.padEnd(32)} ${spec.description}\n  ${''.padEnd(32)} default: ${spec.default === '' ? '(unset)' : spec.default}`,
  );
  return [
    `envoy-async-sidecar ${packageVersion()}: Envoy ext_proc server for fire-and-forget async requests`,
    '',
    `Usage: envoy-async-sidecar [--role ${ROLES.join('|')}]   (in a checkout: npm start -- [--role ...])`,
    '  --role all       accept runs (ext_proc), dispatch them and deliver webhooks (default)',
    '  --role extproc   accept runs and answer the runs API only',
    '  --role worker    dispatch runs and deliver webhooks only',
    '  -h, --help       print this help',
    '  -v, --version    print the version',
    '',
    'Settings are environment variables (the README\'s "Configuration" section has the same table):',
    ...rows,
    '',
  ].join('\n');
}

/** The README's configuration table, generated from the same schema (checked by a test). */
export function markdownTable(): string {
  const lines = ['| Variable | Default | Meaning |', '| --- | --- | --- |'];
  for (const spec of Object.values(SETTINGS as Record<string, SettingSpec>)) {
    lines.push(`| \`${spec.env}\` | ${spec.default === '' ? '(unset)' : `\`${spec.default}\``} | ${spec.description} |`);
  }
  return lines.join('\n');
}
