import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ProcessingRequest__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse';
import type { Metrics } from '../telemetry';
import { loadExtProcProto } from './proto';
import { StreamProcessor } from './stream';
import type { ExtProcHandler } from './types';

export interface ExtProcServerOptions {
  host: string;
  port: number;
  /** Largest request body the handler accepts; gRPC's message limit is raised above it. */
  maxBodyBytes: number;
}

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
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<void> {
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${host}:${this.options.port}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
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

  private process(call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>): void {
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
          call.emit('error', { code: reason === 'handler_error' ? grpc.status.INTERNAL : grpc.status.INVALID_ARGUMENT, details: message });
        }
      },
      decided: (d) => {
        decision = d;
        this.metrics.extprocStreamDuration.observe({ decision: d }, Number(process.hrtime.bigint() - started) / 1e9);
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
