/** An exponential backoff: the first retry waits `initialMs`, each next one `factor` times longer, at most `maxMs`. */
export interface Backoff {
  initialMs: number;
  factor: number;
  maxMs: number;
}

/**
 * How the sidecar waits for Redis to answer again: 100 ms, doubling, at most 2 s. Used by the loops
 * that retry a write until Redis takes it and by ioredis' reconnect schedule, so a recovered Redis
 * is found within 2 s by both.
 */
export const REDIS_BACKOFF: Readonly<Backoff> = { initialMs: 100, factor: 2, maxMs: 2000 };

/** The wait before retry number `retry` (1 for the first retry). */
export function backoffDelayMs(backoff: Readonly<Backoff>, retry: number): number {
  const n = Math.max(1, Math.floor(retry));
  return Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** (n - 1));
}

export interface RetryOptions {
  backoff?: Readonly<Backoff>;
  /** Called with each failure and its number (1 for the first). */
  onError: (err: Error, failures: number) => void;
  /** Asked after each failure: true ends the retries (the lease is gone, the worker is stopping). */
  giveUp: () => boolean;
}

export type RetryResult<T> = { ok: true; value: T } | { ok: false; error: Error };

/**
 * Calls `call` until it resolves, waiting `backoff` between tries, or until `giveUp` says to stop
 * after a failure. For the writes that must land once Redis answers again (a run's outcome, a webhook
 * attempt): as BullMQ's Worker#retryIfFailed, the caller decides when retrying no longer helps.
 */
export async function retryUntil<T>(call: () => Promise<T>, options: RetryOptions): Promise<RetryResult<T>> {
  const backoff = options.backoff ?? REDIS_BACKOFF;
  for (let failures = 1; ; failures++) {
    try {
      return { ok: true, value: await call() };
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      options.onError(err, failures);
      if (options.giveUp()) return { ok: false, error: err };
      await new Promise((r) => setTimeout(r, backoffDelayMs(backoff, failures)));
    }
  }
}
