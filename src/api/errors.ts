import type { HttpReply } from '../extproc';

/** Every error the sidecar answers with has this JSON shape (docs/CONTRACT.md §2), and its code is a metric label. */
export function jsonError(
  status: number,
  code: string,
  message: string,
  extraHeaders: Array<[string, string]> = [],
  /** More fields of the error object (e.g. the run_id a client should look up). */
  extra: Record<string, string> = {},
): HttpReply {
  return {
    status,
    headers: [['content-type', 'application/json'], ...extraHeaders],
    body: `${JSON.stringify({ error: { code, message, ...extra } })}\n`,
    details: `async_sidecar_${code}`,
  };
}

export function jsonReply(status: number, value: unknown, extraHeaders: Array<[string, string]> = []): HttpReply {
  return { status, headers: [['content-type', 'application/json'], ...extraHeaders], body: `${JSON.stringify(value)}\n` };
}

/** OWNER_REQUIRED and no owner header: the caller must say who it is (accept and runs API alike). */
export function ownerRequired(header: string): HttpReply {
  return jsonError(401, 'owner_required', `This endpoint needs the ${header} header: runs are scoped to it.`);
}
