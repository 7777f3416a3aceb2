/**
 * envoy/snippets/: each snippet is wrapped into a minimal Bootstrap the way a user would paste it
 * (the filter into an HTTP connection manager before the router, the routes into a virtual host
 * before a catch-all, the cluster into static_resources) and parsed strictly as Envoy's protos
 * (test/support/envoy-config.ts). The Istio EnvoyFilter's `patch.value`s are parsed strictly as the
 * Envoy type their `applyTo` implies. All of them must say the same as envoy/envoy.yaml.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { parseEnvoyBootstrapStrict, REPO_ROOT } from '../support/envoy-config';

type Obj = any;
const snippet = (name: string): Obj => parse(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', name), 'utf8'));
const envoy: Obj = parse(readFileSync(join(REPO_ROOT, 'envoy', 'envoy.yaml'), 'utf8'));
const ingress = envoy.static_resources.listeners.find((l: Obj) => l.name === 'ingress');
const hcm = ingress.filter_chains[0].filters[0].typed_config;
const envoyRoutes: Obj[] = hcm.route_config.virtual_hosts[0].routes;
const envoyExtProc = hcm.http_filters.find((f: Obj) => f.name === 'envoy.filters.http.ext_proc');
const envoySidecarCluster = envoy.static_resources.clusters.find((c: Obj) => c.name === 'async_sidecar');

const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } };
const APP_CLUSTER = {
  name: 'app',
  type: 'STATIC',
  connect_timeout: '1s',
  load_assignment: { cluster_name: 'app', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 8000 } } } }] }] },
};
const CATCH_ALL = { name: 'existing', match: { prefix: '/' }, route: { cluster: 'app' } };

/** An "existing" Envoy: one listener, one HCM, a catch-all route and the app cluster, plus the given parts. */
function bootstrap(parts: { filters?: Obj[]; routes?: Obj[]; clusters?: Obj[] }): string {
  return stringify({
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 9901 } } },
    static_resources: {
      listeners: [
        {
          name: 'existing',
          address: { socket_address: { address: '0.0.0.0', port_value: 8080 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': HCM_TYPE,
                    stat_prefix: 'existing',
                    route_config: { name: 'existing', virtual_hosts: [{ name: 'all', domains: ['*'], routes: [...(parts.routes ?? []), CATCH_ALL] }] },
                    http_filters: [...(parts.filters ?? []), ROUTER],
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [APP_CLUSTER, ...(parts.clusters ?? [])],
    },
  });
}

describe('envoy/snippets', () => {
  const filters: Obj[] = snippet('http-filter.yaml');
  const routes: Obj[] = snippet('routes.yaml');
  const clusters: Obj[] = snippet('cluster.yaml');

  it('are lists of one filter, three routes and one cluster', () => {
    expect(filters.map((f) => f.name)).toEqual(['envoy.filters.http.ext_proc']);
    expect(routes.map((r) => r.name)).toEqual(['runs_api', 'async_query', 'async_prefer']);
    expect(clusters.map((c) => c.name)).toEqual(['async_sidecar']);
  });

  it('http-filter.yaml parses strictly inside an HTTP connection manager, before the router', async () => {
    await expect(parseEnvoyBootstrapStrict(bootstrap({ filters, clusters }))).resolves.toBeUndefined();
  });

  it('routes.yaml parses strictly inside a virtual host, before the existing routes', async () => {
    await expect(parseEnvoyBootstrapStrict(bootstrap({ routes }))).resolves.toBeUndefined();
  });

  it('cluster.yaml parses strictly in static_resources', async () => {
    await expect(parseEnvoyBootstrapStrict(bootstrap({ clusters }))).resolves.toBeUndefined();
  });

  it('all three together parse strictly (what a user ends up with)', async () => {
    await expect(parseEnvoyBootstrapStrict(bootstrap({ filters, routes, clusters }))).resolves.toBeUndefined();
  });

  it('the strict parse does catch a typo in a snippet', async () => {
    const bad = structuredClone(filters);
    bad[0].typed_config.failure_mode_alow = false;
    await expect(parseEnvoyBootstrapStrict(bootstrap({ filters: bad, clusters }))).rejects.toThrow(/failure_mode_alow/);
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
});

describe('envoy/snippets/istio-envoyfilter.yaml', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, 'envoy', 'snippets', 'istio-envoyfilter.yaml'), 'utf8'));
  const ef: Obj = docs[0]!.toJS();
  const patches: Obj[] = ef.spec.configPatches;
  const TYPE_OF: Record<string, string> = {
    CLUSTER: 'envoy.config.cluster.v3.Cluster',
    HTTP_FILTER: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter',
    HTTP_ROUTE: 'envoy.config.route.v3.Route',
  };

  it('is one networking.istio.io/v1alpha3 EnvoyFilter for a workload, on SIDECAR_INBOUND', () => {
    expect(docs).toHaveLength(1);
    expect(ef.apiVersion).toBe('networking.istio.io/v1alpha3');
    expect(ef.kind).toBe('EnvoyFilter');
    expect(ef.spec.workloadSelector.labels).toBeDefined();
    expect(patches.map((p) => [p.applyTo, p.patch.operation])).toEqual([
      ['CLUSTER', 'ADD'],
      ['HTTP_FILTER', 'INSERT_BEFORE'],
      ['HTTP_ROUTE', 'INSERT_FIRST'],
      ['HTTP_ROUTE', 'INSERT_FIRST'],
      ['HTTP_ROUTE', 'INSERT_FIRST'],
    ]);
    for (const p of patches) expect(['SIDECAR_INBOUND', 'GATEWAY']).toContain(p.match.context);
    expect(patches[1].match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.router');
  });

  it.each([0, 1, 2, 3, 4])('patch %i: value parses strictly as its Envoy type', async (i) => {
    const p = patches[i];
    await expect(parseEnvoyBootstrapStrict(stringify(p.patch.value), { typeName: TYPE_OF[p.applyTo] })).resolves.toBeUndefined();
  });

  it('carries the same filter, cluster and routes as the snippets (routes to the inbound cluster)', () => {
    const filter = patches[1].patch.value;
    expect(filter.disabled).toBe(true);
    expect(filter).toEqual(snippet('http-filter.yaml')[0]);
    expect(patches[0].patch.value).toEqual(snippet('cluster.yaml')[0]);
    // INSERT_FIRST in order: the last patch ends up first.
    const inserted = patches.slice(2).map((p) => p.patch.value).reverse();
    const snippetRoutes: Obj[] = snippet('routes.yaml');
    expect(inserted.map((r) => r.name)).toEqual(snippetRoutes.map((r) => r.name));
    inserted.forEach((r, i) => {
      expect(r.match).toEqual(snippetRoutes[i].match);
      expect(r.typed_per_filter_config).toEqual(snippetRoutes[i].typed_per_filter_config);
      expect(r.route.cluster).toBe('inbound|8000||');
    });
  });
});
