#!/usr/bin/env node
// Container health check (Docker HEALTHCHECK, Kubernetes exec probes): GET /healthz (or the path
// given as the first argument, e.g. /readyz) on the sidecar's admin server and exit 0 on 200, 1
// otherwise. The admin port and the ext_proc port bind loopback in the pod, where kubelet's own
// httpGet and grpc probes (sent from the node to the pod IP) cannot reach them. Uses only node (slim images have no
// curl). Follows ADMIN_ADDR (default 127.0.0.1:9090); an unspecified bind address (0.0.0.0, ::)
// is reached over loopback. HEALTHCHECK_TIMEOUT_MS bounds the whole check (default 2000).
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS, run by node as is */
const http = require('node:http');

const addr = (process.env.ADMIN_ADDR || '127.0.0.1:9090').trim();
const colon = addr.lastIndexOf(':');
let host = addr.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(addr.slice(colon + 1));
if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
if (host === '::') host = '::1';
const timeoutMs = Number(process.env.HEALTHCHECK_TIMEOUT_MS || 2000);
const path = process.argv[2] || '/healthz';
if (path !== '/healthz' && path !== '/readyz') {
  console.error(`healthcheck: path must be /healthz or /readyz, not ${path}`);
  process.exit(2);
}

const req = http.get({ host, port, path, timeout: timeoutMs }, (res) => {
  res.resume();
  if (res.statusCode === 200) process.exit(0);
  console.error(`healthcheck: ${path} answered ${res.statusCode}`);
  process.exit(1);
});
req.on('timeout', () => {
  console.error(`healthcheck: no answer from ${host}:${port} within ${timeoutMs} ms`);
  req.destroy();
  process.exit(1);
});
req.on('error', (err) => {
  console.error(`healthcheck: ${host}:${port}: ${err.message}`);
  process.exit(1);
});
