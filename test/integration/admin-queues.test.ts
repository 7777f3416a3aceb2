/**
 * `GET /queues` on the admin port (README "Dashboard"), the data the dashboard's queues card shows,
 * against real runs: accepted through the real Envoy, dispatched by the sidecar to an app that holds
 * some calls and turns others away, counted in a real Redis. Checked against what the app saw and
 * when the runs were accepted, against the `eas_queue_*` gauges, and through the token, method and
 * Redis-down answers. Every answer is checked against openapi/openapi.yaml (test/support/http.ts).
 */
import type { ServerResponse } from 'node:http';
import { request } from '../support/http';
import { freePort } from '../support/ports';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar, writeConfigFile } from '../support/sidecar';
import { Upstream } from '../support/upstream';

const TOKEN = 'queues-admin-token-51c2';
const CONFIG = `
queues:
  gpu: { max_concurrency: 2 }
  busy: { max_backpressure_retries: 5, backpressure_max_delay: 60 }
routes:
  - { prefix: /gpu, queue: gpu }
  - { prefix: /busy, queue: busy }
`;

interface QueueView {
  name: string;
  queued: number;
  backing_off: number;
  in_flight: number;
  max_concurrency: number | null;
  oldest_queued_age_ms: number | null;
}

describeWithEnvoy('admin GET /queues', () => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: RealEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  /** Calls to /gpu the app holds open, in arrival order. */
  const held: ServerResponse[] = [];

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start((req, res) => {
      if (req.url.startsWith('/gpu')) return void held.push(res);
      // Not now, and not for a while: the run waits in its queue, backing off.
      if (req.url.startsWith('/busy')) return void res.writeHead(503, { 'retry-after': '30' }).end();
      res.writeHead(200).end('ok');
    });
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: app.url,
      CONFIG_FILE: writeConfigFile(CONFIG),
      ADMIN_TOKEN: TOKEN,
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  }, 60_000);

  afterAll(async () => {
    for (const res of held) if (!res.headersSent) res.writeHead(200).end('released');
    await sidecar?.stop();
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  }, 30_000);

  const admin = (path: string, init: { method?: string; token?: string | null } = {}) =>
    request(`http://127.0.0.1:${sidecar.adminPort}${path}`, {
      method: (init.method ?? 'GET') as 'GET',
      headers: init.token === null ? {} : { authorization: `Bearer ${init.token ?? TOKEN}` },
    });

  async function queues(): Promise<Record<string, QueueView>> {
    const res = await admin('/queues');
    expect([res.statusCode, res.headers['content-type']]).toEqual([200, 'application/json']);
    const body = (await res.body.json()) as { queues: QueueView[] };
    return Object.fromEntries(body.queues.map((q) => [q.name, q]));
  }

  async function accept(path: string): Promise<{ id: string; sentAt: number; acceptedAt: number }> {
    const sentAt = Date.now();
    const res = await request(`${envoy.url}${path}?async=true`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(202);
    return { id: ((await res.body.json()) as { run_id: string }).run_id, sentAt, acceptedAt: Date.now() };
  }

  /** eas_queue_* gauges of one queue, as a scrape shows them. */
  async function gauges(queue: string): Promise<Record<string, number>> {
    const text = await (await admin('/metrics', { token: null })).body.text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(new RegExp(`^(eas_queue_[a-z_]+)\\{queue="${queue}"\\} (\\S+)$`, 'gm'))) out[m[1]!] = Number(m[2]);
    return out;
  }

  it('lists every served queue with its limit before any run: the configured ones and default', async () => {
    expect(await queues()).toEqual({
      default: { name: 'default', queued: 0, backing_off: 0, in_flight: 0, max_concurrency: null, oldest_queued_age_ms: null },
      gpu: { name: 'gpu', queued: 0, backing_off: 0, in_flight: 0, max_concurrency: 2, oldest_queued_age_ms: null },
      busy: { name: 'busy', queued: 0, backing_off: 0, in_flight: 0, max_concurrency: null, oldest_queued_age_ms: null },
    });
    const head = await admin('/queues', { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(await head.body.text()).toBe('');
  });

  it('needs the admin token when one is set, and GET or HEAD', async () => {
    for (const token of [null, 'wrong-token']) {
      const res = await admin('/queues', { token });
      expect([res.statusCode, res.headers['www-authenticate']]).toEqual([401, 'Bearer']);
      expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    }
    const post = await admin('/queues', { method: 'POST' });
    expect([post.statusCode, post.headers.allow]).toEqual([405, 'GET, HEAD']);
  });

  it('counts queued and in-flight runs of a limited queue, and the oldest wait, as runs move through it', async () => {
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push(await accept(`/gpu/job/${i}`));
    await eventually(() => (held.length === 2 ? true : undefined), 10_000, 'two runs at the app');
    // The limit holds: the other three wait, the oldest of them the third accepted (first in, first out).
    await new Promise((r) => setTimeout(r, 300));
    const before = Date.now();
    const gpu = (await queues()).gpu!;
    const after = Date.now();
    expect(held).toHaveLength(2);
    expect(gpu).toMatchObject({ queued: 3, backing_off: 0, in_flight: 2, max_concurrency: 2 });
    expect(gpu.oldest_queued_age_ms).toBeGreaterThanOrEqual(before - runs[2]!.acceptedAt);
    expect(gpu.oldest_queued_age_ms).toBeLessThanOrEqual(after - runs[2]!.sentAt);
    // The same counts as the gauges a scrape reads.
    expect(await gauges('gpu')).toMatchObject({ eas_queue_depth: 3, eas_queue_backing_off: 0, eas_queue_in_flight: 2, eas_queue_limit: 2 });

    // Each call the app answers frees a slot that the next queued run takes.
    held[0]!.writeHead(200).end('done');
    await eventually(() => (held.length === 3 ? true : undefined), 10_000, 'the next run at the app');
    await eventually(async () => ((await queues()).gpu!.queued === 2 ? true : undefined), 10_000, 'two queued');
    expect((await queues()).gpu).toMatchObject({ queued: 2, in_flight: 2 });

    for (let i = 1; i < 5; i++) {
      await eventually(() => (held.length > i ? true : undefined), 10_000, `run ${i} at the app`);
      held[i]!.writeHead(200).end('done');
    }
    await eventually(async () => ((await queues()).gpu!.in_flight === 0 ? true : undefined), 10_000, 'the queue drained');
    expect((await queues()).gpu).toEqual({ name: 'gpu', queued: 0, backing_off: 0, in_flight: 0, max_concurrency: 2, oldest_queued_age_ms: null });
    expect(held).toHaveLength(5);
  }, 30_000);

  it('shows a run the app turned away as queued and backing off, as the run itself does', async () => {
    const run = await accept('/busy/job');
    await eventually(async () => ((await queues()).busy!.backing_off === 1 ? true : undefined), 10_000, 'the run backing off');
    const busy = (await queues()).busy!;
    expect(busy).toMatchObject({ queued: 1, backing_off: 1, in_flight: 0, max_concurrency: null });
    expect(busy.oldest_queued_age_ms).toBeGreaterThanOrEqual(0);
    const view = (await (await admin(`/v1/runs/${run.id}`)).body.json()) as { status: string; queue: string; queue_reason: string; next_attempt_at: string };
    expect([view.status, view.queue, view.queue_reason]).toEqual(['queued', 'busy', 'upstream_unavailable']);
    expect(Date.parse(view.next_attempt_at)).toBeGreaterThan(Date.now() + 20_000);
    expect(await gauges('busy')).toMatchObject({ eas_queue_depth: 1, eas_queue_backing_off: 1, eas_queue_in_flight: 0 });
    expect((await admin(`/v1/runs/${run.id}`, { method: 'DELETE' })).statusCode).toBe(200);
    await eventually(async () => ((await queues()).busy!.queued === 0 ? true : undefined), 10_000, 'the cancelled run gone from the queue');
  }, 30_000);

  it('answers 503 store_unavailable while Redis is down, and counts again once it is back', async () => {
    await redis.stop();
    const res = await admin('/queues');
    expect([res.statusCode, res.headers['retry-after']]).toEqual([503, '1']);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('store_unavailable');
    await redis.startProcess();
    await eventually(async () => ((await admin('/queues')).statusCode === 200 ? true : undefined), 15_000, 'Redis back');
  }, 30_000);
});
