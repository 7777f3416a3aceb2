/**
 * The URL a run is replayed to: the dispatch base (origin plus an optional base path) followed by
 * the run's origin-form target. Built with the URL parser and checked, never by string
 * concatenation alone: `http://envoy:8081` + `@169.254.169.254/` would parse as a request to
 * 169.254.169.254 with `envoy:8081` as user info (docs/SECURITY.md: "ext_proc trust boundary").
 */
export class TargetOutsideOrigin extends Error {
  override name = 'TargetOutsideOrigin';
  readonly code = 'invalid_target';
}

export interface DispatchBase {
  origin: string;
  /** The base URL's path without its trailing slash ('' for none). */
  basePath: string;
}

export function parseDispatchBase(dispatchUrl: string): DispatchBase {
  const u = new URL(dispatchUrl);
  return { origin: u.origin, basePath: u.pathname.replace(/\/+$/, '') };
}

/** The replay URL, or TargetOutsideOrigin when `target` is not an origin-form path of that base. */
export function dispatchTarget(base: DispatchBase, target: string): URL {
  if (target.charCodeAt(0) !== 0x2f && target !== '*') throw new TargetOutsideOrigin('target is not origin-form');
  // `*` (OPTIONS) is asked of the server itself: the base's root.
  const url = new URL(base.origin + base.basePath + (target === '*' ? '/' : target));
  if (url.origin !== base.origin) throw new TargetOutsideOrigin('target leaves the dispatch origin');
  return url;
}
