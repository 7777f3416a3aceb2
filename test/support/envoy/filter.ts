/**
 * One request through the ext_proc filter on the decoding path (source/extensions/filters/http/
 * ext_proc/ext_proc.cc: Filter::decodeHeaders/decodeData/decodeTrailers and the handle*Response
 * callbacks). The stream and its timers are the ProcessorState's; a step that ends the request
 * returns a LocalReply, which the Envoy stand-in sends.
 */
import type { CommonResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/CommonResponse';
import type { ProcessingResponse__Output } from '../../../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import type { ExtProcFilterModel, ProcessingModeModel, RouteModel } from '../envoy-config';
import { LocalReply } from './local-reply';
import { applyBodyMutation, applyHeaderMutation, headersToProto, removeHeader } from './mutation-utils';
import { ProcessorState, type Awaited } from './processor-state';
import { headerValue, type HeaderList } from './route-match';
import type { Upstream } from './router';
import type { EnvoyStandIn, RequestRecord, StandInRequest, StandInResponse } from './stand-in';

/** A response from the upstream, or Envoy's own reply. */
export type Outcome = StandInResponse | LocalReply;

export class FilterRun {
  private readonly state: ProcessorState;
  private upstream?: Upstream;
  /** Set when the server's message arrives while Envoy waits for nothing (spurious). */
  private unsolicited = false;

  constructor(
    private readonly envoy: EnvoyStandIn,
    private readonly filter: ExtProcFilterModel,
    private readonly route: RouteModel,
    mode: ProcessingModeModel,
    private headers: HeaderList,
    private body: Buffer,
    private readonly hasTrailers: boolean,
    private readonly input: StandInRequest,
    private readonly record: RequestRecord,
  ) {
    // A message while nothing is awaited: spurious, as in spurious() but from outside the flow;
    // fail-closed resets an upstream request already under way, failure_mode_allow ignores the server.
    this.state = new ProcessorState(envoy, filter, mode, record, input.signal, () => {
      this.envoy.stats.spuriousMessages++;
      this.state.processingComplete = true;
      this.closeStream();
      if (this.filter.failureModeAllow) {
        this.envoy.stats.failureModeAllowed++;
        return;
      }
      this.unsolicited = true;
      this.upstream?.abort();
    });
  }

  private get mode(): ProcessingModeModel {
    return this.state.mode;
  }

  abortUpstream(): void {
    this.upstream?.abort();
  }

  closeStream(): void {
    this.state.closeStream();
  }

  async run(): Promise<Outcome> {
    const mode = this.mode;
    const noBody = this.body.length === 0 && !this.hasTrailers;
    let bodyHandled = false;

    // Filter::decodeHeaders → onHeaders: send request_headers, StopIteration.
    if (mode.request_header_mode !== 'SKIP') {
      if (!noBody && this.state.shouldRemoveContentLength()) removeHeader(this.headers, 'content-length');
      this.state.send({ request_headers: { headers: headersToProto(this.headers), end_of_stream: noBody } });
      const r = await this.wait('headers');
      if (r instanceof LocalReply) return r;
      if (r === 'continue-without-server') return this.continueWithoutServer();
      if (r.response !== 'request_headers') return this.spurious();
      const cr = r.request_headers?.response;
      const failed = this.applyCommon(cr);
      if (failed) return failed;
      if (cr?.status === 'CONTINUE_AND_REPLACE') {
        // handleHeadersResponse: replace the body, drop content-length, nothing more is sent.
        if (cr.body_mutation) {
          removeHeader(this.headers, 'content-length');
          this.body = applyBodyMutation(cr.body_mutation, this.body);
        }
        mode.request_body_mode = 'NONE';
        mode.request_trailer_mode = 'SKIP';
        bodyHandled = true;
      }
    }

    if (!noBody && !bodyHandled && this.body.length > 0) {
      switch (mode.request_body_mode) {
        case 'BUFFERED':
          return this.bufferedBody();
        case 'STREAMED':
          return this.streamedBody();
        case 'BUFFERED_PARTIAL':
          return this.partialBody();
        default:
          break;
      }
    }
    if (this.hasTrailers && mode.request_trailer_mode === 'SEND') {
      const t = await this.trailers();
      if (t) return t;
    }
    return this.toUpstream();
  }

  /** The server's answer; an immediate_response becomes Filter::sendImmediateResponse's reply. */
  private async wait(state: 'headers' | 'body' | 'trailers'): Promise<Awaited> {
    const r = await this.state.await(state);
    if (this.unsolicited) return new LocalReply(this.filter.statusOnError, Buffer.alloc(0), 'spurious_message');
    if (typeof r === 'object' && !(r instanceof LocalReply) && r.response === 'immediate_response') return this.immediate(r);
    return r;
  }

  private bufferLimit(): number {
    return this.route.requestBodyBufferLimit ?? this.envoy.ingress.perConnectionBufferLimitBytes;
  }

  /** BUFFERED: Filter::onData buffers (StopIterationAndBuffer); over the limit the filter manager answers 413. */
  private async bufferedBody(): Promise<Outcome> {
    if (this.body.length > this.bufferLimit()) {
      this.envoy.stats.payloadTooLarge++;
      return new LocalReply(413, Buffer.from('Payload Too Large'), 'request_payload_too_large');
    }
    this.state.send({ request_body: { body: this.body, end_of_stream: !this.hasTrailers } });
    const r = await this.wait('body');
    if (r instanceof LocalReply) return r;
    if (r === 'continue-without-server') return this.continueWithoutServer();
    if (r.response !== 'request_body') return this.spurious();
    const cr = r.request_body?.response;
    // handleBodyResponse (BufferedBodyCallback): header mutation allowed, content-length must match a mutated body.
    const failed = this.applyCommon(cr);
    if (failed) return failed;
    if (cr?.body_mutation) {
      const cl = headerValue(this.headers, 'content-length');
      const nb = applyBodyMutation(cr.body_mutation, this.body);
      if (cl !== undefined && Number(cl) !== nb.length) {
        return new LocalReply(500, Buffer.alloc(0), 'mismatch_between_content_length_and_the_length_of_the_mutated_body');
      }
      this.body = nb;
    }
    if (this.hasTrailers && this.mode.request_trailer_mode === 'SEND') {
      const t = await this.trailers();
      if (t) return t;
    }
    return this.toUpstream();
  }

  /**
   * STREAMED: after the headers response, handleHeadersResponse → sendBufferedDataInStreamedMode →
   * continueIfNecessary(): the headers go on to the router, so the UPSTREAM REQUEST STARTS before
   * any body response. Chunks are sent as they arrive (Filter::onData STREAMED case) and each body
   * response injects its (mutated) chunk upstream, in order (handleBodyResponse StreamedBodyCallback).
   */
  private async streamedBody(): Promise<Outcome> {
    const up = this.envoy.startUpstream(this.route, this.headers, this.record, true);
    if (up instanceof LocalReply) return up;
    this.upstream = up;
    const size = Math.max(1, this.envoy.opts.streamedChunkBytes ?? 64 * 1024);
    const chunks: Buffer[] = [];
    for (let i = 0; i < this.body.length; i += size) chunks.push(this.body.subarray(i, i + size));
    chunks.forEach((c, i) => this.state.send({ request_body: { body: c, end_of_stream: i === chunks.length - 1 && !this.hasTrailers } }));
    for (let i = 0; i < chunks.length; i++) {
      const r = await this.wait('body');
      if (r instanceof LocalReply) return r;
      if (r === 'continue-without-server') {
        // clearAsyncState: inject what is left, unprocessed.
        for (let j = i; j < chunks.length; j++) up.write(chunks[j]!);
        up.end();
        return up.result(this.input.signal);
      }
      if (r.response !== 'request_body') return this.spurious();
      const cr = r.request_body?.response;
      up.write(cr?.body_mutation ? applyBodyMutation(cr.body_mutation, chunks[i]!) : chunks[i]!);
    }
    up.end();
    return up.result(this.input.signal);
  }

  /** BUFFERED_PARTIAL: one message with what fits under the limit; the rest flows unprocessed. */
  private async partialBody(): Promise<Outcome> {
    const limit = this.bufferLimit();
    const partial = this.body.length > limit;
    const head = partial ? this.body.subarray(0, limit) : this.body;
    const rest = partial ? this.body.subarray(limit) : Buffer.alloc(0);
    this.state.send({ request_body: { body: head, end_of_stream: !partial && !this.hasTrailers } });
    const r = await this.wait('body');
    if (r instanceof LocalReply) return r;
    if (r === 'continue-without-server') return this.continueWithoutServer();
    if (r.response !== 'request_body') return this.spurious();
    const cr = r.request_body?.response;
    const failed = this.applyCommon(cr);
    if (failed) return failed;
    const nh = cr?.body_mutation ? applyBodyMutation(cr.body_mutation, head) : head;
    this.body = Buffer.concat([nh, rest]);
    return this.toUpstream();
  }

  /** Trailers sent and answered; a LocalReply when that ends the request. */
  private async trailers(): Promise<LocalReply | undefined> {
    const t: HeaderList = Object.entries(this.input.trailers ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
    this.state.send({ request_trailers: { trailers: headersToProto(t) } });
    const r = await this.wait('trailers');
    if (r instanceof LocalReply) return r;
    if (r === 'continue-without-server') return undefined;
    if (r.response !== 'request_trailers') {
      const s = await this.spurious();
      return s instanceof LocalReply ? s : undefined;
    }
    return undefined;
  }

  private async toUpstream(): Promise<Outcome> {
    // Nothing more is expected from the server (response path is SKIP/NONE here); the stream stays
    // open until the request ends (BUFFERED streams close at encodeHeaders/onDestroy).
    const up = this.envoy.startUpstream(this.route, this.headers, this.record, false);
    if (up instanceof LocalReply) return up;
    this.upstream = up;
    up.write(this.body);
    up.end();
    return up.result(this.input.signal);
  }

  private async continueWithoutServer(): Promise<Outcome> {
    this.state.processingComplete = true;
    this.closeStream();
    return this.toUpstream();
  }

  /** Out-of-order/unknown message: status_on_error (fail-closed, 1.35+) or ignore the server. */
  private async spurious(): Promise<Outcome> {
    this.envoy.stats.spuriousMessages++;
    this.state.processingComplete = true;
    this.closeStream();
    if (this.filter.failureModeAllow) {
      this.envoy.stats.failureModeAllowed++;
      if (this.upstream) return this.upstream.result(this.input.signal);
      return this.toUpstream();
    }
    this.upstream?.abort();
    return new LocalReply(this.filter.statusOnError, Buffer.alloc(0), 'spurious_message');
  }

  /** The CommonResponse's header mutation; a LocalReply (500) when it is invalid. */
  private applyCommon(cr: CommonResponse__Output | undefined | null): LocalReply | undefined {
    if (!cr?.header_mutation) return undefined;
    const err = applyHeaderMutation(cr.header_mutation, this.headers, cr.status === 'CONTINUE_AND_REPLACE', this.envoy.stats);
    if (!err) return undefined;
    this.state.processingComplete = true;
    return new LocalReply(500, Buffer.alloc(0), err.replace(/ /g, '_'));
  }

  /** Filter::sendImmediateResponse. */
  private immediate(m: ProcessingResponse__Output): LocalReply {
    const ir = m.immediate_response!;
    let status = this.envoy.statusNumber(ir.status?.code);
    if (!(status >= 200)) status = 200; // MutationUtils::isValidHttpStatus
    const headers: HeaderList = [];
    if (ir.headers) applyHeaderMutation(ir.headers, headers, false, this.envoy.stats); // errors only logged
    return new LocalReply(status, ir.body ?? Buffer.alloc(0), (ir.details ?? '').replace(/\s/g, '_'), headers);
  }
}
