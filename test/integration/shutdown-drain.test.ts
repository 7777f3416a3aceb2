/**
 * While a worker drains at shutdown (SHUTDOWN_GRACE), the runs it still calls stay its own
 * (docs/CONTRACT.md §3, §6): their leases are renewed, so another replica does not recover one
 * and call the app a second time alongside, and a cancel still stops the call at once.
 */
import type { ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { RunStore, type NewRun } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let app: Upstream;
let db: Redis;
let store: RunStore;
let active = 0;
let maxActive = 0;
const arrivedAt: number[] = [];
const closedAt: number[] = [];

const env = () => ({ REDIS_URL: redis.url, DISPATCH_URL: app.url, LEASE_TIMEOUT: '2', SHUTDOWN_GRACE: '6' });

function newRun(id: string, method: string, path: string): NewRun {
  return {
    id,
    trigger: 'query',
    method,
    path,
    target: path,
    headers: [['host', 'app']],
    body: Buffer.alloc(0),
    requestId: null,
    owner: '',
    webhookUrl: null,
    gracePeriodMs: 60_000,
  };
}

beforeAll(async () => {
  redis = await RedisServer.start();
  // Holds every call open until the caller gives up, counting how many overlap.
  app = await Upstream.start((_req: RecordedRequest, res: ServerResponse) => {
    active++;
    maxActive = Math.max(maxActive, active);
    arrivedAt.push(Date.now());
    res.on('close', () => {
      active--;
      closedAt.push(Date.now());
    });
  });
  db = new Redis(redis.url);
  store = new RunStore(db, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 2000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
});

afterAll(async () => {
  db?.disconnect();
  await app?.close();
  await redis?.destroy();
});

beforeEach(() => {
  maxActive = 0;
  arrivedAt.length = 0;
  closedAt.length = 0;
});

it('keeps renewing the leases of the runs it drains: no other replica calls the app for them meanwhile', async () => {
  const id = testRunId(0xd0001);
  const draining = await startTestSidecar(env(), ['--role', 'worker']);
  await store.create(newRun(id, 'PUT', '/drain-put'));
  await eventually(() => (arrivedAt.length === 1 ? true : undefined), 10_000, 'the first call');
  const other = await startTestSidecar(env(), ['--role', 'worker']);
  try {
    const stopping = draining.stop();
    // Three lease timeouts into the six-second grace: a lease left to run out would have been
    // recovered by the other replica (it looks every second) and the PUT sent again.
    await new Promise((r) => setTimeout(r, 5000));
    expect(arrivedAt).toHaveLength(1);
    expect((await store.get(id))!.view).toMatchObject({ status: 'running', dispatch_attempts: 1 });
    await stopping;
    // At the end of the grace the call is aborted and the run handed back: the other replica
    // takes it, after the first call ended.
    await eventually(() => (arrivedAt.length === 2 ? true : undefined), 10_000, 'the call after the hand-back');
    expect(closedAt[0]!).toBeLessThanOrEqual(arrivedAt[1]!);
    expect(maxActive).toBe(1);
    expect((await store.get(id))!.view).toMatchObject({ status: 'running', dispatch_attempts: 2 });
  } finally {
    await store.cancel(id); // the other replica's call ends at once, and the run is not handed back again
    await draining.stop();
    await other.stop();
  }
}, 60_000);

it('stops a call cancelled while it drains, without waiting for the grace period', async () => {
  const id = testRunId(0xd0002);
  const draining = await startTestSidecar(env(), ['--role', 'worker']);
  try {
    await store.create(newRun(id, 'POST', '/drain-post'));
    await eventually(() => (arrivedAt.length === 1 ? true : undefined), 10_000, 'the call');
    const stopping = draining.stop();
    await new Promise((r) => setTimeout(r, 200));
    const cancelledAt = Date.now();
    expect(await store.cancel(id)).toBe('running');
    await eventually(() => (closedAt.length === 1 ? true : undefined), 5000, 'the call aborted');
    expect(closedAt[0]! - cancelledAt).toBeLessThan(1000);
    const startedStop = Date.now();
    await stopping;
    expect(Date.now() - startedStop).toBeLessThan(3000); // nothing left to wait for
    expect((await store.get(id))!.view.status).toBe('cancelled');
  } finally {
    await draining.stop();
  }
}, 30_000);
