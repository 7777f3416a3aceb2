import { readFileSync } from 'node:fs';
import { BASELINE_FILE, readResults, type Results } from '../../bench/results';
import { TEMPLATE_FILE, compareWithBaseline, describeComparison, keyRatios, renderReport } from '../../bench/report';
import type { AcceptRow } from '../../bench/load';

const template = readFileSync(TEMPLATE_FILE, 'utf8');

function acceptRow(server: AcceptRow['server'], shape: AcceptRow['shape'], reqPerSec: number): AcceptRow {
  const sidecar = server === 'sidecar';
  return {
    server,
    shape,
    reqPerSec,
    seconds: 8,
    succeeded: reqPerSec * 8,
    failed: 0,
    errored: 0,
    meanMs: 10,
    maxMs: 50,
    cpuUsPerRun: sidecar ? 150 : 70,
    redisCpuUsPerRun: sidecar ? 30 : null,
    stored: sidecar ? reqPerSec * 8 : null,
  };
}

/**
 * Results with the accept scenario (sidecar / floor = `nobody` and `body`) and the completion scenario (sidecar / BullMQ =
 * `completion`; the sidecar with a queue limit / without = `limited`).
 */
function results(ratios: { nobody: number; body: number; completion: number; limited?: number }, quick = false): Results {
  const at = '2026-12-01T00:00:00.000Z';
  return {
    run: { at, seconds: 60, scenarios: ['accept', 'completion'] },
    machine: { nproc: '2' },
    scenarios: {
      accept: {
        at,
        seconds: 30,
        quick,
        result: {
          seconds: 8,
          connections: 4,
          streams: 32,
          rows: [
            acceptRow('floor', 'nobody', 10_000),
            acceptRow('sidecar', 'nobody', 10_000 * ratios.nobody),
            acceptRow('floor', 'body', 8000),
            acceptRow('sidecar', 'body', 8000 * ratios.body),
          ],
        },
      },
      completion: {
        at,
        seconds: 30,
        quick,
        result: {
          n: 20_000,
          concurrency: 64,
          rounds: 3,
          rows: [
            {
              worker: 'sidecar',
              n: 20_000,
              seconds: 5,
              perSec: 4000 * ratios.completion,
              cpuUsPerRun: 290,
              redisCpuUsPerRun: 90,
              verified: [['succeeded/delivered', 20_000]],
            },
            {
              worker: 'sidecar_limited',
              queueLimit: 64,
              n: 20_000,
              seconds: 5,
              perSec: 4000 * ratios.completion * (ratios.limited ?? 0.98),
              cpuUsPerRun: 296,
              redisCpuUsPerRun: 99,
              verified: [['succeeded/delivered', 20_000]],
            },
            {
              worker: 'bullmq',
              n: 20_000,
              seconds: 5,
              perSec: 4000,
              perSecRounds: [3900, 4000, 4100],
              cpuUsPerRun: 230,
              redisCpuUsPerRun: 70,
              redisCallsPerRun: 24.03,
              verified: [['completed', 60_000]],
            },
          ],
        },
      },
    },
    profiles: [],
  };
}

describe('bench report: the no-regression check', () => {
  it('reads the accept and completion ratios of the committed baseline', () => {
    const baseline = readResults(BASELINE_FILE);
    expect(baseline).not.toBeNull();
    const r = keyRatios(baseline!);
    expect(r.acceptNobody).toBeCloseTo(9691.38 / 21_900, 6);
    expect(r.acceptBody).toBeCloseTo(7716.25 / 17_372.25, 6);
    expect(r.completion).toBeCloseTo(4622 / 6191, 6);
  });

  it('calls a ratio within 5% of its baseline within, more than 5% below regressed, more than 5% above above', () => {
    const baseline = results({ nobody: 0.5, body: 0.4, completion: 0.8 });
    const now = results({ nobody: 0.5 * 0.96, body: 0.4 * 0.94, completion: 0.8 * 1.06 });
    const rows = compareWithBaseline(now, baseline);
    expect(rows.map((c) => [c.ratio, c.verdict])).toEqual([
      ['acceptNobody', 'within'],
      ['acceptBody', 'regressed'],
      ['completion', 'above'],
    ]);
    expect(rows[1]!.change).toBeCloseTo(-0.06, 6);
    expect(describeComparison(rows)).toEqual([
      'acceptNobody: 0.50 -> 0.48 (−4.0 %): within 5%',
      'acceptBody: 0.40 -> 0.38 (−6.0 %): REGRESSED',
      'completion: 0.80 -> 0.85 (+6.0 %): above',
    ]);
  });

  it('compares nothing it does not have on both sides', () => {
    const now = results({ nobody: 0.5, body: 0.4, completion: 0.8 });
    delete now.scenarios.completion;
    expect(compareWithBaseline(now, results({ nobody: 0.5, body: 0.4, completion: 0.8 })).map((c) => c.verdict)).toEqual(['within', 'within', 'missing']);
    expect(compareWithBaseline(now, null).every((c) => c.verdict === 'missing')).toBe(true);
  });

  it('writes the verdict into the report: regressed', () => {
    const text = renderReport(template, results({ nobody: 0.3, body: 0.4, completion: 0.8 }), results({ nobody: 0.5, body: 0.4, completion: 0.8 }));
    expect(text).toMatch(/\| accept, no body: sidecar \/ floor \(runs\/s\) \| 0\.50 \| 0\.30 \| −40\.0 % \| \*\*regressed\*\* \|/);
    expect(text).toMatch(/\| accept, 1 KiB body: sidecar \/ floor \(runs\/s\) \| 0\.40 \| 0\.40 \| \+0\.0 % \| within 5% \|/);
    expect(text).toContain('**Regressed**: at least one ratio is more than 5 % below the baseline.');
    expect(text).not.toContain('**No regression**');
  });

  it('writes the verdict into the report: no regression, quick figures flagged', () => {
    const text = renderReport(template, results({ nobody: 0.49, body: 0.4, completion: 0.9 }, true), results({ nobody: 0.5, body: 0.4, completion: 0.8 }));
    expect(text).toContain('**No regression**: every ratio compared is within 5% of the baseline or above it.');
    expect(text).toMatch(/\| completion: sidecar \/ BullMQ \(runs\/s\) \| 0\.80 \| 0\.90 \| \+12\.5 % \| above/);
    expect(text).toContain('This report has quick-run figures (`BENCH_QUICK=1`)');
  });
});

describe('bench report: the template', () => {
  const text = renderReport(template, results({ nobody: 0.46, body: 0.37, completion: 0.79 }), null);

  it('fills every tag, leaves no run of blank lines, and keeps every section', () => {
    expect(text).not.toMatch(/\{\{|\}\}/);
    expect(text).not.toMatch(/\n\n\n/);
    for (const heading of [
      '## Summary against the targets',
      '## Against the baseline',
      '## Machine',
      '## 1. Accept path',
      '## 2. Pass-through',
      '## 3. Completion path',
      '## 4. Long runs',
      '## 5. Durability cost',
      '## 6. End to end through the real Envoy',
      '## What bounds each path',
      '## How to reproduce',
    ])
      expect(text).toContain(heading);
  });

  it('shows the measured scenarios with their ratios and says how to measure the others', () => {
    expect(text).toContain('| accept ≥ 0.6 × floor (stretch 0.75), no body | 0.46 × (4,600 vs 10,000 runs/s) | **missed** |');
    expect(text).toContain('| sidecar | 1 KiB body | 2,960 | 2,960 | 0.37 | 150 | 30 | 10.00 | 23,680 / 23,680 | 0 |');
    expect(text).toContain('| completion ≥ 1.0 × BullMQ | 0.79 × (3,160 vs 4,000 runs/s) | **missed** |');
    expect(text).toContain('Each worker ran 3 rounds of 20,000 runs');
    expect(text).toContain('| BullMQ + undici | 20,000 | 5.0 | 4,000 | 3,900, 4,000, 4,100 | 230 | 70 | 24.0 | 60000 completed |');
    expect(text).toContain('Ratio sidecar / BullMQ: 0.79 (throughput), 1.26 (worker CPU per run).');
    expect(text).toContain('| sidecar worker, queue limit 64 | 20,000 | 5.0 | 3,097 | 3,097 | 296 | 99 |  | 20000 succeeded/delivered |');
    expect(text).toContain(
      "| completion with a queue limit that never binds ≥ 0.95 × without (the limit's bookkeeping costs at most 5 %) | 0.98 × (3,097 vs 3,160 runs/s) | **met** |",
    );
    expect(text).toContain('default queue `max_concurrency: 64` (=\nDISPATCH_CONCURRENCY) and `fair_share: true`');
    expect(text).toContain('Ratio with the queue limit / without: 0.98 (throughput), 1.02 (worker CPU per run), 1.10 (Redis CPU per run).');
    expect(text).toContain('Not measured yet (`npm run bench -- envoy`).');
    expect(text).toContain('Not measured yet (`npm run bench -- long-runs`).');
    expect(text).toContain('`bench/baseline.json` (missing)');
  });

  it('calls a queue limit costing more than 5 % of completion throughput missed', () => {
    const missed = renderReport(template, results({ nobody: 0.46, body: 0.37, completion: 0.79, limited: 0.94 }), null);
    expect(missed).toMatch(/\| completion with a queue limit that never binds ≥ 0\.95 × without .* \| 0\.94 × .* \| \*\*missed\*\* \|/);
  });

  it('leaves the queue-limit row and its ratio out of results measured without it', () => {
    const r = results({ nobody: 0.46, body: 0.37, completion: 0.79 });
    r.scenarios.completion!.result!.rows = r.scenarios.completion!.result!.rows.filter((c) => c.worker !== 'sidecar_limited');
    const text = renderReport(template, r, null);
    expect(text).not.toContain('queue limit');
    expect(text).toContain('Ratio sidecar / BullMQ: 0.79 (throughput)');
  });

  it('says what bounds each path: the process whose core the rate used up, and its profile when a run left one', () => {
    // 4,600 runs/s x 150 us = 69 % of the sidecar's core: not CPU-bound; 3,160/s x 290 us = 92 % of the worker's.
    expect(text).toContain(
      "What bounds it now, no body: no one process's CPU (the sidecar 69 % of a core, Redis 30 µs per run (14 % of a core)): waits between them, the driver, scheduling;",
    );
    expect(text).toContain("What bounds it now: the worker's CPU: 290 µs per run kept its core 92 % busy, Redis 90 µs per run (28 % of a core).");
    const r = results({ nobody: 0.46, body: 0.37, completion: 0.79 });
    r.profiles = [
      {
        label: 'worker (completion path)',
        top: '…',
        groups: [
          ['(gc)', 0.2],
          ['undici', 0.15],
        ],
        at: '2026-12-01T01:00:00.000Z',
      },
      { label: 'extproc', top: 'written before groups' },
    ];
    const profiled = renderReport(template, r, null);
    expect(profiled).toContain(
      "What bounds it now: the worker's CPU: 290 µs per run kept its core 92 % busy, Redis 90 µs per run (28 % of a core); profile of the worker (worker (completion path), BENCH_PROFILE=1 run of 2026-12-01T01:00:00.000Z): (gc) 20 %, undici 15 %.",
    );
    expect(profiled).toContain('What bounds it now, no body: no one process'); // the extproc profile has no groups: no modules named
  });

  it('sets the long runs against the bare undici client holding as many requests, and the 150 MB target', () => {
    const r = results({ nobody: 0.46, body: 0.37, completion: 0.79 });
    const MiB = 2 ** 20;
    r.scenarios['long-runs'] = {
      at: r.run.at,
      seconds: 40,
      quick: false,
      result: {
        n: 10_000,
        inFlight: 10_000,
        secondsToFill: 7,
        rssBefore: 96 * MiB,
        rssAt: 240 * MiB,
        redisBefore: 2 * MiB,
        redisAt: 28 * MiB,
        heap: { before: 17 * MiB, at: 117 * MiB },
        floor: { inFlight: 10_000, before: { rss: 60 * MiB, heapUsed: 7 * MiB }, at: { rss: 190 * MiB, heapUsed: 75 * MiB } },
      },
    };
    const text = renderReport(template, r, null);
    expect(text).toContain(
      '| 10,000 in flight ≤ 150 MB RSS | 252 MB RSS; a bare undici client holding as many requests: 199 MB, the worker 1.26 × that | **missed** |',
    );
    expect(text).toContain('| worker heap after a full GC | 17.0 MiB | 117.0 MiB | 10.2 KiB |');
    expect(text).toContain('| bare undici client RSS | 60.0 MiB | 190.0 MiB (10,000 held) | 13.3 KiB |');
    expect(text).toContain('36.0 MiB more when idle');
    expect(text).toContain('and 3.3 KiB more heap per run in flight');
    // Results written before the floor was measured: no floor rows, the target row without the comparison.
    delete r.scenarios['long-runs'].result!.floor;
    delete r.scenarios['long-runs'].result!.heap;
    const before = renderReport(template, r, null);
    expect(before).toContain('| 10,000 in flight ≤ 150 MB RSS | 252 MB RSS | **missed** |');
    expect(before).not.toContain('bare undici');
  });

  it('says why a scenario has no figures', () => {
    const r = results({ nobody: 0.46, body: 0.37, completion: 0.79 });
    r.scenarios.envoy = { at: r.run.at, seconds: 1, quick: false, skipped: 'no Envoy: none found' };
    expect(renderReport(template, r, null)).toContain('## 6. End to end through the real Envoy\n\nSkipped: no Envoy: none found.\n');
  });
});
