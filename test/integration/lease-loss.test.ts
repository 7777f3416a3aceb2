/**
 * A worker cut off from Redis must stop the calls whose leases it can no longer prove, before
 * another worker recovers the run and calls the app again: with real processes, a PUT must
 * never run twice at once. (Before the fix, the cut-off worker never noticed and the app saw
 * two overlapping PUTs.)
 */
import type { ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { RunStore } from '../../src/runs';
import { testRunId } from '../support/run-ids';
import { FaultProxy } from '../support/fault-proxy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';

const RUN_ID = testRunId(0xabcd);

let redis: RedisServer;
let proxy: FaultProxy;
let app: Upstream;
let active = 0;
let maxActive = 0;
const closedAt: number[] = [];
const arrivedAt: number[] = [];

beforeAll(async () => {
  redis = await RedisServer.start();
  proxy = await FaultProxy.start({ port: redis.port });
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
});

afterAll(async () => {
  await proxy?.close();
  await app?.close();
  await redis?.destroy();
});

it('a worker that cannot renew its lease aborts the call before another worker takes the run', async () => {
  const env = { LEASE_TIMEOUT: '3', DISPATCH_URL: app.url, SHUTDOWN_GRACE: '0.1', REDIS_COMMAND_TIMEOUT: '0.5' };
  const cutOff = await startTestSidecar({ ...env, REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, ['--role', 'worker']);
  const db = new Redis(redis.url);
  const store = new RunStore(db, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 3000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
  await store.create({
    id: RUN_ID,
    trigger: 'query',
    method: 'PUT',
    path: '/items/1',
    target: '/items/1',
    headers: [['host', 'app']],
    body: Buffer.from('{}'),
    requestId: null,
    owner: '',
    webhookUrl: null,
    gracePeriodMs: 60_000,
  });
  await eventually(() => (arrivedAt.length === 1 ? true : undefined), 10_000, 'first call');

  proxy.setMode('blackhole'); // the cut-off worker's Redis goes silent
  const other = await startTestSidecar({ ...env, REDIS_URL: redis.url }, ['--role', 'worker']);
  try {
    await eventually(() => (arrivedAt.length === 2 ? true : undefined), 20_000, 'the other worker calls the app again');
    expect(closedAt.length).toBeGreaterThanOrEqual(1);
    expect(closedAt[0]!).toBeLessThanOrEqual(arrivedAt[1]!); // the first call ended before the second began
    expect(maxActive).toBe(1);
    const lost = await cutOff.metrics.registry.getSingleMetricAsString('eas_leases_lost_total');
    expect(lost).toMatch(/eas_leases_lost_total\{why="expired"\} 1/);
    expect((await store.get(RUN_ID))!.view).toMatchObject({ status: 'running', dispatch_attempts: 2 });
  } finally {
    // End the partition as TCP would after one: by dropping the connections (the proxy swallowed
    // bytes, which a real network never does, so the old connections cannot be trusted).
    proxy.setMode('reset');
    proxy.setMode('pass');
    await other.stop();
    await cutOff.stop();
    db.disconnect();
  }
}, 60_000);
