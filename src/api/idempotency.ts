import { createHash } from 'node:crypto';

/**
 * The `Idempotency-Key` request header (IETF draft-ietf-httpapi-idempotency-key-header,
 * https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/): a Structured
 * Field String (RFC 9651 §3.3.3), `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.
 * Many clients send the value bare, as Stripe documents it; both forms name the same key.
 */

/** Longest key accepted, in characters (Stripe's limit). */
export const IDEMPOTENCY_KEY_MAX_LENGTH = 255;

export type IdempotencyKeyParse = { ok: true; key: string | null } | { ok: false; message: string };

/** A bare key: visible ASCII without `"` and `\` (they belong to the quoted form) or `,` (two fields joined). */
const BARE = /^[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+$/;

/**
 * Parses an sf-string (RFC 9651 §4.2.5): `"`, then printable ASCII with `\"` and `\\` as the only
 * escapes, then `"`. Returns the decoded string, or null when `value` is not exactly one. Item
 * parameters (`;name=value`) are not accepted: the draft defines none.
 */
function parseSfString(value: string): string | null {
  let out = '';
  for (let i = 1; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\') {
      const next = value[++i];
      if (next !== '"' && next !== '\\') return null;
      out += next;
    } else if (c === '"') {
      return i === value.length - 1 ? out : null;
    } else if (c < '\x20' || c > '\x7e') {
      return null;
    } else {
      out += c;
    }
  }
  return null;
}

/**
 * The key of a request's `Idempotency-Key` field values (null when it has none), or why it is
 * unusable: more than one field, an empty value, a broken quoted string, characters outside
 * visible ASCII, or more than IDEMPOTENCY_KEY_MAX_LENGTH characters.
 */
export function parseIdempotencyKey(values: readonly string[]): IdempotencyKeyParse {
  if (values.length === 0) return { ok: true, key: null };
  const bad = (why: string): IdempotencyKeyParse => ({
    ok: false,
    message: `Idempotency-Key ${why}; send one key of 1-${IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters, quoted ("...") or bare.`,
  });
  if (values.length > 1) return bad('is sent more than once');
  const value = values[0]!.trim();
  let key: string | null;
  if (value.startsWith('"')) {
    key = parseSfString(value);
    if (key === null) return bad('is not a valid quoted string');
  } else {
    if (value !== '' && !BARE.test(value)) return bad('has characters a bare key cannot have');
    key = value;
  }
  if (key.length === 0) return bad('is empty');
  if (key.length > IDEMPOTENCY_KEY_MAX_LENGTH) return bad(`is longer than ${IDEMPOTENCY_KEY_MAX_LENGTH} characters`);
  return { ok: true, key };
}

/**
 * What an Idempotency-Key stands for: SHA-256 over the method, the path, the query without
 * `async` and `webhookEndpoint` (they say how to run the request, not what it is) and the body.
 * None of the first three can hold a newline (Envoy sends an origin-form `:path`), so the newlines
 * keep the parts apart.
 */
export function requestFingerprint(method: string, pathname: string, query: string, body: Buffer): string {
  return createHash('sha256').update(`${method}\n${pathname}\n${query}\n`, 'latin1').update(body).digest('hex');
}
