/**
 * What every scenario runs in: the settings of this `npm run bench`, its log and time budget, and
 * the processes scenarios share (a private Redis, the no-op HTTP server, the floor, an extproc
 * sidecar). Each shared process starts when a scenario first asks for it and stops before a
 * scenario that does not use it, so a scenario run alone starts what it needs and a full run
 * starts each only once, as one long script did.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisServer } from '../test/support/redis-server';
import { ROOT, freePort, spawnChild, waitHttpOk, type Child } from './lib';

export interface BenchSettings {
  /** BENCH_QUICK=1: shorter measurements, fewer completions. */
  quick: boolean;
  /** BENCH_PROFILE=1: sidecars run with `--cpu-prof`. */
  profile: boolean;
  /** Scratch folder (frames, logs, profiles). */
  tmp: string;
  /** Past this, scenarios marked `optional` are skipped (the whole bench stays under 10 minutes). */
  budgetMs: number;
}

export type SharedProcess = 'redis' | 'noop' | 'floor' | 'extproc';

export interface Scenario<R> {
  /** Shared processes it uses: the runner stops the others before it starts. */
  uses: readonly SharedProcess[];
  /** Skipped (and recorded as skipped) once the run is past its time budget. */
  optional?: boolean;
  run(env: BenchEnv): Promise<R>;
}

export interface BenchRedis {
  server: RedisServer;
  client: Redis;
}

export interface Noop {
  child: Child;
  port: number;
  stats(): Promise<{ upstream: number; hooks: number; held: number; firstUpstreamAt: number; lastHookAt: number }>;
  send(m: object): void;
}

export interface Floor {
  child: Child;
  port: number;
}

export interface Sidecar {
  child: Child;
  grpcPort: number;
  adminPort: number;
  /** Under BENCH_PROFILE=1: where its profile is written when it exits. */
  profile?: { label: string; dir: string };
}

const BENCH_DIR = join(ROOT, 'dist-bench', 'bench');
/** Node arguments that preload bench/heap-probe.ts (a full GC and `HEAP <json>` on SIGUSR2). */
export const HEAP_PROBE_ARGS = ['--expose-gc', '--require', join(BENCH_DIR, 'heap-probe.js')];

export class BenchEnv {
  private readonly started = Date.now();
  private shared: { redis?: BenchRedis; noop?: Noop; floor?: Floor; extproc?: Sidecar } = {};
  private readonly profileDirs: Array<{ label: string; dir: string }> = [];
  /** Scenarios that used the shared extproc sidecar while it ran (its profile's label). */
  private extprocUsers: string[] = [];
  private current = '';

  constructor(readonly settings: BenchSettings) {}

  get quick(): boolean {
    return this.settings.quick;
  }

  get tmp(): string {
    return this.settings.tmp;
  }

  readonly log = (msg: string): void => {
    process.stderr.write(`[bench +${((Date.now() - this.started) / 1000).toFixed(0)}s] ${msg}\n`);
  };

  overBudget(): boolean {
    return Date.now() - this.started > this.settings.budgetMs;
  }

  /** Profile folders of the sidecars that ran with `--cpu-prof` (written when each exits). */
  get profiles(): ReadonlyArray<{ label: string; dir: string }> {
    return this.profileDirs;
  }

  /** Called by the runner before each scenario: stops the shared processes it does not use. */
  async enter(name: string, uses: readonly SharedProcess[]): Promise<void> {
    this.current = name;
    for (const p of ['extproc', 'floor', 'noop', 'redis'] as const) if (!uses.includes(p)) await this.stopShared(p);
  }

  async redis(): Promise<BenchRedis> {
    if (!this.shared.redis) this.shared.redis = await startRedis();
    return this.shared.redis;
  }

  async noop(): Promise<Noop> {
    if (!this.shared.noop) {
      const child = this.nodeChild('noop-http.js', [], 'noop-http', {}, true);
      const port = Number((await child.waitLine(/^READY /, 10_000)).split(' ')[1]);
      const stats = () =>
        new Promise<Awaited<ReturnType<Noop['stats']>>>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('noop-http stats timed out')), 5000);
          child.proc.once('message', (m) => {
            clearTimeout(t);
            resolve(m as Awaited<ReturnType<Noop['stats']>>);
          });
          child.proc.send({ cmd: 'stats' });
        });
      this.shared.noop = { child, port, stats, send: (m) => child.proc.send(m) };
    }
    return this.shared.noop;
  }

  async floor(): Promise<Floor> {
    if (!this.shared.floor) {
      const child = this.nodeChild('floor-server.js', ['0'], 'floor');
      const port = Number((await child.waitLine(/^READY /, 10_000)).split(' ')[1]);
      this.shared.floor = { child, port };
    }
    return this.shared.floor;
  }

  /** The shared `--role extproc` sidecar on the shared Redis, without EXTPROC_TOKEN (sections 1 and 2 send no gRPC metadata). */
  async extproc(): Promise<Sidecar> {
    if (!this.extprocUsers.includes(this.current)) this.extprocUsers.push(this.current);
    if (!this.shared.extproc) {
      const redis = await this.redis();
      this.shared.extproc = await this.startSidecar('extproc', redis.server.url, {}, { profileLabel: this.settings.profile ? 'extproc' : undefined });
    }
    return this.shared.extproc;
  }

  /**
   * A sidecar of its own (`node dist/src/main.js --role <role>`), ready when /readyz answers 200.
   * `profileLabel` given: runs with `--cpu-prof`, the profile listed under that label;
   * `heapProbe`: with bench/heap-probe.ts preloaded (heapAfterGc reads its heap).
   */
  async startSidecar(
    role: 'extproc' | 'worker',
    redisUrl: string,
    env: NodeJS.ProcessEnv,
    { profileLabel, heapProbe = false }: { profileLabel?: string; heapProbe?: boolean } = {},
  ): Promise<Sidecar> {
    const grpcPort = await freePort();
    const adminPort = await freePort();
    const profile = profileLabel === undefined ? undefined : { label: profileLabel, dir: join(this.tmp, `prof-${role}-${Date.now()}`) };
    if (profile) this.profileDirs.push(profile);
    const nodeArgs = [...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile.dir}`] : []), ...(heapProbe ? HEAP_PROBE_ARGS : [])];
    const child = spawnChild(
      process.execPath,
      [...nodeArgs, join(ROOT, 'dist', 'src', 'main.js'), '--role', role],
      {
        EXTPROC_ADDR: `127.0.0.1:${grpcPort}`,
        ADMIN_ADDR: `127.0.0.1:${adminPort}`,
        REDIS_URL: redisUrl,
        LOG_LEVEL: 'warn',
        ...env,
      },
      `sidecar-${role}`,
    );
    await waitHttpOk(`http://127.0.0.1:${adminPort}/readyz`, 15_000);
    return { child, grpcPort, adminPort, profile };
  }

  /** One of the bench's own programs (dist-bench/bench/<script>) as a child process; `nodeArgs` go before the script. */
  nodeChild(script: string, args: string[], name: string, env: NodeJS.ProcessEnv = {}, ipc = false, nodeArgs: string[] = []): Child {
    return spawnChild(process.execPath, [...nodeArgs, join(BENCH_DIR, script), ...args], env, name, ipc);
  }

  /** Stops every shared process (sidecars first, Redis last). */
  async close(): Promise<void> {
    for (const p of ['extproc', 'floor', 'noop', 'redis'] as const) {
      try {
        await this.stopShared(p);
      } catch (err) {
        this.log(`stopping ${p} failed: ${(err as Error).message}`);
      }
    }
  }

  private async stopShared(p: SharedProcess): Promise<void> {
    const { redis, noop, floor, extproc } = this.shared;
    if (p === 'redis' && redis) {
      this.shared.redis = undefined;
      redis.client.disconnect();
      await redis.server.destroy();
    } else if (p === 'noop' && noop) {
      this.shared.noop = undefined;
      await noop.child.stop('SIGTERM', 5000);
    } else if (p === 'floor' && floor) {
      this.shared.floor = undefined;
      await floor.child.stop('SIGTERM', 5000);
    } else if (p === 'extproc' && extproc) {
      this.shared.extproc = undefined;
      if (extproc.profile) extproc.profile.label = `extproc (${this.extprocUsers.join(', ')})`;
      this.extprocUsers = [];
      // A grace period: under --cpu-prof the sidecar writes its profile on a clean exit.
      await extproc.child.stop('SIGTERM', 10_000);
    }
  }
}

/** A private Redis (no persistence unless `args` say so) and a client for the bench's own reads. */
export async function startRedis(args?: string[]): Promise<BenchRedis> {
  const server = await RedisServer.start(args ? { args } : {});
  return { server, client: new Redis(server.url, { maxRetriesPerRequest: 3 }) };
}
