/** What every bench run looks like, in a module of its own: the memory floor (held-client.ts) loads it and nothing of the sidecar. */

/** The headers of every run (and of every BullMQ job of the baseline): 8, as a curl client through Envoy sends. */
export const RUN_HEADERS = (id: string): Array<[string, string]> => [
  ['host', 'app.example.internal'],
  ['user-agent', 'curl/8.5.0'],
  ['accept', '*/*'],
  ['authorization', 'Bearer 3f1c9f1e2b7a4d7c8e0f5a6b7c8d9e0f'],
  ['x-forwarded-proto', 'http'],
  ['x-request-id', '6c9c1ac8-9a51-4c37-a6a4-3b7b1c0a3e11'],
  ['content-type', 'application/json'],
  ['x-async-run-id', id],
];
/** An 80-byte JSON body. */
export const RUN_BODY = Buffer.from('{"report":"quarterly","format":"pdf","pad":"0123456789abcdef0123456789abcdef"}');
export const RUN_TARGET = '/v1/reports/generate?format=pdf';
