/**
 * What one tenant can learn or do through Envoy: with OWNER_REQUIRED, nothing without the owner
 * header; and a failed run's error names no internal address (it named `127.0.0.1:<port>`).
 */
import { request } from '../support/http';
import { freePort } from '../support/ports';
import { describeWithEnvoy, RealEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar, writeConfigFile } from '../support/sidecar';
import { Upstream } from '../support/upstream';

describeWithEnvoy('tenant boundary through the real Envoy', () => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: RealEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  let closedPort: number;

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start();
    closedPort = await freePort();
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      // Straight to a port nobody listens on: every run fails to connect.
      DISPATCH_URL: `http://127.0.0.1:${closedPort}`,
      OWNER_REQUIRED: 'true',
      // A refused connection is the app saying "not now" (README "Queues"): fail at the first one.
      CONFIG_FILE: writeConfigFile('queues:\n  default: { max_backpressure_retries: 0 }\n'),
    });
    await eventually(
      async () =>
        (await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`, { headers: { authorization: 'Bearer a' } })).statusCode === 404
          ? true
          : undefined,
      10_000,
      'serving',
    );
  });
  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  it('refuses async requests and runs API calls without the owner header (401 owner_required)', async () => {
    const res = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{}' });
    expect(res.statusCode).toBe(401);
    expect(await res.body.json()).toMatchObject({ error: { code: 'owner_required' } });
    const ok = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{}', headers: { authorization: 'Bearer tenant-a' } });
    expect(ok.statusCode).toBe(202);
    const { run_id } = (await ok.body.json()) as { run_id: string };
    const anonymous = await request(`${envoy.url}/v1/runs/${run_id}`);
    expect(anonymous.statusCode).toBe(401);
    await anonymous.body.dump();
    const mine = await request(`${envoy.url}/v1/runs/${run_id}`, { headers: { authorization: 'Bearer tenant-a' } });
    expect(mine.statusCode).toBe(200);
    await mine.body.dump();
    // The listing and retry too: without the header, 401 (not a listing of the runs created without one).
    for (const [method, path] of [
      ['GET', '/v1/runs'],
      ['POST', `/v1/runs/${run_id}/retry`],
    ] as const) {
      const refused = await request(`${envoy.url}${path}`, { method });
      expect(refused.statusCode).toBe(401);
      expect(await refused.body.json()).toMatchObject({ error: { code: 'owner_required' } });
    }
  });

  it("lists and retries a tenant's own runs only", async () => {
    const [a, b] = [{ authorization: 'Bearer tenant-list-a' }, { authorization: 'Bearer tenant-list-b' }];
    const accepted = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{}', headers: a });
    const { run_id } = (await accepted.body.json()) as { run_id: string };
    await eventually(async () => {
      const r = await request(`${envoy.url}/v1/runs/${run_id}?wait=5`, { headers: a });
      return ((await r.body.json()) as { status: string }).status === 'failed' ? true : undefined;
    }, 20_000);
    const list = async (headers: Record<string, string>) =>
      ((await (await request(`${envoy.url}/v1/runs`, { headers })).body.json()) as { runs: Array<{ run_id: string }> }).runs.map((r) => r.run_id);
    expect(await list(a)).toEqual([run_id]);
    expect(await list(b)).toEqual([]);
    const foreign = await request(`${envoy.url}/v1/runs/${run_id}/retry`, { method: 'POST', headers: b });
    expect(foreign.statusCode).toBe(404);
    await foreign.body.dump();
    const own = await request(`${envoy.url}/v1/runs/${run_id}/retry`, { method: 'POST', headers: a });
    expect(own.statusCode).toBe(202);
    await own.body.dump();
  });

  it("tells a tenant why its run failed without naming the sidecar's internal addresses", async () => {
    const auth = { authorization: 'Bearer tenant-b' };
    const res = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{}', headers: auth });
    const { run_id } = (await res.body.json()) as { run_id: string };
    const view = await eventually(
      async () => {
        const r = await request(`${envoy.url}/v1/runs/${run_id}?wait=5`, { headers: auth });
        const v = (await r.body.json()) as { status: string; error: { code: string; message: string } | null };
        return v.status === 'failed' ? v : undefined;
      },
      20_000,
      'run fails',
    );
    expect(view.error).toEqual({ code: 'upstream_unreachable', message: 'The upstream call failed (ECONNREFUSED).' });
    expect(JSON.stringify(view)).not.toContain(String(closedPort));
    expect(JSON.stringify(view)).not.toContain('127.0.0.1');
  });
});
