import { dirname, join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import type { ProtoGrpcType } from '../generated/external_processor';

/**
 * Envoy's API protos as shipped by @grpc/grpc-js-xds (nothing is copied into this repo).
 * The include order matters only for name clashes, and there are none.
 */
export const ENVOY_PROTO_INCLUDE_DIRS: readonly string[] = (() => {
  const root = dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(root, 'deps', d));
})();

/** The options the generated types in src/generated assume (see scripts/generate-proto-types.mjs). */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
  includeDirs: [...ENVOY_PROTO_INCLUDE_DIRS],
};

let cached: ProtoGrpcType | undefined;

/** Loads envoy.service.ext_proc.v3 once per process. */
export function loadExtProcProto(): ProtoGrpcType {
  if (!cached) {
    const definition = protoLoader.loadSync('envoy/service/ext_proc/v3/external_processor.proto', PROTO_LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}
