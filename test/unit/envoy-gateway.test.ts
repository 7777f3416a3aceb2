/**
 * deploy/envoy-gateway: rendered by `kubectl kustomize` (offline), every Envoy Gateway and
 * Gateway API resource checked against the fields Envoy Gateway v1.9.0 and Gateway API v1.6.1
 * document (test/support/envoy-gateway-api.ts), and every value that must agree with the sidecar
 * (src/config/settings.ts) or with envoy/envoy.yaml checked against them. What these resources
 * do on the real Envoy is in test/integration/envoy-gateway.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';
import { SETTINGS } from '../../src/config/settings';
import { backendTrafficPolicy, envoyExtensionPolicy, httpRoute } from '../support/envoy-gateway-api';
import { envoyGatewayManifests, envoyGatewayXds, gatewayDuration, quantityBytes } from '../support/envoy-gateway';

type Obj = Record<string, any>;

const ROOT = resolve(__dirname, '..', '..');
const { objects, renderedBy } = envoyGatewayManifests(ROOT);
const find = (kind: string, name: string): Obj => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};
const envoy: Obj = parse(readFileSync(join(ROOT, 'envoy', 'envoy.yaml'), 'utf8'));
const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const envoyExtProc = hcm.http_filters.find((f: Obj) => f.name === 'envoy.filters.http.ext_proc').typed_config;
const envoyRoute = (name: string) => hcm.route_config.virtual_hosts[0].routes.find((r: Obj) => r.name === name);
const envoySidecarCluster = envoy.static_resources.clusters.find((c: Obj) => c.name === 'async_sidecar');
/** The runs API's longest ?wait (README, "Runs API") plus the margin the sidecar adds for the answer (src/api/runs-api.ts). */
const LONGEST_WAIT_MS = 60_000 + 2_000;

const route = find('HTTPRoute', 'my-app');
const accept = find('EnvoyExtensionPolicy', 'async-sidecar-accept');
const runsApi = find('EnvoyExtensionPolicy', 'async-sidecar-runs-api');
const bodyLimit = find('BackendTrafficPolicy', 'async-sidecar-body-limit');
const deployment = find('Deployment', 'async-sidecar');
const container = deployment.spec.template.spec.containers[0];
const env = (name: string) => container.env.find((e: Obj) => e.name === name);

describe('deploy/envoy-gateway manifests', () => {
  const kubectl = renderedBy === 'kubectl' ? it : it.skip;
  kubectl('`kubectl kustomize deploy/envoy-gateway` builds offline, with the generated Secret wired in', () => {
    const secret = find('Secret', objects.find((o) => o.kind === 'Secret')!.metadata.name);
    expect(secret.metadata.name).toMatch(/^async-sidecar-[a-z0-9]{10}$/);
    expect(env('REDIS_URL').valueFrom.secretKeyRef).toEqual({ name: secret.metadata.name, key: 'REDIS_URL' });
    expect(SETTINGS.redisUrl.schema.safeParse(Buffer.from(secret.data.REDIS_URL, 'base64').toString()).success).toBe(true);
    expect(container.image).toBe('envoy-async-sidecar:0.1.0');
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'BackendTrafficPolicy/async-sidecar-body-limit',
      'Deployment/async-sidecar',
      'EnvoyExtensionPolicy/async-sidecar-accept',
      'EnvoyExtensionPolicy/async-sidecar-runs-api',
      'HTTPRoute/my-app',
      'NetworkPolicy/async-sidecar',
      `Secret/${secret.metadata.name}`,
      'Service/async-sidecar',
    ]);
    for (const o of objects) expect([o.kind, o.metadata.labels?.['app.kubernetes.io/part-of']]).toEqual([o.kind, 'envoy-async-sidecar']);
  });

  it.each([
    ['EnvoyExtensionPolicy', envoyExtensionPolicy],
    ['BackendTrafficPolicy', backendTrafficPolicy],
    ['HTTPRoute', httpRoute],
  ] as const)('every %s has only fields Envoy Gateway v1.9.0 / Gateway API v1.6.1 document, with valid values', (kind, schema) => {
    const list = objects.filter((o) => o.kind === kind);
    expect(list.length).toBeGreaterThan(0);
    for (const o of list) {
      const r = schema.safeParse(o);
      expect([o.metadata.name, r.success ? 'ok' : r.error.issues]).toEqual([o.metadata.name, 'ok']);
    }
  });

  it('the schemas are not vacuous: a misspelt field, a wrong enum or duration, a missing port are refused', () => {
    const broken = (change: (p: Obj) => void) => {
      const copy = structuredClone(accept);
      change(copy.spec.extProc[0]);
      return envoyExtensionPolicy.safeParse(copy).success;
    };
    expect(broken(() => undefined)).toBe(true);
    expect(broken((e) => (e.messageTimout = e.messageTimeout))).toBe(false);
    expect(broken((e) => (e.processingMode.request.body = 'BUFFERED'))).toBe(false);
    expect(broken((e) => (e.messageTimeout = '2 seconds'))).toBe(false);
    expect(broken((e) => delete e.backendRefs[0].port)).toBe(false);
    expect(broken((e) => (e.statusOnError = 200))).toBe(false);
    expect(broken((e) => (e.backendSettings.circuitBreaker.maxRequestsPerConection = 500))).toBe(false);
    const rb = structuredClone(bodyLimit);
    rb.spec.requestBuffer.limit = '10MB';
    expect(backendTrafficPolicy.safeParse(rb).success).toBe(false);
  });

  it('every policy targets a named rule of the HTTPRoute in this folder', () => {
    const rules = route.spec.rules.map((r: Obj) => r.name);
    for (const p of [accept, runsApi, bodyLimit]) {
      for (const t of p.spec.targetRefs)
        expect([p.metadata.name, t.kind, t.name, rules.includes(t.sectionName)]).toEqual([p.metadata.name, 'HTTPRoute', 'my-app', true]);
    }
    expect(accept.spec.targetRefs.map((t: Obj) => t.sectionName)).toEqual(['async']);
    expect(bodyLimit.spec.targetRefs.map((t: Obj) => t.sectionName)).toEqual(['async']);
    expect(runsApi.spec.targetRefs.map((t: Obj) => t.sectionName)).toEqual(['runs-api']);
  });

  it('translates without a field left out (test/support/envoy-gateway.ts refuses what it does not translate)', () => {
    const xds = envoyGatewayXds(objects);
    expect(Object.keys(xds.extProcFilters).sort()).toEqual(['async-sidecar-accept', 'async-sidecar-runs-api']);
  });
});

describe('deploy/envoy-gateway agrees with envoy/envoy.yaml and the sidecar', () => {
  const xds = envoyGatewayXds(objects);
  const filters: Obj[] = parse(xds.bootstrap).static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters;
  const filterOf = (policy: string) => filters.find((f) => f.name === xds.extProcFilters[policy]![0])!.typed_config;
  const routeMode = (name: string) => envoyRoute(name).typed_per_filter_config['envoy.filters.http.ext_proc'].overrides.processing_mode;

  it("processing modes: as Envoy Gateway translates them, exactly envoy.yaml's per-route modes (headers + BUFFERED body; headers only for the runs API; no response processing)", () => {
    expect(filterOf('async-sidecar-accept').processing_mode).toEqual(routeMode('async_query'));
    expect(routeMode('async_prefer')).toEqual(routeMode('async_query'));
    expect(filterOf('async-sidecar-runs-api').processing_mode).toEqual(routeMode('runs_api'));
  });

  it("failure handling and mode override as envoy.yaml's filter: fail closed, 503, allow_mode_override", () => {
    for (const p of [accept, runsApi]) {
      const e = p.spec.extProc[0];
      expect([p.metadata.name, e.failOpen, e.statusOnError, e.processingMode.allowModeOverride]).toEqual([
        p.metadata.name,
        envoyExtProc.failure_mode_allow,
        503,
        envoyExtProc.allow_mode_override,
      ]);
    }
    expect(envoyExtProc.status_on_error).toEqual({ code: 'ServiceUnavailable' });
  });

  it("message timeouts: the accept's is envoy.yaml's message_timeout; the runs API's covers the longest ?wait itself (no max_message_timeout in Envoy Gateway)", () => {
    expect(gatewayDuration(accept.spec.extProc[0].messageTimeout)).toBe(envoyExtProc.message_timeout);
    expect(gatewayDuration(runsApi.spec.extProc[0].messageTimeout)).toBe(envoyExtProc.max_message_timeout);
    expect(parseFloat(gatewayDuration(runsApi.spec.extProc[0].messageTimeout)) * 1000).toBeGreaterThanOrEqual(LONGEST_WAIT_MS);
  });

  it("circuit breakers and streams per connection: envoy.yaml's async_sidecar cluster (below the sidecar's 1,000-reset burst)", () => {
    const t = envoySidecarCluster.circuit_breakers.thresholds[0];
    const perConnection =
      envoySidecarCluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].common_http_protocol_options;
    for (const p of [accept, runsApi]) {
      expect(p.spec.extProc[0].backendSettings.circuitBreaker).toEqual({
        maxConnections: t.max_connections,
        maxPendingRequests: t.max_pending_requests,
        maxParallelRequests: t.max_requests,
        maxRequestsPerConnection: perConnection.max_requests_per_connection,
      });
    }
    expect(perConnection.max_requests_per_connection).toBeLessThan(1000);
  });

  it("the body limit is MAX_BODY_BYTES (envoy.yaml's request_body_buffer_limit), on the async rule only", () => {
    expect(quantityBytes(bodyLimit.spec.requestBuffer.limit)).toBe(Number(SETTINGS.maxBodyBytes.default));
    expect(envoyRoute('async_query').request_body_buffer_limit).toBe(Number(SETTINGS.maxBodyBytes.default));
  });

  it("the HTTPRoute's rules match what envoy.yaml's routes match: RUNS_API_PREFIX, ?async=true|1 (any case), Prefer: respond-async", () => {
    const rule = (name: string) => route.spec.rules.find((r: Obj) => r.name === name);
    expect(rule('runs-api').matches).toEqual([{ path: { type: 'PathPrefix', value: SETTINGS.runsApiPrefix.default } }]);
    const [byQuery, byPrefer] = rule('async').matches;
    expect(byQuery.queryParams).toEqual([
      { type: 'RegularExpression', name: 'async', value: envoyRoute('async_query').match.query_parameters[0].string_match.safe_regex.regex },
    ]);
    // RE2 full match with (?i), as Envoy runs it; JavaScript has no inline (?i), hence the flag.
    const header = byPrefer.headers[0];
    expect([header.type, header.name]).toEqual(['RegularExpression', 'prefer']);
    const re2 = new RegExp(`^(?:${header.value.replace(/^\(\?i\)/, '')})$`, 'i');
    const envoyContains = envoyRoute('async_prefer').match.headers[0].string_match;
    expect(envoyContains).toEqual({ contains: 'respond-async', ignore_case: true });
    for (const v of ['respond-async', 'Respond-Async', 'wait=5, respond-async', 'respond-async; x=1', 'return=minimal', 'respond-sync', '']) {
      expect([v, re2.test(v)]).toEqual([v, v.toLowerCase().includes(envoyContains.contains)]);
    }
    expect(rule('app').matches).toBeUndefined();
  });

  it('the ext_proc backend is the sidecar: Service port → container port → EXTPROC_ADDR; Service and NetworkPolicy select its pods', () => {
    const svc = find('Service', 'async-sidecar');
    for (const p of [accept, runsApi]) expect(p.spec.extProc[0].backendRefs).toEqual([{ name: svc.metadata.name, port: svc.spec.ports[0].port }]);
    expect(svc.spec.ports).toEqual([{ name: 'grpc', port: 50051, targetPort: 'grpc', protocol: 'TCP' }]);
    expect(container.ports).toEqual([{ name: 'grpc', containerPort: 50051, protocol: 'TCP' }]);
    expect(env('EXTPROC_ADDR').value).toBe('0.0.0.0:50051');
    const podLabels = deployment.spec.template.metadata.labels;
    const selects = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => podLabels[k] === v);
    expect(selects(svc.spec.selector)).toBe(true);
    expect(selects(deployment.spec.selector.matchLabels)).toBe(true);
    const np = find('NetworkPolicy', 'async-sidecar');
    expect(selects(np.spec.podSelector.matchLabels)).toBe(true);
    expect(np.spec.policyTypes).toEqual(['Ingress']);
    expect(np.spec.ingress).toEqual([
      {
        from: [
          {
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'envoy-gateway-system' } },
            // The labels Envoy Gateway puts on its proxy pods (internal/infrastructure/kubernetes/proxy/resource.go).
            podSelector: {
              matchLabels: {
                'app.kubernetes.io/name': 'envoy',
                'app.kubernetes.io/component': 'proxy',
                'app.kubernetes.io/managed-by': 'envoy-gateway',
                'gateway.envoyproxy.io/owning-gateway-name': route.spec.parentRefs[0].name,
              },
            },
          },
        ],
        ports: [{ port: 'grpc', protocol: 'TCP' }],
      },
    ]);
  });

  it("sidecar settings: known and valid; no token (Envoy Gateway cannot send one); admin on loopback; replays to the app rule's Service", () => {
    const byEnv = new Map(Object.values(SETTINGS).map((s) => [s.env, s]));
    for (const e of container.env) {
      expect([e.name, byEnv.has(e.name)]).toEqual([e.name, true]);
      if (e.value !== undefined) expect([e.name, byEnv.get(e.name)!.schema.safeParse(e.value).success]).toEqual([e.name, true]);
    }
    expect(env('EXTPROC_TOKEN')).toBeUndefined();
    expect(env('EXTPROC_TOKEN_FILE')).toBeUndefined();
    expect(env('ADMIN_ADDR').value).toBe(SETTINGS.adminAddr.default);
    // No max_message_timeout here: a Prefer: wait hold would outlast the accept policy's messageTimeout.
    expect(env('MAX_SYNC_WAIT').value).toBe('0');
    const app = route.spec.rules.find((r: Obj) => r.name === 'app').backendRefs[0];
    expect(env('DISPATCH_URL').value).toBe(`http://${app.name}:${app.port}`);
    for (const r of route.spec.rules) expect(r.backendRefs).toEqual([app]);
  });

  it('pod security: non-root, read-only root fs, no service account token, resources, a grace period covering SHUTDOWN_GRACE', () => {
    const pod = deployment.spec.template.spec;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory).toBeTruthy();
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(Number(env('SHUTDOWN_GRACE').value));
    expect(container.readinessProbe.exec.command).toEqual(['node', '/app/healthcheck.js', '/readyz']);
  });

  it('deploy/envoy-gateway/README.md explains every field the policies set', () => {
    const readme = readFileSync(join(ROOT, 'deploy', 'envoy-gateway', 'README.md'), 'utf8');
    /** Names of the fields that hold a value (an empty object such as `request: {}` counts as a value). */
    const leaves = (o: unknown, out = new Set<string>()): Set<string> => {
      if (Array.isArray(o)) o.forEach((x) => leaves(x, out));
      else if (o && typeof o === 'object') {
        for (const [k, v] of Object.entries(o)) {
          if (v && typeof v === 'object' && Object.keys(v).length) leaves(v, out);
          else out.add(k);
        }
      }
      return out;
    };
    const fields = new Set<string>();
    for (const p of [accept, runsApi, bodyLimit])
      for (const k of leaves(p.spec)) if (!['group', 'kind', 'name', 'port', 'sectionName'].includes(k)) fields.add(k);
    for (const f of [...fields, 'backendRefs', 'processingMode', 'requestBuffer', 'sectionName']) expect([f, readme.includes(`\`${f}\``)]).toEqual([f, true]);
  });
});
