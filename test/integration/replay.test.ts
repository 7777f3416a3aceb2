/**
 * The replay on its own: a run in, an outcome out, against a real HTTP app on loopback through a
 * real undici Agent (docs/CONTRACT.md §3: what the app receives, what is kept of its answer).
 */
import { Agent } from 'undici';
import { CallAbort, replay, type ReplayCall } from '../../src/dispatch/replay';
import { parseDispatchBase } from '../../src/dispatch/target';
import { freePort } from '../support/ports';
import { Upstream } from '../support/upstream';

let app: Upstream;
let agent: Agent;

beforeAll(async () => {
  app = await Upstream.start();
  agent = new Agent({ connections: null, keepAliveTimeout: 10_000, headersTimeout: 0, bodyTimeout: 0 });
});

afterAll(async () => {
  await agent?.close();
  await app?.close();
});

beforeEach(() => {
  app.requests.length = 0;
  app.aborted.length = 0;
});

function call(overrides: Partial<Omit<ReplayCall, 'run'>> & { run?: Partial<ReplayCall['run']> } = {}): ReplayCall {
  const { run, ...rest } = overrides;
  return {
    run: { method: 'POST', target: '/predict?b=2&a=1', headers: [['content-type', 'application/json']], gracePeriodMs: 10_000, ...run },
    body: Buffer.from('{"prompt":"hi"}'),
    base: parseDispatchBase(app.url),
    dispatcher: agent,
    controller: new CallAbort(),
    maxResultBytes: 1024,
    ...rest,
  };
}

it('sends the method, target, headers and body as stored, and keeps the answer without hop-by-hop headers', async () => {
  app.setHandler((req, res) => {
    res.writeHead(201, [
      ['content-type', 'text/plain'],
      ['x-model', 'a'],
      ['x-model', 'b'],
      ['keep-alive', 'timeout=5'],
      ['connection', 'keep-alive'],
    ]);
    res.end(`got ${req.body.length} bytes`);
  });
  const { outcome, cause } = await replay(
    call({
      run: {
        method: 'PUT',
        target: '/items/7?x=%2F&y',
        headers: [
          ['content-type', 'application/octet-stream'],
          ['x-async-run-id', 'r-1'],
          ['x-tenant', 'one'],
          ['x-tenant', 'two'],
        ],
      },
      body: Buffer.from([0, 1, 2, 255]),
    }),
  );
  expect(cause).toBeNull();
  const [req] = app.requests;
  expect(req).toMatchObject({ method: 'PUT', url: '/items/7?x=%2F&y', body: Buffer.from([0, 1, 2, 255]) });
  expect(req!.headers.filter(([k]) => k.startsWith('x-'))).toEqual([
    ['x-async-run-id', 'r-1'],
    ['x-tenant', 'one'],
    ['x-tenant', 'two'],
  ]);
  expect(outcome).toEqual({
    status: 'succeeded',
    response: {
      statusCode: 201,
      contentType: 'text/plain',
      headers: expect.arrayContaining([
        ['x-model', 'a'],
        ['x-model', 'b'],
      ]) as unknown,
      body: Buffer.from('got 4 bytes'),
      size: 11,
      truncated: false,
    },
    error: null,
  });
  const names = outcome.response!.headers.map(([k]) => k);
  expect(names).not.toContain('keep-alive');
  expect(names).not.toContain('connection');
  expect(names).not.toContain('transfer-encoding');
});

it('keeps the base path of the dispatch URL, and sends a GET without a body', async () => {
  app.setHandler(Upstream.json(200, { ok: true }));
  const { outcome } = await replay(
    call({ base: parseDispatchBase(`${app.url}/base/`), run: { method: 'GET', target: '/x', headers: [] }, body: Buffer.alloc(0) }),
  );
  expect(outcome.status).toBe('succeeded');
  const [req] = app.requests;
  expect(req).toMatchObject({ method: 'GET', url: '/base/x' });
  expect(req!.headers.map(([k]) => k)).not.toContain('content-length');
  expect(req!.headers.map(([k]) => k)).not.toContain('transfer-encoding');
});

it('sends an empty body of a POST as content-length: 0', async () => {
  app.setHandler(Upstream.json(200, {}));
  await replay(call({ body: Buffer.alloc(0) }));
  expect(app.requests[0]!.headers).toContainEqual(['content-length', '0']);
});

it('ends as failed with upstream_status on a non-2xx answer, the answer kept', async () => {
  app.setHandler(Upstream.json(503, { error: 'overloaded' }));
  const { outcome, cause } = await replay(call());
  expect(cause).toBeNull();
  expect(outcome).toMatchObject({
    status: 'failed',
    response: { statusCode: 503, contentType: 'application/json', body: Buffer.from('{"error":"overloaded"}'), truncated: false },
    error: { code: 'upstream_status', message: 'The upstream answered 503.' },
  });
});

it('keeps the first maxResultBytes of a large answer, reads the rest, and says how large it was', async () => {
  const big = Buffer.alloc(300_000, 'z');
  big.write('head', 0);
  app.setHandler((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    // In several writes, so the limit falls inside a chunk.
    for (let i = 0; i < big.length; i += 70_000) res.write(big.subarray(i, i + 70_000));
    res.end();
  });
  const { outcome } = await replay(call({ maxResultBytes: 100_001 }));
  expect(outcome.response).toMatchObject({ size: 300_000, truncated: true });
  expect(outcome.response!.body.length).toBe(100_001);
  expect(outcome.response!.body.equals(big.subarray(0, 100_001))).toBe(true);
});

it('aborts the call when the grace period ends: timed_out, grace_period_exceeded', async () => {
  app.setHandler(Upstream.hang());
  const started = Date.now();
  const { outcome, cause } = await replay(call({ run: { gracePeriodMs: 300 } }));
  expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  expect(outcome).toEqual({
    status: 'timed_out',
    response: null,
    error: { code: 'grace_period_exceeded', message: 'The upstream did not answer within the grace period of 0.3 s; the call was aborted.' },
  });
  expect(cause).toBeNull();
  await app.waitForAborted(1);
});

it("stops the call when the caller aborts the run's controller, without waiting for the grace period", async () => {
  app.setHandler(Upstream.hang());
  const controller = new CallAbort();
  const pending = replay(call({ controller, run: { gracePeriodMs: 60_000 } }));
  await app.waitForRequests(1);
  const abortedAt = Date.now();
  controller.abort();
  const { outcome } = await pending;
  expect(Date.now() - abortedAt).toBeLessThan(1000);
  // Not a timeout: the caller knows why it stopped the call and drops this outcome.
  expect(outcome.status).toBe('failed');
  expect(outcome.error?.code).toBe('upstream_unreachable');
  await app.waitForAborted(1);
});

it('does not call the app at all with the controller aborted before the call', async () => {
  const controller = new CallAbort();
  controller.abort();
  const { outcome } = await replay(call({ controller }));
  expect(outcome.status).toBe('failed');
  await new Promise((r) => setTimeout(r, 50));
  expect(app.requests).toEqual([]);
});

it('names only the error code to the tenant when the app cannot be reached; the whole error is the cause', async () => {
  const port = await freePort(); // nothing listens
  const { outcome, cause } = await replay(call({ base: parseDispatchBase(`http://127.0.0.1:${port}`) }));
  expect(outcome).toEqual({
    status: 'failed',
    response: null,
    error: { code: 'upstream_unreachable', message: 'The upstream call failed (ECONNREFUSED).' },
    // A refused connection is the app saying "not now": the worker may queue the run again (README "Queues").
    notNow: { reason: 'upstream_unavailable', retryAfterMs: null },
  });
  expect(outcome.error!.message).not.toContain('127.0.0.1');
  expect(cause).toMatchObject({ code: 'ECONNREFUSED' });
  expect(cause!.message).toContain(`127.0.0.1:${port}`);
});

it('refuses a target that would leave the dispatch origin, without a request', async () => {
  const { outcome, cause } = await replay(call({ run: { target: '@169.254.169.254/latest/meta-data/' } }));
  expect(outcome).toEqual({
    status: 'failed',
    response: null,
    error: { code: 'invalid_target', message: "The run's target is not an origin-form path; it was not dispatched." },
  });
  expect(cause).toBeNull();
  expect(app.requests).toEqual([]);
});
