import type { RequestHead } from '../extproc';
import { headerValue, paramValue, parseQuery, splitPath, type QueryParam } from './request-parts';

/** The events a run's webhookEndpoint may ask for (as Replicate's webhook_events_filter), README "Webhook events". */
export const WEBHOOK_EVENTS = ['started', 'completed'] as const;

/** The per-request header whose value signs the run's webhooks as Cerebrium does. */
export const WEBHOOK_SECRET_HEADER = 'x-webhook-secret';

/** 1-256 visible ASCII characters (inner spaces allowed): its bytes are the same in every encoding a receiver may assume. */
const SECRET_FORMAT = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

/** What an async request asks of its webhooks besides the final one. */
export interface WebhookOptions {
  /** Also send the `started` event. */
  started: boolean;
  /** The X-Webhook-Secret's bytes (Cerebrium-compatible signatures), or null. */
  secret: Buffer | null;
}

export type WebhookOptionsCheck =
  | { ok: true; options: WebhookOptions }
  | { ok: false; code: 'invalid_webhook_events' | 'invalid_webhook_secret' | 'webhook_secret_unsupported'; message: string };

/**
 * Reads `webhookEvents` (comma-separated, or repeated: `started`, `completed`; the final webhook
 * is always sent, so the list must name `completed`) and `X-Webhook-Secret`. Both need a
 * webhookEndpoint; without one the secret is ignored (and never stored or replayed). A secret
 * can only be kept where a key can seal it (`canSeal`).
 */
export function parseWebhookOptions(
  head: RequestHead,
  hasEndpoint: boolean,
  canSeal: boolean,
  /** The request's query parameters, when already parsed. */
  query: readonly QueryParam[] = parseQuery(splitPath(head.path).query),
): WebhookOptionsCheck {
  const params = query.filter((p) => p.name === 'webhookEvents');
  let started = false;
  if (params.length > 0) {
    const values = params.flatMap((p) => (paramValue(p) ?? '\u0000').split(',')).map((v) => v.trim());
    const known = new Set<string>(WEBHOOK_EVENTS);
    const usage = `webhookEvents must list events from ${WEBHOOK_EVENTS.join(', ')}, comma-separated, including completed`;
    if (!hasEndpoint) return { ok: false, code: 'invalid_webhook_events', message: 'webhookEvents needs a webhookEndpoint.' };
    if (values.some((v) => !known.has(v))) return { ok: false, code: 'invalid_webhook_events', message: `${usage}.` };
    if (!values.includes('completed')) return { ok: false, code: 'invalid_webhook_events', message: `${usage}: the final webhook is always sent.` };
    started = values.includes('started');
  }
  const raw = headerValue(head.headers, WEBHOOK_SECRET_HEADER);
  if (raw === undefined || !hasEndpoint) return { ok: true, options: { started, secret: null } };
  if (!canSeal) {
    return {
      ok: false,
      code: 'webhook_secret_unsupported',
      message: 'This sidecar does not keep X-Webhook-Secret values (no WEBHOOK_SECRET_ENCRYPTION_KEY); send the request without it.',
    };
  }
  if (!SECRET_FORMAT.test(raw)) return { ok: false, code: 'invalid_webhook_secret', message: 'X-Webhook-Secret must be 1-256 visible ASCII characters.' };
  return { ok: true, options: { started, secret: Buffer.from(raw, 'latin1') } };
}
