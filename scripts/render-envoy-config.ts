/**
 * The shipped Envoy config (envoy/envoy.yaml) rendered for one machine: every address moved to
 * 127.0.0.1. Shared by `npm run demo` (scripts/demo.ts) and the tests' real Envoy
 * (test/support/real-envoy.ts), so the demo runs exactly what the tests run. Compiled by the build
 * (dist/scripts/), hence no test-only imports here.
 */
import { parseDocument, type Document } from 'yaml';

export interface RenderOptions {
  /** Listener name → port on 127.0.0.1 (every listener of the config must be named). */
  listeners: Record<string, number>;
  /** Cluster name → 'host:port' replacing that cluster's single endpoint (every cluster must be named). */
  clusters: Record<string, string>;
  /** Admin port on 127.0.0.1. */
  adminPort: number;
  /** Called on the parsed document after rendering, for a test's own changes. */
  edit?: (doc: Document) => void;
}

/**
 * The shipped config with every address moved to loopback: listeners and admin bind 127.0.0.1 on
 * the given ports, each cluster's endpoint becomes the given host:port (STATIC, since loopback
 * needs no DNS). Nothing else changes, so the tests run what users run. Unknown or missing names
 * are errors: a renamed listener or cluster must fail here, not route traffic somewhere else.
 */
export function renderEnvoyConfig(yamlText: string, opts: RenderOptions): string {
  const doc = parseDocument(yamlText);
  if (doc.errors.length) throw new Error(`envoy config: ${doc.errors[0]!.message}`);
  doc.setIn(['admin', 'address', 'socket_address'], doc.createNode({ address: '127.0.0.1', port_value: opts.adminPort }));

  const listeners = doc.getIn(['static_resources', 'listeners']) as { items: unknown[] } | undefined;
  const seenListeners = new Set<string>();
  (listeners?.items ?? []).forEach((_, i) => {
    const name = String(doc.getIn(['static_resources', 'listeners', i, 'name']));
    const port = opts.listeners[name];
    if (port === undefined) throw new Error(`envoy config: no port given for listener ${name}`);
    seenListeners.add(name);
    doc.setIn(['static_resources', 'listeners', i, 'address', 'socket_address'], doc.createNode({ address: '127.0.0.1', port_value: port }));
  });
  for (const name of Object.keys(opts.listeners)) if (!seenListeners.has(name)) throw new Error(`envoy config: no listener ${name}`);

  const clusters = doc.getIn(['static_resources', 'clusters']) as { items: unknown[] } | undefined;
  const seenClusters = new Set<string>();
  (clusters?.items ?? []).forEach((_, i) => {
    const name = String(doc.getIn(['static_resources', 'clusters', i, 'name']));
    const target = opts.clusters[name];
    if (target === undefined) throw new Error(`envoy config: no endpoint given for cluster ${name}`);
    seenClusters.add(name);
    const m = /^(.+):(\d+)$/.exec(target);
    if (!m) throw new Error(`envoy config: cluster ${name} endpoint must be host:port, got ${target}`);
    const base = ['static_resources', 'clusters', i];
    doc.setIn([...base, 'type'], 'STATIC');
    doc.deleteIn([...base, 'dns_lookup_family']);
    doc.setIn(
      [...base, 'load_assignment'],
      doc.createNode({
        cluster_name: name,
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: m[1], port_value: Number(m[2]) } } } }] }],
      }),
    );
  });
  for (const name of Object.keys(opts.clusters)) if (!seenClusters.has(name)) throw new Error(`envoy config: no cluster ${name}`);

  opts.edit?.(doc);
  return doc.toString();
}

/** The names of the config's listeners, in order (each needs a port in RenderOptions.listeners). */
export function listenerNames(yamlText: string): string[] {
  const doc = parseDocument(yamlText);
  const listeners = (doc.toJS() as { static_resources?: { listeners?: { name: string }[] } }).static_resources?.listeners ?? [];
  return listeners.map((l) => l.name);
}
