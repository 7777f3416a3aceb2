import { decodeRunTrace, encodeRunTrace, queueOf, redactedUrl, traceIdOf, withTraceHeaders } from '../../src/tracing/context';

const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('tracing helpers (src/tracing/context.ts)', () => {
  it('stores a trace context as one run field and reads it back, tracestate (spaces, commas) on a second line', () => {
    expect(encodeRunTrace({ traceparent: PARENT })).toBe(PARENT);
    const withState = encodeRunTrace({ traceparent: PARENT, tracestate: 'congo=t61rcWkgMzE, rojo=00f067aa0ba902b7' });
    expect(withState).toBe(`${PARENT}\ncongo=t61rcWkgMzE, rojo=00f067aa0ba902b7`);
    expect(decodeRunTrace(withState)).toEqual({ traceparent: PARENT, tracestate: 'congo=t61rcWkgMzE, rojo=00f067aa0ba902b7' });
    expect(decodeRunTrace(PARENT)).toEqual({ traceparent: PARENT });
    expect(traceIdOf(withState)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(traceIdOf('garbage')).toBeUndefined();
  });

  it("replaces the client's traceparent and tracestate with the span's, keeping every other header in order", () => {
    const headers: Array<[string, string]> = [
      ['host', 'app'],
      ['traceparent', PARENT],
      ['tracestate', 'a=b'],
      ['x-async-run-id', 'r1'],
    ];
    const span = { headers: [['traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01']] as Array<[string, string]> };
    expect(withTraceHeaders(headers, span)).toEqual([
      ['host', 'app'],
      ['x-async-run-id', 'r1'],
      ['traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01'],
    ]);
    expect(withTraceHeaders(headers, null)).toBe(headers); // tracing off: untouched, no copy
  });

  it('redacts every query value of url.full, keeping the names', () => {
    expect(redactedUrl(new URL('https://hooks.example.com/done?token=s3cret&x&run=1'))).toBe('https://hooks.example.com/done?token=REDACTED&x&run=REDACTED');
    expect(redactedUrl(new URL('http://127.0.0.1:8081/v1/run'))).toBe('http://127.0.0.1:8081/v1/run');
  });

  it('puts runs in the default queue until they name one', () => {
    expect(queueOf({ id: 'r1' })).toBe('default');
    expect(queueOf({ id: 'r1', queue: 'gpu' })).toBe('gpu');
    expect(queueOf({ id: 'r1', queue: '' })).toBe('default');
  });
});
