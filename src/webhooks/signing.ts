import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

const SECRET_FORMAT = /^whsec_[A-Za-z0-9+/]+={0,2}$/;

/**
 * Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`) made with
 * the `standardwebhooks` package, one `v1,<base64>` per configured secret (rotation: a receiver
 * that knows any one of them verifies). The Webhook instances are built once.
 *
 * Note: the package signs `Buffer` payloads as their UTF-8 decoding (`payload.toString()`), and
 * so does its `verify`; for text bodies that is exactly the bytes. For bodies that are not valid
 * UTF-8 the signature covers the decoded text (invalid sequences as U+FFFD), which the JS
 * library verifies but a raw-bytes implementation would not.
 */
export class WebhookSigner {
  private readonly hooks: Webhook[];

  constructor(secrets: readonly string[]) {
    this.hooks = secrets.map((s, i) => {
      const secret = s.trim();
      if (!SECRET_FORMAT.test(secret)) throw new Error(`webhook secret #${i + 1} must be whsec_<base64>`);
      return new Webhook(secret);
    });
  }

  /** True when at least one secret is configured. */
  get enabled(): boolean {
    return this.hooks.length > 0;
  }

  /** The `webhook-signature` value (space-separated `v1,<sig>`), or null with no secret. */
  sign(webhookId: string, timestamp: Date, body: Buffer): string | null {
    if (this.hooks.length === 0) return null;
    return this.hooks.map((h) => h.sign(webhookId, timestamp, body)).join(' ');
  }

  /** The three Standard Webhooks headers (no `webhook-signature` without a secret). */
  headers(webhookId: string, body: Buffer, now: Date = new Date()): Record<string, string> {
    const seconds = Math.floor(now.getTime() / 1000);
    const out: Record<string, string> = { 'webhook-id': webhookId, 'webhook-timestamp': String(seconds) };
    const signature = this.sign(webhookId, new Date(seconds * 1000), body);
    if (signature !== null) out['webhook-signature'] = signature;
    return out;
  }
}

/**
 * Cerebrium's webhook signature, for receivers written against Cerebrium
 * (https://docs.cerebrium.ai/cerebrium/endpoints/webhook): `v1,` + the hex HMAC-SHA256, keyed with
 * the request's `X-Webhook-Secret`, of `<X-Request-Id>.<X-Cerebrium-Webhook-Timestamp>.<body>`.
 * The body's bytes are signed as they are sent (for UTF-8 text, what that page's Python computes).
 */
export function cerebriumSignature(secret: Buffer, requestId: string, timestampS: number, body: Buffer): string {
  const mac = createHmac('sha256', secret).update(`${requestId}.${timestampS}.`, 'latin1').update(body);
  return `v1,${mac.digest('hex')}`;
}
