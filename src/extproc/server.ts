import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ProcessingRequest__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse';
import type { Metrics } from '../telemetry';
import { loadExtProcProto } from './proto';
import { StreamProcessor, type ProtocolErrorReason } from './stream';
import type { ExtProcHandler } from './types';

export interface ExtProcServerOptions {
  host: string;
  port: number;
  /** Largest request body the handler accepts; gRPC's message limit is raised above it. */
  maxBodyBytes: number;
  /** Required `x-async-sidecar-token` metadata on Process streams (null: none). */
  token: string | null;
  /** A stream waiting longer than this for Envoy's next message is ended DEADLINE_EXCEEDED. */
  streamIdleTimeoutMs: number;
  /** Body bytes all streams together may hold; past it a stream is ended RESOURCE_EXHAUSTED. */
  bufferBudgetBytes: number;
}

/** gRPC metadata carrying the shared secret (Envoy: grpc_service.initial_metadata). */
export const TOKEN_METADATA_KEY = 'x-async-sidecar-token';

/** The gRPC status each way of failing a stream ends with (Envoy maps any of them to status_on_error). */
const STATUS_FOR: Record<ProtocolErrorReason, grpc.status> = {
  unexpected_message: grpc.status.INVALID_ARGUMENT,
  malformed_headers: grpc.status.INVALID_ARGUMENT,
  handler_error: grpc.status.INTERNAL,
  idle_timeout: grpc.status.DEADLINE_EXCEEDED,
  buffer_budget: grpc.status.RESOURCE_EXHAUSTED,
};

const digest = (v: string) => createHash('sha256').update(v).digest();

const SERVICE_NAME = 'envoy.service.ext_proc.v3.ExternalProcessor';
/** Room for the headers and framing around a BUFFERED body, which arrives as one message. */
const MESSAGE_OVERHEAD_BYTES = 1024 * 1024;

/**
 * The gRPC server Envoy's ext_proc filter talks to, plus grpc.health.v1.Health (for Envoy's gRPC
 * health checks and Kubernetes gRPC probes). One StreamProcessor per stream.
 */
export class ExtProcServer {
  private readonly server: grpc.Server;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  private readonly streams = new Set<StreamProcessor>();
  private boundPort = 0;
  private readonly tokenDigest: Buffer | null;
  private buffered = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly handler: ExtProcHandler,
    private readonly options: ExtProcServerOptions,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    const limit = options.maxBodyBytes + MESSAGE_OVERHEAD_BYTES;
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': limit,
      'grpc.max_send_message_length': limit,
      // Envoy keeps one HTTP/2 connection per worker thread open for a long time.
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    const proto = loadExtProcProto();
    this.server.addService(proto.envoy.service.ext_proc.v3.ExternalProcessor.service, {
      Process: (call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>) => this.process(call),
    });
    this.health.addToServer(this.server);
    this.tokenDigest = options.token === null ? null : digest(options.token);
    // One sweep for all streams instead of a timer each: the accept path stays timer-free.
    const idle = options.streamIdleTimeoutMs;
    this.sweeper = setInterval(
      () => {
        const cutoff = Date.now() - idle;
        for (const p of this.streams) if (p.lastMessageAt < cutoff) p.expire(idle);
      },
      Math.max(50, Math.min(1000, Math.floor(idle / 4))),
    );
    this.sweeper.unref();
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<void> {
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${host}:${this.options.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  }

  /** SERVING or NOT_SERVING on the health service (Envoy stops sending new streams to NOT_SERVING). */
  setServing(serving: boolean): void {
    const status = serving ? 'SERVING' : 'NOT_SERVING';
    this.health.setStatus('', status);
    this.health.setStatus(SERVICE_NAME, status);
  }

  /** Stops accepting streams; open streams get until `graceMs` to finish, then are cancelled. */
  async stop(graceMs: number): Promise<void> {
    this.setServing(false);
    clearInterval(this.sweeper);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The shared secret, compared in constant time over digests (equal lengths whatever was sent). */
  private authorized(call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>): boolean {
    if (this.tokenDigest === null) return true;
    const sent = call.metadata.get(TOKEN_METADATA_KEY)[0];
    return typeof sent === 'string' && timingSafeEqual(digest(sent), this.tokenDigest);
  }

  private process(call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>): void {
    if (!this.authorized(call)) {
      this.metrics.extprocStreamErrors.inc({ reason: 'unauthenticated' });
      this.logger.warn({ peer: call.getPeer() }, `ext_proc stream refused: missing or wrong ${TOKEN_METADATA_KEY} metadata`);
      call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: `missing or wrong ${TOKEN_METADATA_KEY}` });
      return;
    }
    const started = process.hrtime.bigint();
    let decision = 'none';
    let ended = false;
    const processor = new StreamProcessor(this.handler, {
      send: (response) => {
        if (!ended && !call.writableEnded && !call.destroyed) call.write(response);
      },
      fail: (reason, message) => {
        this.metrics.extprocStreamErrors.inc({ reason });
        this.logger.warn({ reason, peer: call.getPeer() }, `ext_proc stream ended with an error: ${message}`);
        if (!ended) {
          ended = true;
          call.emit('error', { code: STATUS_FOR[reason], details: message });
        }
      },
      reserve: (bytes) => {
        if (this.buffered + bytes > this.options.bufferBudgetBytes) return false;
        this.buffered += bytes;
        return true;
      },
      release: (bytes) => {
        this.buffered -= bytes;
      },
      decided: (d) => {
        decision = d;
        this.metrics.extprocStreamDuration.observe({ decision: d }, Number(process.hrtime.bigint() - started) / 1e9);
      },
      metadata: (name) => {
        const v = call.metadata.get(name)[0];
        return typeof v === 'string' ? v : undefined;
      },
    });
    this.streams.add(processor);
    const finish = () => {
      if (!this.streams.delete(processor)) return;
      processor.close();
    };
    call.on('data', (msg: ProcessingRequest__Output) => {
      try {
        processor.onMessage(msg);
      } catch (err) {
        this.logger.error({ err }, 'ext_proc stream handler threw');
        processor.close();
        if (!ended) {
          ended = true;
          call.emit('error', { code: grpc.status.INTERNAL, details: 'internal error' });
        }
      }
    });
    // Envoy ends a stream with a half-close and then RST_STREAM CANCEL: both are normal. A
    // client that half-closes early still gets the answer being prepared, then the OK status.
    call.on('end', () => {
      void processor.settled().then(() => {
        finish();
        if (!ended) {
          ended = true;
          call.end();
        }
      });
    });
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', (err: Error & { code?: number }) => {
      finish();
      if (err.code !== grpc.status.CANCELLED) this.logger.debug({ err, decision }, 'ext_proc stream error');
    });
  }
}
