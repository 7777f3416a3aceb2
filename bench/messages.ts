/**
 * Envoy-shaped ProcessingRequests for the benchmark, and their gRPC wire frames for h2load.
 * Headers are sent as Envoy ≥1.27 does: lower-case keys, values in raw_value, pseudo-headers
 * included, an empty metadata_context on every message.
 */
import type { ProcessingRequest } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import { loadExtProcProto } from '../src/extproc/proto';

export type Shape = 'nobody' | 'body' | 'pass';
export const BODY_BYTES = 1024;

function hdr(key: string, value: string) {
  return { key, raw_value: Buffer.from(value, 'latin1') };
}

/** The request_headers Envoy sends for the shape (`pass`: a non-async GET on a route with the filter). */
export function headersMessage(shape: Shape): ProcessingRequest {
  const async = shape !== 'pass';
  const headers = [
    hdr(':authority', 'app.example.internal'),
    hdr(':path', async ? '/v1/reports/generate?async=true&format=pdf' : '/v1/reports/42?format=pdf'),
    hdr(':method', async ? 'POST' : 'GET'),
    hdr(':scheme', 'http'),
    hdr('user-agent', 'curl/8.5.0'),
    hdr('accept', '*/*'),
    hdr('authorization', 'Bearer 3f1c9f1e2b7a4d7c8e0f5a6b7c8d9e0f'),
    hdr('x-forwarded-proto', 'http'),
    hdr('x-request-id', '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11'),
  ];
  if (shape === 'body') {
    headers.push(hdr('content-type', 'application/json'), hdr('content-length', String(BODY_BYTES)));
  }
  return { request_headers: { headers: { headers }, end_of_stream: shape !== 'body' }, metadata_context: {} };
}

export function bodyMessage(): ProcessingRequest {
  const body = Buffer.alloc(BODY_BYTES, 'x');
  body.write('{"report":"quarterly","pad":"');
  body.write('"}', BODY_BYTES - 2);
  return { request_body: { body, end_of_stream: true }, metadata_context: {} };
}

/** A length-prefixed gRPC message (uncompressed). */
export function grpcFrame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(0, 0);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** The whole client half of one stream for h2load: headers, then the body if the shape has one. */
export function streamBody(shape: Shape): Buffer {
  const serialize = loadExtProcProto().envoy.service.ext_proc.v3.ExternalProcessor.service.Process.requestSerialize;
  const frames = [grpcFrame(serialize(headersMessage(shape)))];
  if (shape === 'body') frames.push(grpcFrame(serialize(bodyMessage())));
  return Buffer.concat(frames);
}

export const PROCESS_PATH = '/envoy.service.ext_proc.v3.ExternalProcessor/Process';
