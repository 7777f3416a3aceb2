#!/usr/bin/env node
// Demo webhook receiver for envoy-async-sidecar: prints every request it gets (method, path,
// headers, body) as it arrives and answers 200 (or `?status=<code>` to try retries).
//
// With WEBHOOK_SECRET set (the same whsec_... value as the sidecar's), it verifies the Standard
// Webhooks signature (webhook-id, webhook-timestamp, webhook-signature) with the
// `standardwebhooks` library (present in the sidecar image's node_modules; run this file from
// /app/examples/... in that image, or `npm install standardwebhooks` next to it) and answers 401
// when the signature is wrong.
//
//   GET /received   the last 100 webhooks received, newest last, as JSON (one summary each)
//   GET /healthz    200 {"status":"ok"}
// Env: PORT (default 9000), HOST (default 0.0.0.0), WEBHOOK_SECRET (optional),
//      LOG_FORMAT (`full`, the default: headers and body; `json`: one JSON summary line per
//      webhook, which `npm run demo` reads).
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS, run by node as is */
const http = require('node:http');

const PORT = Number(process.env.PORT || 9000);
const HOST = process.env.HOST || '0.0.0.0';
const SECRETS = (process.env.WEBHOOK_SECRET || '').split(/[\s,]+/).filter(Boolean);
const LOG_FORMAT = process.env.LOG_FORMAT === 'json' ? 'json' : 'full';
const KEPT = 100;
const received = [];

let verifiers = [];
if (SECRETS.length > 0) {
  let Webhook;
  try {
    ({ Webhook } = require('standardwebhooks'));
  } catch {
    console.error('WEBHOOK_SECRET is set but the standardwebhooks package is not installed: cannot verify');
    process.exit(1);
  }
  verifiers = SECRETS.map((s) => new Webhook(s));
}

function verify(headers, body) {
  if (verifiers.length === 0) return 'not checked (WEBHOOK_SECRET unset)';
  const wh = { 'webhook-id': headers['webhook-id'], 'webhook-timestamp': headers['webhook-timestamp'], 'webhook-signature': headers['webhook-signature'] };
  let lastError = 'no secret';
  for (const v of verifiers) {
    try {
      v.verify(body, wh);
      return 'valid';
    } catch (err) {
      lastError = err.message;
    }
  }
  return `INVALID (${lastError})`;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url || '/', 'http://localhost');
  if (url.pathname === '/healthz' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end('{"status":"ok"}\n');
  }
  if (url.pathname === '/received' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ webhooks: received }) + '\n');
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const signature = verify(req.headers, body.toString('utf8'));
    const wanted = Number(url.searchParams.get('status') || 200);
    const status = signature.startsWith('INVALID') ? 401 : wanted >= 200 && wanted <= 599 ? wanted : 200;
    const summary = {
      time: new Date().toISOString(),
      method: req.method,
      path: req.url,
      webhook_id: req.headers['webhook-id'] || null,
      run_id: req.headers['x-async-run-id'] || null,
      run_status: req.headers['x-async-run-status'] || null,
      upstream_status: req.headers['x-async-upstream-status'] ? Number(req.headers['x-async-upstream-status']) : null,
      content_type: req.headers['content-type'] || null,
      bytes: body.length,
      signature,
      answered: status,
    };
    received.push(summary);
    if (received.length > KEPT) received.shift();
    if (LOG_FORMAT === 'json') console.log(JSON.stringify({ msg: 'webhook', ...summary }));
    else printFull(req, body, signature);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ received: true, signature }) + '\n');
  });
});

function printFull(req, body, signature) {
  const lines = [
    `--- webhook ${new Date().toISOString()} ${req.method} ${req.url}`,
    ...Object.entries(req.headers).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`),
    `signature: ${signature}`,
    '',
    body.toString('utf8'),
    '---',
  ];
  console.log(lines.join('\n'));
}

server.listen(PORT, HOST, () => {
  console.log(`webhook receiver listening on ${HOST}:${PORT}${verifiers.length ? ' (verifying signatures)' : ''}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    // The sidecar keeps its connection open between webhooks: close idle ones so close() finishes now.
    server.closeIdleConnections();
  });
}
