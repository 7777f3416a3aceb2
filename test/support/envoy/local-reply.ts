/**
 * A local reply: a response Envoy makes itself instead of the upstream's (the filter manager's
 * sendLocalReply, shaped by Utility::prepareLocalReply). Filters return one to stop a request.
 */
import type { HeaderList } from './route-match';

export class LocalReply {
  constructor(
    readonly status: number,
    readonly body: Buffer,
    /** %RESPONSE_CODE_DETAILS%. */
    readonly details: string,
    readonly headers: HeaderList = [],
  ) {}
}
