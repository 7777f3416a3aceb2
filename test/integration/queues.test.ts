/**
 * Named queues protect the app (README "Queues"): a global concurrency limit across replicas (also
 * when one is SIGKILLed), priorities, fair share between owners, backpressure from the app,
 * queue-time expiry, and where a run stands. Runs are accepted through the real Envoy on the
 * shipped config; worker replicas are separate sidecars (in this process, or real processes).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { RunStore, type RunView } from '../../src/runs';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { Upstream, type RecordedRequest } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';
import { freePort } from '../support/ports';
import { ensureBuilt, spawnSidecar, type SidecarProcess } from '../support/process';
import { eventually, startTestSidecar } from '../support/sidecar';

const CONFIG = `
queues:
  gpu: { max_concurrency: 2 }
  one: { max_concurrency: 1 }
  busy: { max_backpressure_retries: 3, backpressure_max_delay: 5 }
  short: { max_concurrency: 1, max_queue_time: 1 }
routes:
  - { prefix: /gpu, queue: gpu }
  - { prefix: /one, queue: one }
  - { prefix: /busy, queue: busy }
  - { prefix: /short, queue: short }
  - { prefix: /one/background, queue: one, priority: low }
`;

type Worker = { stop: () => Promise<void> };

describeWithEnvoy('named queues (README "Queues")', () => {
  let redis: RedisServer;
  let app: Upstream;
  let hooks: WebhookReceiver;
  let envoy: RealEnvoy;
  let acceptor: Awaited<ReturnType<typeof startTestSidecar>>;
  let db: Redis;
  let store: RunStore;
  let configFile: string;
  const workers: Worker[] = [];
  const procs: SidecarProcess[] = [];

  // The app: counts calls in progress, and holds those whose path is in `held` until released.
  let active = 0;
  let maxActive = 0;
  let delayMs = 0;
  const held = new Map<string, ServerResponse>();
  let holdPaths: (path: string) => boolean = () => false;
  let arrivals: string[] = [];
  const counting = (req: RecordedRequest, res: ServerResponse): void => {
    const path = req.url.split('?')[0]!;
    arrivals.push(path);
    active++;
    maxActive = Math.max(maxActive, active);
    res.on('close', () => active--);
    if (holdPaths(path)) return void held.set(path, res);
    setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end(`done ${path}`), delayMs);
  };

  beforeAll(async () => {
    ensureBuilt();
    configFile = join(mkdtempSync(join(tmpdir(), 'eas-queues-')), 'queues.yaml');
    writeFileSync(configFile, CONFIG);
    redis = await RedisServer.start();
    db = new Redis(redis.url);
    store = new RunStore(db, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 2000, maxDispatchAttempts: 3, redispatchInterrupted: 'always' });
    hooks = await WebhookReceiver.start();
    app = await Upstream.start(counting);
    const extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    acceptor = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, CONFIG_FILE: configFile }, ['--role', 'extproc']);
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  }, 60_000);

  afterEach(async () => {
    for (const res of held.values()) if (!res.headersSent) res.writeHead(200).end('released');
    held.clear();
    for (const w of workers.splice(0)) await w.stop();
    for (const p of procs.splice(0)) {
      if (p.child.exitCode === null && p.child.signalCode === null) p.kill('SIGKILL');
      await p.exited;
    }
    app.setHandler(counting);
    holdPaths = () => false;
    delayMs = 0;
    maxActive = 0;
    arrivals = [];
    await eventually(() => (active === 0 ? true : undefined), 10_000, 'the app idle');
  });

  afterAll(async () => {
    await acceptor?.stop();
    await envoy?.close();
    await app?.close();
    await hooks?.close();
    db?.disconnect();
    await redis?.destroy();
  });

  async function worker(env: Record<string, string> = {}): Promise<Worker> {
    const w = await startTestSidecar(
      { REDIS_URL: redis.url, DISPATCH_URL: app.url, CONFIG_FILE: configFile, LEASE_TIMEOUT: '2', SHUTDOWN_GRACE: '0.2', ...env },
      ['--role', 'worker'],
    );
    workers.push(w);
    return w;
  }

  async function accept(path: string, headers: Record<string, string> = {}, webhook?: string): Promise<string> {
    const query = webhook ? `async=true&webhookEndpoint=${encodeURIComponent(webhook)}` : 'async=true';
    const res = await request(`${envoy.url}${path}?${query}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', ...headers } });
    const text = await res.body.text();
    expect(res.statusCode).toBe(202);
    return (JSON.parse(text) as { run_id: string }).run_id;
  }

  async function view(id: string): Promise<RunView> {
    return (await store.get(id))!.view;
  }

  async function allEnded(ids: string[], timeoutMs = 30_000): Promise<RunView[]> {
    return eventually(
      async () => {
        const views = await Promise.all(ids.map(view));
        return views.every((v) => v.status !== 'queued' && v.status !== 'running') ? views : undefined;
      },
      timeoutMs,
      'every run to end',
    );
  }

  it('never puts more than max_concurrency runs at the app, across two replicas', async () => {
    delayMs = 200;
    await worker();
    await worker();
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => accept(`/gpu/job/${i}`)));
    const views = await allEnded(ids);
    expect(views.map((v) => v.status)).toEqual(ids.map(() => 'succeeded'));
    expect(views.every((v) => v.queue === 'gpu')).toBe(true);
    expect(maxActive).toBe(2); // the limit is reached, and never passed
  }, 60_000);

  it('keeps the limit when a replica is SIGKILLed mid-run; its slots come back through lease recovery', async () => {
    ensureBuilt();
    delayMs = 300;
    const spawnWorker = async () => {
      const p = spawnSidecar(
        {
          REDIS_URL: redis.url,
          DISPATCH_URL: app.url,
          CONFIG_FILE: configFile,
          LEASE_TIMEOUT: '2',
          REDISPATCH_INTERRUPTED: 'always',
          ADMIN_ADDR: `127.0.0.1:${await freePort()}`,
          LOG_LEVEL: 'info',
        },
        ['--role', 'worker'],
      );
      procs.push(p);
      await p.waitForLog('envoy-async-sidecar started', 15_000);
      return p;
    };
    const [victim] = [await spawnWorker(), await spawnWorker()];
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => accept(`/gpu/kill/${i}`)));
    await eventually(() => (arrivals.length >= 8 ? true : undefined), 20_000, 'some runs at the app');
    victim!.kill('SIGKILL');
    const views = await allEnded(ids, 60_000);
    expect(views.filter((v) => v.status !== 'succeeded')).toEqual([]);
    expect(maxActive).toBeLessThanOrEqual(2);
    // The killed replica's runs were dispatched again (POSTs, REDISPATCH_INTERRUPTED=always).
    expect(arrivals.length).toBeGreaterThanOrEqual(40);
  }, 90_000);

  it("lets the queues take turns: one queue's backlog does not keep a worker's slots from another queue", async () => {
    delayMs = 50;
    await worker({ DISPATCH_CONCURRENCY: '2' });
    const backlog = await Promise.all(Array.from({ length: 60 }, (_, i) => accept(`/busy/backlog/${i}`)));
    await eventually(() => (arrivals.length >= 4 ? true : undefined), 10_000, 'the backlog being worked');
    const startedBefore = arrivals.length;
    const other = await accept('/elsewhere/one'); // the default queue
    await allEnded([other]);
    // Within a few slots of being queued, not after the other queue's 60.
    expect(arrivals.indexOf('/elsewhere/one') - startedBefore).toBeLessThanOrEqual(4);
    await allEnded(backlog);
  }, 60_000);

  it('takes higher-priority runs first: low-priority runs queued earlier start after normal ones', async () => {
    holdPaths = (p) => p === '/one/block';
    await worker();
    await accept('/one/block');
    await eventually(() => (held.has('/one/block') ? true : undefined), 10_000, 'the slot taken');
    const low = [await accept('/one/low/1', { prefer: 'priority=low' }), await accept('/one/background/2')];
    const normal = [await accept('/one/normal/1'), await accept('/one/normal/2')];
    // Raising is not honoured: a low-priority route stays low.
    const raised = await accept('/one/background/3', { prefer: 'priority=high' });
    expect((await view(low[1]!)).priority).toBe('low');
    expect((await view(raised)).priority).toBe('low');
    held.get('/one/block')!.writeHead(200).end('ok');
    await allEnded([...low, ...normal, raised]);
    expect(arrivals.slice(1)).toEqual(['/one/normal/1', '/one/normal/2', '/one/low/1', '/one/background/2', '/one/background/3']);
  }, 30_000);

  it('refuses a priority that is none of high, normal, low with a JSON 400', async () => {
    const res = await request(`${envoy.url}/one/x?async=true`, { method: 'POST', body: '{}', headers: { prefer: 'priority=urgent' } });
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('invalid_priority');
  });

  it("shares a queue fairly: one tenant's burst does not starve another tenant's single run", async () => {
    holdPaths = (p) => p === '/one/block';
    await worker();
    await accept('/one/block');
    await eventually(() => (held.has('/one/block') ? true : undefined), 10_000, 'the slot taken');
    const burst = await Promise.all(Array.from({ length: 200 }, (_, i) => accept(`/one/a/${i}`, { authorization: 'Bearer tenant-a' })));
    const single = await accept('/one/b/0', { authorization: 'Bearer tenant-b' });
    expect((await view(single)).queue_position).toBe(1); // after A's first run, owners take turns
    held.get('/one/block')!.writeHead(200).end('ok');
    await allEnded([...burst, single], 60_000);
    const started = arrivals.slice(1);
    expect(started.indexOf('/one/b/0')).toBeLessThanOrEqual(1);
  }, 90_000);

  it('sends a run back to its queue when the app says 503 with Retry-After, and succeeds on the third try', async () => {
    let calls = 0;
    const at: number[] = [];
    app.setHandler((req, res) => {
      arrivals.push(req.url);
      at.push(Date.now());
      if (++calls <= 2) return void res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }).end('warming up');
      res.writeHead(200, { 'content-type': 'text/plain' }).end('warm');
    });
    await worker();
    const id = await accept('/busy/model');
    const waiting = await eventually(
      async () => {
        const v = await view(id);
        return v.status === 'queued' && v.queue_reason ? v : undefined;
      },
      10_000,
      'the run back in its queue',
    );
    expect(waiting).toMatchObject({ queue_reason: 'upstream_unavailable', queue_position: null });
    expect(waiting.next_attempt_at).not.toBeNull();
    const [done] = await allEnded([id]);
    expect(done).toMatchObject({ status: 'succeeded', dispatch_attempts: 3, response: { status_code: 200 } });
    expect(done!.dispatch_history).toHaveLength(2);
    expect(done!.dispatch_history.map((h) => [h.status_code, h.retry_in_ms])).toEqual([
      [503, 1000],
      [503, 1000],
    ]);
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(1900);
  }, 30_000);

  it('fails a run once the app has turned it away max_backpressure_retries times', async () => {
    app.setHandler((_req, res) => void res.writeHead(429, { 'retry-after': '0' }).end('busy'));
    await worker();
    const id = await accept('/busy/never');
    const [done] = await allEnded([id]);
    expect(done).toMatchObject({ status: 'failed', dispatch_attempts: 4, error: { code: 'upstream_status' }, response: { status_code: 429 } });
    expect(done!.dispatch_history.map((h) => h.status_code)).toEqual([429, 429, 429]);
  }, 30_000);

  it('expires runs queued longer than max_queue_time, and their webhooks say so', async () => {
    holdPaths = (p) => p === '/short/block';
    await worker();
    await accept('/short/block');
    await eventually(() => (held.has('/short/block') ? true : undefined), 10_000, 'the slot taken');
    const behind = [await accept('/short/1', {}, hooks.url), await accept('/short/2', {}, hooks.url)];
    const views = await allEnded(behind, 15_000);
    expect(views.map((v) => [v.status, v.error?.code, v.dispatch_attempts])).toEqual([
      ['expired', 'queue_time_exceeded', 0],
      ['expired', 'queue_time_exceeded', 0],
    ]);
    const bodies = await eventually(
      () => {
        const got = hooks.requests.filter((r) => behind.includes(JSON.parse(r.body.toString()).run_id));
        return got.length === 2 ? got.map((r) => JSON.parse(r.body.toString())) : undefined;
      },
      10_000,
      'the webhooks',
    );
    expect(bodies.map((b) => b.status)).toEqual(['expired', 'expired']);
    expect(arrivals).toEqual(['/short/block']); // the app never saw them
  }, 30_000);

  it('retries an expired run through Envoy: its wait counts from the retry, and it reaches the app', async () => {
    holdPaths = (p) => p === '/short/hold';
    await worker();
    await accept('/short/hold');
    await eventually(() => (held.has('/short/hold') ? true : undefined), 10_000, 'the slot taken');
    const late = await accept('/short/late');
    const [expired] = await allEnded([late], 15_000);
    expect(expired!.status).toBe('expired');
    held.get('/short/hold')!.writeHead(200).end('ok');
    await eventually(() => (active === 0 ? true : undefined), 10_000, 'the slot free');
    // Accepted more than max_queue_time (1 s) ago: only a wait counted from the retry lets it start.
    const res = await request(`${envoy.url}/v1/runs/${late}/retry`, { method: 'POST' });
    expect(res.statusCode).toBe(202);
    await res.body.dump();
    const [done] = await allEnded([late], 15_000);
    expect(done).toMatchObject({ status: 'succeeded', dispatch_attempts: 1, previous_outcomes: [{ status: 'expired', error: 'queue_time_exceeded' }] });
    expect(arrivals).toEqual(['/short/hold', '/short/late']);
  }, 30_000);

  it('shows where a queued run stands, counting down as the runs ahead finish', async () => {
    holdPaths = (p) => p.startsWith('/one/pos/');
    await worker();
    const ids = [await accept('/one/pos/0')];
    await eventually(() => (held.has('/one/pos/0') ? true : undefined), 10_000, 'the slot taken');
    for (let i = 1; i <= 3; i++) ids.push(await accept(`/one/pos/${i}`));
    const positions = async () => Promise.all(ids.map(async (id) => (await view(id)).queue_position));
    expect(await positions()).toEqual([null, 0, 1, 2]);
    // Through Envoy, as the client sees it.
    const res = await request(`${envoy.url}/v1/runs/${ids[3]}`);
    expect(((await res.body.json()) as RunView).queue_position).toBe(2);
    held.get('/one/pos/0')!.writeHead(200).end('ok');
    await eventually(() => (held.has('/one/pos/1') ? true : undefined), 10_000, 'the next run started');
    expect(await positions()).toEqual([null, null, 0, 1]);
    for (let i = 1; i <= 3; i++) {
      await eventually(() => (held.has(`/one/pos/${i}`) ? true : undefined), 10_000, `run ${i} started`);
      held.get(`/one/pos/${i}`)!.writeHead(200).end('ok');
    }
    await allEnded(ids);
  }, 30_000);

  it('reports each queue in the metrics: depth, in flight, limit, oldest age', async () => {
    holdPaths = (p) => p === '/one/block';
    const w = await worker();
    await accept('/one/block');
    await eventually(() => (held.has('/one/block') ? true : undefined), 10_000, 'the slot taken');
    await accept('/one/waiting');
    const admin = `http://127.0.0.1:${(w as unknown as { adminPort: number }).adminPort}`;
    const text = await (await request(`${admin}/metrics`)).body.text();
    expect(text).toMatch(/eas_queue_depth\{queue="one"\} 1/);
    expect(text).toMatch(/eas_queue_in_flight\{queue="one"\} 1/);
    expect(text).toMatch(/eas_queue_limit\{queue="one"\} 1/);
    expect(text).toMatch(/eas_queue_oldest_age_seconds\{queue="one"\} \d/);
    expect(text).toMatch(/eas_queue_depth\{queue="default"\} 0/);
  }, 30_000);
});
