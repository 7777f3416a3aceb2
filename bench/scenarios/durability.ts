/**
 * Durability cost: accept throughput (h2load, no body) with Redis `--appendonly yes` under each
 * fsync policy, and with a replica, without and with REDIS_MIN_REPLICAS_ACK=1 (every 202 waits for
 * the replica: WAIT, README "Redis topologies"); a fresh Redis and sidecar per row.
 */
import { RedisServer } from '../../test/support/redis-server';
import { startRedis, type BenchEnv, type BenchRedis, type Scenario } from '../env';
import { acceptRun, h2Seconds, h2loadVersion } from '../load';

export interface DurabilityRow {
  /** What the row measures, as the report shows it. */
  setting: string;
  /** AOF fsync policy; absent: AOF off. */
  fsync?: 'everysec' | 'always';
  /** REDIS_MIN_REPLICAS_ACK of the sidecar, on a primary with one replica; absent: no replica. */
  minReplicasAck?: number;
  runsPerSec: number;
  stored: number;
  cpuUsPerRun: number;
  meanMs: number;
}

export interface DurabilityResults {
  seconds: number;
  rows: DurabilityRow[];
}

type Variant = Pick<DurabilityRow, 'setting' | 'fsync' | 'minReplicasAck'>;

const VARIANTS: Variant[] = [
  { setting: 'appendfsync everysec', fsync: 'everysec' },
  { setting: 'appendfsync always', fsync: 'always' },
  { setting: 'one replica, REDIS_MIN_REPLICAS_ACK=0', minReplicasAck: 0 },
  { setting: 'one replica, REDIS_MIN_REPLICAS_ACK=1', minReplicasAck: 1 },
];

export const durability: Scenario<DurabilityResults> = {
  uses: [],
  optional: true,
  async run(env: BenchEnv): Promise<DurabilityResults> {
    h2loadVersion();
    const rows: DurabilityRow[] = [];
    for (const v of VARIANTS) {
      if (env.overBudget()) break;
      env.log(`durability (${v.setting})`);
      rows.push(await measure(env, v));
    }
    return { seconds: h2Seconds(env), rows };
  },
};

async function measure(env: BenchEnv, v: Variant): Promise<DurabilityRow> {
  const redis: BenchRedis = await startRedis(v.fsync ? ['--save', '', '--appendonly', 'yes', '--appendfsync', v.fsync] : undefined);
  let replica: RedisServer | undefined;
  try {
    if (v.minReplicasAck !== undefined) {
      replica = await RedisServer.start({ args: ['--save', '', '--appendonly', 'no', '--replicaof', '127.0.0.1', String(redis.server.port)] });
      await waitReplicaOnline(redis);
    }
    const sidecar = await env.startSidecar('extproc', redis.server.url, v.minReplicasAck ? { REDIS_MIN_REPLICAS_ACK: String(v.minReplicasAck) } : {});
    try {
      const r = await acceptRun(env, 'sidecar', sidecar.grpcPort, sidecar.child.pid, 'nobody', { client: redis.client, pid: redis.server.pid });
      return { ...v, runsPerSec: r.reqPerSec, stored: r.stored ?? 0, cpuUsPerRun: r.cpuUsPerRun, meanMs: r.meanMs };
    } finally {
      await sidecar.child.stop('SIGTERM', 5000);
    }
  } finally {
    redis.client.disconnect();
    await replica?.destroy();
    await redis.server.destroy();
  }
}

async function waitReplicaOnline(redis: BenchRedis): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!/slave0:.*state=online/.test(await redis.client.info('replication'))) {
    if (Date.now() > deadline) throw new Error('the replica did not come online within 10 s');
    await new Promise((r) => setTimeout(r, 50));
  }
}
