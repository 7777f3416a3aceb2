/**
 * A tiny authoritative DNS server on 127.0.0.1 (UDP) for tests: answers A queries from a table,
 * optionally after a delay, and NXDOMAIN otherwise; AAAA queries get an empty answer. Enough of
 * RFC 1035 for c-ares; nothing else is implemented.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export interface DnsRecord {
  a: string;
  delayMs?: number;
}

export class DnsServer {
  readonly queries: string[] = [];

  private constructor(
    private readonly socket: Socket,
    private readonly records: Map<string, DnsRecord>,
  ) {}

  static async start(records: Record<string, DnsRecord>): Promise<DnsServer> {
    const socket = createSocket('udp4');
    const server = new DnsServer(socket, new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v])));
    socket.on('message', (msg, rinfo) => server.answer(msg, rinfo.port, rinfo.address));
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
    return server;
  }

  get address(): string {
    return `127.0.0.1:${(this.socket.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((r) => this.socket.close(() => r()));
  }

  private answer(msg: Buffer, port: number, host: string): void {
    if (msg.length < 17) return;
    const labels: string[] = [];
    let i = 12;
    while (i < msg.length && msg[i] !== 0) {
      const len = msg[i]!;
      labels.push(msg.subarray(i + 1, i + 1 + len).toString('latin1'));
      i += len + 1;
    }
    const questionEnd = i + 5; // zero byte, QTYPE, QCLASS
    const qtype = msg.readUInt16BE(i + 1);
    const name = labels.join('.').toLowerCase();
    this.queries.push(name);
    const record = this.records.get(name);
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2); // id
    const withAnswer = record !== undefined && qtype === 1;
    header.writeUInt16BE(record ? 0x8180 : 0x8183, 2); // response, RD+RA; rcode 0 or NXDOMAIN
    header.writeUInt16BE(1, 4); // one question
    header.writeUInt16BE(withAnswer ? 1 : 0, 6);
    const parts = [header, msg.subarray(12, questionEnd)];
    if (withAnswer) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(5, 6); // TTL
      rr.writeUInt16BE(4, 10);
      record.a.split('.').forEach((o, k) => rr.writeUInt8(Number(o), 12 + k));
      parts.push(rr);
    }
    const reply = Buffer.concat(parts);
    setTimeout(() => this.socket.send(reply, port, host), record?.delayMs ?? 0);
  }
}
