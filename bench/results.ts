/**
 * bench/results.json: what the runner measured, one entry per scenario (a scenario run alone
 * replaces its own entry and keeps the others), read by the report generator. Committed with
 * docs/BENCHMARKS.md, so the report can be re-generated from it after editing bench/report.md.
 * bench/baseline.json has the same shape: the run the no-regression check compares against.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './lib';
import type { ScenarioName, ScenarioResults } from './scenarios';

export interface Measured<R> {
  /** When the scenario finished (ISO 8601). */
  at: string;
  seconds: number;
  /** Measured under BENCH_QUICK=1 (shorter measurements). */
  quick: boolean;
  result?: R;
  /** Why there is no result: the time budget, or the error the scenario failed with. */
  skipped?: string;
}

export type MeasuredScenarios = { [K in ScenarioName]: Measured<ScenarioResults[K]> };

export interface Results {
  /** The last runner invocation that wrote this file. */
  run: { at: string; seconds: number; scenarios: ScenarioName[] };
  machine: Record<string, string>;
  scenarios: Partial<MeasuredScenarios>;
  /** Top self-time functions of the sidecars of the last BENCH_PROFILE=1 run; `groups` and `at` absent from results written before them. */
  profiles: Array<{ label: string; top: string; groups?: Array<[string, number]>; at?: string }>;
  /** Where the figures come from when they were not written by the runner (the first baseline). */
  source?: string;
}

export const RESULTS_FILE = join(ROOT, 'bench', 'results.json');
export const BASELINE_FILE = join(ROOT, 'bench', 'baseline.json');

export function readResults(file: string): Results | null {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Results) : null;
}

export function writeResults(file: string, results: Results): void {
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
}
