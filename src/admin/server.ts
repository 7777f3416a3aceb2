import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { HttpReply } from '../extproc';
import { apiError, jsonReply, type OpenApiDocument, type RunsApi } from '../api';
import type { QueueStats } from '../runs';
import type { Logger, Metrics } from '../telemetry';
import { dashboardReply } from './dashboard';
import { QUEUES_PATH, queuesView } from './queues';

export interface AdminServerOptions {
  host: string;
  port: number;
  adminToken: string | null;
  runsApiPrefix: string;
  /** Host names accepted in `Host` besides IP literals and localhost (lower case). */
  allowedHosts: readonly string[];
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The host part of a Host header value (`[::1]:9090` → `::1`, `Example:80` → `example`). */
function hostOf(value: string): string {
  const v = value.trim().toLowerCase();
  if (v.startsWith('[')) return v.slice(1, v.indexOf(']') >>> 0);
  const colon = v.lastIndexOf(':');
  return colon < 0 ? v : v.slice(0, colon);
}

export interface AdminChecks {
  /** Process is alive and not wedged. */
  live(): boolean;
  /** Dependencies reachable and not draining; reasons when not. */
  ready(): Promise<{ ready: boolean; checks: Record<string, string>; redis?: unknown }>;
  /** Called before a scrape, to read gauges that live in Redis. */
  beforeScrape?(): Promise<void>;
}

/** The queues' counts for `GET /queues` (read from Redis on each call). */
export type QueueStatsSource = () => Promise<QueueStats[]>;

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The admin HTTP server: health, readiness, Prometheus metrics, the queues, the unscoped runs API and its OpenAPI document. */
export class AdminServer {
  private readonly server: Server;
  private readonly tokenDigest: Buffer | null;

  constructor(
    private readonly options: AdminServerOptions,
    private readonly checks: AdminChecks,
    private readonly metrics: Metrics,
    private readonly runsApi: RunsApi | null,
    private readonly logger: Logger,
    private readonly contract: OpenApiDocument | null = null,
    private readonly queueStats: QueueStatsSource | null = null,
  ) {
    this.tokenDigest = options.adminToken ? digest(options.adminToken) : null;
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: Error) => {
        this.logger.error({ err, path: req.url }, 'admin request failed');
        if (!res.headersSent) send(res, apiError('internal_error', 'The admin server failed to answer.'));
        else res.destroy();
      });
    });
    this.server.keepAliveTimeout = 5000;
  }

  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /**
   * DNS rebinding: a page on attacker.example whose name is made to resolve to 127.0.0.1 can
   * read a loopback server, but its requests carry `Host: attacker.example`. An IP literal or
   * `localhost` cannot be rebound, so only other names need to be listed.
   */
  private hostAllowed(req: IncomingMessage): boolean {
    const host = hostOf(req.headers.host ?? '');
    return host === 'localhost' || isIP(host) !== 0 || this.options.allowedHosts.includes(host);
  }

  /**
   * A browser tab on another site can still send a "simple" cross-site POST (no preflight) to a
   * loopback port; browsers mark it with Sec-Fetch-Site and Origin, which a same-origin page
   * (the dashboard) and non-browser clients (curl, scripts) do not set to another site.
   */
  private crossSite(req: IncomingMessage): boolean {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return true;
    const origin = req.headers.origin;
    if (origin === undefined || origin === 'null') return origin === 'null';
    try {
      return new URL(origin).host !== (req.headers.host ?? '').toLowerCase();
    } catch {
      return true;
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    const pathname = path.split('?', 1)[0]!;
    const method = req.method ?? 'GET';
    if (!this.hostAllowed(req)) {
      return send(res, apiError('host_not_allowed', 'The Host header names a host this admin port does not answer to (see ADMIN_ALLOWED_HOSTS).'));
    }
    if (STATE_CHANGING.has(method) && this.crossSite(req)) {
      return send(res, apiError('cross_site_request', 'State-changing requests from another site are refused.'));
    }
    if (pathname === '/healthz' || pathname === '/readyz' || pathname === '/metrics') {
      if (method !== 'GET' && method !== 'HEAD')
        return send(res, apiError('method_not_allowed', 'Allowed methods: GET, HEAD.', { headers: [['allow', 'GET, HEAD']] }));
    }
    if (pathname === '/healthz') {
      return send(res, this.checks.live() ? jsonReply(200, { status: 'ok' }) : jsonReply(503, { status: 'unhealthy' }));
    }
    if (pathname === '/readyz') {
      const r = await this.checks.ready();
      const body = { status: r.ready ? 'ready' : 'not_ready', checks: r.checks, ...(r.redis === undefined ? {} : { redis: r.redis }) };
      return send(res, jsonReply(r.ready ? 200 : 503, body));
    }
    if (pathname === '/metrics') {
      await this.checks.beforeScrape?.().catch(() => undefined);
      const body = await this.metrics.registry.metrics();
      return send(res, { status: 200, headers: [['content-type', this.metrics.registry.contentType]], body });
    }
    if (pathname === '/openapi.json' && this.contract) return send(res, this.contract.reply(method));
    if (pathname === QUEUES_PATH && this.queueStats) {
      if (method !== 'GET' && method !== 'HEAD')
        return send(res, apiError('method_not_allowed', 'Allowed methods: GET, HEAD.', { headers: [['allow', 'GET, HEAD']] }));
      if (!this.authorized(req)) return send(res, unauthorized());
      return send(res, await this.queuesReply(this.queueStats));
    }
    if (this.runsApi && this.runsApi.owns(pathname)) {
      if (!this.authorized(req)) return send(res, unauthorized());
      const abort = new AbortController();
      res.on('close', () => abort.abort());
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
      req.resume();
      return send(res, await this.runsApi.handle({ method, path, headers }, 'admin', abort.signal));
    }
    const page = dashboardReply(method, pathname, this.options.runsApiPrefix);
    if (page) return send(res, page);
    return send(res, apiError('not_found', `Nothing is served at ${pathname} on the admin port.`));
  }

  /** Like the runs API, a store that does not answer is a 503 the dashboard retries, not a 500. */
  private async queuesReply(read: QueueStatsSource): Promise<HttpReply> {
    let stats: QueueStats[];
    try {
      stats = await read();
    } catch (err) {
      this.metrics.redisErrors.inc({ operation: 'admin_queues' });
      this.logger.error({ err }, 'admin queues could not read the store');
      return apiError('store_unavailable', 'The run store is unavailable; retry later.');
    }
    return jsonReply(200, queuesView(stats));
  }

  private authorized(req: IncomingMessage): boolean {
    if (!this.tokenDigest) return true;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), this.tokenDigest);
  }
}

function unauthorized(): HttpReply {
  return apiError('unauthorized', 'The admin runs API and queues need Authorization: Bearer <ADMIN_TOKEN>.', { headers: [['www-authenticate', 'Bearer']] });
}

function send(res: ServerResponse, reply: HttpReply): void {
  if (res.destroyed) return;
  const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body;
  res.statusCode = reply.status;
  for (const [k, v] of reply.headers) res.setHeader(k, v);
  res.setHeader('content-length', body.length);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
