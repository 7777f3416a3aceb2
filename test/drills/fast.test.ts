import { badInputDrill } from '../../drills/bad-input';
import { fuzzDrill } from '../../drills/fuzz';
import { killSidecarDrill } from '../../drills/kill-sidecar';
import type { Drill } from '../../drills/lib';
import { redisBlackholeDrill } from '../../drills/redis-blackhole';
import { threeReplicasDrill } from '../../drills/three-replicas';
import { webhookOutageDrill } from '../../drills/webhook-outage';

/**
 * The fast subset of `npm run drills` (docs/RELIABILITY.md), at CI size: runs in `npm test`.
 * Spawned replicas run the built sidecar (`npm run build` first; built on demand otherwise).
 */
const FAST: Drill[] = [killSidecarDrill, redisBlackholeDrill, threeReplicasDrill, webhookOutageDrill, badInputDrill, fuzzDrill];

describe('reliability drills (fast subset)', () => {
  for (const drill of FAST) {
    it(`${drill.id}: ${drill.title}`, async () => {
      const r = await drill.run({ mode: 'fast', log: () => undefined });
      // On failure, show the drill's counts too: they say what went wrong.
      const failed = r.checks.filter((c) => !c.ok);
      expect(failed.length === 0 ? [] : { failed, counts: r.counts }).toEqual([]);
    }, 60_000);
  }
});
