/**
 * The delivery record of webhook events (README "Webhook events"), script by script on a real
 * Redis: one entry per run in the tag's webhooks set, the `started` event first while it is
 * pending, the final webhook after it and never before; a started event gets at most one more
 * attempt once its run has ended, so the final webhook waits for a failing one no longer than
 * that attempt (or, when its sender died, the visibility window).
 */
import { Redis } from 'ioredis';
import { RunStore, type ClaimedRun, type DispatchOutcome, type NewRun, type WebhookAttemptRecord } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let client: Redis;
let store: RunStore;

const HOOK = 'https://hooks.example/x';
const id = (n: number) => testRunId(n);
const newRun = (n: number, over: Partial<NewRun> = {}): NewRun => ({
  id: id(n),
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [],
  body: Buffer.from('{}'),
  requestId: null,
  owner: '',
  webhookUrl: HOOK,
  gracePeriodMs: 10_000,
  webhookStarted: true,
  ...over,
});
const ok: DispatchOutcome = {
  status: 'succeeded',
  response: { statusCode: 200, contentType: 'text/plain', headers: [], body: Buffer.from('done'), size: 4, truncated: false },
  error: null,
};
const attempt = (outcome: WebhookAttemptRecord['outcome'], status_code: number | null = outcome === 'delivered' ? 200 : 500): WebhookAttemptRecord => ({
  at: new Date().toISOString(),
  status_code,
  error: null,
  duration_ms: 1,
  outcome,
});
const VISIBILITY = 10_000;
const claimHooks = (visibilityMs = VISIBILITY) => store.claimWebhooks(10, visibilityMs);
const started = async (n: number) => (await store.get(id(n)))!.view.webhook.started;

beforeAll(async () => {
  redis = await RedisServer.start();
  client = new Redis(redis.url);
});
beforeEach(async () => {
  await client.flushall();
  store = new RunStore(client, { keyPrefix: 't', runTtlMs: 60_000, leaseTimeoutMs: 5_000, maxDispatchAttempts: 2, redispatchInterrupted: 'idempotent' });
});
afterAll(async () => {
  client.disconnect();
  await redis.destroy();
});

async function claimRun(): Promise<ClaimedRun> {
  const [run] = await store.claim('w1', 1);
  return run!;
}

describe('webhook events in the run store', () => {
  it('makes the started event due when the app call first begins, with its own stable webhook-id', async () => {
    await store.create(newRun(1));
    expect(await started(1)).toEqual({ status: 'waiting', attempts: 0, last_status_code: null, next_attempt_at: null, history: [] });
    expect(await claimHooks()).toEqual([]);
    const run = await claimRun();
    expect(run.startedEvent).toBe(true);
    const [d] = await claimHooks();
    expect(d).toMatchObject({ runId: id(1), event: 'started', runStatus: 'running', url: HOOK, tries: 0, body: null, upstreamStatus: null });
    expect(d!.webhookId).toBe(`msg_${id(1).replace(/-/g, '')}_started`);
    expect(d!.startedAt).toBe(run.startedAt);
    expect(d!.timestampS).toBe(Math.floor(run.startedAt / 1000));
    expect((await started(1))!.status).toBe('pending');
    // A run without the event: nothing due at claim time.
    await store.create(newRun(2, { webhookStarted: false }));
    expect((await claimRun()).startedEvent).toBe(false);
    expect(await claimHooks()).toEqual([]);
    expect((await store.get(id(2)))!.view.webhook.started).toBeNull();
  });

  it('retries a failing started event while the run runs, and holds the final webhook for the attempt in flight when it ends', async () => {
    await store.create(newRun(1));
    const run = await claimRun();
    await claimHooks();
    await store.recordWebhookAttempt(id(1), attempt('retry'), 0, 'started');
    const [again] = await claimHooks();
    expect(again).toMatchObject({ event: 'started', tries: 1 });
    // The run ends while that attempt is in flight: the final is neither handed off nor due.
    const done = await store.complete('w1', run, ok, { handOffWindowMs: VISIBILITY });
    expect(done).toMatchObject({ recorded: true, webhook: null });
    expect(await claimHooks()).toEqual([]);
    // The attempt fails again: no retry now that the run has ended, and the final is due at once.
    await store.recordWebhookAttempt(id(1), attempt('retry'), 0, 'started');
    expect(await started(1)).toMatchObject({ status: 'failed', attempts: 2, last_status_code: 500, next_attempt_at: null });
    const [final] = await claimHooks();
    expect(final).toMatchObject({ event: 'completed', runStatus: 'succeeded', upstreamStatus: 200, webhookId: `msg_${id(1).replace(/-/g, '')}` });
    expect(final!.body!.toString()).toBe('done');
    // Its webhook-timestamp is later than the started event's.
    expect(final!.timestampS).toBe(again!.timestampS! + 1);
    await store.recordWebhookAttempt(id(1), attempt('delivered'), null);
    expect((await store.get(id(1)))!.view.webhook).toMatchObject({ status: 'delivered', attempts: 1, started: { status: 'failed', attempts: 2 } });
    expect(await claimHooks()).toEqual([]);
  });

  it('gives up a started event waiting for its retry when the run ends: the final is handed off at once', async () => {
    await store.create(newRun(1));
    const run = await claimRun();
    const [s] = await claimHooks();
    await store.recordWebhookAttempt(id(1), attempt('retry'), 60_000, 'started');
    expect((await started(1))!.next_attempt_at).not.toBeNull();
    const done = await store.complete('w1', run, ok, { handOffWindowMs: VISIBILITY });
    expect(done.webhook).toMatchObject({ url: HOOK, notBeforeS: s!.timestampS! + 1, sealedSecret: null });
    expect(await started(1)).toMatchObject({ status: 'failed', attempts: 1, next_attempt_at: null });
    expect(await claimHooks()).toEqual([]); // handed off: hidden for the window, and no started event left
  });

  it('sends a started event whose first attempt is still to come before the final webhook, even after the run ended', async () => {
    await store.create(newRun(1));
    const run = await claimRun();
    const done = await store.complete('w1', run, ok, { handOffWindowMs: VISIBILITY });
    expect(done.webhook).toBeNull();
    const [first] = await claimHooks();
    expect(first).toMatchObject({ event: 'started', tries: 0 });
    await store.recordWebhookAttempt(id(1), attempt('delivered'), null, 'started');
    const [final] = await claimHooks();
    expect(final).toMatchObject({ event: 'completed', timestampS: first!.timestampS! + 1 });
    expect((await started(1))!.status).toBe('delivered');
  });

  it('gives up a started event whose sender died after the run ended, once its visibility window is over; its late record changes nothing', async () => {
    await store.create(newRun(1));
    const run = await claimRun();
    await claimHooks(200); // taken by a worker that then dies
    await store.complete('w1', run, ok);
    expect(await claimHooks()).toEqual([]);
    await new Promise((r) => setTimeout(r, 250));
    const [final] = await claimHooks();
    expect(final).toMatchObject({ event: 'completed' });
    expect(await started(1)).toMatchObject({ status: 'failed', attempts: 0 });
    // The dead worker's record arrives after all: counted, but no second final and no started retry.
    await store.recordWebhookAttempt(id(1), attempt('retry'), 0, 'started');
    expect(await started(1)).toMatchObject({ status: 'failed', attempts: 1 });
    expect(await client.zscore(store.queueKeys('default').webhooks, id(1))).not.toBeNull(); // still the final's, hidden
    expect(await claimHooks()).toEqual([]);
  });

  it('skips the started event of a run that ends before its app call began, or is cancelled before its first attempt', async () => {
    await store.create(newRun(1));
    await store.cancel(id(1));
    expect((await started(1))!.status).toBe('skipped');
    await store.create(newRun(2));
    await claimRun();
    await store.cancel(id(2));
    expect((await started(2))!.status).toBe('skipped');
    expect(await claimHooks()).toEqual([]);
    expect(await client.zcard(store.queueKeys('default').webhooks)).toBe(0);
  });

  it("hands the run's sealed X-Webhook-Secret to every delivery of its webhooks", async () => {
    await store.create(newRun(1, { webhookSecret: 'v1.sealed' }));
    const run = await claimRun();
    expect((await claimHooks())[0]!.sealedSecret).toBe('v1.sealed');
    await store.recordWebhookAttempt(id(1), attempt('delivered'), null, 'started');
    const done = await store.complete('w1', run, ok, { handOffWindowMs: VISIBILITY });
    expect(done.webhook!.sealedSecret).toBe('v1.sealed');
    expect(JSON.stringify((await store.get(id(1)))!.view)).not.toContain('sealed');
  });
});
