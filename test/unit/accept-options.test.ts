/**
 * What an async request asks of the sidecar besides the run itself, read from its head:
 * `Prefer: wait` (README "Sync if fast"), `webhookEvents` and `X-Webhook-Secret` (README
 * "Webhooks"), and that none of them reaches the app.
 */
import { parseAsyncRequest, parseWebhookOptions, replayHeaders, requestedWait } from '../../src/api';
import type { RequestHead } from '../../src/extproc';

const head = (path: string, headers: Array<[string, string]> = []): RequestHead => ({
  method: 'POST',
  path,
  authority: 'api.example.com',
  scheme: 'https',
  headers,
  endOfStream: false,
});

describe('Prefer: wait (RFC 7240 §4.3)', () => {
  const wait = (prefer: string, max = 60) => requestedWait(head('/x', [['prefer', prefer]]), max);
  it('reads delta-seconds among other tokens, capped at MAX_SYNC_WAIT', () => {
    expect(wait('respond-async, wait=10')).toBe(10);
    expect(wait('wait = 7')).toBe(7);
    expect(wait('wait="3"')).toBe(3);
    expect(wait('wait=5; x=1')).toBe(5);
    expect(wait('wait=0')).toBe(0);
    expect(wait('wait=600')).toBe(60);
    expect(wait('WAIT=2', 5)).toBe(2);
  });
  it("takes a bare wait as the cap (Replicate's Prefer: wait)", () => {
    expect(wait('wait', 25)).toBe(25);
  });
  it('refuses what is not whole seconds, and ignores everything with holding off', () => {
    for (const v of ['wait=abc', 'wait=1.5', 'wait=-1', 'wait=', 'wait=1e3']) expect([v, wait(v)]).toEqual([v, 'invalid']);
    expect(wait('wait=abc', 0)).toBeNull();
    expect(wait('wait=10', 0)).toBeNull();
    expect(requestedWait(head('/x', [['prefer', 'respond-async']]), 60)).toBeNull();
    expect(requestedWait(head('/x'), 60)).toBeNull();
  });
  it('is removed from the replay with the other tokens meant for the sidecar', () => {
    expect(replayHeaders(head('/x', [['prefer', 'wait=5, return=minimal']]), 'id')).toContainEqual(['prefer', 'return=minimal']);
  });
});

describe('webhookEvents and X-Webhook-Secret', () => {
  const opts = (path: string, headers: Array<[string, string]> = [], hasEndpoint = true, canSeal = true) =>
    parseWebhookOptions(head(path, headers), hasEndpoint, canSeal);
  it('asks for the started event with started,completed (comma-separated or repeated)', () => {
    expect(opts('/x?webhookEvents=started,completed')).toEqual({ ok: true, options: { started: true, secret: null } });
    expect(opts('/x?webhookEvents=completed%2Cstarted')).toEqual({ ok: true, options: { started: true, secret: null } });
    expect(opts('/x?webhookEvents=started&webhookEvents=completed')).toEqual({ ok: true, options: { started: true, secret: null } });
    expect(opts('/x?webhookEvents=completed')).toEqual({ ok: true, options: { started: false, secret: null } });
    expect(opts('/x')).toEqual({ ok: true, options: { started: false, secret: null } });
  });
  it('refuses unknown events, a list without completed, and events without a webhookEndpoint', () => {
    for (const q of ['webhookEvents=started', 'webhookEvents=', 'webhookEvents=start,completed', 'webhookEvents=output,completed', 'webhookEvents=%zz']) {
      const r = opts(`/x?${q}`);
      expect([q, r.ok ? 'ok' : r.code]).toEqual([q, 'invalid_webhook_events']);
    }
    expect(opts('/x?webhookEvents=started,completed', [], false)).toMatchObject({ ok: false, code: 'invalid_webhook_events' });
  });
  it('takes X-Webhook-Secret with a webhookEndpoint, as bytes; refuses it without a key or out of format; ignores it without an endpoint', () => {
    expect(opts('/x', [['x-webhook-secret', 'my secret-1']])).toEqual({ ok: true, options: { started: false, secret: Buffer.from('my secret-1') } });
    expect(opts('/x', [['x-webhook-secret', 's']], true, false)).toMatchObject({ ok: false, code: 'webhook_secret_unsupported' });
    for (const bad of ['', ' lead', 'trail ', 'caf\xe9', 'x'.repeat(257), 'tab\there']) {
      expect([JSON.stringify(bad), opts('/x', [['x-webhook-secret', bad]])]).toMatchObject([
        JSON.stringify(bad),
        { ok: false, code: 'invalid_webhook_secret' },
      ]);
    }
    expect(opts('/x', [['x-webhook-secret', 'x'.repeat(256)]]).ok).toBe(true);
    expect(opts('/x', [['x-webhook-secret', 'whatever']], false, false)).toEqual({ ok: true, options: { started: false, secret: null } });
  });
  it('never reaches the app: webhookEvents leaves the query, X-Webhook-Secret the headers', () => {
    const r = parseAsyncRequest(head('/run?async=true&webhookEvents=started,completed&a=1&webhookEndpoint=https%3A%2F%2Fh.example%2F'))!;
    expect(r.query).toBe('a=1');
    const out = replayHeaders(
      head('/run', [
        ['x-webhook-secret', 's3cret'],
        ['x-other', '1'],
      ]),
      'id',
    );
    expect(out.map(([k]) => k)).toEqual(['host', 'x-other', 'x-async-run-id']);
  });
});
