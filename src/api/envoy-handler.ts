import type { ExtProcHandler, HeadDecision, RequestHead, StreamMetadata } from '../extproc';
import { NO_TRACING, type Tracing } from '../tracing';
import type { AsyncAcceptor } from './accept';
import type { OpenApiDocument } from './openapi';
import { parseAsyncRequest } from './accept';
import { splitPath } from './request-parts';
import type { RunsApi } from './runs-api';

/**
 * What the sidecar does with each request Envoy's ext_proc filter sends it: the runs API (and
 * the OpenAPI document under its prefix) is answered from the headers; an async request is
 * accepted once its body is in; anything else (a route that enables the filter for a request
 * that turns out not to be async) passes through.
 */
export function createEnvoyHandler(
  acceptor: AsyncAcceptor,
  runsApi: RunsApi,
  maxBodyBytes: number,
  contract: OpenApiDocument,
  tracing: Tracing = NO_TRACING,
): ExtProcHandler {
  return {
    onRequestHeaders(head: RequestHead, metadata: StreamMetadata): HeadDecision {
      const { pathname } = splitPath(head.path);
      // The API's own description is public: no owner header needed.
      if (pathname === contract.pathViaEnvoy) return { kind: 'reply', decision: 'runs_api', reply: async () => contract.reply(head.method) };
      if (runsApi.owns(pathname)) {
        const req = { method: head.method, path: head.path, headers: head.headers };
        return { kind: 'reply', decision: 'runs_api', holdMs: runsApi.holdMs(req), reply: (signal) => runsApi.handle(req, 'owner', signal) };
      }
      const asyncRequest = parseAsyncRequest(head);
      if (!asyncRequest) return { kind: 'pass' };
      // Tracing: the accept's SERVER span, ended with the answer (null when tracing is off).
      const span = tracing.startAccept(head, metadata);
      const check = acceptor.precheck(head, asyncRequest);
      if ('refusal' in check) {
        const refusal = check.refusal;
        return { kind: 'reply', decision: 'rejected', reply: async () => (span ? span.end(refusal) : refusal) };
      }
      const { checked } = check;
      const holdMs = acceptor.holdMs(checked);
      return {
        kind: 'body',
        decision: 'accepted',
        maxBytes: maxBodyBytes,
        tooLarge: () => (span ? span.end(acceptor.tooLarge()) : acceptor.tooLarge()),
        onBody: span
          ? (body, signal) => acceptor.accept(head, asyncRequest, checked, body, signal, span).then((r) => span.end(r))
          : (body, signal) => acceptor.accept(head, asyncRequest, checked, body, signal),
        ...(holdMs !== undefined ? { holdMs } : {}),
      };
    },
  };
}
