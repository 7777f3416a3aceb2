/**
 * A task run every `intervalMs` on a timer it re-arms itself once a tick has settled (no
 * setInterval: a slow tick, e.g. a Redis call waiting for its timeout, is never run twice at once),
 * as BullMQ's stalled-jobs checker and LockManager do. The timer does not keep the process alive.
 */
export class PeriodicTask {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** A tick has not settled yet: it arms the next one when it does. */
  private ticking = false;

  /**
   * `tick` handles its own errors; one that escapes goes to `onError` and the task goes on.
   * `immediately`: the first tick runs at start instead of one interval later.
   */
  constructor(
    private readonly intervalMs: number,
    private readonly tick: () => void | Promise<void>,
    private readonly options: { immediately?: boolean; onError?: (err: unknown) => void } = {},
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    if (this.ticking) return;
    if (this.options.immediately) this.run();
    else this.arm();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private run(): void {
    this.timer = null;
    this.ticking = true;
    let settled: Promise<void>;
    try {
      settled = Promise.resolve(this.tick());
    } catch (err) {
      settled = Promise.reject(err);
    }
    settled
      .catch((err: unknown) => this.options.onError?.(err))
      .finally(() => {
        this.ticking = false;
        this.arm();
      });
  }

  private arm(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => this.run(), this.intervalMs);
    this.timer.unref();
  }
}
