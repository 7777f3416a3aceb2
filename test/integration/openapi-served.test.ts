/**
 * The OpenAPI document as clients get it: through Envoy under the runs API prefix (no owner
 * header needed, even with OWNER_REQUIRED) and on the admin port (no ADMIN_TOKEN needed), the
 * checked-in file as JSON. Every answer here is itself checked against it (test/support/http.ts).
 */
import { readOpenApiDocument } from '../../src/api/openapi';
import { describeEachEnvoy, type TestEnvoy } from '../support/envoys';
import { request } from '../support/http';
import { freePort } from '../support/ports';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream } from '../support/upstream';

const OWNER = { authorization: 'Bearer tenant-a' };

describeEachEnvoy('the OpenAPI document, served', (factory) => {
  let redis: RedisServer;
  let app: Upstream;
  let envoy: TestEnvoy;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  let admin: string;

  beforeAll(async () => {
    redis = await RedisServer.start();
    app = await Upstream.start();
    const extprocPort = await freePort();
    envoy = await factory.start({ async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` });
    sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: envoy.dispatchUrl,
      OWNER_REQUIRED: 'true',
      ADMIN_TOKEN: 'admin-secret',
    });
    admin = `http://127.0.0.1:${sidecar.adminPort}`;
    await eventually(
      async () => ((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`, { headers: OWNER })).statusCode === 404 ? true : undefined),
      15_000,
      'sidecar serving',
    );
  });

  afterAll(async () => {
    await sidecar?.stop();
    await envoy?.close();
    await app?.close();
    await redis?.destroy();
  });

  it('through Envoy at /v1/runs/openapi.json without the owner header, and on the admin port at /openapi.json without the token', async () => {
    const expected = readOpenApiDocument();
    for (const url of [`${envoy.url}/v1/runs/openapi.json`, `${admin}/openapi.json`]) {
      const res = await request(url);
      expect([url, res.statusCode, res.headers['content-type']]).toEqual([url, 200, 'application/json']);
      expect(JSON.parse(await res.body.text())).toEqual(expected);
    }
    // The rest of the runs API still needs the owner header, and the admin runs API its token.
    expect((await request(`${envoy.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode).toBe(401);
    expect((await request(`${admin}/v1/runs`)).statusCode).toBe(401);
  });

  it('answers HEAD, and 405 with Allow for other methods', async () => {
    for (const url of [`${envoy.url}/v1/runs/openapi.json`, `${admin}/openapi.json`]) {
      expect((await request(url, { method: 'HEAD' })).statusCode).toBe(200);
      const post = await request(url, { method: 'POST', body: '{}' });
      expect([post.statusCode, post.headers.allow, ((await post.body.json()) as { error: { code: string } }).error.code]).toEqual([
        405,
        'GET, HEAD',
        'method_not_allowed',
      ]);
    }
  });

  it('accepts ?wait in exponent notation, as clients print small floats (found by the API fuzzer)', async () => {
    const res = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{}', headers: OWNER });
    const { run_id } = (await res.body.json()) as { run_id: string };
    expect((await request(`${envoy.url}/v1/runs/${run_id}?wait=2.5e-7`, { headers: OWNER })).statusCode).toBe(200);
    const tooLong = await request(`${envoy.url}/v1/runs/${run_id}?wait=1e2`, { headers: OWNER });
    expect([tooLong.statusCode, ((await tooLong.body.json()) as { error: { code: string } }).error.code]).toEqual([400, 'invalid_wait']);
  });
});
