/** The states of a run. queued and running are live; the rest are final. */
/** Every status a run can have, in lifecycle order: the type and the runs API's filter both come from it. */
export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'expired'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export type FinalStatus = Exclude<RunStatus, 'queued' | 'running'>;
export type WebhookStatus = 'none' | 'pending' | 'delivered' | 'failed';
/**
 * The `started` event's delivery (webhookEvents=started): waiting for the app call to begin,
 * pending, delivered, failed, or skipped (the run ended before its app call began, or before the
 * event's first attempt when it was cancelled).
 */
export type StartedEventStatus = 'waiting' | 'pending' | 'delivered' | 'failed' | 'skipped';
/** What a webhook reports: the app call began (`started`, on request) or the run ended (`completed`). */
export type WebhookEvent = 'started' | 'completed';
export type Trigger = 'query' | 'prefer';

export const FINAL_STATUSES: ReadonlySet<RunStatus> = new Set(['succeeded', 'failed', 'timed_out', 'cancelled', 'expired']);

export function isFinal(status: RunStatus): status is FinalStatus {
  return FINAL_STATUSES.has(status);
}

/** What the accept path writes: the request to replay and how to report on it. */
export interface NewRun {
  id: string;
  trigger: Trigger;
  method: string;
  /** Path without the query, as shown by the runs API. */
  path: string;
  /** Path and query to replay (async and webhookEndpoint removed). */
  target: string;
  /** Headers to replay, in order, as [name, value] pairs. */
  headers: Array<[string, string]>;
  body: Buffer;
  /** Envoy's x-request-id of the original request, for correlation. */
  requestId: string | null;
  /** SHA-256 hex of the owner header's value, '' when the request had none. */
  owner: string;
  webhookUrl: string | null;
  gracePeriodMs: number;
  /** The queue it waits in (README "Queues"); default `default`. */
  queue?: string;
  /** The accept span's trace context (src/tracing `encodeRunTrace`); absent while tracing is off. */
  trace?: string;
  /** 0 high, 1 normal (the default), 2 low. */
  priority?: number;
  /** Also send the `started` event (webhookEvents=started). */
  webhookStarted?: boolean;
  /** The X-Webhook-Secret for Cerebrium-compatible signatures, sealed (src/webhooks/secret-box.ts). */
  webhookSecret?: string;
  /** The request's Idempotency-Key and the fingerprint of the request it stands for (README "Idempotency-Key"). */
  idempotency?: { key: string; fingerprint: string };
}

/**
 * What the store needs to know of a queue (the queue's settings in src/config satisfy it).
 * null: no limit.
 */
export interface QueuePolicy {
  name: string;
  maxConcurrency: number | null;
  maxQueueTimeMs: number | null;
  fairShare: boolean;
}

/** A run a worker has taken from the queue. */
export interface ClaimedRun {
  id: string;
  attempt: number;
  startedAt: number;
  queuedAt: number;
  method: string;
  target: string;
  headers: Array<[string, string]>;
  /** null: too large to come with the claim; read it with RunStore.readBody before the replay. */
  body: Buffer | null;
  gracePeriodMs: number;
  queue: string;
  /** Times the app already said "not now" to this run (each sent it back to the queue). */
  backpressureTries: number;
  /** The accept span's trace context, null when the run has none. */
  trace: string | null;
  /** A `started` event is due for this run (the claim scheduled it, or it waits for a retry). */
  startedEvent: boolean;
}

/** How a dispatch ended, as the worker reports it. */
export interface DispatchOutcome {
  status: 'succeeded' | 'failed' | 'timed_out';
  response: {
    statusCode: number;
    contentType: string | null;
    headers: Array<[string, string]>;
    body: Buffer;
    size: number;
    truncated: boolean;
  } | null;
  error: { code: DispatchErrorCode; message: string } | null;
  /**
   * The app said "not now" (429, 503 or a refused connection): the worker may send the run back
   * to its queue instead of recording this outcome. Never stored.
   */
  notNow?: { reason: 'upstream_busy' | 'upstream_unavailable'; retryAfterMs: number | null };
}

/** Why a dispatch ended without success (a run's `error.code`), set by the worker or by recovery. */
export const DISPATCH_ERRORS = [
  'upstream_status',
  'upstream_unreachable',
  'grace_period_exceeded',
  'invalid_target',
  'interrupted',
  'queue_time_exceeded',
] as const;
export type DispatchErrorCode = (typeof DISPATCH_ERRORS)[number];

/**
 * Why a webhook attempt got no status: the first seven are retried, the last four end the
 * delivery (FINAL_ERRORS in src/webhooks/retry.ts). `secret_unreadable`: the run's X-Webhook-Secret
 * could not be decrypted with any WEBHOOK_SECRET_ENCRYPTION_KEY, so nothing was sent.
 */
export const ATTEMPT_ERRORS = [
  'timeout',
  'connection_refused',
  'connection_reset',
  'host_unreachable',
  'tls_error',
  'dns_failure',
  'connection_error',
  'blocked_address',
  'invalid_url',
  'invalid_request',
  'secret_unreadable',
] as const;
export type AttemptErrorCode = (typeof ATTEMPT_ERRORS)[number];

export interface WebhookAttemptRecord {
  at: string;
  status_code: number | null;
  error: AttemptErrorCode | null;
  duration_ms: number;
  outcome: 'delivered' | 'retry' | 'failed';
}

/** A try the app turned away with "not now" (429, 503, connection refused); the run went back to the queue. */
export interface DispatchAttemptRecord {
  at: string;
  attempt: number;
  status_code: number | null;
  error: string | null;
  retry_in_ms: number;
}

/** The run as the runs API shows it (docs/CONTRACT.md §5). */
export interface RunView {
  run_id: string;
  status: RunStatus;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  request: { method: string; path: string; request_id: string | null };
  response: { status_code: number; content_type: string | null; size: number; truncated: boolean } | null;
  error: { code: string; message: string } | null;
  dispatch_attempts: number;
  /** The queue it ran or waits in. */
  queue: string;
  priority: 'high' | 'normal' | 'low';
  /** While queued and in line: runs that will be taken before it (0 = next); else null. */
  queue_position: number | null;
  /** Why a queued run waits, when it is not its first time in line ('upstream_busy', 'upstream_unavailable'). */
  queue_reason: string | null;
  /** A run backing off: when it goes back in line. */
  next_attempt_at: string | null;
  /** Tries the app turned away ("not now"), the latest 20. */
  dispatch_history: DispatchAttemptRecord[];
  /** How the run ended before each retry (POST /v1/runs/{id}/retry), oldest first, the latest 20. */
  previous_outcomes: PreviousOutcome[];
  webhook: {
    status: WebhookStatus;
    attempts: number;
    last_status_code: number | null;
    next_attempt_at: string | null;
    history: WebhookAttemptRecord[];
    /** The `started` event's delivery; null when the run did not ask for it. */
    started: {
      status: StartedEventStatus;
      attempts: number;
      last_status_code: number | null;
      next_attempt_at: string | null;
      history: WebhookAttemptRecord[];
    } | null;
  };
}

/** How a run ended before it was retried. */
export interface PreviousOutcome {
  status: RunStatus;
  error: string | null;
  /** The upstream's status, when it answered. */
  status_code: number | null;
  started_at: string | null;
  finished_at: string | null;
  /** Dispatch attempts the run had by then, in all. */
  dispatch_attempts: number;
  retried_at: string;
}

/** A run's view plus what only the store needs to know to serve it. */
export interface StoredRun {
  view: RunView;
  owner: string;
}

export interface StoredResult {
  status: RunStatus;
  statusCode: number;
  contentType: string | null;
  headers: Array<[string, string]>;
  /** null: larger than the caller could take (getResult's maxBodyBytes), left unread. */
  body: Buffer | null;
  /** Bytes of the stored body. */
  size: number;
  /** The body was over MAX_RESULT_BYTES: only its first bytes were kept. */
  truncated: boolean;
}

/** A due webhook delivery taken by a worker. */
export interface ClaimedDelivery {
  runId: string;
  /** `started`: the app call began (its body is built from `startedAt`); `completed`: the run ended. */
  event: WebhookEvent;
  url: string;
  webhookId: string;
  runStatus: RunStatus;
  error: string | null;
  upstreamStatus: number | null;
  contentType: string | null;
  body: Buffer | null;
  /** The body was too large to come with the claim: read it with RunStore.readResultBody first. */
  bodyPending?: boolean;
  /** Attempts already made in this delivery. */
  tries: number;
  /** The run's queue and trace context (its accept span's; null when it has none), for its spans. */
  queue: string;
  trace: string | null;
  /** When the run's app call first began (ms): the `started` event's body. */
  startedAt: number | null;
  /**
   * `started`: the webhook-timestamp to sign with (Unix seconds, set when it was taken);
   * `completed`: the earliest one, a second after the `started` event's, so that the final webhook
   * is always the later. null: none.
   */
  timestampS: number | null;
  /** The run's sealed X-Webhook-Secret (Cerebrium-compatible signatures), or null. */
  sealedSecret: string | null;
}
