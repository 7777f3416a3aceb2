import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { MAX_GRACE_SECONDS } from './settings';

/** Run priorities, highest first: a client may lower its run's priority below its route's, never raise it. */
export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** The queue of runs whose route names none. */
export const DEFAULT_QUEUE = 'default';

/** What protects the app behind one queue (README "Queues"). Durations in ms; null = no limit. */
export interface QueueSettings {
  name: string;
  /** Runs of this queue at the app at once, across every replica together. */
  maxConcurrency: number | null;
  /** A run still queued this long after it was accepted ends `expired` (queue_time_exceeded). */
  maxQueueTimeMs: number | null;
  /** Grace period of the queue's runs, unless their route sets one. */
  gracePeriodMs: number | null;
  /** Runs of different owners are taken round-robin (else strictly FIFO within a priority). */
  fairShare: boolean;
  /** Times a run may go back to the queue because the app said "not now" (429, 503, refused). */
  maxBackpressureRetries: number;
  /** Longest wait between two such tries, when the app sends no usable Retry-After. */
  backpressureMaxDelayMs: number;
}

export interface RouteSettings {
  /** Path prefix the settings apply to; the longest matching prefix wins. */
  prefix: string;
  queue: string;
  /** null: the queue's grace period, else the global default. */
  gracePeriodMs: number | null;
  priority: Priority;
}

export interface ConfigFile {
  routes: RouteSettings[];
  /** Every queue by name, `default` always among them. */
  queues: Map<string, QueueSettings>;
}

/** Queue names end up in Redis keys and metric labels: short, plain. */
const QUEUE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

const seconds = (max: number) => z.number().positive().max(max);

const queueSchema = z.strictObject({
  max_concurrency: z.number().int().positive().max(100_000).optional(),
  max_queue_time: seconds(30 * 86_400).optional(),
  response_grace_period: seconds(MAX_GRACE_SECONDS).optional(),
  fair_share: z.boolean().default(true),
  max_backpressure_retries: z.number().int().min(0).max(1000).default(10),
  backpressure_max_delay: seconds(3600).default(60),
});

const fileSchema = z.strictObject({
  queues: z.record(z.string(), queueSchema.nullable()).default({}),
  routes: z
    .array(
      z.strictObject({
        prefix: z.string().startsWith('/'),
        queue: z.string().optional(),
        response_grace_period: seconds(MAX_GRACE_SECONDS).optional(),
        priority: z.enum(PRIORITIES).default('normal'),
      }),
    )
    .default([]),
});

const defaults = (name: string): QueueSettings => ({
  name,
  maxConcurrency: null,
  maxQueueTimeMs: null,
  gracePeriodMs: null,
  fairShare: true,
  maxBackpressureRetries: 10,
  backpressureMaxDelayMs: 60_000,
});

/**
 * Reads CONFIG_FILE (routes and queues, README "Queues"). Throws an Error whose message is one line
 * naming the key at fault; the caller prefixes the setting.
 */
export function parseConfigFile(path: string): ConfigFile {
  const queues = new Map<string, QueueSettings>([[DEFAULT_QUEUE, defaults(DEFAULT_QUEUE)]]);
  if (!path) return { routes: [], queues };
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8')) ?? {};
  } catch (err) {
    throw new Error((err as Error).message.split('\n')[0]);
  }
  const result = fileSchema.safeParse(doc);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  for (const [name, q] of Object.entries(result.data.queues)) {
    if (!QUEUE_NAME.test(name)) throw new Error(`queues.${name}: queue names are 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit`);
    const ms = (s: number | undefined) => (s === undefined ? null : Math.round(s * 1000));
    queues.set(name, {
      name,
      maxConcurrency: q?.max_concurrency ?? null,
      maxQueueTimeMs: ms(q?.max_queue_time),
      gracePeriodMs: ms(q?.response_grace_period),
      fairShare: q?.fair_share ?? true,
      maxBackpressureRetries: q?.max_backpressure_retries ?? 10,
      backpressureMaxDelayMs: ms(q?.backpressure_max_delay ?? 60)!,
    });
  }
  const routes = result.data.routes.map((r, i): RouteSettings => {
    const queue = r.queue ?? DEFAULT_QUEUE;
    if (!queues.has(queue)) throw new Error(`routes.${i}.queue: no queue named ${JSON.stringify(queue)} under queues`);
    return {
      prefix: r.prefix,
      queue,
      gracePeriodMs: r.response_grace_period === undefined ? null : Math.round(r.response_grace_period * 1000),
      priority: r.priority,
    };
  });
  return { routes: routes.sort((a, b) => b.prefix.length - a.prefix.length), queues };
}

/** What a request path runs under: its route (longest prefix) or the default queue. */
export interface RunPlacement {
  queue: QueueSettings;
  gracePeriodMs: number;
  priority: Priority;
}

export function placementFor(config: ConfigFile & { gracePeriodMs: number }, path: string): RunPlacement {
  const route = config.routes.find((r) => path.startsWith(r.prefix));
  const queue = config.queues.get(route?.queue ?? DEFAULT_QUEUE)!;
  return { queue, gracePeriodMs: route?.gracePeriodMs ?? queue.gracePeriodMs ?? config.gracePeriodMs, priority: route?.priority ?? 'normal' };
}
