import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { placementFor, type Config } from './config';
import { AsyncAcceptor, OpenApiDocument, RunsApi, SyncWait, createEnvoyHandler } from './api';
import { AdminServer } from './admin';
import { Dispatcher } from './dispatch';
import type { ExtProcServer } from './extproc';
import {
  RunEvents,
  RunStore,
  connectRedis,
  connectSubscriber,
  evictionPolicyProblems,
  isCluster,
  primariesHealth,
  redisTopology,
  replicasHealth,
  type RedisClient,
  type RedisTopology,
} from './runs';
import { Metrics, type Logger } from './telemetry';
import { startTracing } from './tracing';
import { DeliveryWorker, SecretBox, WebhookSender, validateWebhookUrl } from './webhooks';

/** The longest ?wait=N the runs API accepts (docs/CONTRACT.md §5). */
const MAX_WAIT_SECONDS = 60;

export interface Sidecar {
  readonly extprocPort: number | null;
  readonly adminPort: number;
  readonly metrics: Metrics;
  readonly workerId: string;
  /** Graceful stop (SIGTERM): refuse new runs, let in-flight ones finish within SHUTDOWN_GRACE. */
  stop(): Promise<void>;
}

/**
 * Builds and starts the parts the role needs. This is the whole flow of a run:
 * ext_proc (accept) -> runs store (Redis) -> dispatcher (replay) -> store -> webhook worker.
 */
export async function startSidecar(config: Config, logger: Logger, metrics = new Metrics()): Promise<Sidecar> {
  const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  // Off (no SDK loaded) unless an OTLP endpoint is configured.
  const tracing = await startTracing(config.tracing, logger);
  const redis = connectRedis(config.redis, { commandTimeoutMs: config.redisCommandTimeoutMs, name: 'eas' });
  const subscriber = connectSubscriber(config.redis, 'eas-events');
  redis.on('error', () => undefined); // reported by the parts that make calls, and by /readyz
  subscriber.on('error', () => undefined);
  redis.connect().catch((err: Error) => logger.warn({ err }, 'Redis not reachable yet; retrying in the background'));
  // Checked on every (re)connect, and on a Cluster at each refresh of its slot table: a failover
  // can land on a primary configured differently. Logged once per node and policy.
  const evicting = new Map<string, string>();
  const checkEviction = () => {
    evictionPolicyProblems(redis).then(
      (problems) => {
        if (!isCluster(redis)) evicting.clear();
        for (const { node, policy } of problems) {
          if (evicting.get(node) === policy) continue;
          evicting.set(node, policy);
          logger.error(
            { maxmemory_policy: policy, node },
            `Redis evicts keys (maxmemory-policy ${policy} on ${node}): accepted runs can be lost when it fills up; set maxmemory-policy noeviction`,
          );
        }
      },
      () => undefined,
    );
  };
  redis.on('ready', checkEviction);
  if (isCluster(redis)) redis.on('refresh', checkEviction);

  const storeOptions = {
    keyPrefix: config.redisKeyPrefix,
    runTtlMs: config.runTtlMs,
    leaseTimeoutMs: config.leaseTimeoutMs,
    maxDispatchAttempts: config.maxDispatchAttempts,
    redispatchInterrupted: config.redispatchInterrupted,
    queues: config.queues,
    idempotencyKeyTtlMs: config.idempotencyKeyTtlMs,
  };
  const store = new RunStore(redis, storeOptions);
  const connections: RedisClient[] = [redis];
  const connect = (name: string, commandTimeoutMs: number): RedisClient => {
    const c = connectRedis(config.redis, { commandTimeoutMs, name });
    c.on('error', () => undefined);
    c.connect().catch(() => undefined);
    connections.push(c);
    return c;
  };
  // The dispatcher and the delivery worker get their own connection with a longer command
  // timeout: their replies carry bodies, and a large one must not time out the accept path's.
  const workerStore = config.role === 'extproc' ? store : new RunStore(connect('eas-worker', config.redisWorkerCommandTimeoutMs), storeOptions);
  // With REDIS_MIN_REPLICAS_ACK, new runs are written on a connection of their own: each batch's
  // WAIT holds its connection until the replicas answer, which must not delay the runs API.
  const acceptStore =
    config.role === 'worker' || config.redisMinReplicasAck === 0
      ? store
      : new RunStore(connect('eas-accept', config.redisCommandTimeoutMs), {
          ...storeOptions,
          minReplicasAck: config.redisMinReplicasAck,
          replicaAckBudgetMs: config.redisCommandTimeoutMs,
        });
  const events = new RunEvents(subscriber, store.events);
  // Queues learnt from the registry later (by the worker's store) have their own event channel on a Cluster.
  for (const s of new Set([store, workerStore])) s.onQueueAdded((tag) => void events.watchTag(tag).catch(() => undefined));
  if (!isCluster(subscriber)) await subscriber.connect().catch(() => undefined);
  else subscriber.connect().catch(() => undefined);
  events.start(store.eventChannels()).catch((err: Error) => logger.warn({ err }, 'could not subscribe to run events yet'));

  let draining = false;
  // Aborted when the stop begins: requests held for their result (Prefer: wait) get their 202 at once.
  const stopping = new AbortController();
  const secretBox = new SecretBox(config.webhook.secretEncryptionKeys);
  const networkPolicy = { allowPrivateNetworks: config.webhook.allowPrivateNetworks, allowedHosts: config.webhook.allowedHosts };
  const runsApi = new RunsApi(
    store,
    events,
    { prefix: config.runsApiPrefix, ownerHeader: config.ownerHeader, ownerRequired: config.ownerRequired, maxWaitSeconds: MAX_WAIT_SECONDS },
    metrics,
    logger,
  );

  const contract = new OpenApiDocument(config.runsApiPrefix);

  let extproc: ExtProcServer | null = null;
  if (config.role !== 'worker') {
    const acceptor = new AsyncAcceptor(
      acceptStore,
      {
        runsApiPrefix: config.runsApiPrefix,
        ownerHeader: config.ownerHeader,
        ownerRequired: config.ownerRequired,
        maxBodyBytes: config.maxBodyBytes,
        placementFor: (path) => placementFor(config, path),
        validateWebhookUrl: (raw) => validateWebhookUrl(raw, networkPolicy),
        isAccepting: () => !draining,
        syncWait: new SyncWait(
          store,
          events,
          // What one ImmediateResponse can carry: the ext_proc server's message limit is MAX_BODY_BYTES plus room for the rest.
          { maxSeconds: config.maxSyncWaitSeconds, maxBodyBytes: config.maxBodyBytes },
          metrics,
          logger,
          stopping.signal,
        ),
        sealWebhookSecret: secretBox.enabled ? (secret, runId) => secretBox.seal(secret, runId) : null,
      },
      metrics,
      logger,
    );
    // Loaded for the roles that serve it: gRPC and the proto are about 7 MiB of a worker's idle RSS (docs/BENCHMARKS.md).
    const { ExtProcServer } = await import('./extproc');
    extproc = new ExtProcServer(
      createEnvoyHandler(acceptor, runsApi, config.maxBodyBytes, contract, tracing),
      {
        host: config.extprocAddr.host,
        port: config.extprocAddr.port,
        maxBodyBytes: config.maxBodyBytes,
        token: config.extprocToken,
        streamIdleTimeoutMs: config.extprocStreamIdleTimeoutMs,
        bufferBudgetBytes: config.extprocBufferBudgetBytes,
      },
      logger,
      metrics,
    );
    await extproc.start();
  }

  let dispatcher: Dispatcher | null = null;
  let delivery: DeliveryWorker | null = null;
  let sender: WebhookSender | null = null;
  if (config.role !== 'extproc') {
    sender = new WebhookSender({ secrets: config.webhook.secrets, timeoutMs: config.webhook.timeoutMs, policy: networkPolicy });
    const resultBase = `${config.publicBaseUrl}${config.runsApiPrefix}`;
    delivery = new DeliveryWorker(
      workerStore,
      sender,
      {
        retryScheduleMs: config.webhook.retryScheduleMs,
        concurrency: config.webhook.concurrency,
        maxBodyBytes: config.webhook.maxBodyBytes,
        resultUrl: (id) => `${resultBase}/${id}/result`,
        timeoutMs: config.webhook.timeoutMs,
        visibilityMs: config.webhook.visibilityMs,
        tracing,
        secrets: secretBox,
      },
      metrics,
      logger,
    );
    const worker = delivery;
    dispatcher = new Dispatcher(
      workerStore,
      events,
      {
        workerId,
        dispatchUrl: config.dispatchUrl,
        concurrency: config.dispatchConcurrency,
        maxResultBytes: config.maxResultBytes,
        leaseTimeoutMs: config.leaseTimeoutMs,
        backpressureFor: (queue) => config.queues.get(queue) ?? config.queues.get('default')!,
        handOff: {
          windowMs: config.webhook.visibilityMs,
          hasCapacity: () => worker.hasCapacity(),
          deliver: (d) => worker.deliverNow(d),
          wake: () => worker.wake(),
        },
        tracing,
      },
      metrics,
      logger,
    );
  }

  const admin = new AdminServer(
    {
      host: config.adminAddr.host,
      port: config.adminAddr.port,
      adminToken: config.adminToken,
      runsApiPrefix: config.runsApiPrefix,
      allowedHosts: config.adminAllowedHosts,
    },
    {
      live: () => true,
      ready: async () => {
        const topology = await topologyOf(redis, config.redis);
        const checks: Record<string, string> = {};
        // A Cluster with a shard failing over still takes runs for the others: degraded, not down.
        checks.redis = primariesHealth(topology);
        if (config.redisMinReplicasAck > 0) checks.replicas = replicasHealth(topology, config.redisMinReplicasAck);
        checks.draining = draining ? 'yes' : 'no';
        return { ready: checks.redis !== 'unreachable' && !draining, checks, redis: topology };
      },
      beforeScrape: async () => {
        const topology = await topologyOf(redis, config.redis);
        metrics.redisNodeUp.reset();
        for (const n of topology.nodes) metrics.redisNodeUp.set({ node: n.address, role: n.role }, n.reachable ? 1 : 0);
        for (const q of await store.queueStats()) {
          metrics.queueDepth.set({ queue: q.queue }, q.queued);
          metrics.queueDelayed.set({ queue: q.queue }, q.delayed);
          metrics.queueInFlight.set({ queue: q.queue }, q.inFlight);
          if (q.limit !== null) metrics.queueLimit.set({ queue: q.queue }, q.limit);
          metrics.queueOldestAge.set({ queue: q.queue }, (q.oldestQueuedAgeMs ?? 0) / 1000);
        }
      },
    },
    metrics,
    runsApi,
    logger,
    contract,
    () => store.queueStats(),
  );
  await admin.start();

  // Serve only once Redis answers, so that Envoy's health checks route nothing here before.
  const markServing = async () => {
    while (!draining && !(await pingRedis(redis))) await new Promise((r) => setTimeout(r, 200));
    if (!draining) extproc?.setServing(true);
  };
  void markServing();
  dispatcher?.start();
  delivery?.start();
  logger.info(
    { role: config.role, worker_id: workerId, extproc_port: extproc?.port ?? null, admin_port: admin.port, dispatch_url: config.dispatchUrl },
    'envoy-async-sidecar started',
  );

  let stopped: Promise<void> | null = null;
  return {
    extprocPort: extproc?.port ?? null,
    adminPort: admin.port,
    metrics,
    workerId,
    stop: () =>
      (stopped ??= (async () => {
        draining = true;
        stopping.abort();
        logger.info({ grace_ms: config.shutdownGraceMs }, 'shutting down: refusing new runs, finishing in-flight ones');
        // Each step on its own: one that fails must not skip the rest (closing Redis above all).
        const step = async (name: string, run: () => unknown) => {
          try {
            await run();
          } catch (err) {
            logger.error({ err, step: name }, 'shutdown step failed');
          }
        };
        await step('health', () => extproc?.setServing(false));
        await step('workers', () => Promise.all([dispatcher?.stop(config.shutdownGraceMs), delivery?.stop(config.shutdownGraceMs)]));
        await step('ext_proc server', () => extproc?.stop(1000));
        await step('webhook sender', () => sender?.close());
        await step('admin server', () => admin.stop());
        await step('tracing', () => tracing.shutdown());
        await step('run events', () => events.stop());
        // QUIT lets pending replies arrive; disconnect() then also ends what QUIT leaves behind
        // (ioredis' Sentinel failover detector keeps its own connections to the sentinels).
        for (const c of connections)
          await step('redis', () =>
            c.quit().then(
              () => c.disconnect(),
              () => c.disconnect(),
            ),
          );
        logger.info('stopped');
      })()),
  };
}

/** The store's nodes and which answer; a failure to read them is reported as every known node unreachable. */
async function topologyOf(redis: RedisClient, target: Config['redis']): Promise<RedisTopology> {
  return redisTopology(redis, target).catch(() => ({ mode: target.mode, nodes: [] }));
}

async function pingRedis(redis: RedisClient): Promise<boolean> {
  if (redis.status !== 'ready') return false;
  try {
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  }
}
