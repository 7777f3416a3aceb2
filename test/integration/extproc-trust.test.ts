/**
 * The ext_proc port's trust boundary, driven the way an outside review did: a gRPC client that
 * talks to the sidecar directly, bypassing Envoy, and the real Envoy carrying the shared secret.
 * Each case failed on the code before the fix (the replay went to the host named in `:path`, any
 * client was served, abandoned streams held their bodies without limit).
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { request } from '../support/http';
import type { ProcessingRequest } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import { createExtProcClient, ExtProcStream, type StreamEvent } from '../support/envoy/ext-proc-stream';
import { freePort } from '../support/ports';
import { describeWithEnvoy, RealEnvoy, REPO_ROOT } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually, startTestSidecar } from '../support/sidecar';
import { Upstream } from '../support/upstream';

const TOKEN = 'test-token-0123456789abcdef';
const h = (key: string, v: string) => ({ key, raw_value: Buffer.from(v, 'latin1') });
const head = (path: string, eos = false, method = 'POST'): ProcessingRequest => ({
  request_headers: { headers: { headers: [h(':method', method), h(':path', path), h(':authority', 'app'), h(':scheme', 'http')] }, end_of_stream: eos },
});
const chunk = (bytes: number, eos = false): ProcessingRequest => ({ request_body: { body: Buffer.alloc(bytes, 120), end_of_stream: eos } });

/** The next event that is not a message (how the stream ended), within `ms`. */
async function ending(s: ExtProcStream, ms = 5_000): Promise<StreamEvent> {
  const deadline = Date.now() + ms;
  for (;;) {
    const e = await s.next(deadline);
    if (e.kind !== 'message') return e;
  }
}

let redis: RedisServer;
let app: Upstream;
let internal: http.Server;
let internalHits = 0;
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let extprocPort: number;
let client: ReturnType<typeof createExtProcClient>;
let db: Redis;

const withToken = () => {
  const md = new grpc.Metadata();
  md.set('x-async-sidecar-token', TOKEN);
  return md;
};
const runKeys = async () => (await db.keys('eas:{runs}:run:*')).length;

beforeAll(async () => {
  redis = await RedisServer.start();
  app = await Upstream.start();
  // Stands for a cloud metadata service: an internal address the replay must never reach.
  internal = http.createServer((_req, res) => {
    internalHits++;
    res.end('{"AccessKeyId":"secret"}');
  });
  await new Promise<void>((r) => internal.listen(0, '127.0.0.2', r));
  extprocPort = await freePort();
  sidecar = await startTestSidecar({
    EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
    EXTPROC_TOKEN: TOKEN,
    EXTPROC_STREAM_IDLE_TIMEOUT: '0.5',
    MAX_BODY_BYTES: String(1024 * 1024),
    EXTPROC_BUFFER_BUDGET_BYTES: String(2 * 1024 * 1024),
    REDIS_URL: redis.url,
    DISPATCH_URL: app.url,
  });
  client = createExtProcClient(`127.0.0.1:${extprocPort}`, 'async_sidecar');
  db = new Redis(redis.url);
});

afterAll(async () => {
  client?.close();
  db?.disconnect();
  await sidecar?.stop();
  await new Promise((r) => internal?.close(r));
  await app?.close();
  await redis?.destroy();
});

describe('ext_proc trust boundary (direct gRPC clients)', () => {
  it('refuses a stream without the shared secret (UNAUTHENTICATED) and stores nothing', async () => {
    const s = new ExtProcStream(client);
    s.send(head('/predict?async=true', true));
    const e = await ending(s);
    expect(e).toMatchObject({ kind: 'error', code: grpc.status.UNAUTHENTICATED });
    const wrong = new grpc.Metadata();
    wrong.set('x-async-sidecar-token', `${TOKEN}x`);
    const w = new ExtProcStream(client, wrong);
    w.send(head('/predict?async=true', true));
    expect(await ending(w)).toMatchObject({ kind: 'error', code: grpc.status.UNAUTHENTICATED });
    expect(await runKeys()).toBe(0);
  });

  it('answers health checks without the secret (kubelet and Envoy health checks send none)', async () => {
    const proto = grpc.loadPackageDefinition(loadSync(require.resolve('grpc-health-check/proto/health/v1/health.proto'), { enums: String })) as unknown as {
      grpc: {
        health: {
          v1: {
            Health: new (
              a: string,
              c: grpc.ChannelCredentials,
            ) => grpc.Client & { check: (r: object, cb: (e: Error | null, r: { status: string }) => void) => void };
          };
        };
      };
    };
    const health = new proto.grpc.health.v1.Health(`127.0.0.1:${extprocPort}`, grpc.credentials.createInsecure());
    const status = await new Promise<string>((resolve, reject) => health.check({ service: '' }, (e, r) => (e ? reject(e) : resolve(r.status))));
    health.close();
    expect(status).toBe('SERVING');
  });

  it.each(['@127.0.0.2:PORT/latest/meta-data/?async=true', 'http://127.0.0.2:PORT/latest/meta-data/?async=true', '/a b?async=true'])(
    'ends a stream whose :path is %j with INVALID_ARGUMENT: no run, no call to the internal host',
    async (template) => {
      const port = (internal.address() as AddressInfo).port;
      const s = new ExtProcStream(client, withToken());
      s.send(head(template.replace('PORT', String(port)), true, 'GET'));
      expect(await ending(s)).toMatchObject({ kind: 'error', code: grpc.status.INVALID_ARGUMENT });
      await new Promise((r) => setTimeout(r, 300)); // a dispatch, had there been a run, starts within ms
      expect(internalHits).toBe(0);
      expect(await runKeys()).toBe(0);
    },
  );

  it('ends a stream that sends its headers and then nothing (DEADLINE_EXCEEDED after the idle timeout)', async () => {
    const s = new ExtProcStream(client, withToken());
    s.send(head('/predict?async=true', false));
    const e = await ending(s, 5_000);
    expect(e).toMatchObject({ kind: 'error', code: grpc.status.DEADLINE_EXCEEDED });
    expect(await runKeys()).toBe(0);
  });

  it('refuses body bytes past the process-wide budget (RESOURCE_EXHAUSTED) and frees them when streams end', async () => {
    const held: ExtProcStream[] = [];
    // Two streams of 900 KiB each fit the 2 MiB budget; the third does not.
    for (let i = 0; i < 2; i++) {
      const s = new ExtProcStream(client, withToken());
      s.send(head('/predict?async=true'));
      s.send(chunk(900 * 1024));
      held.push(s);
    }
    await eventually(() => (held.every((s) => s.received.length >= 2) ? true : undefined), 5_000, 'chunks taken');
    const third = new ExtProcStream(client, withToken());
    third.send(head('/predict?async=true'));
    third.send(chunk(900 * 1024));
    expect(await ending(third)).toMatchObject({ kind: 'error', code: grpc.status.RESOURCE_EXHAUSTED });
    for (const s of held) s.close();
    // With the budget given back, a complete request is accepted again.
    const ok = await eventually(
      async () => {
        const s = new ExtProcStream(client, withToken());
        s.send(head('/predict?async=true'));
        s.send(chunk(900 * 1024, true));
        const deadline = Date.now() + 3_000;
        for (;;) {
          const e = await s.next(deadline);
          if (e.kind !== 'message') return undefined;
          if (e.message.immediate_response) {
            s.close();
            return e.message.immediate_response.status?.code;
          }
        }
      },
      10_000,
      'accepted after the budget was freed',
    );
    expect(ok).toBe('Accepted');
  });
});

describeWithEnvoy('ext_proc trust boundary through the real Envoy', () => {
  let envoy: RealEnvoy;
  let dir: string;
  beforeAll(async () => {
    // The shipped envoy.yaml with its @EXTPROC_TOKEN@ filled in by the very command the compose
    // file runs before Envoy starts (paths moved to a temp dir; Envoy itself started here).
    dir = mkdtempSync(join(tmpdir(), 'eas-token-'));
    writeFileSync(join(dir, 'token'), TOKEN);
    const compose = parseYaml(readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8')) as { services: { envoy: { command: string[] } } };
    const script = compose.services.envoy.command[0]!.replace(/ && exec envoy .*/, '')
      .replace('$$', '$')
      .replace('/run/extproc/token', join(dir, 'token'))
      .replace('/etc/envoy/envoy.yaml', join(REPO_ROOT, 'envoy', 'envoy.yaml'))
      .replace('/tmp/envoy.yaml', join(dir, 'envoy.yaml'));
    execFileSync('/bin/sh', ['-c', script]);
    expect(readFileSync(join(dir, 'envoy.yaml'), 'utf8')).toContain(`value: "${TOKEN}"`);
    envoy = await RealEnvoy.start({
      configPath: join(dir, 'envoy.yaml'),
      clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` },
    });
  });
  afterAll(async () => {
    await envoy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('Envoy carrying the secret gets its 202 and the run reaches the app', async () => {
    const before = app.requests.length;
    const res = await request(`${envoy.url}/predict?async=true`, { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(202);
    const { run_id } = (await res.body.json()) as { run_id: string };
    await eventually(() => app.requests.slice(before).find((r) => r.headers.some(([k, v]) => k === 'x-async-run-id' && v === run_id)), 10_000, 'replay');
  });

  it('an Envoy without the token (the file as shipped, placeholder unreplaced) gets 503 and starts nothing', async () => {
    const plain = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    try {
      const keys = await runKeys();
      const res = await request(`${plain.url}/predict?async=true`, { method: 'POST', body: '{}' });
      expect(res.statusCode).toBe(503); // status_on_error
      await res.body.dump();
      expect(await runKeys()).toBe(keys);
    } finally {
      await plain.close();
    }
  });
});
