import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { Redis } from 'ioredis';
import { freePort } from './ports';

export interface RedisServerOptions {
  /** Extra redis-server arguments, e.g. ['--appendonly', 'yes', '--appendfsync', 'always']. */
  args?: string[];
  port?: number;
}

/**
 * A private redis-server on a free loopback port (never the machine's 6379), for tests that must
 * kill and restart Redis, and for the benchmarks. Data lives in its own temporary folder so that
 * AOF/RDB survive a restart of the same instance.
 */
export class RedisServer {
  readonly port: number;
  readonly dir: string;
  private child?: ChildProcess;
  private readonly args: string[];

  private constructor(port: number, args: string[]) {
    this.port = port;
    this.args = args;
    this.dir = mkdtempSync(join(tmpdir(), 'eas-redis-'));
  }

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? (await freePort()), options.args ?? ['--save', '', '--appendonly', 'no']);
    await server.startProcess();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The running process's id (the benchmarks read its CPU time from /proc). */
  get pid(): number {
    if (!this.running || this.child?.pid === undefined) throw new Error(`redis-server on port ${this.port} is not running`);
    return this.child.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async startProcess(): Promise<void> {
    if (this.running) return;
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--protected-mode', 'no', ...this.args], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
      if (await pingRedis(this.port)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-server on port ${this.port} did not start within 10 s`);
  }

  /** Stops the process (SIGKILL by default: a crash, not a clean shutdown). */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
  }

  /** Sends `signal` without waiting (SIGSTOP freezes the process, as a stalled machine would; SIGCONT thaws it). */
  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child!.kill(signal);
  }

  async restart(): Promise<void> {
    await this.stop('SIGTERM');
    await this.startProcess();
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** True when a Redis on 127.0.0.1:port answers PING. */
export function pingRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let buffered = '';
    socket.setTimeout(500);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      if (buffered.includes('\r\n')) {
        socket.destroy();
        resolve(buffered.startsWith('+PONG'));
      }
    });
    socket.on('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('error', () => resolve(false));
  });
}

/** A short-lived connection to the Redis (or sentinel) on `port`, closed after `fn`; it fails fast rather than retrying. */
export async function onRedisNode<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
    commandTimeout: 2000,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}
