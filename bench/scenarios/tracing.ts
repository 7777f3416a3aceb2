/**
 * OpenTelemetry tracing on vs off on the accept path (README "Tracing"): a fresh `--role extproc`
 * sidecar each, tracing off (no OTLP endpoint: no span, no SDK loaded), then on (`http/protobuf`
 * to a real OTLP receiver process, bench/otlp-sink.ts, which decodes every export; the SDK's
 * default batching; the requests carry no traceparent, so each accept span is a sampled root).
 * h2load gives the throughput, then the driver at TRACING_RATE the latency and the sidecar's CPU
 * per run at equal load. Spans received are counted from the end of h2load's warm-up to after the
 * sidecar's shutdown flush.
 */
import type { BenchEnv, Scenario } from '../env';
import { cpuMicros } from '../lib';
import { QUEUED_KEY, acceptRun, driverRun, driverSeconds, h2Seconds, h2loadVersion, type AcceptRow, type DriverRow } from '../load';

/** Runs/s of the fixed-rate phase: low enough for both to keep up on 2 shared cores. */
export const TRACING_RATE = 500;

export interface TracingRow {
  tracing: 'off' | 'on';
  accept: AcceptRow;
  /** The driver at TRACING_RATE, with the sidecar's CPU per run (its warm-up second included). */
  fixedRate: DriverRow & { cpuUsPerRun: number; stored: number };
  /** Spans the receiver decoded after h2load's warm-up (tracing on); null when off. */
  spans: number | null;
}

export interface TracingResults {
  seconds: number;
  rate: number;
  driverSeconds: number;
  rows: TracingRow[];
}

export const tracing: Scenario<TracingResults> = {
  uses: ['redis'],
  optional: true,
  async run(env: BenchEnv): Promise<TracingResults> {
    h2loadVersion();
    const redis = await env.redis();
    const sink = env.nodeChild('otlp-sink.js', [], 'otlp-sink', {}, true);
    const rows: TracingRow[] = [];
    try {
      const port = Number((await sink.waitLine(/^READY /, 10_000)).split(' ')[1]);
      const spans = () =>
        new Promise<number>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('otlp-sink stats timed out')), 5000);
          sink.proc.once('message', (m) => {
            clearTimeout(t);
            resolve((m as { spans: number }).spans);
          });
          sink.proc.send({ cmd: 'stats' });
        });
      for (const on of [false, true]) {
        const sidecarEnv: NodeJS.ProcessEnv = on
          ? { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }
          : {};
        env.log(`tracing ${on ? 'on' : 'off'}`);
        const sidecar = await env.startSidecar('extproc', redis.server.url, sidecarEnv);
        let before = 0;
        let row: Omit<TracingRow, 'spans'>;
        try {
          const accept = await acceptRun(
            env,
            'sidecar',
            sidecar.grpcPort,
            sidecar.child.pid,
            'nobody',
            { client: redis.client, pid: redis.server.pid },
            async () => {
              // The warm-up's last batch can come later and be counted: the count errs high, never hides a loss.
              before = await spans();
            },
          );
          await redis.client.flushall();
          const cpu0 = cpuMicros(sidecar.child.pid);
          const d = await driverRun(env, 'sidecar', sidecar.grpcPort, 'nobody', { rate: TRACING_RATE });
          const cpu1 = cpuMicros(sidecar.child.pid);
          const stored = await redis.client.zcard(QUEUED_KEY);
          row = { tracing: on ? 'on' : 'off', accept, fixedRate: { ...d, cpuUsPerRun: (cpu1 - cpu0) / Math.max(1, stored), stored } };
        } finally {
          await sidecar.child.stop('SIGTERM', 15_000); // flushes the last spans
        }
        const received = on ? (await spans()) - before : null;
        if (on) env.log(`tracing on: ${received} spans received after the warm-up`);
        rows.push({ ...row, spans: received });
        await redis.client.flushall();
      }
    } finally {
      await sink.stop();
    }
    return { seconds: h2Seconds(env), rate: TRACING_RATE, driverSeconds: driverSeconds(env), rows };
  },
};
