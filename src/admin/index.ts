export { AdminServer, type AdminServerOptions, type AdminChecks } from './server';
