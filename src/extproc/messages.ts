import type { HeaderMap__Output } from '../generated/envoy/config/core/v3/HeaderMap';
import type { HeaderValueOption } from '../generated/envoy/config/core/v3/HeaderValueOption';
import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse';
import type { ProcessingMode } from '../generated/envoy/extensions/filters/http/ext_proc/v3/ProcessingMode';
import type { HttpReply, RequestHead } from './types';

/**
 * Envoy ≥1.27 sends header values in `raw_value` (bytes) and leaves `value` empty; older Envoys
 * use `value`. Bytes are read as latin1 so that any octet survives the round trip to the upstream.
 */
export function headValueOf(h: { value?: string; raw_value?: Buffer }): string {
  return h.raw_value && h.raw_value.length > 0 ? h.raw_value.toString('latin1') : (h.value ?? '');
}

export class MalformedHeaders extends Error {}

/**
 * Envoy's HTTP codecs only hand ext_proc an origin-form `:path` (RFC 9112 §3.2.1: `/` then path
 * and query) or `*` for OPTIONS; anything else (`@host/…`, `http://…`, spaces, control bytes) can
 * only come from a client talking gRPC to this port directly, and would let it steer the replay
 * to another host (docs/SECURITY.md: "ext_proc trust boundary").
 */
export function isOriginForm(method: string, path: string): boolean {
  if (path === '*') return method === 'OPTIONS';
  // No spaces, control bytes or fragment; octets above 0x7f (raw UTF-8, read as latin1) pass as Envoy lets them.
  return path.charCodeAt(0) === 0x2f && /^[\x21-\x7e\x80-\xff]*$/.test(path) && !path.includes('#');
}

/** request_headers -> RequestHead; throws MalformedHeaders when a pseudo-header is missing. */
export function toRequestHead(map: HeaderMap__Output | undefined, endOfStream: boolean): RequestHead {
  let method = '';
  let path = '';
  let authority = '';
  let scheme = 'http';
  const headers: Array<[string, string]> = [];
  for (const h of map?.headers ?? []) {
    const key = (h.key ?? '').toLowerCase();
    const value = headValueOf(h);
    if (key.startsWith(':')) {
      if (key === ':method') method = value;
      else if (key === ':path') path = value;
      else if (key === ':authority') authority = value;
      else if (key === ':scheme') scheme = value;
    } else {
      headers.push([key, value]);
    }
  }
  if (!method || !path) throw new MalformedHeaders('request_headers without :method or :path');
  if (!isOriginForm(method, path)) throw new MalformedHeaders(':path must be origin-form (/path?query), or * for OPTIONS');
  if (!authority) authority = headers.find(([k]) => k === 'host')?.[1] ?? '';
  return { method, path, authority, scheme, headers, endOfStream };
}

/**
 * Header options with the value in raw_value: Envoy ignores `value` in responses. The first value
 * of a name replaces what Envoy would set (content-type); a repeated name (an app's set-cookie
 * lines) is added as another line. ext_proc's MutationUtils::applyHeaderMutations reads only the
 * deprecated `append` for that, not `append_action` (measured on Envoy 1.40: with
 * APPEND_IF_EXISTS_OR_ADD the last set-cookie replaced the others).
 */
function setHeaders(headers: Array<[string, string]>): HeaderValueOption[] {
  const seen = new Set<string>();
  return headers.map(([key, value]) => {
    const header = { key, raw_value: Buffer.from(value, 'latin1') };
    if (seen.has(key)) return { header, append: { value: true } };
    seen.add(key);
    return { header, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' };
  });
}

export function immediateResponse(reply: HttpReply): ProcessingResponse {
  return {
    immediate_response: {
      status: { code: reply.status as never },
      headers: { set_headers: setHeaders(reply.headers) },
      body: typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body,
      details: reply.details ?? '',
    },
  };
}

/**
 * For a request that is not ours: continue unchanged and switch every later phase off, so that
 * Envoy sends nothing more on this stream (mode_override is honoured when allow_mode_override is
 * set; body modes are copied literally, so NONE must be explicit).
 */
export const CONTINUE_AND_STOP: ProcessingResponse = {
  request_headers: { response: { status: 'CONTINUE' } },
  mode_override: {
    request_body_mode: 'NONE',
    request_trailer_mode: 'SKIP',
    response_header_mode: 'SKIP',
    response_body_mode: 'NONE',
    response_trailer_mode: 'SKIP',
  } satisfies ProcessingMode,
};

/**
 * For an async request with a body: continue and ask for the body BUFFERED (whole, one message,
 * the upstream request held back meanwhile), plus the trailers if the request has any, since a
 * body followed by trailers arrives with end_of_stream=false.
 */
export const CONTINUE_WITH_BUFFERED_BODY: ProcessingResponse = {
  request_headers: { response: { status: 'CONTINUE' } },
  mode_override: {
    request_body_mode: 'BUFFERED',
    request_trailer_mode: 'SEND',
    response_header_mode: 'SKIP',
    response_body_mode: 'NONE',
    response_trailer_mode: 'SKIP',
  } satisfies ProcessingMode,
};

/**
 * A STREAMED chunk of a body we are collecting: acknowledge it and drop its bytes, so that
 * nothing of an async request's body reaches the upstream before the 202 ends the request.
 */
export const STREAMED_CHUNK_TAKEN: ProcessingResponse = {
  request_body: { response: { status: 'CONTINUE', body_mutation: { clear_body: true } } },
};

export function continueResponse(phase: 'request_body' | 'request_trailers' | 'response_headers' | 'response_body' | 'response_trailers'): ProcessingResponse {
  if (phase === 'request_trailers' || phase === 'response_trailers') return { [phase]: {} };
  return { [phase]: { response: { status: 'CONTINUE' } } };
}

export function overrideMessageTimeout(ms: number): ProcessingResponse {
  return { override_message_timeout: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 } };
}
