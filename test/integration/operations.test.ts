import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { request } from 'undici';
import { EnvoyStandIn } from '../support/envoy';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar } from '../support/sidecar';

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

async function withStack<T>(env: Record<string, string>, fn: (s: { sidecar: Sidecar; envoy: EnvoyStandIn }) => Promise<T>): Promise<T> {
  const extprocPort = await freePort();
  const envoy = await EnvoyStandIn.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
  const sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: app.url, ...env });
  try {
    return await fn({ sidecar, envoy });
  } finally {
    await sidecar.stop();
    await envoy.close();
  }
}

async function accept(envoy: EnvoyStandIn, path: string, method = 'POST'): Promise<{ status: number; id?: string; code?: string }> {
  const res = await request(`${envoy.url}${path}`, { method: method as 'POST', body: method === 'GET' ? undefined : '{}', headers: { 'content-type': 'application/json' } });
  const json = (await res.body.json()) as { run_id?: string; error?: { code: string } };
  return { status: res.statusCode, id: json.run_id, code: json.error?.code };
}

describe('operating it (SPEC §6)', () => {
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
      const ids = [
        (await accept(envoy, '/good?async=true')).id!,
        (await accept(envoy, '/good?async=1')).id!,
        (await accept(envoy, '/bad?async=true')).id!,
      ];
      expect((await accept(envoy, '/x?async=true&webhookEndpoint=nope')).status).toBe(400);
      for (const id of ids) await request(`${envoy.url}/v1/runs/${id}?wait=10`).then((r) => r.body.dump());
      const text = await (await request(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).body.text();
      expect(text).toContain('eas_runs_accepted_total{trigger="query"} 3');
      expect(text).toContain('eas_runs_finished_total{status="succeeded"} 2');
      expect(text).toContain('eas_runs_finished_total{status="failed"} 1');
      expect(text).toContain('eas_runs_rejected_total{code="invalid_webhook_endpoint"} 1');
      expect(text).toContain('eas_run_duration_seconds_count{status="succeeded"} 2');
      expect(text).toContain('eas_run_queue_wait_seconds_count 3');
      expect(text).toContain('eas_queue_depth 0');
      expect(text).toContain('eas_dispatches_in_flight 0');
      expect(text).toMatch(/eas_extproc_stream_duration_seconds_count\{decision="accepted"\} 3/);
      expect(text).toMatch(/eas_extproc_stream_duration_seconds_count\{decision="runs_api"\} 3/);
    });
    app.setHandler(Upstream.json(200, { ok: true }));
  });

  it('on SIGTERM refuses new runs, lets short runs finish, and hands long ones back', async () => {
    const extprocPort = await freePort();
    const envoy = await EnvoyStandIn.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const env = { REDIS_URL: redis.url, DISPATCH_URL: app.url, SHUTDOWN_GRACE: '1' };
    const first = await startTestSidecar({ ...env, EXTPROC_ADDR: `127.0.0.1:${extprocPort}` });
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

  it('ends a run of a worker that died (no heartbeat) within the lease timeout', async () => {
    const { Redis } = await import('ioredis');
    const { RunStore } = await import('../../src/runs');
    const client = new Redis(redis.url);
    const store = new RunStore(client, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 1000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
    const id = '11111111-2222-4333-8444-555555555555';
    // A worker takes the run and dies before any sidecar is running: nobody renews its lease.
    await store.create({ id, trigger: 'query', method: 'POST', path: '/orphan', target: '/orphan', headers: [], body: Buffer.alloc(0), requestId: null, owner: '', webhookUrl: null, gracePeriodMs: 60_000 });
    expect((await store.claim('dead-worker', 100)).map((r) => r.id)).toContain(id);
    client.disconnect();
    await withStack({ LEASE_TIMEOUT: '1' }, async ({ sidecar }) => {
      const admin = `http://127.0.0.1:${sidecar.adminPort}`;
      const ended = await eventually(async () => {
        const v = (await getJson(`${admin}/v1/runs/${id}`)).json;
        return v.status === 'failed' ? v : undefined;
      }, 5000, 'recovery');
      expect(ended.error.code).toBe('interrupted');
    });
  });
});
