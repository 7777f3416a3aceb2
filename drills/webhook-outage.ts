import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultProxy } from '../test/support/fault-proxy';
import { RedisServer } from '../test/support/redis-server';
import { Upstream } from '../test/support/upstream';
import { WebhookReceiver } from '../test/support/webhook-receiver';
import {
  EnvoyFront,
  Inspector,
  Recorder,
  histogram,
  load,
  parseAnswer,
  sleep,
  spawnReplica,
  stateHistogram,
  statusHistogram,
  stopReplica,
  type Drill,
  type Replica,
} from './lib';

/** The webhook receiver is down for a while (deliveries arrive after it returns); the upstream hangs (timed_out). */
export const webhookOutageDrill: Drill = {
  id: 'webhook-outage',
  title: 'Webhook receiver down for a while; upstream hangs',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    const n = ctx.mode === 'full' ? 60 : 20;
    const hang = ctx.mode === 'full' ? 20 : 6;
    const downMs = 2000;
    const redis = await RedisServer.start();
    const app = await Upstream.start((req, res) => {
      if (req.url.startsWith('/hang')) return; // never answers
      res.writeHead(200, { 'content-type': 'application/json' }).end(`{"done":"${req.url}"}`);
    });
    const hooks = await WebhookReceiver.start();
    const hookProxy = await FaultProxy.start({ port: hooks.port });
    const inspector = new Inspector(redis.url);
    let side: Replica | undefined;
    let envoy: EnvoyFront | undefined;
    try {
      const dir = mkdtempSync(join(tmpdir(), 'eas-drill-'));
      writeFileSync(join(dir, 'routes.yaml'), 'routes:\n  - prefix: /hang\n    response_grace_period: 1\n');
      side = await spawnReplica('S', {
        REDIS_URL: redis.url,
        DISPATCH_URL: app.url,
        WEBHOOK_RETRY_SCHEDULE: '0,200ms,500ms,1s,2s,2s',
        CONFIG_FILE: join(dir, 'routes.yaml'),
        WEBHOOK_TIMEOUT: '2',
      });
      envoy = await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${side.extprocPort}`, app: `127.0.0.1:${app.port}` } });
      rec.setup.push(
        `one spawned sidecar, WEBHOOK_RETRY_SCHEDULE=0,200ms,500ms,1s,2s,2s (6 attempts over ~5.7 s), WEBHOOK_ALLOW_PRIVATE_NETWORKS=true; the receiver sits behind a FaultProxy`,
        `${n} runs with a webhookEndpoint are accepted while the proxy resets every connection; it passes again after ${downMs / 1000} s`,
        `${hang} runs on /hang (the upstream never answers; route grace period 1 s), with a webhook, sent once the receiver is back`,
      );
      const url = (path: string) => `${path}?async=true&webhookEndpoint=${encodeURIComponent(`http://127.0.0.1:${hookProxy.port}/hook`)}`;
      hookProxy.setMode('reset');
      const downAt = Date.now();
      const sent = await load({
        total: n,
        concurrency: 4,
        send: async (i) => ({
          ...parseAnswer(...(await envoy!.process({ method: 'POST', path: url(`/job/${i}`), body: 'x' }).then((r) => [r.status, r.body] as const))),
          method: 'POST',
          via: 'S',
        }),
      });
      await sleep(Math.max(0, downMs - (Date.now() - downAt)));
      hookProxy.setMode('pass');
      const upAt = Date.now();
      const ids = sent.filter((s) => s.status === 202).map((s) => s.id!);
      const hung = await load({
        total: hang,
        concurrency: 4,
        send: async (i) => ({
          ...parseAnswer(...(await envoy!.process({ method: 'POST', path: url(`/hang/${i}`), body: 'x' }).then((r) => [r.status, r.body] as const))),
          method: 'POST',
          via: 'S',
        }),
      });
      const hangIds = hung.filter((s) => s.status === 202).map((s) => s.id!);
      const deadline = Date.now() + 20_000;
      const byRun = () => {
        const m = new Map<string, number>();
        for (const r of hooks.requests) m.set(r.headers['x-async-run-id'] ?? '', (m.get(r.headers['x-async-run-id'] ?? '') ?? 0) + 1);
        return m;
      };
      while (Date.now() < deadline && [...ids, ...hangIds].some((id) => !byRun().has(id))) await sleep(200);
      await sleep(300);
      const views = await Promise.all(
        [...ids, ...hangIds].map(async (id) => {
          const r = await fetch(`http://127.0.0.1:${side!.adminPort}/v1/runs/${id}`);
          return (await r.json()) as { run_id: string; status: string; error: { code: string } | null; webhook: { status: string; attempts: number } };
        }),
      );
      const v1 = views.filter((v) => ids.includes(v.run_id));
      const v2 = views.filter((v) => hangIds.includes(v.run_id));
      const got = byRun();
      const firstDelivery = Math.min(...hooks.requests.map((r) => r.receivedAt));
      const hangBodies = hooks.requests
        .filter((r) => hangIds.includes(r.headers['x-async-run-id'] ?? ''))
        .map((r) => JSON.parse(r.body.toString()) as { status: string; error: string });
      rec.count('receiver down: answers', statusHistogram(sent));
      rec.count('receiver down: run states', stateHistogram(await inspector.runs(ids)));
      rec.count('receiver down: webhook status per run', histogram(v1.map((v) => v.webhook.status)));
      rec.count('receiver down: attempts per delivery (failed ones while down + the one that got through)', histogram(v1.map((v) => v.webhook.attempts)));
      rec.count('receiver down: webhooks received per run', histogram(ids.map((id) => got.get(id) ?? 0)));
      rec.count('first delivery after the receiver came back', `${((firstDelivery - upAt) / 1000).toFixed(1)} s`);
      rec.count('upstream hangs: run states', stateHistogram(await inspector.runs(hangIds)));
      rec.count('upstream hangs: webhook bodies', histogram(hangBodies.map((b) => `${b.status}/${b.error}`)));
      rec.count('upstream hangs: dispatches the upstream saw aborted', app.aborted.length);
      rec.check(
        'every delivery ended delivered after the receiver returned',
        v1.length === ids.length && v1.every((v) => v.webhook.status === 'delivered'),
        histogram(v1.map((v) => v.webhook.status)),
      );
      rec.check(
        "each run's webhook received exactly once",
        ids.every((id) => got.get(id) === 1),
      );
      rec.check(
        'hanging upstream: every run timed_out',
        v2.length === hangIds.length && v2.every((v) => v.status === 'timed_out'),
        histogram(v2.map((v) => v.status)),
      );
      rec.check('hanging upstream: webhook says timed_out', hangBodies.length === hangIds.length && hangBodies.every((b) => b.status === 'timed_out'));
    } finally {
      await envoy?.close();
      await stopReplica(side);
      await inspector.close();
      await hookProxy.close();
      await hooks.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
