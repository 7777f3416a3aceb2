// tsc compiles only .ts: copy the files the built sidecar reads at run time (Lua scripts,
// dashboard assets, the ext_proc descriptor, the OpenAPI document) next to the compiled code,
// keeping their paths (<outDir>/src/..., <outDir>/openapi/).
// Usage: node scripts/copy-assets.mjs [outDir] (default dist; the benchmarks compile into dist-bench).
import { cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = join(new URL('.', import.meta.url).pathname, '..');
const outDir = process.argv[2] ?? 'dist';
for (const dir of ['src/runs/scripts', 'src/admin/dashboard', 'src/generated', 'openapi']) {
  const from = join(root, dir);
  if (existsSync(from)) cpSync(from, join(root, outDir, dir), { recursive: true, filter: (p) => !p.endsWith('.ts') });
}
