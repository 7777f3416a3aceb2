/**
 * The runner: `npm run bench [-- <scenario>...]` runs the named scenarios (bench/scenarios/; all,
 * in order, when none is named) and writes what they measured into bench/results.json, keeping the
 * other scenarios' entries; bench/report.ts then writes docs/BENCHMARKS.md from it. Every loop is
 * bounded in count and time; all traffic stays on 127.0.0.1; Redis is a private redis-server on a
 * free port. Settings (env): BENCH_QUICK=1 (shorter runs), BENCH_RUNS (completions),
 * BENCH_INFLIGHT (long runs), BENCH_PROFILE=1 (--cpu-prof the sidecars), BENCH_RESULTS=file
 * (instead of bench/results.json). `--list` prints the scenario names.
 */
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { BenchEnv } from './env';
import { CLK_TCK, ROOT } from './lib';
import { profileGroups, summarizeProfile } from './profile';
import { RESULTS_FILE, readResults, writeResults, type Measured, type Results } from './results';
import { SCENARIOS, SCENARIO_NAMES, type ScenarioName, type ScenarioResults } from './scenarios';

/** Past this, optional scenarios (long runs, durability, tracing) are skipped, so that a full run stays under about 17 minutes (the accept and completion rounds take about 6 of them). */
const BUDGET_MS = 16 * 60_000;

function machine(): Record<string, string> {
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?';
  const sh = (cmd: string) => {
    try {
      return execSync(cmd, { stdio: ['ignore', 'pipe', 'ignore'] })
        .toString()
        .trim();
    } catch {
      return '?';
    }
  };
  return {
    nproc: sh('nproc'),
    cpu: cpuModel,
    ram: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    redis: sh('redis-server --version').replace(/^Redis server /, ''),
    h2load: sh('h2load --version'),
    kernel: sh('uname -r'),
    clk_tck: String(CLK_TCK),
    'ulimit -n': sh('sh -c "ulimit -n"'),
  };
}

function parseArgs(args: string[]): ScenarioName[] | 'list' {
  if (args.includes('--list')) return 'list';
  const unknown = args.filter((a) => !(SCENARIO_NAMES as string[]).includes(a));
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')}; the scenarios are: ${SCENARIO_NAMES.join(', ')}`);
  return args.length === 0 ? SCENARIO_NAMES : SCENARIO_NAMES.filter((n) => args.includes(n));
}

/** Runs one scenario into `results`; false when it failed (recorded as skipped with the error). */
async function runScenario<K extends ScenarioName>(env: BenchEnv, results: Results, name: K): Promise<boolean> {
  const scenario = SCENARIOS[name];
  const started = Date.now();
  const entries: { [P in K]?: Measured<ScenarioResults[P]> } = results.scenarios;
  const measured = (m: { result?: ScenarioResults[K]; skipped?: string }) => {
    entries[name] = { at: new Date().toISOString(), seconds: (Date.now() - started) / 1000, quick: env.quick, ...m };
  };
  if (scenario.optional && env.overBudget()) {
    env.log(`${name}: skipped (time budget)`);
    measured({ skipped: 'time budget' });
    return true;
  }
  env.log(name);
  try {
    await env.enter(name, scenario.uses);
    measured({ result: await scenario.run(env) });
    return true;
  } catch (err) {
    env.log(`${name} failed: ${(err as Error).stack ?? String(err)}`);
    measured({ skipped: (err as Error).message.split('\n')[0] });
    return false;
  }
}

async function main(): Promise<number> {
  const names = parseArgs(process.argv.slice(2));
  if (names === 'list') {
    process.stdout.write(`${SCENARIO_NAMES.join('\n')}\n`);
    return 0;
  }
  const file = process.env.BENCH_RESULTS ?? RESULTS_FILE;
  const tmp = join(ROOT, '.tmp', 'bench');
  mkdirSync(tmp, { recursive: true });
  const started = Date.now();
  const results: Results = readResults(file) ?? { run: { at: '', seconds: 0, scenarios: [] }, machine: {}, scenarios: {}, profiles: [] };
  delete results.source; // what the runner writes is measured, not transcribed
  results.machine = machine();
  const env = new BenchEnv({ quick: process.env.BENCH_QUICK === '1', profile: process.env.BENCH_PROFILE === '1', tmp, budgetMs: BUDGET_MS });
  let failed = 0;
  try {
    for (const name of names) {
      if (!(await runScenario(env, results, name))) failed++;
      // After each scenario, so that an interrupted run keeps what it measured.
      writeResults(file, results);
    }
  } finally {
    await env.close();
  }
  if (env.settings.profile) {
    results.profiles = [];
    for (const p of env.profiles) {
      const cpuprofile = existsSync(p.dir) ? readdirSync(p.dir).find((f) => f.endsWith('.cpuprofile')) : undefined;
      if (!cpuprofile) continue;
      const file = join(p.dir, cpuprofile);
      results.profiles.push({ label: p.label, top: summarizeProfile(file, 25), groups: profileGroups(file), at: new Date().toISOString() });
    }
  }
  results.run = { at: new Date().toISOString(), seconds: (Date.now() - started) / 1000, scenarios: names };
  writeResults(file, results);
  env.log(`wrote ${file} (${Math.round(results.run.seconds)} s${failed ? `, ${failed} scenario(s) failed` : ''})`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
