import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { type ResolvedAddress } from '../../src/webhooks/guard';
import { type NetworkPolicy } from '../../src/webhooks/policy';
import { WebhookSender, type AttemptResult, type WebhookDelivery } from '../../src/webhooks/sender';
import { WebhookReceiver } from '../support/webhook-receiver';

// A self-signed certificate for localhost / hooks.test / 127.0.0.1, valid 2000-2100 (test only).
const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfbFshMW9+HZbUmAU
Yn3RGjGgtDugRsWghqRUlwmWqQChRANCAAQSLU0SGM4nZX6mnUyVqKEgbF+QvPT7
putkSw7OEm6PGz4mzx0jeZC/+3/XHzTDHCiqoGPbuFL+0h/JA4DL5n9x
-----END PRIVATE KEY-----
`;
const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDDAlsb2NhbGhv
c3QwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBQxEjAQBgNVBAMM
CWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABBItTRIYzidlfqad
TJWooSBsX5C89Pum62RLDs4Sbo8bPibPHSN5kL/7f9cfNMMcKKqgY9u4Uv7SH8kD
gMvmf3GjWjBYMA8GA1UdEwEB/wQFMAMBAf8wJgYDVR0RBB8wHYIJbG9jYWxob3N0
ggpob29rcy50ZXN0hwR/AAABMB0GA1UdDgQWBBSdIn/Os6cs5ocstyiuOcarvjgS
xDAKBggqhkjOPQQDAgNIADBFAiBiZdXa8AfJZKBbh6Jgrh49rvRYKnW0sb9AAODc
l5VwLQIhALPDu91yZUuOuDgBvt2SwJPvIveSuRLUl+2ynPX7PuZt
-----END CERTIFICATE-----
`;

const SECRET_1 = `whsec_${randomBytes(24).toString('base64')}`;
const SECRET_2 = `whsec_${randomBytes(32).toString('base64')}`;
const OPEN: NetworkPolicy = { allowPrivateNetworks: true, allowedHosts: [] };
const STRICT: NetworkPolicy = { allowPrivateNetworks: false, allowedHosts: [] };

const receivers: WebhookReceiver[] = [];
const senders: WebhookSender[] = [];

// The sender is driven with hand-made deliveries (short ids, any status), not runs: the
// contract's webhooks (openapi/openapi.yaml) are checked where runs send them.
async function receiver(opts: Parameters<typeof WebhookReceiver.start>[0] = {}): Promise<WebhookReceiver> {
  const rx = await WebhookReceiver.start({ checkContract: false, ...opts });
  receivers.push(rx);
  return rx;
}

function sender(opts: Partial<ConstructorParameters<typeof WebhookSender>[0]> = {}): WebhookSender {
  const s = new WebhookSender({ secrets: [], timeoutMs: 5_000, policy: OPEN, ...opts });
  senders.push(s);
  return s;
}

function delivery(url: string, over: Partial<WebhookDelivery> = {}): WebhookDelivery {
  return {
    url,
    webhookId: 'msg_2f1c6f0e',
    runId: '6f1c2a3e-1b2c-4d5e-8f90-123456789abc',
    runStatus: 'succeeded',
    upstreamStatus: 200,
    body: Buffer.from('{"result":"ok"}'),
    contentType: 'application/json',
    ...over,
  };
}

/** A resolver that records its calls and answers from a list, one entry per call (last repeats). */
function scriptedResolver(answers: string[][]) {
  const calls: string[] = [];
  const resolve = async (hostname: string): Promise<ResolvedAddress[]> => {
    calls.push(hostname);
    const list = answers[Math.min(calls.length - 1, answers.length - 1)] ?? [];
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return { calls, resolve };
}

afterEach(async () => {
  await Promise.all(senders.splice(0).map((s) => s.close()));
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

describe('WebhookSender (real sockets on loopback)', () => {
  it('delivers: POST, body byte for byte, content type and run headers', async () => {
    const rx = await receiver();
    const body = Buffer.concat([randomBytes(4096), Buffer.from([0, 0xff, 0xfe])]);
    const r = await sender().send(delivery(`${rx.url}/x?a=1&b=%20`, { body, contentType: 'image/x-thing; q=1', runStatus: 'failed', upstreamStatus: 502 }));
    expect(r).toMatchObject({ outcome: 'delivered', statusCode: 200, error: null, retryAfterMs: null });
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
    const req = rx.nth(0);
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/hook/x?a=1&b=%20');
    expect(req.body.equals(body)).toBe(true);
    expect(req.headers['content-type']).toBe('image/x-thing; q=1');
    expect(req.headers['content-length']).toBe(String(body.length));
    expect(req.headers['x-async-run-id']).toBe('6f1c2a3e-1b2c-4d5e-8f90-123456789abc');
    expect(req.headers['x-async-run-status']).toBe('failed');
    expect(req.headers['x-async-upstream-status']).toBe('502');
    expect(req.headers['webhook-id']).toBe('msg_2f1c6f0e');
    expect(Math.abs(Number(req.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(5);
    expect(req.headers['webhook-signature']).toBeUndefined(); // no secret configured
    expect(req.headers['user-agent']).toMatch(/envoy-async-sidecar/);
  });

  it('omits x-async-upstream-status when there was no upstream response', async () => {
    const rx = await receiver();
    await sender().send(delivery(rx.url, { upstreamStatus: null, runStatus: 'timed_out' }));
    expect(rx.nth(0).headers['x-async-upstream-status']).toBeUndefined();
    expect(rx.nth(0).headers['x-async-run-status']).toBe('timed_out');
  });

  it('signs so that standardwebhooks verifies, with one secret', async () => {
    const rx = await receiver();
    const body = Buffer.from(JSON.stringify({ hello: 'wörld', n: 1 }));
    expect((await sender({ secrets: [SECRET_1] }).send(delivery(rx.url, { body }))).outcome).toBe('delivered');
    const req = rx.nth(0);
    expect(req.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(SECRET_1).verify(req.body, req.headers)).toEqual({ hello: 'wörld', n: 1 });
    expect(() => new Webhook(SECRET_2).verify(req.body, req.headers)).toThrow();
  });

  it('signs with TWO secrets (rotation): each verifies on its own; tampering fails', async () => {
    const rx = await receiver();
    const body = Buffer.from('plain text result\n');
    await sender({ secrets: [SECRET_1, SECRET_2] }).send(delivery(rx.url, { body, contentType: 'text/plain' }));
    const req = rx.nth(0);
    expect(req.headers['webhook-signature']?.split(' ')).toHaveLength(2);
    for (const secret of [SECRET_1, SECRET_2]) {
      expect(() => new Webhook(secret).verify(req.body, req.headers, { jsonParse: false })).not.toThrow();
    }
    expect(() => new Webhook(SECRET_1).verify(Buffer.from('plain text result!'), req.headers, { jsonParse: false })).toThrow();
    expect(() => new Webhook(SECRET_1).verify(req.body, { ...req.headers, 'webhook-id': 'msg_other' }, { jsonParse: false })).toThrow();
  });

  it('keeps webhook-id across attempts and re-signs each attempt', async () => {
    const rx = await receiver({ responses: [500] });
    const s = sender({ secrets: [SECRET_1] });
    expect((await s.send(delivery(rx.url))).outcome).toBe('retry');
    expect((await s.send(delivery(rx.url))).outcome).toBe('delivered');
    const a = rx.nth(0);
    const b = rx.nth(1);
    expect(a.headers['webhook-id']).toBe(b.headers['webhook-id']);
    for (const req of [a, b]) new Webhook(SECRET_1).verify(req.body, req.headers);
  });

  it('500 -> retry', async () => {
    const rx = await receiver({ responses: [500] });
    expect(await sender().send(delivery(rx.url))).toMatchObject({ outcome: 'retry', statusCode: 500, error: null, retryAfterMs: null });
  });

  it('408 -> retry; 429 and 503 carry Retry-After (seconds and HTTP-date)', async () => {
    const date = new Date(Date.now() + 120_000).toUTCString();
    const rx = await receiver({ responses: [408, { status: 429, headers: { 'retry-after': '7' } }, { status: 503, headers: { 'retry-after': date } }] });
    const s = sender();
    expect(await s.send(delivery(rx.url))).toMatchObject({ outcome: 'retry', statusCode: 408 });
    expect(await s.send(delivery(rx.url))).toMatchObject({ outcome: 'retry', statusCode: 429, retryAfterMs: 7_000 });
    const r = await s.send(delivery(rx.url));
    expect(r).toMatchObject({ outcome: 'retry', statusCode: 503 });
    expect(r.retryAfterMs).toBeGreaterThan(110_000);
    expect(r.retryAfterMs).toBeLessThanOrEqual(120_000);
  });

  it('410 and 400 -> failed (not retried); Retry-After ignored', async () => {
    const rx = await receiver({ responses: [{ status: 410, headers: { 'retry-after': '5' } }, 400] });
    const s = sender();
    expect(await s.send(delivery(rx.url))).toMatchObject({ outcome: 'failed', statusCode: 410, error: null, retryAfterMs: null });
    expect(await s.send(delivery(rx.url))).toMatchObject({ outcome: 'failed', statusCode: 400 });
  });

  it.each([301, 302, 307, 308])('%d with a Location to another loopback receiver -> failed, never followed', async (status) => {
    const other = await receiver();
    const rx = await receiver({ responses: [{ status, headers: { location: other.url } }] });
    expect(await sender().send(delivery(rx.url))).toMatchObject({ outcome: 'failed', statusCode: status });
    await new Promise((r) => setTimeout(r, 100));
    expect(rx.requests).toHaveLength(1);
    expect(other.requests).toHaveLength(0);
  });

  it('a receiver that never answers -> retry with error timeout, within the timeout', async () => {
    const rx = await receiver({ responses: [{ status: 200, hang: true }] });
    const started = Date.now();
    const r = await sender({ timeoutMs: 300 }).send(delivery(rx.url));
    expect(r).toMatchObject({ outcome: 'retry', statusCode: null, error: 'timeout' });
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(r.durationMs).toBeGreaterThanOrEqual(250);
    expect(rx.requests).toHaveLength(1);
  });

  it('a receiver that answers too slowly -> timeout', async () => {
    const rx = await receiver({ responses: [{ status: 200, delayMs: 1_000 }] });
    expect(await sender({ timeoutMs: 200 }).send(delivery(rx.url))).toMatchObject({ outcome: 'retry', error: 'timeout' });
  });

  it('the timeout also covers a slow DNS answer', async () => {
    const slow = async (): Promise<ResolvedAddress[]> => new Promise((r) => setTimeout(() => r([{ address: '127.0.0.1', family: 4 }]), 1_000));
    const started = Date.now();
    expect(await sender({ timeoutMs: 200, resolve: slow }).send(delivery('http://slow-dns.test:9/'))).toMatchObject({ outcome: 'retry', error: 'timeout' });
    expect(Date.now() - started).toBeLessThan(900);
  });

  it('connection refused -> retry', async () => {
    const port = await closedPort();
    expect(await sender().send(delivery(`http://127.0.0.1:${port}/hook`))).toMatchObject({ outcome: 'retry', statusCode: null, error: 'connection_refused' });
  });

  it('DNS failure -> retry dns_failure', async () => {
    const fail = async (): Promise<ResolvedAddress[]> => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
    };
    expect(await sender({ resolve: fail }).send(delivery('http://no-such-host.test/hook'))).toMatchObject({ outcome: 'retry', error: 'dns_failure' });
  });

  it('an IP-literal URL needs no DNS', async () => {
    const rx = await receiver();
    const noDns = async (): Promise<ResolvedAddress[]> => {
      throw new Error('DNS must not be asked for an IP literal');
    };
    expect(await sender({ resolve: noDns }).send(delivery(rx.url))).toMatchObject({ outcome: 'delivered' });
  });

  it('IPv6 loopback literal: refused when strict, delivered when listed', async () => {
    let rx: WebhookReceiver;
    try {
      rx = await receiver({ listenHost: '::1' });
    } catch {
      return; // no IPv6 loopback on this machine
    }
    expect(rx.url).toMatch(/^http:\/\/\[::1\]:\d+\/hook$/);
    expect(await sender({ policy: STRICT }).send(delivery(rx.url))).toMatchObject({ outcome: 'failed', error: 'blocked_address' });
    expect(await sender({ policy: { allowPrivateNetworks: false, allowedHosts: ['[::1]'] } }).send(delivery(rx.url))).toMatchObject({ outcome: 'delivered' });
    expect(rx.requests).toHaveLength(1);
  });

  it('a header undici refuses -> failed invalid_request (not retried)', async () => {
    const rx = await receiver();
    expect(await sender().send(delivery(rx.url, { contentType: 'text/plain\r\nx-injected: 1' }))).toMatchObject({
      outcome: 'failed',
      error: 'invalid_request',
    });
    expect(rx.requests).toHaveLength(0);
  });

  it('a URL that is not http(s) -> failed invalid_url', async () => {
    expect(await sender().send(delivery('ftp://127.0.0.1/x'))).toMatchObject({ outcome: 'failed', error: 'invalid_url' });
    expect(await sender().send(delivery('not a url'))).toMatchObject({ outcome: 'failed', error: 'invalid_url' });
  });

  describe('SSRF guard at delivery time', () => {
    it('localhost (resolves to loopback) with private networks NOT allowed -> failed blocked_address, nothing sent', async () => {
      const rx = await receiver({ urlHost: 'localhost' });
      const r = await sender({ policy: STRICT }).send(delivery(rx.url));
      expect(r).toMatchObject({ outcome: 'failed', statusCode: null, error: 'blocked_address', retryAfterMs: null });
      await new Promise((res) => setTimeout(res, 100));
      expect(rx.requests).toHaveLength(0);
    });

    it('an IP-literal loopback URL is refused too (even if it got past the accept-time check)', async () => {
      const rx = await receiver();
      expect(await sender({ policy: STRICT }).send(delivery(rx.url))).toMatchObject({ outcome: 'failed', error: 'blocked_address' });
      expect(rx.requests).toHaveLength(0);
    });

    it('a name with one public and one blocked address is refused', async () => {
      const rx = await receiver({ urlHost: 'mixed.test' });
      const { resolve } = scriptedResolver([['93.184.215.14', '127.0.0.1']]);
      expect(await sender({ policy: STRICT, resolve }).send(delivery(rx.url))).toMatchObject({ outcome: 'failed', error: 'blocked_address' });
      expect(rx.requests).toHaveLength(0);
    });

    it('localhost is allowed with allowPrivateNetworks', async () => {
      const rx = await receiver({ urlHost: 'localhost' });
      expect(await sender({ policy: OPEN }).send(delivery(rx.url))).toMatchObject({ outcome: 'delivered', statusCode: 200 });
      expect(rx.requests).toHaveLength(1);
    });

    it('localhost is allowed when it is in allowedHosts (and only then)', async () => {
      const rx = await receiver({ urlHost: 'localhost' });
      expect(await sender({ policy: { allowPrivateNetworks: false, allowedHosts: ['LOCALHOST'] } }).send(delivery(rx.url))).toMatchObject({
        outcome: 'delivered',
      });
      expect(await sender({ policy: { allowPrivateNetworks: false, allowedHosts: ['other.host'] } }).send(delivery(rx.url))).toMatchObject({
        outcome: 'failed',
        error: 'blocked_address',
      });
      expect(rx.requests).toHaveLength(1);
    });

    it('127.0.0.1 is allowed when listed in allowedHosts', async () => {
      const rx = await receiver();
      expect(await sender({ policy: { allowPrivateNetworks: false, allowedHosts: ['127.0.0.1'] } }).send(delivery(rx.url))).toMatchObject({
        outcome: 'delivered',
      });
    });
  });

  describe('DNS pinning', () => {
    it('connects to the address that was checked: one lookup per attempt, no second (rebindable) one', async () => {
      const rx = await receiver({ urlHost: 'rebind.test' });
      // The first answer is the checked one; any later lookup would be steered elsewhere.
      const { calls, resolve } = scriptedResolver([['127.0.0.1'], ['127.0.0.2']]);
      const r = await sender({ resolve }).send(delivery(rx.url));
      expect(r).toMatchObject({ outcome: 'delivered', statusCode: 200 });
      expect(calls).toEqual(['rebind.test']);
      expect(rx.nth(0).localAddress).toBe('127.0.0.1');
      expect(rx.nth(0).headers.host).toBe(`rebind.test:${rx.port}`);
    });

    it('never asks the system resolver: a name only the checked lookup knows is delivered', async () => {
      // "hooks.test" does not exist in DNS; it can only be reached through the pinned address.
      const rx = await receiver({ urlHost: 'hooks.test' });
      const { calls, resolve } = scriptedResolver([['127.0.0.1']]);
      const s = sender({ resolve });
      expect((await s.send(delivery(rx.url))).outcome).toBe('delivered');
      expect((await s.send(delivery(rx.url))).outcome).toBe('delivered');
      expect(calls).toEqual(['hooks.test', 'hooks.test']); // one per attempt
    });

    it('a rebinding answer (public first, loopback after) never reaches loopback under a strict policy', async () => {
      const rx = await receiver({ urlHost: 'rebind.test' });
      const { calls, resolve } = scriptedResolver([['127.0.0.1'], ['93.184.215.14']]);
      // Strict: the (only) lookup gives loopback -> refused before any connection.
      expect(await sender({ policy: STRICT, resolve }).send(delivery(rx.url))).toMatchObject({ outcome: 'failed', error: 'blocked_address' });
      expect(calls).toHaveLength(1);
      expect(rx.requests).toHaveLength(0);
    });

    it('https: connects to the pinned address with SNI and certificate check on the original host name', async () => {
      const rx = await receiver({ urlHost: 'hooks.test', tls: { key: TLS_KEY, cert: TLS_CERT } });
      const { calls, resolve } = scriptedResolver([['127.0.0.1'], ['127.0.0.2']]);
      const r = await sender({ resolve, ca: TLS_CERT, secrets: [SECRET_1] }).send(delivery(rx.url));
      expect(r).toMatchObject({ outcome: 'delivered', statusCode: 200 });
      expect(calls).toEqual(['hooks.test']);
      expect(rx.nth(0).servername).toBe('hooks.test');
      expect(rx.nth(0).headers.host).toBe(`hooks.test:${rx.port}`);
      new Webhook(SECRET_1).verify(rx.nth(0).body, rx.nth(0).headers);
    });

    it('https: an untrusted certificate is a (retried) TLS error', async () => {
      const rx = await receiver({ urlHost: 'hooks.test', tls: { key: TLS_KEY, cert: TLS_CERT } });
      const { resolve } = scriptedResolver([['127.0.0.1']]);
      expect(await sender({ resolve }).send(delivery(rx.url))).toMatchObject({ outcome: 'retry', error: 'tls_error' });
      expect(rx.requests).toHaveLength(0);
    });
  });

  it('reuses the connection and copes with a large response body', async () => {
    const rx = await receiver({ responses: [{ status: 200, body: 'ok' }, { status: 200, body: Buffer.alloc(1024 * 1024, 'x') }, 200, 200] });
    const s = sender();
    const results: AttemptResult[] = [];
    for (let i = 0; i < 4; i++) {
      results.push(await s.send(delivery(rx.url)));
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(results.map((r) => r.outcome)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    expect(rx.nth(1).remotePort).toBe(rx.nth(0).remotePort); // kept alive after a drained body
    // Past the response-size bound the sender stops reading and drops that connection.
    expect(rx.nth(2).remotePort).not.toBe(rx.nth(1).remotePort);
    expect(rx.nth(3).remotePort).toBe(rx.nth(2).remotePort);
  });

  it('close() ends the agent; the receiver closes hung sockets', async () => {
    const rx = await receiver({ responses: [{ status: 200, hang: true }] });
    const s = new WebhookSender({ secrets: [], timeoutMs: 5_000, policy: OPEN });
    const pending = s.send(delivery(rx.url));
    await rx.waitForRequests(1, 2_000);
    await rx.close();
    expect((await pending).outcome).toBe('retry');
    await s.close();
  });
});

function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
