import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { placementFor, type Config } from './config';
import { AsyncAcceptor, OpenApiDocument, RunsApi, createEnvoyHandler } from './api';
import { AdminServer } from './admin';
import { Dispatcher } from './dispatch';
import { ExtProcServer } from './extproc';
import { RunEvents, RunStore, connectRedis, connectSubscriber, evictionPolicyProblem } from './runs';
import { Metrics, type Logger } from './telemetry';
import { DeliveryWorker, WebhookSender, validateWebhookUrl } from './webhooks';

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
  const redis = connectRedis(config.redisUrl, { commandTimeoutMs: config.redisCommandTimeoutMs, name: 'eas' });
  const subscriber = connectSubscriber(config.redisUrl, 'eas-events');
  redis.on('error', () => undefined); // reported by the parts that make calls, and by /readyz
  subscriber.on('error', () => undefined);
  redis.connect().catch((err: Error) => logger.warn({ err }, 'Redis not reachable yet; retrying in the background'));
  // Checked on every (re)connect: a failover can land on a primary configured differently.
  redis.on('ready', () => {
    evictionPolicyProblem(redis).then(
      (policy) => {
        if (policy)
          logger.error(
            { maxmemory_policy: policy },
            `Redis evicts keys (maxmemory-policy ${policy}): accepted runs can be lost when it fills up; set maxmemory-policy noeviction`,
          );
      },
      () => undefined,
    );
  });

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
  // The dispatcher and the delivery worker get their own connection with a longer command
  // timeout: their replies carry bodies, and a large one must not time out the accept path's.
  let workerRedis: Redis | null = null;
  let workerStore = store;
  if (config.role !== 'extproc') {
    workerRedis = connectRedis(config.redisUrl, { commandTimeoutMs: config.redisWorkerCommandTimeoutMs, name: 'eas-worker' });
    workerRedis.on('error', () => undefined);
    workerRedis.connect().catch(() => undefined);
    workerStore = new RunStore(workerRedis, storeOptions);
  }
  const events = new RunEvents(subscriber, store.keys.events);
  await subscriber.connect().catch(() => undefined);
  events.start().catch((err: Error) => logger.warn({ err }, 'could not subscribe to run events yet'));

  let draining = false;
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
      store,
      {
        runsApiPrefix: config.runsApiPrefix,
        ownerHeader: config.ownerHeader,
        ownerRequired: config.ownerRequired,
        maxBodyBytes: config.maxBodyBytes,
        placementFor: (path) => placementFor(config, path),
        validateWebhookUrl: (raw) => validateWebhookUrl(raw, networkPolicy),
        isAccepting: () => !draining,
      },
      metrics,
      logger,
    );
    extproc = new ExtProcServer(
      createEnvoyHandler(acceptor, runsApi, config.maxBodyBytes, contract),
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
        },
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
        const checks: Record<string, string> = {};
        checks.redis = (await pingRedis(redis)) ? 'ok' : 'unreachable';
        checks.draining = draining ? 'yes' : 'no';
        return { ready: checks.redis === 'ok' && !draining, checks };
      },
      beforeScrape: async () => {
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
        await step('run events', () => events.stop());
        await step('redis', () => redis.quit().catch(() => redis.disconnect()));
        await step('worker redis', () => workerRedis?.quit().catch(() => workerRedis?.disconnect()));
        logger.info('stopped');
      })()),
  };
}

async function pingRedis(redis: Redis): Promise<boolean> {
  if (redis.status !== 'ready') return false;
  try {
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  }
}
