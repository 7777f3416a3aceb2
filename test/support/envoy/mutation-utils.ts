/**
 * Header and body mutations as Envoy's ext_proc applies them (source/extensions/filters/http/
 * ext_proc/mutation_utils.cc and mutation_rules.cc), plus the small header-list edits they use.
 */
import type { CommonResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/CommonResponse';
import type { HeaderMutation__Output } from '../../../src/generated/envoy/service/ext_proc/v3/HeaderMutation';
import type { HeaderList } from './route-match';

/** MutationUtils::headersToProto: {key, raw_value}, `value` left empty. */
export function headersToProto(list: HeaderList) {
  return { headers: list.map(([key, v]) => ({ key, raw_value: Buffer.from(v, 'latin1') })) };
}

/**
 * MutationUtils::applyHeaderMutations with the default Checker (mutation_rules.cc): only
 * `raw_value` is read; `value` and `raw_value` both set is an error; host/:authority/:method/:scheme
 * and x-envoy-* may not be set (ignored + counted; :method allowed under CONTINUE_AND_REPLACE);
 * host and ':' headers may not be removed. Returns an error message for fatal errors.
 */
export function applyHeaderMutation(
  hm: HeaderMutation__Output,
  headers: HeaderList,
  replacing: boolean,
  stats?: { rejectedHeaderMutations: number },
): string | undefined {
  const reject = () => {
    if (stats) stats.rejectedHeaderMutations++;
  };
  const nameOk = (n: string) => /^[!#$%&'*+\-.^_`|~0-9a-zA-Z:]+$/.test(n);
  for (const name of hm.remove_headers ?? []) {
    if (!nameOk(name)) {
      reject();
      return 'Invalid character in remove_headers mutation.';
    }
    const n = name.toLowerCase();
    if (n.startsWith(':') || n === 'host' || n.startsWith('x-envoy-')) {
      reject();
      continue;
    }
    removeHeader(headers, n);
  }
  for (const sh of hm.set_headers ?? []) {
    if (!sh.header) continue;
    const raw = sh.header.raw_value ?? Buffer.alloc(0);
    if ((sh.header.value ?? '') !== '' && raw.length > 0) {
      reject();
      return 'Only one of value or raw_value in the HeaderValue message should be set.';
    }
    const value = Buffer.from(raw).toString('latin1');
    const key = sh.header.key ?? '';
    if (!nameOk(key) || /[\r\n\0]/.test(value)) {
      reject();
      return 'Invalid character in set_headers mutation.';
    }
    const n = key.toLowerCase();
    const forbidden = n === 'host' || n === ':authority' || n === ':scheme' || (n === ':method' && !replacing) || n.startsWith('x-envoy-');
    if (forbidden) {
      reject();
      continue;
    }
    const append = sh.append?.value === true;
    if (append) headers.push([n, value]);
    else setHeader(headers, n, value);
  }
  return undefined;
}

export function applyBodyMutation(bm: NonNullable<CommonResponse__Output['body_mutation']>, body: Buffer): Buffer {
  if (bm.mutation === 'body' || bm.body !== undefined) return Buffer.from(bm.body ?? Buffer.alloc(0));
  if (bm.clear_body) return Buffer.alloc(0);
  return body;
}

export function setHeader(h: HeaderList, name: string, value: string): void {
  const i = h.findIndex(([k]) => k === name);
  removeHeader(h, name);
  if (i >= 0 && i <= h.length) h.splice(i, 0, [name, value]);
  else h.push([name, value]);
}

export function removeHeader(h: HeaderList, name: string): void {
  h.splice(0, h.length, ...h.filter(([k]) => k !== name)); // in place: callers hold the list
}
