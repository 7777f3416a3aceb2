export { Dispatcher, type DispatcherOptions } from './dispatcher';
