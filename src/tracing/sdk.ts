/**
 * Tracing with the OpenTelemetry SDK. Only loaded (by ./index.ts) when tracing is on: with it
 * off no module of the SDK is ever required.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  defaultTextMapGetter,
  type Context,
  type Span,
  type TextMapGetter,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator, setGlobalErrorHandler } from '@opentelemetry/core';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type { TracingConfig } from '../config';
import type { HttpReply, RequestHead } from '../extproc';
import type { ClaimedDelivery, ClaimedRun, DispatchOutcome } from '../runs';
import type { Logger } from '../telemetry';
import { decodeRunTrace, encodeRunTrace, queueOf, redactedUrl, traceIdOf } from './context';
import type { AcceptSpan, ReplaySpan, StreamMetadata, TraceLogFields, Tracing, WebhookSpan } from './types';

/** The sidecar's own attributes, besides the OpenTelemetry HTTP conventions'. */
export const RUN_ATTRIBUTES = {
  id: 'run.id',
  status: 'run.status',
  queue: 'queue',
  /** The error code of an accept the sidecar refused (400, 401, 413, 503). */
  rejected: 'run.rejected',
  /** Why this worker did not record a replay's outcome: cancelled, shutdown, lease_lost (aborted), not_now (the app's 429/503: queued again). */
  stopped: 'run.stopped',
  /** How a webhook attempt ended: delivered, retry, failed. */
  webhookOutcome: 'webhook.outcome',
} as const;

export const SPAN_NAMES = { accept: 'run accept', queued: 'run queued', replay: 'run replay', webhook: 'run webhook' } as const;

const TRACER_NAME = 'envoy-async-sidecar';
/** How long shutdown waits for the last spans to be sent. */
const SHUTDOWN_FLUSH_MS = 5000;
/** Export failures are logged at most this often. */
const ERROR_LOG_INTERVAL_MS = 5000;

/** Header pairs as ext_proc and the run store keep them (lower-case names). */
const pairsGetter: TextMapGetter<ReadonlyArray<[string, string]>> = {
  keys: (pairs) => pairs.map(([k]) => k),
  get: (pairs, key) => pairs.find(([k]) => k === key)?.[1],
};

const metadataGetter: TextMapGetter<StreamMetadata> = {
  keys: () => ['traceparent', 'tracestate'],
  get: (read, key) => read(key),
};

function buildSampler(s: TracingConfig['sampler']): Sampler {
  const root = s.name.endsWith('always_off')
    ? new AlwaysOffSampler()
    : s.name.endsWith('traceidratio')
      ? new TraceIdRatioBasedSampler(s.ratio)
      : new AlwaysOnSampler();
  return s.name.startsWith('parentbased_') ? new ParentBasedSampler({ root }) : root;
}

/** server.address and server.port of a URL (the port its scheme implies when it names none). */
function serverAttributes(url: URL): Record<string, string | number> {
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return { [ATTR_SERVER_ADDRESS]: url.hostname.replace(/^\[|\]$/g, ''), [ATTR_SERVER_PORT]: port };
}

/** server.address and server.port of an `:authority` (`host`, `host:port`, `[v6]:port`), without a URL parse per request. */
function authorityAttributes(authority: string, scheme: string): Record<string, string | number> {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(authority);
  if (!m || m[1] === '') return {};
  const port = m[2] !== undefined ? Number(m[2]) : scheme === 'https' ? 443 : 80;
  return { [ATTR_SERVER_ADDRESS]: m[1]!.replace(/^\[|\]$/g, ''), [ATTR_SERVER_PORT]: port };
}

function parseUrl(raw: string): URL | null {
  try {
    return new URL(raw);
  } catch {
    return null;
  }
}

export class OtelTracing implements Tracing {
  readonly enabled = true;
  private readonly provider: BasicTracerProvider;
  private readonly tracer: Tracer;
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(config: TracingConfig, exporter: SpanExporter, logger: Logger) {
    // The sidecar's defaults first, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME as the SDK
    // reads them (the specification's precedence); span limits and OTEL_BSP_* are the SDK's too.
    const resource = defaultResource()
      .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName }))
      .merge(detectResources({ detectors: [envDetector] }));
    this.provider = new BasicTracerProvider({
      resource,
      sampler: buildSampler(config.sampler),
      spanProcessors: [new BatchSpanProcessor(exporter)],
    });
    // Not registered globally: nothing else in the process should pick up this provider.
    this.tracer = this.provider.getTracer(TRACER_NAME);
    let lastLog = 0;
    setGlobalErrorHandler((err) => {
      if (Date.now() - lastLog < ERROR_LOG_INTERVAL_MS) return;
      lastLog = Date.now();
      logger.warn({ err, endpoint: config.url }, 'OpenTelemetry: could not export spans');
    });
  }

  startAccept(head: RequestHead, metadata?: StreamMetadata): AcceptSpan {
    // With Envoy's own tracer on, Envoy starts a span for its ext_proc call and sends that span's
    // traceparent in the stream's gRPC metadata, while the request headers still carry the
    // client's (Envoy injects its spans only into requests it sends upstream): the metadata's
    // makes the accept span a child of Envoy's, the headers' a child of the client's.
    const parent = metadata?.('traceparent')
      ? this.propagator.extract(ROOT_CONTEXT, metadata, metadataGetter)
      : this.propagator.extract(ROOT_CONTEXT, head.headers, pairsGetter);
    const attributes: Record<string, string | number> = {
      [ATTR_HTTP_REQUEST_METHOD]: head.method,
      [ATTR_URL_PATH]: head.path.split('?', 1)[0]!,
      [ATTR_URL_SCHEME]: head.scheme,
    };
    Object.assign(attributes, authorityAttributes(head.authority, head.scheme));
    const agent = pairsGetter.get(head.headers, 'user-agent');
    if (typeof agent === 'string') attributes[ATTR_USER_AGENT_ORIGINAL] = agent;
    const span = this.tracer.startSpan(SPAN_NAMES.accept, { kind: SpanKind.SERVER, attributes }, parent);
    return new OtelAcceptSpan(span, this.carrier(span));
  }

  startReplay(run: ClaimedRun, dispatchBase: string): ReplaySpan {
    const parent = this.runParent(run.trace, run.headers);
    const queue = queueOf(run);
    // The wait is over by now: its span is written whole, with the times Redis recorded. A run the
    // app sent back ("not now") keeps its first queued_at, so its later waits show as the gaps
    // between its replay spans instead.
    if (run.backpressureTries === 0) {
      this.tracer
        .startSpan(
          SPAN_NAMES.queued,
          { kind: SpanKind.INTERNAL, startTime: new Date(run.queuedAt), attributes: { [RUN_ATTRIBUTES.id]: run.id, [RUN_ATTRIBUTES.queue]: queue } },
          parent,
        )
        .end(new Date(Math.max(run.queuedAt, run.startedAt)));
    }
    const attributes: Record<string, string | number> = {
      [ATTR_HTTP_REQUEST_METHOD]: run.method,
      [RUN_ATTRIBUTES.id]: run.id,
      [RUN_ATTRIBUTES.queue]: queue,
    };
    const url = parseUrl(dispatchBase + (run.target === '*' ? '/' : run.target));
    if (url) Object.assign(attributes, { [ATTR_URL_FULL]: redactedUrl(url) }, serverAttributes(url));
    // A run dispatched again after its worker died is sent again (resend 1, 2, ...).
    if (run.attempt > 1) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = run.attempt - 1;
    const span = this.tracer.startSpan(SPAN_NAMES.replay, { kind: SpanKind.CLIENT, attributes }, parent);
    return new OtelReplaySpan(span, this.headersOf(span));
  }

  startWebhook(d: ClaimedDelivery): WebhookSpan {
    const attributes: Record<string, string | number> = {
      [ATTR_HTTP_REQUEST_METHOD]: 'POST',
      [RUN_ATTRIBUTES.id]: d.runId,
      [RUN_ATTRIBUTES.status]: d.runStatus,
      [RUN_ATTRIBUTES.queue]: queueOf(d),
    };
    const url = parseUrl(d.url);
    if (url) Object.assign(attributes, { [ATTR_URL_FULL]: redactedUrl(url) }, serverAttributes(url));
    if (d.tries > 0) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = d.tries;
    const span = this.tracer.startSpan(SPAN_NAMES.webhook, { kind: SpanKind.CLIENT, attributes }, this.runParent(d.trace));
    return new OtelWebhookSpan(span, this.headersOf(span));
  }

  logFields(runTrace: string | null | undefined): TraceLogFields | undefined {
    const id = runTrace ? traceIdOf(runTrace) : undefined;
    return id === undefined ? undefined : { trace_id: id };
  }

  async shutdown(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.provider.shutdown(), new Promise((r) => (timer = setTimeout(r, SHUTDOWN_FLUSH_MS)))]);
    clearTimeout(timer);
  }

  /**
   * The context a run's later spans hang from: the accept span's, as the run stored it; for a run
   * accepted while tracing was off, the client's own traceparent among its replay headers.
   */
  private runParent(runTrace: string | null | undefined, headers?: ReadonlyArray<[string, string]>): Context {
    if (runTrace) return this.propagator.extract(ROOT_CONTEXT, decodeRunTrace(runTrace), defaultTextMapGetter);
    if (headers) return this.propagator.extract(ROOT_CONTEXT, headers, pairsGetter);
    return ROOT_CONTEXT;
  }

  /** The span's W3C trace context headers, as the propagator would inject them. */
  private carrier(span: Span): { traceparent?: string; tracestate?: string } {
    const ctx = span.spanContext();
    const traceparent = `00-${ctx.traceId}-${ctx.spanId}-0${Number(ctx.traceFlags & TraceFlags.SAMPLED)}`;
    const tracestate = ctx.traceState?.serialize();
    return tracestate ? { traceparent, tracestate } : { traceparent };
  }

  private headersOf(span: Span): Array<[string, string]> {
    const c = this.carrier(span);
    const out: Array<[string, string]> = [];
    if (c.traceparent) out.push(['traceparent', c.traceparent]);
    if (c.tracestate) out.push(['tracestate', c.tracestate]);
    return out;
  }
}

class OtelAcceptSpan implements AcceptSpan {
  readonly runTrace: string;
  readonly logFields: TraceLogFields;

  constructor(
    private readonly span: Span,
    carrier: { traceparent?: string; tracestate?: string },
  ) {
    this.runTrace = encodeRunTrace(carrier);
    const ctx = span.spanContext();
    this.logFields = { trace_id: ctx.traceId, span_id: ctx.spanId };
  }

  runCreated(run: { id: string }): void {
    this.span.setAttributes({ [RUN_ATTRIBUTES.id]: run.id, [RUN_ATTRIBUTES.queue]: queueOf(run) });
  }

  end(reply: HttpReply): HttpReply {
    const s = this.span;
    s.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, reply.status);
    if (reply.status === 202) s.setAttribute(RUN_ATTRIBUTES.status, 'queued');
    const code = reply.details?.startsWith('async_sidecar_') ? reply.details.slice('async_sidecar_'.length) : undefined;
    if (code !== undefined) s.setAttribute(RUN_ATTRIBUTES.rejected, code);
    // A server span is an error only for 5xx (a 4xx is the client's).
    if (reply.status >= 500) {
      s.setAttribute(ATTR_ERROR_TYPE, code ?? String(reply.status));
      s.setStatus({ code: SpanStatusCode.ERROR });
    }
    s.end();
    return reply;
  }
}

class OtelReplaySpan implements ReplaySpan {
  constructor(
    private readonly span: Span,
    readonly headers: ReadonlyArray<[string, string]>,
  ) {}

  end(outcome: DispatchOutcome, stoppedBy: Parameters<ReplaySpan['end']>[1]): void {
    const s = this.span;
    const status = outcome.response?.statusCode;
    if (status !== undefined) s.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    if (stoppedBy !== null) s.setAttribute(RUN_ATTRIBUTES.stopped, stoppedBy);
    // Handed back or taken over: whoever holds the run now decides its status. "Not now": queued again.
    const runStatus = stoppedBy === 'cancelled' ? 'cancelled' : stoppedBy === 'not_now' ? 'queued' : stoppedBy === null ? outcome.status : null;
    if (runStatus !== null) s.setAttribute(RUN_ATTRIBUTES.status, runStatus);
    if (stoppedBy !== null || outcome.status !== 'succeeded') {
      // The HTTP conventions' error.type: the status code when there was one, else why it failed.
      const type = status !== undefined && status >= 400 ? String(status) : stoppedBy === null || stoppedBy === 'not_now' ? outcome.error?.code : stoppedBy;
      s.setAttribute(ATTR_ERROR_TYPE, type ?? '_OTHER');
      s.setStatus({ code: SpanStatusCode.ERROR });
    }
    s.end();
  }
}

class OtelWebhookSpan implements WebhookSpan {
  constructor(
    private readonly span: Span,
    readonly headers: ReadonlyArray<[string, string]>,
  ) {}

  end(attempt: { statusCode: number | null; error: string | null; outcome: string }): void {
    const s = this.span;
    if (attempt.statusCode !== null) s.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, attempt.statusCode);
    s.setAttribute(RUN_ATTRIBUTES.webhookOutcome, attempt.outcome);
    const failed = attempt.error !== null || (attempt.statusCode !== null && attempt.statusCode >= 400);
    if (failed) {
      s.setAttribute(ATTR_ERROR_TYPE, attempt.error ?? String(attempt.statusCode));
      s.setStatus({ code: SpanStatusCode.ERROR });
    }
    s.end();
  }
}
