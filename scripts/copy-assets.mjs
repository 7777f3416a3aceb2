// tsc compiles only .ts: copy the files the built sidecar reads at run time (Lua scripts,
// dashboard assets, the ext_proc descriptor, the OpenAPI document) next to the compiled code,
// keeping their paths (dist/src/..., dist/openapi/).
import { cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = join(new URL('.', import.meta.url).pathname, '..');
for (const dir of ['src/runs/scripts', 'src/admin/dashboard', 'src/generated', 'openapi']) {
  const from = join(root, dir);
  if (existsSync(from)) cpSync(from, join(root, 'dist', dir), { recursive: true, filter: (p) => !p.endsWith('.ts') });
}
