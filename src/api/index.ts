export { AsyncAcceptor, parseAsyncRequest, replayHeaders, ownerFingerprint, requestedPriority, type AcceptOptions } from './accept';
export { RunsApi, type ApiRequest, type ApiScope, type RunsApiOptions } from './runs-api';
export { createEnvoyHandler } from './envoy-handler';
export { API_ERRORS, apiError, jsonReply, type ApiErrorCode } from './errors';
export { OpenApiDocument, readOpenApiDocument, OPENAPI_PATH } from './openapi';
export { SyncWait, requestedWait, SYNC_WAIT_MARGIN_MS, type SyncWaitOptions } from './sync-wait';
export { parseWebhookOptions, WEBHOOK_EVENTS, WEBHOOK_SECRET_HEADER, type WebhookOptions } from './webhook-options';
