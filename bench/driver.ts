/**
 * Fixed-rate, Envoy-shaped ext_proc client (grpc-js), one stream per request: open the stream,
 * send request_headers, await the answer, send the body if the server asked for it, await the
 * immediate response, then half-close and cancel (as Envoy does). Open loop: latency is taken
 * from the moment each stream was due, so a stalled server is not hidden by a stalled client.
 *
 * Connections as Envoy's pool for the `async_sidecar` cluster: after `max_requests_per_connection`
 * streams (read from envoy/envoy.yaml, or BENCH_MAX_STREAMS_PER_CONN; 0 = never) the next stream goes
 * on a NEW connection (a new grpc-js client with its own subchannel pool, else grpc-js would share
 * the connection); the old one drains and is closed when its last stream ends (as the stand-in's
 * `newStream()` in test/support/envoy/stand-in.ts). The count includes the warm-up's streams.
 *
 * Usage: node driver.js <port> <shape nobody|body|pass> <rate/s> <seconds>
 * Prints one JSON line: {sent, ok, errors, p50, p99, p999, max, connections, maxStreamsPerConn} (latencies in ms).
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { ProcessingResponse__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import { loadExtProcProto } from '../src/extproc/proto';
import { bodyMessage, headersMessage, type Shape } from './messages';
import { envoyMaxRequestsPerConnection, pct } from './lib';

const WARMUP_SECONDS = 1;
/** BENCH_GRACEFUL=1: end streams with a half-close only (no RST_STREAM), unlike Envoy. */
const GRACEFUL = process.env.BENCH_GRACEFUL === '1';

async function main(): Promise<void> {
  const [portArg, shapeArg, rateArg, secondsArg] = process.argv.slice(2);
  const port = Number(portArg);
  const shape = shapeArg as Shape;
  const rate = Number(rateArg);
  const seconds = Number(secondsArg);
  const total = Math.round(rate * seconds);
  const proto = loadExtProcProto();
  const maxStreamsPerConn =
    process.env.BENCH_MAX_STREAMS_PER_CONN !== undefined ? Number(process.env.BENCH_MAX_STREAMS_PER_CONN) : (envoyMaxRequestsPerConnection() ?? 0);
  type Client = InstanceType<typeof proto.envoy.service.ext_proc.v3.ExternalProcessor>;
  const newClient = (): Client =>
    new proto.envoy.service.ext_proc.v3.ExternalProcessor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      // One client = one HTTP/2 connection (grpc-js otherwise shares a subchannel among clients).
      'grpc.use_local_subchannel_pool': 1,
    });
  let client = newClient();
  let connections = 1;
  let clientStreams = 0;
  const openPerClient = new Map<Client, number>([[client, 0]]);
  const retired = new Set<Client>();
  /** The client for the next stream: a new connection every `maxStreamsPerConn` streams (Envoy's pool). */
  const clientForStream = (): Client => {
    if (maxStreamsPerConn > 0 && clientStreams >= maxStreamsPerConn) {
      const old = client;
      if (openPerClient.get(old) === 0) {
        old.close();
        openPerClient.delete(old);
      } else retired.add(old); // closed when its last stream ends
      client = newClient();
      openPerClient.set(client, 0);
      connections++;
      clientStreams = 0;
    }
    clientStreams++;
    openPerClient.set(client, openPerClient.get(client)! + 1);
    return client;
  };
  const streamEnded = (c: Client) => {
    const open = openPerClient.get(c)! - 1;
    openPerClient.set(c, open);
    if (open === 0 && retired.has(c)) {
      retired.delete(c);
      openPerClient.delete(c);
      c.close();
    }
  };
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())));
  const headers = headersMessage(shape);
  const body = bodyMessage();
  const latencies = new Float64Array(total);
  let ok = 0;
  let errors = 0;
  let finished = 0;
  let firstError = '';
  let recording = false;

  const one = (due: number) => {
    const c = clientForStream();
    const call = c.Process();
    let settled = false;
    const settle = (good: boolean) => {
      if (settled) return;
      settled = true;
      finished++;
      if (good && recording) latencies[ok++] = performance.now() - due;
      else if (!good) errors++;
      call.end();
      if (!GRACEFUL) call.cancel();
      streamEnded(c);
    };
    call.on('data', (res: ProcessingResponse__Output) => {
      if (res.immediate_response) return settle(true);
      if (res.request_headers) {
        if (shape === 'pass') return settle(true);
        call.write(body);
      }
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.CANCELLED) return;
      if (!firstError) firstError = err.message;
      settle(false);
    });
    call.on('end', () => settle(false));
    call.write(headers);
  };

  /** Starts `count` streams at `rate`/s; resolves when all were started and have ended (bounded). */
  const phase = async (count: number) => {
    const start = performance.now();
    let started = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const due = Math.min(count, Math.floor(((performance.now() - start) / 1000) * rate));
        while (started < due) one(start + (started++ * 1000) / rate);
        if (started >= count) return resolve();
        setTimeout(tick, 1);
      };
      tick();
    });
    sent += started;
    const deadline = performance.now() + 10_000;
    while (finished < sent && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };
  let sent = 0;
  let warmupErrors = 0;
  // Warm-up (JIT, connection), not recorded: one second at the rate.
  recording = false;
  await phase(Math.round(rate * WARMUP_SECONDS));
  warmupErrors = errors;
  ok = errors = finished = sent = 0;
  firstError = '';
  recording = true;
  const connectionsBefore = connections;
  const start = performance.now();
  await phase(total);
  const sorted = latencies.slice(0, ok).sort();
  const result = {
    sent,
    ok,
    errors,
    unfinished: sent - finished,
    warmupErrors,
    firstError,
    seconds: (performance.now() - start) / 1000,
    /** Connections opened during the measured phase (plus the one in use when it started). */
    connections: connections - connectionsBefore + 1,
    maxStreamsPerConn,
    p50: pct(sorted, 50),
    p99: pct(sorted, 99),
    p999: pct(sorted, 99.9),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  for (const c of openPerClient.keys()) c.close();
  process.exit(0);
}

main().catch((err: Error) => {
  process.stderr.write(`driver: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
