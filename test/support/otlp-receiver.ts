/**
 * A real OTLP/HTTP trace receiver on loopback, standing in for an OpenTelemetry Collector: it
 * accepts `POST /v1/traces` in both encodings of the specification and decodes what it gets,
 * `http/protobuf` with the OTLP messages compiled in @opentelemetry/otlp-transformer 0.52 and
 * `http/json` as OTLP/JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).
 * Spans from both are normalised to one shape, ids in lower-case hex.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;
export const STATUS_CODE = { UNSET: 0, OK: 1, ERROR: 2 } as const;

export type AttributeValue = string | number | boolean | null;

export interface ReceivedSpan {
  /** The encoding it came in. */
  protocol: 'http/protobuf' | 'http/json';
  /** The resource's `service.name`. */
  service: string;
  resource: Record<string, AttributeValue>;
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, AttributeValue>;
  status: { code: number; message: string };
}

export interface ReceivedExport {
  path: string;
  contentType: string;
  spans: ReceivedSpan[];
}

type Decoded = {
  resourceSpans?: Array<{
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: Array<{ spans?: RawSpan[] }>;
  }>;
};
type KeyValue = { key: string; value?: AnyValue };
type AnyValue = { stringValue?: string; intValue?: string | number; doubleValue?: number; boolValue?: boolean; value?: string };
type RawSpan = {
  traceId: string | Uint8Array;
  spanId: string | Uint8Array;
  parentSpanId?: string | Uint8Array;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
};

interface ProtobufType {
  decode(body: Uint8Array): unknown;
  toObject(message: unknown, options: { longs: StringConstructor; enums: NumberConstructor; defaults: boolean }): unknown;
}

let requestType: ProtobufType | undefined;

/**
 * ExportTraceServiceRequest from protobuf bytes, decoded with the OTLP messages that
 * @opentelemetry/otlp-transformer 0.52 ships compiled (protobufjs static code, generated from the
 * opentelemetry-proto definitions; later versions encode by hand and ship no decoder). Installed
 * under the alias `otlp-transformer-052` beside the exporter's own, newer transformer.
 */
function decodeProtobuf(body: Buffer): Decoded {
  if (!requestType) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const root = require('otlp-transformer-052/build/src/generated/root') as {
      opentelemetry: { proto: { collector: { trace: { v1: { ExportTraceServiceRequest: ProtobufType } } } } };
    };
    requestType = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
  }
  return requestType.toObject(requestType.decode(body), { longs: String, enums: Number, defaults: false }) as Decoded;
}

const hex = (v: string | Uint8Array | undefined): string => (v === undefined ? '' : typeof v === 'string' ? v.toLowerCase() : Buffer.from(v).toString('hex'));

function value(v: AnyValue | undefined): AttributeValue {
  if (!v) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return null;
}

function attributes(list: KeyValue[] | undefined): Record<string, AttributeValue> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, value(kv.value)]));
}

function normalise(doc: Decoded, protocol: ReceivedSpan['protocol']): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of doc.resourceSpans ?? []) {
    const resource = attributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          protocol,
          service: String(resource['service.name'] ?? ''),
          resource,
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name,
          kind: s.kind ?? 0,
          startNs: BigInt(s.startTimeUnixNano),
          endNs: BigInt(s.endTimeUnixNano),
          attributes: attributes(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
        });
      }
    }
  }
  return out;
}

export class OtlpReceiver {
  readonly exports: ReceivedExport[] = [];
  /** Requests it could not decode (answered 400). */
  readonly refused: Array<{ contentType: string; error: string }> = [];

  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    const rx = new OtlpReceiver(server);
    server.on('request', (req, res) => rx.onRequest(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return rx;
  }

  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get spans(): ReceivedSpan[] {
    return this.exports.flatMap((e) => e.spans);
  }

  /** Resolves with the spans once `done(spans)` is true; rejects with what arrived after `timeoutMs`. */
  async waitFor(done: (spans: ReceivedSpan[]) => boolean, timeoutMs = 15_000): Promise<ReceivedSpan[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (done(this.spans)) return this.spans;
      if (Date.now() > deadline) {
        const seen = this.spans.map((s) => `${s.service}/${s.name} ${s.traceId}:${s.spanId}<-${s.parentSpanId}`);
        throw new Error(`OTLP receiver: condition not met within ${timeoutMs} ms; got ${seen.length} spans:\n${seen.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  clear(): void {
    this.exports.length = 0;
    this.refused.length = 0;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const contentType = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim();
      let body = Buffer.concat(chunks);
      try {
        if (req.method !== 'POST' || req.url !== '/v1/traces') throw new Error(`${req.method} ${req.url}: not the OTLP traces endpoint`);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        let spans: ReceivedSpan[];
        if (contentType === 'application/x-protobuf') spans = normalise(decodeProtobuf(body), 'http/protobuf');
        else if (contentType === 'application/json') spans = normalise(JSON.parse(body.toString('utf8')) as Decoded, 'http/json');
        else throw new Error(`unsupported content-type ${contentType}`);
        this.exports.push({ path: req.url, contentType, spans });
        // An empty ExportTraceServiceResponse: full success.
        if (contentType === 'application/json') res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        else res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      } catch (err) {
        this.refused.push({ contentType, error: (err as Error).message });
        res.writeHead(400, { 'content-type': 'text/plain' }).end((err as Error).message);
      }
    });
  }
}

/** The spans of one trace, by id, with a lookup of each span's parent. */
export function traceOf(
  spans: ReceivedSpan[],
  traceId: string,
): { spans: ReceivedSpan[]; byName: (name: string) => ReceivedSpan[]; parentOf: (s: ReceivedSpan) => ReceivedSpan | undefined } {
  const inTrace = spans.filter((s) => s.traceId === traceId);
  return {
    spans: inTrace,
    byName: (name) => inTrace.filter((s) => s.name === name),
    parentOf: (s) => inTrace.find((p) => p.spanId === s.parentSpanId),
  };
}
