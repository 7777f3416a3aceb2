/**
 * envoy/snippets/ say the same as envoy/envoy.yaml (filter config, enabling routes, sidecar
 * cluster; the composite filter's rules and ext_proc configs; the Istio EnvoyFilter's values), and
 * the assembling functions that paste them into a minimal "existing" Envoy put each part where a
 * user would. That Envoy accepts the assembled configs is test/unit/envoy-validate.test.ts; that
 * the composite filter works is test/integration/real-envoy-config.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { istioPatchesBootstrap, REPO_ROOT, snippetBootstrap } from '../support/envoy-config';

type Obj = any;
const snippet = (name: string): Obj => parse(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', name), 'utf8'));
const envoy: Obj = parse(readFileSync(join(REPO_ROOT, 'envoy', 'envoy.yaml'), 'utf8'));
const ingress = envoy.static_resources.listeners.find((l: Obj) => l.name === 'ingress');
const hcm = ingress.filter_chains[0].filters[0].typed_config;
const envoyRoutes: Obj[] = hcm.route_config.virtual_hosts[0].routes;
const envoyExtProc = hcm.http_filters.find((f: Obj) => f.name === 'envoy.filters.http.ext_proc');
const envoySidecarCluster = envoy.static_resources.clusters.find((c: Obj) => c.name === 'async_sidecar');

/** The HCM of an assembled bootstrap. */
function hcmOf(bootstrapText: string): Obj {
  return parse(bootstrapText).static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
}

describe('snippetBootstrap / istioPatchesBootstrap (the assembling functions)', () => {
  it('puts filters before the router, routes before the catch-all, clusters beside the app cluster', () => {
    const b = snippetBootstrap({ filters: [{ name: 'f' }], routes: [{ name: 'r1' }, { name: 'r2' }], clusters: [{ name: 'c' }] });
    const h = hcmOf(b);
    expect(h.http_filters.map((f: Obj) => f.name)).toEqual(['f', 'envoy.filters.http.router']);
    expect(h.route_config.virtual_hosts[0].routes.map((r: Obj) => r.name)).toEqual(['r1', 'r2', 'existing']);
    expect(h.route_config.virtual_hosts[0].routes[2]).toEqual({ name: 'existing', match: { prefix: '/' }, route: { cluster: 'app' } });
    expect(parse(b).static_resources.clusters.map((c: Obj) => c.name)).toEqual(['app', 'c']);
    expect(parse(snippetBootstrap({})).static_resources.listeners[0].name).toBe('existing');
    expect(parse(snippetBootstrap({ listenerName: 'ingress' })).static_resources.listeners[0].name).toBe('ingress');
  });

  it("applies Istio patches as Istio does: INSERT_FIRST one by one (last first), VIRTUAL_HOST MERGE, routes to Istio's inbound cluster", () => {
    const value = (name: string) => ({ name });
    const b = istioPatchesBootstrap({
      spec: {
        configPatches: [
          { applyTo: 'CLUSTER', patch: { operation: 'ADD', value: value('c') } },
          { applyTo: 'HTTP_FILTER', patch: { operation: 'INSERT_BEFORE', value: value('f') } },
          { applyTo: 'HTTP_ROUTE', patch: { operation: 'INSERT_FIRST', value: value('applied-first') } },
          { applyTo: 'HTTP_ROUTE', patch: { operation: 'INSERT_FIRST', value: value('applied-last') } },
        ],
      },
    });
    const h = hcmOf(b);
    expect(h.route_config.virtual_hosts[0].routes.map((r: Obj) => [r.name, r.route?.cluster])).toEqual([
      ['applied-last', undefined],
      ['applied-first', undefined],
      ['existing', 'inbound|8000||'],
    ]);
    expect(h.http_filters.map((f: Obj) => f.name)).toEqual(['f', 'envoy.filters.http.router']);
    expect(parse(b).static_resources.clusters.map((c: Obj) => c.name)).toEqual(['inbound|8000||', 'c']);
    expect(() => istioPatchesBootstrap({ spec: { configPatches: [{ applyTo: 'LISTENER', patch: { operation: 'MERGE', value: {} } }] } })).toThrow(
      /LISTENER MERGE/,
    );
    const merged = hcmOf(
      istioPatchesBootstrap(
        { spec: { configPatches: [{ applyTo: 'VIRTUAL_HOST', patch: { operation: 'MERGE', value: { request_body_buffer_limit: 5 } } }] } },
        { port: 9000 },
      ),
    );
    expect(merged.route_config.virtual_hosts[0]).toMatchObject({
      name: 'all',
      request_body_buffer_limit: 5,
      routes: [{ route: { cluster: 'inbound|9000||' } }],
    });
  });
});

describe('envoy/snippets', () => {
  const filters: Obj[] = snippet('http-filter.yaml');
  const routes: Obj[] = snippet('routes.yaml');
  const clusters: Obj[] = snippet('cluster.yaml');

  it('are lists of one filter, three routes and one cluster', () => {
    expect(filters.map((f) => f.name)).toEqual(['envoy.filters.http.ext_proc']);
    expect(routes.map((r) => r.name)).toEqual(['runs_api', 'async_query', 'async_prefer']);
    expect(clusters.map((c) => c.name)).toEqual(['async_sidecar']);
  });

  it('say the same as envoy/envoy.yaml: filter config, enabling routes, sidecar cluster', () => {
    const { stat_prefix: _s, ...filterCfg } = filters[0].typed_config;
    expect({ ...filters[0], typed_config: filterCfg }).toEqual(envoyExtProc);
    for (const r of routes) {
      const ours = envoyRoutes.find((e) => e.name === r.name);
      expect(ours).toBeDefined();
      expect(r).toEqual(ours);
    }
    const norm = (c: Obj) => {
      const { type: _t, dns_lookup_family: _d, load_assignment: _l, ...rest } = c;
      return rest;
    };
    expect(norm(clusters[0])).toEqual(norm(envoySidecarCluster));
    expect(clusters[0].type).toBe('STATIC');
    expect(clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({ address: '127.0.0.1', port_value: 50051 });
  });

  it("composite-filter.yaml: one entry whose two rules run envoy.yaml's ext_proc config with its routes' matching and modes", () => {
    const composite: Obj[] = snippet('composite-filter.yaml');
    expect(composite).toHaveLength(1);
    const entry = composite[0];
    expect(entry.disabled).toBeUndefined(); // always on: the matcher decides per request
    expect(entry.typed_config['@type']).toBe('type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher');
    expect(entry.typed_config.extension_config.typed_config['@type']).toBe('type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite');
    const [runsRule, asyncRule] = entry.typed_config.xds_matcher.matcher_list.matchers;
    const route = (name: string) => envoyRoutes.find((r) => r.name === name);
    const modeOf = (name: string) => route(name).typed_per_filter_config['envoy.filters.http.ext_proc'].overrides.processing_mode;
    const { processing_mode: _m, ...shared } = envoyExtProc.typed_config;
    for (const [rule, routeName] of [
      [runsRule, 'runs_api'],
      [asyncRule, 'async_query'],
    ] as const) {
      const delegated = rule.on_match.action.typed_config.typed_config;
      expect(delegated.name).toBe('envoy.filters.http.ext_proc');
      const { processing_mode: mode, ...rest } = delegated.typed_config;
      expect(rest).toEqual(shared);
      expect(mode).toEqual(modeOf(routeName));
    }
    expect(modeOf('async_prefer')).toEqual(modeOf('async_query'));
    // The same triggers as the routes.
    expect(runsRule.predicate.single_predicate).toMatchObject({
      input: { typed_config: { header_name: ':path' } },
      value_match: { prefix: route('runs_api').match.prefix },
    });
    const [query, prefer] = asyncRule.predicate.or_matcher.predicate.map((p: Obj) => p.single_predicate);
    expect(query.input.typed_config).toMatchObject({ query_param: 'async' });
    expect(query.value_match.safe_regex.regex).toBe(route('async_query').match.query_parameters[0].string_match.safe_regex.regex);
    expect(prefer.input.typed_config).toMatchObject({ header_name: route('async_prefer').match.headers[0].name });
    expect(prefer.value_match).toEqual(route('async_prefer').match.headers[0].string_match);
  });

  it("every ext_proc filter names the cluster of cluster.yaml (Envoy's validation does not check it)", () => {
    const composite: Obj[] = snippet('composite-filter.yaml');
    const names = [
      filters[0].typed_config.grpc_service.envoy_grpc.cluster_name,
      ...composite[0].typed_config.xds_matcher.matcher_list.matchers.map(
        (m: Obj) => m.on_match.action.typed_config.typed_config.typed_config.grpc_service.envoy_grpc.cluster_name,
      ),
    ];
    expect(new Set(names)).toEqual(new Set([clusters[0].name]));
  });
});

describe('envoy/snippets/istio-envoyfilter.yaml', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', 'istio-envoyfilter.yaml'), 'utf8'));
  const ef: Obj = docs[0]!.toJS();
  const patches: Obj[] = ef.spec.configPatches;

  it('is one networking.istio.io/v1alpha3 EnvoyFilter for a workload, on SIDECAR_INBOUND, touching no route', () => {
    expect(docs).toHaveLength(1);
    expect(ef.apiVersion).toBe('networking.istio.io/v1alpha3');
    expect(ef.kind).toBe('EnvoyFilter');
    expect(ef.spec.workloadSelector.labels).toBeDefined();
    expect(patches.map((p) => [p.applyTo, p.patch.operation])).toEqual([
      ['CLUSTER', 'ADD'],
      ['HTTP_FILTER', 'INSERT_BEFORE'],
      ['VIRTUAL_HOST', 'MERGE'],
    ]);
    for (const p of patches) expect(p.match.context).toBe('SIDECAR_INBOUND');
    expect(patches[1].match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.router');
    // The filter and the body limit apply to the same port.
    expect(patches[2].match.routeConfiguration.portNumber).toBe(patches[1].match.listener.portNumber);
  });

  it('carries composite-filter.yaml and cluster.yaml unchanged, and raises the body limit to MAX_BODY_BYTES', () => {
    expect(patches[0].patch.value).toEqual(snippet('cluster.yaml')[0]);
    expect(patches[1].patch.value).toEqual(snippet('composite-filter.yaml')[0]);
    expect(patches[2].patch.value).toEqual({ request_body_buffer_limit: 10 * 1024 * 1024 });
  });

  it('assembles into an inbound config with the filter before the router and the limit on the virtual host', () => {
    const b = parse(istioPatchesBootstrap(ef));
    const h = b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    expect(h.http_filters.map((f: Obj) => f.name)).toEqual(['envoy.filters.http.async_sidecar', 'envoy.filters.http.router']);
    expect(h.route_config.virtual_hosts[0]).toMatchObject({ request_body_buffer_limit: 10485760, routes: [{ route: { cluster: 'inbound|8000||' } }] });
    expect(b.static_resources.clusters.map((c: Obj) => c.name)).toEqual(['inbound|8000||', 'async_sidecar']);
  });
});
