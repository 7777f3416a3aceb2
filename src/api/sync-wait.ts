import type { HttpReply, RequestHead } from '../extproc';
import { isFinal, type RunEvents, type RunStore, type StoredResult } from '../runs';
import type { Logger, Metrics } from '../telemetry';
import { headerValues, preferName, preferTokens } from './request-parts';

/** Extra time Envoy is asked to hold the request beyond the wait, for the last read and the answer's travel. */
export const SYNC_WAIT_MARGIN_MS = 2000;

/**
 * App response headers not passed on in a synchronous answer: those that describe the hop or
 * the length (Envoy sets its own), Envoy's own, and the ones the sidecar sets.
 */
const NOT_PASSED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-type',
  'date',
  'server',
  'x-async-run-id',
  'x-async-run-status',
  'preference-applied',
]);

/**
 * The `wait` preference of an async request (RFC 7240 §4.3; Replicate's `Prefer: wait`):
 * `wait=N` seconds, capped at `maxSeconds`; a bare `wait` is the cap (as Replicate's). null when
 * there is none, or when holding is off (`maxSeconds` 0); 'invalid' when N is not delta-seconds.
 */
export function requestedWait(head: RequestHead, maxSeconds: number): number | 'invalid' | null {
  return waitPreference(preferTokens(headerValues(head.headers, 'prefer')), maxSeconds);
}

/** `requestedWait` from a request's Prefer tokens, when already split. */
export function waitPreference(preferences: readonly string[], maxSeconds: number): number | 'invalid' | null {
  if (maxSeconds <= 0) return null;
  for (const token of preferences) {
    if (preferName(token) !== 'wait') continue;
    const eq = token.indexOf('=');
    if (eq < 0) return maxSeconds;
    const value = token
      .slice(eq + 1)
      .split(';', 1)[0]!
      .trim()
      .replace(/^"|"$/g, '');
    if (!/^\d{1,10}$/.test(value)) return 'invalid';
    return Math.min(Number(value), maxSeconds);
  }
  return null;
}

export interface SyncWaitOptions {
  /** MAX_SYNC_WAIT: the longest hold, seconds (0: Prefer: wait is ignored). */
  maxSeconds: number;
  /** The largest body an ImmediateResponse carries here (the ext_proc server's message limit less room for the rest). */
  maxBodyBytes: number;
}

type Fallback = 'timeout' | 'no_response' | 'too_large' | 'truncated' | 'shutdown' | 'store_error';

/**
 * Sync if fast (README "Sync if fast"): an async request with `Prefer: wait=N` is held up to N
 * seconds; a run that ends in time with an app response is answered with that response (status,
 * content type, the app's headers, body), plus `x-async-run-id`, as the client would have had it
 * synchronously; otherwise the usual 202 comes, at the end of the wait. The run is the same either
 * way (its webhook is still sent). Woken by the run's `done` event, not by polling.
 */
export class SyncWait {
  constructor(
    private readonly store: RunStore,
    private readonly events: RunEvents,
    private readonly options: SyncWaitOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    /** Aborts when the process starts shutting down: every held request gets its 202 at once. */
    private readonly shutdown: AbortSignal,
  ) {}

  /** The hold a request's Prefer tokens ask for, in seconds (0: none), or 'invalid'. */
  seconds(preferences: readonly string[]): number | 'invalid' {
    return waitPreference(preferences, this.options.maxSeconds) ?? 0;
  }

  /** How long Envoy must hold the answer to the body message for a wait of `seconds` (0: no hold). */
  holdMs(seconds: number): number | undefined {
    return seconds > 0 ? seconds * 1000 + SYNC_WAIT_MARGIN_MS : undefined;
  }

  /**
   * The answer to an accepted run: the app's response if the run ends by `since` + `seconds`,
   * else `accepted` (its 202). `signal` aborts when the client or Envoy gave up.
   */
  async answer(accepted: HttpReply, run: { id: string; owner: string }, seconds: number, since: number, signal?: AbortSignal): Promise<HttpReply> {
    const stop = signal ? AbortSignal.any([signal, this.shutdown]) : this.shutdown;
    const waiter = this.events.whenDone(run.id, Math.max(0, since + seconds * 1000 - Date.now()), stop);
    let result: StoredResult | null;
    try {
      // Read after subscribing: an end between the two is not missed.
      result = await this.store.getResult(run.id, run.owner, this.options.maxBodyBytes);
      if (result && !isFinal(result.status) && !stop.aborted) {
        await waiter.promise;
        result = await this.store.getResult(run.id, run.owner, this.options.maxBodyBytes);
      }
    } catch (err) {
      this.logger.warn({ err, run_id: run.id }, 'could not read a held run; answering 202');
      return this.accepted(accepted, seconds, 'store_error', null);
    } finally {
      waiter.cancel();
    }
    if (!result || !isFinal(result.status)) return this.accepted(accepted, seconds, this.shutdown.aborted ? 'shutdown' : 'timeout', result);
    if (result.statusCode === 0) return this.accepted(accepted, seconds, 'no_response', result);
    if (result.truncated) return this.accepted(accepted, seconds, 'truncated', result);
    if (result.body === null) return this.accepted(accepted, seconds, 'too_large', result);
    this.metrics.syncWaits.inc({ outcome: 'result' });
    return {
      status: result.statusCode,
      headers: [
        ['content-type', result.contentType ?? 'application/octet-stream'],
        ...result.headers.filter(([k]) => !NOT_PASSED.has(k) && !k.startsWith('x-envoy-')),
        ['x-async-run-id', run.id],
        ['x-async-run-status', result.status],
        ['preference-applied', `wait=${seconds}`],
      ],
      body: result.body,
      details: 'async_run_sync_result',
    };
  }

  /** The 202, saying that the wait was honoured and, when known, where the run stands. */
  private accepted(reply: HttpReply, seconds: number, why: Fallback, result: StoredResult | null): HttpReply {
    this.metrics.syncWaits.inc({ outcome: why });
    const applied = reply.headers.some(([k, v]) => k === 'preference-applied' && v === 'respond-async') ? `respond-async, wait=${seconds}` : `wait=${seconds}`;
    const headers: Array<[string, string]> = [...reply.headers.filter(([k]) => k !== 'preference-applied'), ['preference-applied', applied]];
    if (result) headers.push(['x-async-run-status', result.status]);
    return { ...reply, headers };
  }
}
