import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_DRILLS } from './index';
import type { DrillMode, DrillResult } from './lib';
import { mergeReport, renderReport } from './report';

/**
 * The drills runner (`npm run drills`): runs every drill, prints its counts, and regenerates
 * docs/RELIABILITY.md. DRILLS=full for the larger sizes; DRILLS_ONLY=a,b runs a subset (and then
 * rewrites only their rows and sections of the report).
 */
const mode: DrillMode = process.env.DRILLS === 'full' ? 'full' : 'fast';
const only = process.env.DRILLS_ONLY ? new Set(process.env.DRILLS_ONLY.split(',')) : null;
const results: DrillResult[] = [];
const started = Date.now();
const out = (s: string) => process.stdout.write(`${s}\n`);

afterAll(() => {
  if (results.length === 0) return;
  const path = join(__dirname, '..', 'docs', 'RELIABILITY.md');
  const meta = { mode, totalMs: Date.now() - started };
  // A subset rewrites its own rows and sections; the other drills keep theirs, with their dates.
  const report =
    only && existsSync(path)
      ? mergeReport(
          readFileSync(path, 'utf8'),
          results,
          meta,
          ALL_DRILLS.map((d) => d.id),
        )
      : renderReport(results, meta);
  writeFileSync(path, report);
  out(`wrote ${path}`);
});

describe(`reliability drills (${mode})`, () => {
  for (const drill of ALL_DRILLS) {
    const maybe = only && !only.has(drill.id) ? it.skip : it;
    maybe(`${drill.id}: ${drill.title}`, async () => {
      out(`\n=== ${drill.id}: ${drill.title}`);
      let r: DrillResult;
      const t0 = Date.now();
      try {
        r = await drill.run({ mode, log: (m) => out(`  · ${m}`) });
      } catch (err) {
        r = {
          id: drill.id,
          title: drill.title,
          setup: [],
          counts: [],
          checks: [{ name: 'drill ran to the end', ok: false, detail: (err as Error).message }],
          notes: [],
          durationMs: Date.now() - t0,
        };
        out(`  drill crashed: ${(err as Error).stack}`);
      }
      results.push(r);
      for (const [k, v] of r.counts) out(`  ${k}: ${v}`);
      for (const c of r.checks) out(`  [${c.ok ? 'ok' : 'FAIL'}] ${c.name}${c.ok || !c.detail ? '' : ` — ${c.detail}`}`);
      if (r.extra && only) out(r.extra);
      out(`  (${(r.durationMs / 1000).toFixed(1)} s)`);
      expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    });
  }
});
