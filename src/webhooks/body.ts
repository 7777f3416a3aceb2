export interface WebhookBodyInput {
  runId: string;
  status: string;
  error: string | null;
  upstream: { statusCode: number; contentType: string | null; body: Buffer } | null;
}

export interface WebhookBody {
  body: Buffer;
  contentType: string;
}

/**
 * The body of a run's webhook (docs/CONTRACT.md §4):
 * - an upstream response whose body fits in `maxBytes`: that body, byte for byte, with its
 *   content type (`application/octet-stream` when it had none);
 * - no upstream response (timeout, connection error...): JSON `{"run_id","status","error"}`;
 * - an upstream body larger than `maxBytes`: a JSON envelope instead of the body,
 *   `{"run_id","status","error","upstream_status","content_type","size","truncated":true,"result_url"}`
 *   (`size` in bytes, `truncated` always true, `result_url` where the whole result can be read).
 */
export function buildWebhookBody(input: WebhookBodyInput, maxBytes: number, resultUrl: string): WebhookBody {
  const json = (value: unknown): WebhookBody => ({ body: Buffer.from(JSON.stringify(value), 'utf8'), contentType: 'application/json' });
  const up = input.upstream;
  if (up === null) return json({ run_id: input.runId, status: input.status, error: input.error });
  if (up.body.length > maxBytes) {
    return json({
      run_id: input.runId,
      status: input.status,
      error: input.error,
      upstream_status: up.statusCode,
      content_type: up.contentType,
      size: up.body.length,
      truncated: true,
      result_url: resultUrl,
    });
  }
  const contentType = up.contentType !== null && up.contentType.trim() !== '' ? up.contentType : 'application/octet-stream';
  return { body: up.body, contentType };
}

/**
 * The body of a run's `started` event (webhookEvents=started, README "Webhook events"): JSON
 * `{"event":"started","run_id","status":"running","started_at"}`, `started_at` being when the app
 * call first began (ISO 8601, ms). The final webhook's webhook-timestamp is always later.
 */
export function buildStartedBody(runId: string, startedAtMs: number): WebhookBody {
  const value = { event: 'started', run_id: runId, status: 'running', started_at: new Date(startedAtMs).toISOString() };
  return { body: Buffer.from(JSON.stringify(value), 'utf8'), contentType: 'application/json' };
}
