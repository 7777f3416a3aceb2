// Runs before `npm pack` builds, so the build starts from an empty dist/: the package's `files`
// take all of dist/src/, and a module left there by an earlier build (since renamed or deleted in
// src/) would be shipped too.
import { rmSync } from 'node:fs';
import { join } from 'node:path';

rmSync(join(new URL('.', import.meta.url).pathname, '..', 'dist'), { recursive: true, force: true });
