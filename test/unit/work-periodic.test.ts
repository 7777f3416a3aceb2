import { PeriodicTask } from '../../src/work/periodic';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('PeriodicTask', () => {
  it('runs every interval after start, first tick one interval later', async () => {
    const at: number[] = [];
    const started = Date.now();
    const task = new PeriodicTask(30, () => void at.push(Date.now()));
    task.start();
    await sleep(10);
    expect(at).toEqual([]);
    await sleep(150);
    task.stop();
    expect(at.length).toBeGreaterThanOrEqual(2);
    expect(at[0]! - started).toBeGreaterThanOrEqual(29);
  });

  it('runs the first tick at once with immediately', () => {
    let ticks = 0;
    const task = new PeriodicTask(1000, () => void ticks++, { immediately: true });
    task.start();
    expect(ticks).toBe(1);
    task.stop();
  });

  it('never runs a tick while the last one has not settled, and re-arms once it has', async () => {
    let running = 0;
    let most = 0;
    const ends: number[] = [];
    const starts: number[] = [];
    const task = new PeriodicTask(10, async () => {
      running++;
      most = Math.max(most, running);
      starts.push(Date.now());
      await sleep(50); // a slow Redis call: five intervals long
      running--;
      ends.push(Date.now());
    });
    task.start();
    await sleep(250);
    task.stop();
    await sleep(60);
    expect(most).toBe(1);
    expect(starts.length).toBeGreaterThanOrEqual(2);
    // Each tick starts an interval after the previous one ended.
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - ends[i - 1]!).toBeGreaterThanOrEqual(9);
  });

  it('stops: no tick after stop, not even one armed by a tick that was running', async () => {
    let ticks = 0;
    const task = new PeriodicTask(
      10,
      async () => {
        ticks++;
        await sleep(30);
      },
      { immediately: true },
    );
    task.start();
    task.stop();
    await sleep(100);
    expect(ticks).toBe(1);
  });

  it('a restart while a tick is still running arms one timer, not two', async () => {
    const starts: number[] = [];
    const task = new PeriodicTask(
      40,
      async () => {
        starts.push(Date.now());
        await sleep(20);
      },
      { immediately: true },
    );
    task.start();
    task.stop();
    task.start();
    await sleep(190);
    task.stop();
    // 0, then every 20 + 40 ms: about 4 ticks; two timers would make about twice as many.
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(starts.length).toBeLessThanOrEqual(4);
  });

  it('reports an escaping error and keeps going', async () => {
    const errors: unknown[] = [];
    let ticks = 0;
    const task = new PeriodicTask(
      10,
      () => {
        ticks++;
        throw new Error('tick broke');
      },
      { immediately: true, onError: (e) => errors.push(e) },
    );
    task.start();
    await sleep(60);
    task.stop();
    expect(ticks).toBeGreaterThanOrEqual(3);
    expect(errors.length).toBe(ticks);
    expect((errors[0] as Error).message).toBe('tick broke');
  });
});
