/**
 * Accept path: h2load sends Envoy-shaped ext_proc streams (no body, 1 KiB body) to the floor
 * (bench/floor-server.ts: the same answers, stores nothing) and to the sidecar with its Redis.
 */
import type { BenchEnv, Scenario } from '../env';
import { H2_CONNS, H2_STREAMS, acceptRun, h2Seconds, h2loadVersion, type AcceptRow } from '../load';
import type { Shape } from '../messages';

export interface AcceptResults {
  seconds: number;
  connections: number;
  streams: number;
  rows: AcceptRow[];
}

export const accept: Scenario<AcceptResults> = {
  uses: ['redis', 'floor', 'extproc'],
  async run(env: BenchEnv): Promise<AcceptResults> {
    h2loadVersion();
    const [redis, floor, sidecar] = [await env.redis(), await env.floor(), await env.extproc()];
    const rows: AcceptRow[] = [];
    for (const shape of ['nobody', 'body'] as Shape[]) {
      rows.push(await acceptRun(env, 'floor', floor.port, floor.child.pid, shape));
      rows.push(await acceptRun(env, 'sidecar', sidecar.grpcPort, sidecar.child.pid, shape, { client: redis.client, pid: redis.server.pid }));
    }
    return { seconds: h2Seconds(env), connections: H2_CONNS, streams: H2_STREAMS, rows };
  },
};
