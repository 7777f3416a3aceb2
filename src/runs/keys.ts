/**
 * Redis key names. Every key carries the hash tag {runs} so that a script touching a run, the
 * queue and the lease set stays within one Redis Cluster slot. (One slot means one shard holds
 * the queue; sharding the queue is future work, see README "Limits".)
 */
export class RunKeys {
  readonly base: string;
  readonly queue: string;
  readonly leases: string;
  readonly webhooks: string;
  readonly index: string;
  readonly events: string;

  constructor(prefix: string) {
    this.base = `${prefix}:{runs}`;
    this.queue = `${this.base}:queue`;
    this.leases = `${this.base}:leases`;
    this.webhooks = `${this.base}:webhooks`;
    this.index = `${this.base}:index`;
    this.events = `${this.base}:events`;
  }

  run(id: string): string {
    return `${this.base}:run:${id}`;
  }
}
