import { isIP } from 'node:net';

/**
 * Outbound address policy for webhooks (docs/CONTRACT.md §4 "Outbound safety").
 *
 * An address is *blocked* when it is not an ordinary, globally reachable unicast address:
 * loopback, RFC 1918, link-local, CGNAT, unique-local, multicast, unspecified, broadcast,
 * reserved, benchmarking and documentation ranges, the cloud metadata endpoints, and IPv6 forms
 * that embed one of those IPv4 addresses (IPv4-mapped, NAT64, 6to4). Deprecated or special IPv6
 * forms whose routing is unclear (IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96,
 * local-use NAT64 64:ff9b:1::/48, Teredo and the rest of 2001::/23) are blocked outright, and
 * every IPv6 address outside the global unicast block 2000::/3 is blocked.
 */

type V4Range = readonly [base: number, prefix: number, label: string];

function v4(text: string): number {
  const n = parseIPv4(text);
  if (n === null) throw new Error(`bad IPv4 constant ${text}`);
  return n;
}

/** A range constant's base address and prefix length ("10.0.0.0/8"); a typo throws at module load. */
function splitCidr(cidr: string, bits: 32 | 128): [base: string, prefix: number] {
  const m = /^([^/]+)\/(\d+)$/.exec(cidr);
  const base = m?.[1];
  const prefix = Number(m?.[2]);
  if (base === undefined || !(prefix <= bits)) throw new Error(`bad range constant ${cidr}`);
  return [base, prefix];
}

function r4(cidr: string, label: string): V4Range {
  const [base, prefix] = splitCidr(cidr, 32);
  return [v4(base), prefix, label];
}

/** IPv4 ranges that webhooks never reach unless allowed (IANA special-purpose registry and more). */
const BLOCKED_V4: readonly V4Range[] = [
  r4('0.0.0.0/8', 'unspecified / "this network"'),
  r4('10.0.0.0/8', 'private (RFC 1918)'),
  r4('100.64.0.0/10', 'shared address space / CGNAT (incl. Alibaba metadata 100.100.100.200)'),
  r4('127.0.0.0/8', 'loopback'),
  r4('169.254.0.0/16', 'link-local (incl. cloud metadata 169.254.169.254)'),
  r4('172.16.0.0/12', 'private (RFC 1918)'),
  r4('192.0.0.0/24', 'IETF protocol assignments (incl. Oracle metadata 192.0.0.192)'),
  r4('192.0.2.0/24', 'documentation (TEST-NET-1)'),
  r4('192.88.99.0/24', '6to4 relay anycast (deprecated)'),
  r4('192.168.0.0/16', 'private (RFC 1918)'),
  r4('198.18.0.0/15', 'benchmarking'),
  r4('198.51.100.0/24', 'documentation (TEST-NET-2)'),
  r4('203.0.113.0/24', 'documentation (TEST-NET-3)'),
  r4('224.0.0.0/4', 'multicast'),
  r4('240.0.0.0/4', 'reserved (incl. broadcast 255.255.255.255)'),
  // Public addresses that are metadata / host services inside a cloud.
  r4('168.63.129.16/32', 'Azure WireServer (host metadata)'),
];

function inV4(ip: number, [base, prefix]: V4Range): boolean {
  if (prefix === 0) return true;
  const mask = prefix === 32 ? 0xffffffff : (~0 << (32 - prefix)) >>> 0;
  return (ip & mask) >>> 0 === (base & mask) >>> 0;
}

/** Strict dotted-quad IPv4 to an unsigned 32-bit number, or null. */
export function parseIPv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null; // no leading zeros: "010" is octal to some parsers
    const octet = Number(p);
    if (octet > 255) return null;
    n = n * 256 + octet;
  }
  return n;
}

/** An IPv6 address as its eight 16-bit words, most significant first. */
export type IPv6Words = [number, number, number, number, number, number, number, number];

function isEightWords(words: number[]): words is IPv6Words {
  return words.length === 8;
}

/** IPv6 (with optional dotted IPv4 tail and zone id) to eight 16-bit words, or null. */
export function parseIPv6(text: string): IPv6Words | null {
  let s = text;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (isIP(s) !== 6) return null;
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    const n = parseIPv4(last);
    if (n === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const words = (half: string): number[] => (half === '' ? [] : half.split(':').map((h) => parseInt(h, 16)));
  let all: number[];
  const dbl = s.indexOf('::');
  if (dbl >= 0) {
    const left = words(s.slice(0, dbl));
    const right = words(s.slice(dbl + 2));
    const fill = 8 - left.length - right.length;
    if (fill < 0) return null;
    all = [...left, ...new Array<number>(fill).fill(0), ...right];
  } else {
    all = words(s);
  }
  if (!isEightWords(all) || all.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffff)) return null;
  return all;
}

function wordsToV4(hi: number, lo: number): number {
  return hi * 65536 + lo;
}

function v4ToString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * The IPv4 address an IPv6 address stands for when a connection to it would reach that IPv4
 * host (IPv4-mapped ::ffff:a.b.c.d, well-known NAT64 64:ff9b::a.b.c.d, 6to4 2002:AABB:CCDD::),
 * or null.
 */
export function embeddedIPv4(w: Readonly<IPv6Words>): number | null {
  const zero = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && w[5] === 0xffff) return wordsToV4(w[6], w[7]); // ::ffff:0:0/96
  if (w[0] === 0x64 && w[1] === 0xff9b && zero(2, 6)) return wordsToV4(w[6], w[7]); // 64:ff9b::/96
  if (w[0] === 0x2002) return wordsToV4(w[1], w[2]); // 2002::/16
  return null;
}

/** The address as one 128-bit number, so that a prefix is a shift. */
function v6ToBigInt(w: Readonly<IPv6Words>): bigint {
  return w.reduce((n, word) => (n << 16n) | BigInt(word), 0n);
}

type V6Range = readonly [base: bigint, prefix: number, label: string];

function r6(cidr: string, label: string): V6Range {
  const [base, prefix] = splitCidr(cidr, 128);
  const w = parseIPv6(base);
  if (w === null) throw new Error(`bad IPv6 constant ${cidr}`);
  return [v6ToBigInt(w), prefix, label];
}

function inV6(ip: bigint, [base, prefix]: V6Range): boolean {
  const hostBits = BigInt(128 - prefix);
  return ip >> hostBits === base >> hostBits;
}

/** Blocked ranges inside 2000::/3 (everything outside 2000::/3 is blocked anyway). */
const BLOCKED_V6_GLOBAL: readonly V6Range[] = [
  r6('2001::/23', 'IETF protocol assignments (incl. Teredo 2001::/32)'),
  r6('2001:db8::/32', 'documentation'),
  r6('3fff::/20', 'documentation (RFC 9637)'),
];
const GLOBAL_UNICAST = r6('2000::/3', 'global unicast');
/** Explicit entries, for clarity; all are outside 2000::/3 and therefore blocked anyway. */
const METADATA_V6: readonly V6Range[] = [r6('fd00:ec2::254/128', 'AWS IMDS over IPv6')];

/** Why an address is blocked (a short label), or null when it may be reached. Not an IP: "not an IP address". */
export function blockedReason(ip: string): string | null {
  const four = parseIPv4(ip);
  if (four !== null) {
    const hit = BLOCKED_V4.find((r) => inV4(four, r));
    return hit ? hit[2] : null;
  }
  const w = parseIPv6(ip);
  if (w === null) return 'not an IP address';
  const embedded = embeddedIPv4(w);
  if (embedded !== null) {
    const inner = blockedReason(v4ToString(embedded));
    return inner === null ? null : `embeds ${v4ToString(embedded)}: ${inner}`;
  }
  const n = v6ToBigInt(w);
  const meta = METADATA_V6.find((r) => inV6(n, r));
  if (meta) return meta[2];
  if (!inV6(n, GLOBAL_UNICAST)) {
    if (w.every((x) => x === 0)) return 'unspecified';
    if (w.slice(0, 7).every((x) => x === 0) && w[7] === 1) return 'loopback';
    if ((w[0] & 0xffc0) === 0xfe80) return 'link-local';
    if ((w[0] & 0xfe00) === 0xfc00) return 'unique-local';
    if ((w[0] & 0xff00) === 0xff00) return 'multicast';
    return 'not global unicast (outside 2000::/3)';
  }
  const hit = BLOCKED_V6_GLOBAL.find((r) => inV6(n, r));
  return hit ? hit[2] : null;
}

/** Cloud metadata / instance-credential endpoints: refused even with allowPrivateNetworks. */
const METADATA_ADDRESSES: ReadonlyMap<string, string> = new Map([
  ['169.254.169.254', 'cloud metadata (AWS, GCP, Azure, DigitalOcean, ...)'],
  ['169.254.170.2', 'AWS ECS task metadata / credentials'],
  ['169.254.170.23', 'AWS EKS Pod Identity agent'],
  ['169.254.0.23', 'Tencent Cloud metadata'],
  ['100.100.100.200', 'Alibaba Cloud metadata'],
  ['192.0.0.192', 'Oracle Cloud metadata'],
  ['168.63.129.16', 'Azure WireServer'],
  ['fd00:ec2::254', 'AWS IMDS over IPv6'],
  ['fd00:ec2::23', 'AWS EKS Pod Identity agent over IPv6'],
]);

/**
 * Why `ip` is a cloud metadata endpoint (also in IPv4-mapped, NAT64 or 6to4 form), or null.
 * These stay refused when `allowPrivateNetworks` is on; only an explicit `allowedHosts` entry opens them.
 */
export function metadataReason(ip: string): string | null {
  const four = parseIPv4(ip);
  if (four !== null) return METADATA_ADDRESSES.get(v4ToString(four)) ?? null;
  const w = parseIPv6(ip);
  if (w === null) return null;
  const embedded = embeddedIPv4(w);
  if (embedded !== null) return METADATA_ADDRESSES.get(v4ToString(embedded)) ?? null;
  return METADATA_ADDRESSES.get(canonicalIp(ip) ?? '') ?? null;
}

/**
 * True when a webhook must not connect to `ip` (unless the network policy allows it).
 * Accepts IPv4 dotted quads and IPv6 (optionally in brackets, with a zone id). Anything that is
 * not an IP address is blocked (fail closed).
 */
export function isBlockedAddress(ip: string): boolean {
  return blockedReason(ip) !== null;
}

/** The canonical text of an IP literal (IPv6 without brackets, lower-case, compressed), or null. */
export function canonicalIp(text: string): string | null {
  if (parseIPv4(text) !== null) return text;
  const w = parseIPv6(text);
  if (w === null) return null;
  return new URL(`http://[${w.map((x) => x.toString(16)).join(':')}]/`).hostname.slice(1, -1);
}
