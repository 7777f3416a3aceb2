import { mergeReport, renderReport } from '../../drills/report';
import type { DrillResult } from '../../drills/lib';

const result = (id: string, value: string, ok = true): DrillResult => ({
  id,
  title: `Drill ${id}`,
  setup: [`set up ${id}`],
  counts: [['measured thing', value]],
  checks: [{ name: `${id} holds`, ok }],
  notes: [],
  durationMs: 1500,
});

describe('docs/RELIABILITY.md (drills/report.ts)', () => {
  it('after a subset of drills, rewrites their rows and sections and keeps the others as they were, with their dates', () => {
    const full = renderReport([result('a', 'one'), result('b', 'two'), result('c', 'three')], { mode: 'fast', totalMs: 9000 });
    const merged = mergeReport(full, [result('b', 'TWO', false)], { mode: 'full', totalMs: 2000 }, ['a', 'b', 'c']);
    expect(merged).toContain('| measured thing | one |');
    expect(merged).toContain('| measured thing | TWO |');
    expect(merged).not.toContain('| measured thing | two |');
    expect(merged).toContain('| measured thing | three |');
    expect(merged.indexOf('<a id="a">')).toBeLessThan(merged.indexOf('<a id="b">'));
    expect(merged.indexOf('<a id="b">')).toBeLessThan(merged.indexOf('<a id="c">'));
    expect(merged).toMatch(/\| \[Drill b\]\(#b\) \| \*\*1 of 1 FAILED\*\* \| 1\.5 s \| \d{4}-\d{2}-\d{2}, full \|/);
    expect(merged).toContain('**1 checks failed**');
    expect(merged).toContain('some drills in full mode');
    // Merging again changes nothing else.
    expect(mergeReport(merged, [result('b', 'TWO', false)], { mode: 'full', totalMs: 2000 }, ['a', 'b', 'c'])).toBe(merged);
  });

  it('adds a new drill in its place and dates the rows of a report written before the "measured" column', () => {
    const old = [
      'by the last run of `npm run drills` (fast mode, 2026-12-02,',
      '',
      '| drill | checks | time |',
      '| --- | --- | --- |',
      '| [Drill a](#a) | all 1 passed | 1.0 s |',
      '| [Drill c](#c) | all 1 passed | 1.0 s |',
      '',
      '<a id="a"></a>',
      '## Drill a',
      '',
      'old a',
      '',
      '<a id="c"></a>',
      '## Drill c',
      '',
      'old c',
    ].join('\n');
    const merged = mergeReport(old, [result('b', 'new')], { mode: 'fast', totalMs: 1000 }, ['a', 'b', 'c']);
    expect(merged).toContain('| [Drill a](#a) | all 1 passed | 1.0 s | 2026-12-02, fast |');
    expect(merged.indexOf('old a')).toBeLessThan(merged.indexOf('| measured thing | new |'));
    expect(merged.indexOf('| measured thing | new |')).toBeLessThan(merged.indexOf('old c'));
  });
});
