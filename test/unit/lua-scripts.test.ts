/**
 * The Redis contract in one place: every script file is `<name>-<keys>.lua`, is loaded by the
 * store, names its KEYS in an Input header, and uses exactly as many keys as its file name says
 * (Redis Cluster routes a script by its declared keys, so an undeclared key is a cross-slot bug),
 * and every script goes to Redis with a shebang: that makes Redis 7 in cluster mode refuse a
 * script that touches a key or shard channel of another slot, which
 * test/integration/script-slots.test.ts then checks for every script on a cluster-mode server.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SCRIPT_NAMES, SCRIPTS_DIR, scriptFile, scriptSources } from '../../src/runs/store';

const files = readdirSync(SCRIPTS_DIR).filter((f) => f.endsWith('.lua') && f !== 'lib.lua');
const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

describe('Lua scripts', () => {
  it('are all loaded by the store, one file per name, the key count in the file name', () => {
    expect(files.map((f) => camel(f.replace(/-\d+\.lua$/, ''))).sort()).toEqual([...SCRIPT_NAMES].sort());
    for (const f of files) expect(f).toMatch(/^[a-z_]+-\d+\.lua$/);
  });

  it.each(files)('%s uses exactly the keys its name declares, and documents them', (f) => {
    const text = readFileSync(join(SCRIPTS_DIR, f), 'utf8');
    const { numberOfKeys } = scriptFile(camel(f.replace(/-\d+\.lua$/, '')));
    const used = new Set([...text.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
    expect([...used].sort((a, b) => a - b)).toEqual(Array.from({ length: numberOfKeys }, (_, i) => i + 1));
    expect(text).toMatch(/^-- KEYS: /m);
    expect(text).toMatch(/^-- .*Returns?\b/m);
  });

  it('go to Redis with a shebang (Redis then checks that each stays in one slot, and refuses a writing one over maxmemory)', () => {
    for (const [name, { lua }] of scriptSources()) expect([name, lua.split('\n')[0]]).toEqual([name, expect.stringMatching(/^#!lua( flags=no-writes)?$/)]);
  });
});
