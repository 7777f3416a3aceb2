/**
 * One request's ext_proc stream and its per-message state (source/extensions/filters/http/ext_proc/
 * processor_state.cc, with the message dispatch of ext_proc.cc's Filter::onReceiveMessage): the
 * stream opened lazily, the per-message timer, override_message_timeout, mode_override, and how a
 * timeout, gRPC error or clean close ends the wait.
 */
import type { ProcessingRequest } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import { durationMs, processingModeFrom, type ExtProcFilterModel, type ProcessingModeModel } from '../envoy-config';
import type { ExtProcStream, StreamEvent } from './ext-proc-stream';
import { LocalReply } from './local-reply';
import type { EnvoyStats, RequestRecord } from './stand-in';

const ERROR_PREFIX = 'ext_proc_error';

/** What the state needs from the Envoy around it: its counters and the sidecar cluster's streams. */
export interface StreamHost {
  readonly stats: EnvoyStats;
  newStream(): ExtProcStream;
  trackStream(s: ExtProcStream, open: boolean): void;
}

/** The outcome of waiting for the server's answer to one message. */
export type Awaited = ProcessingResponse__Output | 'continue-without-server' | LocalReply;

export class ProcessorState {
  processingComplete = false;
  private stream?: ExtProcStream;

  constructor(
    private readonly host: StreamHost,
    private readonly filter: ExtProcFilterModel,
    readonly mode: ProcessingModeModel,
    private readonly record: RequestRecord,
    private readonly signal: AbortSignal | undefined,
    /** A message while Envoy waits for nothing (ext_proc.cc onReceiveMessage → handle* returns FailedPrecondition). */
    private readonly onSpurious: () => void,
  ) {}

  private get stats(): EnvoyStats {
    return this.host.stats;
  }

  /** Filter::openStream — lazily, on the first message. */
  private open(): ExtProcStream {
    if (!this.stream) {
      this.stream = this.host.newStream();
      this.host.trackStream(this.stream, true);
      this.record.streamOpened = true;
      this.record.sent = this.stream.sent;
      this.record.received = this.stream.received;
      this.stream.onUnsolicited = (e) => {
        if (this.processingComplete || e.kind !== 'message') return;
        this.onSpurious();
      };
    }
    return this.stream;
  }

  closeStream(): void {
    if (this.stream) {
      this.record.streamEndedBy = this.stream.endedBy ?? 'envoy';
      this.stream.close();
      this.record.streamEndedBy = this.stream.endedBy;
      this.host.trackStream(this.stream, false);
    }
  }

  send(req: ProcessingRequest): void {
    // Envoy's C++ protobuf leaves a proto3 false off the wire; protobufjs would send it (the
    // real Envoy's end_of_stream: false arrives unset).
    if (req.request_headers?.end_of_stream === false) req = { ...req, request_headers: { ...req.request_headers, end_of_stream: undefined } };
    if (req.request_body?.end_of_stream === false) req = { ...req, request_body: { ...req.request_body, end_of_stream: undefined } };
    // Filter::addDynamicMetadata: metadata_context on every message, empty when nothing is forwarded.
    this.open().send({ ...req, metadata_context: {} });
    this.stats.messagesSent++;
  }

  /** processor_state.h shouldRemoveContentLength: body modes that may change the body length. */
  shouldRemoveContentLength(): boolean {
    const m = this.mode.request_body_mode;
    return m === 'STREAMED' || m === 'BUFFERED_PARTIAL' || (m === 'BUFFERED' && this.mode.request_header_mode === 'SKIP');
  }

  /**
   * Waits for the response to the message just sent, with the per-message timer
   * (ProcessorState::onStartProcessorCall). Handles, in Filter::onReceiveMessage order:
   * override_message_timeout (Filter::onNewTimeout → restartMessageTimer: once per state, only
   * 1 ms ≤ t ≤ max_message_timeout, and every other field of that message is ignored), then
   * mode_override (only with allow_mode_override and while waiting for a headers response),
   * then immediate_response (returned as it is, processing complete and the stream closed).
   * Timeouts, gRPC errors and clean closes follow onMessageTimeout, onGrpcError and onGrpcClose.
   */
  async await(state: 'headers' | 'body' | 'trailers'): Promise<Awaited> {
    const stream = this.open();
    let deadline = Date.now() + this.filter.messageTimeoutMs;
    let timeoutOverridden = false;
    for (;;) {
      const ev: StreamEvent = await stream.next(deadline, this.signal);
      switch (ev.kind) {
        case 'aborted':
          return new LocalReply(499, Buffer.alloc(0), 'downstream_remote_disconnect');
        case 'timeout':
          this.stats.messageTimeouts++;
          if (this.filter.failureModeAllow) {
            this.stats.failureModeAllowed++;
            return 'continue-without-server';
          }
          this.processingComplete = true;
          return new LocalReply(504, Buffer.alloc(0), `${ERROR_PREFIX}_per-message_timeout_exceeded`);
        case 'error':
          this.stats.grpcErrors++;
          if (this.filter.failureModeAllow) {
            this.stats.failureModeAllowed++;
            return 'continue-without-server';
          }
          this.processingComplete = true;
          return new LocalReply(this.filter.statusOnError, Buffer.alloc(0), `${ERROR_PREFIX}_gRPC_error_${ev.code}{${ev.details.replace(/ /g, '_')}}`);
        case 'close':
          return 'continue-without-server';
        case 'message': {
          const m = ev.message;
          this.stats.messagesReceived++;
          if (m.override_message_timeout) {
            const ms = durationMs(m.override_message_timeout) ?? 0;
            if (!timeoutOverridden && ms >= 1 && ms <= this.filter.maxMessageTimeoutMs) {
              deadline = Date.now() + ms;
              timeoutOverridden = true;
              this.stats.overrideTimeoutsApplied++;
            } else {
              this.stats.overrideTimeoutsIgnored++;
            }
            continue;
          }
          if (this.filter.allowModeOverride && state === 'headers' && m.mode_override) {
            this.applyModeOverride(m.mode_override);
          }
          if (m.response === 'immediate_response') {
            this.processingComplete = true;
            this.stats.immediateResponses++;
            this.closeStream();
          }
          return m;
        }
      }
    }
  }

  /** effectiveModeOverride (1.34+): DEFAULT header/trailer modes = no change, request_header_mode ignored, body modes copied literally. */
  private applyModeOverride(o: NonNullable<ProcessingResponse__Output['mode_override']>): void {
    this.stats.modeOverridesApplied++;
    const m = processingModeFrom(o);
    const mode = this.mode;
    if (m.response_header_mode !== 'DEFAULT') mode.response_header_mode = m.response_header_mode;
    if (m.request_trailer_mode !== 'DEFAULT') mode.request_trailer_mode = m.request_trailer_mode;
    if (m.response_trailer_mode !== 'DEFAULT') mode.response_trailer_mode = m.response_trailer_mode;
    mode.request_body_mode = m.request_body_mode;
    mode.response_body_mode = m.response_body_mode;
    this.record.mode = { ...mode };
  }
}
