import type { RunStore } from '../runs';
import { PeriodicTask } from '../work';

/** Why a worker stopped holding a run: Redis said so, or it could not renew in time. */
export type LeaseLoss = 'taken' | 'expired';

export interface LeaseKeeperOptions {
  workerId: string;
  leaseTimeoutMs: number;
  /** Called with the runs whose lease is gone: their calls must stop now. */
  onLost: (ids: string[], why: LeaseLoss) => void;
  onError: (err: Error) => void;
}

interface Held {
  attempt: number;
  queue: string;
  /** Local time (ms) at which the last successful renewal (or the claim) was sent. */
  validFrom: number;
}

/**
 * Keeps the leases of a worker's runs alive, as BullMQ's LockManager does: one heartbeat that
 * re-arms its own timer (no setInterval; never two renewals in flight behind a slow Redis), and a
 * report of the leases lost, so the worker aborts calls it no longer holds instead of
 * letting a recovered run execute twice at once. A lease counts from when its renewal was *sent*:
 * if Redis cannot be reached for a whole lease timeout, another worker may already have
 * recovered the run, so the call stops then too ('expired').
 */
export class LeaseKeeper {
  private readonly held = new Map<string, Held>();
  private readonly heartbeat: PeriodicTask;
  private renewing = false;
  /** Heartbeat period: a third of the lease, so two renewals can fail before it runs out. */
  private readonly intervalMs: number;

  constructor(
    private readonly store: Pick<RunStore, 'renewLeases'>,
    private readonly options: LeaseKeeperOptions,
  ) {
    this.intervalMs = Math.max(100, Math.floor(options.leaseTimeoutMs / 3));
    this.heartbeat = new PeriodicTask(this.intervalMs, () => this.beat());
  }

  /** `validFrom`: when the claim that leased the run was sent (local ms). */
  track(id: string, attempt: number, queue: string, validFrom: number): void {
    this.held.set(id, { attempt, queue, validFrom });
  }

  untrack(id: string): void {
    this.held.delete(id);
  }

  start(): void {
    this.heartbeat.start();
  }

  stop(): void {
    this.heartbeat.stop();
  }

  /**
   * One heartbeat: a renewal unless the previous one is still waiting for Redis (never two in
   * flight), and the expiry check either way, since a blackholed Redis answers nothing until the
   * command timeout, which may be longer than the lease.
   */
  private beat(): void {
    if (this.held.size > 0 && !this.renewing) {
      this.renewing = true;
      void this.renew().finally(() => (this.renewing = false));
    }
    this.expireStale();
  }

  private async renew(): Promise<void> {
    const sentAt = Date.now();
    const batch = [...this.held].map(([id, h]) => ({ id, attempt: h.attempt, queue: h.queue }));
    try {
      const lost = new Set(await this.store.renewLeases(this.options.workerId, batch));
      for (const { id, attempt } of batch) {
        const h = this.held.get(id);
        if (h && h.attempt === attempt && !lost.has(id)) h.validFrom = Math.max(h.validFrom, sentAt);
      }
      const gone = batch.filter((b) => lost.has(b.id) && this.held.get(b.id)?.attempt === b.attempt).map((b) => b.id);
      if (gone.length > 0) this.lose(gone, 'taken');
    } catch (err) {
      this.options.onError(err as Error);
    }
  }

  /**
   * A lease whose last renewal is so old that it ends before the next heartbeat may belong to
   * another worker by then: stop now rather than run alongside it.
   */
  private expireStale(): void {
    const cutoff = Date.now() + this.intervalMs - this.options.leaseTimeoutMs;
    const stale = [...this.held].filter(([, h]) => h.validFrom <= cutoff).map(([id]) => id);
    if (stale.length > 0) this.lose(stale, 'expired');
  }

  private lose(ids: string[], why: LeaseLoss): void {
    for (const id of ids) this.held.delete(id);
    this.options.onLost(ids, why);
  }
}
