import { IDEMPOTENCY_KEY_MAX_LENGTH, parseIdempotencyKey, requestFingerprint } from '../../src/api/idempotency';

describe('Idempotency-Key (draft-ietf-httpapi-idempotency-key-header)', () => {
  it.each([
    ['"8e03978e-40d5-43e8-bc93-6894a57f9324"', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
    ['8e03978e-40d5-43e8-bc93-6894a57f9324', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
    ['  "padded"  ', 'padded'],
    ['"with space"', 'with space'],
    ['"esc\\"aped\\\\"', 'esc"aped\\'],
    ['order_17:retry#1', 'order_17:retry#1'],
    ['"a,b"', 'a,b'],
    [`"${'k'.repeat(IDEMPOTENCY_KEY_MAX_LENGTH)}"`, 'k'.repeat(IDEMPOTENCY_KEY_MAX_LENGTH)],
  ])('reads the value #%# as its key (the quoted structured-field form and a bare token)', (value, key) => {
    expect(parseIdempotencyKey([value])).toEqual({ ok: true, key });
  });

  it('has no key when the header is absent', () => {
    expect(parseIdempotencyKey([])).toEqual({ ok: true, key: null });
  });

  it.each([
    ['""', /is empty/],
    ['', /is empty/],
    ['"unterminated', /not a valid quoted string/],
    ['"two" "strings"', /not a valid quoted string/],
    ['"param";a=1', /not a valid quoted string/],
    ['"bad \\n escape"', /not a valid quoted string/],
    ['"tab\tinside"', /not a valid quoted string/],
    ['"ünïcode"', /not a valid quoted string/],
    ['two,keys', /characters a bare key cannot have/],
    ['bare with space', /characters a bare key cannot have/],
    ['half"quoted', /characters a bare key cannot have/],
    ['ünïcode', /characters a bare key cannot have/],
    ['k'.repeat(IDEMPOTENCY_KEY_MAX_LENGTH + 1), /longer than 255/],
  ])('refuses the value #%# (%s)', (value, why) => {
    const parsed = parseIdempotencyKey([value]);
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.message).toMatch(why);
  });

  it('refuses the field sent twice (the draft: at most one per request)', () => {
    expect(parseIdempotencyKey(['a', 'b'])).toEqual({ ok: false, message: expect.stringMatching(/more than once/) });
  });

  it('fingerprints method, path, query and body, each apart', () => {
    const base = requestFingerprint('POST', '/a', 'x=1', Buffer.from('{}'));
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(requestFingerprint('POST', '/a', 'x=1', Buffer.from('{}'))).toBe(base);
    for (const other of [
      requestFingerprint('PUT', '/a', 'x=1', Buffer.from('{}')),
      requestFingerprint('POST', '/b', 'x=1', Buffer.from('{}')),
      requestFingerprint('POST', '/a', 'x=2', Buffer.from('{}')),
      requestFingerprint('POST', '/a', 'x=1', Buffer.from('{ }')),
      requestFingerprint('POST', '/a', '', Buffer.from('x=1\n{}')),
    ]) {
      expect(other).not.toBe(base);
    }
  });
});
