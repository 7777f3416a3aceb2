/**
 * The admin port against a browser on another site: DNS rebinding (a hostile name resolving to
 * 127.0.0.1, so requests carry `Host: attacker.example`) and cross-site form POSTs. Before the
 * fix the run list and results came back 200 and a cross-site POST redelivered a webhook.
 */
import * as http from 'node:http';
import { ConfigError, loadConfig } from '../../src/config';
import { assertDocumentedResponse } from '../support/openapi';
import { RedisServer } from '../support/redis-server';
import { startTestSidecar } from '../support/sidecar';

let redis: RedisServer;
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;

function call(path: string, headers: Record<string, string>, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: sidecar.adminPort, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const url = `http://127.0.0.1:${sidecar.adminPort}${path}`;
        try {
          assertDocumentedResponse({ method, url, requestHeaders: headers, status: res.statusCode ?? 0, headers: res.headers, body });
        } catch (err) {
          return reject(err as Error);
        }
        resolve({ status: res.statusCode ?? 0, body: body.toString() });
      });
    });
    req.on('error', reject);
    req.end();
  });
}
const RUN = '00000000-0000-4000-8000-000000000001';

beforeAll(async () => {
  redis = await RedisServer.start();
  sidecar = await startTestSidecar({ REDIS_URL: redis.url, ADMIN_ALLOWED_HOSTS: 'sidecar.internal' }, ['--role', 'extproc']);
});
afterAll(async () => {
  await sidecar?.stop();
  await redis?.destroy();
});

describe('admin port: Host and Origin', () => {
  it.each(['/v1/runs', `/v1/runs/${RUN}/result`, '/healthz', '/metrics', '/'])('refuses %s for Host: attacker.example (403 host_not_allowed)', async (path) => {
    const r = await call(path, { host: 'attacker.example:9090' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'host_not_allowed' } });
  });

  it.each(['127.0.0.1:9090', 'localhost:9090', '[::1]:9090', '10.1.2.3:9090', 'sidecar.internal', 'SIDECAR.internal:9090'])(
    'answers Host: %s (IP literals, localhost, ADMIN_ALLOWED_HOSTS)',
    async (host) => {
      expect((await call('/v1/runs', { host })).status).toBe(200);
    },
  );

  it('refuses a cross-site POST (Origin of another site, or Sec-Fetch-Site: cross-site), allows same-origin and non-browser clients', async () => {
    const host = `127.0.0.1:${sidecar.adminPort}`;
    const path = `/v1/runs/${RUN}/redeliver`;
    const crossSite: Array<Record<string, string>> = [
      { origin: 'https://attacker.example' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { origin: 'null' },
    ];
    for (const extra of crossSite) {
      const r = await call(path, { host, ...extra }, 'POST');
      expect([extra, r.status, JSON.parse(r.body).error.code]).toEqual([extra, 403, 'cross_site_request']);
    }
    // Same origin (the dashboard) and curl reach the API, which answers 404 for the unknown run.
    expect((await call(path, { host, origin: `http://${host}`, 'sec-fetch-site': 'same-origin' }, 'POST')).status).toBe(404);
    expect((await call(path, { host }, 'POST')).status).toBe(404);
  });
});

describe('admin port off loopback', () => {
  it('refuses to start without ADMIN_TOKEN (exit code 2 from the CLI), starts with one', () => {
    expect(() => loadConfig({ ADMIN_ADDR: '0.0.0.0:9090' }, [])).toThrow(ConfigError);
    expect(() => loadConfig({ ADMIN_ADDR: '0.0.0.0:9090' }, [])).toThrow(/ADMIN_TOKEN/);
    expect(loadConfig({ ADMIN_ADDR: '0.0.0.0:9090', ADMIN_TOKEN: 'x'.repeat(32) }, []).adminAddr.host).toBe('0.0.0.0');
    expect(loadConfig({ ADMIN_ADDR: '127.0.0.5:9090' }, []).adminToken).toBeNull();
  });
});
