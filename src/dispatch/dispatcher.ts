import { Agent } from 'undici';
import { RedisErrorReporter, type Logger, type Metrics } from '../telemetry';
import type { ClaimedRun, DispatchOutcome, RunEvents, RunStore } from '../runs';
import { NO_TRACING, type Tracing } from '../tracing';
import { ClaimLoop, PeriodicTask } from '../work';
import { DISPATCH_AGENT_OPTIONS } from './agent';
import { backoffDelay, DEFAULT_BACKPRESSURE, type BackpressurePolicy } from './backpressure';
import { LostClaims } from './claims';
import { handBackRuns, housekeepingIntervalMs, pruneIndex, recoverOrphans } from './housekeeping';
import { LeaseKeeper, type LeaseLoss } from './lease-keeper';
import { OutcomeRecorder, type Completion, type WebhookHandOff } from './outcome';
import { CallAbort, replay } from './replay';
import { parseDispatchBase, type DispatchBase } from './target';

export interface DispatcherOptions {
  workerId: string;
  /** Base URL the runs are replayed to (Envoy's dispatch listener or the app). */
  dispatchUrl: string;
  concurrency: number;
  maxResultBytes: number;
  leaseTimeoutMs: number;
  /** How often to look at the queues when no 'queued' event arrived (a safety net). */
  pollIntervalMs?: number;
  handOff?: WebhookHandOff;
  /** What a queue allows when the app says "not now" (README "Queues"); default: 10 tries, up to 60 s apart. */
  backpressureFor?: (queue: string) => BackpressurePolicy;
  /** Spans of the queue wait and the replay (src/tracing); NO_TRACING by default. */
  tracing?: Tracing;
}

/** Why this worker stopped a call before it ended: its outcome is then not this worker's to record. */
type AbortReason = 'cancelled' | 'shutdown' | 'lease_lost';

/** A run taken from the queue, with when the call that leased it was sent (the lease counts from then). */
interface LeasedRun {
  run: ClaimedRun;
  leasedAt: number;
}

interface InFlight {
  run: ClaimedRun;
  controller: CallAbort;
  reason: AbortReason | null;
}

/**
 * The queue consumer (docs/CONTRACT.md §3): the claim loop over runs, oldest first up to its
 * concurrency. Each part has one job: LostClaims sends the calls that lease runs, LeaseKeeper
 * keeps their leases alive, `replay` calls the app, OutcomeRecorder records how it ended, and the
 * housekeeping tasks end or re-queue runs whose worker died and prune the listing index.
 */
export class Dispatcher extends ClaimLoop<LeasedRun> {
  private readonly agent: Agent;
  private readonly base: DispatchBase;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly redisErrors: RedisErrorReporter;
  private readonly claims: LostClaims;
  private readonly leases: LeaseKeeper;
  private readonly outcomes: OutcomeRecorder;
  private readonly housekeeping: PeriodicTask[];
  private readonly subscriptions: Array<() => void> = [];
  /** Queues whose last claim found as many runs as it asked for: their completions take the next run along. */
  private readonly backlog = new Set<string>();
  /**
   * Queues whose last claim found nothing to take (empty, or at their limit), since when: skipped
   * until a wake-up names them, a run of theirs ends here, or a poll interval has passed.
   */
  private readonly idle = new Map<string, number>();
  /**
   * Per queue, how often it was woken (see `wake`): a claim that comes back short marks its queue
   * idle only when no wake-up came while it was in flight. Without this, a `queued` event that
   * arrived during a claim that then found the queue empty was lost: the claim's idle mark came
   * after the wake-up's, and the replica sat out the whole backlog until its next poll (a drill
   * with three replicas saw one of them start none of 200 runs).
   */
  private readonly wakes = new Map<string, number>();
  /** Where the next claim starts in the queue list, so that queues take turns. */
  private nextQueue = 0;
  private readonly pollIntervalMs: number;
  private readonly tracing: Tracing;

  constructor(
    private readonly store: RunStore,
    private readonly events: RunEvents,
    private readonly options: DispatcherOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    super({ concurrency: options.concurrency, pollIntervalMs: options.pollIntervalMs ?? 1000, logger });
    this.pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.agent = new Agent(DISPATCH_AGENT_OPTIONS);
    this.base = parseDispatchBase(options.dispatchUrl);
    this.tracing = options.tracing ?? NO_TRACING;
    this.redisErrors = new RedisErrorReporter(logger, metrics);
    const report = (operation: string) => (err: Error) => this.redisErrors.report(operation, err);
    this.claims = new LostClaims(store, {
      workerId: options.workerId,
      held: () => this.inFlight.keys(),
      stopping: () => this.stopping,
      onReleased: (n) => this.logger.warn({ released: n }, 'runs leased by a claim whose reply was lost went back to the queue'),
      onError: report('release_untracked'),
    });
    this.leases = new LeaseKeeper(store, {
      workerId: options.workerId,
      leaseTimeoutMs: options.leaseTimeoutMs,
      onLost: (ids, why) => this.leasesLost(ids, why),
      onError: report('renew_leases'),
    });
    this.outcomes = new OutcomeRecorder(
      {
        leaseTimeoutMs: options.leaseTimeoutMs,
        ...(options.handOff ? { handOff: options.handOff } : {}),
        complete: (run, outcome, handOffWindowMs) => this.complete(run, outcome, handOffWindowMs),
        onError: report('complete_run'),
      },
      metrics,
    );
    const every = housekeepingIntervalMs(options.leaseTimeoutMs);
    this.housekeeping = [
      new PeriodicTask(every, () => recoverOrphans(store, metrics, logger, report('recover_runs')), { immediately: true }),
      new PeriodicTask(every, () => pruneIndex(store, report('prune_index')), { immediately: true }),
      // A put-back that failed is tried again even when no claim comes along to do it.
      new PeriodicTask(every, () => this.claims.releaseUntracked()),
    ];
  }

  override start(): void {
    this.subscriptions.push(this.events.onCancel((id) => this.abortRun(id, 'cancelled')));
    this.subscriptions.push(
      this.events.onQueued((queue) => {
        this.wake(queue);
        this.fill();
      }),
    );
    this.leases.start();
    for (const task of this.housekeeping) task.start();
    super.start();
  }

  /**
   * Stops taking runs; in-flight dispatches get `graceMs` to finish, then are aborted and handed
   * back (re-queued where allowed, else failed as interrupted). Until then they are still this
   * worker's: their leases are renewed (else another replica would recover a run and call the app
   * again alongside) and a cancel still stops the call.
   */
  override async stop(graceMs: number): Promise<void> {
    for (const task of this.housekeeping) task.stop();
    await super.stop(graceMs);
    this.leases.stop();
    for (const u of this.subscriptions.splice(0)) u();
    await this.agent.close();
  }

  /**
   * Claims from the queues in turn, skipping idle ones, until `max` runs are taken or every queue
   * was asked once. One script per queue: each queue's keys live in their own slot.
   */
  protected async claim(max: number): Promise<number> {
    const names = this.store.queueNames();
    const now = Date.now();
    let taken = 0;
    for (let i = 0; i < names.length && taken < max; i++) {
      const queue = names[(this.nextQueue + i) % names.length]!;
      if (this.isIdle(queue, now)) continue;
      const want = max - taken;
      const wakesBefore = this.wakes.get(queue) ?? 0;
      const runs = await this.claims.lease(
        () => this.store.claim(this.options.workerId, want, queue),
        (runs) => runs,
        (run, leasedAt) => this.begin({ run, leasedAt }),
      );
      taken += runs.length;
      if (runs.length === want) {
        this.backlog.add(queue);
        this.idle.delete(queue);
      } else {
        this.backlog.delete(queue);
        if ((this.wakes.get(queue) ?? 0) === wakesBefore) this.idle.set(queue, now);
      }
    }
    this.nextQueue = (this.nextQueue + 1) % Math.max(1, names.length);
    return taken;
  }

  protected claimFailed(err: Error): void {
    this.redisErrors.report('claim_runs', err);
  }

  /** A claim or completion in flight when the stop began handed us a run: it never reached the app, so it goes back to the queue. */
  protected decline({ run }: LeasedRun): void {
    this.release(run, 'run taken while stopping, put back in the queue');
  }

  protected override async handBack(): Promise<void> {
    const remaining = [...this.inFlight.values()];
    for (const f of remaining) this.abortRun(f.run.id, 'shutdown');
    await this.settled();
    await handBackRuns(
      this.store,
      this.options.workerId,
      remaining.map((f) => ({ id: f.run.id, queue: f.run.queue })),
      this.metrics,
      this.logger,
    );
  }

  /**
   * One run: its body if it did not come with the claim, the replay, and the outcome recorded. One
   * async function, suspended for as long as the app works: each one more was about 0.4 KiB per run
   * in flight (docs/BENCHMARKS.md).
   */
  protected async handle({ run, leasedAt }: LeasedRun): Promise<void> {
    const entry: InFlight = { run, controller: new CallAbort(), reason: null };
    this.inFlight.set(run.id, entry);
    this.leases.track(run.id, run.attempt, run.queue, leasedAt);
    this.metrics.dispatchesInFlight.inc();
    this.metrics.queueWait.observe(Math.max(0, run.startedAt - run.queuedAt) / 1000);
    // The path only: a query string may carry credentials.
    if (this.logger.isLevelEnabled('info'))
      this.runLog(run).info({ attempt: run.attempt, method: run.method, path: run.target.split('?', 1)[0] }, 'run started');
    // Its `started` event is due (the claim scheduled it): sent before the app answers, where it can be.
    if (run.startedEvent) this.options.handOff?.wake?.();
    try {
      let body = run.body;
      if (body === null) {
        // Too large to come with the claim: read on its own. If that fails the run never started,
        // so it goes back to the queue rather than waiting for its lease to end it interrupted.
        try {
          body = await this.store.readBody(run.id);
        } catch (err) {
          this.redisErrors.report('read_body', err as Error);
          return this.release(run, 'run body could not be read; put back in the queue');
        }
        if (body === null) return; // cancelled and expired meanwhile
      }
      // Tracing: the queue wait, and the replay's CLIENT span (null when tracing is off).
      const span = this.tracing.startReplay(run, this.base.origin + this.base.basePath);
      const { outcome, cause } = await replay({
        run,
        body,
        base: this.base,
        dispatcher: this.agent,
        controller: entry.controller,
        maxResultBytes: this.options.maxResultBytes,
        span,
      });
      // Cancelled, handed back, or no longer ours: whoever holds the run now records it.
      if (entry.reason) return span?.end(outcome, entry.reason);
      if (cause) this.runLog(run).warn({ err: cause }, 'upstream call failed');
      const sentBack = outcome.notNow ? await this.backOff(run, outcome) : false;
      span?.end(outcome, sentBack ? 'not_now' : null);
      if (!sentBack) await this.outcomes.record(run, outcome, this.runLog(run));
    } finally {
      this.inFlight.delete(run.id);
      this.leases.untrack(run.id);
      this.metrics.dispatchesInFlight.dec();
      // A slot of this run's queue is free here (the queue may have been at its limit).
      this.wake(run.queue);
    }
  }

  /**
   * The app said "not now" (429, 503, connection refused): unless the run has used up its queue's
   * tries, it goes back to the queue and waits (Retry-After when the app sent one, else exponential
   * backoff with jitter). True when it went back (or is no longer ours); false: record the outcome.
   */
  private async backOff(run: ClaimedRun, outcome: DispatchOutcome): Promise<boolean> {
    const policy = this.options.backpressureFor?.(run.queue) ?? DEFAULT_BACKPRESSURE;
    if (run.backpressureTries >= policy.maxBackpressureRetries) return false;
    const notNow = outcome.notNow!;
    const delayMs = backoffDelay(run.backpressureTries, notNow.retryAfterMs, policy.backpressureMaxDelayMs);
    const record = {
      at: new Date().toISOString(),
      attempt: run.attempt,
      status_code: outcome.response?.statusCode ?? null,
      error: outcome.response ? null : 'connection_refused',
      retry_in_ms: delayMs,
    };
    try {
      if (!(await this.store.defer(this.options.workerId, run, delayMs, notNow.reason, record))) return true; // whoever holds it now decides
    } catch (err) {
      this.redisErrors.report('defer_run', err as Error);
      return false; // recorded as it is, with the usual retries until Redis answers
    }
    this.metrics.backpressureRetries.inc({ queue: run.queue, reason: notNow.reason });
    this.runLog(run).info({ reason: notNow.reason, status_code: record.status_code, retry_in_ms: delayMs }, 'app said not now; run back in its queue');
    // Claim again when it is due, rather than at the next poll.
    setTimeout(() => {
      this.wake(run.queue);
      this.fill();
    }, delayMs + 5).unref();
    return true;
  }

  /**
   * A logger whose every line carries the run's id (and trace), made when a line is written: kept
   * per run in flight, a pino child was about 0.3 KiB of heap per run (docs/BENCHMARKS.md).
   */
  private runLog(run: ClaimedRun): Logger {
    return this.logger.child({ run_id: run.id, ...this.tracing.logFields(run.trace) });
  }

  /** Writes the outcome; with a backlog, the slot this run frees is refilled in the same script (one claim less). */
  private async complete(run: ClaimedRun, outcome: DispatchOutcome, handOffWindowMs: number): Promise<Completion> {
    // Only while no other queue may have work: else this queue would keep every slot it frees
    // and the others would wait for a slot that never comes back to the claim loop.
    const claimNext = this.backlog.has(run.queue) && !this.stopping && !this.othersMayHaveWork(run.queue) ? 1 : 0;
    const complete = () => this.store.complete(this.options.workerId, run, outcome, { handOffWindowMs, claimNext });
    if (claimNext === 0) return complete();
    const done = await this.claims.lease(
      complete,
      (d) => d.next,
      (next, leasedAt) => this.begin({ run: next, leasedAt }),
    );
    if (done.next.length < claimNext) this.backlog.delete(run.queue);
    return done;
  }

  /** `queue` (null: every queue) is worth asking again now: its idle mark goes, and a claim of it in flight sets none. */
  private wake(queue: string | null): void {
    for (const q of queue === null ? this.store.queueNames() : [queue]) {
      this.idle.delete(q);
      this.wakes.set(q, (this.wakes.get(q) ?? 0) + 1);
    }
  }

  /** Whether a queue other than `queue` was not found idle within the last poll interval. */
  private othersMayHaveWork(queue: string): boolean {
    const now = Date.now();
    return this.store.queueNames().some((q) => q !== queue && !this.isIdle(q, now));
  }

  /** A queue found with nothing to take within the last poll interval (after that it is asked again). */
  private isIdle(queue: string, now: number): boolean {
    const idleSince = this.idle.get(queue);
    return idleSince !== undefined && now - idleSince < this.pollIntervalMs;
  }

  private release(run: ClaimedRun, why: string): void {
    this.store.release(this.options.workerId, [run.id], run.queue).then(
      () => this.logger.info({ run_id: run.id }, why),
      (err: Error) => this.redisErrors.report('release_runs', err),
    );
  }

  private leasesLost(ids: string[], why: LeaseLoss): void {
    for (const id of ids) {
      this.metrics.leasesLost.inc({ why });
      this.logger.warn(
        { run_id: id, why },
        why === 'taken'
          ? "lease lost: the run is no longer this worker's; call aborted"
          : 'lease not renewed for a lease timeout (Redis unreachable); call aborted, recovery decides the run',
      );
      this.abortRun(id, 'lease_lost');
    }
  }

  private abortRun(id: string, reason: AbortReason): void {
    const f = this.inFlight.get(id);
    if (!f || f.reason) return;
    f.reason = reason;
    f.controller.abort();
  }
}
