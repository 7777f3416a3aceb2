import type { ChainableCommander } from 'ioredis';
import { NotSentError, isCluster, type RedisClient } from './connection';

/**
 * The write went through on the primary, but fewer than `required` replicas confirmed it in
 * time (REDIS_MIN_REPLICAS_ACK): the run exists, and a failover of that primary before it
 * replicates can lose it. `acknowledged` is null when WAIT itself got no answer.
 */
export class NotReplicatedError extends Error {
  override name = 'NotReplicatedError';

  constructor(
    readonly acknowledged: number | null,
    readonly required: number,
    options?: { cause?: unknown },
  ) {
    super(
      acknowledged === null
        ? `the write was not confirmed by ${required} replica(s): WAIT got no answer`
        : `the write reached ${acknowledged} of the ${required} replica(s) required in time`,
      options,
    );
  }
}

/** WAIT must leave this much of a write's budget for its reply. */
const REPLY_MARGIN_MS = 100;

interface PendingWrite {
  add: (pipeline: ChainableCommander) => void;
  deadline: number;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * Writes that count only once `replicas` replicas have them (README "Redis topologies"): each
 * batch is one pipeline, the writes then `WAIT replicas <ms>`, so the WAIT runs on the very
 * connection (on a Cluster: the node) that took the writes, and counts exactly them. WAIT blocks
 * that connection until the replicas answer, so writes are grouped: while one batch waits, the
 * next collects (a group commit), and a group's batches never overlap. On a Cluster a group is a
 * hash tag (one slot, so one node); on one Redis it is the whole connection.
 * Each write has `budgetMs` from when it was asked for: the WAIT of its batch gets what is left of
 * the shortest budget in it, and a write whose budget ran out while it waited is not sent.
 */
export class ReplicatedWriter {
  private readonly groups = new Map<string, { queue: PendingWrite[]; busy: boolean }>();

  constructor(
    private readonly redis: RedisClient,
    readonly replicas: number,
    private readonly budgetMs: number,
  ) {}

  /** Adds the write (`add` puts its command on the pipeline) to `group`'s next batch; resolves with its reply once replicated. */
  write(group: string, add: (pipeline: ChainableCommander) => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let g = this.groups.get(group);
      if (!g) this.groups.set(group, (g = { queue: [], busy: false }));
      g.queue.push({ add, deadline: Date.now() + this.budgetMs, resolve, reject });
      if (!g.busy) void this.drain(g);
    });
  }

  private async drain(g: { queue: PendingWrite[]; busy: boolean }): Promise<void> {
    g.busy = true;
    try {
      while (g.queue.length > 0) await this.send(g.queue.splice(0));
    } finally {
      g.busy = false;
    }
  }

  private async send(batch: PendingWrite[]): Promise<void> {
    const now = Date.now();
    const live: PendingWrite[] = [];
    for (const w of batch) {
      if (w.deadline - now > REPLY_MARGIN_MS) live.push(w);
      else w.reject(new NotSentError('its time ran out while the replicas confirmed earlier writes'));
    }
    if (live.length === 0) return;
    // A Cluster pipeline before the first connect would wait for it without a timeout.
    if (isCluster(this.redis) && this.redis.status !== 'ready') {
      for (const w of live) w.reject(new NotSentError('the Redis Cluster is not connected'));
      return;
    }
    const waitMs = Math.max(1, Math.min(...live.map((w) => w.deadline)) - now - REPLY_MARGIN_MS);
    const pipeline = this.redis.pipeline();
    for (const w of live) w.add(pipeline);
    pipeline.wait(this.replicas, waitMs);
    let replies: Array<[Error | null, unknown]>;
    try {
      replies = (await pipeline.exec()) ?? [];
    } catch (err) {
      for (const w of live) w.reject(err as Error);
      return;
    }
    const [waitErr, acknowledged] = replies[live.length] ?? [new Error('no reply to WAIT'), null];
    live.forEach((w, i) => {
      const [err, value] = replies[i] ?? [new Error('no reply'), null];
      if (err) w.reject(err);
      else if (waitErr) w.reject(new NotReplicatedError(null, this.replicas, { cause: waitErr }));
      else if (Number(acknowledged) < this.replicas) w.reject(new NotReplicatedError(Number(acknowledged), this.replicas));
      else w.resolve(value);
    });
  }
}
