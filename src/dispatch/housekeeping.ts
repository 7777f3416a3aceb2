import type { Logger, Metrics } from '../telemetry';
import type { RunStore } from '../runs';

/** Runs looked at per recovery round. */
const RECOVER_BATCH = 100;
/** Runs past their queue time ended per queue and round. */
const EXPIRE_BATCH = 500;
/** Listing-index entries looked at per pruning round. */
const PRUNE_SCAN = 200;

/**
 * How often a worker looks for orphaned runs (and prunes the index): twice per lease timeout and
 * at least every 10 s, so a dead worker's run is taken up that long at most after its lease ran out.
 */
export function housekeepingIntervalMs(leaseTimeoutMs: number): number {
  return Math.min(10_000, Math.max(200, Math.floor(leaseTimeoutMs / 2)));
}

/**
 * One recovery round, per served queue: runs whose worker died (their lease expired) are queued
 * again or ended as interrupted, by the redispatch policy (docs/CONTRACT.md §3), and runs queued
 * longer than their queue's max_queue_time end `expired` (README "Queues"). The queues other
 * replicas serve (or served) are learnt first, so their orphans are recovered too.
 */
export async function recoverOrphans(
  store: Pick<RunStore, 'recover' | 'expire' | 'queueNames' | 'syncQueueRegistry'>,
  metrics: Metrics,
  logger: Logger,
  onError: (err: Error) => void,
): Promise<void> {
  try {
    await store.syncQueueRegistry();
    for (const queue of store.queueNames()) {
      for (const r of await store.recover(RECOVER_BATCH, undefined, queue)) {
        logger.warn({ run_id: r.id, queue, outcome: r.outcome }, r.outcome === 'queued' ? 'orphaned run queued again' : 'orphaned run ended as interrupted');
        if (r.outcome === 'failed') metrics.runsFinished.inc({ status: 'failed' });
      }
      const expired = await store.expire(EXPIRE_BATCH, queue);
      if (expired.length > 0) {
        metrics.runsExpired.inc({ queue }, expired.length);
        metrics.runsFinished.inc({ status: 'expired' }, expired.length);
        logger.warn({ queue, expired: expired.length }, 'runs waited longer than max_queue_time and expired');
      }
    }
  } catch (err) {
    onError(err as Error);
  }
}

/**
 * At the end of a stop: the runs still in hand after the grace period (their calls aborted) go back
 * to the queue, or end as interrupted, by the same policy as orphans.
 */
export async function handBackRuns(
  store: Pick<RunStore, 'recover'>,
  workerId: string,
  runs: ReadonlyArray<{ id: string; queue: string }>,
  metrics: Metrics,
  logger: Logger,
): Promise<void> {
  const byQueue = new Map<string, string[]>();
  for (const r of runs) byQueue.set(r.queue, [...(byQueue.get(r.queue) ?? []), r.id]);
  try {
    for (const [queue, ids] of byQueue) {
      for (const h of await store.recover(ids.length, { workerId, ids }, queue)) {
        logger.warn(
          { run_id: h.id, outcome: h.outcome },
          h.outcome === 'queued' ? 'run handed back to the queue at shutdown' : 'run ended as interrupted at shutdown',
        );
        if (h.outcome === 'failed') metrics.runsFinished.inc({ status: 'failed' });
      }
    }
  } catch (err) {
    logger.error({ err }, 'could not hand runs back at shutdown; their leases will expire');
  }
}

/** One pruning round: the listing index forgets runs that expired. */
export async function pruneIndex(store: Pick<RunStore, 'pruneIndex'>, onError: (err: Error) => void): Promise<void> {
  try {
    await store.pruneIndex(PRUNE_SCAN);
  } catch (err) {
    onError(err as Error);
  }
}
