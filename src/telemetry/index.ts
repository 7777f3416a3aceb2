import pino, { type Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type { Logger } from 'pino';

/** JSON-lines logger. Bodies and secrets are never logged; headers that could carry them are redacted. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'envoy-async-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['headers.authorization', 'headers.cookie', 'headers["x-webhook-secret"]', 'adminToken', 'webhook.secrets', 'webhook.secretEncryptionKeys'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 43200];

/** Every metric the sidecar exports, in one registry (no global state: tests build their own). */
export class Metrics {
  readonly registry = new Registry();
  readonly runsAccepted = new Counter({
    name: 'eas_runs_accepted_total',
    help: 'Runs accepted with a 202, by trigger (query or prefer).',
    labelNames: ['trigger'] as const,
    registers: [this.registry],
  });
  readonly runsRejected = new Counter({
    name: 'eas_runs_rejected_total',
    help: 'Async requests refused, by error code.',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  readonly syncWaits = new Counter({
    name: 'eas_sync_waits_total',
    help: "Async requests held for their result (Prefer: wait), by answer: result (the app's response) or why the 202 came instead (timeout, no_response, too_large, truncated, shutdown, store_error).",
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly runsReplayed = new Counter({
    name: 'eas_runs_replayed_total',
    help: 'Async requests answered with the run their Idempotency-Key had already created (no new run).',
    registers: [this.registry],
  });
  readonly runsRetried = new Counter({
    name: 'eas_runs_retried_total',
    help: 'Finished runs queued again by POST /v1/runs/{id}/retry.',
    registers: [this.registry],
  });
  readonly runsFinished = new Counter({
    name: 'eas_runs_finished_total',
    help: 'Runs that reached a final state, by status.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  readonly runDuration = new Histogram({
    name: 'eas_run_duration_seconds',
    help: 'Time from dispatch start to the final state, by status.',
    labelNames: ['status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: 'eas_run_queue_wait_seconds',
    help: 'Time a run waited in the queue before a worker took it.',
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly dispatchesInFlight = new Gauge({
    name: 'eas_dispatches_in_flight',
    help: 'Upstream calls this process is waiting on.',
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'eas_queue_depth',
    help: 'Runs queued (waiting or backing off), by queue, across every replica (read from Redis at scrape time).',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly queueDelayed = new Gauge({
    name: 'eas_queue_backing_off',
    help: 'Queued runs backing off after the app said "not now", by queue (read at scrape time).',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly queueInFlight = new Gauge({
    name: 'eas_queue_in_flight',
    help: 'Runs at the app, by queue, across every replica (read at scrape time).',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly queueLimit = new Gauge({
    name: 'eas_queue_limit',
    help: "The queue's max_concurrency (absent: no limit).",
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly queueOldestAge = new Gauge({
    name: 'eas_queue_oldest_age_seconds',
    help: 'Age of the oldest queued run, by queue (0 when none is queued; read at scrape time).',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly backpressureRetries = new Counter({
    name: 'eas_backpressure_retries_total',
    help: 'Runs sent back to their queue because the app said "not now", by queue and reason (upstream_busy, upstream_unavailable).',
    labelNames: ['queue', 'reason'] as const,
    registers: [this.registry],
  });
  readonly runsExpired = new Counter({
    name: 'eas_runs_expired_total',
    help: "Runs that waited longer than their queue's max_queue_time, by queue (counted by the replica that ended them).",
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly webhookAttempts = new Counter({
    name: 'eas_webhook_attempts_total',
    help: 'Webhook delivery attempts, by outcome (delivered, retry, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly extprocStreamDuration = new Histogram({
    name: 'eas_extproc_stream_duration_seconds',
    help: 'ext_proc stream lifetime until the sidecar answered, by decision.',
    labelNames: ['decision'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 60],
    registers: [this.registry],
  });
  readonly extprocStreamErrors = new Counter({
    name: 'eas_extproc_stream_errors_total',
    help: 'ext_proc streams ended with a protocol error, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly leasesLost = new Counter({
    name: 'eas_leases_lost_total',
    help: 'Runs whose lease this worker lost while calling the app (the call was aborted), by why (taken, expired).',
    labelNames: ['why'] as const,
    registers: [this.registry],
  });
  readonly redisNodeUp = new Gauge({
    name: 'eas_redis_node_up',
    help: 'Redis nodes of the store and whether this process reaches them (1) or not (0), by node (host:port) and role (primary, replica, sentinel, seed), read at scrape time.',
    labelNames: ['node', 'role'] as const,
    registers: [this.registry],
  });
  readonly redisErrors = new Counter({
    name: 'eas_redis_errors_total',
    help: 'Redis commands that failed, by operation.',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}

/**
 * Counts every failed Redis call and logs at most one line per interval, so that an outage is
 * visible without flooding the logs with one line per run.
 */
export class RedisErrorReporter {
  private lastLog = 0;

  constructor(
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    private readonly intervalMs = 5000,
  ) {}

  report(operation: string, err: Error, fields: Record<string, unknown> = {}, message = 'Redis call failed'): void {
    this.metrics.redisErrors.inc({ operation });
    if (Date.now() - this.lastLog <= this.intervalMs) return;
    this.lastLog = Date.now();
    this.logger.error({ operation, err, ...fields }, message);
  }
}
