/**
 * EnvoyStandIn: Envoy's HTTP listener + ext_proc filter + router, emulated in-process from
 * envoy/envoy.yaml. The real Envoy (test/support/real-envoy.ts) is the reference; the stand-in is
 * for what a real Envoy cannot be made to do (malformed or out-of-order ext_proc traffic for
 * drills/fuzz.ts, STREAMED chunking) and runs side by side with it (test/support/envoys.ts), so
 * every difference shows. Split along Envoy's source: this file is the HTTP connection manager
 * (listeners, conn_manager_utility.cc's request headers, route match); filter.ts is ext_proc.cc,
 * processor-state.ts processor_state.cc, mutation-utils.ts mutation_utils.cc, router.ts the router.
 *
 * Not emulated: the response path (response_header_mode must be SKIP and response_body_mode NONE;
 * other values are recorded but not sent), FULL_DUPLEX_STREAMED, observability_mode, attributes,
 * forward_rules, metadata namespaces, clear_route_cache, protocol_config, retries, HTTP/2
 * downstream, real flow control (the downstream body is read completely before the filter chain
 * runs; STREAMED chunks are cut by `streamedChunkBytes`).
 */
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { loadExtProcProto } from '../../../src/extproc/proto';
import type { ProcessingRequest } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import {
  loadEnvoyConfig,
  processingModeFrom,
  type EnvoyConfigModel,
  type ExtProcFilterModel,
  type ListenerModel,
  type ProcessingModeModel,
  type RouteModel,
} from '../envoy-config';
import { registerListener } from '../listeners';
import { createExtProcClient, ExtProcStream } from './ext-proc-stream';
import { FilterRun } from './filter';
import { LocalReply } from './local-reply';
import { setHeader } from './mutation-utils';
import { headerValue, matchRoute, type HeaderList } from './route-match';
import { HOP_BY_HOP, splitHostPort, toOutgoing, Upstream } from './router';

export interface EnvoyStandInOptions {
  /** Default 'envoy/envoy.yaml' (relative to the repo root). */
  configPath?: string;
  /** cluster name → 'host:port', overriding envoy.yaml's endpoints. */
  clusters: Record<string, string>;
  filterOverrides?: Partial<{
    messageTimeoutMs: number;
    maxMessageTimeoutMs: number;
    failureModeAllow: boolean;
  }>;
  /** Route name → fields replacing that route's effective processing mode (e.g. { async_query: { request_body_mode: 'STREAMED' } }). */
  routeModeOverrides?: Record<string, Partial<ProcessingModeModel>>;
  /** Chunk size in STREAMED / BUFFERED_PARTIAL modes (default 64 KiB). */
  streamedChunkBytes?: number;
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
  /** Its ingress answers are checked against openapi/openapi.yaml while it runs (test/support/openapi.ts). */
  private unregister: () => void = () => undefined;
  private readonly openStreams = new Set<ExtProcStream>();
  private readonly statusCodes: Map<string, number>;

  private constructor(
    readonly config: EnvoyConfigModel,
    readonly opts: EnvoyStandInOptions,
  ) {
    this.ingress = config.listener('ingress');
    this.dispatch = config.listeners.find((l) => l.name === 'dispatch');
    const f = this.ingress.hcm.extProc;
    if (f) {
      const o = opts.filterOverrides ?? {};
      this.filter = {
        ...f,
        messageTimeoutMs: o.messageTimeoutMs ?? f.messageTimeoutMs,
        maxMessageTimeoutMs: o.maxMessageTimeoutMs ?? f.maxMessageTimeoutMs,
        failureModeAllow: o.failureModeAllow ?? f.failureModeAllow,
      };
      this.client = createExtProcClient(this.endpoint(f.clusterName), f.clusterName);
    }
    const sc = (loadExtProcProto() as unknown as { envoy: { type: { v3: { StatusCode: { type: { value: { name: string; number: number }[] } } } } } }).envoy
      .type.v3.StatusCode.type.value;
    this.statusCodes = new Map(sc.map((v) => [v.name, v.number]));
  }

  static async start(opts: EnvoyStandInOptions): Promise<EnvoyStandIn> {
    const config = await loadEnvoyConfig(opts.configPath ?? 'envoy/envoy.yaml');
    const s = new EnvoyStandIn(config, opts);
    s.url = await s.listen((req, res) => void s.serveIngress(req, res));
    s.unregister = registerListener(Number(new URL(s.url).port), 'ingress');
    if (s.dispatch) s.dispatchUrl = await s.listen((req, res) => s.serveDispatch(req, res));
    return s;
  }

  /** The most recent request record. */
  get last(): RequestRecord | undefined {
    return this.records[this.records.length - 1];
  }

  async close(): Promise<void> {
    this.unregister();
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
    return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`)));
  }

  // ───────────────────────────────────────── HTTP fronts ─────────────────────────────────────────

  private async serveIngress(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort(); // downstream reset: Envoy destroys the filter (onDestroy)
    });
    for await (const c of req) chunks.push(c as Buffer);
    const headers = headerList(req);
    const trailers = Object.keys(req.trailers).length ? (req.trailers as Record<string, string>) : undefined;
    try {
      const remoteAddress = req.socket.remoteAddress?.replace(/^::ffff:/, '');
      const r = await this.process({
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers,
        body: Buffer.concat(chunks),
        trailers,
        signal: ac.signal,
        remoteAddress,
      });
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
    const headers = headerList(req);
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
      const out = await ctx.run();
      if (!(out instanceof LocalReply)) return out;
      ctx.abortUpstream(); // a local reply resets an upstream request already started (STREAMED)
      return this.reply(out);
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
    const out: HeaderList = [[':authority', authority], [':path', input.path], [':method', input.method.toUpperCase()], [':scheme', 'http'], ...rest];
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
    let mode: ProcessingModeModel =
      per?.overrides?.processing_mode !== undefined ? processingModeFrom(per.overrides.processing_mode) : { ...filter.processingMode };
    const forced = route.name ? this.opts.routeModeOverrides?.[route.name] : undefined;
    if (forced) mode = { ...mode, ...forced };
    return mode;
  }

  /** Router: forward to the route's cluster over HTTP/1.1 and relay the response. */
  async forward(route: RouteModel, headers: HeaderList, body: Body, record: RequestRecord, signal?: AbortSignal): Promise<StandInResponse> {
    const up = this.startUpstream(route, headers, record, false);
    if (up instanceof LocalReply) return this.reply(up);
    up.write(body);
    up.end();
    return up.result(signal);
  }

  startUpstream(route: RouteModel, headers: HeaderList, record: RequestRecord, startedBeforeBodyProcessed: boolean): Upstream | LocalReply {
    if (!route.cluster) return new LocalReply(503, Buffer.from('no cluster'), 'cluster_not_found');
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
    const limit = this.config.clusters[f.clusterName]?.maxRequestsPerConnection ?? null;
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

/** The request's headers in arrival order, names lower-cased (rawHeaders alternates name and value). */
function headerList(req: http.IncomingMessage): HeaderList {
  const headers: HeaderList = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
  return headers;
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
