/** Query and header handling shared by the accept path and the runs API. Pure functions. */

export interface QueryParam {
  /** The parameter exactly as it appeared, e.g. `a=1%202`. */
  raw: string;
  /** The decoded name (`+` is a space, %XX decoded); null when its encoding is broken. */
  name: string | null;
}

function decodeComponent(s: string): string | null {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

export function splitPath(path: string): { pathname: string; query: string } {
  const q = path.indexOf('?');
  return q < 0 ? { pathname: path, query: '' } : { pathname: path.slice(0, q), query: path.slice(q + 1) };
}

export function parseQuery(query: string): QueryParam[] {
  if (query === '') return [];
  return query.split('&').map((raw) => {
    const eq = raw.indexOf('=');
    return { raw, name: decodeComponent(eq < 0 ? raw : raw.slice(0, eq)) };
  });
}

/** The decoded value of a parameter; '' when it has none, null when its encoding is broken. */
export function paramValue(p: QueryParam): string | null {
  const eq = p.raw.indexOf('=');
  return eq < 0 ? '' : decodeComponent(p.raw.slice(eq + 1));
}

export function headerValue(headers: Array<[string, string]>, name: string): string | undefined {
  for (const [k, v] of headers) if (k === name) return v;
  return undefined;
}

/** All values of a header, comma-joined as RFC 9110 allows for list-valued fields. */
export function headerValues(headers: Array<[string, string]>, name: string): string[] {
  const out: string[] = [];
  for (const [k, v] of headers) if (k === name) out.push(v);
  return out;
}

/** Prefer tokens (RFC 7240): `respond-async, wait=10` → ['respond-async', 'wait=10'], names lower-cased. */
export function preferTokens(values: string[]): string[] {
  return values
    .flatMap((v) => v.split(','))
    .map((t) => t.trim())
    .filter(Boolean);
}

export function preferName(token: string): string {
  return token.split(/[;=]/, 1)[0]!.trim().toLowerCase();
}
