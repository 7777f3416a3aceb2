// What the rest of the sidecar uses of webhook delivery; the parts (address ranges, signing,
// retry policy, body, DNS guard) are imported from their own modules where needed (tests).
export { validateWebhookUrl, type NetworkPolicy, type UrlCheck } from './policy';
export { createDnsResolver, type Resolver } from './guard';
export { WebhookSender, type AttemptResult, type WebhookDelivery, type WebhookSenderOptions } from './sender';
export { DeliveryWorker, type DeliveryWorkerOptions } from './worker';
export { SecretBox } from './secret-box';
