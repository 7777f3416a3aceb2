import type { Socket } from 'node:net';
import { Redis, type Cluster } from 'ioredis';
import { isCluster, nodeAddress, urlOptions, type RedisClient, type RedisTarget } from './connection';

/** One node of the store as this process sees it. */
export interface RedisNodeState {
  /** host:port */
  address: string;
  /**
   * primary / replica (from the Cluster's own node table, or from the primary's INFO replication);
   * sentinel; seed: a configured Cluster node the client has not reached (no node table yet).
   */
  role: 'primary' | 'replica' | 'sentinel' | 'seed';
  /**
   * Primaries, sentinels and Cluster replicas: they answered this process's PING. Replicas of one
   * Redis or of a Sentinel-managed primary: their link to the primary is up, as the primary says.
   */
  reachable: boolean;
  /** Cluster primaries: they hold slots (a failed primary whose replica took over holds none). */
  slots?: boolean;
  /** The primary (host:port) of a replica, where known. */
  primary?: string;
}

export interface RedisTopology {
  mode: RedisTarget['mode'];
  nodes: RedisNodeState[];
}

/** How the primaries look, for /readyz: `ok` every one answers, `degraded` some (a Cluster shard is failing over), `unreachable` none. */
export function primariesHealth(t: RedisTopology): 'ok' | 'degraded' | 'unreachable' {
  const serving = t.nodes.filter((n) => n.role === 'primary' && n.slots !== false);
  const up = serving.filter((n) => n.reachable).length;
  if (serving.length === 0 || up === 0) return 'unreachable';
  return up === serving.length ? 'ok' : 'degraded';
}

/** Whether every serving primary has at least `n` replicas whose link is up (REDIS_MIN_REPLICAS_ACK). */
export function replicasHealth(t: RedisTopology, n: number): 'ok' | 'too_few' {
  const serving = t.nodes.filter((x) => x.role === 'primary' && x.slots !== false);
  const ok = serving.every((p) => t.nodes.filter((r) => r.role === 'replica' && r.primary === p.address && r.reachable).length >= n);
  return serving.length > 0 && ok ? 'ok' : 'too_few';
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.finally(() => clearTimeout(timer)), new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), ms)))]);
}

const answers = (node: Redis, timeoutMs: number): Promise<boolean> =>
  within(node.ping(), timeoutMs).then(
    (r) => r === 'PONG',
    () => false,
  );

/** Replicas as the primary lists them in INFO replication (`slave0:ip=…,port=…,state=online,…`). */
function replicasOf(info: string, primary: string): RedisNodeState[] {
  const out: RedisNodeState[] = [];
  for (const m of info.matchAll(/^slave\d+:(.*)$/gm)) {
    const f = Object.fromEntries(m[1]!.split(',').map((kv) => kv.split('=') as [string, string]));
    out.push({ address: nodeAddress({ host: f.ip, port: Number(f.port) }), role: 'replica', reachable: f.state === 'online', primary });
  }
  return out;
}

/**
 * The store's nodes and which answer, read now: a Cluster's node table (CLUSTER NODES) with a PING
 * to each node; one Redis or a Sentinel-managed primary with its replicas; the sentinels.
 */
export async function redisTopology(client: RedisClient, target: RedisTarget, timeoutMs = 1000): Promise<RedisTopology> {
  if (target.mode === 'cluster' && isCluster(client)) return clusterTopology(client, target, timeoutMs);
  const redis = client as Redis;
  const nodes: RedisNodeState[] = [];
  let primary: string | null = null;
  if (target.mode === 'single') {
    const u = new URL(target.url);
    primary = nodeAddress({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 6379) });
  } else if (redis.status === 'ready') {
    const socket = (redis as unknown as { stream?: Socket }).stream;
    if (socket?.remoteAddress) primary = nodeAddress({ host: socket.remoteAddress, port: socket.remotePort });
  }
  const up = redis.status === 'ready' && (await answers(redis, timeoutMs));
  if (primary !== null) {
    nodes.push({ address: primary, role: 'primary', reachable: up });
    if (up) {
      const info = await within(redis.info('replication'), timeoutMs).catch(() => '');
      nodes.push(...replicasOf(info, primary));
    }
  }
  if (target.mode === 'sentinel') {
    for (const s of target.sentinels) nodes.push({ address: nodeAddress(s), role: 'sentinel', reachable: await probe(s, target.url, timeoutMs) });
  }
  return { mode: target.mode, nodes };
}

/** Whether a node this process holds no connection to answers PING, on a connection of its own. */
async function probe(address: { host: string; port: number }, url: string, timeoutMs: number): Promise<boolean> {
  const { username, password, tls } = urlOptions(url);
  const conn = new Redis({
    ...address,
    username,
    password,
    tls,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    enableReadyCheck: false,
    lazyConnect: true,
  });
  conn.on('error', () => undefined);
  try {
    await within(conn.connect(), timeoutMs);
    return await answers(conn, timeoutMs);
  } catch {
    return false;
  } finally {
    conn.disconnect();
  }
}

/** One line of CLUSTER NODES: `<id> <ip:port@cport[,host]> <flags> <primary id|-> <ping> <pong> <epoch> <link> [slots...]`. */
interface ClusterNodeLine {
  id: string;
  address: string;
  node: { host: string; port: number };
  primaryFlag: boolean;
  primaryId: string;
  slots: boolean;
}

export function parseClusterNodes(text: string): ClusterNodeLine[] {
  const out: ClusterNodeLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(' ');
    if (f.length < 8) continue;
    const hostPort = f[1]!.split('@')[0]!;
    const i = hostPort.lastIndexOf(':');
    if (i <= 0) continue; // a node without an address (noaddr)
    const flags = f[2]!.split(',');
    const node = { host: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(i + 1)) };
    out.push({
      id: f[0]!,
      address: nodeAddress(node),
      node,
      primaryFlag: flags.includes('master'),
      primaryId: f[3]!,
      slots: f.length > 8,
    });
  }
  return out;
}

async function clusterTopology(cluster: Cluster, target: Extract<RedisTarget, { mode: 'cluster' }>, timeoutMs: number): Promise<RedisTopology> {
  const pool = new Map(cluster.nodes('all').map((n) => [nodeAddress(n.options), n]));
  let table: ClusterNodeLine[] = [];
  // Connected nodes first; the others connect when asked (the pool connects lazily).
  const order = [...pool.values()].sort((a, b) => Number(b.status === 'ready') - Number(a.status === 'ready'));
  for (const node of order) {
    table = parseClusterNodes(await within(node.cluster('NODES') as Promise<string>, timeoutMs).catch(() => ''));
    if (table.length > 0) break;
  }
  if (table.length === 0) {
    return { mode: target.mode, nodes: target.nodes.map((n): RedisNodeState => ({ address: nodeAddress(n), role: 'seed', reachable: false })) };
  }
  const byId = new Map(table.map((n) => [n.id, n.address]));
  const nodes = await Promise.all(
    table.map(async (n): Promise<RedisNodeState> => {
      // The client connects to replicas once CLUSTER SLOTS lists them (after their first sync).
      const conn = pool.get(n.address);
      const reachable = conn !== undefined ? await answers(conn, timeoutMs) : await probe(n.node, target.url, timeoutMs);
      return n.primaryFlag
        ? { address: n.address, role: 'primary', reachable, slots: n.slots }
        : { address: n.address, role: 'replica', reachable, primary: byId.get(n.primaryId) };
    }),
  );
  return { mode: target.mode, nodes: nodes.sort((a, b) => a.address.localeCompare(b.address, 'en', { numeric: true })) };
}
