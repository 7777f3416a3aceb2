import { RedisErrorReporter, type Logger, type Metrics } from '../telemetry';
import type { ClaimedDelivery, RunStore } from '../runs';
import { buildWebhookBody } from './body';
import { nextAttemptDelayMs } from './retry';
import type { WebhookSender } from './sender';

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
}

/**
 * Sends due webhook deliveries (docs/CONTRACT.md §4). Deliveries live in a Redis sorted set scored by when
 * they are due, so any replica takes them and a restart loses none; a taken delivery is hidden
 * from other workers for longer than one attempt can last.
 */
export class DeliveryWorker {
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly active = new Set<Promise<void>>();
  private claiming = false;
  private stopping = false;
  private readonly redisErrors: RedisErrorReporter;

  constructor(
    private readonly store: RunStore,
    private readonly sender: WebhookSender,
    private readonly options: DeliveryWorkerOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    this.redisErrors = new RedisErrorReporter(logger, metrics);
  }

  start(): void {
    // The first attempt of most deliveries is handed over by the dispatcher (deliverNow); the
    // poll takes retries, redeliveries, and deliveries of runs ended by cancel or recovery.
    const poll = setInterval(() => this.fill(), this.options.pollIntervalMs ?? 250);
    poll.unref();
    this.timers.push(poll);
    this.fill();
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.active), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
  }

  /** True when a delivery handed over now would start at once. */
  hasCapacity(): boolean {
    return !this.stopping && this.active.size < this.options.concurrency;
  }

  /** Sends a delivery this worker already holds (handed over by the dispatcher). */
  deliverNow(d: ClaimedDelivery): void {
    this.track(this.deliver(d));
  }

  private track(p: Promise<void>): void {
    const tracked: Promise<void> = p.finally(() => {
      this.active.delete(tracked);
      this.fill();
    });
    this.active.add(tracked);
  }

  /** Takes due deliveries up to the concurrency and sends them. */
  private fill(): void {
    if (this.stopping || this.claiming) return;
    const free = this.options.concurrency - this.active.size;
    if (free <= 0) return;
    this.claiming = true;
    this.store.claimWebhooks(free, this.options.visibilityMs).then(
      (deliveries) => {
        this.claiming = false;
        for (const d of deliveries) this.track(this.deliver(d));
        if (deliveries.length === free) this.fill();
      },
      (err: Error) => {
        this.claiming = false;
        this.redisErrors.report('claim_webhooks', err, {}, 'could not read due webhook deliveries');
      },
    );
  }

  private async deliver(d: ClaimedDelivery): Promise<void> {
    // This delivery's logger: every line carries its run_id and webhook_id.
    const log = this.logger.child({ run_id: d.runId, webhook_id: d.webhookId });
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
    const payload = buildWebhookBody(
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
    const result = await this.sender.send({
      url: d.url,
      webhookId: d.webhookId,
      runId: d.runId,
      runStatus: d.runStatus,
      upstreamStatus: d.upstreamStatus,
      body: payload.body,
      contentType: payload.contentType,
    });
    let outcome = result.outcome;
    let delay: number | null = null;
    if (outcome === 'retry') {
      delay = nextAttemptDelayMs(d.tries + 1, this.options.retryScheduleMs, result.retryAfterMs ?? undefined);
      if (delay === null) outcome = 'failed';
    }
    this.metrics.webhookAttempts.inc({ outcome });
    const record = {
      at: startedAt.toISOString(),
      status_code: result.statusCode,
      error: result.error,
      duration_ms: Math.round(result.durationMs),
      outcome,
    };
    log.info({ attempt: d.tries + 1, outcome, status_code: result.statusCode, error: result.error, retry_in_ms: delay }, 'webhook attempt');
    for (let backoff = 100; ; backoff = Math.min(backoff * 2, 2000)) {
      try {
        await this.store.recordWebhookAttempt(d.runId, record, delay);
        return;
      } catch (err) {
        this.redisErrors.report('record_webhook_attempt', err as Error, { run_id: d.runId }, 'could not record a webhook attempt; retrying');
        // The delivery stays claimed for its visibility window; if we stop, another worker
        // (or this one after restart) sends it again, so a delivery may be repeated, never lost.
        if (this.stopping) return;
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
  }
}
