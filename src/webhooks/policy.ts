import { blockedReason, canonicalIp, metadataReason } from './address';

/**
 * Where webhooks may go. By default only to public addresses; `allowPrivateNetworks` turns the
 * guard off; `allowedHosts` opens it for some hosts only.
 *
 * `allowedHosts` entries (case-insensitive, a trailing dot ignored):
 * - an exact host name (`hooks.internal`, `localhost`): that name only, not its subdomains;
 * - a suffix wildcard `*.example.com`: any subdomain of example.com (`a.example.com`,
 *   `a.b.example.com`), not `example.com` itself;
 * - an IP literal (`10.0.0.5`, `::1` or `[::1]`): a URL naming that address literally.
 * A listed host may resolve to any address, blocked ranges included. The entry is matched
 * against the URL's host, never against what a name resolves to.
 *
 * Cloud metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192, ...)
 * stay refused under `allowPrivateNetworks`; only an `allowedHosts` entry opens them.
 */
export interface NetworkPolicy {
  allowPrivateNetworks: boolean;
  allowedHosts: string[];
}

export type UrlCheck = { ok: true; url: URL } | { ok: false; code: 'invalid_webhook_endpoint' | 'webhook_endpoint_not_allowed'; message: string };

/** Longest webhook URL accepted, in characters. */
export const MAX_WEBHOOK_URL_LENGTH = 4096;

function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return canonicalIp(h) ?? h;
}

/** True when `hostname` (a URL host) matches an `allowedHosts` entry. */
export function isHostListed(hostname: string, allowedHosts: readonly string[]): boolean {
  const host = normalizeHost(hostname);
  for (const raw of allowedHosts) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry.startsWith('*.')) {
      const suffix = normalizeHost(entry.slice(2));
      if (suffix !== '' && host.endsWith(`.${suffix}`)) return true;
      continue;
    }
    if (normalizeHost(entry) === host) return true;
  }
  return false;
}

/** True when the policy lets this URL host reach internal addresses (metadata endpoints aside, see addressRefusal). */
export function isHostAllowed(hostname: string, policy: NetworkPolicy): boolean {
  return policy.allowPrivateNetworks || isHostListed(hostname, policy.allowedHosts);
}

/**
 * Why a connection from a URL with host `hostname` to address `ip` is refused, or null:
 * - host in `allowedHosts`: never refused;
 * - `allowPrivateNetworks`: only cloud metadata endpoints are refused;
 * - otherwise: every blocked range (see isBlockedAddress).
 */
export function addressRefusal(hostname: string, ip: string, policy: NetworkPolicy): string | null {
  if (isHostListed(hostname, policy.allowedHosts)) return null;
  if (policy.allowPrivateNetworks) return metadataReason(ip);
  return blockedReason(ip);
}

/**
 * Accept-time check of a webhookEndpoint (docs/CONTRACT.md §2): an absolute http(s) URL with a host and no
 * credentials; a literal IP in a blocked range is refused unless the policy allows it. Host names
 * are not resolved here; that happens, and is enforced, at every delivery.
 */
export function validateWebhookUrl(raw: string, policy: NetworkPolicy): UrlCheck {
  const bad = (message: string): UrlCheck => ({ ok: false, code: 'invalid_webhook_endpoint', message });
  if (typeof raw !== 'string' || raw.trim() === '') return bad('webhookEndpoint is empty.');
  if (raw.length > MAX_WEBHOOK_URL_LENGTH) return bad(`webhookEndpoint is longer than ${MAX_WEBHOOK_URL_LENGTH} characters.`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return bad('webhookEndpoint must be an absolute http or https URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return bad('webhookEndpoint must be an absolute http or https URL.');
  if (url.username !== '' || url.password !== '') return bad('webhookEndpoint must not contain credentials.');
  if (url.hostname === '') return bad('webhookEndpoint must name a host.');
  const ip = canonicalIp(url.hostname);
  if (ip !== null) {
    const reason = addressRefusal(url.hostname, ip, policy);
    if (reason !== null) {
      return {
        ok: false,
        code: 'webhook_endpoint_not_allowed',
        message: `webhookEndpoint names an address that webhooks may not reach (${reason}).`,
      };
    }
  }
  return { ok: true, url };
}
