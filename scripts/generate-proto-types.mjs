// Generates TypeScript types for the Envoy ext_proc protos that @grpc/grpc-js-xds ships.
// Nothing third-party is copied into the repo: the protos stay in node_modules and the
// generated types land in src/generated/ (git-ignored), rebuilt before build and test.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { rmSync } from 'node:fs';

const require = createRequire(import.meta.url);
const xdsRoot = dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
const genTypes = require.resolve('@grpc/proto-loader/build/bin/proto-loader-gen-types.js');
const out = join(dirname(new URL(import.meta.url).pathname), '..', 'src', 'generated');

rmSync(out, { recursive: true, force: true });
const includeDirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(xdsRoot, 'deps', d));
execFileSync(
  process.execPath,
  [
    genTypes,
    'envoy/service/ext_proc/v3/external_processor.proto',
    '--keepCase',
    '--longs=String',
    '--enums=String',
    '--oneofs',
    '--grpcLib=@grpc/grpc-js',
    '--outDir',
    out,
    ...includeDirs.map((d) => `--includeDirs=${d}`),
  ],
  { stdio: 'inherit' },
);

// The same protos as one JSON descriptor, which the sidecar loads at run time
// (src/extproc/proto.ts): the running sidecar then needs no .proto files, so @grpc/grpc-js-xds
// (35 packages, an xDS client the process never uses) is a build-time dependency only.
// proto-loader's own loader (include paths, the well-known types it adds) makes the same Root
// that loadSync would at run time.
const { addCommonProtos, loadProtosWithOptionsSync } = require('@grpc/proto-loader/build/src/util');
addCommonProtos();
const { writeFileSync } = await import('node:fs');
const root = loadProtosWithOptionsSync('envoy/service/ext_proc/v3/external_processor.proto', { keepCase: true, includeDirs });
writeFileSync(join(out, 'ext_proc.descriptor.json'), JSON.stringify(root.toJSON()));
