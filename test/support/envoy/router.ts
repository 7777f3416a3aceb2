/**
 * The router's upstream request (source/common/router/router.cc, as far as tests need it): HTTP/1.1
 * to the route's cluster, the route timeout, and Envoy's local replies when the upstream fails.
 */
import * as http from 'node:http';
import { headerValue, type HeaderList } from './route-match';
import type { RequestRecord, StandInResponse } from './stand-in';

export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

export function splitHostPort(e: string): [string, number] {
  const i = e.lastIndexOf(':');
  return [e.slice(0, i), Number(e.slice(i + 1))];
}

export function toOutgoing(h: HeaderList): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = {};
  for (const [k, v] of h) {
    const cur = o[k];
    if (cur === undefined) o[k] = v;
    else o[k] = Array.isArray(cur) ? [...cur, v] : [cur, v];
  }
  return o;
}

/** The router's upstream request (HTTP/1.1), with the route timeout (15 s default; 0 = none). */
export class Upstream {
  private readonly req: http.ClientRequest;
  private readonly written: Buffer[] = [];
  private readonly done: Promise<StandInResponse>;
  private timer?: NodeJS.Timeout;

  constructor(
    endpoint: string,
    timeoutMs: number,
    headers: HeaderList,
    private readonly record: RequestRecord,
    startedBeforeBodyProcessed: boolean,
  ) {
    const [host, port] = splitHostPort(endpoint);
    const method = headerValue(headers, ':method') ?? 'GET';
    const path = headerValue(headers, ':path') ?? '/';
    const out: HeaderList = [['host', headerValue(headers, ':authority') ?? 'localhost'], ...headers.filter(([k]) => !k.startsWith(':') && !HOP_BY_HOP.has(k))];
    if (timeoutMs > 0) out.push(['x-envoy-expected-rq-timeout-ms', String(timeoutMs)]);
    record.upstream = { method, path, headers: out, body: Buffer.alloc(0), startedBeforeBodyProcessed };
    const started = Date.now();
    this.req = http.request({ host, port, method, path, headers: toOutgoing(out), agent: false });
    this.req.flushHeaders(); // the headers leave now, as the router's would
    this.done = new Promise<StandInResponse>((resolve) => {
      const local = (status: number, text: string, details: string): void => {
        clearTimeout(this.timer);
        resolve({
          status,
          headers: { 'content-type': 'text/plain', 'content-length': String(text.length), server: 'envoy' },
          body: Buffer.from(text),
          routedToUpstream: true,
          details,
        });
      };
      if (timeoutMs > 0) {
        this.timer = setTimeout(() => {
          this.req.destroy();
          local(504, 'upstream request timeout', 'upstream_response_timeout');
        }, timeoutMs);
      }
      this.req.on('error', () =>
        local(
          503,
          'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
          'upstream_reset_before_response_started{connection_failure}',
        ),
      );
      this.req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => local(503, 'upstream reset', 'upstream_reset_after_response_started'));
        res.on('end', () => {
          clearTimeout(this.timer);
          const h: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) h[k] = Array.isArray(v) ? v.join(',') : v;
          const body = Buffer.concat(chunks);
          h['content-length'] = String(body.length);
          h.server = 'envoy';
          h['x-envoy-upstream-service-time'] = String(Date.now() - started);
          resolve({ status: res.statusCode ?? 502, headers: h, body, routedToUpstream: true });
        });
      });
    });
  }

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.written.push(chunk);
    this.record.upstream!.body = Buffer.concat(this.written);
    this.req.write(chunk);
  }

  end(): void {
    this.req.end();
  }

  abort(): void {
    clearTimeout(this.timer);
    this.req.destroy();
  }

  result(signal?: AbortSignal): Promise<StandInResponse> {
    signal?.addEventListener('abort', () => this.abort());
    return this.done;
  }
}
