/**
 * OpenTelemetry traces across a run (README "Tracing"), with the built sidecar as `npm start` runs
 * it behind the real Envoy, a real OTLP/HTTP receiver on loopback that decodes what it gets
 * (test/support/otlp-receiver.ts), the app and a webhook receiver. One async run with a client
 * traceparent must give one trace whose spans have the right parents, over both OTLP encodings;
 * the app and the webhook receiver must see a traceparent of that trace; logs carry its trace_id.
 * With tracing off no module of the SDK may load. With Envoy's own tracer switched on (the
 * commented blocks of envoy/envoy.yaml), Envoy's spans and the sidecar's form one trace.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { withEnvoyTracing } from '../support/envoy-config';
import { OtlpReceiver, SPAN_KIND, STATUS_CODE, traceOf, type ReceivedSpan } from '../support/otlp-receiver';
import { freePort } from '../support/ports';
import { REPO_ROOT, ensureBuilt, spawnSidecar, type SidecarProcess } from '../support/process';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually } from '../support/sidecar';
import { Upstream, type RecordedRequest } from '../support/upstream';
import { WebhookReceiver } from '../support/webhook-receiver';

jest.setTimeout(90_000);

/** A client's W3C trace context (sampled), as an instrumented caller would send it. */
const CLIENT_TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const clientParent = (spanId: string) => `00-${CLIENT_TRACE_ID}-${spanId}-01`;
const header = (req: { headers: Array<[string, string]> } | RecordedRequest, name: string) => req.headers.find(([k]) => k === name)?.[1];
/** Every module of the OpenTelemetry SDK (the API alone is a no-op facade, and prom-client loads it). */
const SDK_MODULE = /node_modules\/@opentelemetry\/(?!api\/)|dist\/src\/tracing\/sdk\.js$/;

describeWithEnvoy('OpenTelemetry traces across a run, through the real Envoy (README "Tracing")', () => {
  let redis: RedisServer;
  let app: Upstream;
  let hooks: WebhookReceiver;
  let otlp: OtlpReceiver;
  let envoy: RealEnvoy;
  let extprocPort: number;
  const running: SidecarProcess[] = [];

  beforeAll(async () => {
    ensureBuilt();
    redis = await RedisServer.start();
    app = await Upstream.start(Upstream.json(200, { ok: true }));
    hooks = await WebhookReceiver.start();
    otlp = await OtlpReceiver.start();
    extprocPort = await freePort();
    envoy = await RealEnvoy.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
  }, 120_000);

  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null) p.kill('SIGKILL');
    await envoy?.close();
    await otlp?.close();
    await hooks?.close();
    await app?.close();
    await redis?.destroy();
  });

  /** Starts the built sidecar behind `through` (its ext_proc port is the one Envoy's cluster names) and waits until Envoy reaches it. */
  async function startSidecar(env: Record<string, string>, through: RealEnvoy = envoy): Promise<SidecarProcess> {
    const p = spawnSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      ADMIN_ADDR: `127.0.0.1:${await freePort()}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: through.dispatchUrl,
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      SHUTDOWN_GRACE: '5',
      LOG_LEVEL: 'info',
      ...env,
    });
    running.push(p);
    await p.waitForLog('envoy-async-sidecar started', 15_000);
    await eventually(
      async () => ((await request(`${through.url}/v1/runs/00000000-0000-4000-8000-000000000000`)).statusCode === 404 ? true : undefined),
      20_000,
      'the sidecar reachable through Envoy',
    );
    return p;
  }

  async function stop(p: SidecarProcess): Promise<void> {
    p.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
  }

  /** The modules the probe saw loaded, from the stopped process's stderr. */
  function loadedModules(p: SidecarProcess): string[] {
    const line = p
      .stderr()
      .split('\n')
      .find((l) => l.startsWith('LOADED_MODULES '));
    if (!line) throw new Error(`no LOADED_MODULES line on stderr:\n${p.stderr()}`);
    return JSON.parse(line.slice('LOADED_MODULES '.length)) as string[];
  }

  /** One async run with a webhook and the client's traceparent; resolves once the app and the webhook receiver have it. */
  async function asyncRun(through: RealEnvoy, clientSpanId: string) {
    const appBefore = app.requests.length;
    const hooksBefore = hooks.requests.length;
    const res = await request(`${through.url}/v4/p-1/traced?async=true&webhookEndpoint=${encodeURIComponent(hooks.url)}`, {
      method: 'POST',
      body: '{"prompt":"trace me"}',
      headers: { 'content-type': 'application/json', traceparent: clientParent(clientSpanId), 'user-agent': 'tracing-test/1' },
    });
    expect(res.statusCode).toBe(202);
    const runId = ((await res.body.json()) as { run_id: string }).run_id;
    const replayed = (await app.waitForRequests(appBefore + 1))[appBefore]!;
    const hook = (await hooks.waitForRequests(hooksBefore + 1))[hooksBefore]!;
    expect(header(replayed, 'x-async-run-id')).toBe(runId);
    expect(hook.headers['x-async-run-id']).toBe(runId);
    const view = await eventually(
      async () => {
        const r = (await (await request(`${through.url}/v1/runs/${runId}`)).body.json()) as any;
        return r.webhook?.status === 'delivered' ? r : undefined;
      },
      15_000,
      'the webhook delivered',
    );
    return { runId, replayed, hook, view };
  }

  /** The sidecar's spans of the client's trace: accept, queue wait, replay, webhook, each once. */
  async function sidecarSpans(service: string, runId: string) {
    const spans = await otlp.waitFor((all) => {
      const mine = all.filter((s) => s.service === service && s.attributes['run.id'] === runId);
      return ['run accept', 'run queued', 'run replay', 'run webhook'].every((n) => mine.some((s) => s.name === n));
    });
    const t = traceOf(
      spans.filter((s) => s.service === service),
      CLIENT_TRACE_ID,
    );
    const one = (name: string): ReceivedSpan => {
      const found = t.byName(name).filter((s) => s.attributes['run.id'] === runId);
      expect(found).toHaveLength(1);
      return found[0]!;
    };
    return { accept: one('run accept'), queued: one('run queued'), replay: one('run replay'), webhook: one('run webhook') };
  }

  it.each([
    ['http/protobuf', {}, 'envoy-async-sidecar'],
    ['http/json', { OTEL_SERVICE_NAME: 'async-sidecar-json' }, 'async-sidecar-json'],
  ] as const)(
    'one async run is one trace over %s: accept ← client, queue wait, replay and webhook ← accept; the app and the receiver join it; logs carry trace_id',
    async (protocol, extraEnv, service) => {
      otlp.clear();
      const sidecar = await startSidecar({
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=test',
        NODE_OPTIONS: `--require ${join(REPO_ROOT, 'test', 'support', 'loaded-modules.js')}`,
        LOADED_MODULES_MATCH: SDK_MODULE.source,
        ...extraEnv,
      });
      const clientSpanId = protocol === 'http/json' ? '00f067aa0ba902b7' : '53995c3f42cd8ad8';
      const { runId, replayed, hook, view } = await asyncRun(envoy, clientSpanId);
      await stop(sidecar); // flushes the last spans

      const { accept, queued, replay, webhook } = await sidecarSpans(service, runId);
      for (const s of [accept, queued, replay, webhook]) {
        expect(s.protocol).toBe(protocol);
        expect(s.resource).toMatchObject({ 'service.name': service, 'deployment.environment.name': 'test', 'telemetry.sdk.language': 'nodejs' });
        expect(s.attributes).toMatchObject({ 'run.id': runId, queue: 'default' });
        expect(s.endNs).toBeGreaterThanOrEqual(s.startNs);
      }
      // Without Envoy's tracer, the request headers carry the client's context: the accept span is its child.
      expect(accept).toMatchObject({ kind: SPAN_KIND.SERVER, parentSpanId: clientSpanId, status: { code: STATUS_CODE.UNSET } });
      expect(accept.attributes).toMatchObject({
        'http.request.method': 'POST',
        'url.path': '/v4/p-1/traced',
        'url.scheme': 'http',
        'server.address': '127.0.0.1',
        'server.port': Number(new URL(envoy.url).port),
        'user_agent.original': 'tracing-test/1',
        'http.response.status_code': 202,
        'run.status': 'queued',
      });
      // The queue wait, with the times Redis recorded: created (queued) to taken by a worker.
      expect(queued).toMatchObject({ kind: SPAN_KIND.INTERNAL, parentSpanId: accept.spanId });
      expect(Number(queued.startNs / 1_000_000n)).toBe(Date.parse(view.created_at));
      expect(Number(queued.endNs / 1_000_000n)).toBe(Date.parse(view.started_at));
      expect(replay).toMatchObject({ kind: SPAN_KIND.CLIENT, parentSpanId: accept.spanId, status: { code: STATUS_CODE.UNSET } });
      expect(replay.attributes).toMatchObject({
        'http.request.method': 'POST',
        'url.full': `${envoy.dispatchUrl}/v4/p-1/traced`,
        'server.address': '127.0.0.1',
        'server.port': Number(new URL(envoy.dispatchUrl).port),
        'http.response.status_code': 200,
        'run.status': 'succeeded',
      });
      expect(webhook).toMatchObject({ kind: SPAN_KIND.CLIENT, parentSpanId: accept.spanId, status: { code: STATUS_CODE.UNSET } });
      expect(webhook.attributes).toMatchObject({
        'http.request.method': 'POST',
        'url.full': hooks.url,
        'http.response.status_code': 200,
        'run.status': 'succeeded',
        'webhook.outcome': 'delivered',
      });
      // The next hops continue the trace: their parent is the span that called them.
      expect(header(replayed, 'traceparent')).toBe(`00-${CLIENT_TRACE_ID}-${replay.spanId}-01`);
      expect(hook.headers['traceparent']).toBe(`00-${CLIENT_TRACE_ID}-${webhook.spanId}-01`);
      // Logs: the run's lines carry its trace_id (the accept line its span_id too).
      const lines = sidecar
        .stdout()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.run_id === runId);
      const byMsg = (msg: string) => lines.find((l) => l.msg === msg);
      expect(byMsg('run queued')).toMatchObject({ trace_id: CLIENT_TRACE_ID, span_id: accept.spanId });
      for (const msg of ['run started', 'run finished', 'webhook attempt']) expect(byMsg(msg)).toMatchObject({ trace_id: CLIENT_TRACE_ID });
      // The positive control for the test below: tracing on, the SDK is loaded.
      expect(loadedModules(sidecar).some((m) => /dist\/src\/tracing\/sdk\.js$/.test(m))).toBe(true);
      expect(otlp.refused).toEqual([]);
    },
  );

  it('the app\'s "not now" (503) ends a replay span as not_now, and the run\'s next replay is a second span of the same trace', async () => {
    otlp.clear();
    const sidecar = await startSidecar({ OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url });
    let calls = 0;
    app.setHandler((_req, res) => {
      if (calls++ === 0) return void res.writeHead(503, { 'retry-after': '0' }).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    const before = app.requests.length;
    try {
      const { runId } = await asyncRun(envoy, '0e0e47364bf92f35');
      await stop(sidecar);
      const spans = await otlp.waitFor((all) => all.filter((s) => s.attributes['run.id'] === runId && s.name === 'run replay').length === 2);
      const t = traceOf(spans, CLIENT_TRACE_ID);
      const mine = (name: string) => t.byName(name).filter((s) => s.attributes['run.id'] === runId);
      const [accept] = mine('run accept');
      const replays = mine('run replay').sort((a, b) => Number(a.startNs - b.startNs));
      expect(replays.map((s) => s.parentSpanId)).toEqual([accept!.spanId, accept!.spanId]);
      expect(replays[0]).toMatchObject({ status: { code: STATUS_CODE.ERROR } });
      expect(replays[0]!.attributes).toMatchObject({ 'http.response.status_code': 503, 'run.stopped': 'not_now', 'run.status': 'queued', 'error.type': '503' });
      expect(replays[1]!.attributes).toMatchObject({ 'http.response.status_code': 200, 'run.status': 'succeeded' });
      expect(replays[1]!.attributes).not.toHaveProperty('run.stopped');
      // The run kept its first queued_at: one queue span, the wait before the second call is the gap.
      expect(mine('run queued')).toHaveLength(1);
      const calledWith = app.requests.slice(before).map((r) => header(r, 'traceparent'));
      expect(calledWith).toEqual(replays.map((s) => `00-${CLIENT_TRACE_ID}-${s.spanId}-01`));
    } finally {
      app.setHandler(Upstream.json(200, { ok: true }));
    }
  });

  it.each([
    ['no OTLP endpoint set', {}],
    ['OTEL_SDK_DISABLED=true with an endpoint set', { OTEL_SDK_DISABLED: 'true' }],
  ] as const)('tracing off (%s): no SDK module is loaded, no span is sent, the app gets the client traceparent as it came', async (_why, extraEnv) => {
    otlp.clear();
    const env: Record<string, string> = {
      NODE_OPTIONS: `--require ${join(REPO_ROOT, 'test', 'support', 'loaded-modules.js')}`,
      LOADED_MODULES_MATCH: `${SDK_MODULE.source}|dist/src/tracing/index\\.js$`,
      ...extraEnv,
    };
    if ('OTEL_SDK_DISABLED' in extraEnv) env.OTEL_EXPORTER_OTLP_ENDPOINT = otlp.url;
    const sidecar = await startSidecar(env);
    const { replayed, hook } = await asyncRun(envoy, 'a3ce929d0e0e4736');
    await stop(sidecar);
    expect(header(replayed, 'traceparent')).toBe(clientParent('a3ce929d0e0e4736'));
    expect(hook.headers['traceparent']).toBeUndefined();
    const loaded = loadedModules(sidecar);
    expect(loaded.filter((m) => SDK_MODULE.test(m))).toEqual([]);
    expect(loaded.some((m) => m.endsWith('dist/src/tracing/index.js'))).toBe(true); // the probe sees the tracing module itself
    expect(otlp.exports).toEqual([]); // a stopped process has sent what it ever would
    const line = sidecar
      .stdout()
      .split('\n')
      .find((l) => l.includes('"run queued"'));
    expect(JSON.parse(line!)).not.toHaveProperty('trace_id');
  });

  it("with Envoy's tracer switched on (envoy.yaml's commented blocks), Envoy's spans and the sidecar's are one trace", async () => {
    otlp.clear();
    const dir = mkdtempSync(join(tmpdir(), 'eas-envoy-tracing-'));
    const configPath = join(dir, 'envoy.yaml');
    writeFileSync(configPath, withEnvoyTracing(readFileSync(join(REPO_ROOT, 'envoy', 'envoy.yaml'), 'utf8')).text);
    const tracedEnvoy = await RealEnvoy.start({
      configPath,
      clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}`, opentelemetry_collector: `127.0.0.1:${otlp.port}` },
    });
    try {
      const sidecar = await startSidecar({ OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url }, tracedEnvoy);
      otlp.clear(); // Envoy's spans of the readiness polls
      const clientSpanId = 'b7ad6b7169203331';
      const { runId, replayed } = await asyncRun(tracedEnvoy, clientSpanId);
      await stop(sidecar);
      const { accept, replay, webhook } = await sidecarSpans('envoy-async-sidecar', runId);
      // Envoy sends its spans in batches (every 5 s at the latest): wait for the three of them.
      const spans = await otlp.waitFor((all) => {
        const call = all.find((s) => s.spanId === accept.parentSpanId);
        return (
          call !== undefined && all.some((s) => s.spanId === call.parentSpanId) && all.some((s) => s.service === 'envoy' && s.parentSpanId === replay.spanId)
        );
      });
      const t = traceOf(spans, CLIENT_TRACE_ID);
      const parent = (s: ReceivedSpan) => t.parentOf(s);
      // client → Envoy's ingress span → Envoy's ext_proc call → the sidecar's accept
      const extprocCall = parent(accept)!;
      expect(extprocCall).toMatchObject({ service: 'envoy', kind: SPAN_KIND.CLIENT, name: 'async envoy.service.ext_proc.v3.ExternalProcessor.Process egress' });
      const ingress = parent(extprocCall)!;
      expect(ingress).toMatchObject({ service: 'envoy', kind: SPAN_KIND.SERVER, parentSpanId: clientSpanId });
      expect(ingress.attributes['http.url']).toMatch(/\/v4\/p-1\/traced\?async=true/);
      // the sidecar's replay → Envoy's dispatch listener → the app
      const dispatch = t.spans.find((s) => s.service === 'envoy' && s.parentSpanId === replay.spanId)!;
      expect(dispatch).toMatchObject({ kind: SPAN_KIND.SERVER });
      // (Envoy's http.url takes the Host, which the replay keeps as the client's authority.)
      expect(dispatch.attributes['http.url']).toBe(`${tracedEnvoy.url}/v4/p-1/traced`);
      expect(header(replayed, 'traceparent')).toBe(`00-${CLIENT_TRACE_ID}-${dispatch.spanId}-01`);
      expect(parent(webhook)).toBe(accept);
      expect(t.spans.every((s) => s.traceId === CLIENT_TRACE_ID)).toBe(true);
    } finally {
      await tracedEnvoy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
