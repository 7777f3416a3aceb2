import type { QueueStats } from '../runs';

/** Where the admin port serves the queues' counts (README "Dashboard"). */
export const QUEUES_PATH = '/queues';

/** One queue as `GET /queues` shows it: the same counts as the `eas_queue_*` gauges. */
export interface QueueView {
  name: string;
  /** Runs waiting to be taken, those backing off included (`eas_queue_depth`). */
  queued: number;
  backing_off: number;
  in_flight: number;
  /** `max_concurrency`; null: no limit beyond each worker's DISPATCH_CONCURRENCY. */
  max_concurrency: number | null;
  oldest_queued_age_ms: number | null;
}

export function queuesView(stats: readonly QueueStats[]): { queues: QueueView[] } {
  return {
    queues: stats.map((q) => ({
      name: q.queue,
      queued: q.queued,
      backing_off: q.delayed,
      in_flight: q.inFlight,
      max_concurrency: q.limit,
      oldest_queued_age_ms: q.oldestQueuedAgeMs === null ? null : Math.round(q.oldestQueuedAgeMs),
    })),
  };
}
