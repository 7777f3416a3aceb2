/** Durability cost: accept throughput (h2load, no body) with Redis `--appendonly yes` under each fsync policy; a fresh Redis and sidecar per policy. */
import { startRedis, type BenchEnv, type Scenario } from '../env';
import { acceptRun, h2Seconds, h2loadVersion } from '../load';

export interface DurabilityRow {
  fsync: 'everysec' | 'always';
  runsPerSec: number;
  stored: number;
  cpuUsPerRun: number;
  meanMs: number;
}

export interface DurabilityResults {
  seconds: number;
  rows: DurabilityRow[];
}

export const durability: Scenario<DurabilityResults> = {
  uses: [],
  optional: true,
  async run(env: BenchEnv): Promise<DurabilityResults> {
    h2loadVersion();
    const rows: DurabilityRow[] = [];
    for (const fsync of ['everysec', 'always'] as const) {
      if (env.overBudget()) break;
      env.log(`durability (${fsync})`);
      rows.push(await measure(env, fsync));
    }
    return { seconds: h2Seconds(env), rows };
  },
};

async function measure(env: BenchEnv, fsync: DurabilityRow['fsync']): Promise<DurabilityRow> {
  const redis = await startRedis(['--save', '', '--appendonly', 'yes', '--appendfsync', fsync]);
  try {
    const sidecar = await env.startSidecar('extproc', redis.server.url, {});
    try {
      const r = await acceptRun(env, 'sidecar', sidecar.grpcPort, sidecar.child.pid, 'nobody', { client: redis.client, pid: redis.server.pid });
      return { fsync, runsPerSec: r.reqPerSec, stored: r.stored ?? 0, cpuUsPerRun: r.cpuUsPerRun, meanMs: r.meanMs };
    } finally {
      await sidecar.child.stop('SIGTERM', 5000);
    }
  } finally {
    redis.client.disconnect();
    await redis.server.destroy();
  }
}
