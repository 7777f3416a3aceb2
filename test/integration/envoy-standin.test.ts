/**
 * Tests of the Envoy stand-in itself (test/support/envoy), against a tiny scripted ext_proc gRPC
 * server written here (not our sidecar) and a real loopback upstream.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadExtProcProto } from '../../src/extproc/proto';
import type { ProcessingRequest__Output } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import { EnvoyStandIn, type EnvoyStandInOptions } from '../support/envoy';

type Call = grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>;

/** One server-side stream, read message by message. */
class ServerStream {
  readonly received: ProcessingRequest__Output[] = [];
  cancelled = false;
  ended = false;
  private readonly queue: ProcessingRequest__Output[] = [];
  private waiter?: (m: ProcessingRequest__Output | undefined) => void;
  constructor(readonly call: Call) {
    call.on('data', (m: ProcessingRequest__Output) => {
      this.received.push(m);
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(m);
      } else this.queue.push(m);
    });
    call.on('cancelled', () => (this.cancelled = true));
    call.on('end', () => {
      this.ended = true;
      this.waiter?.(undefined);
    });
    call.on('error', () => undefined);
  }
  next(): Promise<ProcessingRequest__Output> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      this.waiter = (m) => (m ? resolve(m) : reject(new Error('stream ended')));
    });
  }
  send(r: ProcessingResponse): void {
    this.call.write(r);
  }
}

type Script = (s: ServerStream) => Promise<void>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CONTINUE_HEADERS: ProcessingResponse = { request_headers: { response: { status: 'CONTINUE' } } };
const CONTINUE_BODY: ProcessingResponse = { request_body: { response: { status: 'CONTINUE' } } };
const raw = (key: string, v: string) => ({ header: { key, raw_value: Buffer.from(v) } });

let grpcServer: grpc.Server;
let grpcAddr = '';
let script: Script = async () => undefined;
const streams: ServerStream[] = [];

let upstream: Server;
let upstreamAddr = '';
const upstreamRequests: { method: string; url: string; headers: Record<string, unknown>; body: Buffer; headersAt: number; endAt: number }[] = [];

let envoy: EnvoyStandIn | undefined;

async function startEnvoy(extra: Partial<EnvoyStandInOptions> = {}): Promise<EnvoyStandIn> {
  envoy = await EnvoyStandIn.start({ clusters: { async_sidecar: grpcAddr, app: upstreamAddr }, ...extra });
  return envoy;
}

beforeAll(async () => {
  const proto = loadExtProcProto();
  grpcServer = new grpc.Server();
  grpcServer.addService(proto.envoy.service.ext_proc.v3.ExternalProcessor.service, {
    Process: (call: Call) => {
      const s = new ServerStream(call);
      streams.push(s);
      script(s).catch(() => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  grpcAddr = `127.0.0.1:${port}`;
  upstream = createServer((req, res) => {
    const headersAt = Date.now();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      upstreamRequests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks), headersAt, endAt: Date.now() });
      res.writeHead(200, { 'content-type': 'text/plain', 'x-app': 'yes' });
      res.end(`app saw ${Buffer.concat(chunks).length} bytes`);
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  upstreamAddr = `127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});

afterEach(async () => {
  await envoy?.close();
  envoy = undefined;
  streams.length = 0;
  upstreamRequests.length = 0;
  script = async () => undefined;
});

afterAll(async () => {
  grpcServer.forceShutdown();
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
});

describe('Envoy stand-in: routing and pass-through', () => {
  it('passes a request on the catch-all route to the app without opening a stream', async () => {
    const e = await startEnvoy();
    const res = await fetch(`${e.url}/hello?async=false`, { method: 'POST', body: 'abc' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('app saw 3 bytes');
    expect(res.headers.get('x-envoy-upstream-service-time')).not.toBeNull();
    expect(e.stats.streamsOpened).toBe(0);
    expect(e.stats.passThrough).toBe(1);
    expect(streams).toHaveLength(0);
    expect(e.last?.route).toBe('passthrough');
    expect(upstreamRequests[0].url).toBe('/hello?async=false');
  });

  it('matches the async routes as envoy.yaml says (first value only, case-insensitive, Prefer header)', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send({ immediate_response: { status: { code: 'Accepted' }, body: Buffer.from('{}') } });
    };
    const route = async (path: string, headers: Record<string, string> = {}) => {
      await e.process({ method: 'GET', path, headers });
      return e.last?.route;
    };
    expect(await route('/x?async=TRUE')).toBe('async_query');
    expect(await route('/x?async=1')).toBe('async_query');
    expect(await route('/x?async=false&async=true')).toBe('passthrough');
    expect(await route('/x', { prefer: 'wait=5, Respond-Async' })).toBe('async_prefer');
    expect(await route('/v1/runs/abc?async=true')).toBe('runs_api');
    expect(await route('/x?asynchronous=true')).toBe('passthrough');
  });
});

describe('Envoy stand-in: messages sent to the server', () => {
  it('sends raw_value headers with pseudo-headers, then a BUFFERED body in one message after the headers response', async () => {
    const e = await startEnvoy();
    let headersMsg: ProcessingRequest__Output | undefined;
    let bodyMsg: ProcessingRequest__Output | undefined;
    script = async (s) => {
      headersMsg = await s.next();
      await sleep(50);
      expect(s.received).toHaveLength(1); // the body waits for the headers response
      s.send(CONTINUE_HEADERS);
      bodyMsg = await s.next();
      s.send({
        immediate_response: {
          status: { code: 'Accepted' },
          headers: { set_headers: [raw('content-type', 'application/json'), raw('x-request-id', 'run-1')] },
          body: Buffer.from('{"run_id":"run-1"}\n'),
        },
      });
    };
    const res = await fetch(`${e.url}/work?async=true&x=1`, { method: 'POST', body: 'payload-bytes', headers: { 'x-custom': 'v' } });
    expect(res.status).toBe(202);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-request-id')).toBe('run-1');
    expect(await res.text()).toBe('{"run_id":"run-1"}\n');

    const hs = headersMsg!.request_headers!;
    expect(hs.end_of_stream).toBe(false);
    const map = new Map(hs.headers!.headers!.map((h) => [h.key, h.raw_value?.toString()]));
    expect(hs.headers!.headers!.every((h) => !h.value)).toBe(true);
    expect(map.get(':path')).toBe('/work?async=true&x=1');
    expect(map.get(':method')).toBe('POST');
    expect(map.get(':scheme')).toBe('http');
    expect(map.get(':authority')).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(map.get('x-forwarded-proto')).toBe('http');
    expect(map.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(map.get('x-custom')).toBe('v');
    expect(map.get('content-length')).toBe('13');
    expect(headersMsg!.metadata_context).toBeDefined();
    expect(bodyMsg!.request_body).toMatchObject({ end_of_stream: true });
    expect(bodyMsg!.request_body!.body!.toString()).toBe('payload-bytes');
    expect(bodyMsg!.metadata_context).toBeDefined();
    expect(upstreamRequests).toHaveLength(0);
    expect(e.stats.immediateResponses).toBe(1);
    await sleep(50);
    expect(streams[0].cancelled).toBe(true); // half-close then CANCEL
  });

  it('sets end_of_stream on headers when there is no body, and no body message follows', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_HEADERS);
    };
    const r = await e.process({ method: 'GET', path: '/a?async=1' });
    expect(r.status).toBe(200);
    expect(r.routedToUpstream).toBe(true);
    expect(e.last!.sent).toHaveLength(1);
    expect(e.last!.sent[0].request_headers?.end_of_stream).toBe(true);
  });

  it('STREAMED: one message per chunk, content-length removed, upstream started before the body responses', async () => {
    const e = await startEnvoy({ routeModeOverrides: { async_query: { request_body_mode: 'STREAMED' } }, streamedChunkBytes: 4 });
    let lastBodyResponseAt = 0;
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_HEADERS);
      for (let i = 0; i < 3; i++) {
        await s.next();
        await sleep(60);
        lastBodyResponseAt = Date.now();
        s.send(i === 1 ? { request_body: { response: { body_mutation: { body: Buffer.from('XXXX') } } } } : CONTINUE_BODY);
      }
    };
    const r = await e.process({ method: 'POST', path: '/s?async=true', body: '0123456789' });
    expect(r.status).toBe(200);
    const sent = e.last!.sent;
    const hdrs = sent[0].request_headers!.headers!.headers!.map((h) => h.key);
    expect(hdrs).not.toContain('content-length');
    const bodies = sent.slice(1).map((m) => [Buffer.from(m.request_body!.body as Buffer).toString(), m.request_body!.end_of_stream]);
    expect(bodies).toEqual([
      ['0123', false],
      ['4567', false],
      ['89', true],
    ]);
    expect(upstreamRequests[0].body.toString()).toBe('0123XXXX89');
    expect(e.last!.upstream!.startedBeforeBodyProcessed).toBe(true);
    expect(upstreamRequests[0].headersAt).toBeLessThan(lastBodyResponseAt);
  });

  it('mode_override to BUFFERED on a body-NONE route makes the body arrive (allow_mode_override)', async () => {
    const e = await startEnvoy();
    let body = '';
    script = async (s) => {
      await s.next();
      s.send({ ...CONTINUE_HEADERS, mode_override: { request_body_mode: 'BUFFERED', response_header_mode: 'SKIP' } });
      const m = await s.next();
      body = Buffer.from(m.request_body!.body as Buffer).toString();
      s.send({ immediate_response: { status: { code: 'OK' }, body: Buffer.from('ok') } });
    };
    const r = await e.process({ method: 'POST', path: '/v1/runs/x', body: 'hello' });
    expect(r.status).toBe(200);
    expect(body).toBe('hello');
    expect(e.stats.modeOverridesApplied).toBe(1);
    expect(r.routedToUpstream).toBe(false);
  });

  it('mode_override without request_body_mode sets the body mode to NONE (copied literally)', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send({ ...CONTINUE_HEADERS, mode_override: { response_header_mode: 'SKIP' } });
    };
    const r = await e.process({ method: 'POST', path: '/a?async=true', body: 'abc' });
    expect(r.status).toBe(200);
    expect(e.last!.sent).toHaveLength(1);
    expect(upstreamRequests[0].body.toString()).toBe('abc');
  });
});

describe('Envoy stand-in: responses from the server', () => {
  it('ImmediateResponse: raw_value headers are kept, value-only headers arrive empty, status defaults to 200, text/plain default', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send({
        immediate_response: {
          headers: { set_headers: [raw('x-raw', 'yes'), { header: { key: 'x-value-only', value: 'lost' } }] },
          body: Buffer.from('hi'),
        },
      });
    };
    const r = await e.process({ method: 'GET', path: '/x?async=true' });
    expect(r.status).toBe(200);
    expect(r.headers['x-raw']).toBe('yes');
    expect(r.headers['x-value-only']).toBe('');
    expect(r.headers['content-type']).toBe('text/plain');
    expect(r.headers['content-length']).toBe('2');
    expect(r.routedToUpstream).toBe(false);
  });

  it('CONTINUE applies header mutations from raw_value only and drops disallowed ones', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send({
        request_headers: {
          response: {
            header_mutation: {
              set_headers: [raw('x-added', '1'), raw('host', 'evil'), raw('x-envoy-foo', 'x'), { header: { key: 'x-v', value: 'v' } }],
              remove_headers: ['x-drop', ':path'],
            },
          },
        },
      });
    };
    const r = await e.process({ method: 'GET', path: '/m?async=true', headers: { host: 'app.local', 'x-drop': '1' } });
    expect(r.status).toBe(200);
    const h = upstreamRequests[0].headers;
    expect(h['x-added']).toBe('1');
    expect(h.host).toBe('app.local');
    expect(h['x-envoy-foo']).toBeUndefined();
    expect(h['x-v']).toBe('');
    expect(h['x-drop']).toBeUndefined();
    expect(e.stats.rejectedHeaderMutations).toBe(3);
  });

  it('answers 504 when the server does not answer within message_timeout', async () => {
    const e = await startEnvoy({ filterOverrides: { messageTimeoutMs: 150 } });
    script = async (s) => {
      await s.next();
    };
    const r = await e.process({ method: 'GET', path: '/t?async=true' });
    expect(r.status).toBe(504);
    expect(r.details).toBe('ext_proc_error_per-message_timeout_exceeded');
    expect(e.stats.messageTimeouts).toBe(1);
    expect(upstreamRequests).toHaveLength(0);
  });

  it('honours override_message_timeout once, up to max_message_timeout, ignoring the rest of that message', async () => {
    const e = await startEnvoy({ filterOverrides: { messageTimeoutMs: 150, maxMessageTimeoutMs: 2000 } });
    script = async (s) => {
      await s.next();
      // other fields are ignored when override_message_timeout is set
      s.send({ override_message_timeout: { seconds: 1 }, immediate_response: { status: { code: 'Conflict' } } });
      await sleep(500);
      s.send({ immediate_response: { status: { code: 'OK' }, body: Buffer.from('waited') } });
    };
    const r = await e.process({ method: 'GET', path: '/v1/runs/1?wait=60' });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('waited');
    expect(e.stats.overrideTimeoutsApplied).toBe(1);
  });

  it('ignores override_message_timeout above max_message_timeout (then 504)', async () => {
    const e = await startEnvoy({ filterOverrides: { messageTimeoutMs: 150, maxMessageTimeoutMs: 1000 } });
    script = async (s) => {
      await s.next();
      s.send({ override_message_timeout: { seconds: 5 } });
    };
    const r = await e.process({ method: 'GET', path: '/v1/runs/1?wait=60' });
    expect(r.status).toBe(504);
    expect(e.stats.overrideTimeoutsIgnored).toBe(1);
  });

  it('answers status_on_error (envoy.yaml: 503) on a gRPC error from the server (failure_mode_allow false)', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.call.emit('error', { code: grpc.status.INTERNAL, details: 'boom' });
    };
    const r = await e.process({ method: 'GET', path: '/g?async=true' });
    expect(r.status).toBe(503);
    expect(r.details).toBe('ext_proc_error_gRPC_error_13{boom}');
    expect(e.stats.grpcErrors).toBe(1);
    expect(upstreamRequests).toHaveLength(0);
  });

  it('continues to the app when failure_mode_allow is true and the server fails', async () => {
    const e = await startEnvoy({ filterOverrides: { failureModeAllow: true } });
    script = async (s) => {
      await s.next();
      s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'down' });
    };
    const r = await e.process({ method: 'POST', path: '/g?async=true', body: 'b' });
    expect(r.status).toBe(200);
    expect(r.routedToUpstream).toBe(true);
  });

  it('passes through to the app when the server closes the stream cleanly', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.call.end();
    };
    const res = await fetch(`${e.url}/c?async=true`, { method: 'POST', body: 'body!' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('app saw 5 bytes');
    expect(upstreamRequests[0].url).toBe('/c?async=true');
  });

  it('answers status_on_error for a spurious (out-of-order) message', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_BODY); // a body response while Envoy waits for a headers response
    };
    const r = await e.process({ method: 'POST', path: '/sp?async=true', body: 'x' });
    expect(r.status).toBe(503); // envoy.yaml's status_on_error
    expect(e.stats.spuriousMessages).toBe(1);
  });

  it('answers 413 when the BUFFERED body exceeds the buffer limit', async () => {
    const e = await startEnvoy();
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_HEADERS);
      await s.next().catch(() => undefined);
    };
    const r = await e.process({ method: 'POST', path: '/big?async=true', body: Buffer.alloc(10 * 1024 * 1024 + 1) });
    expect(r.status).toBe(413);
    expect(r.details).toBe('request_payload_too_large');
    expect(e.last!.sent).toHaveLength(1);
    expect(upstreamRequests).toHaveLength(0);
  });
});

describe('Envoy stand-in: dispatch listener', () => {
  it('proxies to the app without ext_proc', async () => {
    const e = await startEnvoy();
    const res = await fetch(`${e.dispatchUrl}/d?async=true`, { method: 'POST', body: 'xyz', headers: { 'x-async-run-id': 'r1' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('app saw 3 bytes');
    expect(upstreamRequests[0].headers['x-async-run-id']).toBe('r1');
    expect(upstreamRequests[0].headers['x-envoy-expected-rq-timeout-ms']).toBe('43200000');
    expect(streams).toHaveLength(0);
  });
});
