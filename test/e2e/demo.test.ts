/**
 * `npm run demo` run as a user runs it: started in its own process group (a terminal's foreground
 * job), driven with the commands it prints, stopped with SIGINT sent to the whole group (what
 * Ctrl-C does), then every port it printed must be closed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { request } from 'undici';
import { REPO_ROOT, describeWithEnvoy } from '../support/real-envoy';
import { eventually } from '../support/sidecar';

interface Curl {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
}

/** The request a printed curl command sends (-X, -H, -d and the quoted URL; $RUN_ID substituted). */
function parseCurl(line: string, runId = ''): Curl {
  const cmd = line.slice(line.indexOf('curl ')).replace(/\$RUN_ID/g, runId);
  const headers: Record<string, string> = {};
  for (const m of cmd.matchAll(/-H '([^':]+): ([^']*)'/g)) headers[m[1]!.toLowerCase()] = m[2]!;
  const url = /['"](http:\/\/127\.0\.0\.1:\d+[^'"]*)['"]/.exec(cmd)?.[1];
  if (!url) throw new Error(`no URL in ${line}`);
  return { method: /-X (\w+)/.exec(cmd)?.[1] ?? 'GET', url, headers, body: /-d '([^']*)'/.exec(cmd)?.[1] };
}

async function send(c: Curl): Promise<{ status: number; json: any }> {
  const res = await request(c.url, { method: c.method as 'GET', headers: c.headers, body: c.body });
  return { status: res.statusCode, json: await res.body.json() };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** `npm run demo` in its own process group, like a terminal's foreground job; resolves once it printed "ready". */
async function startDemo(): Promise<{ child: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }> {
  const env: NodeJS.ProcessEnv = { ...process.env, DEMO_PORTS: 'free' };
  delete env.REDIS_URL; // the demo's own redis-server, as on a fresh machine
  const child = spawn('npm', ['run', 'demo'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  started.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  // Generous: the demo may build first (dist/ older than src/) on a loaded machine.
  await eventually(
    () => (out.includes('demo: ready.') ? true : child.exitCode !== null ? Promise.reject(new Error(`demo exited early:\n${out}`)) : undefined),
    240_000,
    'the demo to print "ready"',
  );
  return { child, output: () => out, exited };
}

/** Every port the demo printed (ingress, dispatch, Envoy admin, sidecar admin, ext_proc, app, receiver, Redis). */
function printedPorts(out: string): number[] {
  const ports = [...out.matchAll(/(?:http|redis):\/\/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
  const extproc = Number(/ext_proc on 127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
  return [...new Set([...ports, extproc])];
}

const started: ChildProcess[] = [];

afterAll(() => {
  // Only if a test failed before its own signal: do not leave a demo running.
  for (const c of started) if (c.exitCode === null && c.signalCode === null) process.kill(-c.pid!, 'SIGKILL');
});

describeWithEnvoy('npm run demo', () => {
  it('starts everything on loopback, prints working commands, delivers a verified webhook, and stops on Ctrl-C', async () => {
    const demo = await startDemo();
    const out = demo.output();
    const lines = out.split('\n');
    const printed = (re: RegExp) => {
      const line = lines.find((l) => re.test(l));
      if (!line) throw new Error(`no line ${re} in:\n${out}`);
      return line;
    };
    // Every address the demo names is on 127.0.0.1.
    expect(out).not.toMatch(/http:\/\/(?!127\.0\.0\.1)[\w.-]+:\d+/);
    const allPorts = printedPorts(out);
    expect(allPorts).toHaveLength(8);
    const receiver = /webhook receiver\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]!;

    // The async call exactly as printed: 202 with a run id, its webhook pointing at the receiver.
    const accept = parseCurl(printed(/^\s+RUN_ID=\$\(curl -s -X POST .*sleep=3/));
    expect(decodeURIComponent(new URL(accept.url).searchParams.get('webhookEndpoint')!)).toBe(`${receiver}/hook`);
    const accepted = await send(accept);
    expect(accepted.status).toBe(202);
    const runId = String(accepted.json.run_id);
    expect(runId).toMatch(/^[0-9a-f-]{36}$/);

    // The status command (?wait=10), repeated until the run has ended: the app sleeps 3 s.
    const status = parseCurl(printed(/\?wait=10/), runId);
    const run = await eventually(
      async () => {
        const r = await send(status);
        expect(r.status).toBe(200);
        return r.json.status === 'succeeded' ? r.json : undefined;
      },
      60_000,
      'run to succeed',
    );
    expect(run.response.status_code).toBe(200);

    const result = await send(parseCurl(printed(/\/result"/), runId));
    expect(result.status).toBe(200);
    expect(result.json).toMatchObject({ result: 'slept 3s', input: { prompt: 'hello' }, run_id: runId });

    // The webhook arrived, signed and verified by the receiver: in the demo's own summary line
    // and in the receiver's list.
    const webhookLine = new RegExp(`\\[webhook\\] .* run ${runId} succeeded \\(app answered 200\\).*signature valid, receiver answered 200`);
    await eventually(() => (webhookLine.test(demo.output()) ? true : undefined), 30_000, 'the [webhook] line');
    const received = await send({ method: 'GET', url: `${receiver}/received`, headers: {} });
    expect(received.json.webhooks).toEqual([
      expect.objectContaining({
        run_id: runId,
        run_status: 'succeeded',
        upstream_status: 200,
        signature: 'valid',
        webhook_id: `msg_${runId.replace(/-/g, '')}`,
      }),
    ]);

    const logDir = /logs:\s+(\S+)/.exec(out)![1]!;
    expect(existsSync(logDir)).toBe(true);
    for (const p of allPorts) expect(await portOpen(p)).toBe(true);

    // Ctrl-C: SIGINT to the whole foreground group (npm, its shell, the demo).
    process.kill(-demo.child.pid!, 'SIGINT');
    expect(await demo.exited).toEqual({ code: 0, signal: null });
    expect(demo.output()).toContain('demo: stopped');
    // Nothing left listening, and the temp dir (Redis data, logs) is gone.
    for (const p of allPorts) expect(await portOpen(p)).toBe(false);
    expect(existsSync(logDir)).toBe(false);
  }, 360_000);

  it('stops everything on SIGTERM to npm alone (a process manager, `kill <pid>`)', async () => {
    const demo = await startDemo();
    const ports = printedPorts(demo.output());
    for (const p of ports) expect(await portOpen(p)).toBe(true);
    demo.child.kill('SIGTERM');
    expect(await demo.exited).toEqual({ code: 0, signal: null });
    expect(demo.output()).toContain('demo: SIGTERM: stopping');
    for (const p of ports) expect(await portOpen(p)).toBe(false);
  }, 300_000);
});
