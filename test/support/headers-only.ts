import * as http from 'node:http';

export interface HeadersOnlyAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A POST that sends its headers (with a declared content-length) and never its body, and reads
 * the answer. Through a real Envoy this is how to see the answer to the headers alone: with the
 * body sent at once, Envoy's own buffer-limit 413 can race the ext_proc server's answer.
 */
export function postHeadersOnly(url: string, headers: Record<string, string>): Promise<HeadersOnlyAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}
