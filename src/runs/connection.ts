import { Cluster, Redis, ReplyError, type ClusterOptions, type RedisOptions } from 'ioredis';
import { REDIS_BACKOFF, backoffDelayMs } from '../work';

/** A connection to the runs store: one Redis (direct or found through Sentinel) or a Redis Cluster. */
export type RedisClient = Redis | Cluster;

export interface RedisNodeAddress {
  host: string;
  port: number;
}

/**
 * Where the runs store lives (README "Redis topologies"). `url` always gives the credentials, TLS
 * (`rediss://`) and, outside a cluster, the database; its host is used only in `single` mode.
 */
export type RedisTarget =
  | { mode: 'single'; url: string }
  | { mode: 'sentinel'; url: string; sentinels: RedisNodeAddress[]; name: string }
  | { mode: 'cluster'; url: string; nodes: RedisNodeAddress[] };

const retryStrategy = (times: number) => backoffDelayMs(REDIS_BACKOFF, times);

/** Credentials, TLS and database of a redis:// or rediss:// URL, as ioredis options. */
export function urlOptions(url: string): Pick<RedisOptions, 'username' | 'password' | 'tls' | 'db'> {
  const u = new URL(url);
  const out: Pick<RedisOptions, 'username' | 'password' | 'tls' | 'db'> = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') out.tls = {};
  const db = Number(u.pathname.replace(/^\//, '') || 0);
  if (db > 0) out.db = db;
  return out;
}

const asTarget = (target: string | RedisTarget): RedisTarget => (typeof target === 'string' ? { mode: 'single', url: target } : target);

/** `host:port` of a node (IPv6 in brackets). */
export function nodeAddress(node: { host?: string; port?: number }): string {
  const host = node.host ?? '127.0.0.1';
  return `${host.includes(':') ? `[${host}]` : host}:${node.port ?? 6379}`;
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

/**
 * A connection for the request path and the workers. Every mode keeps the same promises:
 * - no offline queue: while Redis (or the shard of a key) is away a command fails at once (the
 *   client gets 503) instead of waiting past Envoy's message timeout; the client reconnects in
 *   the background;
 * - `commandTimeout` on every command, and a socket that stops answering is dropped: ioredis keeps
 *   timed-out commands queued, so without it every later reply would be matched to an older
 *   command and the sidecar would never recover by itself;
 * - a command is never sent twice: its caller already got an error (a client got 503 for a run
 *   that must then not appear). For a Cluster that also means no retry of a command whose
 *   connection closed (`retryDelayOnFailover: 0`); redirections (MOVED, ASK) are followed, since
 *   Redis did not run the command, within the same command timeout;
 * - no auto-pipelining: ioredis does not apply commandTimeout to auto-pipelined commands, and a
 *   blackholed Redis then held async requests past Envoy's message timeout (measured by the
 *   redis-blackhole drill: p99 2,003 ms with it, 1,015 ms without).
 */
export function connectRedis(target: string | RedisTarget, options: { commandTimeoutMs: number; name: string }): RedisClient {
  const t = asTarget(target);
  const perNode = {
    connectionName: options.name,
    commandTimeout: options.commandTimeoutMs,
    socketTimeout: Math.max(2 * options.commandTimeoutMs, 2000),
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
  } satisfies RedisOptions;
  if (t.mode === 'cluster') {
    // Without an offline queue, ioredis refuses a command for a node whose connection is still
    // being set up ("Connection is closed."), which its own ready check (CLUSTER INFO, sent while
    // the pool's nodes connect) then kept running into, reconnecting for ever. So: no ready check
    // (the slot table is enough; a shard that is down answers CLUSTERDOWN), and every node is connected as
    // soon as the pool has it instead of by the first command that needs it.
    const cluster = new Cluster(t.nodes, { ...clusterOptions(t.url, perNode), enableReadyCheck: false });
    cluster.on('+node', (node: Redis) => {
      if (node.status === 'wait') node.connect().catch(() => undefined);
    });
    return cluster;
  }
  const common: RedisOptions = { ...perNode, enableOfflineQueue: false, retryStrategy, lazyConnect: true };
  if (t.mode === 'sentinel') return new Redis({ ...sentinelOptions(t), ...common });
  return new Redis(t.url, common);
}

/**
 * A connection for pub/sub: it queues its (S)SUBSCRIBE until connected. On one Redis, RunEvents
 * re-subscribes after each reconnect (ioredis' autoResubscribe leaves its promise unhandled); on
 * a Cluster it uses sharded pub/sub, one subscriber connection per primary, which ioredis moves
 * to the new primary after a failover and re-subscribes itself (with its errors handled).
 */
export function connectSubscriber(target: string | RedisTarget, name: string): RedisClient {
  const t = asTarget(target);
  const perNode = { connectionName: name, connectTimeout: 2000 } satisfies RedisOptions;
  if (t.mode === 'cluster') {
    return new Cluster(t.nodes, { ...clusterOptions(t.url, perNode), enableOfflineQueue: true, shardedSubscribers: true });
  }
  const common: RedisOptions = {
    ...perNode,
    maxRetriesPerRequest: null,
    socketTimeout: 5000, // armed only while a (re)subscribe waits for its reply
    autoResubscribe: false,
    retryStrategy,
    lazyConnect: true,
  };
  if (t.mode === 'sentinel') return new Redis({ ...sentinelOptions(t), ...common });
  return new Redis(t.url, common);
}

function clusterOptions(url: string, perNode: RedisOptions): ClusterOptions {
  const { db: _db, ...auth } = urlOptions(url);
  return {
    redisOptions: { ...perNode, ...auth },
    enableOfflineQueue: false,
    // Reads go to primaries: a replica may not have a run yet that its primary just answered 202 for.
    scaleReads: 'master',
    retryDelayOnFailover: 0,
    // CLUSTERDOWN and TRYAGAIN are answers: the command did not run. Passed on at once, a client is
    // told `store_unavailable` (nothing stored); retried until the command timeout, the last try
    // would time out and tell it `store_uncertain` about a run that was never written.
    retryDelayOnClusterDown: 0,
    retryDelayOnTryAgain: 0,
    clusterRetryStrategy: retryStrategy,
    lazyConnect: true,
    // TLS certificates name the host the client was given, not the address CLUSTER SLOTS reports
    // (ElastiCache, Memorystore): connect by the name as given.
    ...(auth.tls ? { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) } : {}),
  };
}

/**
 * ioredis' Sentinel support: the primary of `name` is asked from the sentinels at each connect, and
 * their +switch-master messages make the client reconnect to a new primary at once. The URL's
 * credentials and TLS apply to the data nodes and to the sentinels. A node that answers READONLY
 * (a demoted primary) is left for the primary the sentinels name; the command is not re-sent.
 */
function sentinelOptions(t: Extract<RedisTarget, { mode: 'sentinel' }>): RedisOptions {
  const auth = urlOptions(t.url);
  return {
    ...auth,
    sentinels: t.sentinels,
    name: t.name,
    role: 'master',
    sentinelUsername: auth.username,
    sentinelPassword: auth.password,
    ...(auth.tls ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
    sentinelRetryStrategy: retryStrategy,
    sentinelCommandTimeout: 1000,
    failoverDetector: true,
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
  };
}

/** The primaries to ask about their own state (INFO): the Cluster's primaries, or the one Redis. */
export function primaries(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes('master') : [client];
}

/**
 * Redis must not evict keys: an evicted run, queue entry or lease loses an accepted run without
 * a trace. Reads `maxmemory_policy` from INFO (CONFIG GET is often disabled on managed Redis).
 * Returns the policy when it is not `noeviction`, null when it is (or cannot be read).
 */
export async function evictionPolicyProblem(redis: Redis): Promise<string | null> {
  const info = await redis.info('memory');
  const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  return policy !== undefined && policy !== 'noeviction' ? policy : null;
}

/** evictionPolicyProblem on every primary: the nodes (host:port) that evict, with their policy. */
export async function evictionPolicyProblems(client: RedisClient): Promise<Array<{ node: string; policy: string }>> {
  const found = await Promise.all(
    primaries(client).map(async (node) => ({ node: nodeAddress(node.options), policy: await evictionPolicyProblem(node).catch(() => null) })),
  );
  return found.filter((f): f is { node: string; policy: string } => f.policy !== null);
}

/** A command the sidecar did not send at all (so it cannot have run). */
export class NotSentError extends Error {
  override name = 'NotSentError';

  constructor(why: string) {
    super(`not sent to Redis: ${why}`);
  }
}

/**
 * Whether a failed command may still have run in Redis. It did not when it was never sent (no
 * offline queue: "Stream isn't writeable") or Redis answered with an error (a script refused
 * whole, e.g. over maxmemory). It may have when the reply was lost: a timeout, or the connection
 * closing with the command in flight ("Connection is closed."; on a Cluster also a command for a
 * node whose connection is down, which ioredis refuses with the same words). Callers that wrote something
 * must then say so (the accept path's `store_uncertain`) or reconcile (a lost claim's runs).
 */
export function mayHaveRun(err: unknown): boolean {
  if (err instanceof ReplyError || err instanceof NotSentError) return false;
  return !/^(Stream isn't writeable|Cluster isn't ready)/.test((err as Error)?.message ?? '');
}
