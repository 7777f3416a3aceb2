import { Redis } from 'ioredis';
import { RunStore, queueTag, type NewRun } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let client: Redis;
let store: RunStore;

const newRun = (id: string, over: Partial<NewRun> = {}): NewRun => ({
  id,
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p?x=1',
  headers: [['host', 'h']],
  body: Buffer.from([0, 1, 2, 255]),
  requestId: 'rq',
  owner: '',
  webhookUrl: null,
  gracePeriodMs: 1000,
  ...over,
});
const id = (n: number) => testRunId(n);

beforeAll(async () => {
  redis = await RedisServer.start();
  client = new Redis(redis.url);
});
beforeEach(async () => {
  await client.flushall();
  store = new RunStore(client, { keyPrefix: 't', runTtlMs: 60_000, leaseTimeoutMs: 200, maxDispatchAttempts: 2, redispatchInterrupted: 'idempotent' });
});
afterAll(async () => {
  client.disconnect();
  await redis.destroy();
});

describe('run store (one Lua script per state change)', () => {
  it('keeps every key in one Redis Cluster slot', async () => {
    await store.create(newRun(id(1)));
    const keys = await client.keys('t:*');
    expect(keys.length).toBeGreaterThan(0);
    // Every key but the queue registry carries the default queue's tag (other queues: test/integration/queues.test.ts).
    for (const k of keys) if (k !== 't:queues') expect(k).toContain(`{t:${queueTag('default')}}`);
  });

  it('hands out runs oldest first, each once, with the body byte for byte', async () => {
    for (let i = 1; i <= 3; i++) await store.create(newRun(id(i)));
    const first = await store.claim('w1', 2);
    const second = await store.claim('w2', 5);
    expect(first.map((r) => r.id)).toEqual([id(1), id(2)]);
    expect(second.map((r) => r.id)).toEqual([id(3)]);
    expect(first[0]!.body).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(first[0]!).toMatchObject({ attempt: 1, method: 'POST', target: '/p?x=1', headers: [['host', 'h']], gracePeriodMs: 1000 });
    expect((await store.get(id(1)))!.view.status).toBe('running');
  });

  it('records an outcome only for the worker and attempt holding the run', async () => {
    await store.create(newRun(id(1)));
    const [run] = await store.claim('w1', 1);
    const outcome = {
      status: 'succeeded' as const,
      response: { statusCode: 200, contentType: 'text/plain', headers: [], body: Buffer.from('ok'), size: 2, truncated: false },
      error: null,
    };
    expect((await store.complete('w2', run!, outcome)).recorded).toBe(false);
    expect(await store.complete('w1', run!, outcome)).toEqual({ recorded: true, webhook: null, next: [] });
    expect((await store.complete('w1', run!, outcome)).recorded).toBe(false);
    const view = (await store.get(id(1)))!.view;
    expect(view).toMatchObject({ status: 'succeeded', response: { status_code: 200, content_type: 'text/plain', size: 2 }, error: null });
    // The request's credentials and body do not outlive the run; what the runs API shows stays.
    expect(await client.hmget(store.keys.run(id(1)), 'headers', 'body', 'target')).toEqual([null, null, null]);
    expect(view.request).toMatchObject({ method: 'POST', path: '/p' });
    expect(await client.pttl(store.keys.run(id(1)))).toBeGreaterThan(50_000);
  });

  it('takes the next queued run for the completing worker in the same step', async () => {
    for (let i = 1; i <= 3; i++) await store.create(newRun(id(i)));
    const [first] = await store.claim('w1', 1);
    const ok = { status: 'succeeded' as const, response: null, error: null };
    const done = await store.complete('w1', first!, ok, { claimNext: 1 });
    expect(done.next.map((r) => [r.id, r.attempt, r.body])).toEqual([[id(2), 1, Buffer.from([0, 1, 2, 255])]]);
    expect((await store.get(id(2)))!.view.status).toBe('running');
    expect((await store.complete('w2', done.next[0]!, ok, { claimNext: 1 })).recorded).toBe(false); // not w2's
    expect((await store.complete('w1', done.next[0]!, ok, { claimNext: 5 })).next.map((r) => r.id)).toEqual([id(3)]);
  });

  it('lets cancel and completion race to exactly one final state', async () => {
    await store.create(newRun(id(1)));
    const [run] = await store.claim('w1', 1);
    const [cancel, completed] = await Promise.all([
      store.cancel(id(1)),
      store.complete('w1', run!, { status: 'failed', response: null, error: { code: 'upstream_unreachable', message: 'y' } }),
    ]);
    const final = (await store.get(id(1)))!.view.status;
    expect(cancel === 'running' ? final === 'cancelled' && !completed.recorded : final === 'failed' && completed.recorded).toBe(true);
    expect(await store.cancel(id(1))).toBe(final);
  });

  it('never starts a cancelled queued run', async () => {
    await store.create(newRun(id(1)));
    expect(await store.cancel(id(1))).toBe('queued');
    expect(await store.claim('w1', 5)).toEqual([]);
    expect((await store.get(id(1)))!.view).toMatchObject({ status: 'cancelled', error: { code: 'cancelled' } });
  });

  it('re-queues an orphaned idempotent run and fails a non-idempotent one as interrupted', async () => {
    await store.create(newRun(id(1), { method: 'GET' }));
    await store.create(newRun(id(2), { method: 'POST' }));
    await store.claim('dead', 2);
    await new Promise((r) => setTimeout(r, 250));
    const recovered = await store.recover(10);
    expect(recovered).toEqual(
      expect.arrayContaining([
        { id: id(1), outcome: 'queued' },
        { id: id(2), outcome: 'failed' },
      ]),
    );
    expect((await store.get(id(2)))!.view).toMatchObject({ status: 'failed', error: { code: 'interrupted' } });
    const [again] = await store.claim('w2', 1);
    expect(again).toMatchObject({ id: id(1), attempt: 2 });
    // A second interruption exhausts MAX_DISPATCH_ATTEMPTS (2).
    await new Promise((r) => setTimeout(r, 250));
    expect(await store.recover(10)).toEqual([{ id: id(1), outcome: 'failed' }]);
  });

  it('puts runs taken but never started back at the head of the queue, attempt undone', async () => {
    for (let i = 1; i <= 3; i++) await store.create(newRun(id(i), { method: 'POST' }));
    const taken = await store.claim('w1', 2);
    expect(
      await store.release(
        'w2',
        taken.map((r) => r.id),
      ),
    ).toBe(0); // not w2's
    expect(
      await store.release(
        'w1',
        taken.map((r) => r.id),
      ),
    ).toBe(2);
    expect(await client.zcard(store.queueKeys('default').leases)).toBe(0);
    expect((await store.get(id(1)))!.view).toMatchObject({ status: 'queued', started_at: null, dispatch_attempts: 0 });
    const again = await store.claim('w2', 3);
    expect(again.map((r) => [r.id, r.attempt])).toEqual([
      [id(1), 1],
      [id(2), 1],
      [id(3), 1],
    ]);
  });

  it('keeps leases alive with a heartbeat', async () => {
    await store.create(newRun(id(1), { method: 'GET' }));
    await store.claim('w1', 1);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 100));
      expect(await store.renewLeases('w1', [{ id: id(1), attempt: 1 }])).toEqual([]);
    }
    expect(await store.recover(10)).toEqual([]);
  });

  it('names the leases a worker lost: recovered and taken again, cancelled, or of another attempt', async () => {
    for (let i = 1; i <= 3; i++) await store.create(newRun(id(i), { method: 'GET' }));
    await store.claim('w1', 3);
    await new Promise((r) => setTimeout(r, 250)); // every lease expires
    expect((await store.recover(10)).map((r) => r.outcome)).toEqual(['queued', 'queued', 'queued']);
    const [taken] = await store.claim('w2', 1); // attempt 2, now w2's
    expect(taken!.attempt).toBe(2);
    const other = [id(1), id(2), id(3)].find((x) => x !== taken!.id)!;
    await store.cancel(other);
    const lost = await store.renewLeases(
      'w1',
      [1, 2, 3].map((n) => ({ id: id(n), attempt: 1 })),
    );
    expect(lost.sort()).toEqual([id(1), id(2), id(3)]);
    // w2's lease is untouched by w1's renewal, and renews for w2 (for its own attempt only).
    expect(await store.renewLeases('w2', [{ id: taken!.id, attempt: 2 }])).toEqual([]);
    expect(await store.renewLeases('w2', [{ id: taken!.id, attempt: 1 }])).toEqual([taken!.id]);
  });

  it('queues a webhook delivery when a run with a webhook ends, and keeps the run until it is delivered', async () => {
    await store.create(newRun(id(1), { webhookUrl: 'https://hooks.example/x' }));
    const [run] = await store.claim('w1', 1);
    await store.complete('w1', run!, {
      status: 'succeeded',
      response: { statusCode: 201, contentType: 'application/json', headers: [], body: Buffer.from('{"a":1}'), size: 7, truncated: false },
      error: null,
    });
    expect(await client.pttl(store.keys.run(id(1)))).toBe(-1);
    const [d] = await store.claimWebhooks(10, 10_000);
    expect(d).toMatchObject({
      runId: id(1),
      url: 'https://hooks.example/x',
      runStatus: 'succeeded',
      upstreamStatus: 201,
      contentType: 'application/json',
      tries: 0,
    });
    expect(d!.body!.toString()).toBe('{"a":1}');
    expect(d!.webhookId).toMatch(/^msg_/);
    expect(await store.claimWebhooks(10, 10_000)).toEqual([]); // hidden while in delivery
    await store.recordWebhookAttempt(id(1), { at: new Date().toISOString(), status_code: 503, error: null, duration_ms: 3, outcome: 'retry' }, 0);
    const [again] = await store.claimWebhooks(10, 10_000);
    expect(again!.tries).toBe(1);
    await store.recordWebhookAttempt(id(1), { at: new Date().toISOString(), status_code: 200, error: null, duration_ms: 2, outcome: 'delivered' }, null);
    const view = (await store.get(id(1)))!.view;
    expect(view.webhook).toMatchObject({ status: 'delivered', attempts: 2, last_status_code: 200, next_attempt_at: null });
    expect(view.webhook.history.map((h) => h.status_code)).toEqual([503, 200]);
    expect(await client.pttl(store.keys.run(id(1)))).toBeGreaterThan(50_000);
    expect(await store.redeliver(id(1), 'someone-else')).toBe('missing'); // not theirs, in the same script
    expect(await store.redeliver(id(1), '')).toBe('ok');
    expect(await store.redeliver(id(1), null)).toBe('pending'); // still to be sent
    expect((await store.claimWebhooks(10, 10_000))[0]!.tries).toBe(0);
    await store.recordWebhookAttempt(id(1), { at: new Date().toISOString(), status_code: 200, error: null, duration_ms: 2, outcome: 'delivered' }, null);
    expect(await store.redeliver(id(1), null)).toBe('too_soon'); // one redelivery per 10 s
  });

  it('refuses to redeliver for a cancelled run, and keeps the latest 50 attempts of a history', async () => {
    await store.create(newRun(id(1), { webhookUrl: 'https://hooks.example/x' }));
    await store.cancel(id(1));
    expect(await store.redeliver(id(1), null)).toBe('cancelled');

    await store.create(newRun(id(2), { webhookUrl: 'https://hooks.example/x' }));
    const [run] = await store.claim('w1', 1);
    await store.complete('w1', run!, { status: 'failed', response: null, error: { code: 'upstream_unreachable', message: 'y' } });
    for (let i = 0; i < 60; i++) {
      await store.recordWebhookAttempt(id(2), { at: new Date().toISOString(), status_code: 500 + (i % 10), error: null, duration_ms: i, outcome: 'retry' }, 0);
    }
    const wh = (await store.get(id(2)))!.view.webhook;
    expect(wh.attempts).toBe(60);
    expect(wh.history).toHaveLength(50);
    expect(wh.history.map((h) => h.duration_ms)).toEqual(Array.from({ length: 50 }, (_, i) => i + 10));
  });

  it('hands a webhook delivery to the completing worker, due for others only after the window', async () => {
    await store.create(newRun(id(1), { webhookUrl: 'https://hooks.example/x' }));
    const [run] = await store.claim('w1', 1);
    const done = await store.complete(
      'w1',
      run!,
      { status: 'failed', response: null, error: { code: 'upstream_unreachable', message: 'y' } },
      { handOffWindowMs: 300 },
    );
    expect(done).toEqual({
      recorded: true,
      webhook: { url: 'https://hooks.example/x', webhookId: expect.stringMatching(/^msg_/), sealedSecret: null, notBeforeS: null },
      next: [],
    });
    expect(await store.claimWebhooks(10, 10_000)).toEqual([]);
    await new Promise((r) => setTimeout(r, 350));
    expect((await store.claimWebhooks(10, 10_000)).map((d) => d.runId)).toEqual([id(1)]);
  });

  it('pages through runs created in the same millisecond without skipping or repeating any', async () => {
    for (let i = 1; i <= 5; i++) await store.create(newRun(id(i)));
    const now = Date.now();
    for (let i = 1; i <= 5; i++) await client.zadd(store.queueKeys('default').index, now, id(i)); // one shared score
    const seen: string[] = [];
    let after: { createdAt: number; id: string } | undefined;
    for (;;) {
      const page = await store.recentIds(2, after);
      if (page.length === 0) break;
      seen.push(...page.map((e) => e.id));
      after = page.at(-1);
    }
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5].map(id));
  });

  it('prunes listing-index entries of expired runs only', async () => {
    await store.create(newRun(id(1)));
    await store.create(newRun(id(2)));
    await client.del(store.keys.run(id(1))); // as if it had expired
    expect(await store.pruneIndex(100)).toBe(1);
    expect(await client.zrange(store.queueKeys('default').index, '0', '-1')).toEqual([id(2)]);
  });

  it('prunes expired entries behind long-lived ones at the old end of the index', async () => {
    for (let i = 1; i <= 250; i++) await store.create(newRun(id(i))); // live, and the oldest
    const later = Date.now() + 1000;
    const expired: Array<string | number> = [];
    for (let i = 0; i < 5000; i++) expired.push(later + i, `ffffffff-0000-4000-8000-${String(i).padStart(12, '0')}`);
    await client.zadd(store.queueKeys('default').index, ...expired); // index entries whose run hashes are gone
    let removed = 0;
    for (let call = 0; call < 200 && removed < 5000; call++) removed += await store.pruneIndex(200);
    expect(removed).toBe(5000);
    expect(await client.zcard(store.queueKeys('default').index)).toBe(250);
  });

  it('creates at most one run per Idempotency-Key record, in the enqueue script', async () => {
    const idem = { key: 'order-17', fingerprint: 'f'.repeat(64) };
    expect(await store.create(newRun(id(1), { owner: 'a'.repeat(64), idempotency: idem }))).toEqual({ outcome: 'created' });
    // The same request again: nothing written, the first run named.
    expect(await store.create(newRun(id(2), { owner: 'a'.repeat(64), idempotency: idem }))).toEqual({ outcome: 'replayed', runId: id(1) });
    // Another request under the same key: refused, nothing written.
    expect(await store.create(newRun(id(3), { owner: 'a'.repeat(64), idempotency: { ...idem, fingerprint: 'e'.repeat(64) } }))).toEqual({
      outcome: 'conflict',
      runId: id(1),
    });
    // Another owner's key of the same name is another record.
    expect(await store.create(newRun(id(4), { owner: 'b'.repeat(64), idempotency: idem }))).toEqual({ outcome: 'created' });
    expect(await client.exists(store.keys.run(id(2)), store.keys.run(id(3)))).toBe(0);
    expect(await client.zcard(store.queueKeys('default').queued)).toBe(2);
    const record = store.queueKeys('default').idempotencyRecord('a'.repeat(64), 'order-17');
    expect(record).toContain(`{t:${queueTag('default')}}`);
    expect(await client.hgetall(record)).toEqual({ run_id: id(1), fp: 'f'.repeat(64) });
    // IDEMPOTENCY_KEY_TTL (24 h unless set).
    expect(await client.pttl(record)).toBeGreaterThan(86_000_000);

    // Twenty at once (one connection each, as replicas would send them): exactly one run.
    const clients = Array.from({ length: 20 }, () => new Redis(redis.url));
    try {
      const stores = clients.map(
        (c) => new RunStore(c, { keyPrefix: 't', runTtlMs: 60_000, leaseTimeoutMs: 200, maxDispatchAttempts: 2, redispatchInterrupted: 'idempotent' }),
      );
      const race = { key: 'race', fingerprint: 'c'.repeat(64) };
      const results = await Promise.all(stores.map((st, i) => st.create(newRun(id(100 + i), { idempotency: race }))));
      const created = results.map((r, i) => (r.outcome === 'created' ? id(100 + i) : null)).filter((x) => x !== null);
      expect(created).toHaveLength(1);
      expect(results.filter((r) => r.outcome === 'replayed').map((r) => (r as { runId: string }).runId)).toEqual(Array(19).fill(created[0]));
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('keeps the request of a failed run, and retries it: same id, a new attempt, the outcome it had kept', async () => {
    await store.create(newRun(id(1), { owner: 'a'.repeat(64) }));
    const [run] = await store.claim('w1', 1);
    await store.complete('w1', run!, {
      status: 'failed',
      response: { statusCode: 500, contentType: 'text/plain', headers: [], body: Buffer.from('no'), size: 2, truncated: false },
      error: { code: 'upstream_status', message: 'the upstream answered 500' },
    });
    // Kept until the run expires, for the retry.
    const [headers, body, target] = await client.hmgetBuffer(store.keys.run(id(1)), 'headers', 'body', 'target');
    expect([headers?.toString(), body, target?.toString()]).toEqual(['[["host","h"]]', Buffer.from([0, 1, 2, 255]), '/p?x=1']);
    expect(await client.pttl(store.keys.run(id(1)))).toBeGreaterThan(50_000);

    expect(await store.retry(id(1), 'b'.repeat(64))).toBe('missing'); // another owner: as if unknown
    expect(await store.retry(testRunId(99))).toBe('missing');
    expect(await store.retry(id(1), 'a'.repeat(64))).toBe('ok');
    expect(await client.pttl(store.keys.run(id(1)))).toBe(-1); // a queued run never expires
    const queued = (await store.get(id(1)))!.view;
    expect(queued).toMatchObject({
      status: 'queued',
      response: null,
      error: null,
      started_at: null,
      finished_at: null,
      dispatch_attempts: 1,
      queue_position: 0,
    });
    expect(queued.previous_outcomes).toEqual([
      {
        status: 'failed',
        error: 'upstream_status',
        status_code: 500,
        started_at: expect.any(String),
        finished_at: expect.any(String),
        dispatch_attempts: 1,
        retried_at: expect.any(String),
      },
    ]);
    expect(await store.retry(id(1))).toBe('queued'); // not retryable while queued
    const [again] = await store.claim('w1', 1);
    expect(again).toMatchObject({ id: id(1), attempt: 2, target: '/p?x=1', headers: [['host', 'h']], body: Buffer.from([0, 1, 2, 255]) });
    await store.complete('w1', again!, {
      status: 'succeeded',
      response: { statusCode: 200, contentType: 'text/plain', headers: [], body: Buffer.from('ok'), size: 2, truncated: false },
      error: null,
    });
    // Succeeded: the request is dropped as before, and it cannot be retried.
    expect(await client.hmget(store.keys.run(id(1)), 'headers', 'body', 'target')).toEqual([null, null, null]);
    expect(await store.retry(id(1))).toBe('succeeded');
    expect((await store.get(id(1)))!.view).toMatchObject({ status: 'succeeded', dispatch_attempts: 2, response: { status_code: 200 } });

    await store.create(newRun(id(2)));
    await store.cancel(id(2));
    expect(await client.hmget(store.keys.run(id(2)), 'headers', 'body', 'target')).toEqual([null, null, null]);
    expect(await store.retry(id(2))).toBe('cancelled');
  });

  it('refuses to retry a run whose webhook is being delivered, and delivers the new outcome after a retry', async () => {
    await store.create(newRun(id(1), { webhookUrl: 'https://hooks.example/x' }));
    const [run] = await store.claim('w1', 1);
    await store.complete('w1', run!, { status: 'failed', response: null, error: { code: 'upstream_unreachable', message: 'y' } });
    expect(await store.retry(id(1))).toBe('pending');
    await store.claimWebhooks(10, 10_000);
    await store.recordWebhookAttempt(id(1), { at: new Date().toISOString(), status_code: 200, error: null, duration_ms: 2, outcome: 'delivered' }, null);
    expect(await store.retry(id(1))).toBe('ok');
    expect((await store.get(id(1)))!.view.webhook).toMatchObject({ status: 'pending', attempts: 1 });
    const [again] = await store.claim('w1', 1);
    await store.complete('w1', again!, { status: 'failed', response: null, error: { code: 'upstream_unreachable', message: 'y' } });
    expect((await store.claimWebhooks(10, 10_000)).map((d) => [d.runId, d.runStatus, d.tries])).toEqual([[id(1), 'failed', 0]]);
  });

  it('gives a retried run a new MAX_DISPATCH_ATTEMPTS budget and a new max_queue_time', async () => {
    const limited = new RunStore(client, {
      keyPrefix: 't',
      runTtlMs: 60_000,
      leaseTimeoutMs: 200,
      maxDispatchAttempts: 2,
      redispatchInterrupted: 'idempotent',
      queues: new Map([['default', { name: 'default', maxConcurrency: null, maxQueueTimeMs: 300, fairShare: true }]]),
    });
    await limited.create(newRun(id(1), { method: 'GET' }));
    await new Promise((r) => setTimeout(r, 350));
    expect(await limited.expire(10)).toEqual([id(1)]);
    expect((await limited.get(id(1)))!.view.status).toBe('expired');
    expect(await limited.retry(id(1))).toBe('ok');
    // Its wait counts from the retry: not expired again at once, by the claim or by expiry.
    expect(await limited.expire(10)).toEqual([]);
    const [first] = await limited.claim('dead', 1);
    expect(first).toMatchObject({ id: id(1), attempt: 1 });
    await new Promise((r) => setTimeout(r, 250));
    expect(await limited.recover(10)).toEqual([{ id: id(1), outcome: 'queued' }]);
    const [second] = await limited.claim('dead', 1);
    expect(second!.attempt).toBe(2);
    await new Promise((r) => setTimeout(r, 250));
    expect(await limited.recover(10)).toEqual([{ id: id(1), outcome: 'failed' }]); // 2 attempts: the budget is used up
    expect(await limited.retry(id(1))).toBe('ok');
    const [third] = await limited.claim('dead', 1);
    expect(third!.attempt).toBe(3);
    await new Promise((r) => setTimeout(r, 250));
    // Counted from the retry (1 of 2), so dispatched again.
    expect(await limited.recover(10)).toEqual([{ id: id(1), outcome: 'queued' }]);
    const [fourth] = await limited.claim('w1', 1);
    expect(await limited.release('w1', [fourth!.id])).toBe(1);
    expect((await limited.get(id(1)))!.view).toMatchObject({
      status: 'queued',
      dispatch_attempts: 3,
      previous_outcomes: [{ status: 'expired' }, { status: 'failed' }],
    });
  });

  it("lists an owner's runs from its owner index alone, and prunes it with the listing index", async () => {
    const [alice, bob] = ['a'.repeat(64), 'b'.repeat(64)];
    for (let i = 1; i <= 4; i++) await store.create(newRun(id(i), { owner: i % 2 === 0 ? bob : alice }));
    await store.create(newRun(id(5))); // no owner header
    const ids = async (owner?: string) => (await store.recentIds(10, undefined, owner)).map((e) => e.id).sort();
    expect(await ids(alice)).toEqual([id(1), id(3)]);
    expect(await ids(bob)).toEqual([id(2), id(4)]);
    expect(await ids('')).toEqual([id(5)]);
    expect(await ids()).toEqual([1, 2, 3, 4, 5].map(id));
    expect(await client.zcard(store.queueKeys('default').ownerIndexOf('c'.repeat(64)))).toBe(0);
    await client.del(store.keys.run(id(3))); // as if it had expired
    expect(await store.pruneIndex(100)).toBe(1);
    expect(await ids(alice)).toEqual([id(1)]);
    expect(await client.hkeys(store.queueKeys('default').indexOwners)).not.toContain(id(3));
  });

  it('sends no webhook for a cancelled run', async () => {
    await store.create(newRun(id(1), { webhookUrl: 'https://hooks.example/x' }));
    await store.cancel(id(1));
    expect(await store.claimWebhooks(10, 10_000)).toEqual([]);
    expect((await store.get(id(1)))!.view.webhook.status).toBe('none');
  });
});
