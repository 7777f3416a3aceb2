import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const PACKAGE_NAME = 'envoy-async-sidecar';

let version: string | undefined;

/**
 * The version in this package's package.json, for `--version`. Found by walking up from this
 * file, because it sits at a different depth in the sources (src/config), the build
 * (dist/src/config) and an installed package (node_modules/envoy-async-sidecar/dist/src/config).
 */
export function packageVersion(): string {
  if (version !== undefined) return version;
  for (let dir = __dirname; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === PACKAGE_NAME && pkg.version) return (version = pkg.version);
    } catch {
      // no package.json here (or not ours): keep walking up
    }
    if (dirname(dir) === dir) throw new Error(`no package.json of ${PACKAGE_NAME} above ${__dirname}`);
  }
}
