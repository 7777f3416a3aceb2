/**
 * Envoy stand-in for tests: the `ingress` listener (HCM + ext_proc + router) and the `dispatch`
 * listener of envoy/envoy.yaml, emulated in-process. See stand-in.ts for what is (not) emulated.
 */
export { EnvoyStandIn } from './stand-in';
export { applyHeaderMutation } from './mutation-utils';
export { LocalReply } from './local-reply';
export type { EnvoyStandInOptions, EnvoyStats, RequestRecord, StandInRequest, StandInResponse } from './stand-in';
export { matchRoute, routeMatches, stringMatches, fullMatchRegex } from './route-match';
export type { HeaderList } from './route-match';
export { ExtProcStream } from './ext-proc-stream';
