/**
 * The OTLP/HTTP receiver of the benchmark's tracing rows, in its own process (h2load runs with
 * execFileSync and blocks the bench's event loop): the tests' receiver, which decodes every export.
 * IPC {cmd:'stats'} -> {spans, exports, refused}. Usage: node otlp-sink.js (prints READY <port>).
 */
import { OtlpReceiver } from '../test/support/otlp-receiver';

async function main(): Promise<void> {
  const rx = await OtlpReceiver.start();
  process.on('message', (m: { cmd?: string }) => {
    if (m.cmd === 'stats') process.send!({ spans: rx.spans.length, exports: rx.exports.length, refused: rx.refused.length });
  });
  process.stdout.write(`READY ${rx.port}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`otlp-sink: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
