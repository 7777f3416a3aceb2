import { isCluster, type RedisClient } from './connection';

/**
 * Coalesces the commands a process sends in one iteration of the event loop into one socket
 * write: the first script call corks the connection's socket, and a `setImmediate` uncorks it
 * after the poll phase, once every socket read of the iteration has queued its commands (Node
 * writes the corked chunks with one writev). ioredis writes every command on its own: on the
 * accept path with 128 concurrent streams, those `write` syscalls were 22 % of the process's CPU
 * profile. Uncorking at `process.nextTick` saved nothing there: each accept's command is sent
 * from its own HTTP/2 read callback, one per tick.
 * Every command keeps its own promise, reply, timeout and retry as ioredis gives them; only the
 * syscalls are fewer. Unlike ioredis' auto-pipelining, this does not bypass `commandTimeout`.
 *
 * On a Cluster each node has its own socket, and which one a command goes to is ioredis'
 * choice: nothing is corked there (a no-op).
 */
export function writeCoalescer(redis: RedisClient): () => void {
  if (isCluster(redis)) return () => {};
  let corked: { uncork(): void } | null = null;
  const uncork = () => {
    const socket = corked;
    corked = null;
    socket?.uncork();
  };
  return () => {
    if (corked !== null || redis.status !== 'ready') return;
    const socket = redis.stream;
    if (typeof socket?.cork !== 'function') return;
    socket.cork();
    corked = socket;
    setImmediate(uncork);
  };
}
