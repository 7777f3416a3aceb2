import { tagOfRunId } from './keys';
import { isCluster, type RedisClient } from './connection';

type Listener = () => void;
/** `queue`: the queue that got a run, or null when any may have (a message without a name). */
type QueuedListener = (queue: string | null) => void;

/** Where run events are published (src/runs/keys.ts), as RunStore#eventChannels names them. */
export interface EventChannels {
  /** Shard channels (SSUBSCRIBE), one per hash tag, on a Cluster; else one classic channel. */
  sharded: boolean;
  /** The channel of the events of a tag's queues and runs (the one channel when not sharded). */
  of(tag: string): string;
}

/** How long a failed (S)SUBSCRIBE waits before it is tried again. */
const RESUBSCRIBE_MS = 1000;

/**
 * Run events: 'queued:<queue>' wakes idle workers, 'done:<id>' wakes waiting readers (?wait=N),
 * 'cancel:<id>' tells the worker holding a run to abort it. Every event is a wake-up with a
 * fallback (workers poll every second, a reader reads again when its wait ends, a lease renewal
 * tells a worker it lost a cancelled run), so a message lost in a failover costs time, not a run.
 * - One Redis (also through Sentinel): one channel and one subscriber connection per process,
 *   re-subscribed here after each reconnect: ioredis' own autoResubscribe leaves its SUBSCRIBE
 *   promise unhandled, and a connection that drops again right after it came back (a flapping
 *   network) rejected it, which in Node 20 ends the process.
 * - A Cluster: one shard channel per hash tag (SPUBLISH from the scripts, in their own slot), so a
 *   message stays on its shard instead of being broadcast to every node over the cluster bus
 *   (README "Redis topologies"). The process listens on the tags of the queues it serves and of
 *   the runs it waits for; ioredis keeps one subscriber connection per primary and moves the
 *   subscriptions after a failover. A subscription that fails is tried again every second.
 */
export class RunEvents {
  private readonly waiters = new Map<string, Set<Listener>>();
  private readonly queuedListeners = new Set<QueuedListener>();
  private readonly cancelListeners = new Set<(id: string) => void>();
  /** Channels listened on, each with its subscription once asked for (resolves when confirmed or failed). */
  private readonly channels = new Map<string, Promise<void> | null>();
  private readonly retry = new Set<string>();
  private retryTimer: NodeJS.Timeout | null = null;
  private started = false;
  private stopped = false;

  constructor(
    private readonly subscriber: RedisClient,
    private readonly events: EventChannels,
  ) {
    const onMessage = (ch: string, message: string) => {
      if (this.channels.has(ch)) this.dispatch(message);
    };
    subscriber.on(events.sharded ? 'smessage' : 'message', onMessage);
    subscriber.on('ready', () => {
      if (!this.started || this.stopped) return;
      // One Redis: a reconnect drops every subscription. A Cluster re-subscribes by itself; there
      // 'ready' only sends the ones asked for before it was connected.
      for (const ch of this.channels.keys()) if (!this.events.sharded || this.channels.get(ch) === null || this.retry.has(ch)) this.subscribe(ch);
    });
  }

  /**
   * Listens on `channels` (RunStore#eventChannels); resolves once the subscriptions are confirmed
   * (on a Cluster not connected yet: at once, they go out when it is), rejects on the first
   * failure (they are retried).
   */
  async start(channels: readonly string[]): Promise<void> {
    this.started = true;
    for (const ch of channels) if (!this.channels.has(ch)) this.channels.set(ch, null);
    const pending = [...this.channels.keys()].map((ch) => this.subscribe(ch, true));
    await Promise.all(pending);
  }

  /** Also listens on the events of tag `tag` (a queue learnt later, or the run a reader waits for). */
  watchTag(tag: string): Promise<void> {
    const ch = this.events.of(tag);
    const known = this.channels.get(ch);
    if (known) return known;
    this.channels.set(ch, null);
    return this.started ? this.subscribe(ch) : Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.subscriber.disconnect();
  }

  /** Subscribes `ch`; the promise resolves when Redis confirmed or the attempt failed (then it is retried), or rejects with `raise`. */
  private subscribe(ch: string, raise = false): Promise<void> {
    if (isCluster(this.subscriber) && this.subscriber.status !== 'ready') {
      this.channels.set(ch, null); // sent on 'ready'
      return Promise.resolve();
    }
    let attempt: Promise<unknown>;
    try {
      attempt = this.events.sharded ? this.subscriber.ssubscribe(ch) : this.subscriber.subscribe(ch);
    } catch (err) {
      attempt = Promise.reject(err as Error);
    }
    const done = attempt.then(
      () => {
        this.retry.delete(ch);
      },
      (err: Error) => {
        this.retry.add(ch);
        this.scheduleRetry();
        if (raise) throw err;
      },
    );
    this.channels.set(
      ch,
      done.catch(() => undefined),
    );
    return done;
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.stopped) return;
      // One Redis re-subscribes on 'ready'; a Cluster needs asking again.
      if (this.events.sharded || this.subscriber.status === 'ready') for (const ch of [...this.retry]) this.subscribe(ch);
    }, RESUBSCRIBE_MS);
    this.retryTimer.unref();
  }

  private dispatch(message: string): void {
    const colon = message.indexOf(':');
    const kind = colon < 0 ? message : message.slice(0, colon);
    const id = colon < 0 ? '' : message.slice(colon + 1);
    if (kind === 'queued') {
      for (const l of this.queuedListeners) l(colon < 0 ? null : id);
    } else if (kind === 'done') {
      const set = this.waiters.get(id);
      if (set) for (const l of [...set]) l();
    } else if (kind === 'cancel') {
      for (const l of this.cancelListeners) l(id);
    }
  }

  onQueued(listener: QueuedListener): () => void {
    this.queuedListeners.add(listener);
    return () => this.queuedListeners.delete(listener);
  }

  onCancel(listener: (id: string) => void): () => void {
    this.cancelListeners.add(listener);
    return () => this.cancelListeners.delete(listener);
  }

  /**
   * Resolves when run `id` ends, or after timeoutMs, or when the signal aborts. Register before
   * reading the run's status so that no end can slip between the read and the wait; `listening`
   * resolves once this process hears the run's channel (at once unless it is a tag it did not
   * listen on yet), so read after it.
   */
  whenDone(id: string, timeoutMs: number, signal?: AbortSignal): { promise: Promise<void>; listening: Promise<void>; cancel: () => void } {
    const tag = tagOfRunId(id);
    const listening = tag === null || !this.events.sharded ? Promise.resolve() : this.watchTag(tag).catch(() => undefined);
    let cleanup = () => {};
    const promise = new Promise<void>((resolve) => {
      const done = () => {
        cleanup();
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      let set = this.waiters.get(id);
      if (!set) this.waiters.set(id, (set = new Set()));
      set.add(done);
      signal?.addEventListener('abort', done, { once: true });
      cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        const s = this.waiters.get(id);
        s?.delete(done);
        if (s && s.size === 0) this.waiters.delete(id);
      };
    });
    return { promise, listening, cancel: () => cleanup() };
  }
}
