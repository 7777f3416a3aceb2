/**
 * Cerebrium-compatible signatures (README "Webhooks"): a request's `X-Webhook-Secret` makes every
 * webhook of its run carry `X-Cerebrium-Webhook-Signature` and `-Timestamp` with `X-Request-Id`
 * = the run id, checked here by a receiver that verifies as Cerebrium's documentation shows
 * (test/support/cerebrium-verify.py), next to the Standard Webhooks signature. The secret is sealed
 * in Redis and appears in no answer, no log line, no stored field and no replay.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { request } from '../support/http';
import { registerListener } from '../support/listeners';
import { freePort } from '../support/ports';
import { ensureBuilt, spawnSidecar, type SidecarProcess } from '../support/process';
import { describeWithEnvoy, RealEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream } from '../support/upstream';
import { WebhookReceiver, type ReceivedRequest } from '../support/webhook-receiver';

jest.setTimeout(90_000);

const STANDARD_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const CLIENT_SECRET = 'cerebrium s3cret-Zq7 for this run';
const KEY = randomBytes(32).toString('base64');
const VERIFIER = join(__dirname, '..', 'support', 'cerebrium-verify.py');

/** What the Python receiver says of each webhook, for `secret`. */
function cerebriumVerdicts(hooks: ReceivedRequest[], secret: string): string[] {
  const input = hooks
    .map((h) =>
      JSON.stringify({
        request_id: h.headers['x-request-id'],
        timestamp: h.headers['x-cerebrium-webhook-timestamp'],
        body: h.body.toString('utf8'),
        signature: h.headers['x-cerebrium-webhook-signature'],
        secret,
      }),
    )
    .join('\n');
  return execFileSync('python3', [VERIFIER], { input, encoding: 'utf8' }).trim().split('\n');
}

describeWithEnvoy('Cerebrium-compatible webhook signatures (X-Webhook-Secret), through the real Envoy', () => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: RealEnvoy;
  let extprocPort: number;

  beforeAll(async () => {
    ensureBuilt();
    redis = await RedisServer.start();
    app = await Upstream.start(Upstream.json(200, { smile: 'wave' }));
    extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
  });

  afterAll(async () => {
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  const serving = () =>
    eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );

  async function accept(rx: WebhookReceiver, headers: Record<string, string>, events = 'started,completed'): Promise<string> {
    const res = await request(`${envoy.url}/v4/p-1/app/run?async=true&webhookEvents=${events}&webhookEndpoint=${encodeURIComponent(rx.url)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: '{"param":"hello world"}',
    });
    const body = (await res.body.json()) as { run_id: string };
    expect([res.statusCode, body]).toEqual([202, { run_id: expect.any(String) }]);
    return body.run_id;
  }

  it('signs every webhook of the run as Cerebrium does, besides Standard Webhooks; the secret is in no answer, log, Redis field or replay', async () => {
    const adminPort = await freePort();
    const proc: SidecarProcess = spawnSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      WEBHOOK_SECRET: STANDARD_SECRET,
      WEBHOOK_SECRET_ENCRYPTION_KEY: KEY,
      LOG_LEVEL: 'trace',
    });
    const unregister = registerListener(adminPort, 'admin');
    const rx = await WebhookReceiver.start();
    try {
      await proc.waitForLog('envoy-async-sidecar started');
      await serving();
      const before = app.requests.length;
      const id = await accept(rx, { authorization: 'Bearer alice', 'x-webhook-secret': CLIENT_SECRET });
      const hooks = await rx.waitForRequests(2);
      expect(hooks.map((h) => h.headers['x-async-webhook-event'])).toEqual(['started', 'completed']);
      for (const h of hooks) {
        expect(h.headers['x-request-id']).toBe(id);
        expect(h.headers['x-cerebrium-webhook-timestamp']).toBe(h.headers['webhook-timestamp']);
        expect(h.headers['x-cerebrium-webhook-signature']).toMatch(/^v1,[0-9a-f]{64}$/);
        expect(() => new Webhook(STANDARD_SECRET).verify(h.body.toString(), h.headers)).not.toThrow();
      }
      expect(cerebriumVerdicts(hooks, CLIENT_SECRET)).toEqual(['valid', 'valid']);
      expect(cerebriumVerdicts(hooks, 'another secret')).toEqual(['invalid', 'invalid']);
      expect(hooks[1]!.body.toString()).toBe('{"smile":"wave"}');

      // A redelivery is signed the same way.
      await eventually(async () => {
        const r = (await (await request(`${envoy.url}/v1/runs/${id}`, { headers: { authorization: 'Bearer alice' } })).body.json()) as any;
        return r.webhook.status === 'delivered' ? true : undefined;
      });
      expect((await request(`${envoy.url}/v1/runs/${id}/webhook`, { method: 'POST', headers: { authorization: 'Bearer alice' } })).statusCode).toBe(202);
      const [, , again] = await rx.waitForRequests(3);
      expect(cerebriumVerdicts([again!], CLIENT_SECRET)).toEqual(['valid']);

      // Nowhere to be read: the app's request, the runs API through Envoy and on the admin port, Redis, the logs.
      const replay = app.requests.slice(before).find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id))!;
      expect(replay.headers.map(([k]) => k)).not.toContain('x-webhook-secret');
      const seen: string[] = [];
      for (const url of [`${envoy.url}/v1/runs/${id}`, `http://127.0.0.1:${adminPort}/v1/runs/${id}`, `http://127.0.0.1:${adminPort}/v1/runs?limit=10`]) {
        seen.push(await (await request(url, { headers: { authorization: 'Bearer alice' } })).body.text());
      }
      const client = new Redis(redis.url);
      try {
        // Kept sealed with the run, for redeliveries.
        expect(String(await client.hget((await client.keys(`*:run:${id}`))[0]!, 'wh_secret'))).toMatch(/^v1\.[A-Za-z0-9+/]+=*$/);
        for (const key of await client.keys('*')) {
          const type = await client.type(key);
          if (type === 'hash') seen.push(...Object.values(await client.hgetallBuffer(key)).map((v) => v.toString('latin1')), key);
          else if (type === 'string') seen.push((await client.getBuffer(key))!.toString('latin1'));
          else if (type === 'zset' || type === 'list' || type === 'set') seen.push(key);
        }
      } finally {
        client.disconnect();
      }
      expect(proc.stdout()).toContain(id); // the logs were captured
      seen.push(proc.stdout(), proc.stderr());
      for (const text of seen) {
        expect(text).not.toContain(CLIENT_SECRET);
        expect(text).not.toContain('s3cret-Zq7');
        expect(text).not.toContain(Buffer.from(CLIENT_SECRET).toString('base64'));
      }
    } finally {
      unregister();
      proc.kill('SIGTERM');
      await proc.exited;
      await rx.close();
    }
  });

  it('refuses X-Webhook-Secret with 400 where no WEBHOOK_SECRET_ENCRYPTION_KEY is set, and ignores it without a webhookEndpoint', async () => {
    const sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: envoy.dispatchUrl });
    const rx = await WebhookReceiver.start();
    try {
      await serving();
      const refused = await request(`${envoy.url}/run?async=true&webhookEndpoint=${encodeURIComponent(rx.url)}`, {
        method: 'POST',
        headers: { 'x-webhook-secret': CLIENT_SECRET },
        body: '{}',
      });
      expect([refused.statusCode, ((await refused.body.json()) as { error: { code: string } }).error.code]).toEqual([400, 'webhook_secret_unsupported']);
      const before = app.requests.length;
      const res = await request(`${envoy.url}/run?async=true`, { method: 'POST', headers: { 'x-webhook-secret': CLIENT_SECRET }, body: '{}' });
      expect(res.statusCode).toBe(202);
      const { run_id: id } = (await res.body.json()) as { run_id: string };
      const replay = await eventually(() => app.requests.slice(before).find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === id)));
      expect(replay.headers.map(([k]) => k)).not.toContain('x-webhook-secret');
      expect(rx.requests).toEqual([]);
    } finally {
      await sidecar.stop();
      await rx.close();
    }
  });

  it('sends nothing, and ends the delivery secret_unreadable, when no configured key opens the sealed secret', async () => {
    // Accepted by a replica with one key, delivered by a worker configured with another only.
    const extproc = await startTestSidecar(
      { EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url, DISPATCH_URL: envoy.dispatchUrl, WEBHOOK_SECRET_ENCRYPTION_KEY: KEY },
      ['--role', 'extproc'],
    );
    const rx = await WebhookReceiver.start();
    let worker: Awaited<ReturnType<typeof startTestSidecar>> | null = null;
    try {
      await serving();
      const id = await accept(rx, { 'x-webhook-secret': CLIENT_SECRET }, 'completed');
      worker = await startTestSidecar(
        { REDIS_URL: redis.url, DISPATCH_URL: envoy.dispatchUrl, WEBHOOK_SECRET_ENCRYPTION_KEY: randomBytes(32).toString('base64') },
        ['--role', 'worker'],
      );
      const run = await eventually(async () => {
        const r = (await (await request(`http://127.0.0.1:${extproc.adminPort}/v1/runs/${id}`)).body.json()) as any;
        return r.webhook.status === 'failed' ? r : undefined;
      });
      expect(run.status).toBe('succeeded');
      expect(run.webhook).toMatchObject({ attempts: 1, history: [{ status_code: null, error: 'secret_unreadable', outcome: 'failed' }] });
      expect(rx.requests).toEqual([]);
    } finally {
      await worker?.stop();
      await extproc.stop();
      await rx.close();
    }
  });
});
