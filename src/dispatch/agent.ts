import type { Agent } from 'undici';

/**
 * How the dispatcher's undici Agent is built (and the long-runs bench's floor client, which must
 * match it): no cap on connections per origin (DISPATCH_CONCURRENCY bounds them), idle ones kept
 * 10 s, and undici's own header/body timeouts (300 s by default) off, since they would cut runs
 * short: the replay's grace timer is the limit (src/dispatch/replay.ts).
 */
export const DISPATCH_AGENT_OPTIONS: Agent.Options = { connections: null, keepAliveTimeout: 10_000, headersTimeout: 0, bodyTimeout: 0 };
