/**
 * Webhook attempt records on a real Redis (src/runs/attempt-records.ts): the records of one turn
 * of the event loop go in one script call per hash tag, or ride along a completion of the same
 * tag sent in that turn; a record is applied whether or not that completion still held its run,
 * and a failed call rejects the records it carried, so their writers retry them.
 */
import { Redis } from 'ioredis';
import { RunStore, type DispatchOutcome, type NewRun, type WebhookAttemptRecord } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let client: Redis;
let store: RunStore;

const newRun = (n: number, queue = 'default'): NewRun => ({
  id: testRunId(n, queue),
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [],
  body: Buffer.from('{}'),
  requestId: null,
  owner: '',
  webhookUrl: 'https://hooks.example/x',
  gracePeriodMs: 10_000,
  ...(queue === 'default' ? {} : { queue }),
});
const ok: DispatchOutcome = {
  status: 'succeeded',
  response: { statusCode: 200, contentType: 'text/plain', headers: [], body: Buffer.from('done'), size: 4, truncated: false },
  error: null,
};
const delivered: WebhookAttemptRecord = { at: '2026-12-02T00:00:00.000Z', status_code: 200, error: null, duration_ms: 3, outcome: 'delivered' };
const failedOnce: WebhookAttemptRecord = { at: '2026-12-02T00:00:00.000Z', status_code: 500, error: null, duration_ms: 3, outcome: 'retry' };

/** Script calls (EVALSHA and EVAL) Redis has run since the last reset. */
async function scriptCalls(): Promise<number> {
  const info = await client.info('commandstats');
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(m[2]);
  return calls;
}

/** Runs created, claimed and completed with their webhook handed to this worker: each has a delivery to record. */
async function finishedRuns(ns: number[], queue = 'default'): Promise<string[]> {
  for (const n of ns) await store.create(newRun(n, queue));
  const claimed = await store.claim('w1', ns.length, queue);
  for (const run of claimed) await store.complete('w1', run, ok, { handOffWindowMs: 10_000 });
  return claimed.map((r) => r.id);
}

const webhookOf = async (id: string) => (await store.get(id))!.view.webhook;

beforeAll(async () => {
  redis = await RedisServer.start();
  client = new Redis(redis.url);
});
beforeEach(async () => {
  await client.flushall();
  store = new RunStore(client, {
    keyPrefix: 't',
    runTtlMs: 60_000,
    leaseTimeoutMs: 5_000,
    maxDispatchAttempts: 2,
    redispatchInterrupted: 'idempotent',
    queues: new Map([['gpu', { name: 'gpu', maxConcurrency: null, maxQueueTimeMs: null, fairShare: true }]]),
  });
});
afterAll(async () => {
  client.disconnect();
  await redis.destroy();
});

describe('webhook attempt records', () => {
  it('writes the records of one turn in one script call per hash tag, each applied to its own run', async () => {
    const defaults = await finishedRuns([1, 2, 3]);
    const gpu = await finishedRuns([4], 'gpu');
    await client.config('RESETSTAT');
    await Promise.all([
      store.recordWebhookAttempt(defaults[0]!, delivered, null),
      store.recordWebhookAttempt(defaults[1]!, failedOnce, 30_000),
      store.recordWebhookAttempt(defaults[2]!, delivered, null),
      store.recordWebhookAttempt(gpu[0]!, delivered, null),
    ]);
    expect(await scriptCalls()).toBe(2);
    expect(await webhookOf(defaults[0]!)).toMatchObject({ status: 'delivered', attempts: 1, last_status_code: 200, history: [delivered] });
    const retried = await webhookOf(defaults[1]!);
    expect(retried).toMatchObject({ status: 'pending', attempts: 1, last_status_code: 500, history: [failedOnce] });
    expect(Date.parse(retried.next_attempt_at!)).toBeGreaterThan(Date.now() + 20_000);
    expect(await webhookOf(defaults[2]!)).toMatchObject({ status: 'delivered', attempts: 1 });
    expect(await webhookOf(gpu[0]!)).toMatchObject({ status: 'delivered', attempts: 1 });
    // Delivered: out of the tag's webhooks set; the retried one waits there for its next attempt.
    expect(await client.zcard(`${store.keys.base(gpu[0]!.slice(-4))}:webhooks`)).toBe(0);
  });

  it('lets a record ride along a completion of the same tag sent in the same turn: one round trip for both', async () => {
    const [hooked] = await finishedRuns([1]);
    await store.create(newRun(2));
    const [next] = await store.claim('w1', 1);
    await client.config('RESETSTAT');
    const recorded = store.recordWebhookAttempt(hooked!, delivered, null);
    const completed = store.complete('w1', next!, ok);
    await Promise.all([recorded, completed]);
    expect(await scriptCalls()).toBe(1);
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'delivered', attempts: 1, history: [delivered] });
    expect((await store.get(next!.id))!.view.status).toBe('succeeded');
  });

  it('does not ride along a completion of another tag', async () => {
    const [hooked] = await finishedRuns([1], 'gpu');
    await store.create(newRun(2));
    const [next] = await store.claim('w1', 1);
    await client.config('RESETSTAT');
    await Promise.all([store.recordWebhookAttempt(hooked!, delivered, null), store.complete('w1', next!, ok)]);
    expect(await scriptCalls()).toBe(2);
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'delivered', attempts: 1 });
  });

  it('applies a carried record also when the completion that carried it no longer held its run', async () => {
    const [hooked] = await finishedRuns([1]);
    await store.create(newRun(2));
    const [next] = await store.claim('w1', 1);
    await store.cancel(next!.id, null); // the completion below is a no-op for its run
    const recorded = store.recordWebhookAttempt(hooked!, delivered, null);
    const completion = await store.complete('w1', next!, ok);
    await recorded;
    expect(completion.recorded).toBe(false);
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'delivered', attempts: 1 });
    expect((await store.get(next!.id))!.view.status).toBe('cancelled');
  });

  it('rejects the records a failed call carried, and a retry writes them once', async () => {
    const [hooked] = await finishedRuns([1]);
    await store.create(newRun(2));
    const [next] = await store.claim('w1', 1);
    // The next script call fails (a script error Redis answers with), as a Redis error would.
    await client.config('SET', 'maxmemory', '1');
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    try {
      const recorded = store.recordWebhookAttempt(hooked!, delivered, null);
      const completed = store.complete('w1', next!, ok);
      await expect(completed).rejects.toThrow(/OOM/);
      await expect(recorded).rejects.toThrow(/OOM/);
    } finally {
      await client.config('SET', 'maxmemory', '0');
    }
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'pending', attempts: 0 });
    await store.recordWebhookAttempt(hooked!, delivered, null);
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'delivered', attempts: 1, history: [delivered] });
  });

  it('rejects the records of a call of their own that failed', async () => {
    const [hooked] = await finishedRuns([1]);
    await client.config('SET', 'maxmemory', '1');
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    try {
      await expect(store.recordWebhookAttempt(hooked!, delivered, null)).rejects.toThrow(/OOM/);
    } finally {
      await client.config('SET', 'maxmemory', '0');
    }
    expect(await webhookOf(hooked!)).toMatchObject({ status: 'pending', attempts: 0 });
  });
});
