import { parseAsyncRequest, replayHeaders, ownerFingerprint, requestedPriority } from '../../src/api';
import { backoffDelay } from '../../src/dispatch';
import type { RequestHead } from '../../src/extproc';

const head = (path: string, headers: Array<[string, string]> = []): RequestHead => ({
  method: 'POST',
  path,
  authority: 'api.example.com',
  scheme: 'https',
  headers,
  endOfStream: false,
});

describe('async trigger (docs/CONTRACT.md §2)', () => {
  it.each([
    ['/run?async=true', 'query'],
    ['/run?async=TRUE', 'query'],
    ['/run?async=True&x=1', 'query'],
    ['/run?x=1&async=1', 'query'],
  ])('%s is async', (path, trigger) => {
    expect(parseAsyncRequest(head(path))?.trigger).toBe(trigger);
  });

  it.each(['/run', '/run?async=false', '/run?async=0', '/run?async=', '/run?asynchronous=true', '/run?xasync=true'])('%s is not async', (path) => {
    expect(parseAsyncRequest(head(path))).toBeNull();
  });

  it('takes the Prefer: respond-async token among others', () => {
    expect(parseAsyncRequest(head('/run', [['prefer', 'return=minimal, respond-async; wait=5']]))?.trigger).toBe('prefer');
    expect(parseAsyncRequest(head('/run', [['prefer', 'respond-asynchronously']]))).toBeNull();
  });

  it('removes async and webhookEndpoint and keeps other parameters in order and encoding', () => {
    const r = parseAsyncRequest(head('/v4/p-1/app/run?b=2&async=true&a=%20x+y&webhookEndpoint=https%3A%2F%2Fh.example%2Fcb%3Fk%3Dv&b=1'))!;
    expect(r.pathname).toBe('/v4/p-1/app/run');
    expect(r.query).toBe('b=2&a=%20x+y&b=1');
    expect(r.webhookEndpoint).toBe('https://h.example/cb?k=v');
  });

  it('flags a webhookEndpoint with broken percent-encoding', () => {
    expect(parseAsyncRequest(head('/r?async=1&webhookEndpoint=%E0%A4%A'))!.badEncoding).toBe(true);
  });
});

describe('replayed headers (docs/CONTRACT.md §3)', () => {
  it('drops hop-by-hop and Connection-named headers, sets host and x-async-run-id, strips respond-async', () => {
    const out = replayHeaders(
      head('/r', [
        ['connection', 'keep-alive, x-hop'],
        ['x-hop', '1'],
        ['keep-alive', 'timeout=5'],
        ['transfer-encoding', 'chunked'],
        ['content-length', '5'],
        ['authorization', 'Bearer t'],
        ['prefer', 'respond-async, return=minimal'],
        ['x-envoy-upstream-rq-timeout-ms', '10'],
        ['x-request-id', 'abc'],
        ['x-async-run-id', 'spoofed'],
      ]),
      'run-1',
    );
    expect(out).toEqual([
      ['host', 'api.example.com'],
      ['authorization', 'Bearer t'],
      ['prefer', 'return=minimal'],
      ['x-request-id', 'abc'],
      ['x-async-run-id', 'run-1'],
    ]);
  });

  it('drops a Prefer header that held only respond-async', () => {
    expect(replayHeaders(head('/r', [['prefer', 'respond-async']]), 'id').map(([k]) => k)).toEqual(['host', 'x-async-run-id']);
  });
});

describe('owner fingerprint', () => {
  it('is a SHA-256 of the header value, empty without one', () => {
    expect(ownerFingerprint(undefined)).toBe('');
    expect(ownerFingerprint('Bearer a')).toHaveLength(64);
    expect(ownerFingerprint('Bearer a')).not.toBe(ownerFingerprint('Bearer b'));
  });
});

describe('run priority from Prefer (README "Queues")', () => {
  const head = (prefer?: string): RequestHead => ({
    method: 'POST',
    path: '/x',
    scheme: 'http',
    authority: 'app',
    endOfStream: false,
    headers: prefer ? [['prefer', prefer]] : [],
  });
  it('lets a client lower its priority, never raise it; other values are refused', () => {
    expect(requestedPriority(head(), 'normal')).toBe(1);
    expect(requestedPriority(head('respond-async, priority=low'), 'normal')).toBe(2);
    expect(requestedPriority(head('priority="LOW"'), 'high')).toBe(2);
    expect(requestedPriority(head('priority=normal'), 'high')).toBe(1);
    expect(requestedPriority(head('priority=high'), 'normal')).toBe(1);
    expect(requestedPriority(head('priority=high'), 'low')).toBe(2);
    expect(requestedPriority(head('priority=urgent'), 'normal')).toBeNull();
  });
  it("keeps the sidecar's tokens (respond-async, priority, wait) from the app, and the others", () => {
    expect(replayHeaders(head('respond-async, priority=low, wait=5, handling=lenient'), 'id')).toContainEqual(['prefer', 'handling=lenient']);
    expect(replayHeaders(head('respond-async, wait=5'), 'id').some(([k]) => k === 'prefer')).toBe(false);
  });
});

describe('backoff when the app says "not now"', () => {
  it("honours the app's Retry-After up to the queue's maximum", () => {
    expect(backoffDelay(0, 1000, 60_000)).toBe(1000);
    expect(backoffDelay(5, 0, 60_000)).toBe(0);
    expect(backoffDelay(0, 120_000, 60_000)).toBe(60_000);
  });
  it('else doubles from 1 s with half of each delay random, capped', () => {
    expect([0, 1, 2, 3].map((t) => backoffDelay(t, null, 60_000, () => 0))).toEqual([500, 1000, 2000, 4000]);
    expect([0, 1, 2, 3].map((t) => backoffDelay(t, null, 60_000, () => 1))).toEqual([1000, 2000, 4000, 8000]);
    expect(backoffDelay(30, null, 60_000, () => 1)).toBe(60_000);
  });
});
