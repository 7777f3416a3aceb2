/**
 * Idempotency-Key (README "Idempotency-Key", docs/CONTRACT.md §2): a repeat gets the same 202 and
 * never reaches the app twice: after a lost 202, and when two requests with one key reach two
 * replicas (two sidecars, each behind its own real Envoy, one Redis) at the same moment.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { queueTag } from '../../src/runs';
import { request } from '../support/http';
import { describeEachEnvoy, type TestEnvoy } from '../support/envoys';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { Upstream, type RecordedRequest } from '../support/upstream';
import { freePort } from '../support/ports';
import { eventually, startTestSidecar, writeConfigFile } from '../support/sidecar';

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
type Answer = { status: number; headers: Record<string, unknown>; json: () => any };

const OWNER = { authorization: 'Bearer idem-owner' };
const KEY_TTL_S = 120;

async function post(base: string, path: string, headers: Record<string, string>, body = '{}'): Promise<Answer> {
  const res = await request(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, json: () => JSON.parse(text) };
}

/**
 * Writes an async request on its own connection and closes it without reading a byte of the
 * answer: the 202, if one comes, is lost. `until` decides when: at once (the run may or may not
 * be created) or once `ready()` says the run exists.
 */
async function sendAndLose(base: string, path: string, headers: Record<string, string>, body: string, ready?: () => Promise<unknown>): Promise<void> {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  socket.on('error', () => undefined);
  await new Promise<void>((r) => socket.once('connect', () => r()));
  const lines = [
    `POST ${path} HTTP/1.1`,
    `host: ${url.host}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ];
  await new Promise<void>((r) => socket.write(lines.join('\r\n') + body, () => r()));
  if (ready) await ready();
  socket.resetAndDestroy();
}

const runIdOf = (r: RecordedRequest) => r.headers.find(([k]) => k === 'x-async-run-id')?.[1];

describeEachEnvoy('Idempotency-Key (README "Idempotency-Key")', (factory) => {
  let redis: RedisServer;
  let db: Redis;
  let app: Upstream;
  let envoy: TestEnvoy;
  let sidecar: Sidecar;

  beforeAll(async () => {
    redis = await RedisServer.start();
    db = new Redis(redis.url);
    app = await Upstream.start();
    const extprocPort = await freePort();
    envoy = await factory.start({ async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      IDEMPOTENCY_KEY_TTL: String(KEY_TTL_S),
      CONFIG_FILE: writeConfigFile('queues:\n  gpu: {}\nroutes:\n  - { prefix: /gpu, queue: gpu }\n'),
    });
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  });

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await app?.close();
    db?.disconnect();
    await redis?.destroy();
  });

  const calls = (path: string) => app.requests.filter((r) => r.url.split('?')[0] === path);
  const settle = () => new Promise((r) => setTimeout(r, 500)); // time for a second dispatch, were there one

  it('answers a repeat with the same 202, marked as a replay, and calls the app once; quoted and bare keys are one key', async () => {
    const path = `/once-${randomBytes(3).toString('hex')}`;
    const key = `key-${randomBytes(6).toString('hex')}`;
    const first = await post(envoy.url, `${path}?async=true&x=1`, { ...OWNER, 'idempotency-key': `"${key}"` }, '{"a":1}');
    expect(first.status).toBe(202);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const id = first.json().run_id;
    // Bare, with another webhookEndpoint and async spelled otherwise: the same request (its fingerprint leaves them out).
    const again = await post(
      envoy.url,
      `${path}?x=1&async=1&webhookEndpoint=${encodeURIComponent('https://hooks.example.com/x')}`,
      { ...OWNER, 'idempotency-key': key },
      '{"a":1}',
    );
    expect(again.status).toBe(202);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['location']).toBe(`/v1/runs/${id}`);
    expect(again.headers['x-request-id']).toBe(id);
    expect(again.json()).toEqual({ run_id: id });
    const byPrefer = await post(envoy.url, `${path}?x=1`, { ...OWNER, prefer: 'respond-async', 'idempotency-key': key }, '{"a":1}');
    expect([byPrefer.json().run_id, byPrefer.headers['idempotent-replayed'], byPrefer.headers['preference-applied']]).toEqual([id, 'true', 'respond-async']);
    await settle();
    expect(calls(path).map(runIdOf)).toEqual([id]);
    // Remembered for IDEMPOTENCY_KEY_TTL, under the queue's tag.
    const records = await db.keys('eas:*:idem:*');
    const mine = (await Promise.all(records.map(async (k) => ((await db.hget(k, 'run_id')) === id ? k : null)))).filter(Boolean) as string[];
    expect(mine).toHaveLength(1);
    expect(mine[0]).toContain(`{t:${queueTag('default')}}:idem:`);
    expect(mine[0]).not.toContain(key);
    const ttl = await db.pttl(mine[0]!);
    expect(ttl).toBeGreaterThan((KEY_TTL_S - 10) * 1000);
    expect(ttl).toBeLessThanOrEqual(KEY_TTL_S * 1000);
  });

  it('refuses the same key with another request (422) and creates nothing; another key or owner is another run', async () => {
    const path = `/other-${randomBytes(3).toString('hex')}`;
    const key = `"k-${randomBytes(6).toString('hex')}"`;
    const first = await post(envoy.url, `${path}?async=true`, { ...OWNER, 'idempotency-key': key }, '{"a":1}');
    expect(first.status).toBe(202);
    for (const [p, body] of [
      [`${path}?async=true`, '{"a":2}'], // another body
      [`${path}?async=true&x=1`, '{"a":1}'], // another query
      [`${path}/sub?async=true`, '{"a":1}'], // another path
    ] as const) {
      const res = await post(envoy.url, p, { ...OWNER, 'idempotency-key': key }, body);
      expect(res.status).toBe(422);
      expect(res.json().error.code).toBe('idempotency_key_reused');
    }
    const put = await request(`${envoy.url}${path}?async=true`, { method: 'PUT', headers: { ...OWNER, 'idempotency-key': key }, body: '{"a":1}' });
    expect(put.statusCode).toBe(422); // another method
    await put.body.dump();
    const otherOwner = await post(envoy.url, `${path}?async=true`, { authorization: 'Bearer someone-else', 'idempotency-key': key }, '{"a":1}');
    const noOwner = await post(envoy.url, `${path}?async=true`, { 'idempotency-key': key }, '{"a":1}');
    const otherKey = await post(envoy.url, `${path}?async=true`, { ...OWNER, 'idempotency-key': `${key.slice(0, -1)}-2"` }, '{"a":1}');
    const ids = [first, otherOwner, noOwner, otherKey].map((r) => {
      expect([r.status, r.headers['idempotent-replayed']]).toEqual([202, undefined]);
      return r.json().run_id;
    });
    expect(new Set(ids).size).toBe(4);
    await settle();
    expect(calls(path).map(runIdOf).sort()).toEqual([...ids].sort());
    expect(calls(`${path}/sub`)).toEqual([]);
  });

  it('scopes a key per queue: the same key on a path of another queue is another run', async () => {
    const key = `q-${randomBytes(6).toString('hex')}`;
    const gpu = await post(envoy.url, '/gpu/model?async=true', { ...OWNER, 'idempotency-key': key });
    const other = await post(envoy.url, '/cpu/model?async=true', { ...OWNER, 'idempotency-key': key });
    expect([gpu.status, other.status]).toEqual([202, 202]);
    expect(gpu.json().run_id).not.toBe(other.json().run_id);
    expect(gpu.json().run_id.endsWith(queueTag('gpu'))).toBe(true);
    // Within the gpu queue, another path is another request.
    expect((await post(envoy.url, '/gpu/other?async=true', { ...OWNER, 'idempotency-key': key })).status).toBe(422);
    expect((await post(envoy.url, '/gpu/model?async=true', { ...OWNER, 'idempotency-key': key })).json().run_id).toBe(gpu.json().run_id);
  });

  it('refuses an unusable key with 400 before any run exists', async () => {
    const path = `/bad-key-${randomBytes(3).toString('hex')}`;
    for (const value of ['""', '"unterminated', '"a";p=1', 'two,keys', 'has space', 'k'.repeat(256)]) {
      const res = await post(envoy.url, `${path}?async=true`, { ...OWNER, 'idempotency-key': value });
      expect([res.status, res.json().error.code]).toEqual([400, 'invalid_idempotency_key']);
    }
    const twice = await request(`${envoy.url}${path}?async=true`, {
      method: 'POST',
      headers: ['content-type', 'application/json', 'idempotency-key', 'a', 'idempotency-key', 'b', 'authorization', OWNER.authorization],
      body: '{}',
    });
    expect(twice.statusCode).toBe(400);
    expect(((await twice.body.json()) as { error: { code: string } }).error.code).toBe('invalid_idempotency_key');
    await settle();
    expect(calls(path)).toEqual([]);
  });

  it('never calls the app twice when a client retries after a lost 202', async () => {
    // The 202 lost after the run was stored: the retry is a replay of that run.
    const path = `/lost-${randomBytes(3).toString('hex')}`;
    const key = `"lost-${randomBytes(6).toString('hex')}"`;
    await sendAndLose(envoy.url, `${path}?async=true`, { ...OWNER, 'idempotency-key': key }, '{"lost":1}', () =>
      eventually(() => (calls(path).length > 0 ? true : undefined)),
    );
    const retry = await post(envoy.url, `${path}?async=true`, { ...OWNER, 'idempotency-key': key }, '{"lost":1}');
    expect([retry.status, retry.headers['idempotent-replayed']]).toEqual([202, 'true']);
    await settle();
    expect(calls(path).map(runIdOf)).toEqual([retry.json().run_id]);

    // Connections dropped the moment the request is written, whether the run got stored or not:
    // each retry ends with exactly one call to the app, for the run the retry names.
    const paths = Array.from({ length: 8 }, (_, i) => `${path}-${i}`);
    await Promise.all(paths.map((p) => sendAndLose(envoy.url, `${p}?async=true`, { ...OWNER, 'idempotency-key': `"${p}"` }, '{}')));
    const retries = await Promise.all(paths.map((p) => post(envoy.url, `${p}?async=true`, { ...OWNER, 'idempotency-key': `"${p}"` })));
    await eventually(() => (paths.every((p) => calls(p).length > 0) ? true : undefined));
    await settle();
    paths.forEach((p, i) => {
      expect(retries[i]!.status).toBe(202);
      expect(calls(p).map(runIdOf)).toEqual([retries[i]!.json().run_id]);
    });
  });
});

describeWithEnvoy('Idempotency-Key across two replicas, each behind its own real Envoy', () => {
  let redis: RedisServer;
  let app: Upstream;
  const envoys: RealEnvoy[] = [];
  const sidecars: Sidecar[] = [];

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start();
    for (let i = 0; i < 2; i++) {
      const extprocPort = await freePort();
      const envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
      envoys.push(envoy);
      sidecars.push(await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: envoy.dispatchUrl }));
      await eventually(
        async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
        15_000,
        'sidecar serving',
      );
    }
  });

  afterAll(async () => {
    for (const s of sidecars) await s.stop();
    for (const e of envoys) await e.close();
    await app?.close();
    await redis?.destroy();
  });

  const calls = (prefix: string) => app.requests.filter((r) => r.url.startsWith(prefix));
  const replayed = async () => {
    let n = 0;
    for (const s of sidecars) n += (await s.metrics.runsReplayed.get()).values[0]?.value ?? 0;
    return n;
  };

  it('creates one run when the same request reaches both replicas at the same moment', async () => {
    const prefix = `/pair-${randomBytes(3).toString('hex')}`;
    const pairs = 30;
    const before = await replayed();
    const answers: Answer[][] = [];
    for (let i = 0; i < pairs; i++) {
      const headers = { ...OWNER, 'idempotency-key': `"${prefix}-${i}"` };
      // Both requests leave in the same tick, on connections already open; the order alternates.
      const order = i % 2 === 0 ? [0, 1] : [1, 0];
      const sent = order.map((e) => post(envoys[e]!.url, `${prefix}/${i}?async=true`, headers, `{"i":${i}}`));
      const got = await Promise.all(sent);
      answers.push(order[0] === 0 ? got : [got[1]!, got[0]!]);
    }
    await eventually(() => (calls(prefix).length >= pairs ? true : undefined), 15_000, 'every run dispatched');
    await new Promise((r) => setTimeout(r, 500));
    const winners = [0, 0];
    answers.forEach(([a, b], i) => {
      expect([a!.status, b!.status]).toEqual([202, 202]);
      expect(a!.json().run_id).toBe(b!.json().run_id);
      const marks = [a!.headers['idempotent-replayed'], b!.headers['idempotent-replayed']];
      expect(marks.filter((m) => m === 'true')).toHaveLength(1);
      winners[marks.indexOf(undefined)]! += 1;
      expect(app.requests.filter((r) => r.url === `${prefix}/${i}`).map(runIdOf)).toEqual([a!.json().run_id]);
    });
    expect(calls(prefix)).toHaveLength(pairs);
    // Which replica's request created the run varies from pair to pair (measured: 6/24 and 12/18
    // of 30): the two really race, and the enqueue script lets exactly one of them win.
    expect(winners[0]! + winners[1]!).toBe(pairs);
    expect((await replayed()) - before).toBe(pairs);
  });

  it('creates one run when two different requests with one key reach both replicas at the same moment', async () => {
    const prefix = `/clash-${randomBytes(3).toString('hex')}`;
    for (let i = 0; i < 10; i++) {
      const headers = { ...OWNER, 'idempotency-key': `${prefix}-${i}` };
      const [a, b] = await Promise.all([
        post(envoys[0]!.url, `${prefix}/${i}?async=true`, headers, '{"from":0}'),
        post(envoys[1]!.url, `${prefix}/${i}?async=true`, headers, '{"from":1}'),
      ]);
      expect([a!.status, b!.status].sort()).toEqual([202, 422]);
    }
    await eventually(() => (calls(prefix).length >= 10 ? true : undefined), 15_000, 'every run dispatched');
    await new Promise((r) => setTimeout(r, 500));
    expect(calls(prefix)).toHaveLength(10);
  });

  it('answers a retry at the other replica after a 202 lost at the first with the same run', async () => {
    const path = `/handover-${randomBytes(3).toString('hex')}`;
    const headers = { ...OWNER, 'idempotency-key': `"${path}"` };
    await sendAndLose(envoys[0]!.url, `${path}?async=true`, headers, '{}', () => eventually(() => (calls(path).length > 0 ? true : undefined)));
    const retry = await post(envoys[1]!.url, `${path}?async=true`, headers);
    expect([retry.status, retry.headers['idempotent-replayed']]).toEqual([202, 'true']);
    await new Promise((r) => setTimeout(r, 500));
    expect(calls(path).map(runIdOf)).toEqual([retry.json().run_id]);
  });
});
