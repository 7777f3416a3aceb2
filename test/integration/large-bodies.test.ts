/**
 * Large bodies against the claim path, with real processes. Before the fix a claim returned
 * every body in one Lua reply: 30 runs of 10 MiB outgrew the 1 s command timeout, the reply was
 * dropped after Redis had leased the runs, and none reached the app; due webhooks with 10 MiB
 * results were never delivered; and a 503 whose write had in fact happened said nothing was stored.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import type { ImmediateResponse__Output } from '../../src/generated/envoy/service/ext_proc/v3/ImmediateResponse';
import { connectRedis, RunKeys, RunStore, type NewRun } from '../../src/runs';
import { createExtProcClient, ExtProcStream } from '../support/envoy/ext-proc-stream';
import { FaultProxy } from '../support/fault-proxy';
import { freePort } from '../support/ports';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { testRunId } from '../support/run-ids';

const MiB = 1024 * 1024;
const N = 30;
const id = (n: number) => testRunId(n);
const newRun = (n: number, over: Partial<NewRun> = {}): NewRun => ({
  id: id(n),
  trigger: 'query',
  method: 'POST',
  path: '/big',
  target: '/big',
  headers: [['host', 'app']],
  body: Buffer.alloc(10 * MiB, n),
  requestId: null,
  owner: '',
  webhookUrl: null,
  gracePeriodMs: 60_000,
  ...over,
});

let redis: RedisServer;
let db: Redis;

beforeAll(async () => {
  redis = await RedisServer.start();
  db = new Redis(redis.url);
});
afterAll(async () => {
  db?.disconnect();
  await redis?.destroy();
});
beforeEach(async () => {
  await db.flushall();
});

it(`dispatches ${N} queued runs of 10 MiB each: every body reaches the app whole, none ends interrupted`, async () => {
  const store = new RunStore(db, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 30_000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
  for (let n = 1; n <= N; n++) await store.create(newRun(n));
  // The app counts bytes per request and keeps none of them.
  const sizes: number[] = [];
  const app = http.createServer((req, res) => {
    let size = 0;
    let sample = -1;
    req.on('data', (c: Buffer) => {
      if (sample < 0) sample = c[0]!;
      size += c.length;
    });
    req.on('end', () => {
      sizes.push(size);
      res.end(`{"first":${sample}}`);
    });
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const worker = await startTestSidecar(
    { REDIS_URL: redis.url, DISPATCH_URL: `http://127.0.0.1:${(app.address() as AddressInfo).port}`, DISPATCH_CONCURRENCY: String(N) },
    ['--role', 'worker'],
  );
  try {
    await eventually(
      async () => {
        const statuses = await Promise.all(Array.from({ length: N }, (_, i) => db.hget(store.keys.run(id(i + 1)), 'status')));
        return statuses.every((s) => s === 'succeeded' || s === 'failed') ? statuses : undefined;
      },
      60_000,
      'every run ends',
    );
    const views = await Promise.all(Array.from({ length: N }, (_, i) => store.get(id(i + 1))));
    expect(views.map((v) => v!.view.status)).toEqual(Array(N).fill('succeeded'));
    expect(views.map((v) => v!.view.dispatch_attempts)).toEqual(Array(N).fill(1));
    expect(sizes).toHaveLength(N);
    expect(sizes.every((s) => s === 10 * MiB)).toBe(true);
  } finally {
    await worker.stop();
    await new Promise((r) => app.close(r));
  }
}, 120_000);

it('claims due webhooks of 10 MiB results within the command timeout, bodies read one by one', async () => {
  // The production connection settings: a 1 s command timeout.
  const conn = connectRedis(redis.url, { commandTimeoutMs: 1000, name: 'test' });
  await conn.connect();
  const store = new RunStore(conn, { keyPrefix: 'eas', runTtlMs: 60_000, leaseTimeoutMs: 30_000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
  try {
    for (let n = 1; n <= N; n++) {
      await store.create(newRun(n, { body: Buffer.from('x'), webhookUrl: 'https://hooks.example/h' }));
      const [run] = await store.claim('w', 1);
      const body = Buffer.alloc(10 * MiB, n);
      await store.complete('w', run!, {
        status: 'succeeded',
        response: { statusCode: 200, contentType: 'application/octet-stream', headers: [], body, size: body.length, truncated: false },
        error: null,
      });
    }
    const due = await store.claimWebhooks(100, 60_000);
    expect(due).toHaveLength(N);
    const pending = due.filter((d) => d.bodyPending);
    expect(pending.length).toBeGreaterThanOrEqual(N - 1); // at most 1 MiB came inline: not one 10 MiB body
    for (const d of pending.slice(0, 3)) {
      const body = await store.readResultBody(d.runId);
      expect(body!.length).toBe(10 * MiB);
      expect(body![0]).toBe(Number(d.runId.slice(-6, -4))); // testRunId(n): n before the 4-digit queue tag
    }
  } finally {
    conn.disconnect();
  }
}, 120_000);

it('a 503 whose write may have happened says so and names the run, which the client then finds', async () => {
  const proxy = await FaultProxy.start({ port: redis.port });
  const extprocPort = await freePort();
  const sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, ['--role', 'extproc']);
  const client = createExtProcClient(`127.0.0.1:${extprocPort}`, 'async_sidecar');
  try {
    await eventually(async () => (String(await db.client('LIST')).includes('name=eas ') ? true : undefined), 10_000, 'sidecar connected');
    proxy.setLatency(700); // the write reaches Redis after 0.7 s, its reply comes back after the 1 s timeout
    const s = new ExtProcStream(client);
    const h = (key: string, v: string) => ({ key, raw_value: Buffer.from(v) });
    s.send({
      request_headers: {
        headers: { headers: [h(':method', 'POST'), h(':path', '/x?async=true'), h(':authority', 'app'), h(':scheme', 'http')] },
        end_of_stream: true,
      },
    });
    let reply: ImmediateResponse__Output | undefined;
    for (const deadline = Date.now() + 10_000; !reply;) {
      const e = await s.next(deadline);
      if (e.kind !== 'message') throw new Error(`stream ended: ${JSON.stringify(e)}`);
      reply = e.message.immediate_response ?? undefined;
    }
    s.close();
    expect(reply.status?.code).toBe('ServiceUnavailable');
    const body = JSON.parse(reply.body!.toString()) as { error: { code: string; run_id: string } };
    expect(body.error.code).toBe('store_uncertain');
    const location = reply.headers?.set_headers?.find((x) => x.header?.key === 'location')?.header?.raw_value?.toString();
    expect(location).toBe(`/v1/runs/${body.error.run_id}`);
    // The write did happen: the run the 503 named exists.
    await eventually(async () => ((await db.hget(new RunKeys('eas').run(body.error.run_id), 'status')) ? true : undefined), 5_000, 'the run exists');
  } finally {
    proxy.setLatency(0);
    client.close();
    await sidecar.stop();
    await proxy.close();
  }
}, 60_000);
