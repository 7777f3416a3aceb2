import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { freePort } from './ports';
import { RedisServer, onRedisNode } from './redis-server';

const run = promisify(execFile);

export interface RedisClusterOptions {
  primaries?: number;
  replicasPerPrimary?: number;
  /** cluster-node-timeout: how long a primary may be silent before its replica takes over. */
  nodeTimeoutMs?: number;
  /** More redis-server arguments for every node. */
  args?: string[];
}

/** One node as the cluster sees it (CLUSTER NODES). */
export interface ClusterNode {
  port: number;
  id: string;
  role: 'primary' | 'replica';
  /** A replica's primary. */
  primaryPort: number | null;
  /** Slot ranges a primary holds. */
  slots: Array<[number, number]>;
  failed: boolean;
}

/**
 * A real Redis Cluster on loopback for tests and drills: `redis-server --cluster-enabled yes` on
 * free ports (each node a RedisServer, data and nodes.conf in its own folder, so a killed node
 * restarts as itself), joined by `redis-cli --cluster create ... --cluster-replicas N`, with a
 * small cluster-node-timeout so that a replica takes over from a killed primary within seconds.
 */
export class RedisCluster {
  private constructor(
    readonly nodes: RedisServer[],
    readonly nodeTimeoutMs: number,
  ) {}

  static async start(options: RedisClusterOptions = {}): Promise<RedisCluster> {
    const primaries = options.primaries ?? 3;
    const replicas = options.replicasPerPrimary ?? 1;
    const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
    const args = [
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-node-timeout',
      String(nodeTimeoutMs),
      '--save',
      '',
      '--appendonly',
      'no',
      ...(options.args ?? []),
    ];
    const nodes: RedisServer[] = [];
    try {
      for (let i = 0; i < primaries * (1 + replicas); i++) nodes.push(await RedisServer.start({ port: await freePort(), args }));
      const cluster = new RedisCluster(nodes, nodeTimeoutMs);
      await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], {
        timeout: 60_000,
      });
      await cluster.waitHealthy(30_000, replicas);
      return cluster;
    } catch (err) {
      for (const n of nodes) await n.destroy();
      throw err;
    }
  }

  /** REDIS_CLUSTER_NODES: every node, host:port, comma-separated. */
  get seeds(): string {
    return this.nodes.map((n) => `127.0.0.1:${n.port}`).join(',');
  }

  node(port: number): RedisServer {
    const n = this.nodes.find((x) => x.port === port);
    if (!n) throw new Error(`no node on port ${port}`);
    return n;
  }

  /** A short-lived connection to one node, closed after `fn`. */
  onNode<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
    return onRedisNode(port, fn);
  }

  /** The node table as a running node (the first that answers) sees it. */
  async table(): Promise<ClusterNode[]> {
    for (const n of this.nodes.filter((x) => x.running)) {
      try {
        return parseNodes(await this.onNode(n.port, (r) => r.cluster('NODES') as Promise<string>));
      } catch {
        /* the next one */
      }
    }
    throw new Error('no cluster node answers');
  }

  async primaries(): Promise<ClusterNode[]> {
    return (await this.table()).filter((n) => n.role === 'primary' && n.slots.length > 0 && !n.failed);
  }

  /** The port of the primary that holds `key`'s slot. */
  async primaryOf(key: string): Promise<number> {
    const alive = this.nodes.find((x) => x.running)!;
    const slot = await this.onNode(alive.port, (r) => r.cluster('KEYSLOT', key) as Promise<number>);
    const owner = (await this.primaries()).find((p) => p.slots.some(([a, b]) => slot >= a && slot <= b));
    if (!owner) throw new Error(`no primary holds slot ${slot}`);
    return owner.port;
  }

  /** The replicas of the primary on `port`. */
  async replicasOf(port: number): Promise<number[]> {
    return (await this.table()).filter((n) => n.role === 'replica' && n.primaryPort === port && !n.failed).map((n) => n.port);
  }

  /**
   * Until every running node says cluster_state:ok, knows every node, every slot is held by a
   * primary that is not failed, and (with `replicas`) each such primary has that many replicas
   * that completed their sync.
   */
  async waitHealthy(timeoutMs = 20_000, replicas = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let why = '';
    for (;;) {
      why = await this.unhealthy(replicas).catch((err: Error) => err.message);
      if (why === '') return;
      if (Date.now() > deadline) throw new Error(`Redis Cluster not healthy within ${timeoutMs} ms: ${why}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async unhealthy(replicas: number): Promise<string> {
    for (const n of this.nodes.filter((x) => x.running)) {
      const info = await this.onNode(n.port, (r) => r.cluster('INFO') as Promise<string>);
      if (!/cluster_state:ok/.test(info)) return `${n.port}: cluster_state not ok`;
      if (!new RegExp(`cluster_known_nodes:${this.nodes.length}\\b`).test(info)) return `${n.port}: does not know every node yet`;
    }
    // Clients learn replicas from CLUSTER SLOTS, which lists a replica once it gossiped a replication offset.
    for (const n of this.nodes.filter((x) => x.running)) {
      const slots = (await this.onNode(n.port, (r) => r.cluster('SLOTS'))) as unknown[][];
      if (slots.some((range) => range.length - 3 < replicas)) return `${n.port}: CLUSTER SLOTS lists fewer than ${replicas} replica(s) per range`;
    }
    const table = await this.table();
    const held = table.filter((p) => p.role === 'primary' && !p.failed).reduce((sum, p) => sum + p.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0);
    if (held !== 16384) return `${held} of 16384 slots held by live primaries`;
    for (const p of table.filter((x) => x.role === 'primary' && x.slots.length > 0)) {
      const synced = await Promise.all(
        table
          .filter((r) => r.role === 'replica' && r.primaryPort === p.port && !r.failed && this.node(r.port).running)
          .map((r) => this.onNode(r.port, (c) => c.info('replication')).then((i) => /master_link_status:up/.test(i) && /master_sync_in_progress:0/.test(i))),
      );
      if (synced.filter(Boolean).length < replicas) return `primary ${p.port} has ${synced.filter(Boolean).length} synced replica(s)`;
    }
    return '';
  }

  /** An ioredis Cluster client for looking inside (no offline queue games: plain defaults). */
  client(): Cluster {
    const c = new Cluster(
      this.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
      { redisOptions: { connectTimeout: 1000 } },
    );
    c.on('error', () => undefined);
    return c;
  }

  async destroy(): Promise<void> {
    for (const n of this.nodes) await n.destroy();
  }
}

function parseNodes(text: string): ClusterNode[] {
  const byId = new Map<string, number>();
  const rows = text
    .trim()
    .split('\n')
    .map((line) => line.trim().split(' '));
  for (const f of rows) byId.set(f[0]!, Number(f[1]!.split('@')[0]!.split(':').pop()));
  return rows.map((f) => {
    const flags = f[2]!.split(',');
    return {
      id: f[0]!,
      port: byId.get(f[0]!)!,
      role: flags.includes('master') ? 'primary' : 'replica',
      primaryPort: f[3] === '-' ? null : (byId.get(f[3]!) ?? null),
      slots: f
        .slice(8)
        .filter((s) => !s.startsWith('['))
        .map((s) => {
          const [a, b] = s.split('-').map(Number);
          return [a!, b ?? a!] as [number, number];
        }),
      failed: flags.includes('fail'),
    };
  });
}
