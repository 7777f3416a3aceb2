/**
 * Keeps openapi/openapi.yaml true: every response a test receives from a listener the sidecar
 * answers on (Envoy's ingress, the admin port) and every webhook a test receiver gets is checked
 * against it, with ajv (JSON Schema 2020-12, the dialect of OpenAPI 3.1) on the document's own
 * schemas. An undocumented path, method, status, content type, a missing required header or a
 * body of the wrong shape is a failure.
 *
 * Listeners register their port (test/support/listeners.ts: RealEnvoy, the stand-in,
 * startTestSidecar); a response from any other port (the app, a receiver) is not checked. The HTTP helpers in
 * test/support/http.ts call assertDocumentedResponse; WebhookReceiver calls webhookProblems.
 */
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import type { IncomingHttpHeaders } from 'node:http';
import { readOpenApiDocument } from '../../src/api/openapi';
import { listenerAt, type Listener } from './listeners';

type Json = Record<string, any>;

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
/** The prefix the document is written with (the tests run with RUNS_API_PREFIX's default). */
const RUNS_PREFIX = '/v1/runs';

export const DOCUMENT: Json = readOpenApiDocument();

function makeAjv(coerceTypes: boolean): Ajv2020 {
  const ajv = new Ajv2020({ strict: false, allErrors: true, coerceTypes });
  addFormats(ajv);
  ajv.addSchema(DOCUMENT, 'openapi');
  return ajv;
}
const bodies = makeAjv(false);
// Header values are strings on the wire; their schemas say what the string holds.
const headerValues = makeAjv(true);
const compiled = new Map<string, ValidateFunction>();

/** JSON pointer of a path of keys (RFC 6901), as a URI fragment. */
const pointer = (keys: readonly string[]) => keys.map((k) => encodeURIComponent(k.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/');

function validator(ajv: Ajv2020, keys: readonly string[], wrap: boolean): ValidateFunction {
  const id = `${wrap ? 'h' : 'b'}:${keys.join('\u0000')}`;
  let v = compiled.get(id);
  if (!v) {
    const ref = { $ref: `openapi#/${pointer(keys)}` };
    v = ajv.compile(wrap ? { type: 'object', properties: { value: ref } } : ref);
    compiled.set(id, v);
  }
  return v;
}

/** Follows an OpenAPI `$ref` (local ones only), returning the object and the keys that reach it. */
function deref(keys: string[]): { value: Json; keys: string[] } {
  let value: any = DOCUMENT;
  for (const k of keys) value = value?.[k];
  for (let hops = 0; value && typeof value.$ref === 'string' && hops < 10; hops++) {
    keys = (value.$ref as string)
      .replace(/^#\//, '')
      .split('/')
      .map((k) => decodeURIComponent(k).replace(/~1/g, '/').replace(/~0/g, '~'));
    value = DOCUMENT;
    for (const k of keys) value = value?.[k];
  }
  return { value, keys };
}

function ajvErrors(v: ValidateFunction): string {
  return (v.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`).join('; ');
}

const mediaType = (contentType: string | undefined) => (contentType ?? 'application/octet-stream').split(';')[0]!.trim().toLowerCase();
const isJson = (media: string) => media === 'application/json' || media.endsWith('+json');

/** Problems of a body against a `content` map (reached by `keys`); [] when it matches. */
function contentProblems(keys: string[], content: Json, contentType: string | undefined, body: Buffer): string[] {
  const media = mediaType(contentType);
  const key = [media, `${media.split('/')[0]}/*`, '*/*'].find((k) => k in content);
  if (!key) return [`content-type ${contentType ?? '(none)'} is not documented (documented: ${Object.keys(content).join(', ')})`];
  if (!content[key]?.schema) return [];
  let data: unknown = body.toString('utf8');
  if (isJson(media)) {
    try {
      data = JSON.parse(body.toString('utf8'));
    } catch {
      return [`the ${media} body is not JSON: ${snippet(body)}`];
    }
  }
  const v = validator(bodies, [...keys, key, 'schema'], false);
  return v(data) ? [] : [`body ${snippet(body)}: ${ajvErrors(v)}`];
}

/** Problems of the headers against a `headers` map of a response (or header parameters). */
function headerProblems(declared: Array<{ name: string; keys: string[] }>, headers: IncomingHttpHeaders): string[] {
  const problems: string[] = [];
  for (const { name, keys } of declared) {
    const { value: header, keys: at } = deref(keys);
    const raw = headers[name.toLowerCase()];
    if (raw === undefined) {
      if (header.required) problems.push(`required header ${name} is missing`);
      continue;
    }
    if (!header.schema) continue;
    const v = validator(headerValues, [...at, 'schema'], true);
    const data = { value: Array.isArray(raw) ? raw.join(', ') : raw };
    if (!v(data)) problems.push(`header ${name}: ${JSON.stringify(raw)}: ${ajvErrors(v).replace(/\/value/g, '')}`);
  }
  return problems;
}

function snippet(body: Buffer): string {
  const s = body.toString('utf8');
  return JSON.stringify(s.length > 300 ? `${s.slice(0, 300)}…` : s);
}

/** What the document says of a response (reached by `keys`); [] when it matches. */
function responseObjectProblems(keys: string[], method: string, headers: IncomingHttpHeaders, body: Buffer): string[] {
  const { value: response, keys: at } = deref(keys);
  const declared = Object.keys(response.headers ?? {}).map((name) => ({ name, keys: [...at, 'headers', name] }));
  const problems = headerProblems(declared, headers);
  if (method === 'HEAD') return problems;
  if (!response.content) {
    if (body.length > 0) problems.push(`a body is not documented for this response: ${snippet(body)}`);
    return problems;
  }
  const ct = headers['content-type'];
  return [...problems, ...contentProblems([...at, 'content'], response.content, Array.isArray(ct) ? ct[0] : ct, body)];
}

interface PathItem {
  template: string;
  item: Json;
}

function listenersOf(item: Json): Set<Listener> {
  const out = new Set<Listener>();
  for (const m of METHODS) {
    for (const tag of (item[m]?.tags ?? []) as string[]) {
      if (tag === 'admin') out.add('admin');
      if (tag === 'runs' || tag === 'async') out.add('ingress');
    }
  }
  return out;
}

const isTrigger = (item: Json) => METHODS.some((m) => (item[m]?.tags ?? []).includes('async'));

/** The path item a concrete path matches on `listener` (a literal segment beats a template). */
function matchPath(pathname: string, listener: Listener): PathItem | undefined {
  const segments = pathname.split('/');
  let best: { p: PathItem; score: number } | undefined;
  for (const [template, item] of Object.entries(DOCUMENT.paths as Json)) {
    if (isTrigger(item) || !listenersOf(item).has(listener)) continue;
    const t = template.split('/');
    if (t.length !== segments.length) continue;
    let score = 0;
    let ok = true;
    t.forEach((seg, i) => {
      if (/^\{[^}]+\}$/.test(seg)) return;
      if (seg === segments[i]) score++;
      else ok = false;
    });
    if (ok && (!best || score > best.score)) best = { p: { template, item }, score };
  }
  return best?.p;
}

/** `?async=true|1` (any case, first value) or `Prefer: respond-async`: src/api/accept.ts's trigger, read from outside. */
function isAsyncRequest(search: URLSearchParams, requestHeaders: IncomingHttpHeaders): boolean {
  const a = search.get('async')?.toLowerCase();
  if (a === 'true' || a === '1') return true;
  const prefer = requestHeaders.prefer;
  const values = Array.isArray(prefer) ? prefer : prefer ? [prefer] : [];
  return values.some((v) => v.split(',').some((t) => t.split(/[;=]/, 1)[0]!.trim().toLowerCase() === 'respond-async'));
}

/**
 * What a request with no operation (an unknown path, or a method its path does not list) may get,
 * by listener and status: a component response each (info.description, "Conventions").
 */
export const FALLBACKS: Record<Listener, Record<string, string>> = {
  ingress: { '401': 'OwnerRequired', '404': 'NotFound', '405': 'MethodNotAllowed', '503': 'RunsUnavailable', '504': 'EnvoyTimeout' },
  admin: { '401': 'AdminUnauthorized', '403': 'Forbidden', '404': 'NotFound', '405': 'MethodNotAllowed', '500': 'InternalError' },
};

export interface Exchange {
  method: string;
  url: string | URL;
  requestHeaders?: IncomingHttpHeaders;
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * What is wrong with a response by the document: [] when it is documented, null when the
 * document does not describe it (another port, or a request Envoy passes through to the app).
 */
export function responseProblems(ex: Exchange): string[] | null {
  const url = typeof ex.url === 'string' ? new URL(ex.url) : ex.url;
  const listener = listenerAt(Number(url.port));
  if (!listener) return null;
  const method = ex.method.toUpperCase();
  const requestHeaders = Object.fromEntries(Object.entries(ex.requestHeaders ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const underRunsApi = url.pathname === RUNS_PREFIX || url.pathname.startsWith(`${RUNS_PREFIX}/`);
  let found = matchPath(url.pathname, listener);
  if (!found && listener === 'ingress' && !underRunsApi) {
    if (!isAsyncRequest(url.searchParams, requestHeaders)) return null; // the app's own API
    found = Object.entries(DOCUMENT.paths as Json)
      .filter(([, item]) => isTrigger(item))
      .map(([template, item]) => ({ template, item }))[0];
  }
  const check = (keys: string[]) => responseObjectProblems(keys, method, ex.headers, ex.body);
  const op = found?.item[method.toLowerCase()];
  if (!found || !op) {
    // No operation: the document's conventions (info.description) say what may come back.
    const fallback = FALLBACKS[listener][String(ex.status)];
    if (!fallback || (ex.status === 405 && !found) || (ex.status === 404 && found)) {
      return [
        `${found ? `method ${method} of ${found.template}` : 'a path the document does not list'}: status ${ex.status} is not what its conventions allow`,
      ];
    }
    const problems = check(['components', 'responses', fallback]);
    if (ex.status === 405 && found) {
      const documented = METHODS.filter((m) => found.item[m]).map((m) => m.toUpperCase());
      const allow = String(ex.headers.allow ?? '')
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean);
      if ([...allow].sort().join() !== [...documented].sort().join()) {
        problems.push(`allow: ${allow.join(', ')} is not the documented methods of ${found.template} (${documented.join(', ')})`);
      }
    }
    return problems;
  }
  const base = ['paths', found.template, method.toLowerCase(), 'responses'];
  const statuses = [String(ex.status), `${String(ex.status)[0]}XX`, 'default'].filter((s) => op.responses[s]);
  if (statuses.length === 0)
    return [`status ${ex.status} is not documented for ${method} ${found.template} (documented: ${Object.keys(op.responses).join(', ')})`];
  // The first documented entry that matches wins; `default` is where GET …/result puts whatever
  // the upstream answered, which may be any status (see that operation's description).
  const tried = statuses.map((s) => ({ s, problems: check([...base, s]) }));
  if (tried.some((t) => t.problems.length === 0)) return [];
  return tried.flatMap((t) => t.problems.map((p) => `[${t.s}] ${p}`));
}

/** Throws when the document does not describe a response the sidecar's listeners sent. */
export function assertDocumentedResponse(ex: Exchange): void {
  const problems = responseProblems(ex);
  if (!problems || problems.length === 0) return;
  const url = typeof ex.url === 'string' ? new URL(ex.url) : ex.url;
  throw new Error(
    `${ex.method.toUpperCase()} ${url.pathname}${url.search} → ${ex.status} (${listenerAt(Number(url.port))}) does not match openapi/openapi.yaml:\n  ${problems.join('\n  ')}`,
  );
}

/** What is wrong with a webhook a receiver got, by the document's `webhooks`; [] when one of them describes it. */
export function webhookProblems(req: { method: string; headers: IncomingHttpHeaders; body: Buffer }): string[] {
  const all: string[] = [];
  for (const [name, item] of Object.entries(DOCUMENT.webhooks as Json)) {
    const method = req.method.toLowerCase();
    if (!item[method]) {
      all.push(`${name}: method ${req.method} is not documented`);
      continue;
    }
    const keys = ['webhooks', name, method];
    const params = ((item[method].parameters ?? []) as Json[]).map((_, i) => deref([...keys, 'parameters', String(i)]));
    const declared = params.filter((p) => p.value.in === 'header').map((p) => ({ name: p.value.name as string, keys: p.keys }));
    const problems = headerProblems(declared, req.headers);
    const body = deref([...keys, 'requestBody']);
    const ct = req.headers['content-type'];
    problems.push(...contentProblems([...body.keys, 'content'], body.value.content, Array.isArray(ct) ? ct[0] : ct, req.body));
    if (problems.length === 0) return [];
    all.push(...problems.map((p) => `${name}: ${p}`));
  }
  return all;
}
