// Prints the README's configuration table from the settings schema (after `npm run build`).
// The unit test test/unit/config.test.ts fails when the README's copy differs.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { markdownTable } = require('../dist/src/config/index.js');
process.stdout.write(`${markdownTable()}\n`);
