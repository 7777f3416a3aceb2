import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export type FaultMode =
  /** Forward bytes as they come. */
  | 'pass'
  /** Accept connections and read, but forward nothing either way (a silent network). */
  | 'blackhole'
  /** Reset every connection (RST), new and existing. */
  | 'reset'
  /** Close every connection cleanly (FIN), new and existing. */
  | 'close';

/**
 * A small TCP proxy to put between the sidecar and a dependency (Redis, the upstream, a webhook
 * receiver) and break the link on purpose: latency, blackhole, reset or close.
 */
export class FaultProxy {
  private mode: FaultMode = 'pass';
  private latencyMs = 0;
  private readonly pairs = new Set<[Socket, Socket]>();

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host?: string; port: number }): Promise<FaultProxy> {
    const server = createServer();
    const proxy = new FaultProxy(server, { host: target.host ?? '127.0.0.1', port: target.port });
    server.on('connection', (client) => proxy.onConnection(client));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Changes the fault; reset and close also act on connections already open. */
  setMode(mode: FaultMode): void {
    this.mode = mode;
    if (mode === 'reset' || mode === 'close') {
      for (const [a, b] of this.pairs) this.end(a, b);
    }
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  async close(): Promise<void> {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private end(a: Socket, b: Socket): void {
    if (this.mode === 'reset') {
      a.resetAndDestroy();
      b.resetAndDestroy();
    } else {
      a.end();
      b.end();
    }
  }

  private onConnection(client: Socket): void {
    client.on('error', () => undefined);
    if (this.mode === 'reset') return void client.resetAndDestroy();
    if (this.mode === 'close') return void client.end();
    const upstream = connect(this.target.port, this.target.host);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    const forget = () => this.pairs.delete(pair);
    client.on('close', () => {
      forget();
      upstream.destroy();
    });
    upstream.on('close', () => {
      forget();
      client.destroy();
    });
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  private pipe(from: Socket, to: Socket): void {
    // Bytes keep their order when the latency changes mid-stream (as on a real link): chunks wait
    // in one queue per direction, and none is written before one that arrived earlier.
    const queue: Array<{ at: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const pump = () => {
      timer = undefined;
      while (queue.length > 0 && queue[0]!.at <= Date.now()) {
        const { chunk } = queue.shift()!;
        if (!to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - Date.now());
    };
    from.on('data', (chunk: Buffer) => {
      if (this.mode === 'blackhole') return; // swallowed: the peer sees nothing, not even an error
      const last = queue.length > 0 ? queue[queue.length - 1]!.at : 0;
      queue.push({ at: Math.max(Date.now() + this.latencyMs, last), chunk });
      if (timer === undefined) pump();
    });
  }
}
