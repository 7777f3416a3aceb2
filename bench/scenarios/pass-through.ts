/** Pass-through: a non-async GET (headers only) on a route with the filter, at the driver's fixed rate; floor and sidecar answer CONTINUE. */
import type { BenchEnv, Scenario } from '../env';
import { DRIVER_RATE, driverRun, driverSeconds, maxStreamsPerConn, type DriverRow } from '../load';

export interface PassThroughResults {
  rate: number;
  seconds: number;
  maxStreamsPerConn: number;
  rows: DriverRow[];
}

export const passThrough: Scenario<PassThroughResults> = {
  uses: ['redis', 'floor', 'extproc'],
  async run(env: BenchEnv): Promise<PassThroughResults> {
    const [floor, sidecar] = [await env.floor(), await env.extproc()];
    const rows = [await driverRun(env, 'floor', floor.port, 'pass'), await driverRun(env, 'sidecar', sidecar.grpcPort, 'pass')];
    return { rate: DRIVER_RATE, seconds: driverSeconds(env), maxStreamsPerConn: maxStreamsPerConn(), rows };
  },
};
