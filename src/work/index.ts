// The machinery the background workers share (dispatch and webhook delivery); knows nothing of
// Redis or HTTP.
export { ClaimLoop, type ClaimLoopOptions } from './claim-loop';
export { PeriodicTask } from './periodic';
export { REDIS_BACKOFF, backoffDelayMs, retryUntil, type Backoff, type RetryOptions, type RetryResult } from './retry';
