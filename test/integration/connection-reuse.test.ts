import { EnvoyStandIn } from '../support/envoy';
import { RedisServer } from '../support/redis-server';
import { freePort } from '../support/ports';
import { startTestSidecar } from '../support/sidecar';

/**
 * Envoy ends every ext_proc stream with END_STREAM then RST_STREAM CANCEL, and Node's HTTP/2
 * server allows 1,000 received resets per connection (refilled at 33/s) before it drops the
 * connection with every stream on it. envoy/envoy.yaml caps streams per connection to the
 * sidecar (max_requests_per_connection: 500); these tests show why.
 */
const STREAMS = 2500;
const PARALLEL = 32;

let redis: RedisServer;
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let extprocPort: number;

beforeAll(async () => {
  redis = await RedisServer.start();
  extprocPort = await freePort();
  // Accept only: this is about the ext_proc connection, not dispatch.
  sidecar = await startTestSidecar({ EXTPROC_ADDR: `127.0.0.1:${extprocPort}`, REDIS_URL: redis.url }, ['--role', 'extproc']);
});

afterAll(async () => {
  await sidecar?.stop();
  await redis?.destroy();
});

async function burst(envoy: EnvoyStandIn): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < STREAMS) {
        next++;
        const r = await envoy.process({ method: 'POST', path: '/burst?async=true', headers: { 'content-type': 'application/json' }, body: '{}' });
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

describe('many Envoy-shaped streams to one sidecar', () => {
  it(`accepts ${STREAMS} streams in a burst with envoy.yaml's max_requests_per_connection`, async () => {
    const envoy = await EnvoyStandIn.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: '127.0.0.1:9' } });
    try {
      const statuses = await burst(envoy);
      expect(Object.fromEntries(statuses)).toEqual({ 202: STREAMS });
    } finally {
      await envoy.close();
    }
  }, 120_000);

  it('loses requests when every stream shares one connection (the hazard the setting avoids)', async () => {
    const envoy = await EnvoyStandIn.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: '127.0.0.1:9' }, maxRequestsPerConnection: null });
    try {
      const statuses = await burst(envoy);
      expect(statuses.get(503) ?? 0).toBeGreaterThan(0); // the dropped streams' gRPC errors, as envoy.yaml's status_on_error
    } finally {
      await envoy.close();
    }
  }, 120_000);
});
