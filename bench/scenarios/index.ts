/**
 * Every scenario by its name on the command line (`npm run bench -- <name>...`) and in
 * bench/results.json, in the order a full run takes them. Adding one: a file here exporting a
 * `Scenario`, its line in both lists below, its view in bench/report.ts and its section in
 * bench/report.md.
 */
import type { Scenario } from '../env';
import { accept, type AcceptResults } from './accept';
import { completion, type CompletionResults } from './completion';
import { durability, type DurabilityResults } from './durability';
import { envoy, type EnvoyResults } from './envoy';
import { latency, type LatencyResults } from './latency';
import { longRuns, type LongRunsResults } from './long-runs';
import { passThrough, type PassThroughResults } from './pass-through';
import { tracing, type TracingResults } from './tracing';

/** What each scenario measures, by name. */
export interface ScenarioResults {
  accept: AcceptResults;
  latency: LatencyResults;
  'pass-through': PassThroughResults;
  envoy: EnvoyResults;
  completion: CompletionResults;
  'long-runs': LongRunsResults;
  durability: DurabilityResults;
  tracing: TracingResults;
}

export type ScenarioName = keyof ScenarioResults;

export const SCENARIOS: { [K in ScenarioName]: Scenario<ScenarioResults[K]> } = {
  accept,
  latency,
  'pass-through': passThrough,
  envoy,
  completion,
  'long-runs': longRuns,
  durability,
  tracing,
};

export const SCENARIO_NAMES = Object.keys(SCENARIOS) as ScenarioName[];

export type { AcceptResults, CompletionResults, DurabilityResults, EnvoyResults, LatencyResults, LongRunsResults, PassThroughResults, TracingResults };
