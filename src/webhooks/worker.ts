import { RedisErrorReporter, type Logger, type Metrics } from '../telemetry';
import { ClaimLoop, retryUntil } from '../work';
import type { ClaimedDelivery, RunStore } from '../runs';
import { NO_TRACING, type Tracing } from '../tracing';
import { buildStartedBody, buildWebhookBody, type WebhookBody } from './body';
import { nextAttemptDelayMs } from './retry';
import type { SecretBox } from './secret-box';
import type { AttemptResult, WebhookSender } from './sender';

export interface DeliveryWorkerOptions {
  /** Delays before each attempt of a delivery (ms); its length is the number of attempts. */
  retryScheduleMs: number[];
  /** Deliveries one process sends at once. */
  concurrency: number;
  maxBodyBytes: number;
  /** Turns a run id into the URL of its result, for bodies too large to send. */
  resultUrl: (runId: string) => string;
  timeoutMs: number;
  /** How long a taken delivery stays hidden from other workers: longer than one attempt. */
  visibilityMs: number;
  pollIntervalMs?: number;
  /** A span per attempt (src/tracing); NO_TRACING by default. */
  tracing?: Tracing;
  /** Opens the runs' sealed X-Webhook-Secret values (Cerebrium-compatible signatures). */
  secrets?: SecretBox;
}

/**
 * Sends due webhook deliveries (docs/CONTRACT.md §4): the claim loop over deliveries. Deliveries
 * live in a Redis sorted set scored by when they are due, so any replica takes them and a restart
 * loses none; a taken delivery is hidden from other workers for longer than one attempt can last.
 */
export class DeliveryWorker extends ClaimLoop<ClaimedDelivery> {
  private readonly redisErrors: RedisErrorReporter;

  constructor(
    private readonly store: RunStore,
    private readonly sender: WebhookSender,
    private readonly options: DeliveryWorkerOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    // The first attempt of most deliveries is handed over by the dispatcher (deliverNow); the
    // poll takes retries, redeliveries, and deliveries of runs ended by cancel or recovery.
    super({ concurrency: options.concurrency, pollIntervalMs: options.pollIntervalMs ?? 250, logger });
    this.redisErrors = new RedisErrorReporter(logger, metrics);
  }

  /** True when a delivery handed over now would start at once. */
  hasCapacity(): boolean {
    return this.hasRoom;
  }

  /** Sends a delivery this worker already holds (handed over by the dispatcher). */
  deliverNow(d: ClaimedDelivery): void {
    this.begin(d);
  }

  /** Deliveries became due (a run's `started` event): claim now instead of at the next poll. */
  wake(): void {
    this.fill();
  }

  /** Takes due deliveries, hidden from other workers for the visibility window. */
  protected async claim(max: number): Promise<number> {
    const deliveries = await this.store.claimWebhooks(max, this.options.visibilityMs);
    for (const d of deliveries) this.begin(d);
    return deliveries.length;
  }

  protected claimFailed(err: Error): void {
    this.redisErrors.report('claim_webhooks', err, {}, 'could not read due webhook deliveries');
  }

  /** Taken by a claim that was in flight when the stop began: it stays claimed and is sent again after its visibility window. */
  protected decline(): void {}

  /** One attempt of a delivery: its body if it did not come with the claim, the signed POST, the attempt recorded. */
  protected async handle(d: ClaimedDelivery): Promise<void> {
    // This delivery's logger: every line carries its run_id and webhook_id.
    const tracing = this.options.tracing ?? NO_TRACING;
    const log = this.logger.child({ run_id: d.runId, webhook_id: d.webhookId, event: d.event, ...tracing.logFields(d.trace) });
    if (d.bodyPending) {
      // Left out of the claim for its size. If it cannot be read now, the delivery stays claimed
      // until its visibility window ends and is taken again then: repeated, never lost.
      try {
        d = { ...d, body: (await this.store.readResultBody(d.runId)) ?? Buffer.alloc(0), bodyPending: false };
      } catch (err) {
        this.redisErrors.report(
          'read_result_body',
          err as Error,
          { run_id: d.runId },
          'could not read a webhook body; the delivery is retried after its visibility window',
        );
        return;
      }
    }
    const payload: WebhookBody =
      d.event === 'started'
        ? buildStartedBody(d.runId, d.startedAt ?? Date.now())
        : buildWebhookBody(
            {
              runId: d.runId,
              status: d.runStatus,
              error: d.error,
              upstream: d.upstreamStatus === null ? null : { statusCode: d.upstreamStatus, contentType: d.contentType, body: d.body ?? Buffer.alloc(0) },
            },
            this.options.maxBodyBytes,
            this.options.resultUrl(d.runId),
          );
    const startedAt = new Date();
    let cerebriumSecret: Buffer | null = null;
    if (d.sealedSecret !== null) cerebriumSecret = this.options.secrets?.open(d.sealedSecret, d.runId) ?? null;
    // Tracing: a CLIENT span per attempt, whose traceparent the POST carries (null when off).
    const span = tracing.startWebhook(d);
    let result: AttemptResult;
    if (d.sealedSecret !== null && cerebriumSecret === null) {
      // Sent without it, the receiver could not verify the webhook: nothing is sent, and the
      // delivery ends (the key that sealed it is no longer configured).
      log.error("the run's X-Webhook-Secret cannot be decrypted with any WEBHOOK_SECRET_ENCRYPTION_KEY; webhook not sent");
      result = { outcome: 'failed', statusCode: null, error: 'secret_unreadable', durationMs: 0, retryAfterMs: null };
    } else {
      result = await this.sender.send({
        url: d.url,
        webhookId: d.webhookId,
        runId: d.runId,
        runStatus: d.runStatus,
        upstreamStatus: d.upstreamStatus,
        body: payload.body,
        contentType: payload.contentType,
        event: d.event,
        ...(d.event === 'started' ? { timestampS: d.timestampS } : { notBeforeS: d.timestampS }),
        cerebriumSecret,
        traceHeaders: span?.headers,
      });
    }
    let outcome = result.outcome;
    let delay: number | null = null;
    if (outcome === 'retry') {
      delay = nextAttemptDelayMs(d.tries + 1, this.options.retryScheduleMs, result.retryAfterMs ?? undefined);
      if (delay === null) outcome = 'failed';
    }
    span?.end({ statusCode: result.statusCode, error: result.error, outcome });
    this.metrics.webhookAttempts.inc({ outcome });
    const record = {
      at: startedAt.toISOString(),
      status_code: result.statusCode,
      error: result.error,
      duration_ms: Math.round(result.durationMs),
      outcome,
    };
    log.info({ attempt: d.tries + 1, outcome, status_code: result.statusCode, error: result.error, retry_in_ms: delay }, 'webhook attempt');
    await retryUntil(() => this.store.recordWebhookAttempt(d.runId, record, delay, d.event), {
      onError: (err) => this.redisErrors.report('record_webhook_attempt', err, { run_id: d.runId }, 'could not record a webhook attempt; retrying'),
      // The delivery stays claimed for its visibility window; if we stop, another worker
      // (or this one after restart) sends it again, so a delivery may be repeated, never lost.
      giveUp: () => this.stopping,
    });
  }
}
