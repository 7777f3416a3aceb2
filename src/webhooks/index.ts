export { isBlockedAddress, blockedReason, metadataReason } from './address';
export { validateWebhookUrl, isHostAllowed, isHostListed, addressRefusal, MAX_WEBHOOK_URL_LENGTH, type NetworkPolicy, type UrlCheck } from './policy';
export { checkDeliveryTarget, createDnsResolver, PinnedLookup, systemResolver, type Resolver, type ResolvedAddress, type TargetCheck } from './guard';
export { WebhookSigner } from './signing';
export {
  DEFAULT_RETRY_SCHEDULE,
  RETRY_AFTER_CAP_MS,
  RETRY_JITTER,
  classifyAttempt,
  nextAttemptDelayMs,
  parseRetryAfter,
  parseRetrySchedule,
  type AttemptOutcome,
} from './retry';
export { buildWebhookBody, type WebhookBody, type WebhookBodyInput } from './body';
export { WebhookSender, DEFAULT_USER_AGENT, type AttemptResult, type WebhookDelivery, type WebhookSenderOptions } from './sender';
export { DeliveryWorker, type DeliveryWorkerOptions } from './worker';
