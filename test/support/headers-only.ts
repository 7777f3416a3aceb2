import * as http from 'node:http';
import { assertDocumentedResponse } from './openapi';

export interface HeadersOnlyAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A POST that sends its headers (with a declared content-length) and never its body, and reads
 * the answer (checked against openapi/openapi.yaml). Through a real Envoy this is how to see the answer to the headers alone: with the
 * body sent at once, Envoy's own buffer-limit 413 can race the ext_proc server's answer.
 */
export function postHeadersOnly(url: string, headers: Record<string, string>): Promise<HeadersOnlyAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const answer = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) };
        req.destroy();
        try {
          assertDocumentedResponse({ method: 'POST', url, requestHeaders: headers, ...answer });
        } catch (err) {
          return reject(err as Error);
        }
        resolve(answer);
      });
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}
