import { mayHaveRun, type ClaimedRun, type RunStore } from '../runs';

export interface LostClaimsOptions {
  workerId: string;
  /** The runs this worker holds now (not put back). */
  held: () => Iterable<string>;
  /** While stopping nothing is put back here: the hand-back at the end of the stop does it. */
  stopping: () => boolean;
  /** How many runs went back to the queue. */
  onReleased: (count: number) => void;
  onError: (err: Error) => void;
}

/**
 * The calls that lease runs to this worker (a claim, or a completion taking the next run along),
 * and the runs such a call leased when its reply was lost. A call that timed out (or whose
 * connection closed) may still have run in Redis and leased runs this worker never heard of: once
 * no such call awaits its reply (and the runs that did come back are in hand), every run leased to
 * this worker that it does not hold goes back to the queue (they never started), instead of
 * waiting for the lease to end them interrupted.
 */
export class LostClaims {
  /** Calls sent and not yet answered. */
  private pending = 0;
  /** A reply was lost: some runs may be leased to this worker unknowingly. */
  private untracked = false;

  constructor(
    private readonly store: Pick<RunStore, 'releaseUntracked'>,
    private readonly options: LostClaimsOptions,
  ) {}

  /**
   * Sends `call` and begins the runs its reply carries (`begin`, with the time the call was sent:
   * the lease counts from then) before anything is put back.
   */
  async lease<T>(call: () => Promise<T>, runsOf: (reply: T) => readonly ClaimedRun[], begin: (run: ClaimedRun, leasedAt: number) => void): Promise<T> {
    const sentAt = Date.now();
    this.pending++;
    try {
      const reply = await call();
      this.pending--;
      for (const run of runsOf(reply)) begin(run, sentAt);
      return reply;
    } catch (err) {
      this.pending--;
      if (mayHaveRun(err)) this.untracked = true;
      throw err;
    } finally {
      this.releaseUntracked();
    }
  }

  /** Puts back the runs of a lost reply, if there are any and no call is waiting; again after a failure. */
  releaseUntracked(): void {
    if (!this.untracked || this.pending > 0 || this.options.stopping()) return;
    this.untracked = false;
    this.store.releaseUntracked(this.options.workerId, [...this.options.held()]).then(
      (n) => {
        if (n > 0) this.options.onReleased(n);
      },
      (err: Error) => {
        this.untracked = true; // tried again by the next call, or the next housekeeping round
        this.options.onError(err);
      },
    );
  }
}
