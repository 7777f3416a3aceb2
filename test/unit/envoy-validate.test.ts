/**
 * The real Envoy judges every Envoy configuration the project ships: `envoy --mode validate`
 * builds each listener, cluster and filter (every field, enum, `@type` and protoc-gen-validate
 * rule of the Envoy that will run it) without binding ports or resolving DNS. The snippets are
 * judged pasted into a minimal "existing" Envoy (test/support/envoy-config.ts). The negative cases
 * show the validation really refuses what Envoy would refuse at start-up.
 */
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { istioPatchesBootstrap, REPO_ROOT, snippetBootstrap, validateEnvoyConfig, withEnvoyTracing } from '../support/envoy-config';
import { describeWithEnvoy, findEnvoy, renderEnvoyConfig } from '../support/real-envoy';

jest.setTimeout(60_000);

const read = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');
const snippet = (name: string) => parse(read(`envoy/snippets/${name}`));
const SHIPPED = read('envoy/envoy.yaml');

function mutate(from: string, to: string): string {
  expect(SHIPPED).toContain(from);
  return SHIPPED.replace(from, to);
}

/** Envoy's reason for refusing (protobuf varies the spacing of its messages: match with \s+). */
async function refusal(yamlText: string): Promise<string> {
  const r = await validateEnvoyConfig(yamlText);
  if (r.ok) throw new Error('Envoy accepted the configuration');
  return r.error;
}

describeWithEnvoy('Envoy configurations, validated by the real Envoy', () => {
  it(`runs on Envoy ${findEnvoy().bin ? (findEnvoy() as { version: string }).version : '?'} (the reference version is 1.40)`, () => {
    const found = findEnvoy() as { version: string };
    expect(found.version).toMatch(/^1\.(\d+)\.\d+$/);
    expect(Number(found.version.split('.')[1])).toBeGreaterThanOrEqual(36); // envoy.yaml's oldest supported version
  });

  it('envoy/envoy.yaml as shipped', async () => {
    expect(await validateEnvoyConfig(SHIPPED)).toEqual({ ok: true });
  });

  it('needs no DNS: the STRICT_DNS clusters validate with names that cannot resolve (RFC 6761 .invalid)', async () => {
    const text = SHIPPED.replace('address: app,', 'address: app.invalid,').replace('address: sidecar,', 'address: sidecar.invalid,');
    expect(text).toContain('app.invalid');
    expect(text).toContain('sidecar.invalid');
    for (const host of ['app.invalid', 'sidecar.invalid']) await expect(lookup(host)).rejects.toThrow();
    expect(await validateEnvoyConfig(text)).toEqual({ ok: true });
  });

  it('deploy/kubernetes/base/envoy.yaml (the pod-local copy)', async () => {
    expect(await validateEnvoyConfig(read('deploy/kubernetes/base/envoy.yaml'))).toEqual({ ok: true });
  });

  it('envoy/envoy.yaml and the Kubernetes copy with their commented OpenTelemetry tracing switched on (README "Tracing")', async () => {
    for (const file of ['envoy/envoy.yaml', 'deploy/kubernetes/base/envoy.yaml']) {
      const { text, blocks } = withEnvoyTracing(read(file));
      expect(blocks).toBe(3); // the ingress and dispatch listeners, the collector cluster
      const doc = parse(text);
      const hcms = doc.static_resources.listeners.map((l: any) => l.filter_chains[0].filters[0].typed_config);
      for (const hcm of hcms) {
        expect(hcm.tracing.provider.name).toBe('envoy.tracers.opentelemetry');
        expect(hcm.tracing.provider.typed_config.http_service.http_uri.cluster).toBe('opentelemetry_collector');
      }
      expect(doc.static_resources.clusters.map((c: any) => c.name)).toContain('opentelemetry_collector');
      expect(await validateEnvoyConfig(text)).toEqual({ ok: true });
    }
    // Switched on, a misspelt tracer field is refused: the blocks really are judged.
    const broken = withEnvoyTracing(SHIPPED.replace('#       service_name: envoy', '#       service_nme: envoy')).text;
    expect(await refusal(broken)).toMatch(/service_nme/);
  });

  it('envoy/envoy.yaml as the real-Envoy tests run it (renderEnvoyConfig: loopback addresses)', async () => {
    const rendered = renderEnvoyConfig(SHIPPED, {
      listeners: { ingress: 18080, dispatch: 18081 },
      clusters: { app: '127.0.0.1:18000', async_sidecar: '127.0.0.1:15051' },
      adminPort: 19901,
    });
    expect(await validateEnvoyConfig(rendered)).toEqual({ ok: true });
  });

  it('http-filter.yaml + routes.yaml + cluster.yaml pasted into an existing Envoy', async () => {
    const text = snippetBootstrap({ filters: snippet('http-filter.yaml'), routes: snippet('routes.yaml'), clusters: snippet('cluster.yaml') });
    expect(await validateEnvoyConfig(text)).toEqual({ ok: true });
  });

  it('composite-filter.yaml + cluster.yaml pasted into an existing Envoy (no routes)', async () => {
    const text = snippetBootstrap({ filters: snippet('composite-filter.yaml'), clusters: snippet('cluster.yaml') });
    expect(await validateEnvoyConfig(text)).toEqual({ ok: true });
  });

  it("the Istio EnvoyFilter's patch values applied to a stand-in of Istio's inbound config", async () => {
    const docs = parseAllDocuments(read('envoy/snippets/istio-envoyfilter.yaml'));
    expect(docs).toHaveLength(1);
    expect(await validateEnvoyConfig(istioPatchesBootstrap(docs[0]!.toJS()))).toEqual({ ok: true });
  });

  it('does NOT catch an ext_proc filter whose cluster is missing (so envoy-snippets.test.ts checks the names agree)', async () => {
    expect(await validateEnvoyConfig(snippetBootstrap({ filters: snippet('http-filter.yaml') }))).toEqual({ ok: true });
    expect(await validateEnvoyConfig(snippetBootstrap({ filters: snippet('composite-filter.yaml') }))).toEqual({ ok: true });
  });

  describe('refuses what Envoy would refuse at start-up', () => {
    it('a misspelt field, also inside a typed config', async () => {
      expect(await refusal(mutate('stat_prefix: ingress_http', 'stat_prefx: ingress_http'))).toMatch(/no\s+such\s+field:\s+'stat_prefx'/);
      expect(await refusal(mutate('failure_mode_allow: false', 'failure_mode_alow: false'))).toMatch(/no\s+such\s+field:\s+'failure_mode_alow'/);
      expect(await refusal(mutate('request_body_buffer_limit: 10485760', 'request_body_bufer_limit: 10485760'))).toMatch(/request_body_bufer_limit/);
    });

    it('a bad enum value', async () => {
      expect(await refusal(mutate('request_body_mode: BUFFERED', 'request_body_mode: BUFFER'))).toMatch(/unknown\s+enum\s+value:\s+'BUFFER'/);
      expect(await refusal(mutate('code: ServiceUnavailable', 'code: ServiceUnavaliable'))).toMatch(/ServiceUnavaliable/);
    });

    it('a bad duration: wrong syntax, and out of the range a validate rule allows', async () => {
      expect(await refusal(mutate('message_timeout: 2s', 'message_timeout: 2m'))).toMatch(/duration\s+must\s+end\s+with\s+a\s+single\s+'s'/);
      // ExternalProcessor.message_timeout is limited to 0..3600 s by a protoc-gen-validate rule.
      expect(await refusal(mutate('message_timeout: 2s', 'message_timeout: 7200s'))).toMatch(/message_timeout[\s\S]*7200/);
    });

    it('an unknown @type', async () => {
      expect(await refusal(mutate('envoy.extensions.filters.http.router.v3.Router', 'envoy.extensions.filters.http.router.v3.Routr'))).toMatch(/Routr/);
    });

    it('a typo in a snippet', async () => {
      const filters = snippet('composite-filter.yaml');
      filters[0].typed_config.xds_matcher.matcher_list.matchers[1].predicate.or_matcher.predicate[0].single_predicate.input.typed_config.query_parm = 'async';
      expect(await refusal(snippetBootstrap({ filters, clusters: snippet('cluster.yaml') }))).toMatch(/query_parm/);
    });
  });
});
