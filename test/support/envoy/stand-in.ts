/**
 * EnvoyStandIn: Envoy's HTTP listener + ext_proc filter + router, emulated from envoy/envoy.yaml
 * for tests (there is no Envoy binary here). Behaviour follows Envoy's source
 * (source/extensions/filters/http/ext_proc/{ext_proc.cc,processor_state.cc,mutation_utils.cc});
 * each step names the function it follows. See /work/shared/ENVOY-EXT-PROC.md.
 *
 * Not emulated: the response path (response_header_mode must be SKIP and response_body_mode NONE;
 * other values are recorded but not sent), FULL_DUPLEX_STREAMED, observability_mode, attributes,
 * forward_rules, metadata namespaces, clear_route_cache, protocol_config (absent from the bundled
 * protos), retries, HTTP/2 downstream, real flow control (the downstream body is read completely
 * before the filter chain runs; STREAMED chunks are cut by `streamedChunkBytes`).
 */
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { loadExtProcProto } from '../../../src/extproc/proto';
import type { HeaderMutation__Output } from '../../../src/generated/envoy/service/ext_proc/v3/HeaderMutation';
import type { ProcessingRequest } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import type { CommonResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/CommonResponse';
import {
  durationMs,
  loadEnvoyConfig,
  processingModeFrom,
  type EnvoyConfigModel,
  type ExtProcFilterModel,
  type ListenerModel,
  type ProcessingModeModel,
  type RouteModel,
} from '../envoy-config';
import { createExtProcClient, ExtProcStream, type StreamEvent } from './ext-proc-stream';
import { headerValue, matchRoute, type HeaderList } from './route-match';

export interface EnvoyStandInOptions {
  /** Default 'envoy/envoy.yaml' (relative to the repo root). */
  configPath?: string;
  /** cluster name → 'host:port', overriding envoy.yaml's endpoints. */
  clusters: Record<string, string>;
  filterOverrides?: Partial<{
    messageTimeoutMs: number;
    maxMessageTimeoutMs: number;
    failureModeAllow: boolean;
    allowModeOverride: boolean;
    statusOnError: number;
  }>;
  /** Route name → fields replacing that route's effective processing mode (e.g. { async_query: { request_body_mode: 'STREAMED' } }). */
  routeModeOverrides?: Record<string, Partial<ProcessingModeModel>>;
  /** Chunk size in STREAMED / BUFFERED_PARTIAL modes (default 64 KiB). */
  streamedChunkBytes?: number;
  /**
   * Overrides the sidecar cluster's max_requests_per_connection from envoy.yaml (null: no limit,
   * every stream on one connection, as an Envoy without the setting does).
   */
  maxRequestsPerConnection?: number | null;
  /** Listener names (default 'ingress' and 'dispatch'). */
  ingressListener?: string;
  dispatchListener?: string;
}

export interface StandInRequest {
  method: string;
  /** Path with query string. */
  path: string;
  headers?: Record<string, string | string[]> | HeaderList;
  body?: Buffer | string;
  trailers?: Record<string, string>;
  signal?: AbortSignal;
  /** The downstream peer's address (default 127.0.0.1). */
  remoteAddress?: string;
}

export interface StandInResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  routedToUpstream: boolean;
  /** %RESPONSE_CODE_DETAILS% for local replies. */
  details?: string;
}

export interface EnvoyStats {
  requests: number;
  streamsOpened: number;
  streamsClosed: number;
  messagesSent: number;
  messagesReceived: number;
  immediateResponses: number;
  messageTimeouts: number;
  grpcErrors: number;
  spuriousMessages: number;
  failureModeAllowed: number;
  modeOverridesApplied: number;
  overrideTimeoutsApplied: number;
  overrideTimeoutsIgnored: number;
  rejectedHeaderMutations: number;
  passThrough: number;
  upstreamRequests: number;
  payloadTooLarge: number;
}

/** What happened to one request, for assertions. */
export interface RequestRecord {
  route?: string;
  mode?: ProcessingModeModel;
  streamOpened: boolean;
  sent: ProcessingRequest[];
  received: ProcessingResponse__Output[];
  streamEndedBy?: 'envoy' | 'server-error' | 'server-ok';
  /** Headers/body as forwarded upstream (after mutations), if any. */
  upstream?: { method: string; path: string; headers: HeaderList; body: Buffer; startedBeforeBodyProcessed: boolean };
  response?: StandInResponse;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
const ERROR_PREFIX = 'ext_proc_error';

/** A local reply (Filter::sendImmediateResponse → sendLocalReply → Utility::prepareLocalReply). */
class LocalReply {
  constructor(
    readonly status: number,
    readonly body: Buffer,
    readonly details: string,
    readonly headers: HeaderList = [],
  ) {}
}

/** Thrown inside the pipeline to stop it with a local reply. */
class Stop {
  constructor(readonly reply: LocalReply) {}
}

type Body = Buffer;

export class EnvoyStandIn {
  readonly stats: EnvoyStats = {
    requests: 0,
    streamsOpened: 0,
    streamsClosed: 0,
    messagesSent: 0,
    messagesReceived: 0,
    immediateResponses: 0,
    messageTimeouts: 0,
    grpcErrors: 0,
    spuriousMessages: 0,
    failureModeAllowed: 0,
    modeOverridesApplied: 0,
    overrideTimeoutsApplied: 0,
    overrideTimeoutsIgnored: 0,
    rejectedHeaderMutations: 0,
    passThrough: 0,
    upstreamRequests: 0,
    payloadTooLarge: 0,
  };
  /** Every request processed, oldest first. */
  readonly records: RequestRecord[] = [];
  url = '';
  dispatchUrl = '';

  readonly ingress: ListenerModel;
  private readonly dispatch?: ListenerModel;
  private readonly filter?: ExtProcFilterModel;
  /** The current connection to the sidecar cluster, and how many streams it has carried. */
  private client?: ReturnType<typeof createExtProcClient>;
  private clientStreams = 0;
  private readonly retiredClients = new Set<ReturnType<typeof createExtProcClient>>();
  /** Open streams per connection: a drained connection closes once its last stream ends. */
  private readonly clientOf = new WeakMap<ExtProcStream, ReturnType<typeof createExtProcClient>>();
  private readonly openPerClient = new Map<ReturnType<typeof createExtProcClient>, number>();
  private readonly servers: http.Server[] = [];
  private readonly openStreams = new Set<ExtProcStream>();
  private readonly statusCodes: Map<string, number>;

  private constructor(
    readonly config: EnvoyConfigModel,
    readonly opts: EnvoyStandInOptions,
  ) {
    this.ingress = config.listener(opts.ingressListener ?? 'ingress');
    this.dispatch = config.listeners.find((l) => l.name === (opts.dispatchListener ?? 'dispatch'));
    const f = this.ingress.hcm.extProc;
    if (f) {
      const o = opts.filterOverrides ?? {};
      this.filter = {
        ...f,
        messageTimeoutMs: o.messageTimeoutMs ?? f.messageTimeoutMs,
        maxMessageTimeoutMs: o.maxMessageTimeoutMs ?? f.maxMessageTimeoutMs,
        failureModeAllow: o.failureModeAllow ?? f.failureModeAllow,
        allowModeOverride: o.allowModeOverride ?? f.allowModeOverride,
        statusOnError: o.statusOnError ?? f.statusOnError,
      };
      this.client = createExtProcClient(this.endpoint(f.clusterName), f.clusterName);
    }
    const sc = (loadExtProcProto() as unknown as { envoy: { type: { v3: { StatusCode: { type: { value: { name: string; number: number }[] } } } } } })
      .envoy.type.v3.StatusCode.type.value;
    this.statusCodes = new Map(sc.map((v) => [v.name, v.number]));
  }

  static async start(opts: EnvoyStandInOptions): Promise<EnvoyStandIn> {
    const config = await loadEnvoyConfig(opts.configPath ?? 'envoy/envoy.yaml');
    const s = new EnvoyStandIn(config, opts);
    s.url = await s.listen((req, res) => void s.serveIngress(req, res));
    if (s.dispatch) s.dispatchUrl = await s.listen((req, res) => s.serveDispatch(req, res));
    return s;
  }

  /** The most recent request record. */
  get last(): RequestRecord | undefined {
    return this.records[this.records.length - 1];
  }

  async close(): Promise<void> {
    for (const s of this.openStreams) s.close();
    this.client?.close();
    for (const c of this.retiredClients) c.close();
    await Promise.all(
      this.servers.map(
        (srv) =>
          new Promise<void>((resolve) => {
            srv.closeAllConnections();
            srv.close(() => resolve());
          }),
      ),
    );
  }

  private endpoint(cluster: string): string {
    const e = this.opts.clusters[cluster] ?? this.config.clusters[cluster]?.endpoint;
    if (!e) throw new Error(`unknown cluster ${cluster}`);
    return e;
  }

  private listen(handler: http.RequestListener): Promise<string> {
    const srv = http.createServer(handler);
    this.servers.push(srv);
    return new Promise((resolve) =>
      srv.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`)),
    );
  }

  // ───────────────────────────────────────── HTTP fronts ─────────────────────────────────────────

  private async serveIngress(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort(); // downstream reset: Envoy destroys the filter (onDestroy)
    });
    for await (const c of req) chunks.push(c as Buffer);
    const headers: HeaderList = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
    const trailers = Object.keys(req.trailers).length ? (req.trailers as Record<string, string>) : undefined;
    try {
      const remoteAddress = req.socket.remoteAddress?.replace(/^::ffff:/, '');
      const r = await this.process({ method: req.method ?? 'GET', path: req.url ?? '/', headers, body: Buffer.concat(chunks), trailers, signal: ac.signal, remoteAddress });
      if (ac.signal.aborted) return;
      res.writeHead(r.status, r.headers);
      res.end(r.body);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
  }

  /** The dispatch listener: HCM + router only (no ext_proc), streaming both ways, route timeout honoured. */
  private serveDispatch(req: http.IncomingMessage, res: http.ServerResponse): void {
    const headers: HeaderList = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
    const route = matchRoute(this.dispatch!.hcm.routes, req.url ?? '/', headers);
    if (!route?.cluster) {
      res.writeHead(404, { server: 'envoy', 'content-length': '0' });
      res.end();
      return;
    }
    this.stats.upstreamRequests++;
    const [host, port] = splitHostPort(this.endpoint(route.cluster));
    const out = headers.filter(([k]) => !HOP_BY_HOP.has(k));
    if (!out.some(([k]) => k === 'x-request-id')) out.push(['x-request-id', randomUUID()]);
    // No use_remote_address here: an x-forwarded-proto already set is kept (conn_manager_utility.cc).
    if (!out.some(([k]) => k === 'x-forwarded-proto')) out.push(['x-forwarded-proto', 'http']);
    if (route.timeoutMs > 0) out.push(['x-envoy-expected-rq-timeout-ms', String(route.timeoutMs)]);
    const started = Date.now();
    const up = http.request({ host, port, method: req.method, path: req.url, headers: toOutgoing(out), agent: false });
    let timer: NodeJS.Timeout | undefined;
    if (route.timeoutMs > 0) {
      timer = setTimeout(() => {
        up.destroy();
        if (!res.headersSent) {
          res.writeHead(504, { server: 'envoy', 'content-type': 'text/plain', 'content-length': '24' });
          res.end('upstream request timeout');
        } else res.destroy();
      }, route.timeoutMs);
    }
    up.on('response', (ur) => {
      const h: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ur.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) h[k] = v;
      h.server = 'envoy';
      h['x-envoy-upstream-service-time'] = String(Date.now() - started);
      res.writeHead(ur.statusCode ?? 502, h);
      ur.pipe(res);
      ur.on('end', () => clearTimeout(timer));
    });
    up.on('error', () => {
      clearTimeout(timer);
      if (!res.headersSent) {
        const body = 'upstream connect error or disconnect/reset before headers. reset reason: connection failure';
        res.writeHead(503, { server: 'envoy', 'content-type': 'text/plain', 'content-length': String(body.length) });
        res.end(body);
      } else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) {
        clearTimeout(timer);
        up.destroy();
      }
    });
    req.pipe(up);
  }

  // ───────────────────────────────────────── the pipeline ────────────────────────────────────────

  /** The ingress listener's logic without HTTP: HCM → ext_proc → router. */
  async process(input: StandInRequest): Promise<StandInResponse> {
    this.stats.requests++;
    const record: RequestRecord = { streamOpened: false, sent: [], received: [] };
    this.records.push(record);
    const response = await this.run(input, record);
    record.response = response;
    return response;
  }

  private async run(input: StandInRequest, record: RequestRecord): Promise<StandInResponse> {
    const body: Body = input.body === undefined ? Buffer.alloc(0) : Buffer.from(input.body);
    const headers = this.hcmHeaders(input, body);
    const path = headerValue(headers, ':path') ?? '/';
    const route = matchRoute(this.ingress.hcm.routes, path, headers);
    record.route = route?.name;
    if (!route) return this.reply(new LocalReply(404, Buffer.alloc(0), 'route_not_found'));

    const filter = this.filter;
    const mode = filter ? this.effectiveMode(filter, route) : undefined;
    record.mode = mode ? { ...mode } : undefined;
    const hasTrailers = input.trailers !== undefined && Object.keys(input.trailers).length > 0;
    if (!filter || !mode || (mode.request_header_mode === 'SKIP' && mode.request_body_mode === 'NONE' && mode.request_trailer_mode !== 'SEND')) {
      this.stats.passThrough++;
      return this.forward(route, headers, body, record, input.signal);
    }
    const ctx = new FilterRun(this, filter, route, mode, headers, body, hasTrailers, input, record);
    try {
      return await ctx.run();
    } catch (e) {
      if (e instanceof Stop) {
        ctx.abortUpstream(); // a local reply resets an upstream request already started (STREAMED)
        return this.reply(e.reply);
      }
      throw e;
    } finally {
      ctx.closeStream();
    }
  }

  /**
   * HCM with use_remote_address (ConnectionManagerUtility::mutateRequestHeaders): x-forwarded-for
   * gets the peer's address, or Envoy's own local address (the host's first non-loopback address)
   * when the peer is loopback, as in tests; the request is external (no internal_address_config),
   * so x-envoy-external-address is the peer and a client's x-request-id is replaced.
   */
  private hcmHeaders(input: StandInRequest, body: Body): HeaderList {
    const raw: HeaderList = Array.isArray(input.headers)
      ? input.headers.map(([k, v]) => [k.toLowerCase(), v])
      : Object.entries(input.headers ?? {}).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x): [string, string] => [k.toLowerCase(), x]));
    const authority = headerValue(raw, ':authority') ?? headerValue(raw, 'host') ?? 'localhost';
    const rest = raw.filter(([k]) => !k.startsWith(':') && k !== 'host' && !HOP_BY_HOP.has(k));
    const out: HeaderList = [
      [':authority', authority],
      [':path', input.path],
      [':method', input.method.toUpperCase()],
      [':scheme', 'http'],
      ...rest,
    ];
    const te = headerValue(raw, 'transfer-encoding');
    if (te) out.push(['transfer-encoding', te]);
    else if (body.length > 0 && headerValue(out, 'content-length') === undefined) out.push(['content-length', String(body.length)]);
    const peer = input.remoteAddress ?? '127.0.0.1';
    const hop = isLoopback(peer) ? envoyLocalAddress() : peer;
    setHeader(out, 'x-forwarded-for', [headerValue(raw, 'x-forwarded-for'), hop].filter(Boolean).join(','));
    setHeader(out, 'x-forwarded-proto', 'http');
    setHeader(out, 'x-envoy-external-address', peer);
    setHeader(out, 'x-request-id', randomUUID());
    return out;
  }

  /**
   * Filter::mergePerRouteConfig: `disabled` → every mode SKIP; `overrides.processing_mode` REPLACES
   * the filter's mode (unset fields = proto defaults). A filter marked `disabled: true` runs only
   * where the route has a typed_per_filter_config for it (per_filter_config.cc).
   */
  private effectiveMode(filter: ExtProcFilterModel, route: RouteModel): ProcessingModeModel | undefined {
    const per = route.perFilterConfig[filter.name] as { disabled?: boolean; overrides?: { processing_mode?: unknown } } | undefined;
    if (filter.disabled && !per) return undefined;
    if (per?.disabled) return undefined;
    let mode: ProcessingModeModel = per?.overrides?.processing_mode !== undefined ? processingModeFrom(per.overrides.processing_mode) : { ...filter.processingMode };
    const forced = route.name ? this.opts.routeModeOverrides?.[route.name] : undefined;
    if (forced) mode = { ...mode, ...forced };
    return mode;
  }

  /** Router: forward to the route's cluster over HTTP/1.1 and relay the response. */
  async forward(route: RouteModel, headers: HeaderList, body: Body, record: RequestRecord, signal?: AbortSignal): Promise<StandInResponse> {
    const up = this.startUpstream(route, headers, record, false);
    up.write(body);
    up.end();
    return up.result(signal);
  }

  startUpstream(route: RouteModel, headers: HeaderList, record: RequestRecord, startedBeforeBodyProcessed: boolean): Upstream {
    if (!route.cluster) throw new Stop(new LocalReply(503, Buffer.from('no cluster'), 'cluster_not_found'));
    this.stats.upstreamRequests++;
    return new Upstream(this.endpoint(route.cluster), route.timeoutMs, headers, record, startedBeforeBodyProcessed);
  }

  reply(r: LocalReply): StandInResponse {
    const headers: Record<string, string> = {};
    for (const [k, v] of r.headers) headers[k] = headers[k] === undefined ? v : `${headers[k]},${v}`;
    // Utility::prepareLocalReply: content-length, and text/plain only if a body exists and no content-type was set.
    if (r.body.length > 0 && !headers['content-type']) headers['content-type'] = 'text/plain';
    headers['content-length'] = String(r.body.length);
    headers.date = new Date().toUTCString();
    headers.server = 'envoy';
    return { status: r.status, headers, body: r.body, routedToUpstream: false, details: r.details };
  }

  statusNumber(code: unknown): number {
    if (typeof code === 'number') return code;
    if (typeof code === 'string') return this.statusCodes.get(code) ?? (Number(code) || 0);
    return 0;
  }

  trackStream(s: ExtProcStream, open: boolean): void {
    if (open) {
      this.openStreams.add(s);
      this.stats.streamsOpened++;
    } else if (this.openStreams.delete(s)) {
      this.stats.streamsClosed++;
      const client = this.clientOf.get(s);
      if (client) {
        const left = (this.openPerClient.get(client) ?? 1) - 1;
        this.openPerClient.set(client, left);
        if (left === 0 && this.retiredClients.delete(client)) {
          this.openPerClient.delete(client);
          client.close();
        }
      }
    }
  }

  /**
   * One stream per request on the cluster's HTTP/2 connection. Like Envoy's connection pool, a
   * connection that carried the cluster's max_requests_per_connection streams is drained (its
   * open streams finish) and the next stream opens a new connection.
   */
  newStream(): ExtProcStream {
    const f = this.filter!;
    const limit = this.opts.maxRequestsPerConnection !== undefined ? this.opts.maxRequestsPerConnection : (this.config.clusters[f.clusterName]?.maxRequestsPerConnection ?? null);
    if (limit !== null && limit > 0 && this.clientStreams >= limit) {
      const old = this.client!;
      if ((this.openPerClient.get(old) ?? 0) === 0) old.close();
      else this.retiredClients.add(old); // closed when its last stream ends
      this.client = createExtProcClient(this.endpoint(f.clusterName), f.clusterName);
      this.clientStreams = 0;
    }
    this.clientStreams++;
    const client = this.client!;
    const stream = new ExtProcStream(client);
    this.clientOf.set(stream, client);
    this.openPerClient.set(client, (this.openPerClient.get(client) ?? 0) + 1);
    return stream;
  }
}

/** One request through the ext_proc filter: Filter + DecodingProcessorState. */
class FilterRun {
  private stream?: ExtProcStream;
  private processingComplete = false;
  private upstream?: Upstream;

  constructor(
    private readonly envoy: EnvoyStandIn,
    private readonly filter: ExtProcFilterModel,
    private readonly route: RouteModel,
    private readonly mode: ProcessingModeModel,
    private headers: HeaderList,
    private body: Body,
    private readonly hasTrailers: boolean,
    private readonly input: StandInRequest,
    private readonly record: RequestRecord,
  ) {}

  private get stats(): EnvoyStats {
    return this.envoy.stats;
  }

  /** Filter::openStream — lazily, on the first message. */
  private open(): ExtProcStream {
    if (!this.stream) {
      this.stream = this.envoy.newStream();
      this.envoy.trackStream(this.stream, true);
      this.record.streamOpened = true;
      this.record.sent = this.stream.sent;
      this.record.received = this.stream.received;
      // A message while Envoy waits for nothing: spurious (ext_proc.cc onReceiveMessage → handle* returns FailedPrecondition).
      this.stream.onUnsolicited = (e) => {
        if (this.processingComplete || e.kind !== 'message') return;
        this.spurious();
      };
    }
    return this.stream;
  }

  abortUpstream(): void {
    this.upstream?.abort();
  }

  closeStream(): void {
    if (this.stream) {
      this.record.streamEndedBy = this.stream.endedBy ?? 'envoy';
      this.stream.close();
      this.record.streamEndedBy = this.stream.endedBy;
      this.envoy.trackStream(this.stream, false);
    }
  }

  private send(req: ProcessingRequest): void {
    // Envoy's C++ protobuf leaves a proto3 false off the wire; protobufjs would send it (the
    // real Envoy's end_of_stream: false arrives unset).
    if (req.request_headers?.end_of_stream === false) req = { ...req, request_headers: { ...req.request_headers, end_of_stream: undefined } };
    if (req.request_body?.end_of_stream === false) req = { ...req, request_body: { ...req.request_body, end_of_stream: undefined } };
    // Filter::addDynamicMetadata: metadata_context on every message, empty when nothing is forwarded.
    this.open().send({ ...req, metadata_context: {} });
    this.stats.messagesSent++;
  }

  private headerProto(list: HeaderList) {
    // MutationUtils::headersToProto: {key, raw_value}, `value` left empty.
    return { headers: list.map(([key, v]) => ({ key, raw_value: Buffer.from(v, 'latin1') })) };
  }

  async run(): Promise<StandInResponse> {
    const mode = this.mode;
    const noBody = this.body.length === 0 && !this.hasTrailers;
    let bodyHandled = false;

    // Filter::decodeHeaders → onHeaders: send request_headers, StopIteration.
    if (mode.request_header_mode !== 'SKIP') {
      if (!noBody && this.shouldRemoveContentLength()) removeHeader(this.headers, 'content-length');
      this.send({ request_headers: { headers: this.headerProto(this.headers), end_of_stream: noBody } });
      const r = await this.await('headers');
      if (r === 'continue-without-server') return this.continueWithoutServer();
      if (r.response !== 'request_headers') return this.spurious();
      const cr = r.request_headers?.response;
      this.applyCommon(cr, false);
      if (cr?.status === 'CONTINUE_AND_REPLACE') {
        // handleHeadersResponse: replace the body, drop content-length, nothing more is sent.
        if (cr.body_mutation) {
          removeHeader(this.headers, 'content-length');
          this.body = applyBodyMutation(cr.body_mutation, this.body);
        }
        mode.request_body_mode = 'NONE';
        mode.request_trailer_mode = 'SKIP';
        bodyHandled = true;
      }
    }

    if (!noBody && !bodyHandled && this.body.length > 0) {
      switch (mode.request_body_mode) {
        case 'BUFFERED':
          return this.bufferedBody();
        case 'STREAMED':
          return this.streamedBody();
        case 'BUFFERED_PARTIAL':
          return this.partialBody();
        default:
          break;
      }
    }
    if (this.hasTrailers && mode.request_trailer_mode === 'SEND') await this.trailers();
    return this.toUpstream();
  }

  /** processor_state.h shouldRemoveContentLength: body modes that may change the body length. */
  private shouldRemoveContentLength(): boolean {
    const m = this.mode.request_body_mode;
    return m === 'STREAMED' || m === 'BUFFERED_PARTIAL' || (m === 'BUFFERED' && this.mode.request_header_mode === 'SKIP');
  }

  private bufferLimit(): number {
    return this.route.requestBodyBufferLimit ?? this.envoyListenerLimit();
  }

  private envoyListenerLimit(): number {
    return this.envoy.ingress.perConnectionBufferLimitBytes;
  }

  /** BUFFERED: Filter::onData buffers (StopIterationAndBuffer); over the limit the filter manager answers 413. */
  private async bufferedBody(): Promise<StandInResponse> {
    if (this.body.length > this.bufferLimit()) {
      this.stats.payloadTooLarge++;
      throw new Stop(new LocalReply(413, Buffer.from('Payload Too Large'), 'request_payload_too_large'));
    }
    this.send({ request_body: { body: this.body, end_of_stream: !this.hasTrailers } });
    const r = await this.await('body');
    if (r === 'continue-without-server') return this.continueWithoutServer();
    if (r.response !== 'request_body') return this.spurious();
    const cr = r.request_body?.response;
    // handleBodyResponse (BufferedBodyCallback): header mutation allowed, content-length must match a mutated body.
    this.applyCommon(cr, false);
    if (cr?.body_mutation) {
      const cl = headerValue(this.headers, 'content-length');
      const nb = applyBodyMutation(cr.body_mutation, this.body);
      if (cl !== undefined && Number(cl) !== nb.length) {
        throw new Stop(new LocalReply(500, Buffer.alloc(0), 'mismatch_between_content_length_and_the_length_of_the_mutated_body'));
      }
      this.body = nb;
    }
    if (this.hasTrailers && this.mode.request_trailer_mode === 'SEND') await this.trailers();
    return this.toUpstream();
  }

  /**
   * STREAMED: after the headers response, handleHeadersResponse → sendBufferedDataInStreamedMode →
   * continueIfNecessary(): the headers go on to the router, so the UPSTREAM REQUEST STARTS before
   * any body response. Chunks are sent as they arrive (Filter::onData STREAMED case) and each body
   * response injects its (mutated) chunk upstream, in order (handleBodyResponse StreamedBodyCallback).
   */
  private async streamedBody(): Promise<StandInResponse> {
    const up = this.envoy.startUpstream(this.route, this.headers, this.record, true);
    this.upstream = up;
    const size = Math.max(1, this.envoy.opts.streamedChunkBytes ?? 64 * 1024);
    const chunks: Buffer[] = [];
    for (let i = 0; i < this.body.length; i += size) chunks.push(this.body.subarray(i, i + size));
    chunks.forEach((c, i) => this.send({ request_body: { body: c, end_of_stream: i === chunks.length - 1 && !this.hasTrailers } }));
    for (let i = 0; i < chunks.length; i++) {
      const r = await this.await('body');
      if (r === 'continue-without-server') {
        // clearAsyncState: inject what is left, unprocessed.
        for (let j = i; j < chunks.length; j++) up.write(chunks[j]);
        up.end();
        return up.result(this.input.signal);
      }
      if (r.response !== 'request_body') return this.spurious();
      const cr = r.request_body?.response;
      up.write(cr?.body_mutation ? applyBodyMutation(cr.body_mutation, chunks[i]) : chunks[i]);
    }
    up.end();
    return up.result(this.input.signal);
  }

  /** BUFFERED_PARTIAL: one message with what fits under the limit; the rest flows unprocessed. */
  private async partialBody(): Promise<StandInResponse> {
    const limit = this.bufferLimit();
    const partial = this.body.length > limit;
    const head = partial ? this.body.subarray(0, limit) : this.body;
    const rest = partial ? this.body.subarray(limit) : Buffer.alloc(0);
    this.send({ request_body: { body: head, end_of_stream: !partial && !this.hasTrailers } });
    const r = await this.await('body');
    if (r === 'continue-without-server') return this.continueWithoutServer();
    if (r.response !== 'request_body') return this.spurious();
    const cr = r.request_body?.response;
    this.applyCommon(cr, false);
    const nh = cr?.body_mutation ? applyBodyMutation(cr.body_mutation, head) : head;
    this.body = Buffer.concat([nh, rest]);
    return this.toUpstream();
  }

  private async trailers(): Promise<void> {
    const t: HeaderList = Object.entries(this.input.trailers ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
    this.send({ request_trailers: { trailers: this.headerProto(t) } });
    const r = await this.await('trailers');
    if (r === 'continue-without-server') return;
    if (r.response !== 'request_trailers') this.spurious();
  }

  private async toUpstream(): Promise<StandInResponse> {
    // Nothing more is expected from the server (response path is SKIP/NONE here); the stream stays
    // open until the request ends (BUFFERED streams close at encodeHeaders/onDestroy).
    const up = this.envoy.startUpstream(this.route, this.headers, this.record, false);
    this.upstream = up;
    up.write(this.body);
    up.end();
    return up.result(this.input.signal);
  }

  private async continueWithoutServer(): Promise<StandInResponse> {
    this.processingComplete = true;
    this.closeStream();
    return this.toUpstream();
  }

  /**
   * Waits for the response to the message just sent, with the per-message timer
   * (ProcessorState::onStartProcessorCall). Handles, in Filter::onReceiveMessage order:
   * override_message_timeout (Filter::onNewTimeout → restartMessageTimer: once per state, only
   * 1 ms ≤ t ≤ max_message_timeout, and every other field of that message is ignored), then
   * mode_override (only with allow_mode_override and while waiting for a headers response),
   * then immediate_response. Timeouts, gRPC errors and clean closes follow onMessageTimeout,
   * onGrpcError and onGrpcClose.
   */
  private async await(state: 'headers' | 'body' | 'trailers'): Promise<ProcessingResponse__Output | 'continue-without-server'> {
    const stream = this.open();
    let deadline = Date.now() + this.filter.messageTimeoutMs;
    let timeoutOverridden = false;
    for (;;) {
      const ev: StreamEvent = await stream.next(deadline, this.input.signal);
      switch (ev.kind) {
        case 'aborted':
          throw new Stop(new LocalReply(499, Buffer.alloc(0), 'downstream_remote_disconnect'));
        case 'timeout':
          this.stats.messageTimeouts++;
          if (this.filter.failureModeAllow) {
            this.stats.failureModeAllowed++;
            return 'continue-without-server';
          }
          this.processingComplete = true;
          throw new Stop(new LocalReply(504, Buffer.alloc(0), `${ERROR_PREFIX}_per-message_timeout_exceeded`));
        case 'error':
          this.stats.grpcErrors++;
          if (this.filter.failureModeAllow) {
            this.stats.failureModeAllowed++;
            return 'continue-without-server';
          }
          this.processingComplete = true;
          throw new Stop(new LocalReply(this.filter.statusOnError, Buffer.alloc(0), `${ERROR_PREFIX}_gRPC_error_${ev.code}{${ev.details.replace(/ /g, '_')}}`));
        case 'close':
          return 'continue-without-server';
        case 'message': {
          const m = ev.message;
          this.stats.messagesReceived++;
          if (m.override_message_timeout) {
            const ms = durationMs(m.override_message_timeout) ?? 0;
            if (!timeoutOverridden && ms >= 1 && ms <= this.filter.maxMessageTimeoutMs) {
              deadline = Date.now() + ms;
              timeoutOverridden = true;
              this.stats.overrideTimeoutsApplied++;
            } else {
              this.stats.overrideTimeoutsIgnored++;
            }
            continue;
          }
          if (this.filter.allowModeOverride && state === 'headers' && m.mode_override) {
            this.applyModeOverride(m.mode_override);
          }
          if (m.response === 'immediate_response') {
            this.processingComplete = true;
            this.stats.immediateResponses++;
            this.closeStream();
            throw new Stop(this.immediate(m));
          }
          return m;
        }
      }
    }
  }

  /** effectiveModeOverride (1.34+): DEFAULT header/trailer modes = no change, request_header_mode ignored, body modes copied literally. */
  private applyModeOverride(o: NonNullable<ProcessingResponse__Output['mode_override']>): void {
    this.stats.modeOverridesApplied++;
    const m = processingModeFrom(o);
    const mode = this.mode;
    if (m.response_header_mode !== 'DEFAULT') mode.response_header_mode = m.response_header_mode;
    if (m.request_trailer_mode !== 'DEFAULT') mode.request_trailer_mode = m.request_trailer_mode;
    if (m.response_trailer_mode !== 'DEFAULT') mode.response_trailer_mode = m.response_trailer_mode;
    mode.request_body_mode = m.request_body_mode;
    mode.response_body_mode = m.response_body_mode;
    this.record.mode = { ...mode };
  }

  /** Out-of-order/unknown message: status_on_error (fail-closed, 1.35+) or ignore the server. */
  private spurious(): never | Promise<StandInResponse> {
    this.stats.spuriousMessages++;
    this.processingComplete = true;
    this.closeStream();
    if (this.filter.failureModeAllow) {
      this.stats.failureModeAllowed++;
      if (this.upstream) return this.upstream.result(this.input.signal);
      return this.toUpstream();
    }
    this.upstream?.abort();
    throw new Stop(new LocalReply(this.filter.statusOnError, Buffer.alloc(0), 'spurious_message'));
  }

  private applyCommon(cr: CommonResponse__Output | undefined, _immediate: boolean): void {
    if (!cr?.header_mutation) return;
    const err = applyHeaderMutation(cr.header_mutation, this.headers, cr.status === 'CONTINUE_AND_REPLACE', this.stats);
    if (err) {
      this.processingComplete = true;
      throw new Stop(new LocalReply(500, Buffer.alloc(0), err.replace(/ /g, '_')));
    }
  }

  /** Filter::sendImmediateResponse. */
  private immediate(m: ProcessingResponse__Output): LocalReply {
    const ir = m.immediate_response!;
    let status = this.envoy.statusNumber(ir.status?.code);
    if (!(status >= 200)) status = 200; // MutationUtils::isValidHttpStatus
    const headers: HeaderList = [];
    if (ir.headers) applyHeaderMutation(ir.headers, headers, false, this.stats); // errors only logged
    return new LocalReply(status, ir.body ?? Buffer.alloc(0), (ir.details ?? '').replace(/\s/g, '_'), headers);
  }
}

/**
 * MutationUtils::applyHeaderMutations with the default Checker (mutation_rules.cc): only
 * `raw_value` is read; `value` and `raw_value` both set is an error; host/:authority/:method/:scheme
 * and x-envoy-* may not be set (ignored + counted; :method allowed under CONTINUE_AND_REPLACE);
 * host and ':' headers may not be removed. Returns an error message for fatal errors.
 */
export function applyHeaderMutation(hm: HeaderMutation__Output, headers: HeaderList, replacing: boolean, stats?: EnvoyStats): string | undefined {
  const reject = () => {
    if (stats) stats.rejectedHeaderMutations++;
  };
  const nameOk = (n: string) => /^[!#$%&'*+\-.^_`|~0-9a-zA-Z:]+$/.test(n);
  for (const name of hm.remove_headers ?? []) {
    if (!nameOk(name)) {
      reject();
      return 'Invalid character in remove_headers mutation.';
    }
    const n = name.toLowerCase();
    if (n.startsWith(':') || n === 'host' || n.startsWith('x-envoy-')) {
      reject();
      continue;
    }
    removeHeader(headers, n);
  }
  for (const sh of hm.set_headers ?? []) {
    if (!sh.header) continue;
    const raw = sh.header.raw_value ?? Buffer.alloc(0);
    if ((sh.header.value ?? '') !== '' && raw.length > 0) {
      reject();
      return 'Only one of value or raw_value in the HeaderValue message should be set.';
    }
    const value = Buffer.from(raw).toString('latin1');
    const key = sh.header.key ?? '';
    if (!nameOk(key) || /[\r\n\0]/.test(value)) {
      reject();
      return 'Invalid character in set_headers mutation.';
    }
    const n = key.toLowerCase();
    const forbidden = n === 'host' || n === ':authority' || n === ':scheme' || (n === ':method' && !replacing) || n.startsWith('x-envoy-');
    if (forbidden) {
      reject();
      continue;
    }
    const append = sh.append?.value === true;
    if (append) headers.push([n, value]);
    else setHeader(headers, n, value);
  }
  return undefined;
}

function applyBodyMutation(bm: NonNullable<CommonResponse__Output['body_mutation']>, body: Buffer): Buffer {
  if (bm.mutation === 'body' || bm.body !== undefined) return Buffer.from(bm.body ?? Buffer.alloc(0));
  if (bm.clear_body) return Buffer.alloc(0);
  return body;
}

function setHeader(h: HeaderList, name: string, value: string): void {
  const i = h.findIndex(([k]) => k === name);
  removeHeader(h, name);
  if (i >= 0 && i <= h.length) h.splice(i, 0, [name, value]);
  else h.push([name, value]);
}

function removeHeader(h: HeaderList, name: string): void {
  for (let i = h.length - 1; i >= 0; i--) if (h[i][0] === name) h.splice(i, 1);
}

function splitHostPort(e: string): [string, number] {
  const i = e.lastIndexOf(':');
  return [e.slice(0, i), Number(e.slice(i + 1))];
}

function toOutgoing(h: HeaderList): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = {};
  for (const [k, v] of h) {
    const cur = o[k];
    if (cur === undefined) o[k] = v;
    else o[k] = Array.isArray(cur) ? [...cur, v] : [cur, v];
  }
  return o;
}

/** The router's upstream request (HTTP/1.1), with the route timeout (15 s default; 0 = none). */
class Upstream {
  private readonly req: http.ClientRequest;
  private readonly written: Buffer[] = [];
  private readonly done: Promise<StandInResponse>;
  private timer?: NodeJS.Timeout;

  constructor(endpoint: string, timeoutMs: number, headers: HeaderList, private readonly record: RequestRecord, startedBeforeBodyProcessed: boolean) {
    const [host, port] = splitHostPort(endpoint);
    const method = headerValue(headers, ':method') ?? 'GET';
    const path = headerValue(headers, ':path') ?? '/';
    const out: HeaderList = [['host', headerValue(headers, ':authority') ?? 'localhost'], ...headers.filter(([k]) => !k.startsWith(':') && !HOP_BY_HOP.has(k))];
    if (timeoutMs > 0) out.push(['x-envoy-expected-rq-timeout-ms', String(timeoutMs)]);
    record.upstream = { method, path, headers: out, body: Buffer.alloc(0), startedBeforeBodyProcessed };
    const started = Date.now();
    this.req = http.request({ host, port, method, path, headers: toOutgoing(out), agent: false });
    this.req.flushHeaders(); // the headers leave now, as the router's would
    this.done = new Promise<StandInResponse>((resolve) => {
      const local = (status: number, text: string, details: string): void => {
        clearTimeout(this.timer);
        resolve({ status, headers: { 'content-type': 'text/plain', 'content-length': String(text.length), server: 'envoy' }, body: Buffer.from(text), routedToUpstream: true, details });
      };
      if (timeoutMs > 0) {
        this.timer = setTimeout(() => {
          this.req.destroy();
          local(504, 'upstream request timeout', 'upstream_response_timeout');
        }, timeoutMs);
      }
      this.req.on('error', () => local(503, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure', 'upstream_reset_before_response_started{connection_failure}'));
      this.req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => local(503, 'upstream reset', 'upstream_reset_after_response_started'));
        res.on('end', () => {
          clearTimeout(this.timer);
          const h: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) h[k] = Array.isArray(v) ? v.join(',') : v;
          const body = Buffer.concat(chunks);
          h['content-length'] = String(body.length);
          h.server = 'envoy';
          h['x-envoy-upstream-service-time'] = String(Date.now() - started);
          resolve({ status: res.statusCode ?? 502, headers: h, body, routedToUpstream: true });
        });
      });
    });
  }

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.written.push(chunk);
    this.record.upstream!.body = Buffer.concat(this.written);
    this.req.write(chunk);
  }

  end(): void {
    this.req.end();
  }

  abort(): void {
    clearTimeout(this.timer);
    this.req.destroy();
  }

  result(signal?: AbortSignal): Promise<StandInResponse> {
    signal?.addEventListener('abort', () => this.abort());
    return this.done;
  }
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.');
}

/** Envoy's local address (Network::Utility::getLocalAddress): the first non-loopback IPv4 of the host. */
function envoyLocalAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
