import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import type { ProtoGrpcType } from '../generated/external_processor';

/**
 * Envoy's ext_proc service, from the JSON descriptor scripts/generate-proto-types.mjs writes at
 * build time out of the API protos @grpc/grpc-js-xds ships (a build-time dependency only: nothing
 * is copied into the repo, and the running sidecar reads no .proto file).
 */
const DESCRIPTOR = join(__dirname, '..', 'generated', 'ext_proc.descriptor.json');

/** The options the generated types in src/generated assume (see scripts/generate-proto-types.mjs). */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
};

let cached: ProtoGrpcType | undefined;

/** Loads envoy.service.ext_proc.v3 once per process. */
export function loadExtProcProto(): ProtoGrpcType {
  if (!cached) {
    const definition = protoLoader.fromJSON(JSON.parse(readFileSync(DESCRIPTOR, 'utf8')), PROTO_LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}
