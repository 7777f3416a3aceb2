import { Webhook } from 'standardwebhooks';
import { buildWebhookBody } from '../../src/webhooks/body';
import { PinnedLookup, checkDeliveryTarget, type ResolvedAddress } from '../../src/webhooks/guard';
import { WebhookSigner } from '../../src/webhooks/signing';

describe('buildWebhookBody', () => {
  const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10]);
  it('forwards the upstream body byte for byte with its content type', () => {
    const r = buildWebhookBody(
      { runId: 'r1', status: 'succeeded', error: null, upstream: { statusCode: 200, contentType: 'image/png', body: bytes } },
      100,
      '/v1/runs/r1/result',
    );
    expect(r.contentType).toBe('image/png');
    expect(r.body.equals(bytes)).toBe(true);
  });
  it('defaults the content type to application/octet-stream', () => {
    const r = buildWebhookBody(
      { runId: 'r1', status: 'failed', error: 'upstream_status', upstream: { statusCode: 500, contentType: null, body: bytes } },
      100,
      'x',
    );
    expect(r.contentType).toBe('application/octet-stream');
    expect(r.body.equals(bytes)).toBe(true);
  });
  it('forwards an empty upstream body as is', () => {
    const r = buildWebhookBody(
      { runId: 'r1', status: 'succeeded', error: null, upstream: { statusCode: 204, contentType: 'text/plain', body: Buffer.alloc(0) } },
      100,
      'x',
    );
    expect(r).toEqual({ body: Buffer.alloc(0), contentType: 'text/plain' });
  });
  it('sends {run_id,status,error} JSON with no upstream response', () => {
    const r = buildWebhookBody({ runId: 'r1', status: 'timed_out', error: 'grace_period_exceeded', upstream: null }, 100, 'x');
    expect(r.contentType).toBe('application/json');
    expect(r.body.toString()).toBe('{"run_id":"r1","status":"timed_out","error":"grace_period_exceeded"}');
  });
  it('sends an envelope with a result URL for a body over the limit', () => {
    const body = Buffer.alloc(101, 'a');
    const r = buildWebhookBody(
      { runId: 'r1', status: 'succeeded', error: null, upstream: { statusCode: 200, contentType: 'text/plain', body } },
      100,
      'https://api.example/v1/runs/r1/result',
    );
    expect(r.contentType).toBe('application/json');
    expect(JSON.parse(r.body.toString())).toEqual({
      run_id: 'r1',
      status: 'succeeded',
      error: null,
      upstream_status: 200,
      content_type: 'text/plain',
      size: 101,
      truncated: true,
      result_url: 'https://api.example/v1/runs/r1/result',
    });
    const exact = buildWebhookBody(
      { runId: 'r1', status: 'succeeded', error: null, upstream: { statusCode: 200, contentType: 'text/plain', body: body.subarray(1) } },
      100,
      'x',
    );
    expect(exact.body.length).toBe(100);
  });
});

describe('WebhookSigner', () => {
  const s1 = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
  const s2 = `whsec_${Buffer.from('another secret for rotation').toString('base64')}`;
  const body = Buffer.from('{"hello":"wörld"}');
  it('signs with every secret; each verifies with standardwebhooks', () => {
    const signer = new WebhookSigner([s1, s2]);
    const h = signer.headers('msg_1', body);
    expect(h['webhook-id']).toBe('msg_1');
    expect(h['webhook-timestamp']).toMatch(/^\d{10}$/);
    const signatures = h['webhook-signature']?.split(' ');
    expect(signatures).toHaveLength(2);
    for (const s of signatures!) expect(s).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(s1).verify(body, h)).toEqual({ hello: 'wörld' });
    expect(new Webhook(s2).verify(body, h)).toEqual({ hello: 'wörld' });
    expect(() => new Webhook(`whsec_${Buffer.from('wrong').toString('base64')}`).verify(body, h)).toThrow();
  });
  it('sends id and timestamp but no signature without secrets', () => {
    const h = new WebhookSigner([]).headers('msg_1', body, new Date(1_700_000_000_500));
    expect(h).toEqual({ 'webhook-id': 'msg_1', 'webhook-timestamp': '1700000000' });
  });
  it('refuses a malformed secret', () => {
    expect(() => new WebhookSigner(['not-a-secret'])).toThrow(/whsec_/);
    expect(() => new WebhookSigner(['whsec_'])).toThrow();
  });
});

describe('PinnedLookup', () => {
  const v4: ResolvedAddress = { address: '127.0.0.1', family: 4 };
  const addrs: ResolvedAddress[] = [v4, { address: '::1', family: 6 }];
  const call = (p: PinnedLookup, host: string, opts: object) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number }>((resolve) =>
      p.lookup(host, opts, (err, address, family) => resolve({ err, address, family })),
    );
  it('answers only with pinned addresses, in both callback forms, and fails closed', async () => {
    const p = new PinnedLookup();
    const release = p.pin('Hook.Example', addrs);
    expect(await call(p, 'hook.example', { all: true })).toEqual({ err: null, address: addrs, family: undefined });
    expect(await call(p, 'hook.example', {})).toMatchObject({ err: null, address: '127.0.0.1', family: 4 });
    expect(await call(p, 'hook.example', { family: 6 })).toMatchObject({ err: null, address: '::1', family: 6 });
    expect((await call(p, 'other.example', { all: true })).err?.code).toBe('ENOTFOUND');
    const release2 = p.pin('hook.example', [v4]);
    release();
    expect(await call(p, 'hook.example', { all: true })).toMatchObject({ address: [v4] });
    release2();
    release2();
    expect(p.size).toBe(0);
    expect((await call(p, 'hook.example', {})).err?.code).toBe('ENOTFOUND');
  });
});

describe('checkDeliveryTarget', () => {
  const strict = { allowPrivateNetworks: false, allowedHosts: [] };
  const resolver = (list: string[]) => async () => list.map((address) => ({ address, family: (address.includes(':') ? 6 : 4) as 4 | 6 }));
  it('refuses a name if ANY address is blocked', async () => {
    expect(await checkDeliveryTarget(new URL('https://h.example/'), strict, resolver(['8.8.8.8', '10.0.0.1']))).toMatchObject({
      ok: false,
      error: 'blocked_address',
    });
    expect(await checkDeliveryTarget(new URL('https://h.example/'), strict, resolver(['8.8.8.8', '::ffff:127.0.0.1']))).toMatchObject({
      ok: false,
      error: 'blocked_address',
    });
    expect(await checkDeliveryTarget(new URL('https://h.example/'), strict, resolver(['8.8.8.8', '2606:4700::1']))).toMatchObject({
      ok: true,
      addresses: [{ address: '8.8.8.8' }, { address: '2606:4700::1' }],
    });
  });
  it('skips DNS for IP literals', async () => {
    const never = async (): Promise<ResolvedAddress[]> => {
      throw new Error('no DNS for literals');
    };
    expect(await checkDeliveryTarget(new URL('http://8.8.8.8/'), strict, never)).toEqual({ ok: true, addresses: null });
    expect(await checkDeliveryTarget(new URL('http://[::1]/'), strict, never)).toMatchObject({ ok: false, error: 'blocked_address' });
    expect(await checkDeliveryTarget(new URL('http://[::1]/'), { allowPrivateNetworks: false, allowedHosts: ['::1'] }, never)).toEqual({
      ok: true,
      addresses: null,
    });
  });
  it('reports DNS failures and empty answers', async () => {
    const fail = async (): Promise<ResolvedAddress[]> => {
      throw Object.assign(new Error('x'), { code: 'ENOTFOUND' });
    };
    expect(await checkDeliveryTarget(new URL('http://nx.example/'), strict, fail)).toMatchObject({
      ok: false,
      error: 'dns_failure',
      message: expect.stringContaining('ENOTFOUND'),
    });
    expect(await checkDeliveryTarget(new URL('http://nx.example/'), strict, resolver([]))).toMatchObject({ ok: false, error: 'dns_failure' });
  });
  it('refuses a name resolving to cloud metadata even with allowPrivateNetworks', async () => {
    const open = { allowPrivateNetworks: true, allowedHosts: [] };
    expect(await checkDeliveryTarget(new URL('http://metadata.google.internal/'), open, resolver(['169.254.169.254']))).toMatchObject({
      ok: false,
      error: 'blocked_address',
    });
    expect(await checkDeliveryTarget(new URL('http://x.internal/'), open, resolver(['10.0.0.1', '127.0.0.1', 'fd00::1']))).toMatchObject({ ok: true });
    expect(
      await checkDeliveryTarget(new URL('http://md.internal/'), { allowPrivateNetworks: true, allowedHosts: ['md.internal'] }, resolver(['169.254.169.254'])),
    ).toMatchObject({ ok: true });
  });
  it('lets allowed hosts resolve anywhere', async () => {
    expect(
      await checkDeliveryTarget(new URL('http://a.svc.local/'), { allowPrivateNetworks: false, allowedHosts: ['*.svc.local'] }, resolver(['10.0.0.1'])),
    ).toMatchObject({ ok: true });
  });
});
