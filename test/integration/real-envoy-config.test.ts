/**
 * What the shipped Envoy configuration does on the real Envoy (test/support/real-envoy.ts), for the
 * settings whose effect a validation cannot show: status_on_error when the sidecar is unreachable
 * or fails, the async routes' request_body_buffer_limit (413 above it, a body just under it
 * accepted and replayed in full through the dispatch listener), and the one-entry composite filter
 * of envoy/snippets/composite-filter.yaml in an "existing" Envoy without our routes (also as the
 * Istio EnvoyFilter's patches assemble it).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { request } from '../support/http';
import { loadExtProcProto } from '../../src/extproc/proto';
import { parse } from 'yaml';
import { istioPatchesBootstrap, REPO_ROOT, snippetBootstrap } from '../support/envoy-config';
import { freePort } from '../support/ports';
import { postHeadersOnly } from '../support/headers-only';
import { describeWithEnvoy, RealEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';

jest.setTimeout(120_000);

const MAX_BODY = 10 * 1024 * 1024; // envoy.yaml's request_body_buffer_limit = MAX_BODY_BYTES (default)
const TOKEN = 'h1-token-0123456789abcdef';
type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

let redis: RedisServer;
let app: Upstream;

beforeAll(async () => {
  redis = await RedisServer.start();
  app = await Upstream.start();
});
afterAll(async () => {
  await app?.close();
  await redis?.destroy();
});

interface Answer {
  status: number;
  body: string;
}

async function send(url: string, opts: { method?: string; body?: Buffer | string | Readable; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await request(url, { method: opts.method ?? (opts.body === undefined ? 'GET' : 'POST'), body: opts.body, headers: opts.headers });
  return { status: res.statusCode, body: await res.body.text() };
}

function runId(a: Answer): string {
  expect(a.status).toBe(202);
  return (JSON.parse(a.body) as { run_id: string }).run_id;
}

function replayOf(id: string): Promise<RecordedRequest> {
  return eventually(() => app.requests.find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id)), 20_000, `replay of ${id}`);
}

/** Every byte different from its neighbours, so a truncated or shifted replay cannot pass. */
function body(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

describeWithEnvoy('envoy/envoy.yaml on the real Envoy: errors from the sidecar (status_on_error)', () => {
  it('answers 503 when the sidecar is unreachable, on the async routes and the runs API, and the app sees nothing', async () => {
    const before = app.requests.length;
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${await freePort()}`, app: `127.0.0.1:${app.port}` } });
    try {
      expect((await send(`${envoy.url}/down?async=true`, { body: 'x' })).status).toBe(503);
      expect((await send(`${envoy.url}/down`, { body: 'x', headers: { prefer: 'respond-async' } })).status).toBe(503);
      expect((await send(`${envoy.url}/v1/runs/3f1c0e1a-8d6b-4c0e-9a53-0c1f4a0b9e21`)).status).toBe(503);
      expect(await envoy.stat('cluster.async_sidecar.upstream_cx_connect_fail')).toBeGreaterThan(0);
      // Ordinary traffic does not depend on the sidecar.
      expect((await send(`${envoy.url}/plain`)).status).toBe(200);
      expect(app.requests.slice(before).map((r) => r.url)).toEqual(['/plain']);
    } finally {
      await envoy.close();
    }
  });

  it('answers 503 when the sidecar ends the stream with a gRPC error (here UNAUTHENTICATED: Envoy lacks EXTPROC_TOKEN)', async () => {
    const sidecar = await startTestSidecar({ REDIS_URL: redis.url, DISPATCH_URL: app.url, EXTPROC_TOKEN: TOKEN });
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${sidecar.extprocPort}`, app: `127.0.0.1:${app.port}` } });
    try {
      const a = await send(`${envoy.url}/refused?async=true`, { body: 'x' });
      expect(a).toEqual({ status: 503, body: '' });
      expect(await envoy.stat('http.ingress_http.ext_proc.streams_failed')).toBeGreaterThan(0);
    } finally {
      await envoy.close();
      await sidecar.stop();
    }
  });

  it('answers 504, not status_on_error, when the sidecar does not answer within message_timeout (2 s)', async () => {
    // An ext_proc server that takes the stream and never answers (no health service: Envoy's
    // panic routing still sends to the one unhealthy host).
    const server = new grpc.Server();
    const held: grpc.ServerDuplexStream<unknown, unknown>[] = [];
    server.addService(loadExtProcProto().envoy.service.ext_proc.v3.ExternalProcessor.service, {
      Process: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        held.push(call);
        call.on('data', () => undefined);
        call.on('error', () => undefined);
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
    );
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${port}`, app: `127.0.0.1:${app.port}` } });
    try {
      expect(await send(`${envoy.url}/silent?async=true`, { body: 'x' })).toEqual({ status: 504, body: '' });
      expect(held.length).toBe(1);
      expect(await envoy.stat('http.ingress_http.ext_proc.message_timeouts')).toBe(1);
    } finally {
      await envoy.close();
      server.forceShutdown();
    }
  });
});

describeWithEnvoy('envoy/envoy.yaml on the real Envoy: body limits', () => {
  let sidecar: Sidecar;
  let envoy: RealEnvoy;
  beforeAll(async () => {
    // Replays go through Envoy's dispatch listener, as in the compose topology: Envoy first (on
    // the sidecar's future port), then the sidecar with DISPATCH_URL = that listener.
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    sidecar = await startTestSidecar({ REDIS_URL: redis.url, EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, DISPATCH_URL: envoy.dispatchUrl });
  });
  afterAll(async () => {
    await envoy?.close();
    await sidecar?.stop();
  });

  it('accepts a BUFFERED body of exactly request_body_buffer_limit and replays it whole through the dispatch listener (no 1 MiB limit there)', async () => {
    const b = body(MAX_BODY);
    const id = runId(await send(`${envoy.url}/big?async=true`, { body: b, headers: { 'content-type': 'application/octet-stream' } }));
    const replay = await replayOf(id);
    expect(replay.body.length).toBe(MAX_BODY);
    expect(replay.body.equals(b)).toBe(true);
    expect(await envoy.stat('http.dispatch_http.downstream_rq_completed')).toBeGreaterThan(0);
  });

  it('one byte more: 413 from the sidecar when content-length says so, from Envoy when the body is chunked', async () => {
    const tooLarge = await envoy.stat('http.ingress_http.downstream_rq_too_large');
    const before = app.requests.length;
    // content-length known: the sidecar refuses at the headers, before any body is buffered. Only
    // the headers are sent: a body sent at once races the sidecar's answer and may hit Envoy's own
    // buffer limit first (seen once under CI load).
    const declared = await postHeadersOnly(`${envoy.url}/big?async=true`, { 'content-length': String(MAX_BODY + 1) });
    expect(declared.status).toBe(413);
    expect(JSON.parse(declared.body.toString())).toMatchObject({ error: { code: 'body_too_large' } });
    // Chunked: only Envoy, buffering, finds out; its local reply, counted as downstream_rq_too_large.
    const chunked = await send(`${envoy.url}/big?async=true`, { body: Readable.from([body(MAX_BODY), body(1)]) });
    expect(chunked).toEqual({ status: 413, body: 'Payload Too Large' });
    expect(await envoy.stat('http.ingress_http.downstream_rq_too_large')).toBe(tooLarge + 1);
    // ...while a chunked body of exactly the limit is accepted.
    runId(await send(`${envoy.url}/big?async=true`, { body: Readable.from([body(MAX_BODY - 1), body(1)]) }));
    expect(app.requests.slice(before).every((r) => r.headers.some(([k]) => k === 'x-async-run-id'))).toBe(true);
  });

  it("without the route's request_body_buffer_limit the default 1 MiB applies (the setting is what raises it)", async () => {
    const routes = ['static_resources', 'listeners', 0, 'filter_chains', 0, 'filters', 0, 'typed_config', 'route_config', 'virtual_hosts', 0, 'routes'];
    const unraised = await RealEnvoy.start({
      clusters: { async_sidecar: `127.0.0.1:${sidecar.extprocPort}`, app: `127.0.0.1:${app.port}` },
      edit: (doc) => {
        const n = (doc.getIn(routes) as { items: unknown[] }).items.length;
        for (let i = 0; i < n; i++) doc.deleteIn([...routes, i, 'request_body_buffer_limit']);
      },
    });
    try {
      expect(await send(`${unraised.url}/big?async=true`, { body: Readable.from([body(1024 * 1024), body(1)]) })).toEqual({
        status: 413,
        body: 'Payload Too Large',
      });
    } finally {
      await unraised.close();
    }
  });

  it("the limit is the route's: the same body also passes with Prefer, and a plain 12 MiB upload streams to the app", async () => {
    const id = runId(await send(`${envoy.url}/big-prefer`, { body: body(MAX_BODY - 1024), headers: { prefer: 'respond-async' } }));
    expect((await replayOf(id)).body.length).toBe(MAX_BODY - 1024);
    const before = app.requests.length;
    const plain = await send(`${envoy.url}/upload`, { body: body(12 * 1024 * 1024) });
    expect(plain.status).toBe(200);
    expect(app.requests.slice(before).map((r) => [r.url, r.body.length])).toEqual([['/upload', 12 * 1024 * 1024]]);
  });
});

describeWithEnvoy('envoy/snippets/composite-filter.yaml on the real Envoy: one filter entry, no routes of ours', () => {
  const snippet = (name: string) => parse(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', name), 'utf8'));
  let sidecar: Sidecar;
  let dir: string;
  const AUTH = { authorization: 'Bearer composite-test' };

  /** An Envoy on this bootstrap (its one listener named `ingress`), its app cluster pointed at the app. */
  async function startFrom(bootstrap: string, appCluster = 'app'): Promise<RealEnvoy> {
    const cfg = join(dir, `bootstrap-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(cfg, bootstrap);
    return RealEnvoy.start({ configPath: cfg, clusters: { async_sidecar: `127.0.0.1:${sidecar.extprocPort}`, [appCluster]: `127.0.0.1:${app.port}` } });
  }

  /** An "existing" Envoy (one listener, a catch-all route to the app) plus composite-filter.yaml and cluster.yaml. */
  function startComposite(virtualHost?: Record<string, unknown>): Promise<RealEnvoy> {
    return startFrom(snippetBootstrap({ filters: snippet('composite-filter.yaml'), clusters: snippet('cluster.yaml'), virtualHost, listenerName: 'ingress' }));
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'eas-composite-'));
    sidecar = await startTestSidecar({ REDIS_URL: redis.url, DISPATCH_URL: app.url });
  });
  afterAll(async () => {
    await sidecar?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts ?async=true and Prefer: respond-async (202, replayed to the app), passes plain requests without a stream, serves the runs API', async () => {
    const envoy = await startComposite();
    try {
      const streams = () => envoy.stat('cluster.async_sidecar.upstream_rq_total');
      // Health checks are not requests: no stream yet.
      expect(await streams()).toBe(0);

      const before = app.requests.length;
      const plain = await send(`${envoy.url}/plain?async=false&x=1`, { body: 'hello', headers: { prefer: 'wait=5' } });
      expect(plain.status).toBe(200);
      expect(app.requests.slice(before).map((r) => r.url)).toEqual(['/plain?async=false&x=1']);
      expect(await streams()).toBe(0);

      const id = runId(await send(`${envoy.url}/predict?async=TRUE`, { body: '{"q":1}', headers: { ...AUTH, 'content-type': 'application/json' } }));
      const replay = await replayOf(id);
      expect(replay.url).toBe('/predict');
      expect(replay.body.toString()).toBe('{"q":1}');

      const id2 = runId(await send(`${envoy.url}/predict?async=1`, { body: 'b', headers: AUTH }));
      await replayOf(id2);
      const id3 = runId(await send(`${envoy.url}/predict`, { body: 'c', headers: { ...AUTH, prefer: 'handling=lenient, Respond-Async' } }));
      await replayOf(id3);

      const run = await eventually(
        async () => {
          const a = await send(`${envoy.url}/v1/runs/${id}?wait=5`, { headers: AUTH });
          return a.status === 200 && JSON.parse(a.body).status === 'succeeded' ? JSON.parse(a.body) : undefined;
        },
        20_000,
        'the run to succeed',
      );
      expect(run).toMatchObject({ run_id: id, request: { method: 'POST', path: '/predict' } });
      const result = await send(`${envoy.url}/v1/runs/${id}/result`, { headers: AUTH });
      expect(result.status).toBe(200);
      // The runs API never reaches the app.
      expect(app.requests.some((r) => r.url.startsWith('/v1/runs'))).toBe(false);
    } finally {
      await envoy.close();
    }
  });

  it("holds a runs-API ?wait=30 past message_timeout (the sidecar's override_message_timeout works inside the composite filter)", async () => {
    const envoy = await startComposite();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    app.setHandler(async (req, res) => {
      if (req.url.startsWith('/slow')) await released;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    try {
      const id = runId(await send(`${envoy.url}/slow?async=true`, { body: 'x', headers: AUTH }));
      await replayOf(id);
      const waiting = send(`${envoy.url}/v1/runs/${id}?wait=30`, { headers: AUTH });
      // Longer than message_timeout (2 s): without the override Envoy would have answered 504 by now.
      await new Promise((r) => setTimeout(r, 2_500));
      release();
      const a = await waiting;
      expect(a.status).toBe(200);
      expect(JSON.parse(a.body)).toMatchObject({ run_id: id, status: 'succeeded' });
      // (the composite bootstrap's HCM has stat_prefix `existing`)
      expect(await envoy.stat('http.existing.ext_proc.streams_started')).toBeGreaterThan(0);
      expect(await envoy.stat('http.existing.ext_proc.message_timeouts')).toBe(0);
    } finally {
      release();
      app.setHandler(Upstream.json(200, { ok: true }));
      await envoy.close();
    }
  });

  it('limits BUFFERED bodies to the stream buffer limit: 1 MiB unless the virtual host raises it', async () => {
    const dflt = await startComposite();
    try {
      const a = await send(`${dflt.url}/big?async=true`, { body: body(1024 * 1024 + 1), headers: AUTH });
      expect(a).toEqual({ status: 413, body: 'Payload Too Large' });
      runId(await send(`${dflt.url}/big?async=true`, { body: body(1024 * 1024), headers: AUTH }));
    } finally {
      await dflt.close();
    }
    const raised = await startComposite({ request_body_buffer_limit: MAX_BODY });
    try {
      const id = runId(await send(`${raised.url}/big?async=true`, { body: body(MAX_BODY), headers: AUTH }));
      expect((await replayOf(id)).body.length).toBe(MAX_BODY);
      expect((await send(`${raised.url}/big?async=true`, { body: body(MAX_BODY + 1), headers: AUTH })).status).toBe(413);
    } finally {
      await raised.close();
    }
  });

  it("istio-envoyfilter.yaml's patches on a stand-in of Istio's inbound config: a 10 MiB async body is accepted, a plain request passes", async () => {
    const ef = parse(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', 'istio-envoyfilter.yaml'), 'utf8'));
    const envoy = await startFrom(istioPatchesBootstrap(ef, { listenerName: 'ingress' }), 'inbound|8000||');
    try {
      const id = runId(await send(`${envoy.url}/big?async=1`, { body: Readable.from([body(MAX_BODY)]), headers: AUTH }));
      expect((await replayOf(id)).body.length).toBe(MAX_BODY);
      expect((await send(`${envoy.url}/plain`)).status).toBe(200);
    } finally {
      await envoy.close();
    }
  });
});
