import type { HttpReply } from '../extproc';
import type { Logger, Metrics } from '../telemetry';
import { isFinal, REDELIVER_MIN_INTERVAL_MS, RUN_STATUSES, type RunEvents, type RunStatus, type RunStore, type RunView } from '../runs';
import { ownerFingerprint } from './accept';
import { apiError, jsonReply, ownerRequired } from './errors';
import { headerValue, paramValue, parseQuery, splitPath } from './request-parts';

export interface ApiRequest {
  method: string;
  /** Path with query. */
  path: string;
  headers: Array<[string, string]>;
}

/** Through Envoy a caller sees only runs created with the same owner header; the admin port sees all. */
export type ApiScope = 'owner' | 'admin';

export interface RunsApiOptions {
  prefix: string;
  ownerHeader: string;
  /** Through Envoy, refuse calls without the owner header (401). */
  ownerRequired?: boolean;
  maxWaitSeconds: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const STATUSES: ReadonlySet<string> = new Set(RUN_STATUSES);
/** Extra time Envoy is asked to wait beyond ?wait=N, for the answer itself to travel. */
const WAIT_MARGIN_MS = 2000;

type Route =
  | { kind: 'list' }
  | { kind: 'run'; id: string }
  | { kind: 'result'; id: string }
  | { kind: 'webhook'; id: string }
  | { kind: 'retry'; id: string }
  | { kind: 'not_found' };

/** The runs API (docs/CONTRACT.md §5) as plain functions: request in, reply out; served via ext_proc and the admin port. */
export class RunsApi {
  constructor(
    private readonly store: RunStore,
    private readonly events: RunEvents,
    private readonly options: RunsApiOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  /** True when `pathname` belongs to the runs API. */
  owns(pathname: string): boolean {
    const p = this.options.prefix;
    return pathname === p || pathname.startsWith(`${p}/`);
  }

  /** How long Envoy must hold the stream for this request (?wait=N), if longer than usual. */
  holdMs(req: ApiRequest): number | undefined {
    const wait = this.waitSeconds(req);
    return typeof wait === 'number' && wait > 0 ? wait * 1000 + WAIT_MARGIN_MS : undefined;
  }

  async handle(req: ApiRequest, scope: ApiScope, signal?: AbortSignal): Promise<HttpReply> {
    if (scope === 'owner' && this.options.ownerRequired && headerValue(req.headers, this.options.ownerHeader) === undefined) {
      return ownerRequired(this.options.ownerHeader);
    }
    const route = this.route(splitPath(req.path).pathname);
    try {
      switch (route.kind) {
        case 'not_found':
          return notFound();
        case 'list':
          if (req.method !== 'GET') return methodNotAllowed('GET');
          return await this.list(req, scope);
        case 'run':
          if (req.method === 'GET') return await this.status(route.id, req, scope, signal);
          if (req.method === 'DELETE') return await this.cancel(route.id, req, scope);
          return methodNotAllowed('GET, DELETE');
        case 'result':
          if (req.method !== 'GET') return methodNotAllowed('GET');
          return await this.result(route.id, req, scope);
        case 'webhook':
          if (req.method !== 'POST') return methodNotAllowed('POST');
          return await this.redeliver(route.id, req, scope);
        case 'retry':
          if (req.method !== 'POST') return methodNotAllowed('POST');
          return await this.retry(route.id, req, scope);
      }
    } catch (err) {
      this.metrics.redisErrors.inc({ operation: `api_${route.kind}` });
      this.logger.error({ err }, 'runs API could not read the store');
      return apiError('store_unavailable', 'The run store is unavailable; retry later.');
    }
  }

  private route(pathname: string): Route {
    const rest = pathname.slice(this.options.prefix.length);
    if (rest === '' || rest === '/') return { kind: 'list' };
    const parts = rest.slice(1).split('/');
    const id = parts[0]!.toLowerCase();
    // Not a UUID: no run can have that id, so answer without asking Redis.
    if (!UUID.test(id) || parts.length > 2) return { kind: 'not_found' };
    if (parts.length === 1) return { kind: 'run', id };
    if (parts[1] === 'result') return { kind: 'result', id };
    if (parts[1] === 'webhook') return { kind: 'webhook', id };
    if (parts[1] === 'retry') return { kind: 'retry', id };
    return { kind: 'not_found' };
  }

  /** The owner a script checks: the caller's fingerprint, or null for the unscoped admin API. */
  private ownerOf(req: ApiRequest, scope: ApiScope): string | null {
    return scope === 'admin' ? null : ownerFingerprint(headerValue(req.headers, this.options.ownerHeader));
  }

  /** The owner check: a mismatch is indistinguishable from an unknown id. */
  private visible(owner: string, req: ApiRequest, scope: ApiScope): boolean {
    return scope === 'admin' || owner === ownerFingerprint(headerValue(req.headers, this.options.ownerHeader));
  }

  private waitSeconds(req: ApiRequest): number | 'invalid' | undefined {
    const param = parseQuery(splitPath(req.path).query).find((p) => p.name === 'wait');
    if (!param) return undefined;
    const raw = paramValue(param) ?? '';
    // A decimal number, exponent allowed (as clients print small floats: 2.5e-7).
    if (!/^\d+(\.\d+)?([eE][+-]?\d+)?$/.test(raw)) return 'invalid';
    const n = Number(raw);
    return n > this.options.maxWaitSeconds ? 'invalid' : n;
  }

  private async status(id: string, req: ApiRequest, scope: ApiScope, signal?: AbortSignal): Promise<HttpReply> {
    const wait = this.waitSeconds(req);
    if (wait === 'invalid') {
      return apiError('invalid_wait', `wait must be a number of seconds from 0 to ${this.options.maxWaitSeconds}.`);
    }
    if (!wait) return this.viewReply(id, req, scope);
    // Subscribe before reading, so that an end between the read and the wait is not missed.
    const waiter = this.events.whenDone(id, wait * 1000, signal);
    try {
      await waiter.listening;
      const first = await this.store.get(id);
      if (!first || !this.visible(first.owner, req, scope)) return notFound();
      if (isFinal(first.view.status)) return jsonReply(200, first.view);
      await waiter.promise;
    } finally {
      waiter.cancel();
    }
    return this.viewReply(id, req, scope);
  }

  private async viewReply(id: string, req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    const run = await this.store.get(id);
    if (!run || !this.visible(run.owner, req, scope)) return notFound();
    return jsonReply(200, run.view);
  }

  private async result(id: string, req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    const owner = this.ownerOf(req, scope);
    const result = await this.store.getResult(id, owner);
    if (!result) return notFound();
    if (!isFinal(result.status)) {
      const run = await this.store.get(id);
      return run ? jsonReply(202, run.view, [['x-async-run-status', result.status]]) : notFound();
    }
    if (result.statusCode === 0) {
      return apiError('no_result', `The run ended ${result.status} without an upstream response.`, { headers: [['x-async-run-status', result.status]] });
    }
    return {
      status: result.statusCode,
      headers: [
        ['content-type', result.contentType ?? 'application/octet-stream'],
        ['x-async-run-id', id],
        ['x-async-run-status', result.status],
      ],
      body: result.body ?? Buffer.alloc(0), // read without a size limit: always there
      details: 'async_run_result',
    };
  }

  private async cancel(id: string, req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    // The owner check is in the script: one round trip for the cancel itself.
    const had = await this.store.cancel(id, this.ownerOf(req, scope));
    if (had === 'missing') return notFound();
    if (had !== 'queued' && had !== 'running') {
      return apiError('run_already_finished', `The run already ended ${had}; it cannot be cancelled.`);
    }
    this.logger.info({ run_id: id, was: had }, 'run cancelled');
    this.metrics.runsFinished.inc({ status: 'cancelled' });
    return this.viewReply(id, req, scope);
  }

  private async redeliver(id: string, req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    const outcome = await this.store.redeliver(id, this.ownerOf(req, scope));
    if (outcome === 'missing') return notFound();
    if (outcome === 'not_finished') return apiError('run_not_finished', 'The run has not ended; its webhook is sent when it does.');
    if (outcome === 'no_webhook') return apiError('no_webhook', 'The run was created without a webhookEndpoint.');
    if (outcome === 'cancelled') return apiError('run_cancelled', 'The run was cancelled: it has no outcome to deliver.');
    if (outcome === 'pending') return apiError('delivery_pending', 'A delivery of this webhook is still pending.');
    if (outcome === 'too_soon') {
      const wait = String(Math.ceil(REDELIVER_MIN_INTERVAL_MS / 1000));
      return apiError('redeliver_too_soon', `This webhook was redelivered less than ${wait} s ago.`, { retryAfterS: Number(wait) });
    }
    this.logger.info({ run_id: id }, 'webhook redelivery requested');
    const after = await this.store.get(id);
    return after ? jsonReply(202, after.view) : notFound();
  }

  private async retry(id: string, req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    // The owner, the status and the stored request are checked in the script that re-queues it.
    const outcome = await this.store.retry(id, this.ownerOf(req, scope));
    if (outcome === 'missing') return notFound();
    if (outcome === 'pending')
      return apiError('delivery_pending', 'The webhook of the outcome this run had is still being delivered; retry the run when it is done.');
    if (outcome === 'dropped') return apiError('run_not_retryable', 'The request of this run is no longer stored; it cannot be sent again.');
    if (outcome !== 'ok') {
      return apiError('run_not_retryable', `The run is ${outcome}; only a failed, timed_out or expired run can be retried.`);
    }
    this.logger.info({ run_id: id }, 'run queued again (retry)');
    this.metrics.runsRetried.inc();
    const after = await this.store.get(id);
    return after ? jsonReply(202, after.view) : notFound();
  }

  /**
   * A page of runs, newest first: through Envoy the caller's own (its owner indexes alone, never
   * other tenants' runs), on the admin port every run.
   */
  private async list(req: ApiRequest, scope: ApiScope): Promise<HttpReply> {
    const owner = this.ownerOf(req, scope) ?? undefined;
    const params = parseQuery(splitPath(req.path).query);
    const get = (name: string) => {
      const p = params.find((x) => x.name === name);
      return p ? paramValue(p) : null;
    };
    const status = get('status');
    if (status !== null && !STATUSES.has(status)) return apiError('invalid_status', `status must be one of ${[...STATUSES].join(', ')}.`);
    const limitRaw = get('limit') ?? '50';
    if (!/^\d+$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > 500)
      return apiError('invalid_limit', 'limit must be a whole number from 1 to 500.');
    const limit = Number(limitRaw);
    const cursorRaw = get('cursor');
    const cursorMatch = cursorRaw === null ? null : /^(\d+)_([0-9a-f-]{36})$/.exec(cursorRaw);
    if (cursorRaw !== null && !cursorMatch) return apiError('invalid_cursor', 'cursor must be the next_cursor of an earlier page.');
    let after = cursorMatch ? { createdAt: Number(cursorMatch[1]), id: cursorMatch[2]! } : undefined;
    const runs: RunView[] = [];
    let nextCursor: string | null = null;
    // Walk the index newest first, skipping expired runs and other statuses, a page at a time.
    for (let scanned = 0; runs.length < limit && scanned < 10_000;) {
      const entries = await this.store.recentIds(Math.max(limit * 2, 100), after, owner);
      if (entries.length === 0) break;
      scanned += entries.length;
      const views = await Promise.all(entries.map(({ id }) => this.store.get(id)));
      for (let i = 0; i < entries.length && runs.length < limit; i++) {
        after = entries[i]!;
        const run = views[i];
        const v = run && this.visible(run.owner, req, scope) ? run.view : undefined;
        if (v && (status === null || v.status === (status as RunStatus))) runs.push(v);
      }
      if (runs.length >= limit && after) nextCursor = `${after.createdAt}_${after.id}`;
    }
    return jsonReply(200, { runs, next_cursor: nextCursor });
  }
}

function notFound(): HttpReply {
  return apiError('run_not_found', 'No run with this id exists for these credentials.');
}

function methodNotAllowed(allow: string): HttpReply {
  return apiError('method_not_allowed', `Allowed methods: ${allow}.`, { headers: [['allow', allow]] });
}
