/**
 * What Envoy Gateway v1.9.0 would give its Envoy for deploy/envoy-gateway: the xDS its translator
 * builds from HTTPRoutes, EnvoyExtensionPolicies, BackendTrafficPolicies and ClientTrafficPolicies,
 * reduced to what changes how a request is handled, as a static bootstrap the real Envoy can run
 * (test/support/real-envoy.ts). Envoy Gateway itself is not run: this follows its translator's
 * source at the tag, https://github.com/envoyproxy/gateway/tree/v1.9.0/internal (file named at each
 * piece). Any field of those resources it does not translate is an error, so that a setting added
 * to the manifests cannot be silently left out of what the tests run.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';

type Obj = Record<string, any>;

export interface GatewayXds {
  /** Envoy bootstrap (YAML) with one listener `ingress`; addresses are placeholders for renderEnvoyConfig. */
  bootstrap: string;
  /** Cluster name → the Kubernetes Service and port it stands for (the test maps them to loopback). */
  clusters: Record<string, { service: string; port: number }>;
  /** The ext_proc filter names, by EnvoyExtensionPolicy name (their stats are `http.<stat_prefix>.ext_proc.*`). */
  extProcFilters: Record<string, string[]>;
}

/** Gateway API durations (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`) as Envoy's `<seconds>s`. */
export function gatewayDuration(text: string): string {
  if (!/^([0-9]{1,5}(h|m|s|ms)){1,4}$/.test(text)) throw new Error(`not a Gateway API duration: ${text}`);
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)(h|ms|m|s)/g)) ms += Number(n) * { h: 3_600_000, m: 60_000, s: 1000, ms: 1 }[unit as 'h' | 'm' | 's' | 'ms'];
  return `${ms / 1000}s`;
}

/** A Kubernetes quantity as Envoy Gateway reads byte sizes (resource.Quantity.AsInt64). */
export function quantityBytes(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([1-9][0-9]*)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) throw new Error(`unsupported quantity: ${q}`);
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] as 'Ki'] ?? 1;
  return Number(m[1]) * mult;
}

function only(where: string, o: Obj | undefined, keys: string[]): void {
  for (const k of Object.keys(o ?? {})) if (!keys.includes(k)) throw new Error(`${where}.${k}: not translated by test/support/envoy-gateway.ts`);
}

// listener.go / cluster.go: tcpListenerPerConnectionBufferLimitBytes, tcpClusterPerConnectionBufferLimitBytes.
const DEFAULT_BUFFER_LIMIT = 32768;
// utils.go: defaultExtServiceRequestTimeout, set as the ext_proc grpc_service timeout.
const EXT_SERVICE_TIMEOUT = '10s';

interface IrRoute {
  name: string;
  cluster: string;
  ruleIndex: number;
  pathPrefix?: string;
  pathExact?: string;
  headers: { name: string; exact?: string; regex?: string }[];
  query: { name: string; exact?: string; regex?: string }[];
  extProcFilters: string[];
  bufferBytes?: number;
}

interface Target {
  kind: string;
  name: string;
  rule?: string;
}

function targetsOf(policy: Obj): Target[] {
  return (policy.spec.targetRefs ?? []).map((t: Obj) => {
    if (t.group !== 'gateway.networking.k8s.io') throw new Error(`${policy.metadata.name}: targetRef group ${t.group}`);
    return { kind: t.kind, name: t.name, rule: t.sectionName };
  });
}

/**
 * Which policy of a kind applies to a rule: one targeting the rule by name (`sectionName`) wins
 * over one targeting the whole route (envoyextensionpolicy.go / backendtrafficpolicy.go translate
 * rule-level policies first and skip route-level ones for those rules). Two at the same level are
 * a conflict Envoy Gateway resolves by age; here they are an error.
 */
function policyFor(policies: Obj[], route: string, rule: string | undefined): Obj | undefined {
  const at = (level: 'rule' | 'route') =>
    policies.filter((p) =>
      targetsOf(p).some((t) => t.kind === 'HTTPRoute' && t.name === route && (level === 'rule' ? rule !== undefined && t.rule === rule : t.rule === undefined)),
    );
  for (const level of ['rule', 'route'] as const) {
    const found = at(level);
    if (found.length > 1) throw new Error(`${found.map((p) => p.metadata.name).join(', ')} all target ${route}/${rule ?? ''}`);
    if (found.length === 1) return found[0];
  }
  return undefined;
}

/** ext_proc.go buildProcessingMode (from envoyextensionpolicy.go buildExtProc's IR). */
function processingMode(pm: Obj | undefined): Obj {
  only('processingMode', pm, ['request', 'response', 'allowModeOverride']);
  only('processingMode.request', pm?.request, ['body']);
  only('processingMode.response', pm?.response, ['body']);
  const body = (b: string | undefined) =>
    b === undefined
      ? 'NONE'
      : ({ Buffered: 'BUFFERED', BufferedPartial: 'BUFFERED_PARTIAL', Streamed: 'STREAMED', FullDuplexStreamed: 'FULL_DUPLEX_STREAMED' } as Obj)[b];
  const mode: Obj = {
    request_header_mode: pm?.request ? 'SEND' : 'SKIP',
    response_header_mode: pm?.response ? 'SEND' : 'SKIP',
    request_body_mode: body(pm?.request?.body),
    response_body_mode: body(pm?.response?.body),
    request_trailer_mode: pm?.request?.body === 'FullDuplexStreamed' ? 'SEND' : 'SKIP',
    response_trailer_mode: pm?.response?.body === 'FullDuplexStreamed' ? 'SEND' : 'SKIP',
  };
  return mode;
}

/** cluster.go: the ext service cluster (HTTP/2 for gRPC), with backendSettings applied. */
function extServiceCluster(name: string, settings: Obj | undefined): Obj {
  only('backendSettings', settings, ['circuitBreaker', 'connection']);
  only('backendSettings.circuitBreaker', settings?.circuitBreaker, [
    'maxConnections',
    'maxPendingRequests',
    'maxParallelRequests',
    'maxParallelRetries',
    'maxRequestsPerConnection',
  ]);
  only('backendSettings.connection', settings?.connection, ['bufferLimit']);
  const cb = settings?.circuitBreaker ?? {};
  const thresholds: Obj = { priority: 'DEFAULT', max_retries: cb.maxParallelRetries ?? 1024 };
  if (cb.maxConnections !== undefined) thresholds.max_connections = cb.maxConnections;
  if (cb.maxPendingRequests !== undefined) thresholds.max_pending_requests = cb.maxPendingRequests;
  if (cb.maxParallelRequests !== undefined) thresholds.max_requests = cb.maxParallelRequests;
  const options: Obj = {
    '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    explicit_http_config: { http2_protocol_options: { initial_connection_window_size: 1048576, initial_stream_window_size: 65536 } },
  };
  if (cb.maxRequestsPerConnection !== undefined) options.common_http_protocol_options = { max_requests_per_connection: cb.maxRequestsPerConnection };
  return {
    name,
    connect_timeout: '10s',
    per_connection_buffer_limit_bytes: settings?.connection?.bufferLimit !== undefined ? quantityBytes(settings.connection.bufferLimit) : DEFAULT_BUFFER_LIMIT,
    circuit_breakers: { thresholds: [thresholds] },
    lb_policy: 'LEAST_REQUEST',
    typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': options },
    load_assignment: { cluster_name: name, endpoints: [] },
  };
}

/** The route order of sort.go (XdsIRRoutes.Less, sorted descending, stable). */
function lessPrecedence(a: IrRoute, b: IrRoute): boolean {
  const type = (r: IrRoute) => (r.pathExact !== undefined ? 2 : 0);
  if (type(a) !== type(b)) return type(a) < type(b);
  const len = (r: IrRoute) => (r.pathExact !== undefined ? r.pathExact.length : r.pathPrefix === '/' ? 0 : (r.pathPrefix ?? '').length);
  if (len(a) !== len(b)) return len(a) < len(b);
  if (a.headers.length !== b.headers.length) return a.headers.length < b.headers.length;
  const exact = (m: { exact?: string }[]) => m.filter((x) => x.exact !== undefined).length;
  if (exact(a.headers) !== exact(b.headers)) return exact(a.headers) < exact(b.headers);
  if (a.query.length !== b.query.length) return a.query.length < b.query.length;
  return exact(a.query) < exact(b.query);
}

function stringMatcher(m: { exact?: string; regex?: string }): Obj {
  return m.exact !== undefined ? { exact: m.exact } : { safe_regex: { regex: m.regex } };
}

/** The xDS for the given manifests (e.g. the output of `kubectl kustomize deploy/envoy-gateway`). */
export function envoyGatewayXds(objects: Obj[]): GatewayXds {
  const ns = (o: Obj) => o.metadata?.namespace ?? 'default';
  const eeps = objects.filter((o) => o.kind === 'EnvoyExtensionPolicy');
  const btps = objects.filter((o) => o.kind === 'BackendTrafficPolicy');
  const ctps = objects.filter((o) => o.kind === 'ClientTrafficPolicy');
  const translated: Record<string, string[]> = {
    EnvoyExtensionPolicy: ['targetRefs', 'extProc'],
    BackendTrafficPolicy: ['targetRefs', 'requestBuffer'],
    ClientTrafficPolicy: ['targetRefs', 'connection'],
  };
  for (const p of [...eeps, ...btps, ...ctps]) only(`${p.kind}/${p.metadata.name}.spec`, p.spec, translated[p.kind]!);
  const clusters: Obj[] = [];
  const clusterTargets: GatewayXds['clusters'] = {};
  const extProcFilters: GatewayXds['extProcFilters'] = {};
  const httpFilters = new Map<string, { order: number; filter: Obj }>();

  // ext_proc.go: one filter per policy entry, disabled on the listener (patchHCM), enabled per
  // route with an empty FilterConfig (patchRoute); its cluster per backendRef (patchResources).
  const filtersOf = (policy: Obj): string[] => {
    const names: string[] = [];
    (policy.spec.extProc ?? []).forEach((ep: Obj, idx: number) => {
      only(`${policy.metadata.name}.extProc[${idx}]`, ep, ['backendRefs', 'backendSettings', 'processingMode', 'messageTimeout', 'failOpen', 'statusOnError']);
      if (ep.backendRefs?.length !== 1) throw new Error(`${policy.metadata.name}: one backendRef expected`);
      const ref = ep.backendRefs[0];
      only('backendRefs[0]', ref, ['name', 'port']);
      const configName = `envoyextensionpolicy/${ns(policy)}/${policy.metadata.name}/extproc/${idx}`;
      const filterName = `envoy.filters.http.ext_proc/${configName}`;
      const clusterName = `envoyextensionpolicy/${ns(policy)}/${policy.metadata.name}/${idx}/${ref.name}`;
      if (!httpFilters.has(filterName)) {
        const config: Obj = {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
          grpc_service: { envoy_grpc: { cluster_name: clusterName, authority: `${ref.name}.${ns(policy)}:${ref.port}` }, timeout: EXT_SERVICE_TIMEOUT },
          processing_mode: processingMode(ep.processingMode),
          allow_mode_override: ep.processingMode?.allowModeOverride === true,
        };
        if (ep.failOpen !== undefined) config.failure_mode_allow = ep.failOpen;
        if (ep.messageTimeout !== undefined) config.message_timeout = gatewayDuration(ep.messageTimeout);
        if (ep.statusOnError !== undefined) config.status_on_error = { code: ep.statusOnError };
        // httpfilters.go newOrderedHTTPFilter: ext_proc at 100 + its index.
        httpFilters.set(filterName, { order: 100 + idx, filter: { name: filterName, disabled: true, typed_config: config } });
        clusters.push(extServiceCluster(clusterName, ep.backendSettings));
        clusterTargets[clusterName] = { service: ref.name, port: ref.port };
        (extProcFilters[policy.metadata.name] ??= []).push(filterName);
      }
      names.push(filterName);
    });
    return names;
  };

  const routes: IrRoute[] = [];
  let hasBuffer: number | undefined;
  for (const hr of objects.filter((o) => o.kind === 'HTTPRoute')) {
    only(`HTTPRoute/${hr.metadata.name}.spec`, hr.spec, ['parentRefs', 'hostnames', 'rules']);
    if (hr.spec.hostnames) throw new Error('hostnames: not translated');
    hr.spec.rules.forEach((rule: Obj, ruleIndex: number) => {
      only(`rules[${ruleIndex}]`, rule, ['name', 'matches', 'backendRefs']);
      if (rule.backendRefs?.length !== 1) throw new Error('one backendRef per rule expected');
      const ref = rule.backendRefs[0];
      only(`rules[${ruleIndex}].backendRefs[0]`, ref, ['name', 'port']);
      // route.go: one cluster per rule, named after it.
      const cluster = `httproute/${ns(hr)}/${hr.metadata.name}/rule/${ruleIndex}`;
      const eep = policyFor(eeps, hr.metadata.name, rule.name);
      const btp = policyFor(btps, hr.metadata.name, rule.name);
      only('requestBuffer', btp?.spec.requestBuffer, ['limit']);
      const bufferBytes = btp?.spec.requestBuffer ? quantityBytes(btp.spec.requestBuffer.limit) : undefined;
      // request_buffer.go: the listener's disabled buffer filter takes the first limit found.
      if (bufferBytes !== undefined) hasBuffer ??= bufferBytes;
      const filters = eep ? filtersOf(eep) : [];
      const matches: Obj[] = rule.matches ?? [{ path: { type: 'PathPrefix', value: '/' } }];
      matches.forEach((m, matchIndex) => {
        only(`rules[${ruleIndex}].matches[${matchIndex}]`, m, ['path', 'headers', 'queryParams']);
        const path = m.path ?? { type: 'PathPrefix', value: '/' };
        const kv = (x: Obj) => {
          const type = x.type ?? 'Exact';
          if (type !== 'Exact' && type !== 'RegularExpression') throw new Error(`match type ${type}`);
          return type === 'Exact' ? { name: x.name, exact: x.value } : { name: x.name, regex: x.value };
        };
        const r: IrRoute = {
          name: `httproute/${ns(hr)}/${hr.metadata.name}/rule/${ruleIndex}/match/${matchIndex}/*`,
          cluster,
          ruleIndex,
          headers: (m.headers ?? []).map(kv),
          query: (m.queryParams ?? []).map(kv),
          extProcFilters: filters,
          bufferBytes,
        };
        if ((path.type ?? 'PathPrefix') === 'PathPrefix') r.pathPrefix = path.value ?? '/';
        else if (path.type === 'Exact') r.pathExact = path.value;
        else throw new Error(`path type ${path.type}`);
        routes.push(r);
      });
      if (!clusterTargets[cluster]) {
        clusters.push({
          name: cluster,
          connect_timeout: '10s',
          per_connection_buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
          lb_policy: 'LEAST_REQUEST',
          circuit_breakers: { thresholds: [{ priority: 'DEFAULT', max_retries: 1024 }] },
          load_assignment: { cluster_name: cluster, endpoints: [] },
        });
        clusterTargets[cluster] = { service: ref.name, port: ref.port };
      }
    });
  }
  routes.sort((a, b) => (lessPrecedence(b, a) ? -1 : lessPrecedence(a, b) ? 1 : 0));

  if (hasBuffer !== undefined) {
    httpFilters.set('envoy.filters.http.buffer', {
      order: 12,
      filter: {
        name: 'envoy.filters.http.buffer',
        disabled: true,
        typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer', max_request_bytes: hasBuffer },
      },
    });
  }
  // httpfilters.go sortHTTPFilters: by order, then by name; the router last.
  const sortedFilters = [...httpFilters.values()].sort((a, b) => a.order - b.order || (a.filter.name < b.filter.name ? -1 : 1)).map((f) => f.filter);
  sortedFilters.push({
    name: 'envoy.filters.http.router',
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router', suppress_envoy_headers: true },
  });

  // clienttrafficpolicy.go: connection.bufferLimit becomes the listener's per-connection limit.
  let listenerLimit = DEFAULT_BUFFER_LIMIT;
  for (const ctp of ctps) {
    if (!targetsOf(ctp).every((t) => t.kind === 'Gateway')) throw new Error('ClientTrafficPolicy: Gateway targets only');
    only('connection', ctp.spec.connection, ['bufferLimit']);
    if (ctp.spec.connection?.bufferLimit !== undefined) listenerLimit = quantityBytes(ctp.spec.connection.bufferLimit);
  }

  const xdsRoutes = routes.map((r) => {
    const match: Obj = {};
    // route.go buildPathMatch: "/" stays a prefix, longer prefixes match whole path segments.
    if (r.pathExact !== undefined) match.path = r.pathExact;
    else if (r.pathPrefix === '/') match.prefix = '/';
    else match.path_separated_prefix = r.pathPrefix!.replace(/\/$/, '');
    if (r.headers.length) match.headers = r.headers.map((h) => ({ name: h.name, string_match: stringMatcher(h) }));
    if (r.query.length) match.query_parameters = r.query.map((q) => ({ name: q.name, string_match: stringMatcher(q) }));
    const perFilter: Obj = {};
    for (const f of r.extProcFilters) perFilter[f] = { '@type': 'type.googleapis.com/envoy.config.route.v3.FilterConfig', config: {} };
    if (r.bufferBytes !== undefined) {
      perFilter['envoy.filters.http.buffer'] = {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute',
        buffer: { max_request_bytes: r.bufferBytes },
      };
    }
    // route.go: websocket upgrades on by default, off where requestBuffer is set.
    const route: Obj = { cluster: r.cluster };
    if (r.bufferBytes === undefined) route.upgrade_configs = [{ upgrade_type: 'websocket' }];
    const out: Obj = { name: r.name, match, route };
    if (Object.keys(perFilter).length) out.typed_per_filter_config = perFilter;
    return out;
  });

  const bootstrap = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: {
      listeners: [
        {
          name: 'ingress',
          address: { socket_address: { address: '0.0.0.0', port_value: 10080 } },
          per_connection_buffer_limit_bytes: listenerLimit,
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                    // listener.go: the HCM settings Envoy Gateway always sets that touch requests.
                    stat_prefix: 'http-10080',
                    use_remote_address: true,
                    normalize_path: true,
                    merge_slashes: true,
                    path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT',
                    common_http_protocol_options: { headers_with_underscores_action: 'REJECT_REQUEST' },
                    route_config: { name: 'ingress', virtual_hosts: [{ name: 'all', domains: ['*'], routes: xdsRoutes }] },
                    http_filters: sortedFilters,
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters,
    },
  };
  return { bootstrap: stringify(bootstrap), clusters: clusterTargets, extProcFilters };
}

/**
 * deploy/envoy-gateway as Kubernetes would get it: `kubectl kustomize` when kubectl is installed,
 * else the files its kustomization.yaml lists (it has no patches; generated Secrets are left out).
 */
export function envoyGatewayManifests(root: string): { objects: Obj[]; renderedBy: 'kubectl' | 'files' } {
  const dir = join(root, 'deploy', 'envoy-gateway');
  const docs = (text: string) =>
    parseAllDocuments(text)
      .map((d) => {
        if (d.errors.length) throw new Error(d.errors[0]!.message);
        return d.toJS() as Obj;
      })
      .filter((d) => d != null);
  if (spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0) {
    return { objects: docs(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' })), renderedBy: 'kubectl' };
  }
  const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Obj;
  return { objects: (k.resources as string[]).flatMap((f) => docs(readFileSync(join(dir, f), 'utf8'))), renderedBy: 'files' };
}
