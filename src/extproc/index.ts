export { ExtProcServer, type ExtProcServerOptions } from './server';
export type { ExtProcHandler, HeadDecision, HttpReply, RequestHead } from './types';
export { loadExtProcProto, ENVOY_PROTO_INCLUDE_DIRS, PROTO_LOADER_OPTIONS } from './proto';
