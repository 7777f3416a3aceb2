import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { RunKeys } from './keys';
import type {
  ClaimedDelivery,
  ClaimedRun,
  DispatchOutcome,
  NewRun,
  RunStatus,
  RunView,
  StoredResult,
  StoredRun,
  WebhookAttemptRecord,
  WebhookStatus,
} from './types';

export interface RunStoreOptions {
  keyPrefix: string;
  runTtlMs: number;
  leaseTimeoutMs: number;
  maxDispatchAttempts: number;
  redispatchInterrupted: 'never' | 'idempotent' | 'always';
}

export type CancelResult = 'cancelled' | 'missing' | RunStatus;
export type RedeliverResult = 'ok' | 'missing' | 'not_finished' | 'no_webhook' | 'cancelled' | 'pending' | 'too_soon';

/** Webhook attempts kept in a run's history (the latest; the attempt count covers all). */
export const WEBHOOK_HISTORY_MAX = 50;

/** Shortest time between two redeliveries of one run's webhook. */
export const REDELIVER_MIN_INTERVAL_MS = 10_000;

/**
 * The scripts, one file each in ./scripts named `<name>-<number of keys>.lua` (as BullMQ's
 * commands/*.lua): adding a state change means one file and the method that passes its arguments.
 * test/unit/lua-scripts.test.ts checks every file is listed here and uses exactly its KEYS.
 */
export const SCRIPT_NAMES = [
  'enqueueRun',
  'claimRuns',
  'completeRun',
  'cancelRun',
  'renewLeases',
  'recoverRuns',
  'claimWebhooks',
  'recordWebhookAttempt',
  'redeliverWebhook',
  'pruneIndex',
  'releaseRuns',
  'readResult',
  'releaseUntracked',
] as const;
type ScriptName = (typeof SCRIPT_NAMES)[number];
/** Scripts that only read: flagged `no-writes`, so Redis runs them on replicas and under OOM too. */
const READ_ONLY: ReadonlySet<ScriptName> = new Set(['readResult']);
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

/** Reads the Lua scripts once; each becomes an EVALSHA command on the connection. */
function defineScripts(redis: Redis): void {
  const lib = readFileSync(join(SCRIPTS_DIR, 'lib.lua'), 'utf8');
  const files = readdirSync(SCRIPTS_DIR);
  for (const name of SCRIPT_NAMES) {
    if (typeof (redis as unknown as Record<string, unknown>)[`eas_${name}`] === 'function') continue;
    const { file, numberOfKeys } = scriptFile(name, files);
    const body = readFileSync(file, 'utf8');
    // The shebang makes Redis judge a script whole: one that may write is refused before it
    // starts when Redis is over maxmemory (no half-applied state change: complete_run's HSET
    // refused while recover_runs' ZREM went through), instead of failing at its first write.
    const flags = READ_ONLY.has(name) ? '#!lua flags=no-writes' : '#!lua';
    redis.defineCommand(`eas_${name}`, { numberOfKeys, lua: `${flags}\n${lib}\n${body}` });
  }
}

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
  'wh_status',
  'wh_attempts',
  'wh_last_status',
  'wh_next_at',
  'wh_log',
] as const;

const iso = (ms: string | null | undefined): string | null => (ms ? new Date(Number(ms)).toISOString() : null);
const num = (v: string | null | undefined): number | null => (v === null || v === undefined || v === '' ? null : Number(v));
const str = (v: Buffer | string | null | undefined): string => (v === null || v === undefined ? '' : v.toString());

/** A run as claim_runs (and complete_run's claim) return it: see lib.lua `claim`. */
type ClaimedRow = Array<Buffer | number>;

/**
 * Request bodies one claim reply carries inline, all runs together (the rest are read one by one
 * with `readBody`): small bodies keep one round trip per claim, large ones cannot make a reply
 * outgrow the command timeout.
 */
export const CLAIM_INLINE_BODY_BYTES = 1024 * 1024;

function toClaimedRun(r: ClaimedRow): ClaimedRun {
  return {
    id: str(r[0] as Buffer),
    attempt: Number(r[1]),
    startedAt: Number(r[2]),
    queuedAt: Number(str(r[3] as Buffer)),
    method: str(r[4] as Buffer),
    target: str(r[5] as Buffer),
    headers: JSON.parse(str(r[6] as Buffer)) as Array<[string, string]>,
    body: (r[7] as Buffer | null) ?? (Number(r[9]) > 0 ? null : Buffer.alloc(0)),
    gracePeriodMs: Number(str(r[8] as Buffer)),
  };
}

/**
 * The runs store: every state change of a run is one Lua script, one round trip (docs/CONTRACT.md §3).
 * It owns key names and the record layout; callers see typed runs only.
 */
export class RunStore {
  readonly keys: RunKeys;

  constructor(
    private readonly redis: Redis,
    private readonly options: RunStoreOptions,
  ) {
    this.keys = new RunKeys(options.keyPrefix);
    defineScripts(redis);
  }

  private script(name: ScriptName, buffers = false): ScriptFn {
    const fn = (this.redis as unknown as Record<string, ScriptFn>)[`eas_${name}${buffers ? 'Buffer' : ''}`]!;
    return fn.bind(this.redis);
  }

  /** Writes the run and its queue entry atomically; resolves only once Redis acknowledged both. */
  async create(run: NewRun): Promise<void> {
    const k = this.keys;
    await this.script('enqueueRun')(
      k.run(run.id),
      k.queue,
      k.index,
      run.id,
      k.events,
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
    );
  }

  /** Takes up to `max` queued runs for `workerId`, oldest first, each leased for the lease timeout. */
  async claim(workerId: string, max: number): Promise<ClaimedRun[]> {
    const rows = (await this.script('claimRuns', true)(
      this.keys.queue,
      this.keys.leases,
      this.keys.base,
      workerId,
      this.options.leaseTimeoutMs,
      max,
      CLAIM_INLINE_BODY_BYTES,
    )) as ClaimedRow[];
    return rows.map(toClaimedRun);
  }

  /**
   * Records how a dispatch ended. `recorded` is false when the run was no longer this worker's
   * (cancelled, recovered). With `handOffWindowMs` > 0 and a webhook on the run, the delivery is
   * handed to the caller at once (`webhook`), and other workers may take it only after the window.
   * With `claimNext` > 0, up to that many queued runs are taken for this worker in the same step
   * (`next`), as `claim` would.
   */
  async complete(
    workerId: string,
    run: ClaimedRun,
    outcome: DispatchOutcome,
    options: { handOffWindowMs?: number; claimNext?: number } = {},
  ): Promise<{ recorded: boolean; webhook: { url: string; webhookId: string } | null; next: ClaimedRun[] }> {
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
    const k = this.keys;
    // Buffer replies: the runs taken along carry binary bodies.
    const done = (await this.script('completeRun', true)(
      k.run(run.id),
      k.leases,
      k.webhooks,
      k.queue,
      run.id,
      workerId,
      run.attempt,
      outcome.status,
      this.options.runTtlMs,
      k.events,
      options.handOffWindowMs ?? 0,
      options.claimNext ?? 0,
      k.base,
      this.options.leaseTimeoutMs,
      CLAIM_INLINE_BODY_BYTES,
      ...fields,
    )) as 0 | [number, Buffer, Buffer, ClaimedRow[]];
    if (done === 0) return { recorded: false, webhook: null, next: [] };
    const url = str(done[1]);
    return { recorded: true, webhook: url ? { url, webhookId: str(done[2]) } : null, next: done[3].map(toClaimedRun) };
  }

  /** The request body of a claimed run whose body did not come inline (null: the run is gone). */
  async readBody(id: string): Promise<Buffer | null> {
    return this.redis.hgetBuffer(this.keys.run(id), 'body');
  }

  /** The stored upstream response body of a delivery whose body did not come inline. */
  async readResultBody(id: string): Promise<Buffer | null> {
    return this.redis.hgetBuffer(this.keys.run(id), 'res_body');
  }

  /** Cancels a queued or running run; returns the status it had, or 'missing'. */
  async cancel(id: string): Promise<CancelResult> {
    const k = this.keys;
    return (await this.script('cancelRun')(k.run(id), k.queue, k.leases, k.webhooks, id, this.options.runTtlMs, k.events)) as CancelResult;
  }

  /**
   * Heartbeat: extends the leases of the runs this worker holds (id and attempt); returns the ids
   * it no longer holds, whose calls must stop.
   */
  async renewLeases(workerId: string, held: ReadonlyArray<{ id: string; attempt: number }>): Promise<string[]> {
    if (held.length === 0) return [];
    const args: ScriptArg[] = [];
    for (const h of held) args.push(h.id, h.attempt);
    return (await this.script('renewLeases')(this.keys.leases, this.keys.base, workerId, this.options.leaseTimeoutMs, ...args)) as string[];
  }

  /**
   * Ends or re-queues runs whose lease expired (workerId omitted), or the given runs a stopping
   * worker hands back. Returns what happened to each.
   */
  async recover(limit: number, handBack?: { workerId: string; ids: string[] }): Promise<Array<{ id: string; outcome: 'queued' | 'failed' }>> {
    const k = this.keys;
    const o = this.options;
    const rows = (await this.script('recoverRuns')(
      k.queue,
      k.leases,
      k.webhooks,
      k.base,
      k.events,
      o.runTtlMs,
      o.maxDispatchAttempts,
      o.redispatchInterrupted,
      limit,
      handBack?.workerId ?? '',
      ...(handBack?.ids ?? []),
    )) as Array<[string, 'queued' | 'failed']>;
    return rows.map(([id, outcome]) => ({ id, outcome }));
  }

  /** Puts runs this worker took but never started back at the head of the queue. */
  async release(workerId: string, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return Number(await this.script('releaseRuns')(this.keys.queue, this.keys.leases, this.keys.base, this.keys.events, workerId, ...ids));
  }

  /**
   * Puts back every run leased to `workerId` except `held`: after a claim whose reply was lost,
   * the worker does not know which runs it was given. Call it only while no claim of this worker
   * is waiting for its reply (those runs would be released under it).
   */
  async releaseUntracked(workerId: string, held: readonly string[]): Promise<number> {
    return Number(await this.script('releaseUntracked')(this.keys.queue, this.keys.leases, this.keys.base, this.keys.events, workerId, ...held));
  }

  async get(id: string): Promise<StoredRun | null> {
    const f = await this.redis.hmget(this.keys.run(id), ...RUN_VIEW_FIELDS);
    const v = Object.fromEntries(RUN_VIEW_FIELDS.map((name, i) => [name, f[i] ?? null])) as Record<(typeof RUN_VIEW_FIELDS)[number], string | null>;
    if (!v.status) return null;
    const history = (v.wh_log ?? '')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as WebhookAttemptRecord);
    const view: RunView = {
      run_id: id,
      status: v.status as RunStatus,
      created_at: iso(v.created_at)!,
      started_at: iso(v.started_at),
      finished_at: iso(v.finished_at),
      request: { method: v.method ?? '', path: v.path ?? '', request_id: v.request_id || null },
      response: v.res_status
        ? { status_code: Number(v.res_status), content_type: v.res_content_type || null, size: Number(v.res_size ?? 0), truncated: v.res_truncated === '1' }
        : null,
      error: v.error ? { code: v.error, message: v.error_message ?? '' } : null,
      dispatch_attempts: Number(v.attempt ?? 0),
      webhook: {
        status: (v.wh_status ?? 'none') as WebhookStatus,
        attempts: Number(v.wh_attempts ?? 0),
        last_status_code: num(v.wh_last_status),
        next_attempt_at: v.wh_status === 'pending' ? iso(v.wh_next_at) : null,
        history,
      },
    };
    return { view, owner: v.owner ?? '' };
  }

  /**
   * A run's stored response, if `owner` (a fingerprint; null = the unscoped admin API) may see it.
   * Missing and not visible are the same null, decided in Redis before the body is read.
   */
  async getResult(id: string, owner: string | null): Promise<StoredResult | null> {
    const f = (await this.script('readResult', true)(this.keys.run(id), owner ?? '', owner === null ? '1' : '0')) as Buffer[] | null;
    if (!f) return null;
    return {
      status: str(f[0]) as RunStatus,
      statusCode: Number(str(f[1]) || 0),
      contentType: str(f[2]) || null,
      headers: f[3]?.length ? (JSON.parse(str(f[3])) as Array<[string, string]>) : [],
      body: f[4] ?? Buffer.alloc(0),
    };
  }

  /** Takes up to `limit` due webhook deliveries, hidden from other workers for `visibilityMs`. */
  async claimWebhooks(limit: number, visibilityMs: number): Promise<ClaimedDelivery[]> {
    const rows = (await this.script('claimWebhooks', true)(this.keys.webhooks, this.keys.base, visibilityMs, limit, CLAIM_INLINE_BODY_BYTES)) as Array<
      Array<Buffer | null>
    >;
    return rows.map((r) => {
      const hasResponse = str(r[5]) !== '';
      const inline = r[7] ?? null;
      return {
        runId: str(r[0]),
        url: str(r[1]),
        webhookId: str(r[2]),
        runStatus: str(r[3]) as RunStatus,
        error: str(r[4]) || null,
        upstreamStatus: num(str(r[5])),
        contentType: str(r[6]) || null,
        body: hasResponse ? (inline ?? Buffer.alloc(0)) : null,
        bodyPending: hasResponse && inline === null && Number(str(r[9])) > 0,
        tries: Number(str(r[8]) || 0),
      };
    });
  }

  async recordWebhookAttempt(runId: string, record: WebhookAttemptRecord, retryDelayMs: number | null): Promise<void> {
    await this.script('recordWebhookAttempt')(
      this.keys.run(runId),
      this.keys.webhooks,
      runId,
      record.outcome,
      JSON.stringify(record),
      retryDelayMs ?? -1,
      record.status_code ?? '',
      this.options.runTtlMs,
      WEBHOOK_HISTORY_MAX,
    );
  }

  /** A new delivery of a finished run's webhook, if `owner` (null = the admin API) may ask for it. */
  async redeliver(id: string, owner: string | null): Promise<RedeliverResult> {
    return (await this.script('redeliverWebhook')(
      this.keys.run(id),
      this.keys.webhooks,
      id,
      owner ?? '',
      owner === null ? '1' : '0',
      REDELIVER_MIN_INTERVAL_MS,
    )) as RedeliverResult;
  }

  async queueDepth(): Promise<number> {
    return this.redis.llen(this.keys.queue);
  }

  /**
   * Recent runs for the admin listing, newest first, a page at a time. The cursor is the last
   * entry of the previous page (created_at and id), so runs created in the same millisecond are
   * neither skipped nor repeated.
   */
  async recentIds(limit: number, after?: { createdAt: number; id: string }): Promise<Array<{ id: string; createdAt: number }>> {
    const max = after === undefined ? '+inf' : String(after.createdAt);
    // Same-score members come in reverse lexical order: skip those at or above the cursor's id.
    const flat = await this.redis.zrevrangebyscore(this.keys.index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, limit + 64);
    const out: Array<{ id: string; createdAt: number }> = [];
    for (let i = 0; i < flat.length && out.length < limit; i += 2) {
      const entry = { id: flat[i]!, createdAt: Number(flat[i + 1]) };
      if (after && entry.createdAt === after.createdAt && entry.id >= after.id) continue;
      out.push(entry);
    }
    return out;
  }

  /** Drops listing-index entries of expired runs among the next `scan` or so of the index; returns how many. */
  async pruneIndex(scan: number): Promise<number> {
    return Number(await this.script('pruneIndex')(this.keys.index, `${this.keys.index}:prune_cursor`, this.keys.base, scan));
  }
}
