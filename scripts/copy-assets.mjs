// tsc compiles only .ts: copy the files the built sidecar reads at run time (Lua scripts,
// dashboard assets, the ext_proc descriptor, the OpenAPI document) next to the compiled code,
// keeping their paths (<outDir>/src/..., <outDir>/openapi/).
// Usage: node scripts/copy-assets.mjs [outDir] (default dist; the benchmarks compile into dist-bench).
import { cpSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(new URL('.', import.meta.url).pathname, '..');
const outDir = process.argv[2] ?? 'dist';
// The store loads every script of its folder and reads a script's key count from its file name:
// a copy left from an earlier build (enqueue_run-3.lua beside enqueue_run-6.lua) stops start-up.
rmSync(join(root, outDir, 'src/runs/scripts'), { recursive: true, force: true });
for (const dir of ['src/runs/scripts', 'src/admin/dashboard', 'src/generated', 'openapi']) {
  const from = join(root, dir);
  if (existsSync(from)) cpSync(from, join(root, outDir, dir), { recursive: true, filter: (p) => !p.endsWith('.ts') });
}
