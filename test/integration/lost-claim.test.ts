/**
 * A claim whose reply is lost to a timeout after Redis ran it: the runs it leased are put back
 * and dispatched, on their first attempt, instead of sitting leased until recovery ends them
 * `failed`/`interrupted` (a POST is not re-dispatched). Real Redis behind a slow link.
 */
import { Redis } from 'ioredis';
import { RunStore } from '../../src/runs';
import { FaultProxy } from '../support/fault-proxy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream } from '../support/upstream';
import { testRunId } from '../support/run-ids';

const id = (n: number) => testRunId(n);

it('releases the runs of a claim whose reply timed out, and dispatches them on their first attempt', async () => {
  const redis = await RedisServer.start();
  const proxy = await FaultProxy.start({ port: redis.port });
  const app = await Upstream.start();
  const db = new Redis(redis.url);
  const store = new RunStore(db, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 30_000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
  // REDIS_COMMAND_TIMEOUT 0.2 s gives the worker's connection its floor of 5 s.
  const worker = await startTestSidecar({ REDIS_URL: `redis://127.0.0.1:${proxy.port}`, DISPATCH_URL: app.url, REDIS_COMMAND_TIMEOUT: '0.2' }, [
    '--role',
    'worker',
  ]);
  try {
    await eventually(async () => (String(await db.client('LIST')).includes('name=eas-worker') ? true : undefined), 10_000, 'worker connected');
    // Each way 3 s: a claim reaches Redis after 3 s (and leases the runs), its reply would come
    // back after 6 s, past the worker's 5 s command timeout.
    proxy.setLatency(3000);
    for (let n = 1; n <= 3; n++) {
      await store.create({
        id: id(n),
        trigger: 'query',
        method: 'POST',
        path: '/p',
        target: '/p',
        headers: [['host', 'app']],
        body: Buffer.from('{}'),
        requestId: null,
        owner: '',
        webhookUrl: null,
        gracePeriodMs: 60_000,
      });
    }
    await eventually(async () => ((await db.hget(store.keys.run(id(1)), 'status')) === 'running' ? true : undefined), 10_000, 'the slow claim ran in Redis');
    expect(app.requests).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 6000)); // the worker's claim times out
    proxy.setLatency(0);
    const views = await eventually(
      async () => {
        const v = await Promise.all([1, 2, 3].map((n) => store.get(id(n))));
        return v.every((x) => x?.view.status === 'succeeded') ? v : undefined;
      },
      20_000,
      'every run dispatched',
    );
    expect(views.map((v) => v!.view.dispatch_attempts)).toEqual([1, 1, 1]);
    expect(app.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /p', 'POST /p', 'POST /p']); // each once
  } finally {
    proxy.setMode('reset');
    proxy.setMode('pass');
    await worker.stop();
    db.disconnect();
    await proxy.close();
    await app.close();
    await redis.destroy();
  }
}, 60_000);
