import type { Logger } from '../telemetry';
import { PeriodicTask } from './periodic';

export interface ClaimLoopOptions {
  /** Items handled at once. */
  concurrency: number;
  /** How often to claim when no wake-up came: the safety net for a missed one, and the retry after a failed claim. */
  pollIntervalMs: number;
  /** Signals that items may be waiting (pub/sub): each subscribes `wake` and returns its unsubscribe. */
  wakeUps?: ReadonlyArray<(wake: () => void) => () => void>;
  /** Where a handler that broke its promise not to reject is reported. */
  logger: Pick<Logger, 'error'>;
}

/**
 * The lifecycle of a worker that claims items from a shared store and handles each, written once
 * (as undici's DispatcherBase does for its dispatchers): start, fill to the concurrency on every
 * wake-up, poll tick and finished item, one claim in flight at a time, and a graceful stop that
 * gives the items in hand a grace period and then hands back what is left. A subclass fills in
 * the hooks: claim up to N, handle one item, decline an item that arrives while stopping, hand back.
 *
 * A failed claim is reported and not retried on the spot: the next wake-up, finished item or poll
 * tick claims again, so while the store is away the loop asks once per poll interval.
 */
export abstract class ClaimLoop<Item> {
  /** Items being handled: a count, not a set of their promises, which took a promise and two closures more per item in hand. */
  private active = 0;
  /** `settled()` callers, resolved when the count reaches 0. */
  private readonly settledWaiters: Array<() => void> = [];
  /** Bound once: one pair for every item, rather than a `.catch().finally()` chain of closures each. */
  private readonly itemDone = (): void => this.finished();
  private readonly itemFailed = (err: unknown): void => {
    this.loop.logger.error({ err }, 'work item handler failed');
    this.finished();
  };
  private readonly poll: PeriodicTask;
  private readonly unsubscribe: Array<() => void> = [];
  private claiming = false;
  /** A fill was asked for while a claim was in flight: claim again when it returns. */
  private fillAgain = false;
  private stopped = false;

  protected constructor(private readonly loop: ClaimLoopOptions) {
    this.poll = new PeriodicTask(loop.pollIntervalMs, () => this.fill());
  }

  /**
   * Claims up to `max` items and begins each with `begin` (before resolving, so that an item is
   * in hand as soon as its claim is answered); resolves to how many it took.
   */
  protected abstract claim(max: number): Promise<number>;

  /** Handles one item to its end. Must not reject. */
  protected abstract handle(item: Item): Promise<void>;

  /** A claim failed (reported here; the next fill tries again). */
  protected abstract claimFailed(err: Error): void;

  /** An item that arrived while stopping (a claim that was in flight, a hand-over): it is not handled here. */
  protected abstract decline(item: Item): void;

  /**
   * Called once the grace period ended with items still being handled: stop them and give them
   * back to the store. Resolves once they are back (or could not be given back).
   */
  protected async handBack(): Promise<void> {}

  start(): void {
    for (const subscribe of this.loop.wakeUps ?? []) this.unsubscribe.push(subscribe(() => this.fill()));
    this.poll.start();
    this.fill();
  }

  /**
   * Stops claiming; the items in hand get `graceMs` to finish, then `handBack` is called for those
   * still running.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    this.poll.stop();
    for (const u of this.unsubscribe.splice(0)) u();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.settled(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    if (this.active > 0) await this.handBack();
  }

  protected get stopping(): boolean {
    return this.stopped;
  }

  /** True when an item begun now would be handled at once. */
  protected get hasRoom(): boolean {
    return !this.stopped && this.active < this.loop.concurrency;
  }

  /** Resolves once every item in hand now has been handled. */
  protected settled(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  /** Handles an item this worker holds: from its own claim, or handed over by another part. */
  protected begin(item: Item): void {
    if (this.stopped) return this.decline(item);
    this.active++;
    this.handle(item).then(this.itemDone, this.itemFailed);
  }

  private finished(): void {
    if (--this.active === 0 && this.settledWaiters.length > 0) for (const resolve of this.settledWaiters.splice(0)) resolve();
    this.fill();
  }

  /** Claims items up to the concurrency; again at once while claims come back full. */
  protected fill(): void {
    if (this.stopped) return;
    if (this.claiming) {
      this.fillAgain = true;
      return;
    }
    const free = this.loop.concurrency - this.active;
    if (free <= 0) return;
    this.claiming = true;
    this.fillAgain = false;
    this.claim(free).then(
      (taken) => {
        this.claiming = false;
        if (taken === free || this.fillAgain) this.fill();
      },
      (err: unknown) => {
        this.claiming = false;
        this.claimFailed(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }
}
