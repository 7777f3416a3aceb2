import { badInputDrill } from '../../drills/bad-input';
import { fuzzDrill } from '../../drills/fuzz';
import { killSidecarDrill } from '../../drills/kill-sidecar';
import type { Drill } from '../../drills/lib';
import { redisBlackholeDrill } from '../../drills/redis-blackhole';
import { clusterFailoverDrill, sentinelFailoverDrill } from '../../drills/redis-failover';
import { threeReplicasDrill } from '../../drills/three-replicas';
import { webhookOutageDrill } from '../../drills/webhook-outage';
import { describeWithEnvoy } from '../support/real-envoy';

/**
 * The fast subset of `npm run drills` (docs/RELIABILITY.md), at CI size: runs in `npm test`.
 * Spawned replicas run the built sidecar (`npm run build` first; built on demand otherwise).
 * Every drill but the fuzz goes through the real Envoy; the fuzz drives the gRPC server with
 * malformed ext_proc messages a real Envoy never sends, so it runs without one.
 */
const THROUGH_ENVOY: Drill[] = [
  killSidecarDrill,
  redisBlackholeDrill,
  clusterFailoverDrill,
  sentinelFailoverDrill,
  threeReplicasDrill,
  webhookOutageDrill,
  badInputDrill,
];

function runs(drill: Drill): void {
  it(`${drill.id}: ${drill.title}`, async () => {
    const r = await drill.run({ mode: 'fast', log: () => undefined });
    // On failure, show the drill's counts too: they say what went wrong.
    const failed = r.checks.filter((c) => !c.ok);
    expect(failed.length === 0 ? [] : { failed, counts: r.counts }).toEqual([]);
  }, 90_000);
}

describeWithEnvoy('reliability drills through the real Envoy (fast subset)', () => {
  for (const drill of THROUGH_ENVOY) runs(drill);
});

describe('reliability drills without Envoy (fast subset)', () => {
  runs(fuzzDrill);
});
