import { readFileSync } from 'node:fs';
import { join } from 'node:path';
/**
 * envoy/envoy.yaml's topology and choices, read through the typed model the Envoy stand-in uses.
 * Whether Envoy accepts the file is test/unit/envoy-validate.test.ts (the real Envoy judges);
 * what the settings do on the real Envoy is test/integration/real-envoy-config.test.ts.
 */
import { REPO_ROOT, envoyConfigFromYaml, statusOnError, type ProcessingModeModel, type RouteModel } from '../support/envoy-config';

const YAML_TEXT = readFileSync(join(REPO_ROOT, 'envoy', 'envoy.yaml'), 'utf8');
const cfg = envoyConfigFromYaml(YAML_TEXT);
const EXT_PROC = 'envoy.filters.http.ext_proc';
const PER_ROUTE_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute';

function mutate(from: string, to: string): string {
  expect(YAML_TEXT).toContain(from);
  return YAML_TEXT.replace(from, to);
}

function routeMode(r: RouteModel): ProcessingModeModel | undefined {
  const per = r.perFilterConfig[EXT_PROC] as { '@type'?: string; overrides?: { processing_mode?: ProcessingModeModel } } | undefined;
  if (!per) return undefined;
  expect(per['@type']).toBe(PER_ROUTE_TYPE);
  return per.overrides?.processing_mode;
}

describe('the typed model of envoy.yaml (what the stand-in reads)', () => {
  it('reads status_on_error by StatusCode name or number, 500 when unset or not an error status (as Envoy)', () => {
    expect(statusOnError({ code: 'ServiceUnavailable' })).toBe(503);
    expect(statusOnError({ code: 'TooManyRequests' })).toBe(429);
    expect(statusOnError({ code: 502 })).toBe(502);
    expect(statusOnError(undefined)).toBe(500);
    expect(statusOnError({ code: 'OK' })).toBe(500);
    expect(statusOnError({ code: 'NoSuchCode' })).toBe(500);
  });

  it('reads the route-level request_body_buffer_limit, and the listener default of 1 MiB', () => {
    const m = envoyConfigFromYaml(mutate('request_body_buffer_limit: 10485760     # as async_query', 'request_body_buffer_limit: 2048'));
    const byName = Object.fromEntries(m.listener('ingress').hcm.routes.map((r) => [r.name, r.requestBodyBufferLimit]));
    expect(byName).toEqual({ runs_api: undefined, async_query: 10485760, async_prefer: 2048, passthrough: undefined });
    expect(m.listener('ingress').perConnectionBufferLimitBytes).toBe(1024 * 1024);
    expect(m.listener('ingress').hcm.virtualHostBufferLimit).toBeUndefined();
    const v = envoyConfigFromYaml(
      mutate(
        '              domains: ["*"]\n              routes:                                   # first match wins',
        '              domains: ["*"]\n              request_body_buffer_limit: 4096\n              routes:',
      ),
    );
    expect(v.listener('ingress').hcm.virtualHostBufferLimit).toBe(4096);
  });
});

describe('envoy/envoy.yaml topology', () => {
  const ingress = cfg.listener('ingress');
  const dispatch = cfg.listener('dispatch');
  const ep = ingress.hcm.extProc!;
  const routes = ingress.hcm.routes;

  it('has the admin and listener addresses of the compose topology', () => {
    expect(ingress.port).toBe(8080);
    expect(dispatch.port).toBe(8081);
    expect((cfg.raw.admin as { address: { socket_address: { port_value: number } } }).address.socket_address.port_value).toBe(9901);
  });

  it('raises the body buffer limit to MAX_BODY_BYTES on the async routes only, not listener-wide', () => {
    for (const l of [ingress, dispatch]) expect(l.perConnectionBufferLimitBytes).toBe(1024 * 1024);
    const limits = Object.fromEntries(routes.map((r) => [r.name, r.requestBodyBufferLimit]));
    expect(limits).toEqual({ runs_api: undefined, async_query: 10 * 1024 * 1024, async_prefer: 10 * 1024 * 1024, passthrough: undefined });
  });

  it('declares ext_proc disabled at HCM level, fail-closed with 503, with sane timeouts, before the router', () => {
    expect(ep).toBeDefined();
    expect(ep.name).toBe(EXT_PROC);
    expect(ep.disabled).toBe(true);
    expect(ep.clusterName).toBe('async_sidecar');
    expect(ep.failureModeAllow).toBe(false);
    expect(ep.statusOnError).toBe(503);
    expect(ep.messageTimeoutMs).toBeGreaterThanOrEqual(1000);
    expect(ep.maxMessageTimeoutMs).toBeGreaterThanOrEqual(60_000);
    expect(ep.allowModeOverride).toBe(true);
    expect(ep.processingMode).toMatchObject({ request_header_mode: 'SEND', response_header_mode: 'SKIP', request_body_mode: 'NONE' });
    expect(ingress.hcm.httpFilters.map((f) => f.name)).toEqual([EXT_PROC, 'envoy.filters.http.router']);
  });

  it('enables ext_proc on the runs API route, headers only', () => {
    const r = routes[0]!;
    expect(r.match.prefix).toBe('/v1/runs');
    expect(routeMode(r)).toEqual({
      request_header_mode: 'SEND',
      response_header_mode: 'SKIP',
      request_body_mode: 'NONE',
      response_body_mode: 'NONE',
      request_trailer_mode: 'SKIP',
      response_trailer_mode: 'SKIP',
    });
  });

  it('enables ext_proc with a BUFFERED request body on the async routes', () => {
    const asyncRoutes = routes.filter((r) => r.match.query_parameters.some((q) => q.name === 'async') || r.match.headers.some((h) => h.name === 'prefer'));
    expect(asyncRoutes.length).toBeGreaterThanOrEqual(2);
    for (const r of asyncRoutes) {
      expect(routeMode(r)).toEqual({
        request_header_mode: 'SEND',
        response_header_mode: 'SKIP',
        request_body_mode: 'BUFFERED',
        response_body_mode: 'NONE',
        request_trailer_mode: 'SKIP',
        response_trailer_mode: 'SKIP',
      });
    }
    const q = asyncRoutes.flatMap((r) => r.match.query_parameters).find((p) => p.name === 'async')!;
    expect(q.string_match?.safe_regex?.regex).toBe('(?i)true|1');
    const h = asyncRoutes.flatMap((r) => r.match.headers).find((x) => x.name === 'prefer')!;
    expect(h.string_match).toMatchObject({ contains: 'respond-async', ignore_case: true });
  });

  it('ends with a catch-all route that leaves ext_proc disabled', () => {
    const last = routes.at(-1)!;
    expect(last.match).toMatchObject({ prefix: '/', query_parameters: [], headers: [] });
    expect(last.cluster).toBe('app');
    expect(last.perFilterConfig[EXT_PROC]).toBeUndefined();
  });

  it('has a dispatch listener without ext_proc whose route allows 12-hour calls', () => {
    expect(dispatch.hcm.httpFilters.map((f) => f.name)).toEqual(['envoy.filters.http.router']);
    expect(dispatch.hcm.extProc).toBeUndefined();
    expect(dispatch.hcm.routes).toHaveLength(1);
    const r = dispatch.hcm.routes[0]!;
    expect(r.cluster).toBe('app');
    expect(r.timeoutMs).toBeGreaterThanOrEqual(43_200_000);
    expect(r.idleTimeoutMs ?? 0).toBeGreaterThanOrEqual(43_200_000);
    expect(dispatch.hcm.streamIdleTimeoutMs ?? 0).toBeGreaterThanOrEqual(43_200_000);
  });

  it('reaches the sidecar over HTTP/2 with raised circuit breakers and a gRPC health check', () => {
    const s = cfg.clusters.async_sidecar!;
    expect(s.endpoint).toBe('sidecar:50051');
    expect(s.http2).toBe(true);
    const t = s.circuitBreakers[0]!;
    expect(Number(t.max_requests)).toBeGreaterThanOrEqual(100_000);
    expect(Number(t.max_pending_requests)).toBeGreaterThanOrEqual(100_000);
    expect(s.healthChecks[0]).toHaveProperty('grpc_health_check');
    expect(cfg.clusters.app?.endpoint).toBe('app:8000');
  });

  it("opens a new sidecar connection before Node's HTTP/2 reset limit (1,000 per connection) is reached", () => {
    const limit = cfg.clusters.async_sidecar!.maxRequestsPerConnection;
    expect(limit).not.toBeNull();
    expect(limit!).toBeGreaterThan(0);
    expect(limit!).toBeLessThan(1000);
  });
});
