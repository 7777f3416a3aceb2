import { createHash, randomUUID } from 'node:crypto';

/**
 * Redis key layout. Every key of a queue, and every run of that queue, carries the queue's hash
 * tag `{t:XXXX}` (four hex digits of the SHA-256 of the queue name), so that each script touches
 * one Redis Cluster slot while different queues land on different slots. The run id carries the
 * same four digits (a UUIDv8: version 8, its last four hex digits = the tag), so a run is found
 * from its id alone, wherever its queue lives, without a directory lookup. Two queue names with the
 * same tag (1 in 65,536) only share a slot; their keys stay apart by name.
 */
export class RunKeys {
  /**
   * The pub/sub channel of run events on one Redis (classic pub/sub is not bound to a slot). On a
   * Cluster each tag has its own shard channel instead (`shardEvents`).
   */
  readonly events: string;
  /** Names of every queue a replica has served: workers drain runs of queues no longer configured. */
  readonly queueRegistry: string;

  constructor(readonly prefix: string) {
    this.events = `${prefix}:events`;
    this.queueRegistry = `${prefix}:queues`;
  }

  /** Key base of a tag: `<prefix>:{t:XXXX}`. */
  base(tag: string): string {
    return `${this.prefix}:{t:${tag}}`;
  }

  /** The shard channel (SPUBLISH) of run events of the queues with tag `tag`, in their slot. */
  shardEvents(tag: string): string {
    return `${this.base(tag)}:events`;
  }

  /** The run hash of `id`; throws when `id` is not a run id of this layout (check with `tagOfRunId`). */
  run(id: string): string {
    const tag = tagOfRunId(id);
    if (tag === null) throw new Error(`not a run id: ${JSON.stringify(id)}`);
    return `${this.base(tag)}:run:${id}`;
  }

  queue(name: string): QueueKeys {
    return new QueueKeys(this.base(queueTag(name)), name);
  }
}

/** The keys of one queue. All share its tag; the per-priority and per-owner lists are built in Lua from `prefix`. */
export class QueueKeys {
  /** `<base>:q:<name>`: per priority p, `:ring:<p>` (owners with queued runs, next first) and `:pending:<p>:<owner>` (FIFO). */
  readonly prefix: string;
  /** Every queued run (waiting or backing off), scored by created_at: depth, oldest age, queue-time expiry. */
  readonly queued: string;
  /** Queued runs backing off after the app said "not now", scored by when they may go again. */
  readonly delayed: string;
  /** Runs at the app, scored by lease deadline: its size is the queue's in-flight count. */
  readonly leases: string;
  /** Due webhook deliveries of the runs under this tag, scored by due time. */
  readonly webhooks: string;
  /** Runs under this tag by created_at, for listings. */
  readonly index: string;
  /** Runs under this tag by created_at, per owner fingerprint: `<ownerIndex>:<owner>` (`ownerIndexOf`). */
  readonly ownerIndex: string;
  /** Run id -> the owner index it is in, so that pruning the listing index prunes the owner's too. */
  readonly indexOwners: string;

  constructor(
    /** `<prefix>:{t:XXXX}`: run hashes are `<base>:run:<id>`. */
    readonly base: string,
    readonly name: string,
  ) {
    this.prefix = `${base}:q:${name}`;
    this.queued = `${this.prefix}:queued`;
    this.delayed = `${this.prefix}:delayed`;
    this.leases = `${this.prefix}:leases`;
    this.webhooks = `${base}:webhooks`;
    this.index = `${base}:index`;
    this.ownerIndex = `${base}:owner`;
    this.indexOwners = `${base}:index:owners`;
  }

  /** The owner index of an owner fingerprint ('' = requests without the owner header). */
  ownerIndexOf(owner: string): string {
    return `${this.ownerIndex}:${ownerBucket(owner)}`;
  }

  /**
   * The record of an Idempotency-Key: under the queue's tag (the enqueue script writes it with the
   * run, in one slot), so a key is scoped per owner *and queue*: the same key sent to routes of two
   * queues names two records. The key is hashed: any client string becomes a fixed-size name.
   */
  idempotencyRecord(owner: string, key: string): string {
    return `${this.base}:idem:${ownerBucket(owner)}:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
  }
}

/** The name part of an owner fingerprint in a key: '-' for requests without the owner header. */
export function ownerBucket(owner: string): string {
  return owner === '' ? '-' : owner;
}

/** The hash tag of a queue: four hex digits of SHA-256(name). */
export function queueTag(name: string): string {
  return createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 4);
}

const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{8}([0-9a-f]{4})$/;

/** A new run id for a run of the queue with tag `tag`: 118 random bits, version 8, the tag last. */
export function newRunId(tag: string): string {
  const u = randomUUID();
  return `${u.slice(0, 14)}8${u.slice(15, 32)}${tag}`;
}

/** The tag a run id carries, or null when it is not a run id (any other string, including other UUIDs). */
export function tagOfRunId(id: string): string | null {
  return RUN_ID.exec(id)?.[1] ?? null;
}
