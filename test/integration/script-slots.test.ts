/**
 * Every Lua script touches one Redis Cluster slot: the keys it declares, every key its commands
 * touch (some are built in Lua from `base`), and the shard channel it publishes on. Redis 7 checks
 * this itself for scripts with a shebang (all of ours: src/runs/store.ts `scriptSources`) when it
 * runs in cluster mode, and refuses a script that strays ("Script attempted to access keys that do
 * not hash to the same slot"), also between two slots of one node, which a small test cluster
 * would not notice otherwise. So the store is driven through every script, on the sharded-events
 * layout, against one cluster-mode redis-server holding every slot; each script must answer.
 */
import { Cluster, Redis } from 'ioredis';
import { RunStore, type NewRun, type QueuePolicy } from '../../src/runs';
import { SCRIPT_NAMES } from '../../src/runs/store';
import { RedisServer } from '../support/redis-server';
import { eventually } from '../support/sidecar';

let server: RedisServer;
let admin: Redis;
let cluster: Cluster;

beforeAll(async () => {
  // A lone node learns no address of its own (no MEET): announce it, or CLUSTER SLOTS names no host.
  const args = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  server = await RedisServer.start({ args });
  admin = new Redis(server.url);
  await admin.cluster('ADDSLOTSRANGE', 0, 16383);
  await eventually(async () => (/cluster_state:ok/.test((await admin.cluster('INFO')) as string) ? true : undefined), 10_000, 'cluster_state:ok');
  cluster = new Cluster([{ host: '127.0.0.1', port: server.port }]);
  await new Promise((resolve, reject) => {
    cluster.once('ready', resolve);
    cluster.once('error', reject);
  });
});

afterAll(async () => {
  cluster?.disconnect();
  admin?.disconnect();
  await server?.destroy();
});

const run = (id: string, queue: string, over: Partial<NewRun> = {}): NewRun => ({
  id,
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [['host', 'h']],
  body: Buffer.from('body'),
  requestId: null,
  owner: 'o',
  webhookUrl: null,
  gracePeriodMs: 1000,
  queue,
  ...over,
});

it('every script runs on a cluster-mode Redis, which refuses one that touches a second slot', async () => {
  const policy = (name: string, over: Partial<QueuePolicy> = {}): QueuePolicy => ({ name, maxConcurrency: 5, maxQueueTimeMs: null, fairShare: true, ...over });
  const queues = new Map([
    ['gpu', policy('gpu')],
    ['short', policy('short', { maxQueueTimeMs: 1 })],
  ]);
  const store = new RunStore(cluster, {
    keyPrefix: 'eas',
    runTtlMs: 60_000,
    leaseTimeoutMs: 50,
    maxDispatchAttempts: 3,
    redispatchInterrupted: 'always',
    queues,
  });
  expect(store.shardedEvents).toBe(true);

  // Which scripts ran: each is an `eas_<name>` command (and `eas_<name>Buffer`) on the client.
  const covered = new Set<string>();
  const commands = cluster as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const name of SCRIPT_NAMES) {
    for (const fn of [`eas_${name}`, `eas_${name}Buffer`]) {
      const original = commands[fn]!.bind(cluster);
      commands[fn] = (...args: unknown[]) => original(...args).then((reply) => (covered.add(name), reply));
    }
  }

  const { newRunId, queueTag } = await import('../../src/runs');
  const id = (queue: string) => newRunId(queueTag(queue));
  const ok = {
    status: 'succeeded' as const,
    response: { statusCode: 200, contentType: 'text/plain', headers: [], body: Buffer.from('r'), size: 1, truncated: false },
    error: null,
  };

  const a = id('gpu');
  await store.create(run(a, 'gpu', { webhookUrl: 'http://127.0.0.1:9/hook' }));
  await store.create(run(id('gpu'), 'gpu'));
  await store.create(run(id('gpu'), 'gpu'));
  const claimed = await store.claim('w1', 3, 'gpu');
  expect(claimed).toHaveLength(3);
  await store.renewLeases(
    'w1',
    claimed.map((r) => ({ id: r.id, attempt: r.attempt, queue: 'gpu' })),
  );
  await store.defer('w1', claimed[1]!, 0, 'upstream_busy', { at: new Date().toISOString(), attempt: 1, status_code: 429, error: null, retry_in_ms: 0 });
  await store.release('w1', [claimed[2]!.id], 'gpu');
  const done = await store.complete('w1', claimed[0]!, ok, { claimNext: 2 });
  expect(done.recorded).toBe(true);
  await store.get(a);
  await store.getResult(a, null);
  const deliveries = await store.claimWebhooks(10, 60_000);
  expect(deliveries.map((d) => d.runId)).toContain(a);
  await store.recordWebhookAttempt(a, { at: new Date().toISOString(), status_code: 200, error: null, duration_ms: 1, outcome: 'delivered' }, null);
  await store.redeliver(a, null);
  await store.releaseUntracked('w1', []);
  await store.create(run(id('gpu'), 'gpu'));
  await store.claim('w2', 1, 'gpu');
  await new Promise((r) => setTimeout(r, 100)); // w2's lease runs out
  await store.recover(10, undefined, 'gpu');
  const doomed = id('default');
  await store.create(run(doomed, 'default'));
  await store.cancel(doomed, null);
  const late = id('short');
  await store.create(run(late, 'short'));
  await new Promise((r) => setTimeout(r, 20));
  await store.expire(10, 'short');
  expect(await store.retry(late, null)).toBe('ok'); // an expired run queued again
  await store.pruneIndex(100);
  expect([...covered].sort()).toEqual([...SCRIPT_NAMES].sort());
});
