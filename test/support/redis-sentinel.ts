import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports';
import { RedisServer, onRedisNode, pingRedis } from './redis-server';

export interface RedisSentinelOptions {
  replicas?: number;
  sentinels?: number;
  /** down-after-milliseconds: how long the primary may be silent before the sentinels fail it over. */
  downAfterMs?: number;
  failoverTimeoutMs?: number;
  /** The name the sentinels monitor the primary under. */
  name?: string;
}

/** One `redis-server <conf> --sentinel` process with its own folder (a sentinel rewrites its config file). */
class SentinelProcess {
  private child?: ChildProcess;
  readonly dir = mkdtempSync(join(tmpdir(), 'eas-sentinel-'));

  constructor(
    readonly port: number,
    private readonly conf: string,
  ) {}

  async start(): Promise<void> {
    const file = join(this.dir, 'sentinel.conf');
    writeFileSync(file, this.conf);
    this.child = spawn('redis-server', [file, '--sentinel'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) throw new Error(`redis-sentinel exited with code ${this.child.exitCode}`);
      if (await pingRedis(this.port)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-sentinel on port ${this.port} did not start within 10 s`);
  }

  async destroy(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A Sentinel-managed Redis on loopback for tests and drills: one primary, its replicas
 * (`--replicaof`), and sentinels (`redis-server <conf> --sentinel`) monitoring it with a quorum of
 * two and a small down-after-milliseconds, so that a killed primary is replaced within seconds.
 */
export class RedisSentinelSet {
  private constructor(
    /** Every data node, the first one the primary at the start. */
    readonly nodes: RedisServer[],
    private readonly sentinelProcs: SentinelProcess[],
    readonly name: string,
  ) {}

  static async start(options: RedisSentinelOptions = {}): Promise<RedisSentinelSet> {
    const name = options.name ?? 'eas';
    const nodes: RedisServer[] = [];
    const sentinels: SentinelProcess[] = [];
    try {
      const data = ['--save', '', '--appendonly', 'no'];
      const primary = await RedisServer.start({ args: data });
      nodes.push(primary);
      for (let i = 0; i < (options.replicas ?? 2); i++) {
        nodes.push(await RedisServer.start({ args: [...data, '--replicaof', '127.0.0.1', String(primary.port)] }));
      }
      for (let i = 0; i < (options.sentinels ?? 3); i++) {
        const port = await freePort();
        const conf = [
          `port ${port}`,
          'bind 127.0.0.1',
          'protected-mode no',
          `sentinel monitor ${name} 127.0.0.1 ${primary.port} 2`,
          `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${name} ${options.failoverTimeoutMs ?? 5000}`,
          `sentinel parallel-syncs ${name} 2`,
          '',
        ].join('\n');
        const s = new SentinelProcess(port, conf);
        sentinels.push(s);
        await s.start();
      }
      const set = new RedisSentinelSet(nodes, sentinels, name);
      await set.waitHealthy(30_000, options.replicas ?? 2);
      return set;
    } catch (err) {
      for (const s of sentinels) await s.destroy();
      for (const n of nodes) await n.destroy();
      throw err;
    }
  }

  /** REDIS_SENTINELS: every sentinel, host:port, comma-separated. */
  get sentinels(): string {
    return this.sentinelProcs.map((s) => `127.0.0.1:${s.port}`).join(',');
  }

  node(port: number): RedisServer {
    const n = this.nodes.find((x) => x.port === port);
    if (!n) throw new Error(`no node on port ${port}`);
    return n;
  }

  private ask<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
    return onRedisNode(port, fn);
  }

  /** The primary's port as the first answering sentinel names it. */
  async primaryPort(): Promise<number> {
    for (const s of this.sentinelProcs) {
      try {
        const addr = (await this.ask(s.port, (r) => r.call('SENTINEL', 'get-master-addr-by-name', this.name))) as [string, string] | null;
        if (addr) return Number(addr[1]);
      } catch {
        /* the next one */
      }
    }
    throw new Error('no sentinel answers');
  }

  /** Until the sentinels agree on a primary that says role:master and has `replicas` replicas online, known to every sentinel. */
  async waitHealthy(timeoutMs = 20_000, replicas = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let why = '';
    for (;;) {
      try {
        why = '';
        const ports = await Promise.all(
          this.sentinelProcs.map(async (s) => {
            const addr = (await this.ask(s.port, (r) => r.call('SENTINEL', 'get-master-addr-by-name', this.name))) as [string, string];
            const master = (await this.ask(s.port, (r) => r.call('SENTINEL', 'master', this.name))) as string[];
            const field = (k: string) => master[master.indexOf(k) + 1];
            if (Number(field('num-other-sentinels')) < this.sentinelProcs.length - 1) why = `sentinel ${s.port} does not know the others yet`;
            if (Number(field('num-slaves')) < replicas) why = `sentinel ${s.port} knows ${field('num-slaves')} replica(s)`;
            return Number(addr[1]);
          }),
        );
        if (new Set(ports).size !== 1) why = `the sentinels name different primaries (${ports.join(', ')})`;
        const port = ports[0]!;
        if (!why) {
          const info = await this.ask(port, (r) => r.info('replication'));
          const online = [...info.matchAll(/^slave\d+:.*state=online/gm)].length;
          if (!/role:master/.test(info)) why = `${port} is not a primary yet`;
          else if (online < replicas) why = `${port} has ${online} replica(s) online`;
        }
        if (!why) return port;
      } catch (err) {
        why = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`Sentinel set not healthy within ${timeoutMs} ms: ${why}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async destroy(): Promise<void> {
    for (const s of this.sentinelProcs) await s.destroy();
    for (const n of this.nodes) await n.destroy();
  }
}
