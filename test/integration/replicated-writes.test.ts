/**
 * REDIS_MIN_REPLICAS_ACK on one Redis with a replica (README "Redis topologies"): a new run counts
 * only once the replica has it; concurrent runs share their WAITs (a group commit); a frozen
 * replica makes `create` fail with NotReplicatedError within its budget, the run existing on the
 * primary, also for a write that waited for an earlier batch.
 */
import { Redis } from 'ioredis';
import { NotReplicatedError, RunStore, connectRedis, mayHaveRun, newRunId, queueTag, type NewRun, type RedisClient } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { eventually } from '../support/sidecar';

let primary: RedisServer;
let replica: RedisServer;
let admin: Redis;
let conn: RedisClient;
let store: RunStore;

const BUDGET_MS = 1000;

const newRun = (): NewRun => ({
  id: newRunId(queueTag('default')),
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [],
  body: Buffer.from('x'),
  requestId: null,
  owner: '',
  webhookUrl: null,
  gracePeriodMs: 1000,
});

beforeAll(async () => {
  primary = await RedisServer.start();
  replica = await RedisServer.start({ args: ['--save', '', '--appendonly', 'no', '--replicaof', '127.0.0.1', String(primary.port)] });
  admin = new Redis(primary.url);
  await eventually(async () => (/slave0:.*state=online/.test(await admin.info('replication')) ? true : undefined), 10_000, 'replica online');
  conn = connectRedis(primary.url, { commandTimeoutMs: BUDGET_MS, name: 'test' });
  await conn.connect();
  store = new RunStore(conn, {
    keyPrefix: 'eas',
    runTtlMs: 60_000,
    leaseTimeoutMs: 1000,
    maxDispatchAttempts: 1,
    redispatchInterrupted: 'never',
    minReplicasAck: 1,
    replicaAckBudgetMs: BUDGET_MS,
  });
});

afterAll(async () => {
  replica?.signal('SIGCONT');
  conn?.disconnect();
  admin?.disconnect();
  await replica?.destroy();
  await primary?.destroy();
});

const waits = async () => Number(/cmdstat_wait:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);

it('stores runs once the replica has them, sharing WAITs between concurrent runs', async () => {
  await admin.config('RESETSTAT');
  const runs = Array.from({ length: 200 }, newRun);
  await Promise.all(runs.map((r) => store.create(r)));
  const replicaConn = new Redis(replica.url);
  try {
    // Each run was on the replica when its create resolved.
    for (const r of runs) expect(await replicaConn.exists(store.keys.run(r.id))).toBe(1);
  } finally {
    replicaConn.disconnect();
  }
  const used = await waits();
  expect(used).toBeGreaterThan(0);
  expect(used).toBeLessThan(runs.length / 2);
});

it('fails with NotReplicatedError within its budget while the replica is frozen; the run exists on the primary', async () => {
  replica.signal('SIGSTOP');
  try {
    const run = newRun();
    const t0 = Date.now();
    const err = await store.create(run).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(BUDGET_MS + 200);
    expect(err).toBeInstanceOf(NotReplicatedError);
    expect(err).toMatchObject({ acknowledged: 0, required: 1 });
    expect(mayHaveRun(err)).toBe(true);
    expect(await admin.exists(store.keys.run(run.id))).toBe(1);
    // A write asked for while a batch waits goes in the next batch, still within its own budget.
    const first = store.create(newRun()).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, BUDGET_MS / 2));
    const t1 = Date.now();
    const second = await store.create(newRun()).catch((e: unknown) => e);
    expect(Date.now() - t1).toBeLessThan(BUDGET_MS + 200);
    expect(await first).toBeInstanceOf(NotReplicatedError);
    expect(second).toBeInstanceOf(NotReplicatedError);
  } finally {
    replica.signal('SIGCONT');
  }
  await eventually(async () => (/slave0:.*state=online/.test(await admin.info('replication')) ? true : undefined), 10_000, 'replica back');
  await expect(store.create(newRun())).resolves.toEqual({ outcome: 'created' });
});
