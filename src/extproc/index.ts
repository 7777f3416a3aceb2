export { ExtProcServer, type ExtProcServerOptions } from './server';
export type { ExtProcHandler, HeadDecision, HttpReply, RequestHead, StreamMetadata } from './types';
export { loadExtProcProto, PROTO_LOADER_OPTIONS } from './proto';
