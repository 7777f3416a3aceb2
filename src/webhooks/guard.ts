import { promises as dns } from 'node:dns';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { canonicalIp } from './address';
import { addressRefusal, type NetworkPolicy } from './policy';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to all its addresses (the system resolver by default; injectable for tests). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface DnsResolverOptions {
  /** Milliseconds per query try (c-ares `timeout`); two tries. */
  timeoutMs?: number;
  /** Lookups in flight at once; more wait their turn (each attempt's own timeout still runs). */
  maxConcurrent?: number;
  /** DNS servers (`ip` or `ip:port`); default: the system's (/etc/resolv.conf). */
  servers?: string[];
}

/**
 * Resolves webhook hosts with c-ares (`dns.Resolver`: A and AAAA queries on the network), not
 * `dns.lookup`: getaddrinfo runs on libuv's threadpool (4 threads), so a dozen webhook hosts that
 * resolve slowly held every thread and other tenants' dispatches to a DISPATCH_URL host name,
 * file reads and zlib waited behind them (docs/SECURITY.md). `localhost` names are loopback
 * (RFC 6761) without a query. c-ares queries the name as given, with no search domains and no
 * hosts file, so a single-label name (`webhooks`, a compose or Kubernetes service that only an
 * operator can allow) goes through getaddrinfo as before: those resolve locally and quickly.
 */
export function createDnsResolver(options: DnsResolverOptions = {}): Resolver {
  const resolver = new dns.Resolver({ timeout: options.timeoutMs ?? 2000, tries: 2 });
  if (options.servers) resolver.setServers(options.servers);
  const max = options.maxConcurrent ?? 32;
  let active = 0;
  const waiting: Array<() => void> = [];
  const turn = async () => {
    if (active >= max) await new Promise<void>((r) => waiting.push(r));
    active++;
  };
  const done = () => {
    active--;
    waiting.shift()?.();
  };
  return async (hostname) => {
    const name = hostname.toLowerCase().replace(/\.$/, '');
    if (name === 'localhost' || name.endsWith('.localhost'))
      return [
        { address: '127.0.0.1', family: 4 },
        { address: '::1', family: 6 },
      ];
    if (isIP(name)) return [{ address: name, family: isIP(name) === 6 ? 6 : 4 }];
    if (!name.includes('.')) {
      const found = await dns.lookup(name, { all: true, verbatim: true });
      return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
    }
    await turn();
    try {
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
      const out: ResolvedAddress[] = [];
      if (v4.status === 'fulfilled') for (const a of v4.value) out.push({ address: a, family: 4 });
      if (v6.status === 'fulfilled') for (const a of v6.value) out.push({ address: a, family: 6 });
      if (out.length === 0 && v4.status === 'rejected') throw v4.reason;
      return out;
    } finally {
      done();
    }
  };
}

/** The process's webhook resolver (one c-ares channel, one concurrency bound for all deliveries). */
export const systemResolver: Resolver = createDnsResolver();

export type TargetCheck =
  | { ok: true; /** null for an IP-literal host (nothing to pin: no DNS). */ addresses: ResolvedAddress[] | null }
  | { ok: false; error: 'blocked_address' | 'dns_failure'; message: string };

/**
 * Delivery-time check (docs/CONTRACT.md §4): an IP-literal host is checked as is; a host name is resolved
 * once, and refused if ANY of its addresses is blocked (unless the policy allows the host).
 * The caller must then connect only to the returned addresses (see PinnedLookup).
 */
export async function checkDeliveryTarget(url: URL, policy: NetworkPolicy, resolve: Resolver = systemResolver): Promise<TargetCheck> {
  const literal = canonicalIp(url.hostname);
  if (literal !== null) {
    const reason = addressRefusal(url.hostname, literal, policy);
    return reason === null ? { ok: true, addresses: null } : { ok: false, error: 'blocked_address', message: `${literal}: ${reason}` };
  }
  let addresses: ResolvedAddress[];
  try {
    addresses = await resolve(url.hostname);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return { ok: false, error: 'dns_failure', message: `${url.hostname}: ${code}` };
  }
  if (addresses.length === 0) return { ok: false, error: 'dns_failure', message: `${url.hostname}: no addresses` };
  for (const a of addresses) {
    const reason = addressRefusal(url.hostname, a.address, policy);
    if (reason !== null) return { ok: false, error: 'blocked_address', message: `${url.hostname} resolves to ${a.address}: ${reason}` };
  }
  return { ok: true, addresses };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * DNS pinning. The sender's undici Agent is built with `connect: { lookup: pins.lookup }`, so
 * when undici opens a connection, Node's net/tls asks THIS function (never the resolver) for the
 * host's addresses, and gets exactly the ones `checkDeliveryTarget` checked for the attempt in
 * flight. There is no second DNS query a rebinding attacker could answer differently. The URL
 * keeps its host name, so the Host header and the TLS servername (SNI) and certificate check stay
 * the original name; only the address is fixed.
 *
 * An attempt pins its host before the request and releases it when done. Concurrent attempts to
 * one host share an entry (the latest checked list wins; every list in it was checked). A lookup
 * for a host with no pin fails (fail closed): a connection is never made to an unchecked address.
 * Pooled keep-alive connections are reused; they go to an address that was checked when opened.
 */
export class PinnedLookup {
  private readonly pins = new Map<string, { addresses: ResolvedAddress[]; refs: number }>();

  /** Pins `hostname` to checked addresses until the returned release function is called. */
  pin(hostname: string, addresses: ResolvedAddress[]): () => void {
    const key = hostname.toLowerCase();
    const entry = this.pins.get(key);
    if (entry) {
      entry.addresses = addresses;
      entry.refs++;
    } else {
      this.pins.set(key, { addresses, refs: 1 });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const e = this.pins.get(key);
      if (e && --e.refs <= 0) this.pins.delete(key);
    };
  }

  /** Number of pinned hosts (for tests). */
  get size(): number {
    return this.pins.size;
  }

  /** A `dns.lookup`-compatible function (both the `all: true` and the single-address forms). */
  readonly lookup = (hostname: string, options: LookupOptions | LookupCallback, callback?: LookupCallback): void => {
    const cb = (typeof options === 'function' ? options : callback) as LookupCallback;
    const opts: LookupOptions = typeof options === 'function' ? {} : (options ?? {});
    const entry = this.pins.get(hostname.toLowerCase());
    let list = entry?.addresses ?? [];
    if (opts.family === 4 || opts.family === 6) list = list.filter((a) => a.family === opts.family);
    const [first] = list;
    if (first === undefined) {
      const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname} (no checked address pinned)`);
      err.code = 'ENOTFOUND';
      process.nextTick(() => cb(err, opts.all ? [] : ''));
      return;
    }
    if (opts.all)
      process.nextTick(() =>
        cb(
          null,
          list.map((a) => ({ address: a.address, family: a.family })),
        ),
      );
    else process.nextTick(() => cb(null, first.address, first.family));
  };
}
