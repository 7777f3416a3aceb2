import { randomBytes } from 'node:crypto';
import { request } from '../support/http';
import { asRealEnvoy, asStandIn, describeEachEnvoy, type TestEnvoy } from '../support/envoys';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar } from '../support/sidecar';

const OWNER = { authorization: 'Bearer owner-1' };
const ADMIN_TOKEN = 'admin-secret';

describeEachEnvoy('runs API (docs/CONTRACT.md §5)', (factory) => {
  let redis: RedisServer;
  let app: Upstream;
  let hooks: WebhookReceiver;
  let envoy: TestEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  let admin: string;

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start();
    hooks = await WebhookReceiver.start();
    const extprocPort = await freePort();
    envoy = await factory.start({ async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      DISPATCH_CONCURRENCY: '2',
      ADMIN_TOKEN,
      RUN_TTL: '5',
    });
    admin = `http://127.0.0.1:${sidecar.adminPort}`;
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  });

  afterEach(() => app.setHandler(Upstream.json(200, { ok: true })));

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await hooks?.close();
    await app?.close();
    await redis?.destroy();
  });

  type Res = { status: number; headers: Record<string, unknown>; body: Buffer; json: () => any };
  async function call(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Res> {
    const res = await request(base + path, { method: method as 'GET', headers, body });
    const buf = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, body: buf, json: () => JSON.parse(buf.toString()) };
  }
  const viaEnvoy = (method: string, path: string, headers: Record<string, string> = OWNER, body?: string) => call(envoy.url, method, path, headers, body);
  const viaAdmin = (method: string, path: string) => call(admin, method, path, { authorization: `Bearer ${ADMIN_TOKEN}` });

  async function accept(path = '/work', body = '{}', headers: Record<string, string> = OWNER): Promise<string> {
    const res = await viaEnvoy(
      'POST',
      path.includes('?') ? `${path}&async=true` : `${path}?async=true`,
      { 'content-type': 'application/json', ...headers },
      body,
    );
    expect(res.status).toBe(202);
    return res.json().run_id;
  }

  it('shows a run through Envoy and on the admin port with the documented fields', async () => {
    const id = await accept('/status-check');
    const waited = await viaEnvoy('GET', `/v1/runs/${id}?wait=10`);
    expect(waited.status).toBe(200);
    const view = waited.json();
    expect(view).toMatchObject({
      run_id: id,
      status: 'succeeded',
      request: { method: 'POST', path: '/status-check' },
      response: { status_code: 200, content_type: 'application/json', size: 11 },
      error: null,
      webhook: { status: 'none', attempts: 0, last_status_code: null, next_attempt_at: null },
    });
    for (const f of ['created_at', 'started_at', 'finished_at']) expect(new Date(view[f]).toISOString()).toBe(view[f]);
    expect((await viaAdmin('GET', `/v1/runs/${id}`)).json()).toEqual(view);
  });

  it('answers 404 alike for another owner, a missing owner, an unknown id and a non-UUID', async () => {
    const id = await accept();
    const answers = await Promise.all([
      viaEnvoy('GET', `/v1/runs/${id}`, { authorization: 'Bearer someone-else' }),
      viaEnvoy('GET', `/v1/runs/${id}`, {}),
      viaEnvoy('GET', '/v1/runs/6c1d2a8e-0f5e-4a8e-9c43-5d7c2f1b9e00'),
      viaEnvoy('GET', '/v1/runs/not-a-uuid'),
      viaEnvoy('DELETE', `/v1/runs/${id}`, { authorization: 'Bearer someone-else' }),
      viaEnvoy('GET', `/v1/runs/${id}/result`, { authorization: 'Bearer someone-else' }),
    ]);
    for (const a of answers) {
      expect(a.status).toBe(404);
      expect(a.body.toString()).toBe(answers[0]!.body.toString());
    }
  });

  it('holds ?wait=N through Envoy past its message timeout, and is woken early when the run ends', async () => {
    let release: (() => void) | undefined;
    app.setHandler((_req, res) => {
      release = () => res.writeHead(200, { 'content-type': 'text/plain' }).end('late');
    });
    const id = await accept('/waits');
    await eventually(() => (release ? true : undefined));
    const real = asRealEnvoy(envoy);
    const timeouts = await real?.stat('http.ingress_http.ext_proc.message_timeouts');
    const overrides = await real?.stat('http.ingress_http.ext_proc.override_message_timeout_received');
    const applied = asStandIn(envoy)?.stats.overrideTimeoutsApplied;
    const t0 = Date.now();
    // Twice Envoy's 2 s message_timeout: only the sidecar's override_message_timeout keeps the
    // stream open (without it, Envoy answers 504 at 2 s).
    setTimeout(() => release!(), 4000);
    const res = await viaEnvoy('GET', `/v1/runs/${id}?wait=20`);
    expect(res.status).toBe(200);
    expect(res.json().status).toBe('succeeded');
    // Woken by the run's end, not by the end of its 20 s wait.
    expect(Date.now() - t0).toBeLessThan(20_000);
    if (real) {
      expect(await real.stat('http.ingress_http.ext_proc.message_timeouts')).toBe(timeouts);
      expect(await real.stat('http.ingress_http.ext_proc.override_message_timeout_received')).toBeGreaterThan(overrides!);
    }
    const standIn = asStandIn(envoy);
    if (standIn) expect(standIn.stats.overrideTimeoutsApplied).toBeGreaterThan(applied!);
  }, 30_000);

  it('is woken by a cancel, and cancel aborts the running upstream call', async () => {
    app.setHandler(Upstream.hang());
    const aborted = app.aborted.length;
    const id = await accept('/cancel-running');
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${id}`)).json().status === 'running' ? true : undefined));
    const waiting = viaEnvoy('GET', `/v1/runs/${id}?wait=30`);
    await new Promise((r) => setTimeout(r, 200));
    const cancel = await viaEnvoy('DELETE', `/v1/runs/${id}`);
    expect(cancel.status).toBe(200);
    expect(cancel.json().status).toBe('cancelled');
    expect((await waiting).json().status).toBe('cancelled');
    await app.waitForAborted(aborted + 1, 2000); // within a second or so, on whichever replica
    const again = await viaEnvoy('DELETE', `/v1/runs/${id}`);
    expect(again.status).toBe(409);
    expect(again.json().error.code).toBe('run_already_finished');
  });

  it('cancels a queued run so that it never starts', async () => {
    app.setHandler(Upstream.hang());
    const busy = [await accept('/busy'), await accept('/busy')]; // DISPATCH_CONCURRENCY=2
    await eventually(async () => ((await viaAdmin('GET', '/v1/runs?status=running')).json().runs.length >= 2 ? true : undefined));
    const queued = await accept('/never-starts');
    expect((await viaEnvoy('GET', `/v1/runs/${queued}`)).json().status).toBe('queued');
    expect((await viaEnvoy('DELETE', `/v1/runs/${queued}`)).json().status).toBe('cancelled');
    for (const id of busy) await viaEnvoy('DELETE', `/v1/runs/${id}`);
    await new Promise((r) => setTimeout(r, 300));
    expect(app.requests.some((r) => r.url === '/never-starts')).toBe(false);
  });

  it('replays a large binary result with its status and content type; 202 while unfinished', async () => {
    const blob = randomBytes(3 * 1024 * 1024);
    let release: (() => void) | undefined;
    app.setHandler((_req, res) => {
      release = () => res.writeHead(207, { 'content-type': 'application/x-blob' }).end(blob);
    });
    const id = await accept('/blob');
    await eventually(() => (release ? true : undefined));
    const early = await viaEnvoy('GET', `/v1/runs/${id}/result`);
    expect(early.status).toBe(202);
    expect(early.json().status).toBe('running');
    release!();
    await viaEnvoy('GET', `/v1/runs/${id}?wait=10`);
    const res = await viaEnvoy('GET', `/v1/runs/${id}/result`);
    expect(res.status).toBe(207);
    expect(res.headers['content-type']).toBe('application/x-blob');
    expect(res.body.equals(blob)).toBe(true);
    const onAdmin = await viaAdmin('GET', `/v1/runs/${id}/result`);
    expect(onAdmin.body.equals(blob)).toBe(true);
  });

  it('redelivers a webhook on demand with the same webhook-id', async () => {
    const id = await accept(`/hooked?webhookEndpoint=${encodeURIComponent(hooks.url + '/redeliver')}`);
    const first = await eventually(() => hooks.requests.find((r) => r.url.endsWith('/redeliver')));
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${id}`)).json().webhook.status === 'delivered' ? true : undefined));
    const res = await viaEnvoy('POST', `/v1/runs/${id}/webhook`);
    expect(res.status).toBe(202);
    await eventually(() => (hooks.requests.filter((r) => r.url.endsWith('/redeliver')).length === 2 ? true : undefined));
    const [a, b] = hooks.requests.filter((r) => r.url.endsWith('/redeliver'));
    expect(String(b!.headers['webhook-id'])).toBe(String(a!.headers['webhook-id']));
    expect(first).toBeDefined();
    const noHook = await accept('/no-hook');
    await viaEnvoy('GET', `/v1/runs/${noHook}?wait=10`);
    expect((await viaEnvoy('POST', `/v1/runs/${noHook}/webhook`)).json().error.code).toBe('no_webhook');
  });

  it('answers 405 with Allow for other methods', async () => {
    const id = await accept();
    for (const [method, path, allow] of [
      ['PUT', `/v1/runs/${id}`, 'GET, DELETE'],
      ['POST', `/v1/runs/${id}/result`, 'GET'],
      ['GET', `/v1/runs/${id}/webhook`, 'POST'],
    ] as const) {
      const res = await viaEnvoy(method, path);
      expect(res.status).toBe(405);
      expect(res.headers['allow']).toBe(allow);
      expect(res.json().error.code).toBe('method_not_allowed');
    }
  });

  it('lists runs on the admin port only, filtered by status, page by page', async () => {
    const ids = [await accept('/list'), await accept('/list'), await accept('/list')];
    for (const id of ids) await viaEnvoy('GET', `/v1/runs/${id}?wait=10`);
    const page1 = (await viaAdmin('GET', '/v1/runs?status=succeeded&limit=2')).json();
    expect(page1.runs).toHaveLength(2);
    expect(page1.runs.every((r: { status: string }) => r.status === 'succeeded')).toBe(true);
    const page2 = (await viaAdmin('GET', `/v1/runs?status=succeeded&limit=2&cursor=${page1.next_cursor}`)).json();
    const seen = [...page1.runs, ...page2.runs].map((r: { run_id: string }) => r.run_id);
    expect(new Set(seen).size).toBe(seen.length);
    expect((await viaEnvoy('GET', '/v1/runs')).status).toBe(404);
    expect((await viaAdmin('GET', '/v1/runs?status=bogus')).status).toBe(400);
  });

  it('requires ADMIN_TOKEN on the admin runs API', async () => {
    const id = await accept();
    expect((await call(admin, 'GET', `/v1/runs/${id}`)).status).toBe(401);
    expect((await call(admin, 'GET', `/v1/runs/${id}`, { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await call(admin, 'GET', '/healthz')).status).toBe(200);
  });

  it('expires a run RUN_TTL after it ends', async () => {
    const id = await accept('/ttl');
    expect((await viaEnvoy('GET', `/v1/runs/${id}?wait=10`)).json().status).toBe('succeeded');
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${id}`)).status === 404 ? true : undefined), 9000, 'expiry');
  });
});
