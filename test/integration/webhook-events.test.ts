/**
 * Webhook events (README "Webhook events"): `webhookEvents=started,completed` through the real
 * Envoy. The `started` event comes when the app call begins, signed and retried like the final
 * webhook with its own stable webhook-id; the final one is always the later, in arrival and in
 * webhook-timestamp, and a failing started event holds it back at most one attempt.
 */
import { Webhook } from 'standardwebhooks';
import { request } from '../support/http';
import { freePort } from '../support/ports';
import { describeWithEnvoy, RealEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream } from '../support/upstream';
import { WebhookReceiver, type ReceivedRequest, type ScriptedResponse } from '../support/webhook-receiver';

jest.setTimeout(60_000);

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
const isStarted = (r: ReceivedRequest) => r.headers['x-async-webhook-event'] === 'started';
const timestamp = (r: ReceivedRequest) => Number(r.headers['webhook-timestamp']);

describeWithEnvoy('webhook events (webhookEvents=started,completed), through the real Envoy', () => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: RealEnvoy;
  let extprocPort: number;
  let sidecar: Sidecar | null = null;
  let rx: WebhookReceiver | null = null;
  let release: () => void = () => undefined;

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start();
    extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
  });

  afterEach(async () => {
    release();
    await sidecar?.stop();
    sidecar = null;
    await rx?.close();
    rx = null;
    app.setHandler(Upstream.json(200, { ok: true }));
  });

  afterAll(async () => {
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  async function start(env: Record<string, string> = {}): Promise<void> {
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      WEBHOOK_SECRET: SECRET,
      WEBHOOK_RETRY_SCHEDULE: '0,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms',
      ...env,
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  }

  function appWaitsForRelease(): void {
    const gate = new Promise<void>((r) => (release = r));
    app.setHandler(async (_req, res) => {
      await gate;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"answer":42}');
    });
  }

  async function accept(events = 'started,completed'): Promise<string> {
    const res = await request(`${envoy.url}/predict?async=true&webhookEvents=${events}&webhookEndpoint=${encodeURIComponent(rx!.url)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"q":1}',
    });
    expect(res.statusCode).toBe(202);
    return ((await res.body.json()) as { run_id: string }).run_id;
  }

  const runOf = async (id: string) => (await (await request(`${envoy.url}/v1/runs/${id}`)).body.json()) as any;
  const verify = (r: ReceivedRequest) => new Webhook(SECRET).verify(r.body.toString(), r.headers);

  it('sends the started event while the app works, then the final webhook, each signed with its own stable webhook-id', async () => {
    await start();
    rx = await WebhookReceiver.start();
    appWaitsForRelease();
    const id = await accept();
    const [s] = await rx.waitForRequests(1);
    expect(isStarted(s!)).toBe(true);
    expect(s!.headers['webhook-id']).toBe(`msg_${id.replace(/-/g, '')}_started`);
    expect(s!.headers['x-async-run-id']).toBe(id);
    expect(s!.headers['x-async-run-status']).toBe('running');
    expect(s!.headers['content-type']).toBe('application/json');
    expect(() => verify(s!)).not.toThrow();
    const running = await runOf(id);
    const body = JSON.parse(s!.body.toString()) as Record<string, string>;
    expect(body).toEqual({ event: 'started', run_id: id, status: 'running', started_at: running.started_at });
    expect(running.status).toBe('running');
    // The attempt is recorded just after the receiver answered (with the next write to Redis), not before.
    const recorded = await eventually(
      async () => {
        const r = await runOf(id);
        return r.webhook.started?.status === 'delivered' ? r : undefined;
      },
      5000,
      'the started event recorded',
    );
    expect(recorded.status).toBe('running');
    expect(recorded.webhook.started).toMatchObject({ status: 'delivered', attempts: 1, last_status_code: 200 });
    release();
    const [, f] = await rx.waitForRequests(2);
    expect(f!.headers['x-async-webhook-event']).toBe('completed');
    expect(f!.headers['webhook-id']).toBe(`msg_${id.replace(/-/g, '')}`);
    expect(f!.body.toString()).toBe('{"answer":42}');
    expect(() => verify(f!)).not.toThrow();
    expect(timestamp(f!)).toBeGreaterThan(timestamp(s!));
    const done = await eventually(async () => {
      const r = await runOf(id);
      return r.webhook.status === 'delivered' ? r : undefined;
    });
    expect(done.webhook.started.status).toBe('delivered');
  });

  it('keeps the order for a run faster than the started event: started first, the final one later in arrival and timestamp', async () => {
    await start();
    rx = await WebhookReceiver.start();
    for (let i = 0; i < 5; i++) await accept();
    const got = await rx.waitForRequests(10);
    const byRun = new Map<string, ReceivedRequest[]>();
    for (const r of got) byRun.set(r.headers['x-async-run-id']!, [...(byRun.get(r.headers['x-async-run-id']!) ?? []), r]);
    expect(byRun.size).toBe(5);
    for (const [, [first, second]] of byRun) {
      expect([first!.headers['x-async-webhook-event'], second!.headers['x-async-webhook-event']]).toEqual(['started', 'completed']);
      expect(timestamp(second!)).toBeGreaterThan(timestamp(first!));
    }
  });

  it('retries a failing started event while the app works, gives it up when the run ends, and sends the final webhook at once', async () => {
    await start({ WEBHOOK_TIMEOUT: '2' });
    rx = await WebhookReceiver.start({ respond: (r) => (isStarted(r) ? 500 : undefined) });
    appWaitsForRelease();
    const id = await accept();
    await rx.waitForRequests(3); // the first attempt and two retries, 300 ms apart
    expect(rx.requests.every(isStarted)).toBe(true);
    release();
    const final = await eventually(() => rx!.requests.find((r) => !isStarted(r)), 10_000, 'the final webhook');
    const run = await eventually(async () => {
      const r = await runOf(id);
      return r.webhook.status === 'delivered' ? r : undefined;
    });
    // At most the one started attempt in flight at the end held it back (WEBHOOK_TIMEOUT 2 s; it answers at once).
    expect(final.receivedAt - Date.parse(run.finished_at)).toBeLessThan(2000);
    await new Promise((r) => setTimeout(r, 1000));
    const last = rx.requests.indexOf(final);
    expect(rx.requests.slice(last + 1)).toEqual([]); // nothing after the final webhook
    expect(rx.requests.slice(0, last).every(isStarted)).toBe(true);
    expect(run.webhook.started).toMatchObject({ status: 'failed', last_status_code: 500 });
    expect(run.webhook.started.attempts).toBe(last);
  });

  it('holds the final webhook back for one started attempt in flight only: a started receiver that hangs costs WEBHOOK_TIMEOUT', async () => {
    await start({ WEBHOOK_TIMEOUT: '1' });
    rx = await WebhookReceiver.start({ respond: (r): ScriptedResponse | undefined => (isStarted(r) ? { status: 200, hang: true } : undefined) });
    const id = await accept();
    const final = await eventually(() => rx!.requests.find((r) => !isStarted(r)), 10_000, 'the final webhook');
    const started = rx.requests.filter(isStarted);
    expect(started).toHaveLength(1);
    const held = final.receivedAt - started[0]!.receivedAt;
    expect(held).toBeGreaterThanOrEqual(900);
    expect(held).toBeLessThan(3000);
    await new Promise((r) => setTimeout(r, 700));
    expect(rx.requests.filter(isStarted)).toHaveLength(1);
    const run = await runOf(id);
    expect(run.webhook.started).toMatchObject({ status: 'failed', attempts: 1, history: [{ error: 'timeout', outcome: 'retry' }] });
  });

  it('refuses webhookEvents that leave out completed, name other events, or come without a webhookEndpoint', async () => {
    await start();
    rx = await WebhookReceiver.start();
    const hook = encodeURIComponent(rx.url);
    for (const q of [
      `webhookEvents=started&webhookEndpoint=${hook}`,
      `webhookEvents=logs,completed&webhookEndpoint=${hook}`,
      'webhookEvents=started,completed',
    ]) {
      const res = await request(`${envoy.url}/predict?async=true&${q}`, { method: 'POST', body: '{}' });
      expect([q, res.statusCode, ((await res.body.json()) as { error: { code: string } }).error.code]).toEqual([q, 400, 'invalid_webhook_events']);
    }
  });
});
