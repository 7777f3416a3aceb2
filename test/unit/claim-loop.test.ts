import pino from 'pino';
import { ClaimLoop } from '../../src/work/claim-loop';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** An item whose handling ends when the test says so. */
interface Job {
  id: number;
  finish: () => void;
  done: Promise<void>;
}

function job(id: number): Job {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  return { id, finish, done };
}

/**
 * The loop over an in-memory queue: claims take from the head (after `claimDelayMs`, as a Redis
 * round trip would), handling waits for the job's finish, and everything the hooks see is recorded.
 */
class QueueLoop extends ClaimLoop<Job> {
  readonly queue: Job[] = [];
  readonly claims: number[] = [];
  readonly handled: number[] = [];
  readonly declined: number[] = [];
  readonly claimErrors: Error[] = [];
  handedBack: number[] | null = null;
  claimDelayMs = 0;
  failClaims = false;
  /** Jobs whose handler breaks its promise and rejects once its job finishes. */
  readonly rejecting = new Set<number>();
  /** What the loop logged (pino lines, parsed). */
  readonly logged: Array<{ msg: string; err?: { message: string } }> = [];
  private readonly inHand = new Set<Job>();
  private wake: (() => void) | null = null;

  constructor(concurrency: number, pollIntervalMs = 10_000) {
    super({
      concurrency,
      pollIntervalMs,
      wakeUps: [
        (wake) => {
          this.wake = wake;
          return () => (this.wake = null);
        },
      ],
      logger: pino({ level: 'error' }, { write: (line: string) => void this.logged.push(JSON.parse(line)) }),
    });
  }

  push(...jobs: Job[]): void {
    this.queue.push(...jobs);
  }

  /** A pub/sub message: work may be waiting. */
  signal(): boolean {
    this.wake?.();
    return this.wake !== null;
  }

  handOver(j: Job): void {
    this.begin(j);
  }

  get inHandIds(): number[] {
    return [...this.inHand].map((j) => j.id);
  }

  protected async claim(max: number): Promise<number> {
    this.claims.push(max);
    if (this.claimDelayMs > 0) await sleep(this.claimDelayMs);
    if (this.failClaims) throw new Error('store away');
    const taken = this.queue.splice(0, max);
    for (const j of taken) this.begin(j);
    return taken.length;
  }

  protected async handle(j: Job): Promise<void> {
    this.inHand.add(j);
    this.handled.push(j.id);
    await j.done;
    this.inHand.delete(j);
    if (this.rejecting.has(j.id)) throw new Error(`handler of ${j.id} broke`);
  }

  protected claimFailed(err: Error): void {
    this.claimErrors.push(err);
  }

  protected decline(j: Job): void {
    this.declined.push(j.id);
  }

  protected override async handBack(): Promise<void> {
    this.handedBack = this.inHandIds;
    for (const j of [...this.inHand]) j.finish(); // aborted
    await this.settled();
  }

  get room(): boolean {
    return this.hasRoom;
  }
}

const jobs = (from: number, n: number) => Array.from({ length: n }, (_, i) => job(from + i));

describe('ClaimLoop', () => {
  let loop: QueueLoop;
  afterEach(async () => {
    for (const j of loop.queue) j.finish();
    await loop.stop(0);
  });

  it('fills to the concurrency at start, and claims again at once while claims come back full', async () => {
    loop = new QueueLoop(3);
    const all = jobs(1, 5);
    loop.push(...all);
    loop.start();
    await until(() => loop.handled.length === 3, 'three in hand');
    expect(loop.claims).toEqual([3]);
    expect(loop.room).toBe(false);
    // A finished job frees a slot: the loop claims one (full: it asks again, there is room for none).
    all[0]!.finish();
    await until(() => loop.handled.length === 4, 'a fourth');
    expect(loop.claims).toEqual([3, 1]);
    all[1]!.finish();
    all[2]!.finish();
    await until(() => loop.handled.length === 5, 'the fifth');
    expect(loop.queue).toEqual([]);
    expect(loop.inHandIds.sort()).toEqual([4, 5]);
    // Never more asked for than there was room for.
    expect(Math.max(...loop.claims)).toBe(3);
  });

  it('claims on a wake-up, and on the poll tick when no wake-up comes', async () => {
    loop = new QueueLoop(2, 40);
    loop.start();
    await until(() => loop.claims.length === 1, 'the first claim');
    loop.push(job(1));
    expect(loop.signal()).toBe(true);
    await until(() => loop.handled.length === 1, 'the woken claim');
    loop.push(job(2));
    const at = Date.now();
    await until(() => loop.handled.length === 2, 'the polled claim');
    expect(Date.now() - at).toBeLessThan(1000);
    expect(loop.claims.length).toBeGreaterThanOrEqual(3);
  });

  it('keeps one claim in flight at a time, and claims once more after it for the fills asked meanwhile', async () => {
    loop = new QueueLoop(4);
    loop.claimDelayMs = 30;
    loop.start();
    for (let i = 0; i < 5; i++) loop.signal(); // during the first claim
    await until(() => loop.claims.length === 2, 'the one claim after it');
    await sleep(80);
    expect(loop.claims).toEqual([4, 4]);
  });

  it('reports a failed claim and tries again on the next wake-up', async () => {
    loop = new QueueLoop(2);
    loop.failClaims = true;
    loop.push(job(1));
    loop.start();
    await until(() => loop.claimErrors.length === 1, 'the reported failure');
    expect(loop.claimErrors[0]!.message).toBe('store away');
    expect(loop.handled).toEqual([]);
    loop.failClaims = false;
    loop.signal();
    await until(() => loop.handled.length === 1, 'the job after the store came back');
  });

  it('handles an item handed over, and counts it against the concurrency', async () => {
    loop = new QueueLoop(1);
    loop.start();
    await until(() => loop.claims.length === 1, 'the first claim');
    const handed = job(7);
    loop.handOver(handed);
    expect(loop.handled).toEqual([7]);
    expect(loop.room).toBe(false);
    loop.push(job(8));
    loop.signal();
    await sleep(20);
    expect(loop.handled).toEqual([7]); // no room: not claimed
    handed.finish();
    await until(() => loop.handled.length === 2, 'the queued one once the slot is free');
  });

  it('reports a handler that rejects, frees its slot, and still waits for the others when stopping', async () => {
    loop = new QueueLoop(1);
    const [broken, next] = [job(1), job(2)];
    loop.rejecting.add(1);
    loop.push(broken, next);
    loop.start();
    await until(() => loop.handled.length === 1, 'the first in hand');
    broken.finish();
    await until(() => loop.handled.length === 2, 'the next one in the freed slot');
    expect(loop.logged).toEqual([
      expect.objectContaining({ msg: 'work item handler failed', err: expect.objectContaining({ message: 'handler of 1 broke' }) }),
    ]);
    setTimeout(() => next.finish(), 20);
    const started = Date.now();
    await loop.stop(5000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(15);
    expect(loop.handedBack).toBeNull();
  });

  it('stop: waits for the items in hand within the grace period, then hands back the rest', async () => {
    loop = new QueueLoop(3);
    const [quick, slow] = [job(1), job(2)];
    loop.push(quick, slow);
    loop.start();
    await until(() => loop.handled.length === 2, 'both in hand');
    setTimeout(() => quick.finish(), 20);
    const started = Date.now();
    await loop.stop(150);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(loop.handedBack).toEqual([2]);
    expect(loop.signal()).toBe(false); // unsubscribed
  });

  it('stop: does not hand back when everything ended within the grace period', async () => {
    loop = new QueueLoop(2);
    const j = job(1);
    loop.push(j);
    loop.start();
    await until(() => loop.handled.length === 1, 'in hand');
    setTimeout(() => j.finish(), 20);
    const started = Date.now();
    await loop.stop(5000);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(loop.handedBack).toBeNull();
  });

  it('declines what arrives while stopping: the answer of a claim in flight, a hand-over', async () => {
    loop = new QueueLoop(2);
    loop.claimDelayMs = 50;
    loop.push(job(1));
    loop.start(); // the claim is in flight
    const stopped = loop.stop(1000);
    loop.handOver(job(9));
    await stopped;
    await sleep(60);
    expect(loop.handled).toEqual([]);
    expect(loop.declined.sort()).toEqual([1, 9]);
    expect(loop.room).toBe(false);
  });
});
