import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HttpReply } from '../extproc';
import { apiError } from '../api';

/**
 * The runs dashboard: a static page at `/` and its assets at `/dashboard/<asset>` on the admin
 * port. The page carries no secret and no data; every API call it makes sends the admin token
 * itself, so it is served without one. Assets are read from `dashboard/` next to this file
 * (src/ under ts-jest, dist/ once built) and kept in memory after the first read.
 */
const ASSET_DIR = join(__dirname, 'dashboard');
const ASSET_NAME = /^[a-z0-9][a-z0-9-]*\.(js|css|svg)$/;
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
};

/** No inline script or style, no other origin: the page only talks to the admin port itself. */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const cache = new Map<string, Buffer | null>();

function asset(name: string): Buffer | null {
  if (!cache.has(name)) {
    let body: Buffer | null = null;
    try {
      body = readFileSync(join(ASSET_DIR, name));
    } catch {
      body = null;
    }
    cache.set(name, body);
  }
  return cache.get(name)!;
}

const escapeAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function headers(type: string): Array<[string, string]> {
  return [
    ['content-type', type],
    ['cache-control', 'no-cache'],
    ['x-content-type-options', 'nosniff'],
    ['referrer-policy', 'no-referrer'],
  ];
}

/**
 * The reply for `GET|HEAD /` or `/dashboard/<asset>`, or null when the path is not the
 * dashboard's. `runsApiPrefix` is written into the page so that its script finds the runs API.
 */
export function dashboardReply(method: string, pathname: string, runsApiPrefix: string): HttpReply | null {
  const isPage = pathname === '/' || pathname === '/dashboard' || pathname === '/dashboard/';
  const assetName = !isPage && pathname.startsWith('/dashboard/') ? pathname.slice('/dashboard/'.length) : null;
  if (!isPage && assetName === null) return null;
  if (method !== 'GET' && method !== 'HEAD') return apiError('method_not_allowed', 'Allowed methods: GET, HEAD.', { headers: [['allow', 'GET, HEAD']] });
  if (isPage) {
    const page = asset('index.html');
    if (!page) return apiError('internal_error', 'The dashboard assets are missing from this build.');
    const body = page.toString('utf8').replace(/\{\{RUNS_API_PREFIX\}\}/g, escapeAttr(runsApiPrefix));
    return {
      status: 200,
      headers: [...headers(TYPES.html!), ['content-security-policy', DASHBOARD_CSP], ['x-frame-options', 'DENY']],
      body,
    };
  }
  const body = assetName && ASSET_NAME.test(assetName) ? asset(assetName) : null;
  if (!body) return apiError('not_found', 'No such dashboard asset.');
  return { status: 200, headers: headers(TYPES[assetName!.split('.').pop()!]!), body };
}
