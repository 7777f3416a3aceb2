/**
 * No-op loopback HTTP server playing both the upstream (any path) and the webhook receiver
 * (/hook). Controlled over IPC: {cmd:'stats'} -> counters; {cmd:'hold', on} makes the upstream
 * hold every request until {cmd:'release'}. Usage: node noop-http.js (prints READY <port>).
 */
import { createServer, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';

const UPSTREAM_BODY = Buffer.from('{"ok":true,"report":"done"}');
const HOOK_BODY = Buffer.from('ok');

let upstream = 0;
let hooks = 0;
let hookBytes = 0;
let firstUpstreamAt = 0;
let lastHookAt = 0;
let hold = false;
const held: ServerResponse[] = [];

function answerUpstream(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': UPSTREAM_BODY.length });
  res.end(UPSTREAM_BODY);
}

const server = createServer({ keepAliveTimeout: 30_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
  let bytes = 0;
  req.on('data', (d: Buffer) => (bytes += d.length));
  req.on('end', () => {
    if (req.url?.startsWith('/hook')) {
      hooks++;
      hookBytes += bytes;
      lastHookAt = performance.timeOrigin + performance.now();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': HOOK_BODY.length });
      res.end(HOOK_BODY);
      return;
    }
    if (upstream++ === 0) firstUpstreamAt = performance.timeOrigin + performance.now();
    if (hold) held.push(res);
    else answerUpstream(res);
  });
});
server.maxConnections = 30_000;

process.on('message', (m: { cmd: string; on?: boolean }) => {
  if (m.cmd === 'stats') {
    process.send!({ upstream, hooks, hookBytes, held: held.length, firstUpstreamAt, lastHookAt });
  } else if (m.cmd === 'hold') {
    hold = m.on === true;
  } else if (m.cmd === 'release') {
    for (const res of held.splice(0)) answerUpstream(res);
  } else if (m.cmd === 'reset') {
    upstream = hooks = hookBytes = firstUpstreamAt = lastHookAt = 0;
  }
});

server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`READY ${typeof a === 'object' && a ? a.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
