import type { HttpReply } from '../extproc';

/** Every error the sidecar answers with has this JSON shape (SPEC §2), and its code is a metric label. */
export function jsonError(status: number, code: string, message: string, extraHeaders: Array<[string, string]> = []): HttpReply {
  return {
    status,
    headers: [['content-type', 'application/json'], ...extraHeaders],
    body: `${JSON.stringify({ error: { code, message } })}\n`,
    details: `async_sidecar_${code}`,
  };
}

export function jsonReply(status: number, value: unknown, extraHeaders: Array<[string, string]> = []): HttpReply {
  return { status, headers: [['content-type', 'application/json'], ...extraHeaders], body: `${JSON.stringify(value)}\n` };
}
