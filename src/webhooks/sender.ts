import { performance } from 'node:perf_hooks';
import { Agent } from 'undici';
import { checkDeliveryTarget, PinnedLookup, systemResolver, type Resolver } from './guard';
import type { NetworkPolicy } from './policy';
import type { AttemptErrorCode, WebhookEvent } from '../runs/types';
import { classifyAttempt, parseRetryAfter, type AttemptOutcome } from './retry';
import { cerebriumSignature, WebhookSigner } from './signing';

export interface WebhookSenderOptions {
  /** `whsec_<base64>` secrets; each signs every attempt (none: no `webhook-signature`). */
  secrets: string[];
  /** One attempt's budget: DNS, connect, TLS, request, response headers and (bounded) body. */
  timeoutMs: number;
  policy: NetworkPolicy;
  userAgent?: string;
  /** Resolves host names before the address check (default: `dns.lookup`, all addresses). For tests. */
  resolve?: Resolver;
  /** Extra trusted CA certificate(s) for https receivers (PEM). Default: Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Response bytes read (and thrown away) so the connection can be reused; past that it is closed. */
  maxResponseBytes?: number;
}

export interface WebhookDelivery {
  url: string;
  /** Stable across the attempts of one delivery (Standard Webhooks `webhook-id`). */
  webhookId: string;
  runId: string;
  runStatus: string;
  upstreamStatus: number | null;
  body: Buffer;
  contentType: string;
  /** `traceparent` (and `tracestate`) of the attempt's span, when tracing is on. */
  traceHeaders?: ReadonlyArray<[string, string]>;
  /** What it reports (`x-async-webhook-event`); default `completed`. */
  event?: WebhookEvent;
  /**
   * The webhook-timestamp, Unix seconds: exactly `timestampS` when set, else now but never before
   * `notBeforeS` (a final webhook is later than its run's `started` event).
   */
  timestampS?: number | null;
  notBeforeS?: number | null;
  /** The run's X-Webhook-Secret: adds Cerebrium's signature headers (`X-Request-Id` = the run id). */
  cerebriumSecret?: Buffer | null;
}

export interface AttemptResult {
  outcome: AttemptOutcome;
  statusCode: number | null;
  /** Why no status came back (retried or final: see ATTEMPT_ERRORS); null when one did. */
  error: AttemptErrorCode | null;
  durationMs: number;
  /** The receiver's Retry-After (ms) on a retryable answer, else null. */
  retryAfterMs: number | null;
}

export const DEFAULT_USER_AGENT = 'envoy-async-sidecar-webhooks';
const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024;

class AttemptTimeout extends Error {
  constructor() {
    super('webhook attempt timed out');
  }
}

/**
 * Sends one webhook attempt (docs/CONTRACT.md §4). One undici Agent is shared by all attempts (keep-alive
 * pools per origin); its `connect.lookup` is a PinnedLookup, so each connection goes to an
 * address this attempt checked (see guard.ts). Redirects are never followed: Agent#request has
 * no redirect handling and no redirect interceptor is composed in, so a 3xx is just a status.
 */
export class WebhookSender {
  private readonly agent: Agent;
  private readonly pins = new PinnedLookup();
  private readonly signer: WebhookSigner;
  private readonly resolve: Resolver;
  private readonly userAgent: string;
  private readonly maxResponseBytes: number;

  constructor(private readonly opts: WebhookSenderOptions) {
    this.signer = new WebhookSigner(opts.secrets);
    this.resolve = opts.resolve ?? systemResolver;
    this.userAgent = opts.userAgent ?? DEFAULT_USER_AGENT;
    this.maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.agent = new Agent({
      connect: {
        lookup: this.pins.lookup,
        timeout: opts.timeoutMs,
        autoSelectFamily: true,
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
      },
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
  }

  async send(d: WebhookDelivery): Promise<AttemptResult> {
    const started = performance.now();
    const finish = (statusCode: number | null, error: AttemptErrorCode | null, retryAfterMs: number | null = null): AttemptResult => {
      const outcome = classifyAttempt({ statusCode, error });
      return { outcome, statusCode, error, durationMs: performance.now() - started, retryAfterMs: outcome === 'retry' ? retryAfterMs : null };
    };

    let url: URL;
    try {
      url = new URL(d.url);
    } catch {
      return finish(null, 'invalid_url');
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' || url.hostname === '') {
      return finish(null, 'invalid_url');
    }

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new AttemptTimeout()), this.opts.timeoutMs);
    let release: (() => void) | null = null;
    try {
      const target = await abortable(checkDeliveryTarget(url, this.opts.policy, this.resolve), controller.signal);
      if (!target.ok) return finish(null, target.error);
      if (target.addresses !== null) release = this.pins.pin(url.hostname, target.addresses);

      const seconds = d.timestampS ?? Math.max(Math.floor(Date.now() / 1000), d.notBeforeS ?? 0);
      const headers: Record<string, string> = {
        'content-type': d.contentType,
        'user-agent': this.userAgent,
        'x-async-run-id': d.runId,
        'x-async-run-status': d.runStatus,
        'x-async-webhook-event': d.event ?? 'completed',
        ...this.signer.headers(d.webhookId, d.body, new Date(seconds * 1000)),
      };
      if (d.upstreamStatus !== null) headers['x-async-upstream-status'] = String(d.upstreamStatus);
      for (const [k, v] of d.traceHeaders ?? []) headers[k] = v;
      if (d.cerebriumSecret) {
        headers['x-request-id'] = d.runId;
        headers['x-cerebrium-webhook-timestamp'] = String(seconds);
        headers['x-cerebrium-webhook-signature'] = cerebriumSignature(d.cerebriumSecret, d.runId, seconds, d.body);
      }

      const res = await this.agent.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: 'POST',
        headers,
        body: d.body,
        signal: controller.signal,
      });
      const retryAfterMs = parseRetryAfter(res.headers['retry-after']);
      // Read and discard a bounded amount so the connection goes back to the pool; a status
      // is the answer, so a failure while draining does not change the outcome.
      let read = 0;
      try {
        for await (const chunk of res.body) {
          read += (chunk as Buffer).length;
          if (read > this.maxResponseBytes) break; // leaving the loop destroys the body (and the socket)
        }
      } catch {
        // ignored: see above
      }
      return finish(res.statusCode, null, retryAfterMs);
    } catch (err) {
      return finish(null, controller.signal.aborted ? 'timeout' : errorName(err));
    } finally {
      clearTimeout(timer);
      release?.();
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => this.agent.destroy());
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** A short, stable name for a connection-level failure. */
export function errorName(err: unknown): AttemptErrorCode {
  let e = err as { code?: string; errors?: unknown[]; cause?: unknown; name?: string };
  // Happy eyeballs (autoSelectFamily) reports an AggregateError; undici may wrap in `cause`.
  if (e && !e.code && Array.isArray(e.errors) && e.errors.length > 0) e = e.errors[e.errors.length - 1] as typeof e;
  if (e && !e.code && e.cause) e = e.cause as typeof e;
  const code = e?.code ?? '';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection_refused';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'connection_reset';
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'host_unreachable';
    case 'UND_ERR_INVALID_ARG':
      return 'invalid_request'; // e.g. a header value undici refuses: sending again would not help
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return 'dns_failure';
    default:
      if (/^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|ERR_OSSL_)/.test(code)) return 'tls_error';
      return 'connection_error';
  }
}
