import { REDIS_BACKOFF, backoffDelayMs, retryUntil, type Backoff } from '../../src/work/retry';

describe('backoffDelayMs', () => {
  it('waits 100 ms, doubling, at most 2 s for Redis', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50, 5000].map((n) => backoffDelayMs(REDIS_BACKOFF, n))).toEqual([100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
  });
  it('is the reconnect schedule ioredis had (50 * 2^min(times, 6), at most 2 s): one policy for both', () => {
    for (let times = 1; times <= 100; times++) expect(backoffDelayMs(REDIS_BACKOFF, times)).toBe(Math.min(50 * 2 ** Math.min(times, 6), 2000));
  });
  it('takes the first retry for anything below 1', () => {
    expect(backoffDelayMs(REDIS_BACKOFF, 0)).toBe(100);
    expect(backoffDelayMs(REDIS_BACKOFF, -3)).toBe(100);
  });
  it('keeps a constant policy constant', () => {
    expect([1, 2, 10].map((n) => backoffDelayMs({ initialMs: 200, factor: 1, maxMs: 200 }, n))).toEqual([200, 200, 200]);
  });
});

describe('retryUntil', () => {
  const fast: Backoff = { initialMs: 20, factor: 2, maxMs: 40 };

  it('returns at once when the call succeeds, without reporting anything', async () => {
    const errors: Error[] = [];
    const r = await retryUntil(async () => 'ok', { backoff: fast, onError: (e) => errors.push(e), giveUp: () => false });
    expect(r).toEqual({ ok: true, value: 'ok' });
    expect(errors).toEqual([]);
  });

  it('retries after each failure, waiting as the policy says, until the call succeeds', async () => {
    const calls: number[] = [];
    const reported: Array<[string, number]> = [];
    const r = await retryUntil(
      async () => {
        calls.push(Date.now());
        if (calls.length < 4) throw new Error(`down ${calls.length}`);
        return calls.length;
      },
      { backoff: fast, onError: (e, n) => reported.push([e.message, n]), giveUp: () => false },
    );
    expect(r).toEqual({ ok: true, value: 4 });
    expect(reported).toEqual([
      ['down 1', 1],
      ['down 2', 2],
      ['down 3', 3],
    ]);
    // Waits of 20, 40 and 40 ms (timers fire no earlier than asked; allow 1 ms of clock rounding).
    const gaps = calls.slice(1).map((t, i) => t - calls[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(19);
    expect(gaps[1]).toBeGreaterThanOrEqual(39);
    expect(gaps[2]).toBeGreaterThanOrEqual(39);
  });

  it('stops when giveUp says so after a failure, with the last error', async () => {
    let calls = 0;
    const r = await retryUntil(
      async () => {
        calls++;
        throw new Error(`failure ${calls}`);
      },
      { backoff: fast, onError: () => undefined, giveUp: () => calls >= 3 },
    );
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.message).toBe('failure 3');
    expect(calls).toBe(3);
  });

  it('asks giveUp only after a failure, and turns a thrown non-Error into an Error', async () => {
    let asked = 0;
    let calls = 0;
    const r = await retryUntil(
      async () => {
        if (++calls === 1) throw 'not an error';
        return 'second';
      },
      {
        backoff: fast,
        onError: (e) => expect(e).toBeInstanceOf(Error),
        giveUp: () => {
          asked++;
          return false;
        },
      },
    );
    expect(r).toEqual({ ok: true, value: 'second' });
    expect(asked).toBe(1);
  });
});
