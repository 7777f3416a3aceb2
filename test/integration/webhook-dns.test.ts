/**
 * Webhook host names are resolved without libuv's threadpool: a dozen slow-resolving webhook
 * hosts must not hold up the process's other threadpool work (getaddrinfo for a DISPATCH_URL
 * host name, file reads). Before the fix every webhook lookup was a dns.lookup (getaddrinfo on
 * the 4-thread pool): twelve slow hosts made other tenants' dispatches time out connecting.
 */
import { promises as dns } from 'node:dns';
import { createDnsResolver } from '../../src/webhooks/guard';
import { DnsServer } from '../support/dns-server';

let server: DnsServer;

beforeAll(async () => {
  const records: Record<string, { a: string; delayMs?: number }> = { 'fast.test': { a: '203.0.113.7' } };
  for (let i = 0; i < 12; i++) records[`slow${i}.test`] = { a: '203.0.113.8', delayMs: 1500 };
  server = await DnsServer.start(records);
});
afterAll(() => server?.close());

describe('webhook DNS resolution', () => {
  it('resolves A records through the configured servers, and fails an unknown name', async () => {
    const resolve = createDnsResolver({ servers: [server.address] });
    expect(await resolve('fast.test')).toEqual([{ address: '203.0.113.7', family: 4 }]);
    await expect(resolve('missing.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    expect(await resolve('localhost')).toEqual([
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]);
  });

  it('twelve slow webhook hosts leave the threadpool free: getaddrinfo for another name answers first', async () => {
    const resolve = createDnsResolver({ servers: [server.address], timeoutMs: 3000 });
    const order: string[] = [];
    const slow = Array.from({ length: 12 }, (_, i) => resolve(`slow${i}.test`).then(() => order.push('slow')));
    // What a dispatch to DISPATCH_URL=http://localhost:… does: getaddrinfo on the threadpool.
    const other = dns.lookup('localhost').then(() => order.push('dispatch lookup'));
    await Promise.all([...slow, other]);
    expect(order[0]).toBe('dispatch lookup');
    expect(order.filter((o) => o === 'slow')).toHaveLength(12);
  });

  it('bounds lookups in flight: the rest wait their turn', async () => {
    const resolve = createDnsResolver({ servers: [server.address], maxConcurrent: 2, timeoutMs: 3000 });
    const before = server.queries.length;
    const all = Array.from({ length: 4 }, (_, i) => resolve(`slow${i}.test`));
    await new Promise((r) => setTimeout(r, 500));
    // Two lookups (A and AAAA each) have reached the server; the other two wait.
    expect(server.queries.length - before).toBe(4);
    await Promise.all(all);
    expect(server.queries.length - before).toBe(8);
  });
});
