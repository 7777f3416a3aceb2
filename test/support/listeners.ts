/**
 * Which loopback ports are the sidecar's listeners (Envoy's ingress, the admin port) while a test
 * runs: test/support/openapi.ts checks their answers against openapi/openapi.yaml and leaves
 * every other port's (the app's, a receiver's) alone. Kept apart from that module so that the
 * Envoy and sidecar helpers (also compiled into the benchmarks) need neither ajv nor the document.
 */
export type Listener = 'ingress' | 'admin';

const listeners = new Map<number, Listener>();

/** Marks `port` as a listener the document describes; returns the call that unmarks it. */
export function registerListener(port: number, listener: Listener): () => void {
  listeners.set(port, listener);
  return () => {
    if (listeners.get(port) === listener) listeners.delete(port);
  };
}

export function listenerAt(port: number): Listener | undefined {
  return listeners.get(port);
}
