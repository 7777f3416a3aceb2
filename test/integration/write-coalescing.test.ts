/**
 * Write coalescing (src/runs/write-coalescing.ts) on a real Redis: the script calls of one
 * iteration of the event loop leave in one socket write, each keeps its own reply, and a command
 * Redis does not answer still fails after the command timeout (unlike ioredis' auto-pipelining).
 */
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { RunStore, connectRedis, type NewRun } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { testRunId } from '../support/run-ids';

let redis: RedisServer;
let client: Redis;
let store: RunStore;

const newRun = (n: number): NewRun => ({
  id: testRunId(n),
  trigger: 'query',
  method: 'POST',
  path: '/p',
  target: '/p',
  headers: [],
  body: Buffer.from(`body ${n}`),
  requestId: null,
  owner: '',
  webhookUrl: null,
  gracePeriodMs: 1000,
});

/** Counts the writes that reach the socket (one `_writev` carries many chunks). */
function countWrites(socket: Socket): { writes: number; chunks: number; restore(): void } {
  const s = socket as Socket & { _write: (...a: unknown[]) => void; _writev: (chunks: unknown[], cb: unknown) => void };
  const [write, writev] = [s._write, s._writev];
  const counts = { writes: 0, chunks: 0, restore: () => Object.assign(s, { _write: write, _writev: writev }) };
  s._write = function (...a: unknown[]) {
    counts.writes += 1;
    counts.chunks += 1;
    return write.apply(this, a);
  };
  s._writev = function (chunks: unknown[], cb: unknown) {
    counts.writes += 1;
    counts.chunks += chunks.length;
    return writev.call(this, chunks, cb);
  };
  return counts;
}

beforeAll(async () => {
  redis = await RedisServer.start();
});
beforeEach(async () => {
  client = connectRedis(redis.url, { commandTimeoutMs: 500, name: 'test' }) as Redis;
  await client.connect();
  await client.flushall();
  store = new RunStore(client, { keyPrefix: 't', runTtlMs: 60_000, leaseTimeoutMs: 5_000, maxDispatchAttempts: 2, redispatchInterrupted: 'idempotent' });
  await store.create(newRun(0)); // scripts loaded, connection ready
});
afterEach(() => client.disconnect());
afterAll(async () => {
  await redis.destroy();
});

describe('write coalescing', () => {
  it('sends the script calls of one event-loop iteration in one socket write, each with its own reply', async () => {
    const counts = countWrites(client.stream as Socket);
    try {
      const created = await Promise.all(Array.from({ length: 20 }, (_, i) => store.create(newRun(i + 1))));
      expect(created.map((c) => c.outcome)).toEqual(Array(20).fill('created'));
      expect(counts.writes).toBe(1);
      expect(counts.chunks).toBe(20);
    } finally {
      counts.restore();
    }
    for (let i = 1; i <= 20; i++) expect((await store.get(testRunId(i)))?.view.status).toBe('queued');
    expect((await store.readBody(testRunId(7)))?.toString()).toBe('body 7');
  });

  it('sends calls of later iterations in later writes', async () => {
    const counts = countWrites(client.stream as Socket);
    try {
      await store.create(newRun(1));
      await new Promise((r) => setImmediate(r));
      await store.create(newRun(2));
      expect(counts.writes).toBe(2);
    } finally {
      counts.restore();
    }
  });

  it('still fails a call Redis does not answer after the command timeout', async () => {
    redis.signal('SIGSTOP');
    try {
      const started = Date.now();
      await expect(store.create(newRun(1))).rejects.toThrow(/timed out/i);
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      redis.signal('SIGCONT');
    }
  });
});
