import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const REPO_ROOT = join(__dirname, '..', '..');
const MAIN = join(REPO_ROOT, 'dist', 'src', 'main.js');

/** Builds once if dist/ is missing (CI builds before testing; a local `npm test` may not have). */
export function ensureBuilt(): void {
  if (existsSync(MAIN)) return;
  const r = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm run build failed');
}

export interface SidecarProcess {
  child: ChildProcess;
  /** Everything written to stdout so far (pino JSON lines). */
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line whose msg matches. */
  waitForLog: (msg: string | RegExp, timeoutMs?: number) => Promise<Record<string, unknown>>;
  kill: (signal?: NodeJS.Signals) => void;
}

export interface SpawnOptions {
  /** What to run instead, before `args`: e.g. [an installed package's node_modules/.bin/envoy-async-sidecar]. */
  command?: readonly [string, ...string[]];
  /** Working directory (default: the repository). */
  cwd?: string;
}

/** Runs the built sidecar the way `npm start` does (node dist/src/main.js), or `command`, with its own env. */
export function spawnSidecar(env: Record<string, string>, args: string[] = [], options: SpawnOptions = {}): SidecarProcess {
  const [command, ...prefix] = options.command ?? [process.execPath, MAIN];
  const child = spawn(command, [...prefix, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const waitForLog = async (msg: string | RegExp, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        const parsed = JSON.parse(line) as Record<string, unknown>;
        const m = String(parsed.msg ?? '');
        if (typeof msg === 'string' ? m === msg : msg.test(m)) return parsed;
      }
      if (Date.now() > deadline) throw new Error(`no log line ${String(msg)} within ${timeoutMs} ms; stdout:\n${out}\nstderr:\n${err}`);
      if (child.exitCode !== null) throw new Error(`sidecar exited (${child.exitCode}) before logging ${String(msg)}; stderr:\n${err}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  return { child, stdout: () => out, stderr: () => err, exited, waitForLog, kill: (s = 'SIGTERM') => child.kill(s) };
}
