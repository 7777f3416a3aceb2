/** Runs written straight into Redis with the sidecar's own RunStore, for the worker scenarios (completion path, long runs). */
import type { Redis } from 'ioredis';
import { RunStore, newRunId, queueTag, type NewRun } from '../src/runs';

import { RUN_BODY, RUN_HEADERS, RUN_TARGET } from './run-shape';

export function newStore(redis: Redis): RunStore {
  return new RunStore(redis, { keyPrefix: 'eas', runTtlMs: 86_400_000, leaseTimeoutMs: 30_000, maxDispatchAttempts: 3, redispatchInterrupted: 'idempotent' });
}

/** Creates `n` queued runs (500 at a time) and returns their ids. */
export async function createRuns(store: RunStore, n: number, webhookUrl: string | null, body: Buffer = RUN_BODY): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch: Array<Promise<unknown>> = [];
    for (let j = i; j < Math.min(n, i + 500); j++) {
      const id = newRunId(queueTag('default'));
      ids.push(id);
      const run: NewRun = {
        id,
        trigger: 'query',
        method: 'POST',
        path: '/v1/reports/generate',
        target: RUN_TARGET,
        headers: RUN_HEADERS(id),
        body,
        requestId: '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11',
        owner: '',
        webhookUrl,
        gracePeriodMs: 900_000,
      };
      batch.push(store.create(run));
    }
    await Promise.all(batch);
  }
  return ids;
}
