import { queueTag } from '../../src/runs';

/** A fixed, readable run id of queue `queue` (ids carry their queue's tag: src/runs/keys.ts). */
export function testRunId(n: number, queue = 'default'): string {
  return `00000000-0000-8000-8000-${String(n).padStart(8, '0')}${queueTag(queue)}`;
}
