import type { Logger, Metrics } from '../telemetry';
import type { ClaimedDelivery, ClaimedRun, DispatchOutcome, HandedOffWebhook } from '../runs';
import { retryUntil } from '../work';

/**
 * Where a finished run's webhook goes when the delivery side has room: straight to it, with the
 * body still in memory, instead of through the due-deliveries set (one claim and one wake-up less).
 */
export interface WebhookHandOff {
  /** How long the delivery stays hidden from other workers (longer than one attempt can last). */
  windowMs: number;
  hasCapacity(): boolean;
  deliver(delivery: ClaimedDelivery): void;
  /** Deliveries are due (a run's `started` event): take them now rather than at the next poll. */
  wake?(): void;
}

/** What recording an outcome returned: see RunStore#complete. */
export interface Completion {
  recorded: boolean;
  webhook: HandedOffWebhook | null;
}

export interface OutcomeRecorderOptions {
  leaseTimeoutMs: number;
  handOff?: WebhookHandOff;
  /** Writes the outcome (one script; `handOffWindowMs` > 0 hands the webhook to this worker). */
  complete: (run: ClaimedRun, outcome: DispatchOutcome, handOffWindowMs: number) => Promise<Completion>;
  onError: (err: Error) => void;
}

/**
 * Records how a run ended: retried while Redis is away, until the run's lease is gone (then
 * recovery decides the run); hands its webhook to the delivery side; counts and logs the end.
 */
export class OutcomeRecorder {
  constructor(
    private readonly options: OutcomeRecorderOptions,
    private readonly metrics: Metrics,
  ) {}

  async record(run: ClaimedRun, outcome: DispatchOutcome, log: Logger): Promise<void> {
    const { handOff, leaseTimeoutMs } = this.options;
    const giveUpAt = Date.now() + leaseTimeoutMs;
    const done = await retryUntil(() => this.options.complete(run, outcome, handOff?.hasCapacity() ? handOff.windowMs : 0), {
      onError: this.options.onError,
      giveUp: () => Date.now() > giveUpAt,
    });
    if (!done.ok) {
      log.error('gave up recording a run outcome; its lease expires and recovery ends it');
      return;
    }
    const { recorded, webhook } = done.value;
    if (webhook && handOff) {
      handOff.deliver({
        runId: run.id,
        event: 'completed',
        url: webhook.url,
        webhookId: webhook.webhookId,
        runStatus: outcome.status,
        error: outcome.error?.code ?? null,
        upstreamStatus: outcome.response?.statusCode ?? null,
        contentType: outcome.response?.contentType ?? null,
        body: outcome.response?.body ?? null,
        tries: 0,
        queue: run.queue,
        trace: run.trace,
        startedAt: run.startedAt,
        timestampS: webhook.notBeforeS,
        sealedSecret: webhook.sealedSecret,
      });
    }
    if (recorded) {
      this.metrics.runsFinished.inc({ status: outcome.status });
      this.metrics.runDuration.observe({ status: outcome.status }, (Date.now() - run.startedAt) / 1000);
      log.info({ status: outcome.status, upstream_status: outcome.response?.statusCode ?? null, error: outcome.error?.code ?? null }, 'run finished');
    } else {
      log.info({ status: outcome.status }, 'run outcome dropped: the run was cancelled or taken over');
    }
  }
}
