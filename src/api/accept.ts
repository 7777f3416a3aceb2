import { createHash } from 'node:crypto';
import type { HttpReply, RequestHead } from '../extproc';
import type { Metrics, Logger } from '../telemetry';
import { NotReplicatedError, mayHaveRun, newRunId, queueTag, type CreateResult, type NewRun, type RunStore, type Trigger } from '../runs';
import type { AcceptSpan } from '../tracing';
import { apiError, ownerRequired, type ApiErrorCode, type ApiErrorOptions } from './errors';
import { parseIdempotencyKey, requestFingerprint } from './idempotency';
import { headerValue, headerValues, paramValue, parseQuery, preferName, preferTokens, splitPath, type QueryParam } from './request-parts';
import type { SyncWait } from './sync-wait';
import { parseWebhookOptions, WEBHOOK_SECRET_HEADER, type WebhookOptions } from './webhook-options';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and headers the replay sets itself. */
const DROPPED_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'expect',
  'http2-settings',
  'x-async-run-id',
  // Meant for the sidecar, and a secret: never stored with the request or replayed.
  WEBHOOK_SECRET_HEADER,
]);

/** Query parameters meant for the sidecar: not in the replay. */
const SIDECAR_PARAMS: ReadonlySet<string | null> = new Set(['async', 'webhookEndpoint', 'webhookEvents']);

/** Prefer tokens meant for the sidecar (RFC 7240 respond-async and wait, and the run's priority): not in the replay. */
const SIDECAR_PREFERENCES: ReadonlySet<string> = new Set(['respond-async', 'wait', 'priority']);

export interface AcceptOptions {
  runsApiPrefix: string;
  ownerHeader: string;
  /** Refuse async requests without the owner header (401 owner_required). */
  ownerRequired: boolean;
  maxBodyBytes: number;
  /** The queue, grace period and default priority of a request path (CONFIG_FILE routes). */
  placementFor: (path: string) => { queue: { name: string }; gracePeriodMs: number; priority: Priority };
  /** Accept-time check of webhookEndpoint (docs/CONTRACT.md §2); an error carries the JSON error code. */
  validateWebhookUrl: (
    raw: string,
  ) => { ok: true; url: URL } | { ok: false; code: 'invalid_webhook_endpoint' | 'webhook_endpoint_not_allowed'; message: string };
  /** False while the process is shutting down: new runs go to another replica. */
  isAccepting: () => boolean;
  /** Prefer: wait (sync if fast); without it the preference is ignored. */
  syncWait?: SyncWait;
  /** Seals an X-Webhook-Secret for its run (null: no key configured, the header is refused). */
  sealWebhookSecret?: ((secret: Buffer, runId: string) => string) | null;
}

/** Run priorities, highest first (index = the stored priority). */
const PRIORITY_ORDER = ['high', 'normal', 'low'] as const;
type Priority = (typeof PRIORITY_ORDER)[number];

/**
 * The priority a request asks for with `Prefer: priority=<high|normal|low>`: a client may lower
 * its run's priority below its route's, never raise it (a higher value is served at the route's).
 * Returns the stored priority (0-2), or null when the value is not one of the three.
 */
export function requestedPriority(head: RequestHead, routeDefault: Priority): number | null {
  return priorityPreference(preferTokens(headerValues(head.headers, 'prefer')), routeDefault);
}

/** `requestedPriority` from a request's Prefer tokens, when already split. */
function priorityPreference(preferences: readonly string[], routeDefault: Priority): number | null {
  const floor = PRIORITY_ORDER.indexOf(routeDefault);
  for (const token of preferences) {
    if (preferName(token) !== 'priority') continue;
    const value = token
      .slice(token.indexOf('=') + 1)
      .trim()
      .replace(/^"|"$/g, '')
      .toLowerCase();
    const asked = PRIORITY_ORDER.indexOf(value as Priority);
    return asked < 0 ? null : Math.max(asked, floor);
  }
  return floor;
}

/** What makes a request async, read from its head alone. */
export interface AsyncRequest {
  trigger: Trigger;
  pathname: string;
  /** The query without async, webhookEndpoint and webhookEvents, other parameters as they were. */
  query: string;
  webhookEndpoint: string | null;
  /** The query's webhookEndpoint could not be decoded. */
  badEncoding: boolean;
  /** The query's parameters and the Prefer tokens, split once for every check that reads them. */
  params: QueryParam[];
  preferences: string[];
}

/** What the checks of a request's head found, for the accept once the body is in. */
export interface CheckedHead {
  /** Prefer: wait, in seconds (0: none). */
  waitSeconds: number;
  webhook: WebhookOptions;
  idempotencyKey: string | null;
}

/** Decides whether a request asks for async execution (docs/CONTRACT.md §2); null when it does not. */
export function parseAsyncRequest(head: RequestHead): AsyncRequest | null {
  const { pathname, query } = splitPath(head.path);
  const params = parseQuery(query);
  let trigger: Trigger | null = null;
  const asyncParam = params.find((p) => p.name === 'async');
  if (asyncParam) {
    const v = (paramValue(asyncParam) ?? '').toLowerCase();
    if (v === 'true' || v === '1') trigger = 'query';
  }
  const preferences = preferTokens(headerValues(head.headers, 'prefer'));
  if (!trigger && preferences.some((t) => preferName(t) === 'respond-async')) {
    trigger = 'prefer';
  }
  if (!trigger) return null;
  const hook = params.find((p) => p.name === 'webhookEndpoint');
  const hookValue = hook ? paramValue(hook) : null;
  return {
    trigger,
    pathname,
    query: params
      .filter((p) => !SIDECAR_PARAMS.has(p.name))
      .map((p) => p.raw)
      .join('&'),
    webhookEndpoint: hookValue,
    badEncoding: hook !== undefined && hookValue === null,
    params,
    preferences,
  };
}

/** The headers the upstream gets: the client's, minus hop-by-hop ones and the Prefer tokens meant for the sidecar. */
export function replayHeaders(head: RequestHead, runId: string): Array<[string, string]> {
  // A copy only when the request names more hop-by-hop headers in Connection (most do not).
  const named = headerValues(head.headers, 'connection');
  let hopByHop: ReadonlySet<string> = DROPPED_HEADERS;
  if (named.length > 0) {
    const more = new Set(DROPPED_HEADERS);
    for (const v of named) for (const t of v.split(',')) more.add(t.trim().toLowerCase());
    hopByHop = more;
  }
  const out: Array<[string, string]> = [['host', head.authority]];
  for (const [k, v] of head.headers) {
    // x-envoy-* describe the client's hop and some (x-envoy-upstream-rq-timeout-ms) would
    // override the dispatch listener's 12-hour route timeout.
    if (hopByHop.has(k) || k.startsWith('x-envoy-')) continue;
    if (k === 'prefer') {
      const kept = preferTokens([v]).filter((t) => !SIDECAR_PREFERENCES.has(preferName(t)));
      if (kept.length > 0) out.push([k, kept.join(', ')]);
      continue;
    }
    out.push([k, v]);
  }
  out.push(['x-async-run-id', runId]);
  return out;
}

export function ownerFingerprint(value: string | undefined): string {
  return value === undefined ? '' : createHash('sha256').update(value, 'latin1').digest('hex');
}

/** The accept path: validates an async request, writes its run, answers 202 (docs/CONTRACT.md §2). */
export class AsyncAcceptor {
  constructor(
    private readonly store: RunStore,
    private readonly options: AcceptOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  /**
   * Checks that need only the head: a refusal means "refuse now, without reading the body";
   * otherwise what the checks parsed, which the accept uses as it is (each option parsed once).
   */
  precheck(head: RequestHead, req: AsyncRequest): { refusal: HttpReply } | { checked: CheckedHead } {
    const refuse = (code: ApiErrorCode, message: string) => ({ refusal: this.reject(code, message) });
    if (this.options.ownerRequired && headerValue(head.headers, this.options.ownerHeader) === undefined) {
      this.metrics.runsRejected.inc({ code: 'owner_required' });
      return { refusal: ownerRequired(this.options.ownerHeader) };
    }
    if (!this.options.isAccepting()) return refuse('shutting_down', 'This sidecar replica is shutting down; retry the request.');
    if (req.badEncoding) return refuse('invalid_webhook_endpoint', 'webhookEndpoint is not valid percent-encoding.');
    if (req.webhookEndpoint !== null) {
      const check = this.options.validateWebhookUrl(req.webhookEndpoint);
      if (!check.ok) return refuse(check.code, check.message);
    }
    if (priorityPreference(req.preferences, 'high') === null) return refuse('invalid_priority', 'Prefer: priority must be high, normal or low.');
    const waitSeconds = this.options.syncWait?.seconds(req.preferences) ?? 0;
    if (waitSeconds === 'invalid') return refuse('invalid_wait', 'Prefer: wait must be a whole number of seconds.');
    const webhook = parseWebhookOptions(head, req.webhookEndpoint !== null, !!this.options.sealWebhookSecret, req.params);
    if (!webhook.ok) return refuse(webhook.code, webhook.message);
    const key = parseIdempotencyKey(headerValues(head.headers, 'idempotency-key'));
    if (!key.ok) return refuse('invalid_idempotency_key', key.message);
    return { checked: { waitSeconds, webhook: webhook.options, idempotencyKey: key.key } };
  }

  /** How long Envoy must hold the answer once the body is in (Prefer: wait), if at all. */
  holdMs(checked: CheckedHead): number | undefined {
    return this.options.syncWait?.holdMs(checked.waitSeconds);
  }

  tooLarge(): HttpReply {
    return this.reject('body_too_large', `The request body exceeds the limit of ${this.options.maxBodyBytes} bytes.`);
  }

  /** `signal`: the client went away (a held `Prefer: wait`); `span`: the request's accept span when tracing is on (its context is stored with the run). */
  async accept(head: RequestHead, req: AsyncRequest, checked: CheckedHead, body: Buffer, signal?: AbortSignal, span?: AcceptSpan): Promise<HttpReply> {
    const receivedAt = Date.now();
    if (body.length > this.options.maxBodyBytes) return this.tooLarge();
    const placement = this.options.placementFor(req.pathname);
    const queue = placement.queue.name;
    const id = newRunId(queueTag(queue));
    const run: NewRun = {
      id,
      trigger: req.trigger,
      method: head.method,
      path: req.pathname,
      target: req.query === '' ? req.pathname : `${req.pathname}?${req.query}`,
      headers: replayHeaders(head, id),
      body,
      requestId: headerValue(head.headers, 'x-request-id') ?? null,
      owner: ownerFingerprint(headerValue(head.headers, this.options.ownerHeader)),
      webhookUrl: req.webhookEndpoint,
      gracePeriodMs: placement.gracePeriodMs,
      queue,
      // Checked by precheck: a valid value, or none.
      priority: priorityPreference(req.preferences, placement.priority) ?? 1,
      idempotency:
        checked.idempotencyKey === null
          ? undefined
          : { key: checked.idempotencyKey, fingerprint: requestFingerprint(head.method, req.pathname, req.query, body) },
    };
    if (span) {
      run.trace = span.runTrace;
      span.runCreated(run);
    }
    if (checked.webhook.started) run.webhookStarted = true;
    if (checked.webhook.secret) run.webhookSecret = this.options.sealWebhookSecret!(checked.webhook.secret, id);
    let created: CreateResult;
    try {
      created = await this.store.create(run);
    } catch (err) {
      this.metrics.redisErrors.inc({ operation: 'create_run' });
      const location: Array<[string, string]> = [['location', `${this.options.runsApiPrefix}/${id}`]];
      if (err instanceof NotReplicatedError) {
        // Stored on the primary, not (yet) on enough replicas: the run will run unless that
        // primary fails before it replicates. The client decides, with the run id to look up.
        this.logger.error({ err, request_id: run.requestId, run_id: id, acknowledged: err.acknowledged }, 'a new run was not confirmed by enough replicas');
        return this.reject(
          'store_not_replicated',
          `The run was stored, but not confirmed by ${err.required} Redis replica(s) in time (REDIS_MIN_REPLICAS_ACK); a failover could lose it. Look it up at ${this.options.runsApiPrefix}/${id} before retrying.`,
          { headers: location, fields: { run_id: id } },
        );
      }
      // A lost reply (timeout, connection closed mid-command) means the script may have run: the
      // run may exist, and a blind retry could start the app twice.
      const uncertain = mayHaveRun(err);
      this.logger.error({ err, request_id: run.requestId, run_id: id, uncertain }, 'could not store a new run');
      if (uncertain) {
        return this.reject(
          'store_uncertain',
          `Redis did not confirm the run (no reply: a timeout or a dropped connection); it may have been stored. Look it up at ${this.options.runsApiPrefix}/${id} before retrying${run.idempotency ? ', or retry with the same Idempotency-Key' : ''}.`,
          { headers: location, fields: { run_id: id } },
        );
      }
      return this.reject('store_unavailable', 'The run could not be stored; nothing was accepted. Retry later.');
    }
    if (created.outcome === 'conflict') {
      this.logger.info({ run_id: created.runId, request_id: run.requestId, queue }, 'idempotency key reused for another request');
      return this.reject(
        'idempotency_key_reused',
        'This Idempotency-Key was already used for a different request (method, path, query or body); use a new key for a new request.',
      );
    }
    if (created.outcome === 'replayed') {
      this.metrics.runsReplayed.inc();
      this.logger.info({ run_id: created.runId, request_id: run.requestId, queue }, 'idempotent request replayed');
      return this.answer(this.accepted(created.runId, req.trigger, true), created.runId, run.owner, checked.waitSeconds, receivedAt, signal);
    }
    this.metrics.runsAccepted.inc({ trigger: req.trigger });
    this.logger.info(
      {
        run_id: id,
        request_id: run.requestId,
        method: run.method,
        path: run.path,
        trigger: req.trigger,
        queue,
        body_bytes: body.length,
        webhook: run.webhookUrl !== null,
        ...span?.logFields,
      },
      'run queued',
    );
    return this.answer(this.accepted(id, req.trigger), id, run.owner, checked.waitSeconds, receivedAt, signal);
  }

  /** The 202, or with `Prefer: wait=N` the app's own answer if the run ends within N s. */
  private answer(
    accepted: HttpReply,
    id: string,
    owner: string,
    waitSeconds: number,
    receivedAt: number,
    signal?: AbortSignal,
  ): HttpReply | Promise<HttpReply> {
    if (waitSeconds > 0 && this.options.syncWait) return this.options.syncWait.answer(accepted, { id, owner }, waitSeconds, receivedAt, signal);
    return accepted;
  }

  /** The 202 of a run (docs/CONTRACT.md §2): the same bytes for a new run and for a replay, which `idempotent-replayed` marks. */
  private accepted(id: string, trigger: Trigger, replayed = false): HttpReply {
    const headers: Array<[string, string]> = [
      ['content-type', 'application/json'],
      ['x-request-id', id],
      ['location', `${this.options.runsApiPrefix}/${id}`],
    ];
    if (trigger === 'prefer') headers.push(['preference-applied', 'respond-async']);
    // Stripe's name for it (the draft defines none): https://docs.stripe.com/api/idempotent_requests
    if (replayed) headers.push(['idempotent-replayed', 'true']);
    return { status: 202, headers, body: `{"run_id":"${id}"}\n`, details: replayed ? 'async_run_replayed' : 'async_run_accepted' };
  }

  private reject(code: ApiErrorCode, message: string, options?: ApiErrorOptions): HttpReply {
    this.metrics.runsRejected.inc({ code });
    return apiError(code, message, options);
  }
}
