/**
 * Redis at its limits, with a real redis-server: over maxmemory every state change is refused
 * whole (the run stays as it was, nothing half-applied), a run's result is read only by its
 * owner (another tenant's probe moves no body), and an evicting Redis is recognised.
 */
import { Redis } from 'ioredis';
import { connectRedis, evictionPolicyProblem, mayHaveRun, RunStore, type NewRun } from '../../src/runs';
import { freePort } from '../support/ports';
import { RedisServer } from '../support/redis-server';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let client: Redis;
let store: RunStore;

const id = (n: number) => testRunId(n);
const newRun = (n: number, over: Partial<NewRun> = {}): NewRun => ({
  id: id(n),
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [],
  body: Buffer.from('x'),
  requestId: null,
  owner: 'owner-a',
  webhookUrl: null,
  gracePeriodMs: 1000,
  ...over,
});
const outcome = (body: Buffer) => ({
  status: 'succeeded' as const,
  response: { statusCode: 200, contentType: 'application/octet-stream', headers: [] as Array<[string, string]>, body, size: body.length, truncated: false },
  error: null,
});
const netOut = async () => Number(/total_net_output_bytes:(\d+)/.exec(await client.info('stats'))![1]);

beforeAll(async () => {
  redis = await RedisServer.start();
  client = new Redis(redis.url);
});
beforeEach(async () => {
  await client.config('SET', 'maxmemory', '0');
  await client.config('SET', 'maxmemory-policy', 'noeviction');
  await client.flushall();
  store = new RunStore(client, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 100, maxDispatchAttempts: 3, redispatchInterrupted: 'always' });
});
afterAll(async () => {
  client.disconnect();
  await redis.destroy();
});

describe('Redis over maxmemory (noeviction)', () => {
  it('refuses completion and recovery whole: the run stays running, its lease in place', async () => {
    await store.create(newRun(1));
    const [run] = await store.claim('w1', 1);
    await new Promise((r) => setTimeout(r, 150)); // the lease has expired: recovery would act
    await client.config('SET', 'maxmemory', '1');
    const refused = await store.complete('w1', run!, outcome(Buffer.from('ok'))).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toMatch(/OOM/);
    expect(mayHaveRun(refused)).toBe(false); // Redis answered: the script did not run
    await expect(store.recover(10)).rejects.toThrow(/OOM/);
    expect(await client.hget(store.keys.run(id(1)), 'status')).toBe('running');
    expect(await client.zscore(store.queueKeys('default').leases, id(1))).not.toBeNull();
    expect(await client.zcard(store.queueKeys('default').queued)).toBe(0);
    // Memory back: the same completion is recorded as if nothing had happened.
    await client.config('SET', 'maxmemory', '0');
    expect((await store.complete('w1', run!, outcome(Buffer.from('ok')))).recorded).toBe(true);
    expect(await client.hget(store.keys.run(id(1)), 'status')).toBe('succeeded');
  });

  it('still answers reads (a run result) while writes are refused', async () => {
    await store.create(newRun(1));
    const [run] = await store.claim('w1', 1);
    await store.complete('w1', run!, outcome(Buffer.from('done')));
    await client.config('SET', 'maxmemory', '1');
    expect((await store.getResult(id(1), 'owner-a'))!.body!.toString()).toBe('done');
  });
});

describe('run results are read for their owner only', () => {
  it('answers another tenant as for an unknown id, without reading the body out of Redis', async () => {
    await store.create(newRun(1));
    const [run] = await store.claim('w1', 1);
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    await store.complete('w1', run!, outcome(big));

    let before = await netOut();
    expect(await store.getResult(id(1), 'owner-b')).toBeNull();
    const probe = (await netOut()) - before;
    before = await netOut();
    expect(await store.getResult(id(2), 'owner-b')).toBeNull();
    const unknown = (await netOut()) - before;
    // Both replies are a few bytes (plus the INFO reply itself): no 4 MiB body moved for the probe.
    expect(probe).toBeLessThan(64 * 1024);
    expect(Math.abs(probe - unknown)).toBeLessThan(1024);

    const mine = await store.getResult(id(1), 'owner-a');
    expect(mine!.body!.equals(big)).toBe(true);
    expect((await store.getResult(id(1), null))!.statusCode).toBe(200); // the unscoped admin API
  });
});

describe('eviction policy check', () => {
  it('names a policy that evicts, and accepts noeviction', async () => {
    expect(await evictionPolicyProblem(client)).toBeNull();
    await client.config('SET', 'maxmemory-policy', 'allkeys-lru');
    expect(await evictionPolicyProblem(client)).toBe('allkeys-lru');
  });
});

describe('whether a failed command may have run', () => {
  it('knows a command never sent (no connection, no offline queue) did not run', async () => {
    const nowhere = connectRedis(`redis://127.0.0.1:${await freePort()}`, { commandTimeoutMs: 500, name: 'nowhere' });
    nowhere.on('error', () => undefined);
    try {
      const err = await nowhere.ping().catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect(mayHaveRun(err)).toBe(false);
    } finally {
      nowhere.disconnect();
    }
  });

  it('takes a lost reply (timeout, connection closed mid-command) as "may have run"', () => {
    expect(mayHaveRun(new Error('Command timed out'))).toBe(true);
    expect(mayHaveRun(new Error('Connection is closed.'))).toBe(true);
  });
});
