import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { webhookProblems } from './openapi';

/** One scripted answer: a status, or a status with headers/body, an optional delay, or never answering. */
export type ScriptedResponse = number | { status: number; headers?: Record<string, string>; body?: string | Buffer; delayMs?: number; hang?: boolean };

export interface ReceivedRequest {
  method: string;
  /** Path with query, as received. */
  url: string;
  /** Headers, names lower-cased; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Raw header pairs, in order, names lower-cased. */
  rawHeaders: Array<[string, string]>;
  body: Buffer;
  receivedAt: number;
  /** The local address the connection arrived on (which address the sender connected to). */
  localAddress: string;
  /** The client's port: the same for requests sent over one kept-alive connection. */
  remotePort: number;
  /** TLS SNI server name the client sent (https receivers only). */
  servername: string | null;
}

export interface WebhookReceiverOptions {
  /** Answers in order, one per request; once used up, every request gets 200. */
  responses?: ScriptedResponse[];
  /** Answers by what was received (before `responses`); undefined falls through to them. */
  respond?: (req: ReceivedRequest) => ScriptedResponse | undefined;
  /** Loopback address to listen on (default 127.0.0.1). */
  listenHost?: string;
  /** Port to listen on (default: any free port). */
  port?: number;
  /** Host name to put in `url` (default: the listen address). */
  urlHost?: string;
  /** Path of `url` (default /hook). */
  path?: string;
  /** Serve https with this key and certificate. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /**
   * Check every request against openapi/openapi.yaml's `webhooks` (default true); `close()` then
   * throws if one did not match. Off for receivers that get other traffic on purpose.
   */
  checkContract?: boolean;
}

/** A real HTTP(S) webhook receiver on loopback for tests; records every request. */
export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];

  /** The `i`-th request received (0 = first); throws when fewer came, so a test fails with a reason. */
  nth(i: number): ReceivedRequest {
    const req = this.requests[i];
    if (req === undefined) throw new Error(`the receiver got ${this.requests.length} requests, not ${i + 1}`);
    return req;
  }
  /** Requests that openapi/openapi.yaml's `webhooks` do not describe, with why. */
  readonly contractViolations: string[] = [];
  readonly url: string;
  readonly port: number;
  private readonly script: ScriptedResponse[];
  private readonly sockets = new Set<Socket>();
  private readonly hung = new Set<ServerResponse>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private waiters: Array<() => void> = [];
  private readonly checkContract: boolean;
  private readonly respond: WebhookReceiverOptions['respond'];

  private constructor(
    private readonly server: Server,
    opts: WebhookReceiverOptions,
  ) {
    this.script = [...(opts.responses ?? [])];
    this.checkContract = opts.checkContract ?? true;
    this.respond = opts.respond;
    this.port = (server.address() as AddressInfo).port;
    const host = opts.urlHost ?? opts.listenHost ?? '127.0.0.1';
    const hostPart = host.includes(':') ? `[${host}]` : host;
    this.url = `${opts.tls ? 'https' : 'http'}://${hostPart}:${this.port}${opts.path ?? '/hook'}`;
  }

  static async start(opts: WebhookReceiverOptions = {}): Promise<WebhookReceiver> {
    const server: Server = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }) : createHttpServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, opts.listenHost ?? '127.0.0.1', () => resolve());
    });
    const rx = new WebhookReceiver(server, opts);
    server.on('connection', (socket: Socket) => {
      rx.sockets.add(socket);
      socket.on('close', () => rx.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => rx.onRequest(req, res));
    return rx;
  }

  /** The scripted answers not yet used. */
  get remainingResponses(): number {
    return this.script.length;
  }

  /** Resolves with the first `n` requests once that many have arrived; rejects after `timeoutMs`. */
  waitForRequests(n: number, timeoutMs = 10_000): Promise<ReceivedRequest[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.requests.length < n) return false;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(this.requests.slice(0, n));
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`webhook receiver: ${this.requests.length} of ${n} requests after ${timeoutMs} ms`));
      }, timeoutMs);
      if (!check()) this.waiters.push(check);
    });
  }

  /** Stops listening and destroys every connection, hung ones included; throws if a webhook did not match the document. */
  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.contractViolations.length > 0) {
      throw new Error(`webhooks that do not match openapi/openapi.yaml:\n  ${this.contractViolations.join('\n  ')}`);
    }
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawHeaders: Array<[string, string]> = [];
      // rawHeaders alternates name and value.
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) rawHeaders.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
      const headers: Record<string, string> = {};
      for (const [k, v] of rawHeaders) headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
      const socket = req.socket as Socket & Partial<Pick<TLSSocket, 'servername'>>;
      const received: ReceivedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers,
        rawHeaders,
        body: Buffer.concat(chunks),
        receivedAt: Date.now(),
        localAddress: socket.localAddress ?? '',
        remotePort: socket.remotePort ?? 0,
        servername: typeof socket.servername === 'string' ? socket.servername : null,
      };
      this.requests.push(received);
      if (this.checkContract) {
        const problems = webhookProblems(received);
        if (problems.length > 0) this.contractViolations.push(`${received.method} ${received.url}: ${problems.join('; ')}`);
      }
      for (const w of [...this.waiters]) w();
      this.answer(res, this.respond?.(received) ?? this.script.shift() ?? 200);
    });
  }

  private answer(res: ServerResponse, r: ScriptedResponse): void {
    const spec = typeof r === 'number' ? { status: r } : r;
    if ('hang' in spec && spec.hang) {
      this.hung.add(res);
      return;
    }
    const send = () => {
      if (res.destroyed) return;
      const body = 'body' in spec && spec.body !== undefined ? spec.body : '';
      res.writeHead(spec.status, { ...('headers' in spec ? spec.headers : {}) });
      res.end(body);
    };
    const delay = 'delayMs' in spec ? (spec.delayMs ?? 0) : 0;
    if (delay > 0) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        send();
      }, delay);
      this.timers.add(t);
    } else {
      send();
    }
  }
}
