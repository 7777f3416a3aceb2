export { Dispatcher, type DispatcherOptions } from './dispatcher';
export type { WebhookHandOff } from './outcome';
