/**
 * The memory floor of the long-runs scenario: a bare undici Agent, built with the dispatcher's own
 * options, sending N requests like the runs' (same target, headers and body) to an upstream that
 * holds them: what a process needs to keep N HTTP/1.1 requests in flight at all (one socket, parser
 * and request state each). It loads those options and nothing else of the sidecar.
 * Usage (with IPC): node --expose-gc --require heap-probe.js held-client.js <port> <n>; {cmd:'send'} sends
 */
import { Agent, request } from 'undici';
import { DISPATCH_AGENT_OPTIONS } from '../src/dispatch/agent';
import { RUN_BODY, RUN_HEADERS, RUN_TARGET } from './run-shape';

const [port, n] = [Number(process.argv[2]), Number(process.argv[3])];
const agent = new Agent(DISPATCH_AGENT_OPTIONS);
const url = `http://127.0.0.1:${port}${RUN_TARGET}`;

/** Sends the n requests (on the scenario's word, so that the idle process is measured first). */
function send(): void {
  for (let i = 0; i < n; i++) {
    const headers = RUN_HEADERS(`run-${i}`).flat();
    request(url, { dispatcher: agent, method: 'POST', headers, body: RUN_BODY }).then(
      (res) => res.body.dump(),
      (err: Error) => process.stderr.write(`held-client: ${err.message}\n`),
    );
  }
}

process.on('message', (m: { cmd: string }) => {
  if (m.cmd === 'send') send();
});
process.on('SIGTERM', () => process.exit(0));
process.stdout.write('READY\n');
