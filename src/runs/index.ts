import { Redis, ReplyError } from 'ioredis';
import { REDIS_BACKOFF, backoffDelayMs } from '../work';

export {
  RunStore,
  REDELIVER_MIN_INTERVAL_MS,
  type RunStoreOptions,
  type CancelResult,
  type CreateResult,
  type RedeliverResult,
  type RetryResult,
  type QueueStats,
} from './store';
export { RunEvents } from './events';
export { RunKeys, QueueKeys, newRunId, ownerBucket, queueTag, tagOfRunId } from './keys';
export * from './types';

/**
 * A Redis connection for the request path: no offline queue, so that while Redis is away a
 * command fails at once (the client gets 503) instead of waiting past Envoy's message timeout;
 * ioredis keeps reconnecting in the background.
 */
export function connectRedis(url: string, options: { commandTimeoutMs: number; name: string }): Redis {
  return new Redis(url, {
    connectionName: options.name,
    enableOfflineQueue: false,
    commandTimeout: options.commandTimeoutMs,
    // A connection that stops answering (blackholed network, frozen Redis) is dropped and
    // reconnected: ioredis keeps timed-out commands queued, so without this every later reply
    // would be matched to an older command and the sidecar would never recover by itself.
    socketTimeout: Math.max(2 * options.commandTimeoutMs, 2000),
    // Never re-send a command after a reconnect: its caller already got an error (a client got
    // 503 for a run that must then not appear).
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (times) => backoffDelayMs(REDIS_BACKOFF, times),
    lazyConnect: true,
    // No enableAutoPipelining: ioredis does not apply commandTimeout to auto-pipelined commands,
    // and a blackholed Redis then held async requests past Envoy's message timeout (measured by
    // the redis-blackhole drill: p99 2,003 ms with it, 1,015 ms without).
  });
}

/** A connection for pub/sub (it queues its SUBSCRIBE until connected and re-subscribes after). */
export function connectSubscriber(url: string, name: string): Redis {
  return new Redis(url, {
    connectionName: name,
    maxRetriesPerRequest: null,
    socketTimeout: 5000, // armed only while a (re)subscribe waits for its reply
    autoResubscribe: false, // RunEvents re-subscribes on 'ready', with the rejection handled
    connectTimeout: 2000,
    retryStrategy: (times) => backoffDelayMs(REDIS_BACKOFF, times),
    lazyConnect: true,
  });
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

/**
 * Whether a failed command may still have run in Redis. It did not when it was never sent (no
 * offline queue: "Stream isn't writeable") or Redis answered with an error (a script refused
 * whole, e.g. over maxmemory). It may have when the reply was lost: a timeout, or the connection
 * closing with the command in flight ("Connection is closed."). Callers that wrote something
 * must then say so (the accept path's `store_uncertain`) or reconcile (a lost claim's runs).
 */
export function mayHaveRun(err: unknown): boolean {
  if (err instanceof ReplyError) return false;
  return !/^Stream isn't writeable/.test((err as Error)?.message ?? '');
}
