/**
 * The sidecar on a real Redis Cluster (3 primaries, 3 replicas, started by the test) through the
 * real Envoy on the shipped config (README "Redis topologies"): the async path with its signed
 * webhook, the runs API, cancel, several queues whose keys land on every primary, readiness and
 * metrics showing the nodes, and REDIS_MIN_REPLICAS_ACK answering 503 store_not_replicated when the
 * replica of one run's shard stops, while runs of the other shards still get their 202.
 */
import { request } from '../support/http';
import { Webhook } from 'standardwebhooks';
import type { Cluster } from 'ioredis';
import { queueTag } from '../../src/runs';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisCluster } from '../support/redis-cluster';
import { Upstream } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar, writeConfigFile } from '../support/sidecar';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const OWNER = { authorization: 'Bearer owner-1' };
const ADMIN_TOKEN = 'admin-secret';

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

describeWithEnvoy('on a Redis Cluster (3 primaries + 3 replicas), through the real Envoy', () => {
  let cluster: RedisCluster;
  let inspect: Cluster;
  let app: Upstream;
  let hooks: WebhookReceiver;
  let envoy: RealEnvoy;
  let sidecar: Sidecar;
  /** One queue per primary (by its tag's slot), each routed from /q/<name>. */
  const queueOn = new Map<number, string>();
  let configFile: string;

  beforeAll(async () => {
    // A node timeout well above the test's own pauses: a replica stopped for a second is not failed.
    cluster = await RedisCluster.start({ nodeTimeoutMs: 5000 });
    inspect = cluster.client();
    for (let i = 0; queueOn.size < 3 && i < 200; i++) {
      const port = await cluster.primaryOf(`{t:${queueTag(`q${i}`)}}`);
      if (!queueOn.has(port)) queueOn.set(port, `q${i}`);
    }
    const names = [...queueOn.values()];
    configFile = writeConfigFile(
      ['queues:', ...names.map((n) => `  ${n}: { max_concurrency: 1 }`), 'routes:', ...names.map((n) => `  - { prefix: /q/${n}, queue: ${n} }`), ''].join('\n'),
    );
    app = await Upstream.start();
    hooks = await WebhookReceiver.start();
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_CLUSTER_NODES: cluster.seeds,
      DISPATCH_URL: envoy.dispatchUrl,
      WEBHOOK_SECRET: SECRET,
      CONFIG_FILE: configFile,
      ADMIN_TOKEN,
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      20_000,
      'sidecar serving',
    );
  }, 90_000);

  afterEach(() => app.setHandler(Upstream.json(200, { ok: true })));

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await hooks?.close();
    await app?.close();
    inspect?.disconnect();
    await cluster?.destroy();
  });

  type Res = { status: number; headers: Record<string, unknown>; json: () => any };
  async function call(base: string, method: string, path: string, headers: Record<string, string> = OWNER, body?: string): Promise<Res> {
    const res = await request(base + path, { method: method as 'GET', headers, body });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, json: () => JSON.parse(text) };
  }
  const viaEnvoy = (method: string, path: string, headers: Record<string, string> = OWNER) => call(envoy.url, method, path, headers);
  const viaAdmin = (method: string, path: string) => call(`http://127.0.0.1:${sidecar.adminPort}`, method, path, { authorization: `Bearer ${ADMIN_TOKEN}` });

  async function accept(path: string, base = envoy.url): Promise<Res> {
    return call(base, 'POST', `${path}${path.includes('?') ? '&' : '?'}async=true`, { 'content-type': 'application/json', ...OWNER }, '{"x":1}');
  }
  async function accepted(path: string): Promise<string> {
    const res = await accept(path);
    expect(res.status).toBe(202);
    return res.json().run_id as string;
  }
  async function final(id: string) {
    return eventually(
      async () => {
        const r = (await viaEnvoy('GET', `/v1/runs/${id}?wait=5`)).json();
        return ['queued', 'running'].includes(r.status) ? undefined : r;
      },
      20_000,
      `run ${id} to end`,
    );
  }

  it('accepts, replays and delivers a signed webhook; the runs API reads the run and its result', async () => {
    app.setHandler((req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ got: req.body.toString() })));
    const res = await accept(`/v1/run?webhookEndpoint=${encodeURIComponent(hooks.url)}`);
    expect(res.status).toBe(202);
    const id = res.json().run_id as string;
    expect(id.slice(-4)).toBe(queueTag('default'));
    const view = (await viaEnvoy('GET', `/v1/runs/${id}?wait=10`)).json();
    expect(view).toMatchObject({ run_id: id, status: 'succeeded', queue: 'default', response: { status_code: 200 } });
    const replayed = app.requests.find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id));
    expect(replayed?.body.toString()).toBe('{"x":1}');
    const result = await viaEnvoy('GET', `/v1/runs/${id}/result`);
    expect(result.json()).toEqual({ got: '{"x":1}' });
    const [hook] = await hooks.waitForRequests(1, 10_000);
    const hh = Object.fromEntries(Object.entries(hook!.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    expect(hh['x-async-run-id']).toBe(id);
    expect(() => new Webhook(SECRET).verify(hook!.body.toString(), hh)).not.toThrow();
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${id}`)).json().webhook.status === 'delivered' ? true : undefined));
    // The run hash lives on the primary of its queue's tag.
    const runPort = await cluster.primaryOf(`{t:${queueTag('default')}}`);
    expect(await cluster.onNode(runPort, (r) => r.exists(`eas:{t:${queueTag('default')}}:run:${id}`))).toBe(1);
  });

  it("spreads several queues over every primary: each queue's keys sit on the primary of its tag, and every run ends", async () => {
    const ids: Array<{ id: string; queue: string; port: number }> = [];
    for (const [port, queue] of queueOn) for (let i = 0; i < 4; i++) ids.push({ id: await accepted(`/q/${queue}/job-${i}`), queue, port });
    for (const r of ids) expect((await final(r.id)).status).toBe('succeeded');
    for (const r of ids) expect(r.id.slice(-4)).toBe(queueTag(r.queue));
    const primaries = await cluster.primaries();
    expect(primaries).toHaveLength(3);
    for (const p of primaries) {
      const keys = await cluster.onNode(p.port, (r) => r.keys('eas:*'));
      const queue = queueOn.get(p.port)!;
      // This primary holds its queue's runs and index, and none of the other queues' keys.
      expect(keys.filter((k) => k.includes(`:run:`) && k.startsWith(`eas:{t:${queueTag(queue)}}`)).length).toBeGreaterThanOrEqual(4);
      for (const [other, q] of queueOn) if (other !== p.port) expect(keys.some((k) => k.startsWith(`eas:{t:${queueTag(q)}}`))).toBe(false);
    }
    // The admin listing merges the queues of every shard.
    const listed = (await viaAdmin('GET', '/v1/runs?limit=100')).json().runs.map((r: { run_id: string }) => r.run_id);
    for (const r of ids) expect(listed).toContain(r.id);
  });

  it('cancels a running run (the app call is aborted, a waiting reader is woken) and a queued one (it never starts)', async () => {
    const queue = [...queueOn.values()][0]!;
    app.setHandler(Upstream.hang());
    const aborted = app.aborted.length;
    const running = await accepted(`/q/${queue}/hang`);
    await eventually(async () => ((await viaEnvoy('GET', `/v1/runs/${running}`)).json().status === 'running' ? true : undefined));
    const queued = await accepted(`/q/${queue}/never-starts`); // max_concurrency 1
    expect((await viaEnvoy('GET', `/v1/runs/${queued}`)).json()).toMatchObject({ status: 'queued', queue_position: 0 });
    expect((await viaEnvoy('DELETE', `/v1/runs/${queued}`)).json().status).toBe('cancelled');
    const waiting = viaEnvoy('GET', `/v1/runs/${running}?wait=30`);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    expect((await viaEnvoy('DELETE', `/v1/runs/${running}`)).json().status).toBe('cancelled');
    expect((await waiting).json().status).toBe('cancelled');
    expect(Date.now() - t0).toBeLessThan(5000); // woken by the shard channel, not the end of its wait
    await app.waitForAborted(aborted + 1, 2000); // the cancel reached the worker on the shard channel
    await new Promise((r) => setTimeout(r, 500));
    expect(app.requests.some((r) => r.url.startsWith(`/q/${queue}/never-starts`))).toBe(false);
  });

  it('reports every node in /readyz and in metrics', async () => {
    const ready = await viaAdmin('GET', '/readyz');
    expect(ready.status).toBe(200);
    const body = ready.json();
    expect(body.checks.redis).toBe('ok');
    expect(body.redis.mode).toBe('cluster');
    expect(body.redis.nodes).toHaveLength(6);
    expect(body.redis.nodes.filter((n: { role: string }) => n.role === 'primary')).toHaveLength(3);
    expect(body.redis.nodes.every((n: { reachable: boolean }) => n.reachable)).toBe(true);
    for (const n of cluster.nodes) expect(body.redis.nodes.map((x: { address: string }) => x.address)).toContain(`127.0.0.1:${n.port}`);
    const metrics = await (await request(`http://127.0.0.1:${sidecar.adminPort}/metrics`)).body.text();
    expect(metrics.match(/^eas_redis_node_up\{node="127\.0\.0\.1:\d+",role="(primary|replica)"\} 1$/gm)).toHaveLength(6);
  });

  it('with REDIS_MIN_REPLICAS_ACK=1, answers 503 store_not_replicated while the replica of the run’s shard is frozen, and 202 elsewhere', async () => {
    const extprocPort = await freePort();
    const envoy2 = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const durable = await startTestSidecar(
      { EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_CLUSTER_NODES: cluster.seeds, REDIS_MIN_REPLICAS_ACK: '1', CONFIG_FILE: configFile },
      ['--role', 'extproc'],
    ).catch(async (err) => {
      await envoy2.close();
      throw err;
    });
    try {
      await eventually(
        async () => ((await request(`${envoy2.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
        20_000,
        'durable sidecar serving',
      );
      const shards = [...queueOn];
      expect(shards.length).toBeGreaterThanOrEqual(2);
      const [frozenPort, frozenQueue] = shards[0]!;
      const [, otherQueue] = shards[1]!;
      expect((await accept(`/q/${frozenQueue}/before`, envoy2.url)).status).toBe(202);
      const ready = (await call(`http://127.0.0.1:${durable.adminPort}`, 'GET', '/readyz', {})).json();
      expect(ready.checks.replicas).toBe('ok');
      const [replica] = await cluster.replicasOf(frozenPort!);
      cluster.node(replica!).signal('SIGSTOP');
      try {
        const t0 = Date.now();
        const refused = await accept(`/q/${frozenQueue}/while-frozen`, envoy2.url);
        const took = Date.now() - t0;
        expect(refused.status).toBe(503);
        expect(refused.headers['retry-after']).toBe('1');
        const err = refused.json().error;
        expect(err.code).toBe('store_not_replicated');
        expect(refused.headers['location']).toBe(`/v1/runs/${err.run_id}`);
        expect(took).toBeLessThan(1900); // within Envoy's 2 s message timeout
        // The run exists on its primary: the client can look it up.
        expect((await viaEnvoy('GET', `/v1/runs/${err.run_id}?wait=10`)).json().status).toBe('succeeded');
        // The other shards' replicas answer: their runs are accepted meanwhile.
        expect((await accept(`/q/${otherQueue}/elsewhere`, envoy2.url)).status).toBe(202);
      } finally {
        cluster.node(replica!).signal('SIGCONT');
      }
      await eventually(async () => ((await accept(`/q/${frozenQueue}/after`, envoy2.url)).status === 202 ? true : undefined), 10_000, '202 again');
    } finally {
      await durable.stop();
      await envoy2.close();
    }
  }, 60_000);
});
