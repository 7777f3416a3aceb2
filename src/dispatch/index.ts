export { Dispatcher, type DispatcherOptions, type WebhookHandOff } from './dispatcher';
