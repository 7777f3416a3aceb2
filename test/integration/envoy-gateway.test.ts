/**
 * deploy/envoy-gateway on the real Envoy: the xDS Envoy Gateway v1.9.0's translator builds from
 * those manifests (test/support/envoy-gateway.ts: its 32 KiB listener and cluster buffer limits,
 * the buffer filter before ext_proc, one disabled ext_proc filter per policy enabled on its rules,
 * the 10 s gRPC timeout, no max_message_timeout) run by Envoy with the real sidecar, Redis and an
 * app. It shows what each setting is for: bodies up to MAX_BODY_BYTES through requestBuffer (and
 * 413 without it), `?wait` held by messageTimeout alone, statusOnError, and no stream for plain
 * traffic. Envoy Gateway itself is not run here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { SETTINGS } from '../../src/config/settings';
import { envoyGatewayManifests, envoyGatewayXds } from '../support/envoy-gateway';
import { freePort } from '../support/ports';
import { describeWithEnvoy, RealEnvoy, REPO_ROOT } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';

jest.setTimeout(120_000);

type Obj = Record<string, any>;
type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

const MAX_BODY = Number(SETTINGS.maxBodyBytes.default);
const { objects: MANIFESTS } = envoyGatewayManifests(REPO_ROOT);
const STREAMS = 'http.http-10080.ext_proc.streams_started';

let redis: RedisServer;
let app: Upstream;
let sidecar: Sidecar;
const dirs: string[] = [];

/** The real Envoy on the xDS Envoy Gateway would build from `objects`, the Services on loopback. */
async function gatewayEnvoy(objects: Obj[], extprocPort: number = sidecar.extprocPort!): Promise<RealEnvoy> {
  const xds = envoyGatewayXds(objects);
  const dir = mkdtempSync(join(tmpdir(), 'eas-eg-'));
  dirs.push(dir);
  const file = join(dir, 'envoy.yaml');
  writeFileSync(file, xds.bootstrap);
  const at: Record<string, number> = { 'my-app': app.port, 'async-sidecar': extprocPort };
  const clusters = Object.fromEntries(Object.entries(xds.clusters).map(([name, t]) => [name, `127.0.0.1:${at[t.service]}`]));
  return RealEnvoy.start({ configPath: file, clusters });
}

/** The manifests with one resource changed (or removed, when `change` returns undefined). */
function withChange(kind: string, name: string, change: (o: Obj) => Obj | undefined): Obj[] {
  const out: Obj[] = [];
  for (const o of MANIFESTS) {
    if (o.kind !== kind || o.metadata.name !== name) out.push(o);
    else {
      const changed = change(structuredClone(o));
      if (changed) out.push(changed);
    }
  }
  return out;
}

async function send(url: string, opts: { method?: string; body?: Buffer | string; headers?: Record<string, string> } = {}) {
  const res = await request(url, { method: (opts.method ?? (opts.body === undefined ? 'GET' : 'POST')) as 'GET', body: opts.body, headers: opts.headers });
  return { status: res.statusCode, body: await res.body.text() };
}

function runId(a: { status: number; body: string }): string {
  expect(a.status).toBe(202);
  return (JSON.parse(a.body) as { run_id: string }).run_id;
}

function replayOf(id: string): Promise<RecordedRequest> {
  return eventually(() => app.requests.find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id)), 20_000, `replay of ${id}`);
}

function body(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

beforeAll(async () => {
  redis = await RedisServer.start();
  app = await Upstream.start();
  // As deploy/envoy-gateway/sidecar.yaml runs it (replays straight to the app's Service), on loopback.
  sidecar = await startTestSidecar({ REDIS_URL: redis.url, DISPATCH_URL: app.url, MAX_SYNC_WAIT: '0' });
});
afterAll(async () => {
  await sidecar?.stop();
  await app?.close();
  await redis?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeWithEnvoy('deploy/envoy-gateway as Envoy Gateway v1.9.0 translates it, on the real Envoy', () => {
  let envoy: RealEnvoy;
  beforeAll(async () => {
    envoy = await gatewayEnvoy(MANIFESTS);
    await eventually(
      async () => ((await send(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).status === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  });
  afterAll(() => envoy?.close());
  afterEach(() => app.setHandler(Upstream.json(200, { ok: true })));

  it('accepts a body of exactly requestBuffer.limit (= MAX_BODY_BYTES) past the 32 KiB buffer limits, and the app gets it whole', async () => {
    const b = body(MAX_BODY);
    const id = runId(await send(`${envoy.url}/big?async=TRUE`, { body: b, headers: { 'content-type': 'application/octet-stream' } }));
    const replay = await replayOf(id);
    expect(replay.url).toBe('/big');
    expect(replay.body.equals(b)).toBe(true);
  });

  it('one byte more: 413 from the buffer filter, before the sidecar sees the request', async () => {
    const streams = await envoy.stat(STREAMS);
    const before = app.requests.length;
    expect(await send(`${envoy.url}/big?async=1`, { body: body(MAX_BODY + 1) })).toEqual({ status: 413, body: 'Payload Too Large' });
    expect(await envoy.stat(STREAMS)).toBe(streams);
    expect(app.requests.length).toBe(before);
  });

  it('Prefer: respond-async is the same rule; ordinary requests and ?async=false reach the app without a stream to the sidecar', async () => {
    const id = runId(await send(`${envoy.url}/prefer`, { body: body(100_000), headers: { prefer: 'wait=5, Respond-Async' } }));
    expect((await replayOf(id)).body.length).toBe(100_000);
    const streams = await envoy.stat(STREAMS);
    const before = app.requests.length;
    expect((await send(`${envoy.url}/plain`, { body: body(100_000) })).status).toBe(200);
    expect((await send(`${envoy.url}/plain?async=false`)).status).toBe(200);
    expect(await envoy.stat(STREAMS)).toBe(streams);
    expect(app.requests.slice(before).map((r) => [r.url, r.body.length])).toEqual([
      ['/plain', 100_000],
      ['/plain?async=false', 0],
    ]);
  });

  it('runs API: ?wait=12 is held by messageTimeout (65 s) alone, past the 10 s gRPC timeout Envoy Gateway sets', async () => {
    app.setHandler(Upstream.hang());
    const id = runId(await send(`${envoy.url}/slow?async=true`, { body: 'x' }));
    await replayOf(id);
    const t0 = Date.now();
    const waited = await send(`${envoy.url}/v1/runs/${id}?wait=12`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(11_900);
    expect(waited.status).toBe(200);
    expect(JSON.parse(waited.body)).toMatchObject({ run_id: id, status: 'running' });
    expect((await send(`${envoy.url}/v1/runs/${id}`, { method: 'DELETE' })).status).toBe(200);
  });
});

describeWithEnvoy('deploy/envoy-gateway: what each setting prevents', () => {
  it("without messageTimeout covering the wait, Envoy ignores the sidecar's override (no max_message_timeout) and answers 504", async () => {
    const envoy = await gatewayEnvoy(
      withChange('EnvoyExtensionPolicy', 'async-sidecar-runs-api', (p) => {
        p.spec.extProc[0].messageTimeout = '1s';
        return p;
      }),
    );
    app.setHandler(Upstream.hang());
    try {
      const id = runId(await send(`${envoy.url}/slow?async=true`, { body: 'x' }));
      const t0 = Date.now();
      expect(await send(`${envoy.url}/v1/runs/${id}?wait=3`)).toEqual({ status: 504, body: '' });
      expect(Date.now() - t0).toBeLessThan(2_500);
      expect(await envoy.stat('http.http-10080.ext_proc.message_timeouts')).toBe(1);
      expect((await send(`${envoy.url}/v1/runs/${id}`, { method: 'DELETE' })).status).toBe(200);
    } finally {
      app.setHandler(Upstream.json(200, { ok: true }));
      await envoy.close();
    }
  });

  it("without requestBuffer, Envoy Gateway's 32 KiB default refuses a 64 KiB async body (413); a ClientTrafficPolicy connection.bufferLimit raises it too", async () => {
    const noBuffer = withChange('BackendTrafficPolicy', 'async-sidecar-body-limit', () => undefined);
    const unraised = await gatewayEnvoy(noBuffer);
    try {
      expect((await send(`${unraised.url}/b?async=true`, { body: body(64 * 1024) })).status).toBe(413);
    } finally {
      await unraised.close();
    }
    const ctp = {
      apiVersion: 'gateway.envoyproxy.io/v1alpha1',
      kind: 'ClientTrafficPolicy',
      metadata: { name: 'body-limit' },
      spec: { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'eg' }], connection: { bufferLimit: '10Mi' } },
    };
    const listenerWide = await gatewayEnvoy([...noBuffer, ctp]);
    try {
      const id = runId(await send(`${listenerWide.url}/b?async=true`, { body: body(MAX_BODY) }));
      expect((await replayOf(id)).body.length).toBe(MAX_BODY);
    } finally {
      await listenerWide.close();
    }
  });

  it('statusOnError: an unreachable sidecar gets 503 on both rules, and plain traffic does not depend on it', async () => {
    const envoy = await gatewayEnvoy(MANIFESTS, await freePort());
    try {
      expect((await send(`${envoy.url}/x?async=true`, { body: 'x' })).status).toBe(503);
      expect((await send(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).status).toBe(503);
      expect((await send(`${envoy.url}/plain`)).status).toBe(200);
    } finally {
      await envoy.close();
    }
  });
});
