import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { HttpReply } from '../extproc';
import { apiError } from './errors';

/**
 * The OpenAPI document (`openapi/openapi.yaml`, README "API contract"), next to src/ under ts-jest
 * and copied next to dist/src/ by the build: both are two folders up from this file.
 */
export const OPENAPI_PATH = join(__dirname, '..', '..', 'openapi', 'openapi.yaml');

/** The prefix the document's runs API paths are written with (RUNS_API_PREFIX's default). */
const DOCUMENTED_PREFIX = '/v1/runs';

/** The document as an object, its runs API paths moved under `runsApiPrefix`. */
export function readOpenApiDocument(runsApiPrefix = DOCUMENTED_PREFIX, path = OPENAPI_PATH): Record<string, unknown> {
  const doc = parse(readFileSync(path, 'utf8')) as { paths: Record<string, unknown> } & Record<string, unknown>;
  if (runsApiPrefix === DOCUMENTED_PREFIX) return doc;
  const paths: Record<string, unknown> = {};
  for (const [p, item] of Object.entries(doc.paths)) {
    const under = p === DOCUMENTED_PREFIX || p.startsWith(`${DOCUMENTED_PREFIX}/`);
    paths[under ? runsApiPrefix + p.slice(DOCUMENTED_PREFIX.length) : p] = item;
  }
  return { ...doc, paths };
}

/** The document as served (`GET <prefix>/openapi.json` through Envoy, `GET /openapi.json` on the admin port): converted once, at start. */
export class OpenApiDocument {
  private readonly json: Buffer;
  /** Where Envoy's listener serves it: under the runs API prefix, which every shipped Envoy config already routes to the sidecar. */
  readonly pathViaEnvoy: string;

  constructor(runsApiPrefix: string, path = OPENAPI_PATH) {
    this.pathViaEnvoy = `${runsApiPrefix}/openapi.json`;
    this.json = Buffer.from(`${JSON.stringify(readOpenApiDocument(runsApiPrefix, path))}\n`);
  }

  reply(method: string): HttpReply {
    if (method !== 'GET' && method !== 'HEAD') return apiError('method_not_allowed', 'Allowed methods: GET, HEAD.', { headers: [['allow', 'GET, HEAD']] });
    return { status: 200, headers: [['content-type', 'application/json']], body: this.json, details: 'async_sidecar_openapi' };
  }
}
