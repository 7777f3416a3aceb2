/**
 * The real Envoy in tests: found through scripts/envoy.sh (the same lookup CI, the demo and the
 * benchmarks use), started on the shipped envoy/envoy.yaml rendered for loopback by
 * `renderEnvoyConfig`, ready once its admin endpoint says LIVE.
 *
 * Where no Envoy can be had (a contributor without Python), suites that need it are skipped with
 * the reason printed; under CI=true a missing Envoy is an error instead, so CI cannot pass silently
 * without it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Document } from 'yaml';
import { listenerNames, renderEnvoyConfig } from '../../scripts/render-envoy-config';
import { registerListener } from './listeners';
import { freePort } from './ports';

// The renderer lives in scripts/ so that `npm run demo` (compiled by the build) uses the same one.
export { renderEnvoyConfig, type RenderOptions } from '../../scripts/render-envoy-config';

/** The nearest folder above this file with a package.json: this file also runs compiled, from dist-bench/test/support/ (the benchmarks). */
export const REPO_ROOT = (() => {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();
const ENVOY_SCRIPT = join(REPO_ROOT, 'scripts', 'envoy.sh');

export type EnvoyLookup = { bin: string; version: string } | { bin: undefined; reason: string };

let lookup: EnvoyLookup | undefined;

/** The Envoy binary scripts/envoy.sh finds (without installing); cached per process. Throws under CI=true when none. */
export function findEnvoy(): EnvoyLookup {
  if (lookup) return lookup;
  try {
    const out = execFileSync('bash', [ENVOY_SCRIPT, '--no-install'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const bin = out.trim().split('\n').pop() ?? '';
    const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).match(/\/(\d+\.\d+\.\d+)\//)?.[1] ?? 'unknown';
    lookup = { bin, version };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const reason = (e.stderr || e.message).trim();
    if (process.env.CI === 'true') throw new Error(`CI=true and no Envoy: ${reason}`);
    lookup = { bin: undefined, reason };
  }
  return lookup;
}

/**
 * `describe` when a real Envoy is available, otherwise `describe.skip` with the reason on stderr
 * (jest reports the suite's tests as skipped, never as passed).
 */
export function describeWithEnvoy(name: string, fn: () => void): void {
  const found = findEnvoy();
  if (found.bin !== undefined) {
    describe(name, fn);
    return;
  }
  process.stderr.write(`skipped "${name}": no Envoy (${found.reason})\n`);
  describe.skip(name, fn);
}

export interface RealEnvoyOptions {
  /** Default envoy/envoy.yaml (relative to the repo root). */
  configPath?: string;
  /** Cluster name → 'host:port'. */
  clusters: Record<string, string>;
  edit?: (doc: Document) => void;
  /** Envoy's --log-level (default warning; ENVOY_LOG_LEVEL overrides). */
  logLevel?: string;
  /** Envoy's --concurrency (worker threads); default 2, this machine's cores. */
  concurrency?: number;
}

/** A real Envoy process on loopback. `url` is the ingress listener, `dispatchUrl` the dispatch listener. */
export class RealEnvoy {
  readonly kind = 'real Envoy';
  url = '';
  dispatchUrl = '';
  /** Its ingress answers are checked against openapi/openapi.yaml while it runs (test/support/openapi.ts). */
  private unregister: () => void = () => undefined;
  adminUrl = '';
  private exited?: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    private readonly logPath: string,
  ) {}

  /**
   * Starts Envoy on free ports. A port found free can be taken by another process before Envoy
   * binds it (suites and other tests run at once): Envoy then exits "Address already in use", and
   * the start is tried again on new ports, up to 3 times.
   */
  static async start(opts: RealEnvoyOptions): Promise<RealEnvoy> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await RealEnvoy.startOnce(opts);
      } catch (err) {
        if (attempt >= 3 || !/Address already in use/.test((err as Error).message)) throw err;
      }
    }
  }

  private static async startOnce(opts: RealEnvoyOptions): Promise<RealEnvoy> {
    const found = findEnvoy();
    if (found.bin === undefined) throw new Error(`no Envoy: ${found.reason}`);
    const configPath = resolve(REPO_ROOT, opts.configPath ?? 'envoy/envoy.yaml');
    const text = readFileSync(configPath, 'utf8');
    const names = listenerNames(text);
    const listeners: Record<string, number> = {};
    for (const n of names) listeners[n] = await freePort();
    const adminPort = await freePort();
    const rendered = renderEnvoyConfig(text, { listeners, clusters: opts.clusters, adminPort, edit: opts.edit });
    const dir = mkdtempSync(join(tmpdir(), 'eas-envoy-'));
    const cfg = join(dir, 'envoy.yaml');
    writeFileSync(cfg, rendered);
    const logPath = join(dir, 'envoy.log');
    const child = spawn(
      found.bin,
      [
        '-c',
        cfg,
        '--log-level',
        process.env.ENVOY_LOG_LEVEL ?? opts.logLevel ?? 'warning',
        '--log-path',
        logPath,
        '--concurrency',
        String(opts.concurrency ?? 2),
        // Several Envoys run at once in tests: no shared-memory hot-restart region to collide on.
        '--disable-hot-restart',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const envoy = new RealEnvoy(child, dir, logPath);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    envoy.exited = new Promise((r) => child.once('exit', () => r()));
    envoy.adminUrl = `http://127.0.0.1:${adminPort}`;
    const port = (n: string) => listeners[n];
    if (port('ingress') !== undefined) {
      envoy.url = `http://127.0.0.1:${port('ingress')}`;
      envoy.unregister = registerListener(port('ingress')!, 'ingress');
    }
    if (port('dispatch') !== undefined) envoy.dispatchUrl = `http://127.0.0.1:${port('dispatch')}`;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null) {
        const why = `envoy exited with ${child.exitCode}: ${stderr}${envoy.log()}`;
        rmSync(dir, { recursive: true, force: true });
        throw new Error(why);
      }
      try {
        const res = await fetch(`${envoy.adminUrl}/ready`);
        if (res.status === 200 && (await res.text()).trim() === 'LIVE') break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`envoy not ready within 15 s: ${stderr}${envoy.log()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return envoy;
  }

  /** Envoy's process id (the benchmarks read its CPU time from /proc). */
  get pid(): number {
    return this.child.pid!;
  }

  /** Envoy's own log so far (for failure messages). */
  log(): string {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** Counters and gauges from the admin endpoint, by full name. */
  async stats(filter?: string): Promise<Map<string, number>> {
    const q = filter ? `?filter=${encodeURIComponent(filter)}` : '';
    const text = await (await fetch(`${this.adminUrl}/stats${q}`)).text();
    const out = new Map<string, number>();
    for (const line of text.split('\n')) {
      const m = /^([^:]+): (\d+)$/.exec(line);
      if (m) out.set(m[1]!, Number(m[2]));
    }
    return out;
  }

  /** One counter or gauge (0 when Envoy has not created it yet). */
  async stat(name: string): Promise<number> {
    return (await this.stats(`^${name.replace(/[.]/g, '\\.')}$`)).get(name) ?? 0;
  }

  async close(): Promise<void> {
    this.unregister();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
