export {
  RunStore,
  REDELIVER_MIN_INTERVAL_MS,
  startedWebhookId,
  type RunStoreOptions,
  type CancelResult,
  type CreateResult,
  type RedeliverResult,
  type RetryResult,
  type QueueStats,
  type HandedOffWebhook,
} from './store';
export { RunEvents, type EventChannels } from './events';
export { NotReplicatedError } from './replication';
export { RunKeys, QueueKeys, newRunId, ownerBucket, queueTag, tagOfRunId } from './keys';
export {
  connectRedis,
  connectSubscriber,
  evictionPolicyProblem,
  evictionPolicyProblems,
  isCluster,
  mayHaveRun,
  NotSentError,
  nodeAddress,
  primaries,
  type RedisClient,
  type RedisNodeAddress,
  type RedisTarget,
} from './connection';
export { primariesHealth, redisTopology, replicasHealth, type RedisNodeState, type RedisTopology } from './topology';
export * from './types';
