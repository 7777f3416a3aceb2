import { request } from 'undici';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { freePort } from '../support/ports';
import { ensureBuilt, spawnSidecar, type SidecarProcess } from '../support/process';
import { eventually } from '../support/sidecar';

let redis: RedisServer;
let app: Upstream;
const started: SidecarProcess[] = [];

beforeAll(async () => {
  ensureBuilt();
  redis = await RedisServer.start();
  app = await Upstream.start(Upstream.json(200, { answer: 42 }));
}, 120_000);

afterAll(async () => {
  for (const p of started) if (p.child.exitCode === null) p.kill('SIGKILL');
  await app?.close();
  await redis?.destroy();
});

/** The environment of docs/CONTRACT.md §6, on free loopback ports. */
async function env(extra: Record<string, string> = {}) {
  return {
    EXTPROC_ADDR: `127.0.0.1:${await freePort()}`,
    ADMIN_ADDR: `127.0.0.1:${await freePort()}`,
    REDIS_URL: redis.url,
    DISPATCH_URL: app.url,
    DISPATCH_CONCURRENCY: '8',
    RESPONSE_GRACE_PERIOD: '30',
    MAX_BODY_BYTES: '1048576',
    MAX_RESULT_BYTES: '1048576',
    RUNS_API_PREFIX: '/v1/runs',
    OWNER_HEADER: 'authorization',
    RUN_TTL: '3600',
    WEBHOOK_TIMEOUT: '5',
    WEBHOOK_RETRY_SCHEDULE: '0,1s',
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
    SHUTDOWN_GRACE: '5',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

function start(e: Record<string, string>, args: string[] = []): SidecarProcess {
  const p = spawnSidecar(e, args);
  started.push(p);
  return p;
}

async function acceptThrough(envoy: RealEnvoy, path: string): Promise<string> {
  const res = await request(envoy.url + path, { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
  expect(res.statusCode).toBe(202);
  return ((await res.body.json()) as { run_id: string }).run_id;
}

async function waitSucceeded(envoy: RealEnvoy, runId: string): Promise<void> {
  await eventually(
    async () => {
      const res = await request(`${envoy.url}/v1/runs/${runId}?wait=5`);
      const body = (await res.body.json()) as { status: string };
      return body.status === 'succeeded' ? true : undefined;
    },
    20_000,
    'run to succeed',
  );
}

describeWithEnvoy('the built sidecar, started like npm start, behind the real Envoy', () => {
  it('serves traffic through Envoy on the shipped config, replays through its dispatch listener, then stops cleanly on SIGTERM', async () => {
    const e = await env();
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: e.EXTPROC_ADDR, app: `127.0.0.1:${app.port}` } });
    // DISPATCH_URL is Envoy's dispatch listener, as in the shipped topology.
    const p = start({ ...e, DISPATCH_URL: envoy.dispatchUrl });
    try {
      await p.waitForLog('envoy-async-sidecar started');
      const runId = await acceptThrough(envoy, '/v4/p-1/my-app/run?async=true');
      await waitSucceeded(envoy, runId);
      const log = await p.waitForLog('run finished');
      expect(log).toMatchObject({ run_id: runId, status: 'succeeded' });
      const replay = app.requests.find((r) => Object.fromEntries(r.headers)['x-async-run-id'] === runId)!;
      expect(replay.url).toBe('/v4/p-1/my-app/run');
      // Set by Envoy's router on the dispatch route: the replay went through Envoy with its 12-hour timeout.
      expect(Object.fromEntries(replay.headers)['x-envoy-expected-rq-timeout-ms']).toBe('43200000');
      const health = await request(`http://${e.ADMIN_ADDR}/healthz`);
      expect(health.statusCode).toBe(200);
      await health.body.dump();
    } finally {
      await envoy.close();
    }
    p.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    await p.waitForLog('stopped');
  });

  it('runs as separate --role extproc and --role worker processes that complete runs together', async () => {
    const shared = await env();
    const acceptor = start({ ...shared, ADMIN_ADDR: `127.0.0.1:${await freePort()}` }, ['--role', 'extproc']);
    const worker = start({ ...shared, EXTPROC_ADDR: `127.0.0.1:${await freePort()}` }, ['--role=worker']);
    await acceptor.waitForLog('envoy-async-sidecar started');
    await worker.waitForLog('envoy-async-sidecar started');
    const envoy = await RealEnvoy.start({ clusters: { async_sidecar: shared.EXTPROC_ADDR, app: `127.0.0.1:${app.port}` } });
    try {
      const ids = await Promise.all([1, 2, 3].map(() => acceptThrough(envoy, '/roles?async=true')));
      for (const id of ids) await waitSucceeded(envoy, id);
      for (const id of ids) expect(worker.stdout()).toContain(`"run_id":"${id}"`);
      expect(acceptor.stdout()).not.toContain('"msg":"run started"');
      expect(worker.stdout()).toContain('"msg":"run started"');
    } finally {
      await envoy.close();
    }
    acceptor.kill();
    worker.kill();
    expect((await acceptor.exited).code).toBe(0);
    expect((await worker.exited).code).toBe(0);
  });
});

describe('the built sidecar, started like npm start', () => {
  it.each([
    [{ RESPONSE_GRACE_PERIOD: '50000' }, [], /RESPONSE_GRACE_PERIOD="50000"/],
    [{ REDIS_URL: 'localhost:6379' }, [], /REDIS_URL="localhost:6379": must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ DISPATCH_CONCURRENCY: '-1' }, [], /DISPATCH_CONCURRENCY="-1"/],
    [{}, ['--role', 'boss'], /--role "boss"/],
  ])('stops with exit code 2 and one line on bad configuration %j %j', async (bad, args, message) => {
    const p = start({ ...(await env()), ...bad }, args);
    const { code } = await p.exited;
    expect(code).toBe(2);
    const lines = p.stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
  });

  it('lists every setting with its default for --help', async () => {
    const p = start({}, ['--help']);
    expect((await p.exited).code).toBe(0);
    expect(p.stdout()).toContain('RESPONSE_GRACE_PERIOD');
    expect(p.stdout()).toContain('default: 900');
  });
});
