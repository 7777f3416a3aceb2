/**
 * The report generator: fills the Mustache template bench/report.md with the figures of
 * bench/results.json and writes docs/BENCHMARKS.md. It also compares the accept and completion
 * ratios with bench/baseline.json and says in the report (and on stdout) whether any fell more
 * than 5 % (a line of the report, never a test: wall-clock figures on a shared machine).
 *
 * The view built here holds numbers, formatted, and flags; every sentence is in the template.
 * Settings (env): BENCH_RESULTS, BENCH_BASELINE, BENCH_OUT (instead of the files above).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Mustache from 'mustache';
import { ROOT, fmt } from './lib';
import { BODY_BYTES, type Shape } from './messages';
import { BASELINE_FILE, RESULTS_FILE, readResults, type Measured, type Results } from './results';
import type {
  AcceptResults,
  CompletionResults,
  DurabilityResults,
  EnvoyResults,
  LatencyResults,
  LongRunsResults,
  PassThroughResults,
  ScenarioName,
  TracingResults,
} from './scenarios';
import type { EnvoyRow, Request, Variant } from './scenarios/envoy';

export const TEMPLATE_FILE = join(ROOT, 'bench', 'report.md');
export const REPORT_FILE = join(ROOT, 'docs', 'BENCHMARKS.md');
/** A ratio more than this far below its baseline is a regression. */
export const TOLERANCE = 0.05;

const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : 'n/a');
const sign = (v: number, digits = 2) => `${v >= 0 ? '+' : '−'}${fmt(Math.abs(v), digits)}`;
const orDash = (v: number | null | undefined) => (v === null || v === undefined ? '–' : fmt(v));

// ---------------------------------------------------------------- no-regression check

/** The ratios the check compares: sidecar / floor accept throughput per shape, sidecar / BullMQ completions. */
export interface KeyRatios {
  acceptNobody?: number;
  acceptBody?: number;
  completion?: number;
}

export function keyRatios(r: Results): KeyRatios {
  const out: KeyRatios = {};
  const accept = r.scenarios.accept?.result;
  const acc = (server: string, shape: Shape) => accept?.rows.find((a) => a.server === server && a.shape === shape)?.reqPerSec;
  const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
  out.acceptNobody = ratio(acc('sidecar', 'nobody'), acc('floor', 'nobody'));
  out.acceptBody = ratio(acc('sidecar', 'body'), acc('floor', 'body'));
  const completion = r.scenarios.completion?.result;
  out.completion = ratio(completion?.rows.find((c) => c.worker === 'sidecar')?.perSec, completion?.rows.find((c) => c.worker === 'bullmq')?.perSec);
  return out;
}

export type Verdict = 'within' | 'above' | 'regressed' | 'missing';

export interface RatioComparison {
  ratio: keyof KeyRatios;
  baseline?: number;
  now?: number;
  /** now / baseline − 1. */
  change?: number;
  verdict: Verdict;
}

export function compareWithBaseline(results: Results, baseline: Results | null): RatioComparison[] {
  const now = keyRatios(results);
  const before = baseline ? keyRatios(baseline) : {};
  return (['acceptNobody', 'acceptBody', 'completion'] as const).map((ratio) => {
    const b = before[ratio];
    const n = now[ratio];
    if (b === undefined || n === undefined) return { ratio, baseline: b, now: n, verdict: 'missing' };
    const change = n / b - 1;
    const verdict: Verdict = change < -TOLERANCE ? 'regressed' : change > TOLERANCE ? 'above' : 'within';
    return { ratio, baseline: b, now: n, change, verdict };
  });
}

function regressionView(results: Results, baseline: Results | null) {
  const rows = compareWithBaseline(results, baseline);
  return {
    rows: rows.map((c) => ({
      acceptNobody: c.ratio === 'acceptNobody',
      acceptBody: c.ratio === 'acceptBody',
      completion: c.ratio === 'completion',
      baseline: c.baseline === undefined ? '–' : c.baseline.toFixed(2),
      now: c.now === undefined ? '–' : c.now.toFixed(2),
      change: c.change === undefined ? '–' : `${sign(c.change * 100, 1)} %`,
      within: c.verdict === 'within',
      above: c.verdict === 'above',
      regressed: c.verdict === 'regressed',
      missing: c.verdict === 'missing',
    })),
    regressed: rows.some((c) => c.verdict === 'regressed'),
    compared: rows.some((c) => c.verdict !== 'missing'),
    quick: results.scenarios.accept?.quick === true || results.scenarios.completion?.quick === true,
  };
}

// ---------------------------------------------------------------- sections

type Profiles = Results['profiles'];

/** A process is taken as the bound when it was busy this share of a core or more. */
const BUSY = 0.85;

/**
 * "What bounds it now", generated: which process's CPU the measured rate used up (rate × CPU per
 * run: the share of a core each used), and, when a BENCH_PROFILE=1 run left a profile of the
 * process under test, its largest self-time modules.
 */
function boundLine(row: { who: string; perSec: number; cpuUs: number; redisUs: number | null }, profiles: Profiles, label: string): string {
  const core = (row.perSec * row.cpuUs) / 1e6;
  const redis = row.redisUs === null ? null : (row.perSec * row.redisUs) / 1e6;
  const pct = (x: number) => `${Math.round(100 * x)} %`;
  const redisPart = redis === null ? '' : `, Redis ${fmt(row.redisUs!)} µs per run (${pct(redis)} of a core)`;
  let bound: string;
  if (core >= BUSY) bound = `the ${row.who}'s CPU: ${fmt(row.cpuUs)} µs per run kept its core ${pct(core)} busy${redisPart}`;
  else if (redis !== null && redis >= BUSY) bound = `Redis's CPU: ${fmt(row.redisUs!)} µs per run kept it ${pct(redis)} busy (the ${row.who} ${pct(core)})`;
  else bound = `no one process's CPU (the ${row.who} ${pct(core)} of a core${redisPart}): waits between them, the driver, scheduling`;
  // The shared extproc sidecar's label names the scenarios that used it: "extproc (accept, latency)".
  const profile = profiles.find((p) => (p.label === label || p.label.startsWith(`${label} (`)) && p.groups);
  const modules = profile
    ? `; profile of the ${row.who} (${profile.label}, BENCH_PROFILE=1 run of ${profile.at}): ${profile.groups!.map(([g, share]) => `${g} ${pct(share)}`).join(', ')}`
    : '';
  return bound + modules;
}

function acceptView(r: AcceptResults, profiles: Profiles = []) {
  const find = (server: string, shape: Shape) => r.rows.find((a) => a.server === server && a.shape === shape);
  const target = (shape: Shape) => {
    const s = find('sidecar', shape);
    const f = find('floor', shape);
    if (!s || !f) return null;
    const ratio = s.reqPerSec / f.reqPerSec;
    return {
      ratio: ratio.toFixed(2),
      sidecar: fmt(s.reqPerSec),
      floor: fmt(f.reqPerSec),
      met: ratio >= 0.6,
      stretch: ratio >= 0.75,
      bound: boundLine({ who: 'sidecar', perSec: s.reqPerSec, cpuUs: s.cpuUsPerRun, redisUs: s.redisCpuUsPerRun }, profiles, 'extproc'),
    };
  };
  return {
    seconds: r.seconds,
    connections: r.connections,
    streams: r.streams,
    rounds: r.rounds ?? 1,
    pinned: r.pinned === true,
    nobody: target('nobody'),
    body: target('body'),
    rows: r.rows.map((a) => {
      const f = find('floor', a.shape);
      return {
        server: a.server,
        body: a.shape === 'body',
        runsPerSec: fmt(a.reqPerSec),
        perRound: (a.reqPerSecRounds ?? [a.reqPerSec]).map((v) => fmt(v)).join(', '),
        ratio: f ? (a.reqPerSec / f.reqPerSec).toFixed(2) : '',
        cpu: fmt(a.cpuUsPerRun),
        redisCpu: orDash(a.redisCpuUsPerRun),
        meanMs: a.meanMs.toFixed(2),
        stored: orDash(a.stored),
        succeeded: fmt(a.succeeded),
        failedErrored: a.failed + a.errored,
      };
    }),
  };
}

const perConn = (n: number) => (n > 0 ? fmt(n) : '–');

function latencyView(r: LatencyResults) {
  return {
    rate: fmt(r.rate),
    seconds: r.seconds,
    perConn: perConn(r.maxStreamsPerConn),
    rows: r.rows.map((d) => ({
      server: d.server,
      body: d.shape === 'body',
      halfClose: d.halfClose,
      oneConnection: d.oneConnection,
      p50: d.p50.toFixed(2),
      p99: d.p99.toFixed(2),
      p999: d.p999.toFixed(2),
      max: d.max.toFixed(2),
      ok: fmt(d.ok),
      sent: fmt(d.sent),
      connections: d.connections ?? '',
      errors: d.errors,
      firstError: d.firstError,
    })),
    targets: r.rows
      .filter((d) => d.server === 'sidecar' && !d.oneConnection)
      .map((d) => ({ rate: fmt(r.rate), body: d.shape === 'body', halfClose: d.halfClose, p99: d.p99.toFixed(2), met: d.p99 <= 5 && d.errors === 0 })),
  };
}

function passThroughView(r: PassThroughResults) {
  const ps = r.rows.find((d) => d.server === 'sidecar');
  const pf = r.rows.find((d) => d.server === 'floor');
  return {
    rate: fmt(r.rate),
    seconds: r.seconds,
    perConn: perConn(r.maxStreamsPerConn),
    rows: r.rows.map((d) => ({
      server: d.server,
      p50: d.p50.toFixed(3),
      p99: d.p99.toFixed(3),
      p999: d.p999.toFixed(3),
      ok: fmt(d.ok),
      sent: fmt(d.sent),
      errors: d.errors,
      firstError: d.firstError,
    })),
    added: ps && pf ? { p50: (ps.p50 - pf.p50).toFixed(3), p99: (ps.p99 - pf.p99).toFixed(3) } : null,
  };
}

/** The queue limit's bookkeeping may cost at most this share of completion throughput (README "Queues"). */
const QUEUE_LIMIT_MAX_COST = 0.05;

function completionView(r: CompletionResults, profiles: Profiles = []) {
  const cs = r.rows.find((c) => c.worker === 'sidecar');
  const cl = r.rows.find((c) => c.worker === 'sidecar_limited');
  const cb = r.rows.find((c) => c.worker === 'bullmq');
  return {
    n: fmt(r.n),
    concurrency: r.concurrency,
    rounds: r.rounds ?? 1,
    pinned: r.pinned === true,
    rows: r.rows.map((c) => ({
      sidecar: c.worker === 'sidecar',
      limited: c.worker === 'sidecar_limited' ? { limit: c.queueLimit } : null,
      bullmq: c.worker === 'bullmq',
      n: fmt(c.n),
      seconds: c.seconds.toFixed(1),
      perSec: fmt(c.perSec),
      cpu: fmt(c.cpuUsPerRun),
      redisCpu: fmt(c.redisCpuUsPerRun),
      redisCalls: c.redisCallsPerRun === undefined ? '' : c.redisCallsPerRun.toFixed(1),
      perRound: (c.perSecRounds ?? [c.perSec]).map((v) => fmt(v)).join(', '),
      verified: c.verified.map(([state, count]) => `${count} ${state}`).join(', '),
    })),
    ratio:
      cs && cb
        ? {
            throughput: (cs.perSec / cb.perSec).toFixed(2),
            cpu: (cs.cpuUsPerRun / cb.cpuUsPerRun).toFixed(2),
            sidecar: fmt(cs.perSec),
            bullmq: fmt(cb.perSec),
            met: cs.perSec >= cb.perSec,
            bound: boundLine({ who: 'worker', perSec: cs.perSec, cpuUs: cs.cpuUsPerRun, redisUs: cs.redisCpuUsPerRun }, profiles, 'worker (completion path)'),
          }
        : null,
    limit:
      cs && cl
        ? {
            limit: cl.queueLimit,
            throughput: (cl.perSec / cs.perSec).toFixed(2),
            cpu: (cl.cpuUsPerRun / cs.cpuUsPerRun).toFixed(2),
            redisCpu: (cl.redisCpuUsPerRun / cs.redisCpuUsPerRun).toFixed(2),
            limited: fmt(cl.perSec),
            unlimited: fmt(cs.perSec),
            maxCost: `${QUEUE_LIMIT_MAX_COST * 100} %`,
            met: cl.perSec >= cs.perSec * (1 - QUEUE_LIMIT_MAX_COST),
          }
        : null,
  };
}

function longRunsView(l: LongRunsResults) {
  return {
    n: fmt(l.n),
    inFlight: fmt(l.inFlight),
    secondsToFill: l.secondsToFill.toFixed(1),
    rssBefore: fmt(l.rssBefore / 2 ** 20, 1),
    rssAt: fmt(l.rssAt / 2 ** 20, 1),
    rssPerRun: fmt((l.rssAt - l.rssBefore) / l.n / 1024, 1),
    redisBefore: fmt(l.redisBefore / 2 ** 20, 1),
    redisAt: fmt(l.redisAt / 2 ** 20, 1),
    redisPerRun: fmt((l.redisAt - l.redisBefore) / l.n),
    rssMB: fmt(l.rssAt / 1e6),
    rssTargetMet: l.inFlight >= l.n && l.rssAt <= 150e6,
    heap: l.heap ? { before: fmt(l.heap.before / 2 ** 20, 1), at: fmt(l.heap.at / 2 ** 20, 1), perRun: fmt(heapKiBPerRun(l.heap, l.n), 1) } : null,
    floor: l.floor ? floorView(l, l.floor) : null,
    bodies: l.bodies
      ? {
          n: l.bodies.n,
          inFlight: l.bodies.inFlight,
          bodyMiB: fmt(l.bodies.bodyBytes / 2 ** 20, 1),
          totalMiB: fmt((l.bodies.n * l.bodies.bodyBytes) / 2 ** 20),
          rssBefore: fmt(l.bodies.rssBefore / 2 ** 20, 1),
          rssAt: fmt(l.bodies.rssAt / 2 ** 20, 1),
          above: fmt((l.bodies.rssAt - l.bodies.rssBefore) / 2 ** 20, 1),
          ratio: ((l.bodies.rssAt - l.bodies.rssBefore) / (l.bodies.n * l.bodies.bodyBytes)).toFixed(2),
          met: l.bodies.inFlight >= l.bodies.n && l.bodies.rssAt - l.bodies.rssBefore <= 1.5 * l.bodies.n * l.bodies.bodyBytes,
        }
      : null,
    met: l.rssAt < 500e6 && l.inFlight >= l.n,
  };
}

/** Heap grown per run in flight, KiB. */
const heapKiBPerRun = (heap: { before: number; at: number }, n: number) => (heap.at - heap.before) / n / 1024;

/** The bare undici client holding the same requests, and the worker against it. */
function floorView(l: LongRunsResults, f: NonNullable<LongRunsResults['floor']>) {
  const floorHeap = { before: f.before.heapUsed, at: f.at.heapUsed };
  return {
    inFlight: fmt(f.inFlight),
    rssBefore: fmt(f.before.rss / 2 ** 20, 1),
    rssAt: fmt(f.at.rss / 2 ** 20, 1),
    rssPerRun: fmt((f.at.rss - f.before.rss) / f.inFlight / 1024, 1),
    heapBefore: fmt(f.before.heapUsed / 2 ** 20, 1),
    heapAt: fmt(f.at.heapUsed / 2 ** 20, 1),
    heapPerRun: fmt(heapKiBPerRun(floorHeap, f.inFlight), 1),
    rssMB: fmt(f.at.rss / 1e6),
    /** The worker's RSS with its runs in flight over the bare client's with as many requests. */
    vsFloor: (l.rssAt / f.at.rss).toFixed(2),
    idleAbove: fmt((l.rssBefore - f.before.rss) / 2 ** 20, 1),
    perRunAbove: l.heap ? fmt(heapKiBPerRun(l.heap, l.n) - heapKiBPerRun(floorHeap, f.inFlight), 1) : null,
  };
}

function durabilityView(r: DurabilityResults) {
  // Rows of results written before the replica rows name their fsync policy only.
  const label = (d: DurabilityResults['rows'][number]) => d.setting ?? `appendfsync ${d.fsync}`;
  const da = r.rows.find((d) => d.fsync === 'always');
  const de = r.rows.find((d) => d.fsync === 'everysec');
  const ack0 = r.rows.find((d) => d.minReplicasAck === 0);
  const ack1 = r.rows.find((d) => d.minReplicasAck === 1);
  return {
    seconds: r.seconds,
    rows: r.rows.map((d) => ({
      setting: label(d),
      runsPerSec: fmt(d.runsPerSec),
      stored: fmt(d.stored),
      cpu: fmt(d.cpuUsPerRun),
      meanMs: d.meanMs.toFixed(2),
    })),
    alwaysVsEverysec: da && de ? (da.runsPerSec / de.runsPerSec).toFixed(2) : null,
    ackVsNone: ack0 && ack1 ? (ack1.runsPerSec / ack0.runsPerSec).toFixed(2) : null,
  };
}

function tracingView(r: TracingResults) {
  const off = r.rows.find((t) => t.tracing === 'off');
  const on = r.rows.find((t) => t.tracing === 'on');
  if (!off || !on) return null;
  return {
    seconds: r.seconds,
    rate: fmt(r.rate),
    driverSeconds: r.driverSeconds,
    ratio: (on.accept.reqPerSec / off.accept.reqPerSec).toFixed(2),
    extraCpu: sign(on.accept.cpuUsPerRun - off.accept.cpuUsPerRun, 0),
    rows: [off, on].map((t) => ({
      tracing: t.tracing,
      runsPerSec: fmt(t.accept.reqPerSec),
      ratio: (t.accept.reqPerSec / off.accept.reqPerSec).toFixed(2),
      cpu: fmt(t.accept.cpuUsPerRun),
      fixedCpu: fmt(t.fixedRate.cpuUsPerRun),
      p50: ms(t.fixedRate.p50),
      p99: ms(t.fixedRate.p99),
      stored: fmt((t.accept.stored ?? 0) + t.fixedRate.stored),
      spans: orDash(t.spans),
    })),
  };
}

const cpuCell = (row: EnvoyRow, key: string) => (row.cpu[key] === undefined ? '–' : fmt(row.cpu[key]));
const totalCpu = (row: EnvoyRow) => Object.values(row.cpu).reduce((a, b) => a + b, 0);
const serverCpu = (row: EnvoyRow) => orDash(row.cpu.sidecar ?? row.cpu['ext_proc server']);
const requestFlags = (request: Request) => ({ get: request === 'async-get', post: request === 'async-post', pass: request === 'pass' });
const ASYNC_REQUESTS: Request[] = ['async-get', 'async-post'];

function envoyView(r: EnvoyResults) {
  type Mode = EnvoyRow['mode'];
  const all = (variant: Variant, request: Request, mode: Mode) => r.rows.filter((x) => x.variant === variant && x.request === request && x.mode === mode);
  /** The best round: highest throughput, or lowest p99 at the fixed rate (a disturbance only ever makes a round worse). */
  const find = (variant: Variant, request: Request, mode: Mode): EnvoyRow | undefined =>
    all(variant, request, mode).sort((a, b) => (mode === 'throughput' ? b.rps - a.rps : a.p99 - b.p99))[0];
  const spread = (variant: Variant, request: Request, mode: Mode) =>
    all(variant, request, mode)
      .map((x) => (mode === 'throughput' ? fmt(x.rps) : ms(x.p99)))
      .join(' / ');
  const variantsOf = (request: Request) => [...new Set(r.rows.filter((x) => x.request === request).map((x) => x.variant))];
  const other = (rows: Array<EnvoyRow | undefined>) => {
    const bad = rows.reduce((a, x) => a + (x?.bad ?? 0), 0);
    const which = rows
      .map((x) => x?.firstBad)
      .filter(Boolean)
      .join(', ');
    return bad ? `${bad}: ${which}` : '0';
  };
  const rowsOf = <T>(request: Request, mode: Mode, build: (variant: Variant, row: EnvoyRow) => T): T[] =>
    variantsOf(request).flatMap((variant) => {
      const row = find(variant, request, mode);
      return row ? [build(variant, row)] : [];
    });

  const throughput = ASYNC_REQUESTS.flatMap((request) => {
    const d = find('direct_response', request, 'throughput');
    const b = find('bare ext_proc', request, 'throughput');
    return rowsOf(request, 'throughput', (variant, row) => ({
      variant,
      ...requestFlags(request),
      rps: fmt(row.rps),
      vsDirect: d ? (row.rps / d.rps).toFixed(2) : '',
      vsBare: b && variant !== 'direct_response' ? (row.rps / b.rps).toFixed(2) : '',
      rounds: spread(variant, request, 'throughput'),
      p50: ms(row.p50),
      p99: ms(row.p99),
      cpuEnvoy: cpuCell(row, 'envoy'),
      cpuServer: serverCpu(row),
      cpuRedis: cpuCell(row, 'redis'),
      cpuH2load: cpuCell(row, 'h2load'),
      cpuAll: fmt(totalCpu(row)),
      ok: fmt(row.ok),
      streams: fmt(row.envoy.extprocStreams),
      stored: orDash(row.stored),
      serverConnections: variant === 'direct_response' ? '–' : fmt(row.envoy.sidecarConnections),
      other: other(all(variant, request, 'throughput')),
    }));
  });

  const atRate = ASYNC_REQUESTS.flatMap((request) => {
    const d = find('direct_response', request, 'rate');
    return rowsOf(request, 'rate', (variant, row) => {
      const diff = (a: number, b?: number) => (b === undefined || variant === 'direct_response' ? '' : `${a - b >= 0 ? '+' : ''}${(a - b).toFixed(2)}`);
      return {
        variant,
        ...requestFlags(request),
        rps: fmt(row.rps),
        p50: ms(row.p50),
        p99: ms(row.p99),
        p999: ms(row.p999),
        max: ms(row.max),
        rounds: spread(variant, request, 'rate'),
        p50MinusDirect: diff(row.p50, d?.p50),
        p99MinusDirect: diff(row.p99, d?.p99),
        cpuEnvoy: cpuCell(row, 'envoy'),
        cpuServer: serverCpu(row),
        cpuAll: fmt(totalCpu(row)),
        ok: fmt(row.ok),
        other: other(all(variant, request, 'rate')),
      };
    });
  });

  const off = find('filter disabled', 'pass', 'throughput');
  const offRate = find('filter disabled', 'pass', 'rate');
  const pass = rowsOf('pass', 'throughput', (variant, t) => {
    const q = find(variant, 'pass', 'rate');
    return {
      variant,
      rps: fmt(t.rps),
      vsDisabled: off ? (t.rps / off.rps).toFixed(2) : '',
      rounds: spread(variant, 'pass', 'throughput'),
      p50: ms(t.p50),
      p99: ms(t.p99),
      rateP50: ms(q?.p50 ?? NaN),
      rateP99: ms(q?.p99 ?? NaN),
      rateP999: ms(q?.p999 ?? NaN),
      rateRounds: spread(variant, 'pass', 'rate'),
      cpuEnvoy: cpuCell(t, 'envoy'),
      cpuServer: serverCpu(t),
      cpuApp: cpuCell(t, 'app'),
      cpuH2load: cpuCell(t, 'h2load'),
      cpuAll: fmt(totalCpu(t)),
      streams: fmt(t.envoy.extprocStreams),
      other: other([...all(variant, 'pass', 'throughput'), ...all(variant, 'pass', 'rate')]),
    };
  });
  const filterOn = (['filter on, bare ext_proc', 'filter on, sidecar'] as Variant[]).flatMap((variant) => {
    const on = find(variant, 'pass', 'throughput');
    const onRate = find(variant, 'pass', 'rate');
    if (!off || !on || !offRate || !onRate) return [];
    return [
      {
        variant,
        ratio: (on.rps / off.rps).toFixed(2),
        rate: fmt(r.rate),
        p50: sign(onRate.p50 - offRate.p50),
        p99: sign(onRate.p99 - offRate.p99),
        cpuAll: sign(totalCpu(on) - totalCpu(off), 0),
        cpuEnvoy: sign((on.cpu.envoy ?? 0) - (off.cpu.envoy ?? 0), 0),
      },
    ];
  });

  // Lines without their timestamp and thread id, so the same message from several configs is listed once.
  const messages = new Map<string, string[]>();
  for (const e of r.envoyLog ?? []) {
    for (const line of e.lines) {
      const m = line.replace(/^\[[^\]]*\]\[\d+\]/, '');
      messages.set(m, [...(messages.get(m) ?? []), e.config]);
    }
  }
  const logMessages = [...messages].map(([message, configs]) => ({
    message,
    everyConfig: configs.length === (r.envoyLog ?? []).length,
    configs: configs.join(', '),
  }));

  const summaryAccepts = ASYNC_REQUESTS.flatMap((request) => {
    const s = find('sidecar', request, 'throughput');
    const b = find('bare ext_proc', request, 'throughput');
    const d = find('direct_response', request, 'throughput');
    const q = find('sidecar', request, 'rate');
    const qb = find('bare ext_proc', request, 'rate');
    if (!s || !b || !d) return [];
    return [
      {
        ...requestFlags(request),
        vsBare: (s.rps / b.rps).toFixed(2),
        vsDirect: (s.rps / d.rps).toFixed(3),
        sidecar: fmt(s.rps),
        bare: fmt(b.rps),
        direct: fmt(d.rps),
        rate: fmt(r.rate),
        p50: q ? ms(q.p50) : '?',
        p99: q ? ms(q.p99) : '?',
        bareP50: qb ? ms(qb.p50) : '?',
        bareP99: qb ? ms(qb.p99) : '?',
      },
    ];
  });
  const onS = find('filter on, sidecar', 'pass', 'throughput');
  const onSRate = find('filter on, sidecar', 'pass', 'rate');
  const summaryPass =
    off && onS && offRate && onSRate
      ? {
          ratio: (onS.rps / off.rps).toFixed(2),
          on: fmt(onS.rps),
          off: fmt(off.rps),
          rate: fmt(r.rate),
          p50: sign(onSRate.p50 - offRate.p50),
          p99: sign(onSRate.p99 - offRate.p99),
        }
      : null;

  return {
    envoyVersion: r.envoyVersion,
    token: r.token === true,
    rounds: r.rounds,
    seconds: r.seconds,
    connections: r.connections,
    rate: fmt(r.rate),
    rateConnections: r.rateConnections,
    ratePerConnection: fmt(r.rate / r.rateConnections),
    ratePeriodMs: Math.max(1, Math.round(1000 / r.rate)),
    throughput,
    atRate,
    pass,
    filterOn,
    logMessages,
    probes: r.probes.map((p) => ({ variant: p.variant, ...requestFlags(p.request), status: p.status, contentType: p.contentType, bodyLength: p.bodyBytes })),
    summary: { accepts: summaryAccepts, pass: summaryPass },
  };
}

/** A section's state: its view, or why it has none. Every key is present, so the template never falls back to an outer value. */
function section<R, V>(m: Measured<R> | undefined, view: (r: R) => V): { result: V | null; skipped: string | null; missing: boolean } {
  if (!m) return { result: null, skipped: null, missing: true };
  if (m.result === undefined) return { result: null, skipped: m.skipped ?? 'no result', missing: false };
  return { result: view(m.result), skipped: null, missing: false };
}

// ---------------------------------------------------------------- the report

export function buildView(results: Results, baseline: Results | null, now: Date) {
  const s = results.scenarios;
  const names = Object.keys(s) as ScenarioName[];
  const lastRun = new Set(results.run.scenarios);
  return {
    generatedAt: now.toISOString(),
    run: { at: results.run.at, seconds: Math.round(results.run.seconds), scenarios: results.run.scenarios.join(', ') },
    earlier: names
      .filter((n) => !lastRun.has(n))
      .map((n) => `${n} (${s[n]?.at})`)
      .join(', '),
    quick: names.filter((n) => s[n]?.quick).join(', '),
    baseline: baseline ? { at: baseline.run.at, source: baseline.source ?? null } : null,
    regression: regressionView(results, baseline),
    machine: Object.entries(results.machine).map(([key, value]) => ({ key, value })),
    bodyBytes: fmt(BODY_BYTES),
    accept: section(s.accept, (r) => acceptView(r, results.profiles)),
    latency: section(s.latency, latencyView),
    passThrough: section(s['pass-through'], passThroughView),
    completion: section(s.completion, (r) => completionView(r, results.profiles)),
    longRuns: section(s['long-runs'], longRunsView),
    durability: section(s.durability, durabilityView),
    tracing: section(s.tracing, tracingView),
    envoy: section(s.envoy, envoyView),
    profiles: results.profiles,
  };
}

export function renderReport(template: string, results: Results, baseline: Results | null, now = new Date()): string {
  const text = Mustache.render(template, buildView(results, baseline, now), {}, { escape: String });
  // Sections left out leave runs of blank lines behind.
  return `${text.replace(/\n{3,}/g, '\n\n').trim()}\n`;
}

/** One line per compared ratio, for the terminal. */
export function describeComparison(rows: RatioComparison[]): string[] {
  return rows.map((c) =>
    c.verdict === 'missing'
      ? `${c.ratio}: not compared (not in both the results and the baseline)`
      : `${c.ratio}: ${c.baseline!.toFixed(2)} -> ${c.now!.toFixed(2)} (${sign(c.change! * 100, 1)} %): ${c.verdict === 'regressed' ? 'REGRESSED' : c.verdict === 'above' ? 'above' : 'within 5%'}`,
  );
}

function main(): void {
  const resultsFile = process.env.BENCH_RESULTS ?? RESULTS_FILE;
  const results = readResults(resultsFile);
  if (!results) throw new Error(`no results in ${resultsFile}: run \`npm run bench\` first`);
  const baseline = readResults(process.env.BENCH_BASELINE ?? BASELINE_FILE);
  const out = process.env.BENCH_OUT ?? REPORT_FILE;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, renderReport(readFileSync(TEMPLATE_FILE, 'utf8'), results, baseline));
  for (const line of describeComparison(compareWithBaseline(results, baseline))) process.stdout.write(`bench report: ${line}\n`);
  process.stdout.write(`bench report: wrote ${out}\n`);
}

if (require.main === module) main();
