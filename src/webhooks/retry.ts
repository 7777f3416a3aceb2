import type { AttemptErrorCode } from '../runs/types';
/** docs/CONTRACT.md §4 default (as Svix): immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts. */
export const DEFAULT_RETRY_SCHEDULE = '0,5s,5m,30m,2h,5h,10h,10h';

/** Relative jitter applied to each scheduled delay: uniform in [-10%, +10%]. */
export const RETRY_JITTER = 0.1;

/** The longest wait a receiver's `Retry-After` can impose on one retry. */
export const RETRY_AFTER_CAP_MS = 24 * 60 * 60 * 1000;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a retry schedule: comma-separated delays, each a number with an optional unit
 * (`ms`, `s`, `m`, `h`; a bare number is seconds; decimals allowed: `0.5s`, `1.5`). Entry i is
 * the delay before attempt i+1 (so entry 0 is before the first attempt, usually 0); the number of
 * entries is the number of attempts. Throws on anything else or an empty schedule.
 */
export function parseRetrySchedule(spec: string): number[] {
  const parts = spec.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.every((p) => p === '')) throw new Error('retry schedule is empty');
  return parts.map((p) => {
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(p);
    const unitMs = UNIT_MS[(m?.[2] ?? 's').toLowerCase()];
    if (!m || unitMs === undefined) throw new Error(`invalid retry schedule entry "${p}" (expected e.g. 0, 500ms, 5s, 5m, 2h)`);
    return Math.round(Number(m[1]) * unitMs);
  });
}

export type AttemptOutcome = 'delivered' | 'retry' | 'failed';

/** Errors that end a delivery at once (the others, connection errors and timeouts, are retried). */
const FINAL_ERRORS: ReadonlySet<AttemptErrorCode | string> = new Set<AttemptErrorCode>([
  'blocked_address',
  'invalid_url',
  'invalid_request',
  'secret_unreadable',
]);

/**
 * What an attempt means for the delivery (docs/CONTRACT.md §4): 2xx delivered; 408, 429 and 5xx retried;
 * every other status failed (3xx too: redirects are never followed). With no status: a
 * connection error, timeout or DNS failure is retried; `blocked_address`, `invalid_url`,
 * `invalid_request` and `secret_unreadable` fail.
 */
export function classifyAttempt(result: { statusCode: number | null; error?: string | null }): AttemptOutcome {
  const s = result.statusCode;
  if (s === null) return result.error != null && FINAL_ERRORS.has(result.error) ? 'failed' : 'retry';
  if (s >= 200 && s < 300) return 'delivered';
  if (s === 408 || s === 429 || (s >= 500 && s < 600)) return 'retry';
  return 'failed';
}

/**
 * The delay (ms) before the next attempt, or null when the schedule is exhausted.
 *
 * `attemptNumber` is how many attempts have been made (1 after the first); the next delay is
 * `schedule[attemptNumber]` with ±10% uniform jitter (rounded; a 0 step stays 0, never
 * negative). A `Retry-After` (ms) is honoured by waiting at least that long, capped at 24 h:
 * the result is max(jittered step, min(retryAfterMs, 24 h)). `random` is injectable for tests.
 */
export function nextAttemptDelayMs(
  attemptNumber: number,
  schedule: readonly number[],
  retryAfterMs?: number | null,
  random: () => number = Math.random,
): number | null {
  if (!Number.isInteger(attemptNumber) || attemptNumber < 1) return null;
  const scheduled = schedule[attemptNumber];
  if (scheduled === undefined) return null; // past the last entry
  const step = Math.max(0, scheduled);
  const r = Math.min(1, Math.max(0, random()));
  const jittered = Math.max(0, Math.round(step * (1 - RETRY_JITTER + 2 * RETRY_JITTER * r)));
  if (retryAfterMs == null || !Number.isFinite(retryAfterMs) || retryAfterMs <= 0) return jittered;
  return Math.max(jittered, Math.round(Math.min(retryAfterMs, RETRY_AFTER_CAP_MS)));
}

export { parseRetryAfter } from '../http';
