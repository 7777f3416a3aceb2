import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { request } from '../support/http';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar } from '../support/sidecar';
import { testRunId } from '../support/run-ids';

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
let redis: RedisServer;
let app: Upstream;

beforeAll(async () => {
  // AOF fsync'd before every reply: a Redis stop in these tests loses nothing that was acknowledged.
  redis = await RedisServer.start({ args: ['--save', '', '--appendonly', 'yes', '--appendfsync', 'always'] });
  app = await Upstream.start();
});
afterAll(async () => {
  await app?.close();
  await redis?.destroy();
});

async function getJson(url: string): Promise<{ status: number; json: any }> {
  const res = await request(url);
  return { status: res.statusCode, json: await res.body.json() };
}

function grpcHealth(port: number): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check: (req: { service: string }, cb: (err: Error | null, res?: { status: string }) => void) => void;
  };
  return new Promise((resolve, reject) =>
    client.check({ service: '' }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(String(res!.status));
    }),
  );
}

/** The real Envoy on the shipped envoy/envoy.yaml in front of an in-process sidecar. */
async function withStack<T>(env: Record<string, string>, fn: (s: { sidecar: Sidecar; envoy: RealEnvoy }) => Promise<T>): Promise<T> {
  const extprocPort = await freePort();
  const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
  const sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: app.url, ...env });
  try {
    return await fn({ sidecar, envoy });
  } finally {
    await sidecar.stop();
    await envoy.close();
  }
}

interface Answer {
  status: number;
  id?: string;
  code?: string;
  contentType?: string;
  body: string;
}

/** One request through Envoy; the body is kept as text since Envoy's own errors are not JSON. */
async function send(envoy: RealEnvoy, path: string, method = 'POST'): Promise<Answer> {
  const res = await request(`${envoy.url}${path}`, {
    method: method as 'POST',
    body: method === 'GET' ? undefined : '{}',
    headers: { 'content-type': 'application/json' },
  });
  const body = await res.body.text();
  let json: { run_id?: string; error?: { code: string } } = {};
  try {
    json = JSON.parse(body) as typeof json;
  } catch {
    /* Envoy's local reply */
  }
  return { status: res.statusCode, id: json.run_id, code: json.error?.code, contentType: res.headers['content-type'] as string | undefined, body };
}
const accept = send;

/** Waits until Envoy routes to the sidecar and the sidecar answers (its health turns SERVING once Redis answered). */
async function serving(envoy: RealEnvoy): Promise<void> {
  await eventually(
    async () => ((await send(envoy, '/v1/runs/00000000-0000-4000-8000-000000000000', 'GET')).status === 404 ? true : undefined),
    15_000,
    'sidecar answering through Envoy',
  );
}

describeWithEnvoy('operating it through the real Envoy (docs/CONTRACT.md §6)', () => {
  it('reports liveness, readiness and gRPC health across a Redis outage', async () => {
    await withStack({}, async ({ sidecar }) => {
      const admin = `http://127.0.0.1:${sidecar.adminPort}`;
      await eventually(async () => ((await grpcHealth(sidecar.extprocPort!)) === 'SERVING' ? true : undefined));
      expect((await getJson(`${admin}/readyz`)).status).toBe(200);
      await redis.stop();
      const down = await eventually(async () => {
        const r = await getJson(`${admin}/readyz`);
        return r.status === 503 ? r : undefined;
      });
      expect(down.json).toMatchObject({ status: 'not_ready', checks: { redis: 'unreachable' } });
      expect((await getJson(`${admin}/healthz`)).status).toBe(200);
      await redis.startProcess();
      await eventually(async () => ((await getJson(`${admin}/readyz`)).status === 200 ? true : undefined), 10_000, 'ready again');
    });
  });

  it('exports metrics that add up after a known set of runs', async () => {
    await withStack({}, async ({ sidecar, envoy }) => {
      app.setHandler((req, res) => {
        const status = req.url.startsWith('/bad') ? 500 : 200;
        res.writeHead(status, { 'content-type': 'text/plain' }).end('x');
      });
      const ids = [(await accept(envoy, '/good?async=true')).id!, (await accept(envoy, '/good?async=1')).id!, (await accept(envoy, '/bad?async=true')).id!];
      expect((await accept(envoy, '/x?async=true&webhookEndpoint=nope')).status).toBe(400);
      for (const id of ids) await request(`${envoy.url}/v1/runs/${id}?wait=10`).then((r) => r.body.dump());
      const text = await (await request(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).body.text();
      expect(text).toContain('eas_runs_accepted_total{trigger="query"} 3');
      expect(text).toContain('eas_runs_finished_total{status="succeeded"} 2');
      expect(text).toContain('eas_runs_finished_total{status="failed"} 1');
      expect(text).toContain('eas_runs_rejected_total{code="invalid_webhook_endpoint"} 1');
      expect(text).toContain('eas_run_duration_seconds_count{status="succeeded"} 2');
      expect(text).toContain('eas_run_queue_wait_seconds_count 3');
      expect(text).toContain('eas_queue_depth{queue=\"default\"} 0');
      expect(text).toContain('eas_dispatches_in_flight 0');
      expect(text).toMatch(/eas_extproc_stream_duration_seconds_count\{decision="accepted"\} 3/);
      expect(text).toMatch(/eas_extproc_stream_duration_seconds_count\{decision="runs_api"\} 3/);
    });
    app.setHandler(Upstream.json(200, { ok: true }));
  });

  it('on SIGTERM refuses new runs, lets short runs finish, and hands long ones back', async () => {
    const extprocPort = await freePort();
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const env = { REDIS_URL: redis.url, DISPATCH_URL: app.url, SHUTDOWN_GRACE: '1' };
    const first = await startTestSidecar({ ...env, EXTPROC_ADDR: `127.0.0.1:${extprocPort}` });
    await serving(envoy);
    app.setHandler((req, res) => {
      if (req.url.startsWith('/short')) setTimeout(() => res.writeHead(200).end('short'), 300);
      // long runs hang until the client goes away
    });
    const short = (await accept(envoy, '/short?async=true')).id!;
    const longPost = (await accept(envoy, '/long-post?async=true')).id!;
    const longGet = (await accept(envoy, '/long-get?async=true', 'GET')).id!;
    await eventually(() => (app.requests.filter((r) => r.url.startsWith('/long')).length === 2 ? true : undefined));
    const stopping = first.stop();
    const refused = await accept(envoy, '/late?async=true');
    expect(refused).toMatchObject({ status: 503, code: 'shutting_down' });
    await stopping;

    // A second replica (started after) sees what the first left.
    const second = await startTestSidecar({ ...env, EXTPROC_ADDR: `127.0.0.1:${extprocPort}` });
    try {
      const admin = `http://127.0.0.1:${second.adminPort}`;
      const view = async (id: string) => (await getJson(`${admin}/v1/runs/${id}`)).json;
      expect((await view(short)).status).toBe('succeeded');
      expect(await view(longPost)).toMatchObject({ status: 'failed', error: { code: 'interrupted' } });
      // The idempotent GET went back to the queue and the second replica dispatched it again.
      await eventually(async () => ((await view(longGet)).dispatch_attempts === 2 ? true : undefined));
      expect(app.requests.filter((r) => r.url === '/long-get').map((r) => Object.fromEntries(r.headers)['x-async-run-id'])).toEqual([longGet, longGet]);
    } finally {
      await second.stop();
      await envoy.close();
      app.setHandler(Upstream.json(200, { ok: true }));
    }
  });

  it('answers a clear JSON 503 from the sidecar while Redis is down, and loses no accepted run', async () => {
    await withStack({}, async ({ envoy }) => {
      await serving(envoy);
      // Slow enough that the runs are still queued or running when Redis dies.
      app.setHandler((_req, res) => void setTimeout(() => res.writeHead(200).end('ok'), 500));
      const before = await Promise.all([1, 2, 3].map(() => accept(envoy, '/before?async=true')));
      expect(before.map((a) => a.status)).toEqual([202, 202, 202]);
      await redis.stop('SIGKILL');
      try {
        const down = await accept(envoy, '/during?async=true');
        const api = await send(envoy, `/v1/runs/${before[0]!.id}`, 'GET');
        // Both come from the sidecar (an ImmediateResponse), not from Envoy: JSON with a code.
        expect(down).toMatchObject({ status: 503, code: 'store_unavailable', contentType: 'application/json' });
        expect(api).toMatchObject({ status: 503, code: 'store_unavailable', contentType: 'application/json' });
      } finally {
        await redis.startProcess();
      }
      app.setHandler(Upstream.json(200, { ok: true }));
      // The runs acknowledged before the crash are all there (AOF always) and end.
      for (const a of before) {
        const v = await eventually(
          async () => {
            const r = await send(envoy, `/v1/runs/${a.id}?wait=5`, 'GET');
            return r.status === 200 && JSON.parse(r.body).status !== 'queued' && JSON.parse(r.body).status !== 'running' ? JSON.parse(r.body) : undefined;
          },
          30_000,
          `run ${a.id} to end`,
        );
        expect(v.status).toMatch(/^(succeeded|failed)$/);
      }
      expect((await accept(envoy, '/after?async=true')).status).toBe(202);
    });
  }, 60_000);

  it("between SIGTERM and exit clients get 503 shutting_down from the sidecar, then Envoy's own empty 503 once it is gone", async () => {
    const extprocPort = await freePort();
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const sidecar = await startTestSidecar({ REDIS_URL: redis.url, DISPATCH_URL: app.url, SHUTDOWN_GRACE: '12', EXTPROC_ADDR: `127.0.0.1:${extprocPort}` });
    try {
      await serving(envoy);
      // One run that hangs keeps the sidecar draining for SHUTDOWN_GRACE.
      app.setHandler(Upstream.hang());
      const held = await accept(envoy, '/held?async=true');
      expect(held.status).toBe(202);
      await eventually(() => (app.requests.some((r) => r.url === '/held') ? true : undefined));
      const stopping = sidecar.stop();
      let gone = false;
      void stopping.then(() => (gone = true));
      const during: Answer[] = [];
      // Envoy's health check does not help here: after a check it waits no_traffic_interval (60 s
      // by default) or interval (5 s) before the next, and a cluster's only host is used even when
      // unhealthy (panic threshold). So the sidecar itself must answer until it exits.
      for (let i = 0; i < 20; i++) {
        during.push(await accept(envoy, '/late?async=true'));
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(gone).toBe(false);
      expect(during.filter((a) => a.status !== 503 || a.code !== 'shutting_down')).toEqual([]);
      expect(during[0]).toMatchObject({ contentType: 'application/json' });
      await stopping;
      const after = await accept(envoy, '/after-exit?async=true');
      // Nobody listens any more: the ext_proc stream cannot open, failure_mode_allow: false, Envoy answers itself.
      expect(after).toMatchObject({ status: 503, body: '', code: undefined });
      expect(app.requests.some((r) => r.url.startsWith('/after-exit') || r.url.startsWith('/late'))).toBe(false);
    } finally {
      await sidecar.stop();
      await envoy.close();
      app.setHandler(Upstream.json(200, { ok: true }));
    }
  }, 60_000);

  it('ends a run of a worker that died (no heartbeat) within the lease timeout', async () => {
    const { Redis } = await import('ioredis');
    const { RunStore } = await import('../../src/runs');
    const client = new Redis(redis.url);
    const store = new RunStore(client, {
      keyPrefix: 'eas',
      runTtlMs: 60_000,
      leaseTimeoutMs: 1000,
      maxDispatchAttempts: 3,
      redispatchInterrupted: 'idempotent',
    });
    const id = testRunId(1);
    // A worker takes the run and dies before any sidecar is running: nobody renews its lease.
    await store.create({
      id,
      trigger: 'query',
      method: 'POST',
      path: '/orphan',
      target: '/orphan',
      headers: [],
      body: Buffer.alloc(0),
      requestId: null,
      owner: '',
      webhookUrl: null,
      gracePeriodMs: 60_000,
    });
    expect((await store.claim('dead-worker', 100)).map((r) => r.id)).toContain(id);
    client.disconnect();
    await withStack({ LEASE_TIMEOUT: '1' }, async ({ sidecar }) => {
      const admin = `http://127.0.0.1:${sidecar.adminPort}`;
      const ended = await eventually(
        async () => {
          const v = (await getJson(`${admin}/v1/runs/${id}`)).json;
          return v.status === 'failed' ? v : undefined;
        },
        5000,
        'recovery',
      );
      expect(ended.error.code).toBe('interrupted');
    });
  });
});
