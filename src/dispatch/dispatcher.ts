import { Agent, request } from 'undici';
import { RedisErrorReporter, type Logger, type Metrics } from '../telemetry';
import { mayHaveRun, type ClaimedDelivery, type ClaimedRun, type DispatchOutcome, type RunEvents, type RunStore } from '../runs';
import { LeaseKeeper } from './lease-keeper';
import { dispatchTarget, parseDispatchBase, TargetOutsideOrigin, type DispatchBase } from './target';

/**
 * Where a finished run's webhook goes when the delivery side has room: straight to it, with the
 * body still in memory, instead of through the due-deliveries set (one claim and one wake-up less).
 */
export interface WebhookHandOff {
  /** How long the delivery stays hidden from other workers (longer than one attempt can last). */
  windowMs: number;
  hasCapacity(): boolean;
  deliver(delivery: ClaimedDelivery): void;
}

export interface DispatcherOptions {
  workerId: string;
  /** Base URL the runs are replayed to (Envoy's dispatch listener or the app). */
  dispatchUrl: string;
  concurrency: number;
  maxResultBytes: number;
  leaseTimeoutMs: number;
  /** How often to look at the queue when no 'queued' event arrived (a safety net). */
  pollIntervalMs?: number;
  handOff?: WebhookHandOff;
}

type AbortReason = 'grace' | 'cancelled' | 'shutdown' | 'lease_lost';

interface InFlight {
  run: ClaimedRun;
  /** This run's logger: every line carries its run_id. */
  log: Logger;
  controller: AbortController;
  reason: AbortReason | null;
  done: Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/**
 * The queue consumer (docs/CONTRACT.md §3): takes runs oldest first up to its concurrency, replays each to
 * the dispatch URL with undici, waits up to the run's grace period, records the outcome, keeps
 * the leases of its runs alive, and ends or re-queues runs whose worker died.
 */
export class Dispatcher {
  private readonly agent: Agent;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly unsubscribe: Array<() => void> = [];
  private claiming = false;
  private stopping = false;
  private wantFill = false;
  /** The last claim found as many runs as it asked for: completions take the next run along. */
  private backlog = false;
  private readonly redisErrors: RedisErrorReporter;
  private readonly base: DispatchBase;
  private readonly leases: LeaseKeeper;
  /** Claims (and completions taking runs along) sent and not yet answered. */
  private claimsInFlight = 0;
  /** A claim reply was lost to a timeout: some runs may be leased to us unknowingly. */
  private untrackedClaims = false;

  constructor(
    private readonly store: RunStore,
    private readonly events: RunEvents,
    private readonly options: DispatcherOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    // undici's default 300 s header/body timeouts would cut runs short: each request sets its
    // own, equal to the run's grace period.
    this.agent = new Agent({ connections: null, keepAliveTimeout: 10_000, headersTimeout: 0, bodyTimeout: 0 });
    this.redisErrors = new RedisErrorReporter(logger, metrics);
    this.base = parseDispatchBase(options.dispatchUrl);
    this.leases = new LeaseKeeper(store, {
      workerId: options.workerId,
      leaseTimeoutMs: options.leaseTimeoutMs,
      onLost: (ids, why) => {
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
      },
      onError: (err) => this.redisError('renew_leases', err),
    });
  }

  start(): void {
    this.unsubscribe.push(this.events.onQueued(() => this.fill()));
    this.unsubscribe.push(this.events.onCancel((id) => this.abortRun(id, 'cancelled')));
    const lease = this.options.leaseTimeoutMs;
    this.timers.push(setInterval(() => this.fill(), this.options.pollIntervalMs ?? 1000));
    this.leases.start();
    this.timers.push(setInterval(() => void this.recoverOrphans(), Math.min(10_000, Math.max(200, Math.floor(lease / 2)))));
    for (const t of this.timers) t.unref();
    void this.recoverOrphans();
    this.fill();
  }

  /**
   * Stops taking runs; in-flight dispatches get `graceMs` to finish, then are aborted and handed
   * back (re-queued where allowed, else failed as interrupted).
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.leases.stop();
    for (const u of this.unsubscribe) u();
    const all = () => Promise.all([...this.inFlight.values()].map((f) => f.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    const remaining = [...this.inFlight.values()];
    if (remaining.length > 0) {
      for (const f of remaining) this.abortRun(f.run.id, 'shutdown');
      await all();
      try {
        const handed = await this.store.recover(remaining.length, { workerId: this.options.workerId, ids: remaining.map((f) => f.run.id) });
        for (const h of handed) {
          this.logger.warn(
            { run_id: h.id, outcome: h.outcome },
            h.outcome === 'queued' ? 'run handed back to the queue at shutdown' : 'run ended as interrupted at shutdown',
          );
          if (h.outcome === 'failed') this.metrics.runsFinished.inc({ status: 'failed' });
        }
      } catch (err) {
        this.logger.error({ err }, 'could not hand runs back at shutdown; their leases will expire');
      }
    }
    await this.agent.close();
  }

  private release(run: ClaimedRun, why = 'run taken while stopping, put back in the queue'): void {
    this.store.release(this.options.workerId, [run.id]).then(
      () => this.logger.info({ run_id: run.id }, why),
      (err: Error) => this.redisError('release_runs', err),
    );
  }

  private abortRun(id: string, reason: AbortReason): void {
    const f = this.inFlight.get(id);
    if (!f || f.reason) return;
    f.reason = reason;
    f.controller.abort();
  }

  private fill(): void {
    if (this.stopping) return;
    if (this.claiming) {
      this.wantFill = true;
      return;
    }
    const free = this.options.concurrency - this.inFlight.size;
    if (free <= 0) return;
    this.claiming = true;
    this.wantFill = false;
    this.leasing(
      () => this.store.claim(this.options.workerId, free),
      (runs) => runs,
    ).then(
      (runs) => {
        this.claiming = false;
        this.backlog = runs.length === free;
        if (runs.length === free || this.wantFill) this.fill();
      },
      (err: Error) => {
        this.claiming = false;
        this.redisError('claim_runs', err);
      },
    );
  }

  /**
   * Sends a call that may lease runs to this worker (a claim, or a completion taking the next run
   * along) and begins the runs it returns. A call that timed out may still have run in Redis and
   * leased runs we never heard of: once no such call awaits its reply (and the runs that did come
   * back are tracked), every run leased to this worker that it does not hold goes back to the
   * queue (they never started), instead of waiting for the lease to end them interrupted.
   */
  private async leasing<T>(send: () => Promise<T>, runsOf: (reply: T) => readonly ClaimedRun[]): Promise<T> {
    const sentAt = Date.now();
    this.claimsInFlight++;
    try {
      const reply = await send();
      this.claimsInFlight--;
      for (const run of runsOf(reply)) this.begin(run, sentAt);
      return reply;
    } catch (err) {
      this.claimsInFlight--;
      if (mayHaveRun(err)) this.untrackedClaims = true;
      throw err;
    } finally {
      this.releaseUntracked();
    }
  }

  /** `leasedAt`: when the claim that leased the run was sent (local ms). */
  private begin(run: ClaimedRun, leasedAt: number): void {
    // A claim or completion that was in flight when stop() began can still hand us runs: they
    // never reached the upstream, so they go back to the queue for another replica.
    if (this.stopping) return void this.release(run);
    const controller = new AbortController();
    const log = this.logger.child({ run_id: run.id });
    const entry: InFlight = { run, log, controller, reason: null, done: Promise.resolve() };
    this.inFlight.set(run.id, entry);
    this.leases.track(run.id, run.attempt, leasedAt);
    this.metrics.dispatchesInFlight.inc();
    this.metrics.queueWait.observe(Math.max(0, run.startedAt - run.queuedAt) / 1000);
    // The path only: a query string may carry credentials.
    log.info({ attempt: run.attempt, method: run.method, path: run.target.split('?', 1)[0] }, 'run started');
    entry.done = this.execute(entry).finally(() => {
      this.inFlight.delete(run.id);
      this.leases.untrack(run.id);
      this.metrics.dispatchesInFlight.dec();
      this.fill();
    });
  }

  private async execute(entry: InFlight): Promise<void> {
    const { run, controller } = entry;
    let body = run.body;
    if (body === null) {
      // Too large to come with the claim: read on its own. If that fails the run never started,
      // so it goes back to the queue rather than waiting for its lease to end it interrupted.
      try {
        body = await this.store.readBody(run.id);
      } catch (err) {
        this.redisError('read_body', err as Error);
        return this.release(run, 'run body could not be read; put back in the queue');
      }
      if (body === null) return; // cancelled and expired meanwhile
    }
    const grace = setTimeout(() => this.abortRun(run.id, 'grace'), run.gracePeriodMs);
    let outcome: DispatchOutcome;
    try {
      outcome = await this.replay(run, body, controller.signal);
    } catch (err) {
      outcome = this.failure(entry, err as Error);
    } finally {
      clearTimeout(grace);
    }
    // Cancelled, handed back, or no longer ours: whoever holds the run now records it.
    if (entry.reason === 'cancelled' || entry.reason === 'shutdown' || entry.reason === 'lease_lost') return;
    await this.record(entry, outcome);
  }

  private async replay(run: ClaimedRun, body: Buffer, signal: AbortSignal): Promise<DispatchOutcome> {
    const res = await request(dispatchTarget(this.base, run.target), {
      dispatcher: this.agent,
      method: run.method as 'GET',
      headers: run.headers.flat(),
      body: body.length > 0 || !['GET', 'HEAD'].includes(run.method) ? body : null,
      signal,
      headersTimeout: run.gracePeriodMs,
      bodyTimeout: run.gracePeriodMs,
    });
    const limit = this.options.maxResultBytes;
    const chunks: Buffer[] = [];
    let kept = 0;
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (kept < limit) {
        const part = kept + chunk.length > limit ? chunk.subarray(0, limit - kept) : chunk;
        chunks.push(part);
        kept += part.length;
      }
    }
    const headers: Array<[string, string]> = [];
    for (const [k, v] of Object.entries(res.headers)) {
      if (HOP_BY_HOP.has(k) || v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) headers.push([k, one]);
    }
    const contentType = res.headers['content-type'];
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    return {
      status: ok ? 'succeeded' : 'failed',
      response: {
        statusCode: res.statusCode,
        contentType: (Array.isArray(contentType) ? contentType[0] : contentType) ?? null,
        headers,
        body: Buffer.concat(chunks, kept),
        size,
        truncated: size > kept,
      },
      error: ok ? null : { code: 'upstream_status', message: `The upstream answered ${res.statusCode}.` },
    };
  }

  private failure(entry: InFlight, err: Error): DispatchOutcome {
    if (entry.reason === 'grace') {
      return {
        status: 'timed_out',
        response: null,
        error: {
          code: 'grace_period_exceeded',
          message: `The upstream did not answer within the grace period of ${entry.run.gracePeriodMs / 1000} s; the call was aborted.`,
        },
      };
    }
    if (err instanceof TargetOutsideOrigin) {
      // Only a run stored by a direct gRPC client before :path was checked can get here.
      return {
        status: 'failed',
        response: null,
        error: { code: 'invalid_target', message: "The run's target is not an origin-form path; it was not dispatched." },
      };
    }
    // The tenant sees only the error code: undici's message names internal addresses
    // (`connect ECONNREFUSED 10.0.3.7:8000`); the full error goes to the log.
    const code = (err as Error & { code?: string }).code ?? '';
    entry.log.warn({ err }, 'upstream call failed');
    return {
      status: 'failed',
      response: null,
      error: { code: 'upstream_unreachable', message: `The upstream call failed${code ? ` (${code})` : ''}.` },
    };
  }

  /** Records the outcome; while Redis is away it keeps trying until the run's lease is gone. */
  private async record({ run, log }: InFlight, outcome: DispatchOutcome): Promise<void> {
    const giveUpAt = Date.now() + this.options.leaseTimeoutMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      try {
        const handOff = this.options.handOff;
        const window = handOff?.hasCapacity() ? handOff.windowMs : 0;
        // With a backlog, the slot this run frees is refilled in the same script (one claim less).
        const claimNext = this.backlog && !this.stopping ? 1 : 0;
        const complete = () => this.store.complete(this.options.workerId, run, outcome, { handOffWindowMs: window, claimNext });
        const { recorded, webhook, next } = claimNext > 0 ? await this.leasing(complete, (d) => d.next) : await complete();
        if (claimNext > 0) this.backlog = next.length === claimNext;
        if (webhook && handOff) {
          handOff.deliver({
            runId: run.id,
            url: webhook.url,
            webhookId: webhook.webhookId,
            runStatus: outcome.status,
            error: outcome.error?.code ?? null,
            upstreamStatus: outcome.response?.statusCode ?? null,
            contentType: outcome.response?.contentType ?? null,
            body: outcome.response?.body ?? null,
            tries: 0,
          });
        }
        if (recorded) {
          this.metrics.runsFinished.inc({ status: outcome.status });
          this.metrics.runDuration.observe({ status: outcome.status }, (Date.now() - run.startedAt) / 1000);
          log.info({ status: outcome.status, upstream_status: outcome.response?.statusCode ?? null, error: outcome.error?.code ?? null }, 'run finished');
        } else {
          log.info({ status: outcome.status }, 'run outcome dropped: the run was cancelled or taken over');
        }
        return;
      } catch (err) {
        this.redisError('complete_run', err as Error);
        if (Date.now() > giveUpAt) {
          log.error('gave up recording a run outcome; its lease expires and recovery ends it');
          return;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** See `leasing`: puts back runs leased to this worker by a call whose reply was lost. */
  private releaseUntracked(): void {
    if (!this.untrackedClaims || this.claimsInFlight > 0 || this.stopping) return;
    this.untrackedClaims = false;
    this.store.releaseUntracked(this.options.workerId, [...this.inFlight.keys()]).then(
      (n) => {
        if (n > 0) this.logger.warn({ released: n }, 'runs leased by a claim whose reply was lost went back to the queue');
      },
      (e: Error) => {
        this.untrackedClaims = true; // tried again by the next recovery round
        this.redisError('release_untracked', e);
      },
    );
  }

  private async recoverOrphans(): Promise<void> {
    this.releaseUntracked();
    if (this.stopping) return;
    try {
      // Housekeeping rides along: the listing index forgets runs that expired.
      await this.store.pruneIndex(200);
      for (const r of await this.store.recover(100)) {
        this.logger.warn({ run_id: r.id, outcome: r.outcome }, r.outcome === 'queued' ? 'orphaned run queued again' : 'orphaned run ended as interrupted');
        if (r.outcome === 'failed') this.metrics.runsFinished.inc({ status: 'failed' });
      }
    } catch (err) {
      this.redisError('recover_runs', err as Error);
    }
  }

  private redisError(operation: string, err: Error): void {
    this.redisErrors.report(operation, err);
  }
}
