import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseConfigFile, type QueueSettings, type RouteSettings } from './config-file';
import { packageVersion } from './package';
import { LOG_LEVELS, REDISPATCH_POLICIES, SETTINGS, type SettingKey, type SettingSpec, type SettingValue } from './settings';

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
  };
  publicBaseUrl: string;
  shutdownGraceMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
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

/** Parses and validates the environment and arguments; throws ConfigError, HelpRequested or VersionRequested. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, argv: readonly string[] = process.argv.slice(2)): Config {
  const role = parseRole(argv);
  const s = <K extends SettingKey>(key: K) => readSetting(key, env);
  const secret = s('webhookSecret');
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
    },
    publicBaseUrl: s('publicBaseUrl').replace(/\/+$/, ''),
    shutdownGraceMs: Math.round(s('shutdownGrace') * 1000),
    logLevel: s('logLevel'),
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
