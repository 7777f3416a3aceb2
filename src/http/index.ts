// HTTP rules shared by the replay to the app and the webhook sender.

/**
 * `Retry-After` (RFC 9110 §10.2.3) in ms from `now`: delay-seconds (digits) or an HTTP-date
 * (a past date gives 0). Null when absent or unparseable.
 */
export function parseRetryAfter(header: string | string[] | null | undefined, now: number = Date.now()): number | null {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!value) return null;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  // An HTTP-date always names a weekday and a month; refuse other strings Date.parse would take.
  if (!/^[A-Za-z]{3,9},? /.test(value)) return null;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}
