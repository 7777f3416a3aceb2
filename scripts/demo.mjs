#!/usr/bin/env node
// `npm run demo`: builds first when dist/ is missing or older than the sources (the demo itself is
// compiled by the build, to dist/scripts/demo.js), then runs it in this process so that Ctrl-C and
// SIGTERM reach it directly. package.json runs this with `exec`, so no shell stands between npm
// and the demo: a shell killed by Ctrl-C makes npm exit at once, before the demo has stopped everything.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outputs = ['dist/src/main.js', 'dist/scripts/demo.js'].map((p) => join(root, p));

/** Newest modification time under `dir` (src/generated is written by every `npm test`, so it is skipped). */
function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (p !== join(root, 'src', 'generated')) t = Math.max(t, newest(p));
    } else t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

const sources = Math.max(
  newest(join(root, 'src')),
  ...readdirSync(join(root, 'scripts'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => statSync(join(root, 'scripts', f)).mtimeMs),
);
const built = outputs.every((p) => existsSync(p)) ? Math.min(...outputs.map((p) => statSync(p).mtimeMs)) : 0;
if (built < sources) {
  console.log(built === 0 ? 'demo: dist/ is missing: npm run build' : 'demo: sources changed since the last build: npm run build');
  const r = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
createRequire(import.meta.url)(outputs[1]);
