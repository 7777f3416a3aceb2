import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, HelpRequested, VersionRequested, helpText, loadConfig, markdownTable, packageVersion, placementFor, SETTINGS } from '../../src/config';

describe('configuration (docs/CONTRACT.md §6)', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({}, []);
    expect(c).toMatchObject({
      role: 'all',
      extprocAddr: { host: '127.0.0.1', port: 50051 },
      adminAddr: { host: '127.0.0.1', port: 9090 },
      redisUrl: 'redis://127.0.0.1:6379',
      gracePeriodMs: 900_000,
      maxBodyBytes: 10 * 1024 * 1024,
      maxResultBytes: 10 * 1024 * 1024,
      runsApiPrefix: '/v1/runs',
      ownerHeader: 'authorization',
      runTtlMs: 86_400_000,
      idempotencyKeyTtlMs: 86_400_000,
      adminToken: null,
    });
    expect(c.webhook).toMatchObject({ secrets: [], timeoutMs: 30_000, allowPrivateNetworks: false, allowedHosts: [] });
  });

  it.each([
    [{ RESPONSE_GRACE_PERIOD: '43201' }, /RESPONSE_GRACE_PERIOD="43201".*43200/],
    [{ RESPONSE_GRACE_PERIOD: 'soon' }, /RESPONSE_GRACE_PERIOD="soon"/],
    [{ DISPATCH_CONCURRENCY: '0' }, /DISPATCH_CONCURRENCY="0"/],
    [{ EXTPROC_ADDR: '50051' }, /EXTPROC_ADDR="50051": must be host:port/],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL/],
    [{ DISPATCH_URL: 'ftp://x' }, /DISPATCH_URL/],
    [{ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'maybe' }, /WEBHOOK_ALLOW_PRIVATE_NETWORKS="maybe": must be true or false/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ RUNS_API_PREFIX: 'v1/runs/' }, /RUNS_API_PREFIX/],
  ])('refuses %j with one line naming the setting and value', (env, message) => {
    expect(() => loadConfig(env, [])).toThrow(ConfigError);
    expect(() => loadConfig(env, [])).toThrow(message);
  });

  it('derives the values the parts need, in one place: retry delays, delivery window and concurrency, worker timeout', () => {
    const c = loadConfig({ WEBHOOK_TIMEOUT: '10', DISPATCH_CONCURRENCY: '500', REDIS_COMMAND_TIMEOUT: '2', WEBHOOK_RETRY_SCHEDULE: '0, 500ms, 1.5, 2m' }, []);
    expect(c.webhook).toMatchObject({ retryScheduleMs: [0, 500, 1500, 120_000], visibilityMs: 40_000, concurrency: 256 });
    expect(c.redisWorkerCommandTimeoutMs).toBe(10_000);
    const d = loadConfig({}, []);
    expect(d.webhook).toMatchObject({
      retryScheduleMs: [0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
      visibilityMs: 60_000,
      concurrency: 100,
    });
    expect(d.redisWorkerCommandTimeoutMs).toBe(5_000);
    expect(loadConfig({ DISPATCH_CONCURRENCY: '4' }, []).webhook.concurrency).toBe(16);
    expect(() => loadConfig({ WEBHOOK_RETRY_SCHEDULE: '0,5 fortnights' }, [])).toThrow(
      /WEBHOOK_RETRY_SCHEDULE="0,5 fortnights": invalid retry schedule entry "5 fortnights"/,
    );
  });

  it('never echoes a secret in an error', () => {
    expect(() => loadConfig({ WEBHOOK_SECRET: 'not-a-secret-format' }, [])).toThrow(/WEBHOOK_SECRET=<redacted>/);
  });

  it('takes several webhook secrets for rotation', () => {
    const c = loadConfig({ WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_s1wk51w/FqPyJUcqKeNu6stLjArswCqS' }, []);
    expect(c.webhook.secrets).toHaveLength(2);
  });

  it.each([
    ['whsec_A', /secret 1 is not valid base64|must decode to 24-64 bytes/],
    ['whsec_AAAA', /must decode to 24-64 bytes \(this one is 3\)/], // three zero bytes
    ['whsec_dGVzdA==', /must decode to 24-64 bytes/],
    [`whsec_${Buffer.alloc(65, 1).toString('base64')}`, /must decode to 24-64 bytes \(this one is 65\)/],
    ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_A', /secret 2/],
  ])('refuses the webhook secret %s with a ConfigError (exit code 2), not a crash at start-up', (secret, message) => {
    expect(() => loadConfig({ WEBHOOK_SECRET: secret }, [])).toThrow(ConfigError);
    expect(() => loadConfig({ WEBHOOK_SECRET: secret }, [])).toThrow(message);
  });

  it('reads EXTPROC_TOKEN from EXTPROC_TOKEN_FILE (trimmed), and refuses both, a missing file or a short token', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eas-token-'));
    writeFileSync(join(dir, 'token'), 'a'.repeat(48) + '\n');
    writeFileSync(join(dir, 'short'), 'abc');
    expect(loadConfig({ EXTPROC_TOKEN_FILE: join(dir, 'token') }, []).extprocToken).toBe('a'.repeat(48));
    expect(() => loadConfig({ EXTPROC_TOKEN_FILE: join(dir, 'token'), EXTPROC_TOKEN: 'b'.repeat(20) }, [])).toThrow(/set one of them/);
    expect(() => loadConfig({ EXTPROC_TOKEN_FILE: join(dir, 'missing') }, [])).toThrow(/EXTPROC_TOKEN_FILE=.*ENOENT/);
    expect(() => loadConfig({ EXTPROC_TOKEN_FILE: join(dir, 'short') }, [])).toThrow(/16-256 visible ASCII/);
    expect(() => loadConfig({ EXTPROC_TOKEN_FILE: join(dir, 'short') }, [])).not.toThrow(/abc/);
  });

  it('shows a REDIS_URL in an error without its credentials', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://user:hunter2@redis:6379?x=%zz', REDIS_COMMAND_TIMEOUT: '1' }, [])).not.toThrow(/hunter2/);
    const err = (() => {
      try {
        loadConfig({ REDIS_URL: 'rediss://:hunter2@[bad' }, []);
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(err).toMatch(/REDIS_URL="rediss:\/\/<credentials>@\[bad"/);
    expect(err).not.toContain('hunter2');
  });

  it('names the Redis topology: one Redis, a Cluster or Sentinel, and refuses what does not fit together (README "Redis topologies")', () => {
    expect(loadConfig({}, []).redis).toEqual({ mode: 'single', url: 'redis://127.0.0.1:6379' });
    expect(loadConfig({}, []).redisMinReplicasAck).toBe(0);
    const cluster = loadConfig({ REDIS_CLUSTER_NODES: 'r1:7000, 10.0.0.2:7001,[::1]:7002', REDIS_URL: 'rediss://u:p@x:1', REDIS_MIN_REPLICAS_ACK: '1' }, []);
    expect(cluster.redis).toEqual({
      mode: 'cluster',
      url: 'rediss://u:p@x:1',
      nodes: [
        { host: 'r1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: '::1', port: 7002 },
      ],
    });
    expect(cluster.redisMinReplicasAck).toBe(1);
    expect(loadConfig({ REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_NAME: 'mymaster' }, []).redis).toEqual({
      mode: 'sentinel',
      url: 'redis://127.0.0.1:6379',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
      ],
      name: 'mymaster',
    });
    const refused: Array<[Record<string, string>, RegExp]> = [
      [{ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'm' }, /REDIS_CLUSTER_NODES with REDIS_SENTINELS/],
      [{ REDIS_SENTINELS: 's1:26379' }, /REDIS_SENTINELS without REDIS_SENTINEL_NAME/],
      [{ REDIS_SENTINEL_NAME: 'm' }, /REDIS_SENTINEL_NAME without REDIS_SENTINELS/],
      [{ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_URL: 'redis://x:1/2' }, /database \/2 with REDIS_CLUSTER_NODES/],
      [{ REDIS_CLUSTER_NODES: 'r1:7000,r2' }, /REDIS_CLUSTER_NODES="r1:7000,r2": "r2" must be host:port/],
      [{ REDIS_MIN_REPLICAS_ACK: '-1' }, /REDIS_MIN_REPLICAS_ACK="-1"/],
    ];
    for (const [env, message] of refused) expect(() => loadConfig(env, [])).toThrow(message);
  });

  it('parses --role and refuses unknown roles and arguments', () => {
    expect(loadConfig({}, ['--role', 'worker']).role).toBe('worker');
    expect(loadConfig({}, ['--role=extproc']).role).toBe('extproc');
    expect(() => loadConfig({}, ['--role', 'boss'])).toThrow(/--role "boss": must be one of all, extproc, worker/);
    expect(() => loadConfig({}, ['--verbose'])).toThrow(/unknown argument "--verbose"/);
    expect(() => loadConfig({}, ['--role'])).toThrow(/--role "": must be one of/);
    expect(() => loadConfig({}, ['--help'])).toThrow(HelpRequested);
    expect(() => loadConfig({}, ['-h'])).toThrow(HelpRequested);
    expect(() => loadConfig({}, ['--role', 'boss', '--help'])).toThrow(HelpRequested);
    expect(() => loadConfig({}, ['--version'])).toThrow(VersionRequested);
    expect(() => loadConfig({}, ['-v'])).toThrow(VersionRequested);
    expect(() => loadConfig({}, ['--help=yes'])).toThrow(/invalid --help="yes": --help takes no value/);
    expect(() => loadConfig({}, ['-x'])).toThrow(/unknown argument "-x": allowed are --role all\|extproc\|worker, --help and --version/);
    expect(() => loadConfig({}, ['serve'])).toThrow(/unexpected argument "serve"/);
    expect(() => loadConfig({}, ['--', '--role=worker'])).toThrow(/unexpected argument "--role=worker"/);
  });

  it("reports the package's version", () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    expect(packageVersion()).toBe(pkg.version);
    expect(helpText()).toContain(`envoy-async-sidecar ${pkg.version}:`);
  });

  it('reads per-route grace periods from CONFIG_FILE, longest prefix first', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eas-config-'));
    const file = join(dir, 'routes.yaml');
    writeFileSync(file, 'routes:\n  - prefix: /v1\n    response_grace_period: 60\n  - prefix: /v1/slow\n    response_grace_period: 43200\n');
    const c = loadConfig({ CONFIG_FILE: file }, []);
    expect(placementFor(c, '/v1/slow/x').gracePeriodMs).toBe(43_200_000);
    expect(placementFor(c, '/v1/fast').gracePeriodMs).toBe(60_000);
    expect(placementFor(c, '/other').gracePeriodMs).toBe(900_000);
    writeFileSync(file, 'routes:\n  - prefix: /v1\n    response_grace_period: 50000\n');
    expect(() => loadConfig({ CONFIG_FILE: file }, [])).toThrow(/CONFIG_FILE=.*routes.0.response_grace_period/);
    writeFileSync(file, 'routes:\n  - prefix: /v1\n    grace: 5\n');
    expect(() => loadConfig({ CONFIG_FILE: file }, [])).toThrow(ConfigError);
    expect(() => loadConfig({ CONFIG_FILE: join(dir, 'missing.yaml') }, [])).toThrow(/CONFIG_FILE=.*missing.yaml/);
  });

  it('reads named queues and routes from CONFIG_FILE (README "Queues")', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eas-config-'));
    const file = join(dir, 'queues.yaml');
    writeFileSync(
      file,
      [
        'queues:',
        '  gpu: { max_concurrency: 2, max_queue_time: 600, response_grace_period: 120 }',
        '  batch: { fair_share: false, max_backpressure_retries: 0 }',
        '  plain:',
        'routes:',
        '  - { prefix: /v4/p-1/slow-model, queue: gpu, response_grace_period: 43200 }',
        '  - { prefix: /v4/p-1, queue: gpu, priority: low }',
        '  - { prefix: /batch, queue: batch }',
      ].join('\n'),
    );
    const c = loadConfig({ CONFIG_FILE: file }, []);
    expect([...c.queues.keys()].sort()).toEqual(['batch', 'default', 'gpu', 'plain']);
    expect(c.queues.get('gpu')).toEqual({
      name: 'gpu',
      maxConcurrency: 2,
      maxQueueTimeMs: 600_000,
      gracePeriodMs: 120_000,
      fairShare: true,
      maxBackpressureRetries: 10,
      backpressureMaxDelayMs: 60_000,
    });
    expect(c.queues.get('batch')).toMatchObject({ maxConcurrency: null, fairShare: false, maxBackpressureRetries: 0 });
    expect(c.queues.get('plain')).toMatchObject({ maxConcurrency: null, maxQueueTimeMs: null, fairShare: true });
    // The route's grace period, else the queue's, else RESPONSE_GRACE_PERIOD.
    expect(placementFor(c, '/v4/p-1/slow-model/predict')).toMatchObject({ queue: { name: 'gpu' }, gracePeriodMs: 43_200_000, priority: 'normal' });
    expect(placementFor(c, '/v4/p-1/other')).toMatchObject({ queue: { name: 'gpu' }, gracePeriodMs: 120_000, priority: 'low' });
    expect(placementFor(c, '/batch/x')).toMatchObject({ queue: { name: 'batch' }, gracePeriodMs: 900_000 });
    expect(placementFor(c, '/elsewhere')).toMatchObject({ queue: { name: 'default' }, gracePeriodMs: 900_000, priority: 'normal' });
  });

  it('stops start-up on invalid queue configuration with one line naming the key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eas-config-'));
    const file = join(dir, 'queues.yaml');
    const error = (yaml: string): string => {
      writeFileSync(file, yaml);
      try {
        loadConfig({ CONFIG_FILE: file }, []);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as Error).message).not.toContain('\n');
        return (err as Error).message;
      }
      throw new Error('no error');
    };
    expect(error('queues:\n  gpu: { max_concurrency: 0 }\n')).toMatch(/CONFIG_FILE=.*: queues.gpu.max_concurrency: /);
    expect(error('queues:\n  gpu: { max_concurency: 2 }\n')).toMatch(/queues.gpu: .*max_concurency/);
    expect(error('queues:\n  GPU!: {}\n')).toMatch(/queues.GPU!: .*queue names/);
    expect(error('queues:\n  gpu: { max_queue_time: -1 }\n')).toMatch(/queues.gpu.max_queue_time: /);
    expect(error('routes:\n  - { prefix: /x, queue: nope }\n')).toMatch(/routes.0.queue: no queue named "nope" under queues/);
    expect(error('routes:\n  - { prefix: /x, priority: urgent }\n')).toMatch(/routes.0.priority: /);
  });

  it('lists every setting with its default in --help', () => {
    const help = helpText();
    for (const spec of Object.values(SETTINGS)) expect(help).toContain(spec.env);
  });

  describe('OpenTelemetry tracing (README "Tracing")', () => {
    const ON = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };

    it('is off unless an OTLP endpoint is set, and off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none', () => {
      expect(loadConfig({}, []).tracing).toBeNull();
      expect(loadConfig({ ...ON, OTEL_SDK_DISABLED: 'true' }, []).tracing).toBeNull();
      expect(loadConfig({ ...ON, OTEL_TRACES_EXPORTER: 'none' }, []).tracing).toBeNull();
      expect(loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }, []).tracing).not.toBeNull();
    });

    it('sends to <endpoint>/v1/traces, or to the traces endpoint as given, with the OpenTelemetry defaults', () => {
      expect(loadConfig(ON, []).tracing).toEqual({
        url: 'http://collector:4318/v1/traces',
        protocol: 'http/protobuf',
        serviceName: 'envoy-async-sidecar',
        sampler: { name: 'parentbased_always_on', ratio: 1 },
      });
      expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com/base/' }, []).tracing?.url).toBe('https://otlp.example.com/base/v1/traces');
      expect(loadConfig({ ...ON, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://other:4318/custom' }, []).tracing?.url).toBe('http://other:4318/custom');
    });

    it('takes the protocol, service name and sampler from their variables, the traces-specific protocol first', () => {
      const c = loadConfig(
        {
          ...ON,
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_SERVICE_NAME: 'jobs',
          OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
          OTEL_TRACES_SAMPLER_ARG: '0.25',
        },
        [],
      ).tracing;
      expect(c).toMatchObject({ protocol: 'http/json', serviceName: 'jobs', sampler: { name: 'parentbased_traceidratio', ratio: 0.25 } });
      expect(loadConfig({ ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf' }, []).tracing?.protocol).toBe(
        'http/protobuf',
      );
    });

    it('refuses grpc with one line (exit 2), and reads nothing but the endpoints while no endpoint is set', () => {
      expect(() => loadConfig({ ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, [])).toThrow(ConfigError);
      expect(() => loadConfig({ ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, [])).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL="grpc": .*http\/protobuf/);
      expect(() => loadConfig({ ...ON, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' }, [])).toThrow(/OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc"/);
      // A mesh-wide environment for other SDKs, without an endpoint: tracing stays off, start-up goes on.
      expect(loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_TRACES_SAMPLER: 'jaeger_remote', OTEL_TRACES_EXPORTER: 'zipkin' }, []).tracing).toBeNull();
    });

    it.each([
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, /OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318"/],
      [{ ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/xml' }, /OTEL_EXPORTER_OTLP_PROTOCOL="http\/xml": must be http\/protobuf or http\/json/],
      [{ ...ON, OTEL_TRACES_SAMPLER: 'sometimes' }, /OTEL_TRACES_SAMPLER="sometimes"/],
      [{ ...ON, OTEL_TRACES_SAMPLER_ARG: '2' }, /OTEL_TRACES_SAMPLER_ARG="2"/],
      [{ ...ON, OTEL_TRACES_EXPORTER: 'zipkin' }, /OTEL_TRACES_EXPORTER="zipkin"/],
      [{ ...ON, OTEL_SDK_DISABLED: 'maybe' }, /OTEL_SDK_DISABLED="maybe"/],
      [{ ...ON, OTEL_SERVICE_NAME: ' ' }, /OTEL_SERVICE_NAME/],
    ])('refuses %j', (env, message) => {
      expect(() => loadConfig(env, [])).toThrow(ConfigError);
      expect(() => loadConfig(env, [])).toThrow(message);
    });

    it('never echoes OTEL_EXPORTER_OTLP_HEADERS (it carries API keys)', () => {
      expect(SETTINGS.otelHeaders.secret).toBe(true);
    });
  });

  it('matches the README configuration table', () => {
    const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
    expect(readme).toContain(markdownTable());
  });
});
