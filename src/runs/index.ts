import { Redis } from 'ioredis';

export { RunStore, type RunStoreOptions, type CancelResult, type RedeliverResult } from './store';
export { RunEvents } from './events';
export { RunKeys } from './keys';
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
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: true,
    // Concurrent streams' writes leave in one socket write instead of one each.
    enableAutoPipelining: true,
  });
}

/** A connection for pub/sub (it queues its SUBSCRIBE until connected and re-subscribes after). */
export function connectSubscriber(url: string, name: string): Redis {
  return new Redis(url, {
    connectionName: name,
    maxRetriesPerRequest: null,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: true,
  });
}
