/**
 * renderEnvoyConfig (test/support/real-envoy.ts): the shipped config with every address moved to
 * loopback and nothing else changed, so the real-Envoy tests run what users run.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../support/envoy-config';
import { renderEnvoyConfig } from '../support/real-envoy';

type Obj = any;
const SHIPPED = readFileSync(join(REPO_ROOT, 'envoy', 'envoy.yaml'), 'utf8');
const OPTS = { listeners: { ingress: 18080, dispatch: 18081 }, clusters: { app: '127.0.0.1:18000', async_sidecar: '127.0.0.1:15051' }, adminPort: 19901 };

/** The config with the parts renderEnvoyConfig may change removed. */
function withoutAddresses(cfg: Obj): Obj {
  const c = structuredClone(cfg);
  delete c.admin.address;
  for (const l of c.static_resources.listeners) delete l.address;
  for (const cl of c.static_resources.clusters) {
    delete cl.type;
    delete cl.dns_lookup_family;
    delete cl.load_assignment;
  }
  return c;
}

describe('renderEnvoyConfig', () => {
  const shipped: Obj = parse(SHIPPED);
  const rendered: Obj = parse(renderEnvoyConfig(SHIPPED, OPTS));

  it('binds admin and every listener on 127.0.0.1 at the given ports', () => {
    expect(rendered.admin.address.socket_address).toEqual({ address: '127.0.0.1', port_value: 19901 });
    expect(rendered.static_resources.listeners.map((l: Obj) => [l.name, l.address.socket_address])).toEqual([
      ['ingress', { address: '127.0.0.1', port_value: 18080 }],
      ['dispatch', { address: '127.0.0.1', port_value: 18081 }],
    ]);
  });

  it('points every cluster at its given loopback endpoint, STATIC (no DNS)', () => {
    for (const c of rendered.static_resources.clusters) {
      const [host, port] = OPTS.clusters[c.name as keyof typeof OPTS.clusters].split(':');
      expect(c.type).toBe('STATIC');
      expect(c.dns_lookup_family).toBeUndefined();
      expect(c.load_assignment).toEqual({
        cluster_name: c.name,
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: host, port_value: Number(port) } } } }] }],
      });
    }
    expect(rendered.static_resources.clusters.map((c: Obj) => c.name)).toEqual(['app', 'async_sidecar']);
  });

  it('changes nothing else (filters, routes, timeouts, limits, health checks, comments)', () => {
    expect(withoutAddresses(rendered)).toEqual(withoutAddresses(shipped));
    // Comments survive too: the rendered file is still readable when a test prints it.
    expect(renderEnvoyConfig(SHIPPED, OPTS)).toContain('# What the client gets when the sidecar is unreachable');
  });

  it("applies a test's own edit after rendering", () => {
    const out = parse(renderEnvoyConfig(SHIPPED, { ...OPTS, edit: (doc) => doc.setIn(['admin', 'address', 'socket_address', 'port_value'], 1) }));
    expect(out.admin.address.socket_address.port_value).toBe(1);
  });

  it('rejects a listener or cluster it was not given a port or endpoint for', () => {
    expect(() => renderEnvoyConfig(SHIPPED, { ...OPTS, listeners: { ingress: 18080 } })).toThrow(/no port given for listener dispatch/);
    expect(() => renderEnvoyConfig(SHIPPED, { ...OPTS, clusters: { app: '127.0.0.1:1' } })).toThrow(/no endpoint given for cluster async_sidecar/);
  });

  it('rejects names the config does not have (a renamed listener or cluster must not pass silently)', () => {
    expect(() => renderEnvoyConfig(SHIPPED, { ...OPTS, listeners: { ...OPTS.listeners, ingres: 1 } })).toThrow(/no listener ingres/);
    expect(() => renderEnvoyConfig(SHIPPED, { ...OPTS, clusters: { ...OPTS.clusters, sidecar: '127.0.0.1:1' } })).toThrow(/no cluster sidecar/);
  });

  it('rejects an endpoint that is not host:port, and YAML that does not parse', () => {
    expect(() => renderEnvoyConfig(SHIPPED, { ...OPTS, clusters: { ...OPTS.clusters, app: '127.0.0.1' } })).toThrow(/must be host:port/);
    expect(() => renderEnvoyConfig('a: [', OPTS)).toThrow(/envoy config:/);
  });
});
