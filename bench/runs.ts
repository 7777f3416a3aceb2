/** Runs written straight into Redis with the sidecar's own RunStore, for the worker scenarios (completion path, long runs). */
import type { Redis } from 'ioredis';
import { RunStore, newRunId, queueTag, type NewRun } from '../src/runs';

/** The headers of every run (and of every BullMQ job of the baseline): 8, as a curl client through Envoy sends. */
export const RUN_HEADERS = (id: string): Array<[string, string]> => [
  ['host', 'app.example.internal'],
  ['user-agent', 'curl/8.5.0'],
  ['accept', '*/*'],
  ['authorization', 'Bearer 3f1c9f1e2b7a4d7c8e0f5a6b7c8d9e0f'],
  ['x-forwarded-proto', 'http'],
  ['x-request-id', '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11'],
  ['content-type', 'application/json'],
  ['x-async-run-id', id],
];
/** An 80-byte JSON body. */
export const RUN_BODY = Buffer.from('{"report":"quarterly","format":"pdf","pad":"0123456789abcdef0123456789abcdef"}');
export const RUN_TARGET = '/v1/reports/generate?format=pdf';

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
