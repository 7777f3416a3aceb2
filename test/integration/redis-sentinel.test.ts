/**
 * The sidecar on a Sentinel-managed Redis (one primary, two replicas, three sentinels, started by
 * the test) through the real Envoy (README "Redis topologies"): runs are accepted and served, the
 * topology shows every node, and after the primary is SIGKILLed the sidecar follows the sentinels
 * to the promoted replica by itself.
 */
import { request } from '../support/http';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisSentinelSet } from '../support/redis-sentinel';
import { Upstream } from '../support/upstream';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar } from '../support/sidecar';

describeWithEnvoy('on a Sentinel-managed Redis (1 primary, 2 replicas, 3 sentinels), through the real Envoy', () => {
  let redis: RedisSentinelSet;
  let app: Upstream;
  let envoy: RealEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;

  beforeAll(async () => {
    redis = await RedisSentinelSet.start();
    app = await Upstream.start();
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_SENTINELS: redis.sentinels,
      REDIS_SENTINEL_NAME: redis.name,
      REDIS_MIN_REPLICAS_ACK: '1',
      DISPATCH_URL: envoy.dispatchUrl,
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      20_000,
      'sidecar serving',
    );
  }, 90_000);

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  async function accept(path: string): Promise<{ status: number; json: any }> {
    const res = await request(`${envoy.url}${path}?async=true`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    return { status: res.statusCode, json: await res.body.json() };
  }
  async function view(id: string, wait = 10): Promise<any> {
    return (await request(`${envoy.url}/v1/runs/${id}?wait=${wait}`)).body.json();
  }

  it('accepts and runs through the primary the sentinels name, and shows every node', async () => {
    const res = await accept('/first');
    expect(res.status).toBe(202);
    expect((await view(res.json.run_id)).status).toBe('succeeded');
    const ready = await request(`http://127.0.0.1:${sidecar.adminPort}/readyz`);
    const body = (await ready.body.json()) as any;
    expect(ready.statusCode).toBe(200);
    expect(body.checks).toMatchObject({ redis: 'ok', replicas: 'ok' });
    expect(body.redis.mode).toBe('sentinel');
    const byRole = (role: string) => body.redis.nodes.filter((n: { role: string }) => n.role === role);
    expect(byRole('primary')).toEqual([{ address: `127.0.0.1:${await redis.primaryPort()}`, role: 'primary', reachable: true }]);
    expect(byRole('replica')).toHaveLength(2);
    expect(byRole('sentinel')).toHaveLength(3);
    expect(body.redis.nodes.every((n: { reachable: boolean }) => n.reachable)).toBe(true);
  });

  it('follows a failover: after the primary is SIGKILLed, runs are accepted on the promoted replica', async () => {
    const before = await accept('/before');
    expect(before.status).toBe(202);
    expect((await view(before.json.run_id)).status).toBe('succeeded');
    const old = await redis.primaryPort();
    await redis.node(old).stop('SIGKILL');
    const killedAt = Date.now();
    // Until the sentinels promote a replica the sidecar refuses (503 JSON), never hangs past Envoy's timeout.
    const answer = await eventually(
      async () => {
        const t0 = Date.now();
        const r = await accept('/after');
        expect(Date.now() - t0).toBeLessThan(2500);
        if (r.status !== 202) expect(r.json.error.code).toMatch(/^store_/);
        return r.status === 202 ? r : undefined;
      },
      30_000,
      'a 202 after the failover',
    );
    const promoted = await redis.primaryPort();
    expect(promoted).not.toBe(old);
    // Each connection finds the new primary on its own next reconnect (at most REDIS_BACKOFF's 2 s apart).
    const done = await eventually(async () => ((await view(answer.json.run_id)).status === 'succeeded' ? true : undefined), 15_000, 'the run to end');
    expect(done).toBe(true);
    // The run accepted before the failover was replicated (REDIS_MIN_REPLICAS_ACK=1): still there.
    expect((await view(before.json.run_id, 0)).status).toBe('succeeded');
    expect(Date.now() - killedAt).toBeLessThan(30_000);
  }, 60_000);
});
