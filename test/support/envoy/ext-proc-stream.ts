/**
 * One ext_proc gRPC stream as Envoy's filter drives it (client side).
 * - Opened lazily, one per HTTP request, never reused (Filter::openStream).
 * - :authority is the cluster name, no deadline (ext_proc sets no grpc-timeout).
 * - Closed with a half-close followed by RST_STREAM CANCEL (ExternalProcessorStreamImpl::close →
 *   closeStream() then resetStream()), so servers see CANCELLED.
 */
import * as grpc from '@grpc/grpc-js';
import { loadExtProcProto } from '../../../src/extproc/proto';
import type { ProcessingRequest } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';

export type StreamEvent =
  | { kind: 'message'; message: ProcessingResponse__Output }
  | { kind: 'error'; code: number; details: string }
  | { kind: 'close' } // server finished the call with status OK
  | { kind: 'timeout' }
  | { kind: 'aborted' };

type ProcessCall = grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse__Output>;
type ProcessClient = grpc.Client & { Process(metadata?: grpc.Metadata): ProcessCall };

export function createExtProcClient(address: string, clusterName: string): ProcessClient {
  const proto = loadExtProcProto();
  const Ctor = proto.envoy.service.ext_proc.v3.ExternalProcessor as unknown as new (
    address: string,
    creds: grpc.ChannelCredentials,
    options: grpc.ChannelOptions,
  ) => ProcessClient;
  return new Ctor(address, grpc.credentials.createInsecure(), {
    'grpc.default_authority': clusterName,
    // One client = one HTTP/2 connection, as an Envoy connection-pool entry (grpc-js would
    // otherwise share a subchannel, and so a connection, among clients with the same target).
    'grpc.use_local_subchannel_pool': 1,
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
  });
}

export class ExtProcStream {
  readonly sent: ProcessingRequest[] = [];
  readonly received: ProcessingResponse__Output[] = [];
  /** How the stream ended: closed by us (half-close + cancel), by a server error, or cleanly by the server. */
  endedBy?: 'envoy' | 'server-error' | 'server-ok';
  private readonly call: ProcessCall;
  private readonly queue: StreamEvent[] = [];
  private waiter?: (e: StreamEvent) => void;
  private closed = false;
  /** Called for messages that arrive while nobody waits (Envoy is not expecting a response). */
  onUnsolicited?: (e: StreamEvent) => void;

  /** `metadata`: the stream's initial metadata, as Envoy's grpc_service.initial_metadata adds it. */
  constructor(client: ProcessClient, metadata?: grpc.Metadata) {
    this.call = metadata ? client.Process(metadata) : client.Process();
    this.call.on('data', (m: ProcessingResponse__Output) => {
      this.received.push(m);
      this.push({ kind: 'message', message: m });
    });
    this.call.on('error', (e: grpc.ServiceError) => {
      if (this.closed) return;
      this.endedBy = 'server-error';
      this.push({ kind: 'error', code: e.code, details: e.details ?? e.message });
    });
    this.call.on('status', (s: grpc.StatusObject) => {
      if (this.closed || s.code !== grpc.status.OK) return;
      this.endedBy = 'server-ok';
      this.push({ kind: 'close' });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(req: ProcessingRequest): void {
    if (this.closed) return;
    this.sent.push(req);
    this.call.write(req);
  }

  private push(e: StreamEvent): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(e);
    } else if (this.onUnsolicited && e.kind === 'message') {
      this.onUnsolicited(e);
    } else {
      this.queue.push(e);
    }
  }

  /** Next event, or `timeout` at `deadline` (ms since epoch), or `aborted` when the signal fires. */
  next(deadline: number, signal?: AbortSignal): Promise<StreamEvent> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => {
      const done = (e: StreamEvent) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiter = undefined;
        resolve(e);
      };
      const onAbort = () => done({ kind: 'aborted' });
      const timer = setTimeout(() => done({ kind: 'timeout' }), Math.max(0, deadline - Date.now()));
      if (signal?.aborted) return done({ kind: 'aborted' });
      signal?.addEventListener('abort', onAbort);
      this.waiter = done;
    });
  }

  /** Envoy's close(): END_STREAM (half-close) then RST_STREAM CANCEL. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.endedBy) this.endedBy = 'envoy';
    this.waiter = undefined;
    this.call.on('error', () => undefined);
    this.call.end();
    this.call.cancel();
  }
}
