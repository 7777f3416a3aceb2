import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { networkInterfaces } from 'node:os';
import { Redis } from 'ioredis';
import { request } from '../support/http';
import { Webhook } from 'standardwebhooks';
import { asRealEnvoy, describeEachEnvoy, type TestEnvoy } from '../support/envoys';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';
import { freePort } from '../support/ports';
import { postHeadersOnly } from '../support/headers-only';
import { eventually, startTestSidecar } from '../support/sidecar';
import { queueTag } from '../../src/runs';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
// A UUIDv8 whose last four hex digits are the hash tag of its queue (README "Queues"): here `default`.
const RUN_ID = new RegExp(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{8}${queueTag('default')}$`);
/** envoy.yaml's request_body_buffer_limit on the async routes, and MAX_BODY_BYTES's default. */
const BODY_LIMIT = 10 * 1024 * 1024;

/** Envoy's local address (Network::Utility::getLocalAddress): the host's first non-loopback IPv4. */
function envoyLocalAddress(): string {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return '127.0.0.1';
}

describeEachEnvoy('the async path end to end', (factory) => {
  let redis: RedisServer;
  let db: Redis;
  let app: Upstream;
  let hooks: WebhookReceiver;
  let envoy: TestEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;

  beforeAll(async () => {
    redis = await RedisServer.start();
    db = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    app = await Upstream.start();
    hooks = await WebhookReceiver.start();
    const extprocPort = await freePort();
    envoy = await factory.start({ async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` });
    const dir = mkdtempSync(join(tmpdir(), 'eas-routes-'));
    writeFileSync(join(dir, 'routes.yaml'), 'routes:\n  - prefix: /slow\n    response_grace_period: 0.5\n');
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      WEBHOOK_SECRET: SECRET,
      CONFIG_FILE: join(dir, 'routes.yaml'),
      MAX_BODY_BYTES: String(BODY_LIMIT),
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  });

  afterEach(() => {
    app.setHandler(Upstream.json(200, { ok: true }));
  });

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await hooks?.close();
    await app?.close();
    db?.disconnect();
    await redis?.destroy();
  });

  async function post(path: string, body: Buffer | string, headers: Record<string, string> = {}) {
    const res = await request(envoy.url + path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    return { status: res.statusCode, headers: res.headers, raw: Buffer.from(await res.body.arrayBuffer()) };
  }

  async function runStatus(id: string, headers: Record<string, string> = {}) {
    const res = await request(`${envoy.url}/v1/runs/${id}`, { headers });
    return { status: res.statusCode, json: (await res.body.json()) as Record<string, any> };
  }

  async function finalStatus(id: string, headers: Record<string, string> = {}) {
    return eventually(
      async () => {
        const r = await runStatus(id, headers);
        return ['queued', 'running'].includes(r.json.status) ? undefined : r.json;
      },
      15_000,
      `run ${id} to end`,
    );
  }

  /** Run records in Redis (eas:{runs}:run:<id>). */
  async function runKeys(): Promise<number> {
    return (await db.keys('*:run:*')).length;
  }

  it("answers Cerebrium's 202 byte for byte, replays the request and forwards a signed webhook", async () => {
    app.setHandler(
      (req, res) =>
        void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ result: 'done', got: JSON.parse(req.body.toString()) })),
    );
    const before = app.requests.length;
    const hookUrl = encodeURIComponent(hooks.url);
    const res = await post(`/v4/p-1/my-app/run?async=true&webhookEndpoint=${hookUrl}`, '{"prompt":"hello"}', { authorization: 'Bearer k1' });

    expect(res.status).toBe(202);
    expect(res.raw.length).toBe(50);
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    expect(runId).toMatch(RUN_ID);
    expect(res.raw.toString()).toBe(`{"run_id":"${runId}"}\n`);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-request-id']).toBe(runId);
    expect(res.headers['location']).toBe(`/v1/runs/${runId}`);

    const [replayed] = (await app.waitForRequests(before + 1)).slice(before);
    expect(replayed!.method).toBe('POST');
    expect(replayed!.url).toBe('/v4/p-1/my-app/run');
    expect(replayed!.body.toString()).toBe('{"prompt":"hello"}');
    const h = Object.fromEntries(replayed!.headers);
    expect(h['x-async-run-id']).toBe(runId);
    expect(h['authorization']).toBe('Bearer k1');
    expect(h['host']).toBe(new URL(envoy.url).host);
    expect(h['content-type']).toBe('application/json');
    expect(h['content-length']).toBe('18');
    // The ingress listener's own headers, kept by the replay; the dispatch listener (no
    // use_remote_address) leaves them as they are (Envoy's conn_manager_utility.cc):
    // - x-forwarded-for: the client's address, except that a loopback client is replaced by
    //   Envoy's own local address (the host's first non-loopback address), as here;
    // - x-request-id: Envoy's id of the original request (not the run id), which the run keeps
    //   as request.request_id for correlation.
    expect(h['x-forwarded-for']).toBe(envoyLocalAddress());
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-request-id']).toMatch(UUID);
    expect(h['x-request-id']).not.toBe(runId);
    // x-envoy-* headers describe the client's hop and are not replayed.
    expect(h['x-envoy-external-address']).toBeUndefined();
    expect(replayed!.headers.filter(([k]) => k === 'x-forwarded-proto')).toHaveLength(1);

    const [hook] = await hooks.waitForRequests(1, 10_000);
    expect(hook!.body.toString()).toBe(JSON.stringify({ result: 'done', got: { prompt: 'hello' } }));
    const hh = Object.fromEntries(Object.entries(hook!.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    expect(hh['content-type']).toBe('application/json');
    expect(hh['x-async-run-id']).toBe(runId);
    expect(hh['x-async-run-status']).toBe('succeeded');
    expect(hh['x-async-upstream-status']).toBe('200');
    expect(() => new Webhook(SECRET).verify(hook!.body.toString(), hh)).not.toThrow();

    const done = await finalStatus(runId, { authorization: 'Bearer k1' });
    expect(done).toMatchObject({
      run_id: runId,
      status: 'succeeded',
      request: { method: 'POST', path: '/v4/p-1/my-app/run', request_id: h['x-request-id'] },
      response: { status_code: 200, content_type: 'application/json' },
      error: null,
    });
    await eventually(async () => ((await runStatus(runId, { authorization: 'Bearer k1' })).json.webhook.status === 'delivered' ? true : undefined));
    // A different owner sees nothing.
    expect((await runStatus(runId, { authorization: 'Bearer other' })).status).toBe(404);
  });

  it('replays a binary body of several MiB byte for byte and serves it back as the result', async () => {
    app.setHandler(Upstream.echo());
    const body = randomBytes(6 * 1024 * 1024);
    const res = await post('/blob?async=1', body, { 'content-type': 'application/octet-stream' });
    expect(res.status).toBe(202);
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    const replayed = await eventually(() => app.requests.find((r) => Object.fromEntries(r.headers)['x-async-run-id'] === runId));
    expect(replayed.body.equals(body)).toBe(true);
    await finalStatus(runId);
    const result = await request(`${envoy.url}/v1/runs/${runId}/result`);
    expect(result.statusCode).toBe(200);
    expect(result.headers['content-type']).toBe('application/octet-stream');
    expect(Buffer.from(await result.body.arrayBuffer()).equals(body)).toBe(true);
  });

  it("replaces a client's x-request-id: the ingress request is external, so Envoy makes its own", async () => {
    const res = await post('/rid?async=true', '{}', { 'x-request-id': 'client-chosen' });
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    expect(res.headers['x-request-id']).toBe(runId);
    const replayed = await eventually(() => app.requests.find((r) => Object.fromEntries(r.headers)['x-async-run-id'] === runId));
    const rid = Object.fromEntries(replayed.headers)['x-request-id'];
    expect(rid).toMatch(UUID);
    expect((await finalStatus(runId)).request.request_id).toBe(rid);
  });

  it('keeps query parameters in order and encoding, minus async and webhookEndpoint', async () => {
    const res = await post(`/q?z=1&async=true&a=%20b+c&webhookEndpoint=${encodeURIComponent(hooks.url)}&z=0&e=%C3%A9`, '{}');
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    const replayed = await eventually(() => app.requests.find((r) => Object.fromEntries(r.headers)['x-async-run-id'] === runId));
    expect(replayed.url).toBe('/q?z=1&a=%20b+c&z=0&e=%C3%A9');
  });

  it('accepts Prefer: respond-async and strips the token from the replay', async () => {
    const res = await post('/prefer', '{"a":1}', { prefer: 'respond-async, return=minimal' });
    expect(res.status).toBe(202);
    expect(res.headers['preference-applied']).toBe('respond-async');
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    const replayed = await eventually(() => app.requests.find((r) => Object.fromEntries(r.headers)['x-async-run-id'] === runId));
    expect(Object.fromEntries(replayed.headers)['prefer']).toBe('return=minimal');
  });

  it('passes a request without the trigger through untouched, without a stream to the sidecar', async () => {
    app.setHandler(Upstream.json(201, { sync: true }));
    const streams = await envoy.streamsStarted();
    const res = await post('/sync?async=false&x=%201', 'plain', { 'x-custom': 'kept' });
    expect(res.status).toBe(201);
    expect(JSON.parse(res.raw.toString())).toEqual({ sync: true });
    const got = app.requests.at(-1)!;
    expect(got.url).toBe('/sync?async=false&x=%201');
    expect(got.body.toString()).toBe('plain');
    expect(Object.fromEntries(got.headers)['x-custom']).toBe('kept');
    expect(await envoy.streamsStarted()).toBe(streams);
  });

  it.each([
    ['not a URL', 'not-a-url', 'invalid_webhook_endpoint'],
    ['ftp', 'ftp://example.com/x', 'invalid_webhook_endpoint'],
    ['credentials', 'https://user:pw@example.com/x', 'invalid_webhook_endpoint'],
  ])('refuses a bad webhookEndpoint (%s) with 400 and creates no run', async (_name, url, code) => {
    const before = app.requests.length;
    const runs = await runKeys();
    const res = await post(`/x?async=true&webhookEndpoint=${encodeURIComponent(url)}`, '{}');
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/json');
    expect(JSON.parse(res.raw.toString())).toEqual({ error: { code, message: expect.any(String) } });
    await new Promise((r) => setTimeout(r, 200));
    expect(app.requests.length).toBe(before);
    expect(await runKeys()).toBe(runs);
  });

  it('refuses a declared content-length over MAX_BODY_BYTES with the JSON 413 from the headers alone', async () => {
    const before = app.requests.length;
    const runs = await runKeys();
    // Through the real Envoy only the headers are sent: had the body followed at once, Envoy's own
    // buffer limit could fire first (its 413 races the sidecar's answer to the headers message).
    // The stand-in reads the whole body before its filter chain runs, so it gets the body.
    const res = !asRealEnvoy(envoy)
      ? await post('/big?async=true', randomBytes(BODY_LIMIT + 1), { 'content-type': 'application/octet-stream' })
      : await postHeadersOnly(`${envoy.url}/big?async=true`, {
          'content-type': 'application/octet-stream',
          'content-length': String(BODY_LIMIT + 1),
        }).then((r) => ({ ...r, raw: r.body }));
    expect(res.status).toBe(413);
    expect(res.headers['content-type']).toBe('application/json');
    expect(JSON.parse(res.raw.toString()).error.code).toBe('body_too_large');
    await new Promise((r) => setTimeout(r, 200));
    expect(app.requests.length).toBe(before);
    expect(await runKeys()).toBe(runs);
  });

  it("refuses a chunked body over the routes' request_body_buffer_limit with Envoy's 413, before the sidecar sees it", async () => {
    const before = app.requests.length;
    const runs = await runKeys();
    const big = randomBytes(BODY_LIMIT + 1);
    // A stream body has no content-length: undici sends it chunked, so only Envoy's buffer limit can stop it.
    const chunks = Array.from({ length: 11 }, (_, i) => big.subarray(i * 1024 * 1024, (i + 1) * 1024 * 1024));
    const res = await request(`${envoy.url}/big-chunked?async=true`, {
      method: 'POST',
      body: Readable.from(chunks),
      headers: { 'content-type': 'application/octet-stream' },
    });
    const raw = Buffer.from(await res.body.arrayBuffer());
    expect(res.statusCode).toBe(413);
    // Envoy's own local reply (the filter manager's buffer limit), not the sidecar's JSON 413.
    expect(res.headers['content-type']).toBe('text/plain');
    expect(raw.toString()).toBe('Payload Too Large');
    await new Promise((r) => setTimeout(r, 200));
    expect(app.requests.length).toBe(before);
    expect(await runKeys()).toBe(runs);
    const real = asRealEnvoy(envoy);
    if (real) expect(await real.stat('http.ingress_http.downstream_rq_4xx')).toBeGreaterThan(0);
  });

  it('ends a run as failed when the upstream answers 500, and says so in the webhook', async () => {
    app.setHandler(Upstream.json(500, { error: 'boom' }));
    const res = await post(`/fail?async=true&webhookEndpoint=${encodeURIComponent(hooks.url + '/failed')}`, '{}');
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    const done = await finalStatus(runId);
    expect(done).toMatchObject({ status: 'failed', response: { status_code: 500 }, error: { code: 'upstream_status' } });
    const hook = await eventually(() => hooks.requests.find((r) => r.url.endsWith('/failed')));
    expect(hook.body.toString()).toBe('{"error":"boom"}');
    expect(String(hook.headers['x-async-run-status'])).toBe('failed');
    expect(String(hook.headers['x-async-upstream-status'])).toBe('500');
  });

  it('aborts the upstream call after the grace period and ends the run timed_out', async () => {
    app.setHandler(Upstream.hang());
    const aborted = app.aborted.length;
    const res = await post(`/slow/model?async=true&webhookEndpoint=${encodeURIComponent(hooks.url + '/timeout')}`, '{}');
    const runId = JSON.parse(res.raw.toString()).run_id as string;
    const done = await finalStatus(runId);
    expect(done).toMatchObject({ status: 'timed_out', response: null, error: { code: 'grace_period_exceeded' } });
    await app.waitForAborted(aborted + 1);
    const hook = await eventually(() => hooks.requests.find((r) => r.url.endsWith('/timeout')));
    expect(JSON.parse(hook.body.toString())).toEqual({ run_id: runId, status: 'timed_out', error: expect.any(String) });
  });

  it('answers 503 quickly while Redis is down, loses nothing, and recovers by itself', async () => {
    await redis.stop();
    const res = await post('/during-outage?async=true', '{}');
    // The sidecar's JSON 503, so it answered inside Envoy's 2 s message timeout (past it: a 504).
    expect(res.status).toBe(503);
    expect(JSON.parse(res.raw.toString()).error.code).toBe('store_unavailable');
    await redis.startProcess();
    const accepted = await eventually(
      async () => {
        const r = await post('/after-outage?async=true', '{"n":1}');
        return r.status === 202 ? r : undefined;
      },
      15_000,
      'accepting again',
    );
    const runId = JSON.parse(accepted.raw.toString()).run_id as string;
    expect((await finalStatus(runId)).status).toBe('succeeded');
  });
});
