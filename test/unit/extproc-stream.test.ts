import { StreamProcessor, type StreamCallbacks } from '../../src/extproc/stream';
import type { ExtProcHandler, HeadDecision, HttpReply } from '../../src/extproc';
import type { ProcessingRequest__Output } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';

function headers(pairs: Array<[string, string]>, endOfStream: boolean): ProcessingRequest__Output {
  return {
    request: 'request_headers',
    request_headers: {
      headers: { headers: pairs.map(([key, v]) => ({ key, raw_value: Buffer.from(v), value: '' })) },
      end_of_stream: endOfStream,
      attributes: {},
    },
    observability_mode: false,
    attributes: {},
  } as unknown as ProcessingRequest__Output;
}
function body(data: string, endOfStream: boolean): ProcessingRequest__Output {
  return { request: 'request_body', request_body: { body: Buffer.from(data), end_of_stream: endOfStream } } as unknown as ProcessingRequest__Output;
}
const BASE: Array<[string, string]> = [
  [':method', 'POST'],
  [':path', '/run?async=true'],
  [':authority', 'app.local'],
  [':scheme', 'http'],
];
const REPLY: HttpReply = { status: 202, headers: [['content-type', 'application/json']], body: '{}' };

function harness(decide: (head: Parameters<ExtProcHandler['onRequestHeaders']>[0]) => HeadDecision, budget = Infinity) {
  const sent: ProcessingResponse[] = [];
  const failures: string[] = [];
  const decisions: string[] = [];
  const held = { bytes: 0 };
  const cb: StreamCallbacks = {
    send: (r) => sent.push(r),
    fail: (reason) => failures.push(reason),
    decided: (d) => decisions.push(d),
    reserve: (n) => (held.bytes + n > budget ? false : ((held.bytes += n), true)),
    release: (n) => void (held.bytes -= n),
    metadata: (name) => (name === 'traceparent' ? '00-0af7651916cd43dd8448eb211c80319c-27c2470731ce4c69-01' : undefined),
  };
  const seen: Array<Parameters<ExtProcHandler['onRequestHeaders']>[0]> = [];
  const traceparents: Array<string | undefined> = [];
  const processor = new StreamProcessor({ onRequestHeaders: (h, metadata) => (seen.push(h), traceparents.push(metadata('traceparent')), decide(h)) }, cb);
  return { processor, sent, failures, decisions, seen, held, traceparents };
}
const tick = () => new Promise((r) => setImmediate(r));

describe('ext_proc stream state machine', () => {
  it('passes a request through with CONTINUE and switches later phases off', () => {
    const h = harness(() => ({ kind: 'pass' }));
    h.processor.onMessage(headers(BASE, true));
    expect(h.sent).toHaveLength(1);
    expect(h.sent[0]!.request_headers?.response?.status).toBe('CONTINUE');
    expect(h.sent[0]!.mode_override).toMatchObject({ request_body_mode: 'NONE', response_header_mode: 'SKIP' });
    expect(h.decisions).toEqual(['pass']);
  });

  it('reads header values from raw_value, and from value for older Envoys', () => {
    const h = harness(() => ({ kind: 'pass' }));
    const msg = headers(BASE, true);
    msg.request_headers!.headers!.headers!.push({ key: 'x-old', value: 'legacy', raw_value: Buffer.alloc(0) } as never);
    h.processor.onMessage(msg);
    expect(h.seen[0]).toMatchObject({ method: 'POST', path: '/run?async=true', authority: 'app.local' });
    expect(h.seen[0]!.headers).toContainEqual(['x-old', 'legacy']);
  });

  it("hands the handler the stream's gRPC metadata (where Envoy's tracer puts its span's traceparent)", () => {
    const h = harness(() => ({ kind: 'pass' }));
    h.processor.onMessage(headers(BASE, true));
    expect(h.traceparents).toEqual(['00-0af7651916cd43dd8448eb211c80319c-27c2470731ce4c69-01']);
  });

  it('asks for the body BUFFERED (with trailers) and answers once it is complete', async () => {
    const bodies: Buffer[] = [];
    const h = harness(() => ({
      kind: 'body',
      decision: 'accepted',
      maxBytes: 100,
      tooLarge: () => ({ ...REPLY, status: 413 }),
      onBody: async (b) => (bodies.push(b), REPLY),
    }));
    h.processor.onMessage(headers(BASE, false));
    expect(h.sent[0]!.mode_override).toMatchObject({ request_body_mode: 'BUFFERED', request_trailer_mode: 'SEND' });
    h.processor.onMessage(body('hello', true));
    await tick();
    expect(bodies[0]!.toString()).toBe('hello');
    expect(h.sent[1]!.immediate_response?.status?.code).toBe(202);
    const ct = h.sent[1]!.immediate_response!.headers!.set_headers![0]!.header!;
    expect(ct.key).toBe('content-type');
    expect(Buffer.from(ct.raw_value as Buffer).toString()).toBe('application/json');
  });

  it('answers each STREAMED chunk in order, dropping its bytes, then the whole body', async () => {
    const bodies: Buffer[] = [];
    const h = harness(() => ({ kind: 'body', decision: 'accepted', maxBytes: 100, tooLarge: () => REPLY, onBody: async (b) => (bodies.push(b), REPLY) }));
    h.processor.onMessage(headers(BASE, false));
    h.processor.onMessage(body('ab', false));
    h.processor.onMessage(body('cd', false));
    h.processor.onMessage(body('e', true));
    await tick();
    expect(h.sent.slice(1, 3).map((r) => r.request_body?.response?.body_mutation?.clear_body)).toEqual([true, true]);
    expect(bodies[0]!.toString()).toBe('abcde');
    expect(h.sent[3]!.immediate_response).toBeDefined();
  });

  it('completes a body followed by trailers', async () => {
    const h = harness(() => ({ kind: 'body', decision: 'accepted', maxBytes: 100, tooLarge: () => REPLY, onBody: async () => REPLY }));
    h.processor.onMessage(headers(BASE, false));
    h.processor.onMessage(body('x', false));
    h.processor.onMessage({ request: 'request_trailers', request_trailers: {} } as unknown as ProcessingRequest__Output);
    await tick();
    expect(h.sent.at(-1)!.immediate_response?.status?.code).toBe(202);
  });

  it('refuses a body over the limit with the 413 reply, from content-length or from the bytes', async () => {
    const tooLarge = () => ({ ...REPLY, status: 413 });
    const a = harness(() => ({ kind: 'body', decision: 'accepted', maxBytes: 3, tooLarge, onBody: async () => REPLY }));
    a.processor.onMessage(headers([...BASE, ['content-length', '10']], false));
    await tick();
    expect(a.sent[0]!.immediate_response?.status?.code).toBe(413);
    const b = harness(() => ({ kind: 'body', decision: 'accepted', maxBytes: 3, tooLarge, onBody: async () => REPLY }));
    b.processor.onMessage(headers(BASE, false));
    b.processor.onMessage(body('toolong', true));
    await tick();
    expect(b.sent.at(-1)!.immediate_response?.status?.code).toBe(413);
  });

  it('sends override_message_timeout alone before a held reply', async () => {
    const h = harness(() => ({ kind: 'reply', decision: 'runs_api', holdMs: 12_500, reply: async () => REPLY }));
    h.processor.onMessage(headers(BASE, true));
    expect(h.sent[0]).toEqual({ override_message_timeout: { seconds: 12, nanos: 500_000_000 } });
    await tick();
    expect(h.sent[1]!.immediate_response).toBeDefined();
  });

  it('ends the stream with a protocol error on out-of-order messages', () => {
    const h = harness(() => ({ kind: 'pass' }));
    h.processor.onMessage(body('x', true));
    expect(h.failures).toEqual(['unexpected_message']);
    const twice = harness(() => ({ kind: 'body', decision: 'accepted', maxBytes: 9, tooLarge: () => REPLY, onBody: async () => REPLY }));
    twice.processor.onMessage(headers(BASE, false));
    twice.processor.onMessage(headers(BASE, false));
    expect(twice.failures).toEqual(['unexpected_message']);
  });

  it('rejects request_headers without :method or :path', () => {
    const h = harness(() => ({ kind: 'pass' }));
    h.processor.onMessage(headers([[':authority', 'x']], true));
    expect(h.failures).toEqual(['malformed_headers']);
  });

  it('sends nothing after Envoy closed the stream', async () => {
    let resolve!: (r: HttpReply) => void;
    const h = harness(() => ({ kind: 'reply', decision: 'runs_api', reply: () => new Promise((r) => (resolve = r)) }));
    h.processor.onMessage(headers(BASE, true));
    h.processor.close();
    resolve(REPLY);
    await tick();
    expect(h.sent).toHaveLength(0);
  });

  it('answers phases of a passed-through request with CONTINUE if Envoy still sends them', () => {
    const h = harness(() => ({ kind: 'pass' }));
    h.processor.onMessage(headers(BASE, false));
    h.processor.onMessage(body('x', true));
    h.processor.onMessage({ request: 'response_headers', response_headers: {} } as unknown as ProcessingRequest__Output);
    expect(h.sent[1]!.request_body?.response?.status).toBe('CONTINUE');
    expect(h.sent[2]!.response_headers?.response?.status).toBe('CONTINUE');
    expect(h.failures).toEqual([]);
  });

  describe('trust boundary', () => {
    const bodyDecision = (onBody: (b: Buffer) => Promise<HttpReply> = async () => REPLY): HeadDecision => ({
      kind: 'body',
      decision: 'accepted',
      maxBytes: 1 << 20,
      tooLarge: () => ({ ...REPLY, status: 413 }),
      onBody,
    });

    it.each([
      ['@127.0.0.2:9/latest/meta-data/?async=true', 'POST'],
      ['http://169.254.169.254/?async=true', 'GET'],
      ['relative?async=true', 'POST'],
      ['/a b?async=true', 'POST'],
      ['/a\tb', 'POST'],
      ['/x#frag', 'GET'],
      ['*', 'GET'],
    ])('ends a stream whose :path %j (%s) is not origin-form, before the handler sees it', (path, method) => {
      const h = harness(() => bodyDecision());
      h.processor.onMessage(
        headers(
          [
            [':method', method],
            [':path', path],
            [':authority', 'a'],
            [':scheme', 'http'],
          ],
          false,
        ),
      );
      expect(h.failures).toEqual(['malformed_headers']);
      expect(h.seen).toHaveLength(0);
    });

    it('accepts * for OPTIONS and raw non-ASCII octets in the path', () => {
      for (const [method, path] of [
        ['OPTIONS', '*'],
        ['GET', '/caf\u00e9?x=1'],
      ] as const) {
        const h = harness(() => ({ kind: 'pass' }));
        h.processor.onMessage(
          headers(
            [
              [':method', method],
              [':path', path],
              [':authority', 'a'],
              [':scheme', 'http'],
            ],
            true,
          ),
        );
        expect(h.failures).toEqual([]);
        expect(h.seen[0]!.path).toBe(Buffer.from(path).toString('latin1')); // raw_value bytes, read as latin1
      }
    });

    it('takes body bytes from the budget, gives them back once the answer is out, and refuses past the budget', async () => {
      let finish!: () => void;
      const stored = new Promise<void>((r) => (finish = r));
      const h = harness(() => bodyDecision(async () => (await stored, REPLY)), 10);
      h.processor.onMessage(headers(BASE, false));
      h.processor.onMessage(body('123456', false));
      expect(h.held.bytes).toBe(6);
      h.processor.onMessage(body('7890', true));
      expect(h.held.bytes).toBe(10); // held while the run is being stored
      finish();
      await tick();
      expect(h.held.bytes).toBe(0);
      expect(h.failures).toEqual([]);

      const over = harness(() => bodyDecision(), 10);
      over.processor.onMessage(headers(BASE, false));
      over.processor.onMessage(body('123456', false));
      over.processor.onMessage(body('1234567', false));
      expect(over.failures).toEqual(['buffer_budget']);
      expect(over.held.bytes).toBe(0);
    });

    it('gives the budget back when Envoy closes the stream mid-body', () => {
      const h = harness(() => bodyDecision(), 100);
      h.processor.onMessage(headers(BASE, false));
      h.processor.onMessage(body('12345', false));
      h.processor.close();
      expect(h.held.bytes).toBe(0);
    });

    it('expires only while it waits for Envoy (headers or body), not while it answers', async () => {
      const waiting = harness(() => bodyDecision());
      waiting.processor.onMessage(headers(BASE, false));
      expect(waiting.processor.awaitingEnvoy()).toBe(true);
      waiting.processor.expire(1000);
      expect(waiting.failures).toEqual(['idle_timeout']);

      const answering = harness(() => ({ kind: 'reply', decision: 'runs_api', reply: () => new Promise<HttpReply>(() => undefined) }));
      answering.processor.onMessage(headers(BASE, true));
      expect(answering.processor.awaitingEnvoy()).toBe(false);
      answering.processor.expire(1000);
      expect(answering.failures).toEqual([]);
    });
  });
});
