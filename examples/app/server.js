#!/usr/bin/env node
// Demo app for envoy-async-sidecar: a plain Node HTTP server with no dependencies.
//
//   POST /v4/p-1/my-app/run   JSON body in, JSON out, after sleeping a few seconds.
//                             The delay is `?sleep=<seconds>` or `{"sleep": <seconds>}` in the
//                             body (default SLEEP_SECONDS, 3). `?status=<code>` answers that
//                             status instead of 200 (to try failed runs).
//   GET  /healthz             200 {"status":"ok"}
//
// It knows nothing about async: called through Envoy with ?async=true it is called later by the
// sidecar's worker (via Envoy's dispatch listener), with the header x-async-run-id.
// Env: PORT (default 8000), HOST (default 0.0.0.0), SLEEP_SECONDS (default 3), MAX_SLEEP_SECONDS (default 3600).
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS, run by node as is */
const http = require('node:http');

const PORT = Number(process.env.PORT || 8000);
const HOST = process.env.HOST || '0.0.0.0';
const DEFAULT_SLEEP = Number(process.env.SLEEP_SECONDS || 3);
const MAX_SLEEP = Number(process.env.MAX_SLEEP_SECONDS || 3600);
const MAX_BODY = 10 * 1024 * 1024;

function log(fields) {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url || '/', 'http://localhost');
  try {
    if (url.pathname === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      return reply(res, 200, { status: 'ok' });
    }
    if (url.pathname === '/v4/p-1/my-app/run' && req.method === 'POST') {
      const raw = await readBody(req);
      let input = null;
      if (raw.length > 0) {
        try {
          input = JSON.parse(raw.toString('utf8'));
        } catch {
          return reply(res, 400, { error: 'body must be JSON' });
        }
      }
      const requested = url.searchParams.get('sleep') ?? (input && typeof input === 'object' ? input.sleep : undefined);
      const sleep = requested === undefined || requested === null || requested === '' ? DEFAULT_SLEEP : Number(requested);
      if (!Number.isFinite(sleep) || sleep < 0 || sleep > MAX_SLEEP) {
        return reply(res, 400, { error: `sleep must be a number of seconds between 0 and ${MAX_SLEEP}` });
      }
      const runId = req.headers['x-async-run-id'] || null;
      const started = new Date();
      log({ msg: 'run started', run_id: runId, sleep_seconds: sleep, input });
      await new Promise((r) => setTimeout(r, sleep * 1000));
      const status = Number(url.searchParams.get('status') || 200);
      const out = {
        result: `slept ${sleep}s`,
        input,
        run_id: runId,
        started_at: started.toISOString(),
        finished_at: new Date().toISOString(),
      };
      log({ msg: 'run finished', run_id: runId, status });
      return reply(res, status >= 100 && status <= 599 ? status : 200, out);
    }
    return reply(res, 404, { error: `no route for ${req.method} ${url.pathname}` });
  } catch (err) {
    return reply(res, err.status || 500, { error: err.message });
  }
});

// Long runs: no server-side request timeout (Node's default is 300 s).
server.requestTimeout = 0;
server.headersTimeout = 60_000;
server.keepAliveTimeout = 65_000;
server.listen(PORT, HOST, () => log({ msg: `demo app listening on ${HOST}:${PORT}` }));

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    // Envoy keeps idle keep-alive connections open (65 s here): close them so close() finishes now;
    // a request still running gets up to 5 s.
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
