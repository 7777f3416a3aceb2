import { DEFAULT_RETRY_SCHEDULE, RETRY_AFTER_CAP_MS, classifyAttempt, nextAttemptDelayMs, parseRetryAfter, parseRetrySchedule } from '../../src/webhooks/retry';

describe('parseRetrySchedule', () => {
  it('parses the documented default (docs/CONTRACT.md §4): 8 attempts', () => {
    expect(parseRetrySchedule(DEFAULT_RETRY_SCHEDULE)).toEqual([0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
  });
  it.each([
    ['0', [0]],
    ['0,100ms,250ms', [0, 100, 250]],
    ['1, 2 ,3', [1000, 2000, 3000]],
    ['0.5s,1.5,2m,1h', [500, 1500, 120_000, 3_600_000]],
    ['0, 10 ms', [0, 10]],
    ['5S,1M', [5000, 60_000]],
  ])('%s', (spec, ms) => {
    expect(parseRetrySchedule(spec)).toEqual(ms);
  });
  it.each(['', ' ', '0,,5s', '5x', '-1s', 'abc', '1e3', '5s;10s', '5 s s'])('refuses %p', (spec) => {
    expect(() => parseRetrySchedule(spec)).toThrow();
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  it.each([
    ['120', 120_000],
    ['0', 0],
    [' 5 ', 5_000],
    ['Thu, 01 Jan 2026 00:00:30 GMT', 30_000],
    ['Thursday, 01-Jan-26 00:01:00 GMT', 60_000],
    ['Wed, 31 Dec 2025 23:00:00 GMT', 0], // in the past
    [['7', '9'], 7_000],
  ])('%p -> %p', (header, ms) => {
    expect(parseRetryAfter(header, now)).toBe(ms);
  });
  it.each([undefined, null, '', 'soon', '-5', '1.5', '2026-01-01', 'Thu, 99 Foo 2026'])('%p -> null', (header) => {
    expect(parseRetryAfter(header, now)).toBeNull();
  });
});

describe('classifyAttempt', () => {
  it.each([
    [200, null, 'delivered'],
    [201, null, 'delivered'],
    [204, null, 'delivered'],
    [299, null, 'delivered'],
    [301, null, 'failed'],
    [302, null, 'failed'],
    [307, null, 'failed'],
    [308, null, 'failed'],
    [400, null, 'failed'],
    [401, null, 'failed'],
    [404, null, 'failed'],
    [410, null, 'failed'],
    [413, null, 'failed'],
    [408, null, 'retry'],
    [429, null, 'retry'],
    [500, null, 'retry'],
    [502, null, 'retry'],
    [503, null, 'retry'],
    [599, null, 'retry'],
    [100, null, 'failed'],
    [600, null, 'failed'],
    [null, 'timeout', 'retry'],
    [null, 'connection_refused', 'retry'],
    [null, 'connection_reset', 'retry'],
    [null, 'dns_failure', 'retry'],
    [null, 'tls_error', 'retry'],
    [null, null, 'retry'],
    [null, 'blocked_address', 'failed'],
    [null, 'invalid_url', 'failed'],
    [null, 'invalid_request', 'failed'],
  ] as const)('%p %p -> %s', (statusCode, error, outcome) => {
    expect(classifyAttempt({ statusCode, error })).toBe(outcome);
  });
});

describe('nextAttemptDelayMs', () => {
  const schedule = parseRetrySchedule(DEFAULT_RETRY_SCHEDULE);
  it('follows the schedule; null once exhausted', () => {
    const mid = () => 0.5; // no jitter
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => nextAttemptDelayMs(n, schedule, undefined, mid))).toEqual(schedule.slice(1));
    expect(nextAttemptDelayMs(8, schedule, undefined, mid)).toBeNull();
    expect(nextAttemptDelayMs(9, schedule)).toBeNull();
    expect(nextAttemptDelayMs(0, schedule)).toBeNull();
    expect(nextAttemptDelayMs(1, [0])).toBeNull();
  });
  it('jitters by at most ±10%, never negative', () => {
    expect(nextAttemptDelayMs(1, schedule, undefined, () => 0)).toBe(4_500);
    expect(nextAttemptDelayMs(1, schedule, undefined, () => 1)).toBe(5_500);
    for (let i = 0; i < 1000; i++) {
      const d = nextAttemptDelayMs(2, schedule)!;
      expect(d).toBeGreaterThanOrEqual(270_000);
      expect(d).toBeLessThanOrEqual(330_000);
    }
    expect(nextAttemptDelayMs(1, [0, 0, 5], undefined, () => 0)).toBe(0);
    expect(nextAttemptDelayMs(1, [0, 0, 5], undefined, () => 1)).toBe(0);
    expect(nextAttemptDelayMs(1, [0, 1], undefined, () => 0)).toBeGreaterThanOrEqual(0);
    expect(nextAttemptDelayMs(1, [0, 100], undefined, () => 5)).toBe(110); // random() out of range is clamped
  });
  it('honours Retry-After as a minimum, capped at 24 h', () => {
    const mid = () => 0.5;
    expect(nextAttemptDelayMs(1, schedule, 60_000, mid)).toBe(60_000);
    expect(nextAttemptDelayMs(1, schedule, 1_000, mid)).toBe(5_000);
    expect(nextAttemptDelayMs(1, [0, 100], 1_000, mid)).toBe(1_000);
    expect(nextAttemptDelayMs(1, schedule, 7 * RETRY_AFTER_CAP_MS, mid)).toBe(RETRY_AFTER_CAP_MS);
    expect(nextAttemptDelayMs(1, schedule, null, mid)).toBe(5_000);
    expect(nextAttemptDelayMs(1, schedule, 0, mid)).toBe(5_000);
    expect(nextAttemptDelayMs(8, schedule, 60_000, mid)).toBeNull(); // exhausted even with Retry-After
  });
});
