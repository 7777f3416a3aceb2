/**
 * The security section of docs/RELIABILITY.md: each attack an outside review tried against the
 * built sidecar, and what it gets now. Every row is asserted by the regression test it names
 * (run by `npm test`), so the table is kept true by the suite, not by this text.
 */
export const SECURITY_ROWS: ReadonlyArray<[tried: string, gets: string, test: string]> = [
  [
    'direct gRPC client, `:path = @127.0.0.2:PORT/latest/meta-data/?async=true`',
    'stream ended `INVALID_ARGUMENT`; no run; the internal host is never called',
    'test/integration/extproc-trust.test.ts',
  ],
  [
    'direct gRPC client without (or with a wrong) `x-async-sidecar-token`',
    '`UNAUTHENTICATED`; no run (health checks still answer)',
    'test/integration/extproc-trust.test.ts',
  ],
  [
    'an Envoy whose config still holds the unreplaced `@EXTPROC_TOKEN@`',
    'Envoy answers 503 (`status_on_error`); no run',
    'test/integration/extproc-trust.test.ts',
  ],
  ['a stream that sends its headers and then nothing', '`DEADLINE_EXCEEDED` after `EXTPROC_STREAM_IDLE_TIMEOUT`', 'test/integration/extproc-trust.test.ts'],
  [
    'never-finished streams of 900 KiB chunks past the body budget',
    '`RESOURCE_EXHAUSTED` for the stream over budget; the budget is freed when streams end',
    'test/integration/extproc-trust.test.ts',
  ],
  [
    '30 queued runs of 10 MiB (one claim used to return every body)',
    'all 30 reach the app whole, first attempt; claims carry at most 1 MiB of bodies',
    'test/integration/large-bodies.test.ts',
  ],
  ['30 due webhooks with 10 MiB results', 'claimed within the 1 s command timeout, bodies read one by one', 'test/integration/large-bodies.test.ts'],
  [
    'a claim whose reply is lost to a timeout after Redis leased its runs',
    'the worker puts the runs it does not hold back in the queue; each runs once, on its first attempt',
    'test/integration/lost-claim.test.ts',
  ],
  ['a Redis write that times out after it happened', '503 `store_uncertain` naming the run id, which then exists', 'test/integration/large-bodies.test.ts'],
  [
    'a worker cut off from Redis longer than `LEASE_TIMEOUT` while calling a PUT',
    'it aborts the call before another worker takes the run: never two calls at once',
    'test/integration/lease-loss.test.ts',
  ],
  [
    'Redis over `maxmemory` during completion and recovery',
    'both refused whole (Lua shebang); the run stays `running` with its lease',
    'test/integration/redis-limits.test.ts',
  ],
  ["`GET /result` of another tenant's 4 MiB run", '404 as for an unknown id, without the body leaving Redis', 'test/integration/redis-limits.test.ts'],
  ['admin port with `Host: attacker.example` (DNS rebinding)', '403 `host_not_allowed` on every path', 'test/integration/admin-security.test.ts'],
  ['cross-site POST to the admin API (Origin or Sec-Fetch-Site of another site)', '403 `cross_site_request`', 'test/integration/admin-security.test.ts'],
  ['admin API on a non-loopback address without `ADMIN_TOKEN`', 'the sidecar refuses to start (exit 2)', 'test/integration/admin-security.test.ts'],
  [
    "a caller's webhook aimed at the demo's admin APIs (compose, try-it overlay)",
    "refused: only the demo receiver is allowed by name, Envoy's admin binds loopback, the sidecar's needs `ADMIN_TOKEN`",
    'test/unit/deploy-manifests.test.ts',
  ],
  [
    'twelve webhook hosts that resolve slowly',
    "resolved on c-ares: the threadpool (other tenants' DNS, file reads) is not held",
    'test/integration/webhook-dns.test.ts',
  ],
  ['a run failing against an internal address', 'the tenant sees `upstream_unreachable` with the error code only', 'test/integration/tenant-boundary.test.ts'],
  ['async request or runs API call without the owner header, with `OWNER_REQUIRED`', '401 `owner_required`', 'test/integration/tenant-boundary.test.ts'],
  ['`WEBHOOK_SECRET=whsec_A`, or three zero bytes', 'exit 2 naming the setting (24-64 bytes required)', 'test/unit/config.test.ts'],
  ['5,000 expired listing entries behind 250 live ones', 'all pruned (ZSCAN walk)', 'test/integration/run-store.test.ts'],
];

export function securitySection(): string[] {
  return [
    '<a id="security"></a>',
    '## Security: what was tried and what it gets',
    '',
    'Each attack below was reproduced by an outside review against the built sidecar; each row is asserted by the',
    'regression test named beside it (part of `npm test`). The trust boundaries behind them: [SECURITY.md](SECURITY.md).',
    '',
    '| tried | gets now | test |',
    '| --- | --- | --- |',
    ...SECURITY_ROWS.map(([t, g, f]) => `| ${t} | ${g} | \`${f}\` |`),
    '',
  ];
}
