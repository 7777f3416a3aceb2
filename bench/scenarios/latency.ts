/**
 * Accept latency at a fixed rate: the Envoy-shaped grpc-js driver against the floor and the
 * sidecar, then the same ending streams with a half-close only (what the RST_STREAMs cost), and
 * the floor with every stream on one connection (what Node's reset limit does without
 * max_requests_per_connection).
 */
import type { BenchEnv, Scenario } from '../env';
import { DRIVER_RATE, driverRun, driverSeconds, maxStreamsPerConn, type DriverRow } from '../load';
import type { Shape } from '../messages';

export interface LatencyResults {
  rate: number;
  seconds: number;
  maxStreamsPerConn: number;
  rows: DriverRow[];
}

export const latency: Scenario<LatencyResults> = {
  uses: ['redis', 'floor', 'extproc'],
  async run(env: BenchEnv): Promise<LatencyResults> {
    const [redis, floor, sidecar] = [await env.redis(), await env.floor(), await env.extproc()];
    const rows: DriverRow[] = [];
    for (const shape of ['nobody', 'body'] as Shape[]) {
      rows.push(await driverRun(env, 'floor', floor.port, shape));
      await redis.client.flushall();
      rows.push(await driverRun(env, 'sidecar', sidecar.grpcPort, shape));
    }
    rows.push(await driverRun(env, 'floor', floor.port, 'nobody', { halfClose: true }));
    await redis.client.flushall();
    rows.push(await driverRun(env, 'sidecar', sidecar.grpcPort, 'nobody', { halfClose: true }));
    rows.push(await driverRun(env, 'floor', floor.port, 'nobody', { oneConnection: true }));
    return { rate: DRIVER_RATE, seconds: driverSeconds(env), maxStreamsPerConn: maxStreamsPerConn(), rows };
  },
};
