/**
 * Accept path: h2load sends Envoy-shaped ext_proc streams (no body, 1 KiB body) to the floor
 * (bench/floor-server.ts: the same answers, stores nothing) and to the sidecar with its Redis.
 * Each row is measured in several interleaved rounds; the server under test has a core of its
 * own, h2load and Redis the other (bench/lib.ts cpuPlan).
 */
import type { BenchEnv, Scenario } from '../env';
import { cpuPlan, median, pinProcess, roundCount } from '../lib';
import { H2_CONNS, H2_STREAMS, acceptRun, h2Seconds, h2loadVersion, type AcceptRow } from '../load';
import type { Shape } from '../messages';

export interface AcceptResults {
  seconds: number;
  connections: number;
  streams: number;
  /** Rounds per row; each row is the round with the median throughput, with every round's throughput. */
  rounds?: number;
  /** Whether the server under test had a core of its own. */
  pinned?: boolean;
  rows: Array<AcceptRow & { reqPerSecRounds?: number[] }>;
}

export const accept: Scenario<AcceptResults> = {
  uses: ['redis', 'floor', 'extproc'],
  async run(env: BenchEnv): Promise<AcceptResults> {
    h2loadVersion();
    const [redis, floor, sidecar] = [await env.redis(), await env.floor(), await env.extproc()];
    const rounds = roundCount(env.quick, 3);
    const cpus = process.env.BENCH_PIN === '0' ? null : cpuPlan();
    // h2load is the bench's child: it inherits the bench's CPUs.
    const others = [process.pid, redis.server.pid];
    const tested = [floor.child.pid, sidecar.child.pid];
    if (cpus) {
      for (const pid of others) pinProcess(pid, cpus.rest);
      for (const pid of tested) pinProcess(pid, cpus.tested);
    }
    const measured = new Map<string, AcceptRow[]>();
    const measure = async (row: Promise<AcceptRow>) => {
      const r = await row;
      const key = `${r.server}/${r.shape}`;
      measured.set(key, [...(measured.get(key) ?? []), r]);
    };
    try {
      for (let round = 0; round < rounds; round++) {
        for (const shape of ['nobody', 'body'] as Shape[]) {
          // Which server goes first alternates between rounds.
          const floorRun = () => measure(acceptRun(env, 'floor', floor.port, floor.child.pid, shape));
          const sidecarRun = () =>
            measure(acceptRun(env, 'sidecar', sidecar.grpcPort, sidecar.child.pid, shape, { client: redis.client, pid: redis.server.pid }));
          for (const run of round % 2 === 0 ? [floorRun, sidecarRun] : [sidecarRun, floorRun]) await run();
        }
      }
    } finally {
      if (cpus) for (const pid of [...others, ...tested]) pinProcess(pid, cpus.all);
    }
    const rows = [...measured.values()].map((all) => {
      const mid = median(all.map((r) => r.reqPerSec));
      // The round nearest the median (with an even count the median lies between two rounds).
      const row = all.reduce((best, r) => (Math.abs(r.reqPerSec - mid) < Math.abs(best.reqPerSec - mid) ? r : best));
      return { ...row, reqPerSecRounds: all.map((r) => r.reqPerSec) };
    });
    return { seconds: h2Seconds(env), connections: H2_CONNS, streams: H2_STREAMS, rounds, pinned: cpus !== null, rows };
  },
};
