/** An HTTP request's head as Envoy describes it in request_headers. */
export interface RequestHead {
  method: string;
  /** `:path`, query string included. */
  path: string;
  authority: string;
  scheme: string;
  /** Regular headers in arrival order, lower-case names (pseudo-headers removed). */
  headers: Array<[string, string]>;
  /** True when the request has no body. */
  endOfStream: boolean;
}

/** A complete HTTP answer, sent to the client as an Envoy ImmediateResponse. */
export interface HttpReply {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer | string;
  /** Becomes %RESPONSE_CODE_DETAILS% in Envoy's access log. */
  details?: string;
}

/** What to do with a request, decided from its headers alone. */
export type HeadDecision =
  /** Not ours: let Envoy continue to the route's upstream, and ask for no further messages. */
  | { kind: 'pass' }
  /**
   * Answer now (or once `reply` settles). `holdMs` asks Envoy to wait that long for it. The
   * signal aborts when Envoy closes the stream first (client gone, timeout).
   */
  | { kind: 'reply'; reply: (signal: AbortSignal) => Promise<HttpReply>; holdMs?: number; decision: string }
  /**
   * Needs the whole body first (up to maxBytes, else 413), then answers. `holdMs` asks Envoy to
   * wait that long for the answer once the body is in; the signal (made only then) aborts when
   * Envoy closes the stream first.
   */
  | {
      kind: 'body';
      maxBytes: number;
      tooLarge: () => HttpReply;
      onBody: (body: Buffer, signal?: AbortSignal) => Promise<HttpReply>;
      holdMs?: number;
      decision: string;
    };

/** Reads one value of the stream's gRPC metadata (what Envoy's `initial_metadata` and tracer add). */
export type StreamMetadata = (name: string) => string | undefined;

/** The application behind the protocol: the only thing extproc/ knows about the rest. */
export interface ExtProcHandler {
  onRequestHeaders(head: RequestHead, metadata: StreamMetadata): HeadDecision;
}
