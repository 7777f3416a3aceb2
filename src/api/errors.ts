import type { HttpReply } from '../extproc';

/**
 * Every error the sidecar answers, by code: its HTTP status and, for those a client should simply
 * retry, its `retry-after` (seconds). The code is the JSON error's `code`, the metric label and
 * Envoy's %RESPONSE_CODE_DETAILS% (`async_sidecar_<code>`); docs/CONTRACT.md §2 describes the shape.
 * One table, as fastify's lib/errors.js and undici's lib/core/errors.js keep theirs.
 */
export const API_ERRORS = {
  // accepting a run
  invalid_webhook_endpoint: { status: 400 },
  webhook_endpoint_not_allowed: { status: 400 },
  invalid_priority: { status: 400 },
  invalid_webhook_events: { status: 400 },
  invalid_webhook_secret: { status: 400 },
  webhook_secret_unsupported: { status: 400 },
  invalid_idempotency_key: { status: 400 },
  owner_required: { status: 401 },
  body_too_large: { status: 413 },
  idempotency_key_reused: { status: 422 },
  shutting_down: { status: 503, retryAfterS: 1 },
  store_unavailable: { status: 503, retryAfterS: 1 },
  store_uncertain: { status: 503, retryAfterS: 1 },
  store_not_replicated: { status: 503, retryAfterS: 1 },
  // the runs API (invalid_wait also for an async request's Prefer: wait)
  invalid_wait: { status: 400 },
  invalid_status: { status: 400 },
  invalid_limit: { status: 400 },
  invalid_cursor: { status: 400 },
  run_not_found: { status: 404 },
  method_not_allowed: { status: 405 },
  no_result: { status: 409 },
  run_already_finished: { status: 409 },
  run_not_finished: { status: 409 },
  run_cancelled: { status: 409 },
  no_webhook: { status: 409 },
  delivery_pending: { status: 409 },
  run_not_retryable: { status: 409 },
  redeliver_too_soon: { status: 429 },
  // the admin port
  unauthorized: { status: 401 },
  host_not_allowed: { status: 403 },
  cross_site_request: { status: 403 },
  not_found: { status: 404 },
  internal_error: { status: 500 },
} as const satisfies Record<string, { status: number; retryAfterS?: number }>;

export type ApiErrorCode = keyof typeof API_ERRORS;

export interface ApiErrorOptions {
  /** Headers besides content-type (and retry-after, which the catalog adds). */
  headers?: Array<[string, string]>;
  /** More fields of the error object (e.g. the run_id a client should look up). */
  fields?: Record<string, string>;
  /** Overrides the catalog's retry-after (seconds). */
  retryAfterS?: number;
}

/** The JSON error reply for `code`: `{"error":{"code","message",...fields}}` with the catalog's status. */
export function apiError(code: ApiErrorCode, message: string, options: ApiErrorOptions = {}): HttpReply {
  const spec: { status: number; retryAfterS?: number } = API_ERRORS[code];
  const headers: Array<[string, string]> = [['content-type', 'application/json']];
  const retryAfter = options.retryAfterS ?? spec.retryAfterS;
  if (retryAfter !== undefined) headers.push(['retry-after', String(retryAfter)]);
  if (options.headers) headers.push(...options.headers);
  return {
    status: spec.status,
    headers,
    body: `${JSON.stringify({ error: { code, message, ...options.fields } })}\n`,
    details: `async_sidecar_${code}`,
  };
}

export function jsonReply(status: number, value: unknown, extraHeaders: Array<[string, string]> = []): HttpReply {
  return { status, headers: [['content-type', 'application/json'], ...extraHeaders], body: `${JSON.stringify(value)}\n` };
}

/** OWNER_REQUIRED and no owner header: the caller must say who it is (accept and runs API alike). */
export function ownerRequired(header: string): HttpReply {
  return apiError('owner_required', `This endpoint needs the ${header} header: runs are scoped to it.`);
}
