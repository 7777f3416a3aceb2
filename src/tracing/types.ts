import type { HttpReply, RequestHead } from '../extproc';
import type { ClaimedDelivery, ClaimedRun, DispatchOutcome } from '../runs';

/** Reads one gRPC metadata value of an ext_proc stream. */
export type StreamMetadata = (name: string) => string | undefined;

/** Log fields that tie a log line to its trace. */
export interface TraceLogFields {
  trace_id: string;
  span_id?: string;
}

/**
 * What the sidecar sees of tracing (README "Tracing"). When tracing is off this is NO_TRACING:
 * every method returns null at once, so the accept path makes no span object and no context.
 */
export interface Tracing {
  readonly enabled: boolean;
  /** The SERVER span of one async request, child of the trace context Envoy handed over. */
  startAccept(head: RequestHead, metadata?: StreamMetadata): AcceptSpan | null;
  /**
   * A worker took `run`: records its wait in the queue (queued_at to the claim, both Redis
   * time) and starts the CLIENT span of its replay to `dispatchBase`.
   */
  startReplay(run: ClaimedRun, dispatchBase: string): ReplaySpan | null;
  /** The CLIENT span of one webhook attempt. */
  startWebhook(delivery: ClaimedDelivery): WebhookSpan | null;
  /** `trace_id` of a run's stored trace context, for its log lines; undefined when off or none. */
  logFields(trace: string | null | undefined): TraceLogFields | undefined;
  /** Sends the spans still buffered. */
  shutdown(): Promise<void>;
}

export interface AcceptSpan {
  /** The accept span's context as the run keeps it (its `trace` field; see `encodeRunTrace`). */
  readonly runTrace: string;
  readonly logFields: TraceLogFields;
  /** The run is written: its id (and queue) become attributes. */
  runCreated(run: { id: string }): void;
  /** Ends the span with the answer the client gets; returns that answer. */
  end(reply: HttpReply): HttpReply;
}

/** A span whose request continues the trace in the next hop. */
export interface OutgoingSpan {
  /** `traceparent` (and `tracestate`) naming this span, for the outgoing request. */
  readonly headers: ReadonlyArray<[string, string]>;
}

export interface ReplaySpan extends OutgoingSpan {
  /**
   * `stoppedBy`: why this worker does not record the outcome: the call was aborted (cancelled,
   * shutdown, lease_lost) or the app said "not now" and the run went back to its queue (not_now);
   * null when the outcome is recorded.
   */
  end(outcome: DispatchOutcome, stoppedBy: 'cancelled' | 'shutdown' | 'lease_lost' | 'not_now' | null): void;
}

export interface WebhookSpan extends OutgoingSpan {
  end(attempt: { statusCode: number | null; error: string | null; outcome: string }): void;
}
