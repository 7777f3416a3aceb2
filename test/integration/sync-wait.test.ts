/**
 * Sync if fast (README "Sync if fast"): `Prefer: wait=N` on an async request, through the real
 * Envoy on the shipped envoy/envoy.yaml. A run that ends within the wait is answered with the
 * app's own response (past Envoy's 2 s message timeout, through override_message_timeout), a
 * slower one with the 202 at the end of the wait; results an ImmediateResponse cannot carry, or
 * that were truncated, fall back to the 202.
 */
import { request } from '../support/http';
import { freePort } from '../support/ports';
import { describeWithEnvoy, RealEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';

jest.setTimeout(60_000);

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describeWithEnvoy('sync if fast: Prefer: wait=N, through the real Envoy', () => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: RealEnvoy;
  let extprocPort: number;
  let sidecar: Sidecar | null = null;
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
    app.setHandler(Upstream.json(200, { ok: true }));
  });

  afterAll(async () => {
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  async function start(env: Record<string, string> = {}): Promise<Sidecar> {
    sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: envoy.dispatchUrl, ...env });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
    return sidecar;
  }

  /** The app holds its answer until release() (or the test ends). */
  function appWaitsForRelease(answer: (req: RecordedRequest) => { status: number; headers: Record<string, string>; body: string }): void {
    const gate = new Promise<void>((r) => (release = r));
    app.setHandler(async (req, res) => {
      await gate;
      const a = answer(req);
      res.writeHead(a.status, a.headers).end(a.body);
    });
  }

  async function post(path: string, headers: Record<string, string>, body = '{"q":1}') {
    const started = Date.now();
    const res = await request(`${envoy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()), ms: Date.now() - started };
  }

  const replayOf = (id: string) =>
    eventually(() => app.requests.find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id)), 20_000, `replay of ${id}`);

  it("answers with the app's own response when the run ends in time: status, headers, repeated set-cookie, body", async () => {
    await start();
    const rx = await WebhookReceiver.start();
    try {
      app.setHandler((req, res) => {
        res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
        res.writeHead(201, { 'content-type': 'application/json; charset=utf-8', 'x-app-header': 'kept', etag: '"v1"' }).end('{"created":true}');
      });
      const res = await post(`/predict?async=true&webhookEndpoint=${encodeURIComponent(rx.url)}`, { prefer: 'wait=10', authorization: 'Bearer a' });
      expect(res.status).toBe(201);
      expect(res.body.toString()).toBe('{"created":true}');
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(res.headers['x-app-header']).toBe('kept');
      expect(res.headers.etag).toBe('"v1"');
      expect(res.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
      expect(res.headers['preference-applied']).toBe('wait=10');
      expect(res.headers['x-async-run-status']).toBe('succeeded');
      const id = String(res.headers['x-async-run-id']);
      expect(id).toMatch(UUID);
      // The app got the request it would have had synchronously: no wait token, no trigger.
      const replay = await replayOf(id);
      expect(replay.url).toBe('/predict');
      expect(replay.headers.find(([k]) => k === 'prefer')).toBeUndefined();
      // The same run as with a 202: it can be looked up, and its webhook is sent.
      const run = (await (await request(`${envoy.url}/v1/runs/${id}`, { headers: { authorization: 'Bearer a' } })).body.json()) as any;
      expect(run).toMatchObject({ run_id: id, status: 'succeeded', response: { status_code: 201 } });
      const [hook] = await rx.waitForRequests(1);
      expect(hook!.headers['x-async-run-id']).toBe(id);
      expect(hook!.body.toString()).toBe('{"created":true}');
    } finally {
      await rx.close();
    }
  });

  it('passes an app error through as the app sent it, with Prefer: respond-async, wait=N as the trigger', async () => {
    await start();
    app.setHandler((_req, res) => void res.writeHead(422, { 'content-type': 'text/plain' }).end('bad input'));
    const res = await post('/predict', { prefer: 'respond-async, wait=5' });
    expect([res.status, res.body.toString(), res.headers['content-type']]).toEqual([422, 'bad input', 'text/plain']);
    expect(res.headers['x-async-run-status']).toBe('failed');
    expect(res.headers['preference-applied']).toBe('wait=5');
  });

  it("holds the request past Envoy's 2 s message timeout while the app works", async () => {
    await start();
    appWaitsForRelease(() => ({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"slow":true}' }));
    const before = app.requests.length;
    const pending = post('/predict?async=1', { prefer: 'wait=15' });
    await eventually(() => (app.requests.length > before ? true : undefined), 10_000, 'the app call');
    await new Promise((r) => setTimeout(r, 3000));
    release();
    const res = await pending;
    expect([res.status, res.body.toString()]).toEqual([200, '{"slow":true}']);
    expect(res.ms).toBeGreaterThan(3000);
  });

  it('answers the usual 202 at the end of the wait when the run takes longer, saying where it stands', async () => {
    await start();
    appWaitsForRelease(() => ({ status: 200, headers: {}, body: 'late' }));
    const res = await post('/predict?async=true', { prefer: 'wait=1' });
    expect(res.status).toBe(202);
    expect(res.ms).toBeGreaterThanOrEqual(950);
    expect(res.ms).toBeLessThan(5000); // not the 2 s margin on top, and far from 15 s
    expect(res.headers['preference-applied']).toBe('wait=1');
    expect(res.headers['x-async-run-status']).toBe('running');
    const { run_id: id } = JSON.parse(res.body.toString()) as { run_id: string };
    expect(res.headers.location).toBe(`/v1/runs/${id}`);
    release();
    const done = await request(`${envoy.url}/v1/runs/${id}?wait=10`);
    expect(((await done.body.json()) as { status: string }).status).toBe('succeeded');
  });

  it('names respond-async and the wait in preference-applied when Prefer triggered the run and the wait ran out', async () => {
    await start();
    appWaitsForRelease(() => ({ status: 200, headers: {}, body: 'late' }));
    const res = await post('/predict', { prefer: 'respond-async, wait=1' });
    expect(res.status).toBe(202);
    expect(res.headers['preference-applied']).toBe('respond-async, wait=1');
  });

  it('caps the wait at MAX_SYNC_WAIT and refuses a wait that is not whole seconds', async () => {
    await start({ MAX_SYNC_WAIT: '2' });
    const fast = await post('/predict?async=true', { prefer: 'wait=600' });
    expect([fast.status, fast.headers['preference-applied']]).toEqual([200, 'wait=2']);
    const bare = await post('/predict?async=true', { prefer: 'wait' }); // Replicate's form: the cap
    expect([bare.status, bare.headers['preference-applied']]).toEqual([200, 'wait=2']);
    appWaitsForRelease(() => ({ status: 200, headers: {}, body: 'late' }));
    const capped = await post('/predict?async=true', { prefer: 'wait=600' });
    expect([capped.status, capped.headers['preference-applied']]).toEqual([202, 'wait=2']);
    expect(capped.ms).toBeLessThan(6000);
    release();
    for (const bad of ['wait=abc', 'wait=1.5', 'wait=-1']) {
      const res = await post('/predict?async=true', { prefer: bad });
      expect([bad, res.status, (JSON.parse(res.body.toString()) as { error: { code: string } }).error.code]).toEqual([bad, 400, 'invalid_wait']);
    }
  });

  it('ignores Prefer: wait with MAX_SYNC_WAIT=0: the 202 at once', async () => {
    await start({ MAX_SYNC_WAIT: '0' });
    appWaitsForRelease(() => ({ status: 200, headers: {}, body: 'late' }));
    const res = await post('/predict?async=true', { prefer: 'wait=abc, wait=30' });
    expect(res.status).toBe(202);
    expect(res.headers['preference-applied']).toBeUndefined();
    expect(res.ms).toBeLessThan(1500);
  });

  it('answers 202 for a result larger than an ImmediateResponse carries here (MAX_BODY_BYTES) or truncated at MAX_RESULT_BYTES', async () => {
    await start({ MAX_BODY_BYTES: '65536', EXTPROC_BUFFER_BUDGET_BYTES: '65536', MAX_RESULT_BYTES: '100000' });
    app.setHandler((req, res) => {
      const size = req.url.includes('big') ? 70_000 : 120_000;
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(size, 7));
    });
    const big = await post('/big?async=true', { prefer: 'wait=10' });
    expect([big.status, big.headers['x-async-run-status']]).toEqual([202, 'succeeded']);
    const cut = await post('/cut?async=true', { prefer: 'wait=10' });
    expect([cut.status, cut.headers['x-async-run-status']]).toEqual([202, 'succeeded']);
    const { run_id: id } = JSON.parse(cut.body.toString()) as { run_id: string };
    const run = (await (await request(`${envoy.url}/v1/runs/${id}`)).body.json()) as any;
    expect(run.response).toMatchObject({ size: 120_000, truncated: true });
    expect(sidecar!.metrics.registry.getSingleMetric('eas_sync_waits_total')).toBeDefined();
    const counts = Object.fromEntries(
      (await sidecar!.metrics.registry.getSingleMetricAsString('eas_sync_waits_total'))
        .split('\n')
        .filter((l) => l.startsWith('eas_sync_waits_total{'))
        .map((l) => [/outcome="([a-z_]+)"/.exec(l)![1], Number(l.split(' ')[1])]),
    );
    expect(counts).toEqual({ too_large: 1, truncated: 1 });
  });

  it('carries a 10 MiB result (MAX_BODY_BYTES, the default) through the ImmediateResponse whole', async () => {
    await start();
    const size = 10 * 1024 * 1024;
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = (i * 31 + (i >> 8)) & 0xff;
    app.setHandler((_req, res) => void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(payload));
    const res = await post('/big?async=true', { prefer: 'wait=30' });
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(size);
    expect(res.body.equals(payload)).toBe(true);
  });

  it('answers every held request with its 202 at once when the replica starts shutting down', async () => {
    await start({ SHUTDOWN_GRACE: '1' });
    appWaitsForRelease(() => ({ status: 200, headers: {}, body: 'late' }));
    const before = app.requests.length;
    const pending = post('/predict?async=true', { prefer: 'wait=30' });
    await eventually(() => (app.requests.length > before ? true : undefined), 10_000, 'the app call');
    const stopAt = Date.now();
    const stopped = sidecar!.stop();
    const res = await pending;
    expect(res.status).toBe(202);
    expect(Date.now() - stopAt).toBeLessThan(1000);
    await stopped;
    sidecar = null;
  });
});
