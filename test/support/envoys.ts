/**
 * The two Envoys a suite can run through, side by side: the real Envoy on the shipped config
 * (test/support/real-envoy.ts), the reference, and the in-process stand-in (test/support/envoy/),
 * which must agree with it wherever both can do the job.
 *
 *   describeEachEnvoy('the async path', (factory) => {
 *     let envoy: TestEnvoy;
 *     beforeAll(async () => { envoy = await factory.start({ async_sidecar: ..., app: ... }); });
 *     ...
 *   });
 *
 * The real Envoy's suite follows describeWithEnvoy: skipped with the reason when no Envoy is
 * found, an error under CI=true.
 */
import { EnvoyStandIn } from './envoy';
import { describeWithEnvoy, RealEnvoy } from './real-envoy';

/** What both Envoys offer: the ingress and dispatch listeners, a count of ext_proc streams, close. */
export interface TestEnvoy {
  readonly kind: string;
  /** The ingress listener (ext_proc on the async routes). */
  readonly url: string;
  /** The dispatch listener (router only), the sidecar's DISPATCH_URL. */
  readonly dispatchUrl: string;
  /** ext_proc streams opened so far on the ingress listener. */
  streamsStarted(): Promise<number>;
  close(): Promise<void>;
}

export interface EnvoyFactory {
  readonly name: 'real Envoy' | 'stand-in';
  /** Cluster name → 'host:port' (envoy.yaml's `app` and `async_sidecar`). */
  start(clusters: Record<string, string>): Promise<TestEnvoy>;
  /** `describe`, or describeWithEnvoy for the real one. */
  describe(name: string, fn: () => void): void;
}

/** The real Envoy's counter (http.<stat_prefix>.ext_proc.streams_started, from ext_proc.cc's stats). */
const STREAMS_STARTED = 'http.ingress_http.ext_proc.streams_started';

export const realEnvoyFactory: EnvoyFactory = {
  name: 'real Envoy',
  async start(clusters) {
    const envoy = await RealEnvoy.start({ clusters });
    return Object.assign(envoy, { streamsStarted: () => envoy.stat(STREAMS_STARTED) });
  },
  describe: describeWithEnvoy,
};

export const standInFactory: EnvoyFactory = {
  name: 'stand-in',
  async start(clusters) {
    const envoy = await EnvoyStandIn.start({ clusters });
    return Object.assign(envoy, { kind: 'stand-in', streamsStarted: async () => envoy.stats.streamsOpened });
  },
  describe: (name, fn) => describe(name, fn),
};

export const ENVOYS: readonly EnvoyFactory[] = [realEnvoyFactory, standInFactory];

/** Declares `fn`'s suite once per Envoy, titled "<name>, through the <Envoy>". */
export function describeEachEnvoy(name: string, fn: (factory: EnvoyFactory) => void, factories: readonly EnvoyFactory[] = ENVOYS): void {
  for (const f of factories) f.describe(`${name}, through the ${f.name}`, () => fn(f));
}

/** Narrows a TestEnvoy to the stand-in, for asserts only it can make (records, its own stats). */
export function asStandIn(envoy: TestEnvoy): (EnvoyStandIn & TestEnvoy) | undefined {
  return envoy instanceof EnvoyStandIn ? (envoy as EnvoyStandIn & TestEnvoy) : undefined;
}

/** Narrows a TestEnvoy to the real Envoy, for its admin stats and log. */
export function asRealEnvoy(envoy: TestEnvoy): (RealEnvoy & TestEnvoy) | undefined {
  return envoy instanceof RealEnvoy ? (envoy as RealEnvoy & TestEnvoy) : undefined;
}
