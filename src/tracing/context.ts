/** Pure helpers shared by the tracing code and its hook points; no OpenTelemetry code. */
import type { OutgoingSpan } from './types';

/** The queue a run is in until runs carry a `queue` of their own. */
export const DEFAULT_QUEUE = 'default';

/**
 * A trace context as one run field: the W3C `traceparent`, then the `tracestate` on a second line
 * when there is one (a tracestate may hold spaces and commas, never a line break).
 */
export function encodeRunTrace(carrier: { traceparent?: string; tracestate?: string }): string {
  const parent = carrier.traceparent ?? '';
  return carrier.tracestate ? `${parent}\n${carrier.tracestate}` : parent;
}

export function decodeRunTrace(trace: string): { traceparent: string; tracestate?: string } {
  const nl = trace.indexOf('\n');
  return nl < 0 ? { traceparent: trace } : { traceparent: trace.slice(0, nl), tracestate: trace.slice(nl + 1) };
}

/** The trace id of a stored trace context (traceparent `00-<trace id>-<span id>-<flags>`). */
export function traceIdOf(trace: string): string | undefined {
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-/.exec(trace);
  return m?.[1];
}

/**
 * The headers of a request that continues `span`'s trace: `traceparent` and `tracestate` name the
 * span (any the client sent are replaced). Without a span, the headers as they are.
 */
export function withTraceHeaders(headers: Array<[string, string]>, span: OutgoingSpan | null): Array<[string, string]> {
  if (span === null) return headers;
  const out = headers.filter(([k]) => k !== 'traceparent' && k !== 'tracestate');
  out.push(...span.headers);
  return out;
}

/** The run's queue: its `queue` field where it has one. */
export function queueOf(run: object): string {
  const q = (run as { queue?: unknown }).queue;
  return typeof q === 'string' && q !== '' ? q : DEFAULT_QUEUE;
}

/**
 * A URL for `url.full` with every query value replaced by `REDACTED` (a query can carry a token,
 * as webhook URLs often do): the OpenTelemetry HTTP conventions' rule for sensitive values,
 * https://opentelemetry.io/docs/specs/semconv/registry/attributes/url/#url-full
 */
export function redactedUrl(url: URL): string {
  const base = `${url.origin}${url.pathname}`;
  if (url.search === '') return base;
  const params = url.search
    .slice(1)
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? p : `${p.slice(0, eq)}=REDACTED`;
    });
  return `${base}?${params.join('&')}`;
}
