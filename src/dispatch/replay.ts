import { EventEmitter } from 'node:events';
import { request, type Dispatcher } from 'undici';
import { parseRetryAfter } from '../http';
import type { ClaimedRun, DispatchOutcome } from '../runs';
import { withTraceHeaders, type OutgoingSpan } from '../tracing';
import { dispatchTarget, TargetOutsideOrigin, type DispatchBase } from './target';

/** Response headers that describe the hop, not the response: not kept with the result. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/**
 * How a run's call is stopped early: an EventEmitter that emits 'abort' once, which undici takes as
 * a request's `signal` (its documented alternative to an AbortSignal). Not an AbortController:
 * with undici's listener on it, one was about 1 KiB of heap per run in flight, this half of that
 * (docs/BENCHMARKS.md, "Long runs").
 */
export class CallAbort extends EventEmitter {
  aborted = false;

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.emit('abort');
  }
}

export interface ReplayCall {
  /** The run to replay: method, target, headers and grace period. */
  run: Pick<ClaimedRun, 'method' | 'target' | 'headers' | 'gracePeriodMs'>;
  /** The request body, byte for byte. */
  body: Buffer;
  /** Where runs are replayed to (the dispatch URL). */
  base: DispatchBase;
  /** The undici dispatcher (an Agent) that carries the call. */
  dispatcher: Dispatcher;
  /**
   * The run's controller: the caller aborts it to stop the call early (cancelled, shutting down,
   * lease lost; the outcome then says the call failed, and the caller, who knows why, is expected
   * to drop it), and the replay aborts it when the grace period ends. One controller per run, not
   * one each: a second one, chained by a listener, was 3-4 % of the worker's profile.
   */
  controller: CallAbort;
  /** Response bytes kept with the result; the rest is read, counted and dropped. */
  maxResultBytes: number;
  /** The replay's span (src/tracing): the request carries its traceparent. Null or absent when tracing is off. */
  span?: OutgoingSpan | null;
}

export interface Replayed {
  outcome: DispatchOutcome;
  /** The error behind an outcome without a response, for the log (it may name internal addresses). */
  cause: Error | null;
}

/**
 * Replays a run to the app and says how it ended (docs/CONTRACT.md §3): run in, outcome out. It
 * owns the one timer the call needs, the run's grace period (the call is aborted when it ends:
 * `timed_out`); it never throws, and knows nothing of Redis.
 */
export async function replay(call: ReplayCall): Promise<Replayed> {
  const { run, controller } = call;
  let graceEnded = false;
  const grace = setTimeout(() => {
    if (controller.aborted) return;
    graceEnded = true;
    controller.abort();
  }, run.gracePeriodMs);
  // The call is awaited here, in this one async function: every function suspended while the app
  // works is held for every run in flight (about 0.4 KiB each, docs/BENCHMARKS.md).
  try {
    const res = await request(dispatchTarget(call.base, run.target), {
      dispatcher: call.dispatcher,
      method: run.method as 'GET',
      // Tracing: the replay continues the run's trace (traceparent names the replay span).
      headers: flatHeaders(withTraceHeaders(run.headers, call.span ?? null)),
      body: call.body.length > 0 || !['GET', 'HEAD'].includes(run.method) ? call.body : null,
      signal: controller,
      // undici's own timeouts (300 s by default) would cut runs short, and the grace timer above is
      // the limit already: 0 turns them off whatever dispatcher carries the call (the dispatcher's
      // Agent has them off too), two timers less per call in flight.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    return { outcome: await outcomeOf(res, call.maxResultBytes), cause: null };
  } catch (err) {
    return failure(err as Error, run.gracePeriodMs, graceEnded);
  } finally {
    clearTimeout(grace);
  }
}

/** The app's answer as the run's outcome: the body read (its first `maxResultBytes` kept), hop-by-hop headers dropped. */
async function outcomeOf(res: Dispatcher.ResponseData, maxResultBytes: number): Promise<DispatchOutcome> {
  const { chunks, kept, size } = await readLimited(res.body, maxResultBytes);
  const headers: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(res.headers)) {
    if (HOP_BY_HOP.has(k) || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) headers.push([k, one]);
  }
  const contentType = res.headers['content-type'];
  const ok = res.statusCode >= 200 && res.statusCode < 300;
  const busy = res.statusCode === 429 || res.statusCode === 503;
  return {
    // 429 and 503 are the app's "not now" (README "Queues"): the worker may queue the run again.
    ...(busy
      ? { notNow: { reason: res.statusCode === 429 ? 'upstream_busy' : 'upstream_unavailable', retryAfterMs: parseRetryAfter(res.headers['retry-after']) } }
      : {}),
    status: ok ? 'succeeded' : 'failed',
    response: {
      statusCode: res.statusCode,
      contentType: (Array.isArray(contentType) ? contentType[0] : contentType) ?? null,
      headers,
      body: Buffer.concat(chunks, kept),
      size,
      truncated: size > kept,
    },
    error: ok ? null : { code: 'upstream_status', message: `The upstream answered ${res.statusCode}.` },
  };
}

/** [name, value] pairs as undici's flat header list; a loop, not Array.prototype.flat, which was the replay's costliest line. */
function flatHeaders(pairs: ReadonlyArray<[string, string]>): string[] {
  const out = new Array<string>(pairs.length * 2);
  for (let i = 0; i < pairs.length; i++) {
    out[2 * i] = pairs[i]![0];
    out[2 * i + 1] = pairs[i]![1];
  }
  return out;
}

/**
 * Reads a response body whole, keeping its first `limit` bytes: 'data' events rather than
 * `for await`, whose async iterator (a promise and a stream listener set per chunk) cost more
 * than the reading itself. Rejects as the stream errors (an aborted call) or closes early.
 */
function readLimited(body: NodeJS.ReadableStream, limit: number): Promise<{ chunks: Buffer[]; kept: number; size: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    let size = 0;
    body.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (kept >= limit) return;
      const part = kept + chunk.length > limit ? chunk.subarray(0, limit - kept) : chunk;
      chunks.push(part);
      kept += part.length;
    });
    let ended = false;
    body.once('end', () => {
      ended = true;
      resolve({ chunks, kept, size });
    });
    body.once('error', reject);
    // Destroyed without an error: as `for await` would, a premature close is a failure.
    body.once('close', () => {
      if (!ended) reject(new Error('the response body closed before its end'));
    });
  });
}

function failure(err: Error, gracePeriodMs: number, graceEnded: boolean): Replayed {
  if (graceEnded) {
    return {
      outcome: {
        status: 'timed_out',
        response: null,
        error: {
          code: 'grace_period_exceeded',
          message: `The upstream did not answer within the grace period of ${gracePeriodMs / 1000} s; the call was aborted.`,
        },
      },
      cause: null,
    };
  }
  if (err instanceof TargetOutsideOrigin) {
    // Only a run stored by a direct gRPC client before :path was checked can get here.
    return {
      outcome: {
        status: 'failed',
        response: null,
        error: { code: 'invalid_target', message: "The run's target is not an origin-form path; it was not dispatched." },
      },
      cause: null,
    };
  }
  // The tenant sees only the error code: undici's message names internal addresses
  // (`connect ECONNREFUSED 10.0.3.7:8000`); the full error goes to the log.
  const code = (err as Error & { code?: string }).code ?? '';
  return {
    outcome: {
      // A refused connection: the app is not up yet (cold, scaled to zero, restarting).
      ...(code === 'ECONNREFUSED' ? { notNow: { reason: 'upstream_unavailable' as const, retryAfterMs: null } } : {}),
      status: 'failed',
      response: null,
      error: { code: 'upstream_unreachable', message: `The upstream call failed${code ? ` (${code})` : ''}.` },
    },
    cause: err,
  };
}
