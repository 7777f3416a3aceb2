// Tracing across a run (README "Tracing"): spans for the accept, the queue wait, the replay and
// each webhook attempt, exported with the OpenTelemetry SDK. Nothing here imports the SDK: it is
// loaded by startTracing only when tracing is on.
import type { TracingConfig } from '../config';
import type { Logger } from '../telemetry';
import type { Tracing } from './types';

export type { AcceptSpan, OutgoingSpan, ReplaySpan, StreamMetadata, TraceLogFields, Tracing, WebhookSpan } from './types';
export { DEFAULT_QUEUE, decodeRunTrace, encodeRunTrace, redactedUrl, withTraceHeaders } from './context';

/** Tracing off: no spans, no context, no SDK. */
export const NO_TRACING: Tracing = {
  enabled: false,
  startAccept: () => null,
  startReplay: () => null,
  startWebhook: () => null,
  logFields: () => undefined,
  shutdown: async () => undefined,
};

/** NO_TRACING when `config` is null; else the SDK, loaded now, exporting with the configured protocol. */
export async function startTracing(config: TracingConfig | null, logger: Logger): Promise<Tracing> {
  if (config === null) return NO_TRACING;
  const [{ OtelTracing }, { OTLPTraceExporter }] = await Promise.all([
    import('./sdk'),
    config.protocol === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
  ]);
  // Headers, timeout, compression and certificates come from the OTEL_EXPORTER_OTLP_* variables,
  // read by the exporter itself; the URL is the one the configuration resolved.
  const tracing = new OtelTracing(config, new OTLPTraceExporter({ url: config.url }), logger);
  logger.info({ endpoint: config.url, protocol: config.protocol, service_name: config.serviceName, sampler: config.sampler.name }, 'tracing on');
  return tracing;
}
