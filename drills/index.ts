import { apiFuzzDrill } from './api-fuzz';
import { badInputDrill } from './bad-input';
import { fuzzDrill } from './fuzz';
import type { Drill } from './lib';
import { killSidecarDrill } from './kill-sidecar';
import { redisBlackholeDrill } from './redis-blackhole';
import { clusterFailoverDrill, sentinelFailoverDrill } from './redis-failover';
import { redisRestartDrill } from './redis-restart';
import { threeReplicasDrill } from './three-replicas';
import { webhookOutageDrill } from './webhook-outage';

/** Every drill, in the order `npm run drills` runs them. */
export const ALL_DRILLS: Drill[] = [
  killSidecarDrill,
  redisRestartDrill,
  redisBlackholeDrill,
  clusterFailoverDrill,
  sentinelFailoverDrill,
  webhookOutageDrill,
  threeReplicasDrill,
  badInputDrill,
  fuzzDrill,
  apiFuzzDrill,
];
