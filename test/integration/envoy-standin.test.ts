/**
 * Tests of the Envoy stand-in itself (test/support/envoy), against a tiny scripted ext_proc gRPC
 * server written here (not our sidecar) and a real loopback upstream. Every behaviour both can
 * show over HTTP runs through the real Envoy on the shipped config too, side by side, so the
 * stand-in is held to what Envoy does rather than to our reading of its source; what only the
 * stand-in can be made to do (STREAMED chunking, its records) stays stand-in only.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadExtProcProto } from '../../src/extproc/proto';
import type { ProcessingRequest__Output } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import { request } from 'undici';
import type { Document } from 'yaml';
import { EnvoyStandIn, type EnvoyStandInOptions } from '../support/envoy';
import { asRealEnvoy, asStandIn, describeEachEnvoy, type EnvoyFactory, type TestEnvoy } from '../support/envoys';
import { RealEnvoy } from '../support/real-envoy';

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

interface FilterOverrides {
  messageTimeoutMs?: number;
  maxMessageTimeoutMs?: number;
  failureModeAllow?: boolean;
}

let envoy: TestEnvoy | undefined;

/** The factory's Envoy on the scripted server and upstream; filter settings changed in envoy.yaml's ext_proc filter for the real one. */
async function startEnvoy(factory: EnvoyFactory, filter: FilterOverrides = {}): Promise<TestEnvoy> {
  const clusters = { async_sidecar: grpcAddr, app: upstreamAddr };
  if (factory.name === 'stand-in') {
    const e = await EnvoyStandIn.start({ clusters, filterOverrides: filter });
    envoy = Object.assign(e, { kind: 'stand-in', streamsStarted: async () => e.stats.streamsOpened });
  } else if (Object.keys(filter).length === 0) {
    envoy = await factory.start(clusters);
  } else {
    const e = await RealEnvoy.start({ clusters, edit: (doc) => editExtProcFilter(doc, filter) });
    envoy = Object.assign(e, { streamsStarted: () => e.stat('http.ingress_http.ext_proc.streams_started') });
  }
  return envoy;
}

/** The stand-in with its own options (what a real Envoy is not configured for in these tests). */
async function startStandIn(extra: Partial<EnvoyStandInOptions> = {}): Promise<EnvoyStandIn> {
  const e = await EnvoyStandIn.start({ clusters: { async_sidecar: grpcAddr, app: upstreamAddr }, ...extra });
  envoy = Object.assign(e, { kind: 'stand-in', streamsStarted: async () => e.stats.streamsOpened });
  return e;
}

function editExtProcFilter(doc: Document, f: FilterOverrides): void {
  const listeners = (
    doc.toJS() as {
      static_resources: { listeners: { name: string; filter_chains: { filters: { typed_config: { http_filters: { name: string }[] } }[] }[] }[] };
    }
  ).static_resources.listeners;
  const li = listeners.findIndex((l) => l.name === 'ingress');
  const fi = listeners[li]!.filter_chains[0]!.filters[0]!.typed_config.http_filters.findIndex((h) => h.name === 'envoy.filters.http.ext_proc');
  const base = ['static_resources', 'listeners', li, 'filter_chains', 0, 'filters', 0, 'typed_config', 'http_filters', fi, 'typed_config'];
  if (f.messageTimeoutMs !== undefined) doc.setIn([...base, 'message_timeout'], `${f.messageTimeoutMs / 1000}s`);
  if (f.maxMessageTimeoutMs !== undefined) doc.setIn([...base, 'max_message_timeout'], `${f.maxMessageTimeoutMs / 1000}s`);
  if (f.failureModeAllow !== undefined) doc.setIn([...base, 'failure_mode_allow'], f.failureModeAllow);
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

async function send(base: string, method: string, path: string, opts: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Answer> {
  const res = await request(base + path, { method: method as 'GET', headers: opts.headers, body: opts.body });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
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

/** Polls until check() is true (bounded). */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describeEachEnvoy('Envoy: routing and pass-through', (factory) => {
  it('passes a request on the catch-all route to the app without opening a stream', async () => {
    const e = await startEnvoy(factory);
    const res = await send(e.url, 'POST', '/hello?async=false', { body: 'abc' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('app saw 3 bytes');
    expect(res.headers['x-envoy-upstream-service-time']).toBeDefined();
    expect(await e.streamsStarted()).toBe(0);
    expect(streams).toHaveLength(0);
    expect(upstreamRequests[0]!.url).toBe('/hello?async=false');
    const standIn = asStandIn(e);
    if (standIn) {
      expect(standIn.stats.passThrough).toBe(1);
      expect(standIn.last?.route).toBe('passthrough');
    }
  });

  it('matches the async routes as envoy.yaml says (first value only, case-insensitive, Prefer header)', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send({ immediate_response: { status: { code: 'Accepted' }, body: Buffer.from('{}') } });
    };
    /** 202 when the request reached the scripted server, 200 (the app's) when it passed through. */
    const status = async (path: string, headers: Record<string, string> = {}) => (await send(e.url, 'GET', path, { headers })).status;
    expect(await status('/x?async=TRUE')).toBe(202);
    expect(await status('/x?async=1')).toBe(202);
    expect(await status('/x?async=false&async=true')).toBe(200);
    expect(await status('/x', { prefer: 'wait=5, Respond-Async' })).toBe(202);
    expect(await status('/v1/runs/abc?async=true')).toBe(202);
    expect(await status('/x?asynchronous=true')).toBe(200);
    expect(await e.streamsStarted()).toBe(4);
    expect(streams).toHaveLength(4);
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.records.map((r) => r.route)).toEqual(['async_query', 'async_query', 'passthrough', 'async_prefer', 'runs_api', 'passthrough']);
  });
});

describeEachEnvoy('Envoy: messages sent to the server', (factory) => {
  it('sends raw_value headers with pseudo-headers, then a BUFFERED body in one message after the headers response', async () => {
    const e = await startEnvoy(factory);
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
    const res = await send(e.url, 'POST', '/work?async=true&x=1', { body: 'payload-bytes', headers: { 'x-custom': 'v' } });
    expect(res.status).toBe(202);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-request-id']).toBe('run-1');
    expect(res.text).toBe('{"run_id":"run-1"}\n');

    const hs = headersMsg!.request_headers!;
    expect(hs.end_of_stream).toBeFalsy(); // unset on the wire: proto3's false
    // The HCM's headers, in Envoy's order (conn_manager_utility.cc): what the sidecar reads.
    expect(hs.headers!.headers!.map((h) => h.key)).toEqual([
      ':authority',
      ':path',
      ':method',
      ':scheme',
      'x-custom',
      'content-length',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-envoy-external-address',
      'x-request-id',
    ]);
    expect(headersMsg!.metadata_context).toEqual({});
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
    expect(bodyMsg!.request_body).toMatchObject({ end_of_stream: true });
    expect(bodyMsg!.request_body!.body!.toString()).toBe('payload-bytes');
    expect(upstreamRequests).toHaveLength(0);
    await until(() => streams[0]!.cancelled, 'the stream to be cancelled'); // half-close then CANCEL
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.immediateResponses).toBe(1);
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.stream_msgs_sent')).toBe(2);
  });

  it('sets end_of_stream on headers when there is no body, and no body message follows', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_HEADERS);
    };
    const r = await send(e.url, 'GET', '/a?async=1');
    expect(r.status).toBe(200);
    expect(upstreamRequests).toHaveLength(1);
    expect(streams[0]!.received).toHaveLength(1);
    expect(streams[0]!.received[0]!.request_headers?.end_of_stream).toBe(true);
  });

  it('mode_override to BUFFERED on a body-NONE route makes the body arrive (allow_mode_override)', async () => {
    const e = await startEnvoy(factory);
    let body = '';
    script = async (s) => {
      await s.next();
      s.send({ ...CONTINUE_HEADERS, mode_override: { request_body_mode: 'BUFFERED', response_header_mode: 'SKIP' } });
      const m = await s.next();
      body = Buffer.from(m.request_body!.body as Buffer).toString();
      s.send({ immediate_response: { status: { code: 'OK' }, body: Buffer.from('ok') } });
    };
    const r = await send(e.url, 'POST', '/v1/runs/x', { body: 'hello' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('ok');
    expect(body).toBe('hello');
    expect(upstreamRequests).toHaveLength(0);
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.modeOverridesApplied).toBe(1);
  });

  it('mode_override without request_body_mode sets the body mode to NONE (copied literally)', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send({ ...CONTINUE_HEADERS, mode_override: { response_header_mode: 'SKIP' } });
    };
    const r = await send(e.url, 'POST', '/a?async=true', { body: 'abc' });
    expect(r.status).toBe(200);
    expect(streams[0]!.received).toHaveLength(1);
    expect(upstreamRequests[0]!.body.toString()).toBe('abc');
  });
});

describe('Envoy stand-in only: STREAMED (not configured on the real Envoy)', () => {
  it('STREAMED: one message per chunk, content-length removed, upstream started before the body responses', async () => {
    const e = await startStandIn({ routeModeOverrides: { async_query: { request_body_mode: 'STREAMED' } }, streamedChunkBytes: 4 });
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
    const hdrs = sent[0]!.request_headers!.headers!.headers!.map((h) => h.key);
    expect(hdrs).not.toContain('content-length');
    const bodies = sent.slice(1).map((m) => [Buffer.from(m.request_body!.body as Buffer).toString(), m.request_body!.end_of_stream ?? false]);
    expect(bodies).toEqual([
      ['0123', false],
      ['4567', false],
      ['89', true],
    ]);
    expect(upstreamRequests[0]!.body.toString()).toBe('0123XXXX89');
    expect(e.last!.upstream!.startedBeforeBodyProcessed).toBe(true);
    expect(upstreamRequests[0]!.headersAt).toBeLessThan(lastBodyResponseAt);
  });
});

describeEachEnvoy('Envoy: responses from the server', (factory) => {
  it('ImmediateResponse: raw_value headers are kept, value-only headers arrive empty, status defaults to 200, text/plain default', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send({
        immediate_response: {
          headers: { set_headers: [raw('x-raw', 'yes'), { header: { key: 'x-value-only', value: 'lost' } }] },
          body: Buffer.from('hi'),
        },
      });
    };
    const r = await send(e.url, 'GET', '/x?async=true');
    expect(r.status).toBe(200);
    expect(r.headers['x-raw']).toBe('yes');
    expect(r.headers['x-value-only']).toBe('');
    expect(r.headers['content-type']).toBe('text/plain');
    expect(r.headers['content-length']).toBe('2');
    expect(r.text).toBe('hi');
    expect(upstreamRequests).toHaveLength(0);
  });

  it('CONTINUE applies header mutations from raw_value only and drops disallowed ones', async () => {
    const e = await startEnvoy(factory);
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
    const r = await send(e.url, 'GET', '/m?async=true', { headers: { host: 'app.local', 'x-drop': '1' } });
    expect(r.status).toBe(200);
    const h = upstreamRequests[0]!.headers;
    expect(upstreamRequests[0]!.url).toBe('/m?async=true');
    expect(h['x-added']).toBe('1');
    expect(h.host).toBe('app.local');
    expect(h['x-envoy-foo']).toBeUndefined();
    expect(h['x-v']).toBe('');
    expect(h['x-drop']).toBeUndefined();
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.rejectedHeaderMutations).toBe(3);
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.rejected_header_mutations')).toBe(3);
  });

  it('answers 504 when the server does not answer within message_timeout', async () => {
    const e = await startEnvoy(factory, { messageTimeoutMs: 150 });
    script = async (s) => {
      await s.next();
    };
    const r = await send(e.url, 'GET', '/t?async=true');
    expect(r.status).toBe(504);
    expect(upstreamRequests).toHaveLength(0);
    const standIn = asStandIn(e);
    if (standIn) {
      expect(standIn.last!.response!.details).toBe('ext_proc_error_per-message_timeout_exceeded');
      expect(standIn.stats.messageTimeouts).toBe(1);
    }
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.message_timeouts')).toBe(1);
  });

  it('honours override_message_timeout once, up to max_message_timeout, ignoring the rest of that message', async () => {
    const e = await startEnvoy(factory, { messageTimeoutMs: 150, maxMessageTimeoutMs: 2000 });
    script = async (s) => {
      await s.next();
      // other fields are ignored when override_message_timeout is set
      s.send({ override_message_timeout: { seconds: 1 }, immediate_response: { status: { code: 'Conflict' } } });
      await sleep(500);
      s.send({ immediate_response: { status: { code: 'OK' }, body: Buffer.from('waited') } });
    };
    const r = await send(e.url, 'GET', '/v1/runs/1?wait=60');
    expect(r.status).toBe(200);
    expect(r.text).toBe('waited');
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.overrideTimeoutsApplied).toBe(1);
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.override_message_timeout_received')).toBe(1);
  });

  it('ignores override_message_timeout above max_message_timeout (then 504)', async () => {
    const e = await startEnvoy(factory, { messageTimeoutMs: 150, maxMessageTimeoutMs: 1000 });
    script = async (s) => {
      await s.next();
      s.send({ override_message_timeout: { seconds: 5 } });
    };
    const r = await send(e.url, 'GET', '/v1/runs/1?wait=60');
    expect(r.status).toBe(504);
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.overrideTimeoutsIgnored).toBe(1);
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.override_message_timeout_ignored')).toBe(1);
  });

  it('answers status_on_error (envoy.yaml: 503) on a gRPC error from the server (failure_mode_allow false)', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.call.emit('error', { code: grpc.status.INTERNAL, details: 'boom' });
    };
    const r = await send(e.url, 'GET', '/g?async=true');
    expect(r.status).toBe(503);
    expect(upstreamRequests).toHaveLength(0);
    const standIn = asStandIn(e);
    if (standIn) {
      expect(standIn.last!.response!.details).toBe('ext_proc_error_gRPC_error_13{boom}');
      expect(standIn.stats.grpcErrors).toBe(1);
    }
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.streams_failed')).toBe(1);
  });

  it('continues to the app when failure_mode_allow is true and the server fails', async () => {
    const e = await startEnvoy(factory, { failureModeAllow: true });
    script = async (s) => {
      await s.next();
      s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'down' });
    };
    const r = await send(e.url, 'POST', '/g?async=true', { body: 'b' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('app saw 1 bytes');
  });

  it('passes through to the app when the server closes the stream cleanly', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.call.end();
    };
    const res = await send(e.url, 'POST', '/c?async=true', { body: 'body!' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('app saw 5 bytes');
    expect(upstreamRequests[0]!.url).toBe('/c?async=true');
  });

  it('answers status_on_error for a spurious (out-of-order) message', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_BODY); // a body response while Envoy waits for a headers response
    };
    const r = await send(e.url, 'POST', '/sp?async=true', { body: 'x' });
    expect(r.status).toBe(503); // envoy.yaml's status_on_error
    expect(upstreamRequests).toHaveLength(0);
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.stats.spuriousMessages).toBe(1);
    const real = asRealEnvoy(e);
    if (real) expect(await real.stat('http.ingress_http.ext_proc.spurious_msgs_received')).toBe(1);
  });

  it('answers 413 when the BUFFERED body exceeds the buffer limit', async () => {
    const e = await startEnvoy(factory);
    script = async (s) => {
      await s.next();
      s.send(CONTINUE_HEADERS);
      await s.next().catch(() => undefined);
    };
    const r = await send(e.url, 'POST', '/big?async=true', { body: Buffer.alloc(10 * 1024 * 1024 + 1) });
    expect(r.status).toBe(413);
    expect(r.text).toBe('Payload Too Large');
    expect(streams[0]!.received).toHaveLength(1);
    expect(upstreamRequests).toHaveLength(0);
    const standIn = asStandIn(e);
    if (standIn) expect(standIn.last!.response!.details).toBe('request_payload_too_large');
  });
});

describeEachEnvoy('Envoy: dispatch listener', (factory) => {
  it('proxies to the app without ext_proc', async () => {
    const e = await startEnvoy(factory);
    const res = await send(e.dispatchUrl, 'POST', '/d?async=true', { body: 'xyz', headers: { 'x-async-run-id': 'r1', 'x-forwarded-proto': 'https' } });
    expect(res.status).toBe(200);
    expect(res.text).toBe('app saw 3 bytes');
    const h = upstreamRequests[0]!.headers;
    expect(h['x-async-run-id']).toBe('r1');
    expect(h['x-envoy-expected-rq-timeout-ms']).toBe('43200000');
    expect(h['x-forwarded-proto']).toBe('https'); // no use_remote_address: kept as sent
    expect(h['x-forwarded-for']).toBeUndefined();
    expect(h['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(streams).toHaveLength(0);
  });
});
