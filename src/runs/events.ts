import type { Redis } from 'ioredis';

type Listener = () => void;
/** `queue`: the queue that got a run, or null when any may have (a message without a name). */
type QueuedListener = (queue: string | null) => void;

/**
 * Run events on one Redis pub/sub channel: 'queued:<queue>' wakes idle workers, 'done:<id>' wakes
 * waiting readers (?wait=N), 'cancel:<id>' tells the worker holding a run to abort it.
 * One subscriber connection per process, re-subscribed here after each reconnect: ioredis' own
 * autoResubscribe leaves its SUBSCRIBE promise unhandled, and a connection that drops again right
 * after it came back (a flapping network) rejected it, which in Node 20 ends the process.
 */
export class RunEvents {
  private readonly waiters = new Map<string, Set<Listener>>();
  private readonly queuedListeners = new Set<QueuedListener>();
  private readonly cancelListeners = new Set<(id: string) => void>();
  private started = false;

  constructor(
    private readonly subscriber: Redis,
    private readonly channel: string,
  ) {
    subscriber.on('message', (ch: string, message: string) => {
      if (ch === this.channel) this.dispatch(message);
    });
    subscriber.on('ready', () => {
      if (this.started) this.subscriber.subscribe(this.channel).catch(() => undefined); // next 'ready' tries again
    });
  }

  async start(): Promise<void> {
    this.started = true;
    await this.subscriber.subscribe(this.channel);
  }

  async stop(): Promise<void> {
    this.subscriber.disconnect();
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
   * reading the run's status so that no end can slip between the read and the wait.
   */
  whenDone(id: string, timeoutMs: number, signal?: AbortSignal): { promise: Promise<void>; cancel: () => void } {
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
    return { promise, cancel: () => cleanup() };
  }
}
