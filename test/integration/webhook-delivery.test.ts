import { request } from '../support/http';
import { Webhook } from 'standardwebhooks';
import { describeEachEnvoy, type TestEnvoy } from '../support/envoys';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { WebhookReceiver, type ScriptedResponse } from '../support/webhook-receiver';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar } from '../support/sidecar';

const SECRET_OLD = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const SECRET_NEW = 'whsec_dGhpcyBpcyB0aGUgbmV3IHNlY3JldCBrZXkh';

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

describeEachEnvoy('webhook delivery that survives (docs/CONTRACT.md §4)', (factory) => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: TestEnvoy;
  let extprocPort: number;
  let sidecar: Sidecar | null = null;
  const receivers: WebhookReceiver[] = [];

  const BASE_ENV = () => ({
    EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
    REDIS_URL: redis.url,
    DISPATCH_URL: envoy.dispatchUrl,
    WEBHOOK_SECRET: `${SECRET_OLD} ${SECRET_NEW}`,
    WEBHOOK_RETRY_SCHEDULE: '0,100ms,100ms,100ms',
    WEBHOOK_TIMEOUT: '0.5',
  });

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start(Upstream.json(200, { answer: 42 }));
    extprocPort = await freePort();
    envoy = await factory.start({ async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` });
  });

  afterEach(async () => {
    await sidecar?.stop();
    sidecar = null;
    for (const r of receivers.splice(0)) await r.close();
  });

  afterAll(async () => {
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  async function receiver(responses: ScriptedResponse[] = []): Promise<WebhookReceiver> {
    const r = await WebhookReceiver.start({ responses });
    receivers.push(r);
    return r;
  }

  async function acceptWith(hookUrl: string): Promise<string> {
    const res = await request(`${envoy.url}/work?async=true&webhookEndpoint=${encodeURIComponent(hookUrl)}`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    const body = (await res.body.json()) as { run_id?: string; error?: unknown };
    if (res.statusCode !== 202) throw new Error(`expected 202, got ${res.statusCode} ${JSON.stringify(body)}`);
    return body.run_id!;
  }

  async function webhookOf(id: string, until: (w: any) => boolean): Promise<any> {
    const admin = `http://127.0.0.1:${sidecar!.adminPort}`;
    return eventually(
      async () => {
        const v = (await (await request(`${admin}/v1/runs/${id}`)).body.json()) as any;
        return until(v.webhook) ? v.webhook : undefined;
      },
      10_000,
      `webhook of ${id}`,
    );
  }

  it('retries 5xx until delivered, with one webhook-id, signed with every secret', async () => {
    sidecar = await startTestSidecar(BASE_ENV());
    const rx = await receiver([500, 503, 200]);
    const id = await acceptWith(rx.url);
    const webhook = await webhookOf(id, (w) => w.status === 'delivered');
    expect(webhook.attempts).toBe(3);
    expect(webhook.history.map((h: any) => [h.outcome, h.status_code])).toEqual([
      ['retry', 500],
      ['retry', 503],
      ['delivered', 200],
    ]);
    expect(new Set(rx.requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
    const last = rx.requests.at(-1)!;
    expect(last.headers['webhook-signature']!.split(' ')).toHaveLength(2);
    for (const secret of [SECRET_OLD, SECRET_NEW]) {
      expect(() => new Webhook(secret).verify(last.body.toString(), last.headers)).not.toThrow();
    }
    expect(JSON.parse(last.body.toString())).toEqual({ answer: 42 });
  });

  it('ends a delivery as failed on 410 without retrying', async () => {
    sidecar = await startTestSidecar(BASE_ENV());
    const rx = await receiver([410]);
    const id = await acceptWith(rx.url);
    const webhook = await webhookOf(id, (w) => w.status === 'failed');
    expect(webhook).toMatchObject({ attempts: 1, last_status_code: 410 });
    await new Promise((r) => setTimeout(r, 400));
    expect(rx.requests).toHaveLength(1);
  });

  it('never follows a redirect', async () => {
    sidecar = await startTestSidecar(BASE_ENV());
    const target = await receiver();
    const rx = await receiver([{ status: 301, headers: { location: target.url } }]);
    const id = await acceptWith(rx.url);
    expect(await webhookOf(id, (w) => w.status === 'failed')).toMatchObject({ attempts: 1, last_status_code: 301 });
    expect(target.requests).toHaveLength(0);
  });

  it('retries a receiver that never answers, after WEBHOOK_TIMEOUT', async () => {
    sidecar = await startTestSidecar(BASE_ENV());
    const rx = await receiver([{ status: 200, hang: true }, 200]);
    const id = await acceptWith(rx.url);
    const webhook = await webhookOf(id, (w) => w.status === 'delivered');
    expect(webhook.history[0]).toMatchObject({ outcome: 'retry', error: 'timeout', status_code: null });
    expect(webhook.history[0].duration_ms).toBeGreaterThanOrEqual(450);
  });

  it('honours Retry-After on 429', async () => {
    sidecar = await startTestSidecar(BASE_ENV());
    const rx = await receiver([{ status: 429, headers: { 'retry-after': '1' } }, 200]);
    const id = await acceptWith(rx.url);
    await webhookOf(id, (w) => w.status === 'delivered');
    const [a, b] = rx.requests;
    expect(b!.receivedAt - a!.receivedAt).toBeGreaterThanOrEqual(950);
  });

  it('refuses a host name that resolves to loopback when private networks are not allowed', async () => {
    sidecar = await startTestSidecar({ ...BASE_ENV(), WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false' });
    const rx = await receiver();
    // A literal loopback address is refused when the run is created...
    const literal = await request(`${envoy.url}/work?async=true&webhookEndpoint=${encodeURIComponent(rx.url)}`, { method: 'POST', body: '{}' });
    expect(literal.statusCode).toBe(400);
    expect(((await literal.body.json()) as any).error.code).toBe('webhook_endpoint_not_allowed');
    // ...and a name is resolved and refused at delivery time.
    const id = await acceptWith(rx.url.replace('127.0.0.1', 'localhost'));
    expect(await webhookOf(id, (w) => w.status === 'failed')).toMatchObject({ attempts: 1, history: [{ error: 'blocked_address' }] });
    expect(rx.requests).toHaveLength(0);
  });

  it('opens a host deliberately with WEBHOOK_ALLOWED_HOSTS', async () => {
    sidecar = await startTestSidecar({ ...BASE_ENV(), WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false', WEBHOOK_ALLOWED_HOSTS: 'localhost' });
    const rx = await receiver();
    const id = await acceptWith(rx.url.replace('127.0.0.1', 'localhost'));
    await webhookOf(id, (w) => w.status === 'delivered');
    expect(rx.requests).toHaveLength(1);
  });

  it('keeps a pending retry across a restart of the process', async () => {
    sidecar = await startTestSidecar({ ...BASE_ENV(), WEBHOOK_RETRY_SCHEDULE: '0,1s' });
    const rx = await receiver([503, 200]);
    const id = await acceptWith(rx.url);
    await webhookOf(id, (w) => w.attempts === 1 && w.status === 'pending');
    await sidecar.stop();
    sidecar = await startTestSidecar({ ...BASE_ENV(), WEBHOOK_RETRY_SCHEDULE: '0,1s' });
    const webhook = await webhookOf(id, (w) => w.status === 'delivered');
    expect(webhook.attempts).toBe(2);
    expect(rx.requests.map((r) => r.headers['webhook-id'])).toEqual([rx.requests[0]!.headers['webhook-id'], rx.requests[0]!.headers['webhook-id']]);
  });

  it('sends a JSON envelope with the result URL when the body is over the webhook limit', async () => {
    sidecar = await startTestSidecar({ ...BASE_ENV(), WEBHOOK_MAX_BODY_BYTES: '10', PUBLIC_BASE_URL: 'https://api.example.com' });
    const rx = await receiver();
    const id = await acceptWith(rx.url);
    await webhookOf(id, (w) => w.status === 'delivered');
    const got = rx.requests[0]!;
    expect(got.headers['content-type']).toBe('application/json');
    expect(JSON.parse(got.body.toString())).toMatchObject({
      run_id: id,
      status: 'succeeded',
      upstream_status: 200,
      truncated: true,
      result_url: `https://api.example.com/v1/runs/${id}/result`,
    });
  });
});
