/**
 * undici's `request`, for tests, with every answer from the sidecar's listeners checked against
 * openapi/openapi.yaml (test/support/openapi.ts): an undocumented answer throws, naming what
 * does not match. The body is read at once and can then be read as undici's can (json, text,
 * arrayBuffer, bytes, dump), once or several times.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { request as undiciRequest } from 'undici';
import { assertDocumentedResponse } from './openapi';

type RequestOptions = NonNullable<Parameters<typeof undiciRequest>[1]>;

export interface BufferedBody {
  json(): Promise<unknown>;
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  dump(): Promise<void>;
}

export interface CheckedResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: BufferedBody;
}

function headerRecord(headers: RequestOptions['headers']): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  if (!headers) return out;
  const pairs: Array<[string, unknown]> = Array.isArray(headers)
    ? (headers as unknown[]).reduce<Array<[string, unknown]>>((acc, v, i, all) => (i % 2 === 0 ? [...acc, [String(v), all[i + 1]]] : acc), [])
    : Object.entries(headers as Record<string, unknown>);
  for (const [k, v] of pairs) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.map(String) : String(v);
  return out;
}

export async function request(url: string | URL, options: RequestOptions = {}): Promise<CheckedResponse> {
  const res = await undiciRequest(url, options);
  const body = Buffer.from(await res.body.arrayBuffer());
  assertDocumentedResponse({
    method: options.method ?? 'GET',
    url,
    requestHeaders: headerRecord(options.headers),
    status: res.statusCode,
    headers: res.headers as IncomingHttpHeaders,
    body,
  });
  const copy = () => body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return {
    statusCode: res.statusCode,
    headers: res.headers as IncomingHttpHeaders,
    body: {
      json: async () => JSON.parse(body.toString('utf8')) as unknown,
      text: async () => body.toString('utf8'),
      arrayBuffer: async () => copy(),
      bytes: async () => new Uint8Array(copy()),
      dump: async () => undefined,
    },
  };
}
