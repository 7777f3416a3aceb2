export { Dispatcher, type DispatcherOptions } from './dispatcher';
export { backoffDelay, type BackpressurePolicy } from './backpressure';
export type { WebhookHandOff } from './outcome';
