export { AsyncAcceptor, parseAsyncRequest, replayHeaders, ownerFingerprint, requestedPriority, type AcceptOptions } from './accept';
export { RunsApi, type ApiRequest, type ApiScope, type RunsApiOptions } from './runs-api';
export { createEnvoyHandler } from './envoy-handler';
export { API_ERRORS, apiError, jsonReply, type ApiErrorCode } from './errors';
export { OpenApiDocument, readOpenApiDocument, OPENAPI_PATH } from './openapi';
