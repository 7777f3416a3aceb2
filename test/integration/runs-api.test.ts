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
  const ended = async (id: string, headers: Record<string, string> = OWNER) => {
    const res = await viaEnvoy('GET', `/v1/runs/${id}?wait=10`, headers);
    expect(res.status).toBe(200);
    return res.json();
  };

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
      ['GET', `/v1/runs/${id}/retry`, 'POST'],
      ['DELETE', '/v1/runs', 'GET'],
    ] as const) {
      const res = await viaEnvoy(method, path);
      expect(res.status).toBe(405);
      expect(res.headers['allow']).toBe(allow);
      expect(res.json().error.code).toBe('method_not_allowed');
    }
  });

  it('lists every run on the admin port, filtered by status, page by page', async () => {
    const ids = [await accept('/list'), await accept('/list'), await accept('/list')];
    for (const id of ids) await viaEnvoy('GET', `/v1/runs/${id}?wait=10`);
    const page1 = (await viaAdmin('GET', '/v1/runs?status=succeeded&limit=2')).json();
    expect(page1.runs).toHaveLength(2);
    expect(page1.runs.every((r: { status: string }) => r.status === 'succeeded')).toBe(true);
    const page2 = (await viaAdmin('GET', `/v1/runs?status=succeeded&limit=2&cursor=${page1.next_cursor}`)).json();
    const seen = [...page1.runs, ...page2.runs].map((r: { run_id: string }) => r.run_id);
    expect(new Set(seen).size).toBe(seen.length);
    expect((await viaAdmin('GET', '/v1/runs?status=bogus')).status).toBe(400);
  });

  it("lists the caller's own runs through Envoy, newest first, page by page, and no one else's", async () => {
    const carol = { authorization: `Bearer carol-${randomBytes(4).toString('hex')}` };
    const dave = { authorization: `Bearer dave-${randomBytes(4).toString('hex')}` };
    app.setHandler((req, res) => void res.writeHead(req.url.startsWith('/mine-fails') ? 500 : 200, { 'content-type': 'application/json' }).end('{}'));
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) mine.push(await accept(i === 2 ? '/mine-fails' : '/mine', '{}', carol));
    const theirs = [await accept('/theirs', '{}', dave), await accept('/anonymous', '{}', {})];
    for (const id of mine) await ended(id, carol);
    await ended(theirs[0]!, dave);
    await ended(theirs[1]!, {});

    const listed: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 5; page++) {
      const res = await viaEnvoy('GET', `/v1/runs?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, carol);
      expect(res.status).toBe(200);
      const body = res.json();
      expect(body.runs.length).toBeLessThanOrEqual(2);
      listed.push(...body.runs.map((r: { run_id: string }) => r.run_id));
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    expect(listed).toEqual([...mine].reverse()); // all of them, newest first, each once
    const failed = (await viaEnvoy('GET', '/v1/runs?status=failed', carol)).json();
    expect(failed.runs.map((r: { run_id: string }) => r.run_id)).toEqual([mine[2]]);
    expect((await viaEnvoy('GET', '/v1/runs', dave)).json().runs.map((r: { run_id: string }) => r.run_id)).toEqual([theirs[0]]);
    // Without the owner header: the runs created without one, only.
    const anonymous = (await viaEnvoy('GET', '/v1/runs', {})).json().runs.map((r: { run_id: string }) => r.run_id);
    expect(anonymous).toContain(theirs[1]);
    expect(anonymous.some((id: string) => mine.includes(id) || id === theirs[0])).toBe(false);
    // A cursor of another listing reads nothing of another owner.
    const admin = (await viaAdmin('GET', '/v1/runs?limit=500')).json().runs.map((r: { run_id: string }) => r.run_id);
    expect(admin).toEqual(expect.arrayContaining([...mine, ...theirs]));
    for (const [path, code] of [
      ['/v1/runs?status=bogus', 'invalid_status'],
      ['/v1/runs?limit=0', 'invalid_limit'],
      ['/v1/runs?cursor=nope', 'invalid_cursor'],
    ] as const) {
      const res = await viaEnvoy('GET', path, carol);
      expect([res.status, res.json().error.code]).toEqual([400, code]);
    }
  });

  it('retries a failed run: same id, the stored request again as a new attempt, its outcome kept', async () => {
    let calls = 0;
    app.setHandler((_req, res) => {
      calls++;
      res.writeHead(calls === 1 ? 500 : 200, { 'content-type': 'application/json' }).end(JSON.stringify({ call: calls }));
    });
    const hookPath = `/retried-${randomBytes(3).toString('hex')}`;
    const id = await accept(`/retry-me?x=1&webhookEndpoint=${encodeURIComponent(hooks.url + hookPath)}`, '{"n":42}');
    expect(await ended(id)).toMatchObject({ status: 'failed', error: { code: 'upstream_status' }, response: { status_code: 500 } });
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${id}`)).json().webhook.status === 'delivered' ? true : undefined));

    expect((await viaEnvoy('POST', `/v1/runs/${id}/retry`, { authorization: 'Bearer someone-else' })).status).toBe(404);
    const retried = await viaEnvoy('POST', `/v1/runs/${id}/retry`);
    expect(retried.status).toBe(202);
    expect(retried.json()).toMatchObject({ run_id: id, error: null, response: null, finished_at: null });
    expect(['queued', 'running', 'succeeded']).toContain(retried.json().status);
    const after = await ended(id);
    expect(after).toMatchObject({ status: 'succeeded', response: { status_code: 200 }, error: null, dispatch_attempts: 2 });
    expect(after.previous_outcomes).toEqual([
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
    // The app got the same request twice, as the client sent it (query without async and webhookEndpoint, headers, body).
    const seen = app.requests.filter((r) => r.url.startsWith('/retry-me'));
    expect(seen).toHaveLength(2);
    for (const r of seen) {
      expect(r.url).toBe('/retry-me?x=1');
      expect(r.body.toString()).toBe('{"n":42}');
      expect(r.headers.find(([k]) => k === 'x-async-run-id')?.[1]).toBe(id);
      expect(r.headers.find(([k]) => k === 'authorization')?.[1]).toBe(OWNER.authorization);
    }
    expect((await viaEnvoy('GET', `/v1/runs/${id}/result`)).body.toString()).toBe('{"call":2}');
    // The new outcome is delivered too, with the same webhook-id.
    const delivered = await eventually(() => {
      const got = hooks.requests.filter((r) => r.url.endsWith(hookPath));
      return got.length === 2 ? got : undefined;
    });
    expect(delivered.map((r) => r.headers['x-async-run-status'])).toEqual(['failed', 'succeeded']);
    expect(delivered[1]!.headers['webhook-id']).toBe(delivered[0]!.headers['webhook-id']);

    // Succeeded: nothing to retry.
    const again = await viaEnvoy('POST', `/v1/runs/${id}/retry`);
    expect([again.status, again.json().error.code]).toEqual([409, 'run_not_retryable']);
  });

  it('refuses to retry a queued, running or cancelled run, and retries on the admin port unscoped', async () => {
    app.setHandler(Upstream.hang());
    const running = await accept('/retry-running');
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${running}`)).json().status === 'running' ? true : undefined));
    const refused = await viaEnvoy('POST', `/v1/runs/${running}/retry`);
    expect([refused.status, refused.json().error.code]).toEqual([409, 'run_not_retryable']);
    await viaEnvoy('DELETE', `/v1/runs/${running}`);
    expect((await viaEnvoy('POST', `/v1/runs/${running}/retry`)).json().error.code).toBe('run_not_retryable');

    app.setHandler(Upstream.json(500, { no: true }));
    const failing = await accept('/retry-admin', '{}', { authorization: 'Bearer erin' });
    expect((await ended(failing, { authorization: 'Bearer erin' })).status).toBe('failed');
    app.setHandler(Upstream.json(200, { ok: true }));
    const res = await viaAdmin('POST', `/v1/runs/${failing}/retry`);
    expect(res.status).toBe(202);
    expect((await ended(failing, { authorization: 'Bearer erin' })).status).toBe('succeeded');
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
