/** What a queue allows when the app says "not now" (README "Queues"). */
export interface BackpressurePolicy {
  maxBackpressureRetries: number;
  backpressureMaxDelayMs: number;
}

export const DEFAULT_BACKPRESSURE: BackpressurePolicy = { maxBackpressureRetries: 10, backpressureMaxDelayMs: 60_000 };

/**
 * Delay before a run the app turned away goes back in line: the app's Retry-After when it gave a
 * usable one, else exponential backoff from 1 s, doubling, with half of each delay random ("equal
 * jitter": replicas turned away together do not come back together), capped at the queue's maximum.
 */
export function backoffDelay(tries: number, retryAfterMs: number | null, maxDelayMs: number, random: () => number = Math.random): number {
  if (retryAfterMs !== null) return Math.min(retryAfterMs, maxDelayMs);
  const ceiling = Math.min(maxDelayMs, 1000 * 2 ** Math.min(tries, 20));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
