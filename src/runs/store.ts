import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChainableCommander } from 'ioredis';
import { isCluster, type RedisClient } from './connection';
import { QueueKeys, RunKeys, ownerBucket, queueTag, tagOfRunId } from './keys';
import type { EventChannels } from './events';
import { ReplicatedWriter } from './replication';
import { AttemptRecords } from './attempt-records';
import { writeCoalescer } from './write-coalescing';
import type {
  ClaimedDelivery,
  ClaimedRun,
  DispatchAttemptRecord,
  DispatchOutcome,
  NewRun,
  PreviousOutcome,
  QueuePolicy,
  RunStatus,
  RunView,
  StartedEventStatus,
  StoredResult,
  StoredRun,
  WebhookAttemptRecord,
  WebhookEvent,
  WebhookStatus,
} from './types';

export interface RunStoreOptions {
  keyPrefix: string;
  runTtlMs: number;
  leaseTimeoutMs: number;
  maxDispatchAttempts: number;
  redispatchInterrupted: 'never' | 'idempotent' | 'always';
  /** The configured queues; queues found only in the registry get no limits. Default: `default` alone, unlimited. */
  queues?: ReadonlyMap<string, QueuePolicy>;
  /**
   * REDIS_MIN_REPLICAS_ACK: a new run counts as stored only once this many replicas have it
   * (`create` waits for them within `replicaAckBudgetMs`, else throws NotReplicatedError). Default 0.
   */
  minReplicasAck?: number;
  /** How long `create` may take in all when it waits for replicas (the accept path's Redis budget). */
  replicaAckBudgetMs?: number;
  /** How long an Idempotency-Key's record lasts after its run was accepted (IDEMPOTENCY_KEY_TTL). Default 24 h. */
  idempotencyKeyTtlMs?: number;
}

export type CancelResult = 'cancelled' | 'missing' | RunStatus;
export type RedeliverResult = 'ok' | 'missing' | 'not_finished' | 'no_webhook' | 'cancelled' | 'pending' | 'too_soon';
/** A retry: 'ok' (queued again), 'missing' (also: not visible), 'pending' (its webhook is being delivered), 'dropped' (its request is gone), or the status it has. */
export type RetryResult = 'ok' | 'missing' | 'pending' | 'dropped' | RunStatus;

/**
 * What `create` did: wrote the run, or found the Idempotency-Key's record, naming the run it
 * created, for the same request (`replayed`) or another one (`conflict`), and wrote nothing.
 */
export type CreateResult = { outcome: 'created' } | { outcome: 'replayed' | 'conflict'; runId: string };

/** Outcomes a run had before its retries, kept in its view (the latest). */
export const PREVIOUS_OUTCOMES_MAX = 20;

/** Webhook attempts kept in a run's history (the latest; the attempt count covers all). */
export const WEBHOOK_HISTORY_MAX = 50;

/** Shortest time between two redeliveries of one run's webhook. */
export const REDELIVER_MIN_INTERVAL_MS = 10_000;

/**
 * The scripts, one file each in ./scripts named `<name>-<number of keys>.lua` (as BullMQ's
 * commands/*.lua): adding a state change means one file and its argument builder below.
 * test/unit/lua-scripts.test.ts checks every file is listed here and uses exactly its KEYS.
 */
export const SCRIPT_NAMES = [
  'enqueueRun',
  'claimRuns',
  'completeRun',
  'deferRun',
  'cancelRun',
  'renewLeases',
  'recoverRuns',
  'expireRuns',
  'claimWebhooks',
  'recordWebhookAttempts',
  'redeliverWebhook',
  'pruneIndex',
  'releaseRuns',
  'readRun',
  'readResult',
  'releaseUntracked',
  'retryRun',
] as const;
type ScriptName = (typeof SCRIPT_NAMES)[number];
/** Scripts that only read: flagged `no-writes`, so Redis runs them on replicas and under OOM too. */
const READ_ONLY: ReadonlySet<ScriptName> = new Set(['readResult', 'readRun']);
type ScriptArg = string | number | Buffer;
type ScriptFn = (...args: ScriptArg[]) => Promise<unknown>;

export const SCRIPTS_DIR = join(__dirname, 'scripts');
const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** The script file of `name` and its number of keys, read from the file name. */
export function scriptFile(name: string, files: readonly string[] = readdirSync(SCRIPTS_DIR)): { file: string; numberOfKeys: number } {
  const prefix = `${snake(name)}-`;
  const found = files.filter((f) => f.startsWith(prefix) && /^\d+\.lua$/.test(f.slice(prefix.length)));
  if (found.length !== 1) throw new Error(`expected one ${prefix}<keys>.lua in ${SCRIPTS_DIR}, found ${found.length}`);
  return { file: join(SCRIPTS_DIR, found[0]!), numberOfKeys: Number(found[0]!.slice(prefix.length, -'.lua'.length)) };
}

/**
 * Each script's full source as Redis gets it: the shebang, lib.lua, the script's file. The
 * shebang makes Redis judge a script whole: one that may write is refused before it starts when
 * Redis is over maxmemory (no half-applied state change: complete_run's HSET refused while
 * recover_runs' ZREM went through), instead of failing at its first write.
 */
export function scriptSources(): Map<ScriptName, { lua: string; numberOfKeys: number }> {
  const lib = readFileSync(join(SCRIPTS_DIR, 'lib.lua'), 'utf8');
  const files = readdirSync(SCRIPTS_DIR);
  const out = new Map<ScriptName, { lua: string; numberOfKeys: number }>();
  for (const name of SCRIPT_NAMES) {
    const { file, numberOfKeys } = scriptFile(name, files);
    const flags = READ_ONLY.has(name) ? '#!lua flags=no-writes' : '#!lua';
    out.set(name, { lua: `${flags}\n${lib}\n${readFileSync(file, 'utf8')}`, numberOfKeys });
  }
  return out;
}

/** Each script becomes an EVALSHA command (`eas_<name>`) on the connection, once. */
function defineScripts(redis: RedisClient): void {
  if (typeof (redis as unknown as Record<string, unknown>).eas_enqueueRun === 'function') return;
  for (const [name, script] of scriptSources()) redis.defineCommand(`eas_${name}`, script);
}

/**
 * A script's arguments: its options by name as one JSON object of strings (lib.lua `options`
 * decodes it), then an optional list (ids, hash fields, bodies). Names instead of positions, as
 * BullMQ passes its options as one packed map: a script's header and its builder name each
 * option, and neither depends on the other's order. One argument, not a name and a value per
 * option: the completion path's scripts take 16 options, and writing them as 32 separate bulk
 * strings was 15 % of the worker's CPU profile (ioredis writes every argument on its own).
 * Values are sent as strings, so Lua compares them with hash fields as it would ARGV.
 */
function named(options: Record<string, string | number>, list: readonly ScriptArg[] = [], shared?: SharedOptions): ScriptArg[] {
  // Built as a string rather than an object then JSON.stringify: the completion path calls this
  // twice per run, and the object (and the spread of the shared options into it) was 2-3 % of
  // the worker's profile.
  let json = shared ? shared.json : '';
  for (const k in options) json += `${json === '' ? '' : ','}${JSON.stringify(k)}:${JSON.stringify(String(options[k]))}`;
  return [`{${json}}`, ...list];
}

/** A queue this store serves: its policy, its keys, and its claim options encoded per worker id. */
interface ServedQueue {
  policy: QueuePolicy;
  keys: QueueKeys;
  claimOptions: Map<string, SharedOptions>;
}

/** Options many calls of a script share (a queue's claim options for this worker), encoded once for `named`. */
interface SharedOptions {
  readonly json: string;
}

function sharedOptions(options: Record<string, string | number>): SharedOptions {
  return { json: (named(options)[0] as string).slice(1, -1) };
}

/** Decodes a row a script returns as a fixed head then the values of `fields`, by name. */
function byName<const F extends readonly string[]>(fields: F, row: ReadonlyArray<Buffer | null>, from: number): Record<F[number], Buffer | null> {
  const out = {} as Record<F[number], Buffer | null>;
  fields.forEach((f: F[number], i) => (out[f] = row[from + i] ?? null));
  return out;
}

/** Run fields a claim returns after its head (id, attempt, started_at, body, body size). */
const CLAIM_FIELDS = ['queued_at', 'method', 'target', 'headers', 'grace_ms', 'queue', 'bp_tries', 'ws_status', 'trace'] as const;
const CLAIM_FIELD_LIST = CLAIM_FIELDS.join(',');

/** Run fields a webhook claim returns after its head (id, body, body size, event). */
const DELIVERY_FIELDS = [
  'webhook_url',
  'wh_id',
  'status',
  'error',
  'res_status',
  'res_content_type',
  'wh_try',
  'ws_try',
  'started_at',
  'ws_ts',
  'wh_secret',
  'queue',
  'trace',
] as const;
const DELIVERY_FIELD_LIST = DELIVERY_FIELDS.join(',');

/** Run fields the runs API shows, read after the queue position (read_run). */
const RUN_VIEW_FIELDS = [
  'status',
  'created_at',
  'started_at',
  'finished_at',
  'method',
  'path',
  'request_id',
  'owner',
  'res_status',
  'res_content_type',
  'res_size',
  'res_truncated',
  'error',
  'error_message',
  'attempt',
  'queue',
  'prio',
  'queue_reason',
  'next_attempt_at',
  'dispatch_log',
  'wh_status',
  'wh_attempts',
  'wh_last_status',
  'wh_next_at',
  'wh_log',
  'ws_status',
  'ws_attempts',
  'ws_last_status',
  'ws_next_at',
  'ws_log',
  'prev_log',
] as const;
const RUN_VIEW_FIELD_LIST = RUN_VIEW_FIELDS.join(',');

const PRIORITY_NAMES = ['high', 'normal', 'low'] as const;

const iso = (ms: string | null | undefined): string | null => (ms ? new Date(Number(ms)).toISOString() : null);
const num = (v: string | null | undefined): number | null => (v === null || v === undefined || v === '' ? null : Number(v));
const str = (v: Buffer | string | null | undefined): string => (v === null || v === undefined ? '' : v.toString());
const lines = <T>(log: string | null): T[] =>
  (log ?? '')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);

/**
 * Request bodies one claim reply carries inline, all runs together (the rest are read one by one
 * with `readBody`): small bodies keep one round trip per claim, large ones cannot make a reply
 * outgrow the command timeout.
 */
export const CLAIM_INLINE_BODY_BYTES = 1024 * 1024;

/** A previous outcome as retry_run stores it (times in ms). */
interface StoredOutcome {
  status: RunStatus;
  error?: string;
  status_code?: number;
  started_at?: number;
  finished_at?: number;
  attempts?: number;
  retried_at: number;
}

function previousOutcome(o: StoredOutcome): PreviousOutcome {
  const at = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  return {
    status: o.status,
    error: o.error ?? null,
    status_code: o.status_code ?? null,
    started_at: at(o.started_at),
    finished_at: at(o.finished_at),
    dispatch_attempts: o.attempts ?? 0,
    retried_at: at(o.retried_at)!,
  };
}

function toClaimedRun(r: ReadonlyArray<Buffer | number | null>): ClaimedRun {
  const f = byName(CLAIM_FIELDS, r as ReadonlyArray<Buffer | null>, 5);
  return {
    id: str(r[0] as Buffer),
    attempt: Number(r[1]),
    startedAt: Number(r[2]),
    body: (r[3] as Buffer | null) ?? (Number(r[4]) > 0 ? null : Buffer.alloc(0)),
    queuedAt: Number(str(f.queued_at)),
    method: str(f.method),
    target: str(f.target),
    headers: JSON.parse(str(f.headers)) as Array<[string, string]>,
    gracePeriodMs: Number(str(f.grace_ms)),
    queue: str(f.queue),
    backpressureTries: Number(str(f.bp_tries) || 0),
    trace: str(f.trace) || null,
    startedEvent: str(f.ws_status) === 'pending',
  };
}

/** The `started` event's webhook-id: the run's own plus a suffix, stable across its attempts. */
export function startedWebhookId(webhookId: string): string {
  return `${webhookId}_started`;
}

/** A final webhook handed to the worker that completed its run (RunStore#complete). */
export interface HandedOffWebhook {
  url: string;
  webhookId: string;
  sealedSecret: string | null;
  /** The earliest webhook-timestamp it may carry: after the run's `started` event's (null: none sent). */
  notBeforeS: number | null;
}

/** One second after the `started` event's webhook-timestamp (as stored), or null when it had none. */
const afterStarted = (ts: string): number | null => (ts === '' ? null : Number(ts) + 1);

/** A queue found in the registry but no longer configured: its runs are served, without limits. */
const unlimited = (name: string): QueuePolicy => ({ name, maxConcurrency: null, maxQueueTimeMs: null, fairShare: true });

/** How many runs of a queue wait, back off and run, and how long the oldest has waited. */
export interface QueueStats {
  queue: string;
  queued: number;
  delayed: number;
  inFlight: number;
  limit: number | null;
  oldestQueuedAgeMs: number | null;
}

/**
 * The runs store: every state change of a run is one Lua script, one round trip (docs/CONTRACT.md §3).
 * It owns key names and the record layout; callers see typed runs only.
 */
export class RunStore {
  readonly keys: RunKeys;
  /** On a Cluster run events go out on each tag's shard channel (SPUBLISH), else on one channel. */
  readonly shardedEvents: boolean;
  private readonly queues = new Map<string, ServedQueue>();
  private readonly scriptFns = new Map<string, ScriptFn>();
  /** Called before each script call: the calls of one turn of the event loop share one socket write. */
  private readonly coalesceWrites: () => void;
  private readonly queueListeners = new Set<(tag: string) => void>();
  private readonly replicated: ReplicatedWriter | null;
  private readonly attempts: AttemptRecords;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: RunStoreOptions,
  ) {
    this.keys = new RunKeys(options.keyPrefix);
    this.shardedEvents = isCluster(redis);
    this.addQueue(unlimited('default'));
    for (const policy of options.queues?.values() ?? []) this.addQueue(policy);
    defineScripts(redis);
    const replicas = options.minReplicasAck ?? 0;
    this.replicated = replicas > 0 ? new ReplicatedWriter(redis, replicas, options.replicaAckBudgetMs ?? 1000) : null;
    this.coalesceWrites = writeCoalescer(redis);
    this.attempts = new AttemptRecords((base, encoded) =>
      this.script('recordWebhookAttempts')(`${base}:webhooks`, ...named({ base, attempts: encoded, ttl_ms: this.options.runTtlMs, keep: WEBHOOK_HISTORY_MAX })),
    );
  }

  /** Where the scripts publish run events of the queues under `base` (lib.lua `notify`). */
  private pubsub(base: string): Record<string, ScriptArg> {
    return this.shardedEvents ? { channel: `${base}:events`, sharded: 1 } : { channel: this.keys.events };
  }

  /** Where run events go (for RunEvents): a shard channel per tag on a Cluster, else one channel. */
  get events(): EventChannels {
    return { sharded: this.shardedEvents, of: (tag) => (this.shardedEvents ? this.keys.shardEvents(tag) : this.keys.events) };
  }

  /** The event channels RunEvents must listen on for the queues this store serves: one per tag, or the one channel. */
  eventChannels(): string[] {
    return [...new Set(this.tags().map((t) => this.events.of(t)))];
  }

  /** The distinct hash tags of the served queues. */
  tags(): string[] {
    return [...new Set([...this.queues.keys()].map(queueTag))];
  }

  /** Called with the tag of each queue this store starts to serve after it was built (learnt from the registry). */
  onQueueAdded(listener: (tag: string) => void): () => void {
    this.queueListeners.add(listener);
    return () => this.queueListeners.delete(listener);
  }

  private script(name: ScriptName, buffers = false): ScriptFn {
    this.coalesceWrites();
    // Bound once per script: a bind per call was an allocation on every state change.
    const key = `${name}${buffers ? 'Buffer' : ''}`;
    let fn = this.scriptFns.get(key);
    if (!fn) {
      fn = (this.redis as unknown as Record<string, ScriptFn>)[`eas_${key}`]!.bind(this.redis);
      this.scriptFns.set(key, fn);
    }
    return fn;
  }

  private addQueue(policy: QueuePolicy): ServedQueue {
    const q: ServedQueue = { policy, keys: this.keys.queue(policy.name), claimOptions: new Map() };
    this.queues.set(policy.name, q);
    for (const l of this.queueListeners) l(queueTag(policy.name));
    return q;
  }

  private queue(name: string): ServedQueue {
    return this.queues.get(name) ?? this.addQueue(unlimited(name));
  }

  /** The queues this store serves: the configured ones and any other found in the registry. */
  queueNames(): string[] {
    return [...this.queues.keys()];
  }

  queuePolicy(name: string): QueuePolicy {
    return this.queue(name).policy;
  }

  /**
   * Adds this replica's queues to the registry and learns the others': a queue dropped from
   * CONFIG_FILE keeps being drained (recovery, webhooks) by every replica.
   */
  async syncQueueRegistry(): Promise<void> {
    const registry = this.keys.queueRegistry;
    await this.redis.sadd(registry, ...this.queues.keys());
    for (const name of await this.redis.smembers(registry)) if (!this.queues.has(name)) this.addQueue(unlimited(name));
  }

  /** Distinct key bases of the served queues (queues may share a tag). */
  private bases(): string[] {
    return [...new Set([...this.queues.values()].map((q) => q.keys.base))];
  }

  private runKey(id: string): string {
    return this.keys.run(id);
  }

  /** The keys of a served queue (for tests and tools that look inside). */
  queueKeys(name: string): QueueKeys {
    return this.queue(name).keys;
  }

  /**
   * Writes the run and its place in its queue atomically; resolves only once Redis acknowledged
   * both. With `run.idempotency`, the key's record is checked and written in the same script: a
   * record already there means nothing is written (`replayed` or `conflict`).
   */
  async create(run: NewRun): Promise<CreateResult> {
    const queueName = run.queue ?? 'default';
    const { policy, keys } = this.queue(queueName);
    const fields: ScriptArg[] = [
      'method',
      run.method,
      'path',
      run.path,
      'target',
      run.target,
      'headers',
      JSON.stringify(run.headers),
      'body',
      run.body,
      'request_id',
      run.requestId ?? '',
      'owner',
      run.owner,
      'trigger',
      run.trigger,
      'webhook_url',
      run.webhookUrl ?? '',
      'wh_id',
      run.webhookUrl ? `msg_${run.id.replace(/-/g, '')}` : '',
      'wh_status',
      run.webhookUrl ? 'pending' : 'none',
      'wh_attempts',
      0,
      'grace_ms',
      run.gracePeriodMs,
    ];
    // Tracing (src/tracing): the accept span's context travels with the run; no field when off.
    if (run.trace !== undefined) fields.push('trace', run.trace);
    if (run.webhookUrl && run.webhookStarted) fields.push('ws_status', 'waiting');
    if (run.webhookUrl && run.webhookSecret) fields.push('wh_secret', run.webhookSecret);
    const args = named(
      {
        id: run.id,
        queue: queueName,
        base: keys.base,
        prio: run.priority ?? 1,
        // Fair share: one line per owner ('-' for requests without the owner header), taking turns.
        bucket: policy.fairShare ? run.owner || '-' : '*',
        owner: ownerBucket(run.owner),
        idem_fp: run.idempotency?.fingerprint ?? '',
        idem_ttl_ms: this.options.idempotencyKeyTtlMs ?? 86_400_000,
        ...this.pubsub(keys.base),
      },
      fields,
    );
    // Without a key the record's place is taken by a key of the same tag that the script leaves alone.
    const record = run.idempotency ? keys.idempotencyRecord(run.owner, run.idempotency.key) : `${keys.base}:idem`;
    const runKey = this.runKey(run.id);
    const enqueueKeys = [runKey, keys.queued, keys.index, keys.indexOwners, keys.ownerIndexOf(run.owner), record];
    let reply: [string, string | number];
    if (this.replicated) {
      // One group per tag on a Cluster (one node each), the one connection otherwise.
      const group = this.shardedEvents ? keys.base : '';
      const enqueue = (p: ChainableCommander) => (p as unknown as Record<string, (...a: ScriptArg[]) => unknown>).eas_enqueueRun!(...enqueueKeys, ...args);
      reply = (await this.replicated.write(group, enqueue)) as [string, string | number];
    } else {
      reply = (await this.script('enqueueRun')(...enqueueKeys, ...args)) as [string, string | number];
    }
    if (reply[0] === 'created') return { outcome: 'created' };
    return { outcome: reply[0] === 'replayed' ? 'replayed' : 'conflict', runId: String(reply[1]) };
  }

  private claimOptions(queue: ServedQueue, workerId: string): SharedOptions {
    // The same for every claim of this queue by this worker: encoded once.
    let shared = queue.claimOptions.get(workerId);
    if (!shared) {
      shared = sharedOptions({
        base: queue.keys.base,
        queue: queue.policy.name,
        worker: workerId,
        lease_ms: this.options.leaseTimeoutMs,
        limit: queue.policy.maxConcurrency ?? 0,
        queue_time_ms: queue.policy.maxQueueTimeMs ?? 0,
        ttl_ms: this.options.runTtlMs,
        ...this.pubsub(queue.keys.base),
        inline_bytes: CLAIM_INLINE_BODY_BYTES,
        fields: CLAIM_FIELD_LIST,
      });
      queue.claimOptions.set(workerId, shared);
    }
    return shared;
  }

  /**
   * Takes up to `max` queued runs of `queueName` for `workerId` (highest priority first, owners in
   * turn, within the queue's global limit), each leased for the lease timeout.
   */
  async claim(workerId: string, max: number, queueName = 'default'): Promise<ClaimedRun[]> {
    const q = this.queue(queueName);
    const rows = (await this.script('claimRuns', true)(q.keys.webhooks, ...named({ max }, [], this.claimOptions(q, workerId)))) as Array<
      Array<Buffer | number | null>
    >;
    return rows.map(toClaimedRun);
  }

  /**
   * Records how a dispatch ended. `recorded` is false when the run was no longer this worker's
   * (cancelled, recovered). With `handOffWindowMs` > 0 and a webhook on the run, the delivery is
   * handed to the caller at once (`webhook`), and other workers may take it only after the window.
   * With `claimNext` > 0, up to that many queued runs of the same queue are taken for this worker
   * in the same step (`next`), as `claim` would.
   */
  async complete(
    workerId: string,
    run: ClaimedRun,
    outcome: DispatchOutcome,
    options: { handOffWindowMs?: number; claimNext?: number } = {},
  ): Promise<{ recorded: boolean; webhook: HandedOffWebhook | null; next: ClaimedRun[] }> {
    const fields: ScriptArg[] = [];
    if (outcome.response) {
      const r = outcome.response;
      fields.push(
        'res_status',
        r.statusCode,
        'res_content_type',
        r.contentType ?? '',
        'res_headers',
        JSON.stringify(r.headers),
        'res_body',
        r.body,
        'res_size',
        r.size,
        'res_truncated',
        r.truncated ? 1 : 0,
      );
    }
    if (outcome.error) fields.push('error', outcome.error.code, 'error_message', outcome.error.message);
    const q = this.queue(run.queue);
    // Webhook attempts of this tag's runs that ended meanwhile ride along (lib.lua record_attempts).
    const carried = this.attempts.take(q.keys.base);
    const own: Record<string, string | number> = {
      id: run.id,
      attempt: run.attempt,
      status: outcome.status,
      window_ms: options.handOffWindowMs ?? 0,
      next: options.claimNext ?? 0,
    };
    if (carried) {
      own.attempts = carried.encoded;
      own.keep = WEBHOOK_HISTORY_MAX;
    }
    const args = named(own, fields, this.claimOptions(q, workerId));
    let done: 0 | [number, Buffer, Buffer, Array<Array<Buffer | number | null>>, Buffer, Buffer];
    try {
      // Buffer replies: the runs taken along carry binary bodies.
      done = (await this.script('completeRun', true)(this.runKey(run.id), q.keys.webhooks, ...args)) as typeof done;
    } catch (err) {
      carried?.settle(err as Error);
      throw err;
    }
    carried?.settle(null);
    if (done === 0) return { recorded: false, webhook: null, next: [] };
    const url = str(done[1]);
    const webhook: HandedOffWebhook | null = url
      ? { url, webhookId: str(done[2]), sealedSecret: str(done[4]) || null, notBeforeS: afterStarted(str(done[5])) }
      : null;
    return { recorded: true, webhook, next: done[3].map(toClaimedRun) };
  }

  /**
   * The app said "not now": the run goes back to its queue and waits `delayMs` before it is in line
   * again. False when the run was no longer this worker's.
   */
  async defer(workerId: string, run: ClaimedRun, delayMs: number, reason: string, record: DispatchAttemptRecord): Promise<boolean> {
    const q = this.queue(run.queue);
    const args = named({
      id: run.id,
      worker: workerId,
      attempt: run.attempt,
      base: q.keys.base,
      queue: run.queue,
      delay_ms: Math.max(0, Math.round(delayMs)),
      reason,
      record: JSON.stringify(record),
    });
    return Number(await this.script('deferRun')(this.runKey(run.id), ...args)) === 1;
  }

  /** The request body of a claimed run whose body did not come inline (null: the run is gone). */
  async readBody(id: string): Promise<Buffer | null> {
    return this.redis.hgetBuffer(this.runKey(id), 'body');
  }

  /** The stored upstream response body of a delivery whose body did not come inline. */
  async readResultBody(id: string): Promise<Buffer | null> {
    return this.redis.hgetBuffer(this.runKey(id), 'res_body');
  }

  /**
   * Cancels a queued or running run, if `owner` (a fingerprint; null = the unscoped admin API) may
   * see it; returns the status it had, or 'missing' (also: not visible).
   */
  async cancel(id: string, owner: string | null = null): Promise<CancelResult> {
    const tag = tagOfRunId(id);
    if (tag === null) return 'missing';
    const key = this.keys.run(id);
    const base = this.keys.base(tag);
    const args = named({ id, base, owner: owner ?? '', admin: owner === null ? '1' : '0', ttl_ms: this.options.runTtlMs, ...this.pubsub(base) });
    return (await this.script('cancelRun')(key, `${base}:webhooks`, ...args)) as CancelResult;
  }

  /**
   * Queues a failed, timed-out or expired run again (the same id, a new attempt), if `owner` (a
   * fingerprint; null = the unscoped admin API) may see it. One script: the owner, the status and
   * the stored request are checked in the step that re-queues it.
   */
  async retry(id: string, owner: string | null = null): Promise<RetryResult> {
    const tag = tagOfRunId(id);
    if (tag === null) return 'missing';
    const args = named({
      id,
      base: this.keys.base(tag),
      owner: owner ?? '',
      admin: owner === null ? '1' : '0',
      channel: this.keys.events,
      keep: PREVIOUS_OUTCOMES_MAX,
    });
    return (await this.script('retryRun')(this.keys.run(id), ...args)) as RetryResult;
  }

  /**
   * Heartbeat: extends the leases of the runs this worker holds (id, attempt, queue); returns the
   * ids it no longer holds, whose calls must stop. One script per queue, sent together.
   */
  async renewLeases(workerId: string, held: ReadonlyArray<{ id: string; attempt: number; queue?: string }>): Promise<string[]> {
    const byQueue = new Map<string, ScriptArg[]>();
    for (const h of held) {
      const queue = h.queue ?? 'default';
      let list = byQueue.get(queue);
      if (!list) byQueue.set(queue, (list = []));
      list.push(h.id, h.attempt);
    }
    const lost = await Promise.all(
      [...byQueue].map(([name, list]) => {
        const q = this.queue(name);
        return this.script('renewLeases')(
          q.keys.leases,
          ...named({ base: q.keys.base, worker: workerId, lease_ms: this.options.leaseTimeoutMs }, list),
        ) as Promise<string[]>;
      }),
    );
    return lost.flat();
  }

  /**
   * Ends or re-queues runs of `queueName` (default `default`) whose lease expired (handBack omitted), or the given runs
   * a stopping worker hands back. Returns what happened to each.
   */
  async recover(
    limit: number,
    handBack?: { workerId: string; ids: string[] },
    queueName = 'default',
  ): Promise<Array<{ id: string; outcome: 'queued' | 'failed' }>> {
    const q = this.queue(queueName);
    const o = this.options;
    const args = named(
      {
        base: q.keys.base,
        queue: queueName,
        ...this.pubsub(q.keys.base),
        ttl_ms: o.runTtlMs,
        max_attempts: o.maxDispatchAttempts,
        policy: o.redispatchInterrupted,
        limit,
        worker: handBack?.workerId ?? '',
      },
      handBack?.ids ?? [],
    );
    const rows = (await this.script('recoverRuns')(q.keys.leases, q.keys.webhooks, ...args)) as Array<[string, 'queued' | 'failed']>;
    return rows.map(([id, outcome]) => ({ id, outcome }));
  }

  /** Ends runs of `queueName` queued longer than its max_queue_time as `expired`; returns their ids. */
  async expire(limit: number, queueName = 'default'): Promise<string[]> {
    const q = this.queue(queueName);
    if (q.policy.maxQueueTimeMs === null) return [];
    const args = named({
      base: q.keys.base,
      queue: queueName,
      queue_time_ms: q.policy.maxQueueTimeMs,
      limit,
      ttl_ms: this.options.runTtlMs,
      ...this.pubsub(q.keys.base),
    });
    return (await this.script('expireRuns')(q.keys.queued, q.keys.webhooks, ...args)) as string[];
  }

  /** Puts runs of one queue this worker took but never started back at the head of their line. */
  async release(workerId: string, ids: string[], queueName = 'default'): Promise<number> {
    if (ids.length === 0) return 0;
    const q = this.queue(queueName);
    const args = named({ base: q.keys.base, queue: queueName, ...this.pubsub(q.keys.base), worker: workerId }, ids);
    return Number(await this.script('releaseRuns')(q.keys.leases, ...args));
  }

  /**
   * Puts back every run leased to `workerId` except `held`, in every queue: after a claim whose
   * reply was lost, the worker does not know which runs it was given. Call it only while no claim
   * of this worker is waiting for its reply (those runs would be released under it).
   */
  async releaseUntracked(workerId: string, held: readonly string[]): Promise<number> {
    const counts = await Promise.all(
      [...this.queues.values()].map(async (q) => {
        const args = named({ base: q.keys.base, queue: q.policy.name, ...this.pubsub(q.keys.base), worker: workerId }, held);
        return Number(await this.script('releaseUntracked')(q.keys.leases, ...args));
      }),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  async get(id: string): Promise<StoredRun | null> {
    const tag = tagOfRunId(id);
    if (tag === null) return null;
    const reply = (await this.script('readRun')(this.keys.run(id), ...named({ id, base: this.keys.base(tag), fields: RUN_VIEW_FIELD_LIST }))) as Array<
      string | number | null
    > | null;
    if (!reply) return null;
    const position = Number(reply[0]);
    const v = byName(RUN_VIEW_FIELDS, reply as unknown as Array<Buffer | null>, 1) as unknown as Record<(typeof RUN_VIEW_FIELDS)[number], string | null>;
    if (!v.status) return null;
    const status = v.status as RunStatus;
    const queued = status === 'queued';
    const view: RunView = {
      run_id: id,
      status,
      created_at: iso(v.created_at)!,
      started_at: iso(v.started_at),
      finished_at: iso(v.finished_at),
      request: { method: v.method ?? '', path: v.path ?? '', request_id: v.request_id || null },
      response: v.res_status
        ? { status_code: Number(v.res_status), content_type: v.res_content_type || null, size: Number(v.res_size ?? 0), truncated: v.res_truncated === '1' }
        : null,
      error: v.error ? { code: v.error, message: v.error_message ?? '' } : null,
      dispatch_attempts: Number(v.attempt ?? 0),
      queue: v.queue ?? '',
      priority: PRIORITY_NAMES[Number(v.prio ?? 1)] ?? 'normal',
      queue_position: queued && position >= 0 ? position : null,
      queue_reason: queued ? v.queue_reason || null : null,
      next_attempt_at: queued ? iso(v.next_attempt_at) : null,
      dispatch_history: lines<DispatchAttemptRecord>(v.dispatch_log),
      previous_outcomes: lines<StoredOutcome>(v.prev_log).map(previousOutcome),
      webhook: {
        status: (v.wh_status ?? 'none') as WebhookStatus,
        attempts: Number(v.wh_attempts ?? 0),
        last_status_code: num(v.wh_last_status),
        next_attempt_at: v.wh_status === 'pending' ? iso(v.wh_next_at) : null,
        history: lines<WebhookAttemptRecord>(v.wh_log),
        started: v.ws_status
          ? {
              status: v.ws_status as StartedEventStatus,
              attempts: Number(v.ws_attempts ?? 0),
              last_status_code: num(v.ws_last_status),
              next_attempt_at: v.ws_status === 'pending' ? iso(v.ws_next_at) : null,
              history: lines<WebhookAttemptRecord>(v.ws_log),
            }
          : null,
      },
    };
    return { view, owner: v.owner ?? '' };
  }

  /**
   * A run's stored response, if `owner` (a fingerprint; null = the unscoped admin API) may see it.
   * Missing and not visible are the same null, decided in Redis before the body is read. A body
   * over `maxBodyBytes` is left in Redis (`body` null, `size` says how large it is).
   */
  async getResult(id: string, owner: string | null, maxBodyBytes = 0): Promise<StoredResult | null> {
    if (tagOfRunId(id) === null) return null;
    const f = (await this.script('readResult', true)(
      this.keys.run(id),
      ...named({ owner: owner ?? '', admin: owner === null ? '1' : '0', max_bytes: maxBodyBytes }),
    )) as Array<Buffer | number | null> | null;
    if (!f) return null;
    return {
      status: str(f[0] as Buffer) as RunStatus,
      statusCode: Number(str(f[1] as Buffer) || 0),
      contentType: str(f[2] as Buffer) || null,
      headers: (f[3] as Buffer | null)?.length ? (JSON.parse(str(f[3] as Buffer)) as Array<[string, string]>) : [],
      body: (f[4] as Buffer | null) ?? null,
      truncated: str(f[5] as Buffer) === '1',
      size: Number(f[6] ?? 0),
    };
  }

  /** Takes up to `limit` due webhook deliveries (of every queue), hidden from other workers for `visibilityMs`. */
  async claimWebhooks(limit: number, visibilityMs: number): Promise<ClaimedDelivery[]> {
    const out: ClaimedDelivery[] = [];
    for (const base of this.bases()) {
      if (out.length >= limit) break;
      const args = named({ base, visibility_ms: visibilityMs, limit: limit - out.length, inline_bytes: CLAIM_INLINE_BODY_BYTES, fields: DELIVERY_FIELD_LIST });
      const rows = (await this.script('claimWebhooks', true)(`${base}:webhooks`, ...args)) as Array<Array<Buffer | number | null>>;
      for (const r of rows) {
        const f = byName(DELIVERY_FIELDS, r as Array<Buffer | null>, 4);
        const event = str(r[3] as Buffer) as WebhookEvent;
        const started = event === 'started';
        const hasResponse = !started && str(f.res_status) !== '';
        const inline = (r[1] as Buffer | null) ?? null;
        out.push({
          runId: str(r[0] as Buffer),
          event,
          url: str(f.webhook_url),
          webhookId: started ? startedWebhookId(str(f.wh_id)) : str(f.wh_id),
          runStatus: started ? 'running' : (str(f.status) as RunStatus),
          error: started ? null : str(f.error) || null,
          upstreamStatus: started ? null : num(str(f.res_status)),
          contentType: started ? null : str(f.res_content_type) || null,
          body: hasResponse ? (inline ?? Buffer.alloc(0)) : null,
          bodyPending: hasResponse && inline === null && Number(r[2]) > 0,
          tries: Number(str(started ? f.ws_try : f.wh_try) || 0),
          startedAt: num(str(f.started_at)),
          timestampS: started ? num(str(f.ws_ts)) : afterStarted(str(f.ws_ts)),
          sealedSecret: str(f.wh_secret) || null,
          queue: str(f.queue) || 'default',
          trace: str(f.trace) || null,
        });
      }
    }
    return out;
  }

  /**
   * Records an attempt of a run's final webhook (`completed`) or of its `started` event. The
   * record rides along the next completion of a run with the same hash tag sent in this turn of
   * the event loop, else goes with the other records of this turn (src/runs/attempt-records.ts).
   */
  recordWebhookAttempt(runId: string, record: WebhookAttemptRecord, retryDelayMs: number | null, event: WebhookEvent = 'completed'): Promise<void> {
    return this.attempts.add(this.keys.base(tagOfRunId(runId) ?? 'none'), {
      id: runId,
      event,
      outcome: record.outcome,
      record: JSON.stringify(record),
      delay_ms: retryDelayMs ?? -1,
      status_code: record.status_code ?? '',
    });
  }

  /** A new delivery of a finished run's webhook, if `owner` (null = the admin API) may ask for it. */
  async redeliver(id: string, owner: string | null): Promise<RedeliverResult> {
    const tag = tagOfRunId(id);
    if (tag === null) return 'missing';
    const args = named({ id, owner: owner ?? '', admin: owner === null ? '1' : '0', min_interval_ms: REDELIVER_MIN_INTERVAL_MS });
    return (await this.script('redeliverWebhook')(this.keys.run(id), `${this.keys.base(tag)}:webhooks`, ...args)) as RedeliverResult;
  }

  /**
   * Depth, backoff, in-flight and oldest wait of each served queue: one pipeline per queue, since a
   * Cluster pipeline must stay within one slot (a queue's keys share its tag), sent together.
   */
  async queueStats(): Promise<QueueStats[]> {
    // A Cluster pipeline before the first connect would wait for it without a timeout.
    if (isCluster(this.redis) && this.redis.status !== 'ready') throw new Error('the Redis Cluster is not connected');
    const now = Date.now();
    return Promise.all(
      [...this.queues.values()].map(async (q) => {
        const replies =
          (await this.redis.pipeline().zcard(q.keys.queued).zcard(q.keys.delayed).zcard(q.keys.leases).zrange(q.keys.queued, '0', '0', 'WITHSCORES').exec()) ??
          [];
        const at = (j: number) => {
          const [err, value] = replies[j] ?? [new Error('no reply'), null];
          if (err) throw err;
          return value;
        };
        const oldest = at(3) as string[];
        return {
          queue: q.policy.name,
          queued: Number(at(0)),
          delayed: Number(at(1)),
          inFlight: Number(at(2)),
          limit: q.policy.maxConcurrency,
          oldestQueuedAgeMs: oldest.length === 2 ? Math.max(0, now - Number(oldest[1])) : null,
        };
      }),
    );
  }

  /**
   * Recent runs, newest first, a page at a time, merged over the queues' tags: every run (the
   * admin listing), or with `owner` (a fingerprint) only that owner's, read from its owner indexes
   * alone. The cursor is the last entry of the previous page (created_at and id), so runs created
   * in the same millisecond are neither skipped nor repeated.
   */
  async recentIds(limit: number, after?: { createdAt: number; id: string }, owner?: string): Promise<Array<{ id: string; createdAt: number }>> {
    const max = after === undefined ? '+inf' : String(after.createdAt);
    const all: Array<{ id: string; createdAt: number }> = [];
    const indexes = new Set([...this.queues.values()].map((q) => (owner === undefined ? q.keys.index : q.keys.ownerIndexOf(owner))));
    for (const index of indexes) {
      const flat = await this.redis.zrevrangebyscore(index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, limit + 64);
      for (let i = 0; i < flat.length; i += 2) {
        const entry = { id: flat[i]!, createdAt: Number(flat[i + 1]) };
        if (after && entry.createdAt === after.createdAt && entry.id >= after.id) continue;
        all.push(entry);
      }
    }
    // Newest first; within a millisecond by id, descending, as one sorted set would give them.
    all.sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    return all.slice(0, limit);
  }

  /**
   * Drops index entries of expired runs among the next `scan` or so of each listing index, and
   * the same runs' owner-index entries; returns how many listing entries.
   */
  async pruneIndex(scan: number): Promise<number> {
    let removed = 0;
    for (const base of this.bases()) {
      removed += Number(
        await this.script('pruneIndex')(`${base}:index`, `${base}:index:prune_cursor`, `${base}:index:owners`, ...named({ base, count: scan })),
      );
    }
    return removed;
  }
}
