/**
 * openapi/openapi.yaml on its own: a valid OpenAPI 3.1 document that agrees with the code's
 * catalogs (errors, statuses, error codes), the README's runs API table, and itself (tags and
 * servers). That it describes what the sidecar answers is checked by the integration tests,
 * through test/support/openapi.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validate } from '@readme/openapi-parser';
import type { OpenAPIV3_1 } from 'openapi-types';
import { API_ERRORS, OpenApiDocument, readOpenApiDocument } from '../../src/api';
import { ATTEMPT_ERRORS, DISPATCH_ERRORS, RUN_STATUSES } from '../../src/runs';
import { DOCUMENT, FALLBACKS } from '../support/openapi';

type Json = Record<string, any>;
const ROOT = join(__dirname, '..', '..');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function deref(value: Json): Json {
  while (value && typeof value.$ref === 'string') {
    value = (value.$ref as string)
      .slice(2)
      .split('/')
      .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((v: Json, k) => v[k], DOCUMENT);
  }
  return value;
}

/** The error codes a schema allows: `error.code`'s enum or const, through allOf. */
function codesOf(schema: Json | undefined): string[] {
  if (!schema) return [];
  const s = deref(schema);
  const code = s.properties?.error?.properties?.code;
  const own = code ? [...(code.enum ?? []), ...(code.const !== undefined ? [code.const] : [])] : [];
  return [...own, ...((s.allOf ?? []) as Json[]).flatMap(codesOf)];
}

/** Every (status, response) the document gives: operations' responses and the conventions' fallbacks. */
function responses(): Array<{ status: string; where: string; response: Json }> {
  const out: Array<{ status: string; where: string; response: Json }> = [];
  for (const [path, item] of Object.entries(DOCUMENT.paths as Json)) {
    for (const m of METHODS) {
      for (const [status, r] of Object.entries((item[m]?.responses ?? {}) as Json)) out.push({ status, where: `${m} ${path}`, response: deref(r) });
    }
  }
  for (const byStatus of Object.values(FALLBACKS)) {
    for (const [status, name] of Object.entries(byStatus)) out.push({ status, where: `conventions ${name}`, response: DOCUMENT.components.responses[name] });
  }
  return out;
}

describe('openapi/openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await validate(structuredClone(DOCUMENT) as OpenAPIV3_1.Document, { validate: { errors: { colorize: false } } });
    expect(result.valid ? [] : result.errors.map((e) => e.message)).toEqual([]);
    expect(DOCUMENT.openapi).toBe('3.1.0');
  });

  it('names the package version', () => {
    expect(DOCUMENT.info.version).toBe((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
  });

  it('lists every code of the error catalog (src/api/errors.ts) with its status, and no other', () => {
    const documented = new Map<string, Set<string>>();
    for (const { status, response } of responses()) {
      for (const media of Object.values((response.content ?? {}) as Json)) {
        for (const code of codesOf(media.schema)) documented.set(code, new Set([...(documented.get(code) ?? []), status]));
      }
    }
    const catalog = Object.entries(API_ERRORS).map(([code, spec]) => [code, [String(spec.status)]]);
    const found = Object.keys(API_ERRORS).map((code) => [code, [...(documented.get(code) ?? [])].sort()]);
    expect(found).toEqual(catalog);
    expect([...documented.keys()].filter((c) => !(c in API_ERRORS))).toEqual([]);
  });

  it('declares retry-after wherever the catalog sends one', () => {
    const missing: string[] = [];
    for (const { where, status, response } of responses()) {
      for (const media of Object.values((response.content ?? {}) as Json)) {
        for (const code of codesOf(media.schema)) {
          const spec: { status: number; retryAfterS?: number } = API_ERRORS[code as keyof typeof API_ERRORS];
          if (spec.retryAfterS !== undefined && !response.headers?.['retry-after']) missing.push(`${where} ${status} ${code}`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  it("agrees with the code's statuses and error codes", () => {
    const schemas = DOCUMENT.components.schemas as Json;
    expect(schemas.RunStatus.enum).toEqual([...RUN_STATUSES]);
    expect(schemas.FinalStatus.enum).toEqual(RUN_STATUSES.filter((s) => s !== 'queued' && s !== 'running'));
    expect(schemas.DispatchErrorCode.enum).toEqual([...DISPATCH_ERRORS, 'cancelled']);
    expect(schemas.WebhookAttempt.properties.error.oneOf[1].enum).toEqual([...ATTEMPT_ERRORS]);
  });

  it('serves each operation where its tags say: async and runs through Envoy, admin on the admin port', () => {
    const [ingress, admin] = (DOCUMENT.servers as Array<{ url: string }>).map((s) => s.url);
    const wrong: string[] = [];
    for (const [path, item] of Object.entries(DOCUMENT.paths as Json)) {
      const tags = new Set(METHODS.flatMap((m) => (item[m]?.tags ?? []) as string[]));
      const urls = new Set(((item.servers ?? DOCUMENT.servers) as Array<{ url: string }>).map((s) => s.url));
      const expected = new Set([...(tags.has('async') || tags.has('runs') ? [ingress] : []), ...(tags.has('admin') ? [admin] : [])]);
      if ([...urls].sort().join() !== [...expected].sort().join()) wrong.push(`${path}: servers ${[...urls].join(', ')}, tags ${[...tags].join(', ')}`);
    }
    expect(wrong).toEqual([]);
  });

  it("has the same runs API calls as the README's runs API table", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Runs API'), readme.indexOf('\n## ', readme.indexOf('\n## Runs API') + 1));
    const norm = (path: string) => path.split('?')[0]!.replace(/\{[^}]+\}/g, '{}');
    const inReadme = new Set([...section.matchAll(/^\| `(GET|POST|PUT|PATCH|DELETE) ([^`]+)` \|/gm)].map(([, method, path]) => `${method} ${norm(path!)}`));
    const inDocument = new Set(
      Object.entries(DOCUMENT.paths as Json)
        .filter(([path]) => path.startsWith('/v1/runs'))
        .flatMap(([path, item]) => METHODS.filter((m) => item[m] && m !== 'head').map((m) => `${m.toUpperCase()} ${norm(path)}`)),
    );
    expect(inReadme.size).toBeGreaterThan(4);
    expect([...inDocument].sort()).toEqual([...inReadme].sort());
  });

  it('is served as JSON with its runs API paths under RUNS_API_PREFIX', () => {
    const served = new OpenApiDocument('/api/jobs');
    expect(served.pathViaEnvoy).toBe('/api/jobs/openapi.json');
    const reply = served.reply('GET');
    expect(reply.status).toBe(200);
    expect(reply.headers).toEqual([['content-type', 'application/json']]);
    const doc = JSON.parse(reply.body.toString()) as Json;
    expect(Object.keys(doc.paths)).toEqual(Object.keys(DOCUMENT.paths).map((p) => p.replace(/^\/v1\/runs(?=\/|$)/, '/api/jobs')));
    expect(Object.keys(doc.paths)).toContain('/api/jobs/{id}/result');
    expect(readOpenApiDocument()).toEqual(DOCUMENT);
    const refused = served.reply('POST');
    expect([refused.status, refused.headers]).toEqual([
      405,
      [
        ['content-type', 'application/json'],
        ['allow', 'GET, HEAD'],
      ],
    ]);
  });
});
