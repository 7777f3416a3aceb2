import type { ProcessingRequest__Output } from '../generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../generated/envoy/service/ext_proc/v3/ProcessingResponse';
import {
  CONTINUE_AND_STOP,
  CONTINUE_WITH_BUFFERED_BODY,
  MalformedHeaders,
  STREAMED_CHUNK_TAKEN,
  continueResponse,
  immediateResponse,
  overrideMessageTimeout,
  toRequestHead,
} from './messages';
import type { ExtProcHandler, HttpReply, StreamMetadata } from './types';

/** Why a stream was ended with a gRPC error; also the metric label. */
export type ProtocolErrorReason = 'unexpected_message' | 'malformed_headers' | 'handler_error' | 'idle_timeout' | 'buffer_budget';

export interface StreamCallbacks {
  send(response: ProcessingResponse): void;
  /** End the stream with a gRPC error (Envoy answers status_on_error, 500 by default). */
  fail(reason: ProtocolErrorReason, message: string): void;
  /** The request was decided; `decision` labels the stream-duration metric. */
  decided(decision: string): void;
  /** Takes `bytes` from the process-wide body budget; false when it has no room (nothing taken). */
  reserve(bytes: number): boolean;
  /** Gives back what `reserve` took. */
  release(bytes: number): void;
  /** The stream's gRPC metadata, for the handler. */
  metadata: StreamMetadata;
}

type State =
  | { name: 'headers' }
  | {
      name: 'body';
      chunks: Buffer[];
      size: number;
      maxBytes: number;
      tooLarge: () => HttpReply;
      onBody: (b: Buffer, signal?: AbortSignal) => Promise<HttpReply>;
      holdMs: number | undefined;
      decision: string;
    }
  | { name: 'answering' }
  | { name: 'passed' }
  | { name: 'done' };

/**
 * One ext_proc stream = one HTTP request (Envoy never reuses streams). A state machine fed by
 * Envoy's messages, in the order Envoy's filter sends them (ext_proc.cc, processor_state.cc):
 * request_headers first; then, if we asked for it, the body (one BUFFERED message, or STREAMED
 * chunks each answered in order) and trailers; an ImmediateResponse ends the exchange.
 * Anything else is a protocol error that ends this stream only.
 */
export class StreamProcessor {
  private state: State = { name: 'headers' };
  /** Made only for replies that can wait on something (an AbortController per stream costs ~8% of accept CPU). */
  private abort: AbortController | null = null;
  private pending: Promise<void> = Promise.resolve();
  /** Body bytes taken from the budget and not yet given back. */
  private held = 0;
  /** When the last message arrived (ms, Date.now()): the server ends streams idle too long. */
  lastMessageAt = Date.now();

  constructor(
    private readonly handler: ExtProcHandler,
    private readonly cb: StreamCallbacks,
  ) {}

  /** Envoy closed the stream (normally a half-close then CANCEL): stop any waiting work. */
  close(): void {
    if (this.state.name !== 'done') this.state = { name: 'done' };
    this.abort?.abort();
    this.releaseHeld();
  }

  /** True while the next step is Envoy's (headers or body still to come): the idle deadline applies. */
  awaitingEnvoy(): boolean {
    return this.state.name === 'headers' || this.state.name === 'body';
  }

  /** Ends a stream that waited longer than the idle deadline for Envoy's next message. */
  expire(idleMs: number): void {
    if (this.awaitingEnvoy()) this.fail('idle_timeout', `no message from Envoy for ${idleMs} ms`);
  }

  onMessage(msg: ProcessingRequest__Output): void {
    this.lastMessageAt = Date.now();
    // Observability mode: Envoy ignores every response, so we send none.
    if (msg.observability_mode) return;
    const state = this.state;
    switch (msg.request) {
      case 'request_headers':
        if (state.name !== 'headers') return this.protocolError('request_headers received twice');
        return this.onHeaders(msg);
      case 'request_body':
        if (state.name === 'passed') return this.cb.send(continueResponse('request_body'));
        if (state.name !== 'body') return this.protocolError('request_body received before request_headers or after the answer');
        return this.onBodyChunk(state, msg.request_body?.body ?? Buffer.alloc(0), msg.request_body?.end_of_stream === true);
      case 'request_trailers':
        if (state.name === 'passed') return this.cb.send(continueResponse('request_trailers'));
        if (state.name !== 'body') return this.protocolError('request_trailers received out of order');
        return this.finishBody(state);
      case 'response_headers':
      case 'response_body':
      case 'response_trailers':
        // Only reachable for passed-through requests whose route processes responses.
        if (state.name === 'passed') return this.cb.send(continueResponse(msg.request));
        return this.protocolError(`${msg.request} received for a request the sidecar answered`);
      default:
        return this.protocolError('message without a known request field');
    }
  }

  private onHeaders(msg: ProcessingRequest__Output): void {
    let head;
    try {
      head = toRequestHead(msg.request_headers?.headers, msg.request_headers?.end_of_stream === true);
    } catch (err) {
      if (err instanceof MalformedHeaders) return this.fail('malformed_headers', err.message);
      throw err;
    }
    let decision;
    try {
      decision = this.handler.onRequestHeaders(head, this.cb.metadata);
    } catch (err) {
      return this.fail('handler_error', (err as Error).message);
    }
    if (decision.kind === 'pass') {
      this.state = { name: 'passed' };
      this.cb.decided('pass');
      return this.cb.send(CONTINUE_AND_STOP);
    }
    if (decision.kind === 'reply') {
      if (decision.holdMs !== undefined) this.cb.send(overrideMessageTimeout(decision.holdMs));
      const abort = (this.abort = new AbortController());
      return this.answer(() => decision.reply(abort.signal), decision.decision);
    }
    if (head.endOfStream) return this.answerBody(decision.onBody, Buffer.alloc(0), decision.holdMs, decision.decision);
    const declared = Number(head.headers.find(([k]) => k === 'content-length')?.[1] ?? NaN);
    if (declared > decision.maxBytes) return this.answer(async () => decision.tooLarge(), 'too_large');
    this.state = {
      name: 'body',
      chunks: [],
      size: 0,
      maxBytes: decision.maxBytes,
      tooLarge: decision.tooLarge,
      onBody: decision.onBody,
      holdMs: decision.holdMs,
      decision: decision.decision,
    };
    this.cb.send(CONTINUE_WITH_BUFFERED_BODY);
  }

  private onBodyChunk(state: Extract<State, { name: 'body' }>, chunk: Buffer, endOfStream: boolean): void {
    state.size += chunk.length;
    if (state.size > state.maxBytes) return this.answer(async () => state.tooLarge(), 'too_large');
    if (chunk.length > 0) {
      if (!this.cb.reserve(chunk.length)) return this.fail('buffer_budget', 'the buffered request bodies of all streams are over EXTPROC_BUFFER_BUDGET_BYTES');
      this.held += chunk.length;
      state.chunks.push(chunk);
    }
    if (endOfStream) return this.finishBody(state);
    // STREAMED (or a BUFFERED body followed by trailers): every chunk needs its own answer.
    this.cb.send(STREAMED_CHUNK_TAKEN);
  }

  private finishBody(state: Extract<State, { name: 'body' }>): void {
    const body = state.chunks.length === 1 ? state.chunks[0]! : Buffer.concat(state.chunks, state.size);
    this.answerBody(state.onBody, body, state.holdMs, state.decision);
  }

  /** The answer to a whole body; with `holdMs`, Envoy is first asked to wait that long for it (the message being answered). */
  private answerBody(onBody: (b: Buffer, signal?: AbortSignal) => Promise<HttpReply>, body: Buffer, holdMs: number | undefined, decision: string): void {
    if (holdMs === undefined) return this.answer(() => onBody(body), decision);
    this.cb.send(overrideMessageTimeout(holdMs));
    const abort = (this.abort = new AbortController());
    this.answer(() => onBody(body, abort.signal), decision);
  }

  /** Resolves once no answer is being prepared (a client that half-closed waits for it). */
  settled(): Promise<void> {
    return this.pending;
  }

  private answer(reply: () => Promise<HttpReply>, decision: string): void {
    this.state = { name: 'answering' };
    this.pending = reply().then(
      (r) => {
        this.releaseHeld(); // the body is stored (or refused) by now
        if (this.state.name === 'done') return; // Envoy gave up (message timeout, client gone)
        this.state = { name: 'done' };
        this.cb.decided(decision);
        this.cb.send(immediateResponse(r));
      },
      (err: Error) => {
        this.releaseHeld();
        this.fail('handler_error', err.message);
      },
    );
  }

  private releaseHeld(): void {
    if (this.held === 0) return;
    this.cb.release(this.held);
    this.held = 0;
  }

  private protocolError(message: string): void {
    this.fail('unexpected_message', message);
  }

  private fail(reason: ProtocolErrorReason, message: string): void {
    if (this.state.name === 'done') return;
    this.state = { name: 'done' };
    this.abort?.abort();
    this.releaseHeld();
    this.cb.fail(reason, message);
  }
}
