import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { EnvoyStandIn } from '../test/support/envoy';
import { ExtProcStream } from '../test/support/envoy/ext-proc-stream';
import { createExtProcClient } from '../test/support/envoy/ext-proc-stream';
import { freePort } from '../test/support/ports';
import { RedisServer } from '../test/support/redis-server';
import { eventually, startTestSidecar } from '../test/support/sidecar';
import { Upstream } from '../test/support/upstream';
import type { ProcessingRequest } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import { Recorder, histogram, sleep, type Drill } from './lib';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapMb = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1048576;
};
const rssMb = () => process.memoryUsage().rss / 1048576;

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const h = (key: string, v: string | Buffer) => ({ key, raw_value: Buffer.isBuffer(v) ? v : Buffer.from(v, 'latin1') });
const headers = (list: Array<{ key: string; raw_value: Buffer }>, eos = false): ProcessingRequest => ({
  request_headers: { headers: { headers: list }, end_of_stream: eos },
});
const asyncHead = (eos = false) =>
  headers([h(':method', 'POST'), h(':path', '/fuzz?async=true'), h(':authority', 'app'), h('content-type', 'text/plain')], eos);

/** The message kinds the fuzzer strings together, well-formed or not. */
const MESSAGES: Array<[string, () => ProcessingRequest]> = [
  ['headers(async)', () => asyncHead(Math.random() < 0.5)],
  ['headers(pass)', () => headers([h(':method', 'GET'), h(':path', '/plain'), h(':authority', 'app')], true)],
  ['headers(runs api)', () => headers([h(':method', 'GET'), h(':path', `/v1/runs/${pick(['x', '00000000-0000-4000-8000-000000000000'])}`)], true)],
  ['headers(no :path)', () => headers([h(':method', 'POST')])],
  ['headers(empty map)', () => ({ request_headers: {} })],
  [
    'headers(non-UTF-8)',
    () => headers([h(':method', 'POST'), h(':path', '/f?async=true'), h('x-b', randomBytes(64)), h(randomBytes(8).toString('latin1'), randomBytes(16))]),
  ],
  ['headers(1 MiB value)', () => headers([h(':method', 'POST'), h(':path', '/f?async=true'), h('x-big', Buffer.alloc(1024 * 1024, 97))], true)],
  [
    'headers(5000 headers)',
    () => headers([h(':method', 'POST'), h(':path', '/f?async=true'), ...Array.from({ length: 5000 }, (_, i) => h(`x-${i}`, 'v'))], true),
  ],
  ['body', () => ({ request_body: { body: randomBytes(Math.floor(Math.random() * 4096)), end_of_stream: Math.random() < 0.5 } })],
  ['body(empty)', () => ({ request_body: {} })],
  ['trailers', () => ({ request_trailers: { trailers: { headers: [h('x-t', 'v')] } } })],
  ['response_headers', () => ({ response_headers: { headers: { headers: [h(':status', '200')] } } })],
  ['response_body', () => ({ response_body: { body: randomBytes(32), end_of_stream: true } })],
  ['response_trailers', () => ({ response_trailers: {} })],
  ['empty message', () => ({})],
  ['observability_mode', () => ({ ...asyncHead(true), observability_mode: true })],
];

/**
 * Fuzzes the ext_proc gRPC server directly: random and malformed message sequences, huge and
 * non-UTF-8 headers, truncated streams, thousands of abandoned streams; a well-formed request
 * interleaved with the fuzz must still get its 202, and memory must return near its baseline.
 */
export const fuzzDrill: Drill = {
  id: 'fuzz',
  title: 'Fuzz the ext_proc gRPC server',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    const sequences = ctx.mode === 'full' ? 3000 : 600;
    const abandoned = ctx.mode === 'full' ? 5000 : 2000;
    const redis = await RedisServer.start();
    const app = await Upstream.start();
    const extprocPort = await freePort();
    // Fast mode runs inside `npm test` on a loaded CI machine, where a GC pause of the process that
    // hosts both the fuzzer and the server can outlast Envoy's 2 s message timeout: there the
    // well-formed requests get 10 s, and the check is about their answer, not their latency.
    const envoy = await EnvoyStandIn.start({
      clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` },
      filterOverrides: ctx.mode === 'full' ? {} : { messageTimeoutMs: 10_000 },
    });
    const sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: app.url,
      MAX_BODY_BYTES: String(2 * 1024 * 1024),
    });
    const good: number[] = [];
    const goodFailures: string[] = [];
    const goodRequest = async () => {
      const r = await envoy.process({ method: 'POST', path: '/good?async=true', body: 'hello' });
      good.push(r.status);
      if (r.status !== 202) goodFailures.push(`${r.status} ${r.details ?? ''}`.trim());
    };
    try {
      rec.setup.push(
        `in-process sidecar (heap measured after forced GC); a gRPC client speaking ext_proc directly; ${sequences} random sequences of 1–6 messages drawn from: ${MESSAGES.map(([n]) => n).join(', ')}`,
        'each sequence then ends at random: half-close, cancel right away (truncated), or wait up to 300 ms for an answer and then close as Envoy does',
        `then ${abandoned} abandoned streams (open, send async request_headers, never send the body), held open, then dropped by closing the channel; a well-formed request through the Envoy stand-in after every 50 fuzz streams`,
      );
      await eventually(
        async () => ((await envoy.process({ method: 'GET', path: '/v1/runs/00000000-0000-4000-8000-000000000000' })).status === 404 ? true : undefined),
        10_000,
        'serving',
      );
      for (let i = 0; i < 20; i++) await goodRequest();
      const base = heapMb();
      const baseRss = rssMb();
      const client = createExtProcClient(`127.0.0.1:${extprocPort}`, 'async_sidecar');
      const endings: string[] = [];
      const outcomes: string[] = [];
      const used = new Map<string, number>();
      let inflight: Array<Promise<void>> = [];
      for (let i = 0; i < sequences; i++) {
        inflight.push(
          (async () => {
            const s = new ExtProcStream(client as never);
            const n = 1 + Math.floor(Math.random() * 6);
            for (let k = 0; k < n; k++) {
              const [name, make] = pick(MESSAGES);
              used.set(name, (used.get(name) ?? 0) + 1);
              s.send(make());
            }
            const end = pick(['half-close', 'cancel', 'wait']);
            endings.push(end);
            if (end === 'cancel') return s.close();
            if (end === 'half-close') (s as unknown as { call: { end(): void } }).call.end();
            const ev = await s.next(Date.now() + 300);
            outcomes.push(ev.kind === 'message' ? `message:${ev.message.response ?? 'none'}` : ev.kind === 'error' ? `grpc error ${ev.code}` : ev.kind);
            s.close();
          })(),
        );
        if (inflight.length >= 20) {
          await Promise.all(inflight);
          inflight = [];
        }
        if (i % 50 === 49) await goodRequest();
      }
      await Promise.all(inflight);
      const afterFuzz = heapMb();
      // Abandoned streams: each waits for a body that never comes.
      const held: ExtProcStream[] = [];
      const abandonClient = createExtProcClient(`127.0.0.1:${extprocPort}`, 'async_sidecar');
      for (let i = 0; i < abandoned; i++) {
        const s = new ExtProcStream(abandonClient as never);
        s.send(asyncHead(false));
        held.push(s);
        if (i % 200 === 199) {
          await sleep(20);
          await goodRequest();
        }
      }
      await sleep(500);
      const peak = heapMb();
      const peakRss = rssMb();
      for (const s of held) s.close();
      held.length = 0;
      abandonClient.close();
      client.close();
      await sleep(1000);
      for (let i = 0; i < 20; i++) await goodRequest();
      await sleep(500);
      const end = heapMb();
      const endRss = rssMb();
      const goodOk = good.filter((s) => s === 202).length;
      rec.count('fuzz sequences / messages sent', `${sequences} / ${[...used.values()].reduce((a, b) => a + b, 0)}`);
      rec.count('messages by kind', histogram([...used.entries()].flatMap(([k, v]) => Array<string>(v).fill(k))));
      rec.count('sequence endings', histogram(endings));
      rec.count('what waiting fuzz streams got', histogram(outcomes));
      rec.count('abandoned streams held open at once', abandoned);
      rec.count('well-formed requests interleaved / got 202', `${good.length} / ${goodOk}`);
      if (goodFailures.length > 0) rec.count('what the others got', histogram(goodFailures));
      rec.count(
        'heap used: baseline / after fuzz / with abandoned streams open / after they were dropped',
        `${base.toFixed(1)} / ${afterFuzz.toFixed(1)} / ${peak.toFixed(1)} / ${end.toFixed(1)} MB`,
      );
      rec.count('RSS: baseline / peak / end', `${baseRss.toFixed(0)} / ${peakRss.toFixed(0)} / ${endRss.toFixed(0)} MB`);
      rec.check('every well-formed request interleaved with the fuzz got its 202', goodOk === good.length, `${goodOk} of ${good.length}`);
      rec.check(
        'heap returned near baseline (≤ baseline + 15 MB) after the streams were dropped',
        end <= base + 15,
        `${end.toFixed(1)} vs ${base.toFixed(1)} MB`,
      );
      rec.check('the server is still up (health via a final 202)', good[good.length - 1] === 202);
      rec.notes.push(
        "Client and server share the process here, so the heap figures include the fuzzing client's own streams; the check is that everything is released once the streams end.",
      );
    } finally {
      await sidecar.stop();
      await envoy.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
