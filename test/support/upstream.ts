import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Path with query, exactly as received. */
  url: string;
  /** Headers as received, in order, names lower-cased. */
  headers: Array<[string, string]>;
  body: Buffer;
  receivedAt: number;
}

export type UpstreamHandler = (req: RecordedRequest, res: ServerResponse) => void | Promise<void>;

/**
 * A real HTTP app on loopback, standing in for the service behind Envoy. It records every request
 * and knows whether the client closed a connection before the answer (an aborted dispatch).
 */
export class Upstream {
  readonly requests: RecordedRequest[] = [];
  /** Requests whose connection was closed by the client before the response ended. */
  readonly aborted: RecordedRequest[] = [];
  private handler: UpstreamHandler;
  private readonly waiters: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    handler: UpstreamHandler,
  ) {
    this.handler = handler;
  }

  static async start(handler: UpstreamHandler = Upstream.json(200, { ok: true })): Promise<Upstream> {
    const server = createServer();
    const upstream = new Upstream(server, handler);
    server.on('request', (req, res) => upstream.onRequest(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return upstream;
  }

  /** A handler answering `status` with a JSON body. */
  static json(status: number, value: unknown): UpstreamHandler {
    return (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
    };
  }

  /** Answers 200 with the request body and content type. */
  static echo(): UpstreamHandler {
    return (req, res) => {
      const ct = req.headers.find(([k]) => k === 'content-type')?.[1] ?? 'application/octet-stream';
      res.writeHead(200, { 'content-type': ct }).end(req.body);
    };
  }

  /** Never answers (until the client gives up). */
  static hang(): UpstreamHandler {
    return () => undefined;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  setHandler(handler: UpstreamHandler): void {
    this.handler = handler;
  }

  async waitForRequests(n: number, timeoutMs = 10_000): Promise<RecordedRequest[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.requests.length < n) {
      if (Date.now() > deadline) throw new Error(`upstream got ${this.requests.length} of ${n} requests within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
    return this.requests.slice(0, n);
  }

  async waitForAborted(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.aborted.length < n) {
      if (Date.now() > deadline) throw new Error(`upstream saw ${this.aborted.length} of ${n} aborted requests`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
      const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers, body: Buffer.concat(chunks), receivedAt: Date.now() };
      this.requests.push(recorded);
      res.on('close', () => {
        if (!res.writableFinished) this.aborted.push(recorded);
      });
      for (const w of this.waiters.splice(0)) w();
      void this.handler(recorded, res);
    });
  }
}
