/**
 * Envoy's route matching, as far as envoy.yaml uses it (source/common/router/config_impl.cc,
 * source/common/router/config_utility.cc, source/common/common/matchers.cc):
 * first matching route wins; path by prefix / exact path / safe_regex (full match, query stripped);
 * every `headers` matcher must match (several values of one header are joined with ',');
 * every `query_parameters` matcher must match the FIRST decoded value of its parameter
 * (QueryParameterMatcher::matches → getFirstValue).
 */
import type { RouteModel, StringMatchModel } from '../envoy-config';

export type HeaderList = [string, string][];

/** RE2 syntax used in envoy.yaml → JS RegExp with Envoy's full-match semantics. */
export function fullMatchRegex(re: string, ignoreCase = false): RegExp {
  let flags = ignoreCase ? 'i' : '';
  let src = re;
  if (src.startsWith('(?i)')) {
    flags = 'i';
    src = src.slice(4);
  }
  return new RegExp(`^(?:${src})$`, flags);
}

export function stringMatches(m: StringMatchModel, value: string): boolean {
  const ic = m.ignore_case === true;
  const v = ic ? value.toLowerCase() : value;
  const t = (s: string) => (ic ? s.toLowerCase() : s);
  if (m.exact !== undefined) return v === t(m.exact);
  if (m.prefix !== undefined) return v.startsWith(t(m.prefix));
  if (m.suffix !== undefined) return v.endsWith(t(m.suffix));
  if (m.contains !== undefined) return v.includes(t(m.contains));
  if (m.safe_regex !== undefined) return fullMatchRegex(m.safe_regex.regex).test(value);
  return false;
}

function firstQueryValue(query: string, name: string): string | undefined {
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawKey = eq < 0 ? part : part.slice(0, eq);
    const rawVal = eq < 0 ? '' : part.slice(eq + 1);
    const dec = (s: string) => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        return s;
      }
    };
    if (dec(rawKey) === name) return dec(rawVal);
  }
  return undefined;
}

export function headerValue(headers: HeaderList, name: string): string | undefined {
  const vals = headers.filter(([k]) => k === name).map(([, v]) => v);
  return vals.length === 0 ? undefined : vals.join(',');
}

export function routeMatches(route: RouteModel, pathWithQuery: string, headers: HeaderList): boolean {
  const q = pathWithQuery.indexOf('?');
  const path = q < 0 ? pathWithQuery : pathWithQuery.slice(0, q);
  const query = q < 0 ? '' : pathWithQuery.slice(q + 1);
  const m = route.match;
  const cs = m.case_sensitive !== false;
  if (m.prefix !== undefined) {
    if (!(cs ? path.startsWith(m.prefix) : path.toLowerCase().startsWith(m.prefix.toLowerCase()))) return false;
  } else if (m.path !== undefined) {
    if (!(cs ? path === m.path : path.toLowerCase() === m.path.toLowerCase())) return false;
  } else if (m.safe_regex !== undefined) {
    if (!fullMatchRegex(m.safe_regex.regex).test(path)) return false;
  } else {
    return false;
  }
  for (const h of m.headers) {
    const value = headerValue(headers, h.name.toLowerCase());
    let ok: boolean;
    if (h.present_match !== undefined) ok = (value !== undefined) === h.present_match;
    else if (value === undefined) ok = false;
    else if (h.string_match) ok = stringMatches(h.string_match, value);
    else if (h.exact_match !== undefined) ok = value === h.exact_match;
    else if (h.prefix_match !== undefined) ok = value.startsWith(h.prefix_match);
    else ok = true; // no value matcher: presence
    if (h.invert_match) ok = !ok;
    if (!ok) return false;
  }
  for (const p of m.query_parameters) {
    const value = firstQueryValue(query, p.name);
    if (value === undefined) return false;
    if (p.string_match && !stringMatches(p.string_match, value)) return false;
  }
  return true;
}

export function matchRoute(routes: readonly RouteModel[], pathWithQuery: string, headers: HeaderList): RouteModel | undefined {
  return routes.find((r) => routeMatches(r, pathWithQuery, headers));
}
