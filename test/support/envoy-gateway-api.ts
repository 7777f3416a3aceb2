/**
 * The shape of the resources deploy/envoy-gateway uses, written from the APIs they are checked
 * against (not copied from them):
 *  - Envoy Gateway v1.9.0: the Go API types
 *    https://github.com/envoyproxy/gateway/tree/v1.9.0/api/v1alpha1 (envoyextensionypolicy_types.go,
 *    ext_proc_types.go, backendtrafficpolicy_types.go, shared_types.go, circuitbreaker_types.go,
 *    connection_types.go, policy_helpers.go) and the CRDs generated from them
 *    (charts/gateway-helm/charts/crds/crds/generated/ at the tag), published as
 *    https://gateway.envoyproxy.io/v1.9/api/extension_types/
 *  - Gateway API v1.6.1 (the version Envoy Gateway v1.9.0 bundles), standard channel:
 *    https://gateway-api.sigs.k8s.io/reference/spec/ (HTTPRoute).
 * Fields these resources use are typed with their documented patterns, ranges, enums and defaults;
 * other documented fields are accepted by name only (`documented`); anything else is refused, as
 * a misspelt field would be pruned by the API server and silently do nothing. The CEL rules of the
 * CRDs that concern these fields are checked as refinements, with the CRD's message.
 */
import { z } from 'zod';

/** A field the API documents but deploy/envoy-gateway does not set: accepted, not checked. */
const documented = z.unknown().optional();

const dnsLabelName = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const group = z
  .string()
  .max(253)
  .regex(/^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/);
const kind = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/);
const objectName = z.string().min(1).max(253);
const sectionName = z.string().min(1).max(253).regex(dnsLabelName);
const port = z.number().int().min(1).max(65535);
/** gwapiv1.Duration. */
const duration = z.string().regex(/^([0-9]{1,5}(h|m|s|ms)){1,4}$/);
/** resource.Quantity with Envoy Gateway's pattern for byte sizes. */
const bytesQuantity = z.union([z.number().int().min(1), z.string().regex(/^[1-9]+[0-9]*([EPTGMK]i|[EPTGMk])?$/)]);
const uint32 = z.number().int().min(0).max(4294967295);

const metadata = z.looseObject({ name: objectName, namespace: z.string().optional() });

/** gwapiv1.LocalPolicyTargetReferenceWithSectionName. */
const policyTargetRef = z.strictObject({ group, kind, name: objectName, sectionName: sectionName.optional() });
const TARGET_KINDS = ['Gateway', 'ListenerSet', 'HTTPRoute', 'GRPCRoute', 'UDPRoute', 'TCPRoute', 'TLSRoute'];

type TargetRef = z.infer<typeof policyTargetRef>;

/** The CEL rules every policy kind repeats on policy_helpers.go PolicyTargetReferences. */
function targetProblem(s: { targetRef?: TargetRef; targetRefs?: TargetRef[]; targetSelectors?: unknown }): string | undefined {
  const refs = [...(s.targetRefs ?? []), ...(s.targetRef ? [s.targetRef] : [])];
  if ((s.targetRef !== undefined) === (s.targetRefs !== undefined) && s.targetSelectors === undefined) return 'either targetRef or targetRefs must be used';
  if (!refs.every((r) => r.group === 'gateway.networking.k8s.io')) return 'this policy can only have a targetRefs[*].group of gateway.networking.k8s.io';
  if (!refs.every((r) => TARGET_KINDS.includes(r.kind))) return `this policy can only have a targetRefs[*].kind of ${TARGET_KINDS.join('/')}`;
  return undefined;
}

/** A policy spec: PolicyTargetReferences inlined, plus the kind's own fields. */
function withTargets<T extends z.ZodRawShape>(shape: T) {
  return z
    .strictObject({ targetRef: policyTargetRef.optional(), targetRefs: z.array(policyTargetRef).optional(), targetSelectors: documented, ...shape })
    .superRefine((s, ctx) => {
      const problem = targetProblem(s as Parameters<typeof targetProblem>[0]);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });
}

const backendRefFields = {
  group: group.default(''),
  kind: kind.default('Service'),
  name: objectName,
  namespace: z
    .string()
    .min(1)
    .max(63)
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
    .optional(),
  port: port.optional(),
  weight: z.number().int().min(0).max(1000000).optional(),
};
const servicePortRule = [
  (r: { group: string; kind: string; port?: number }) => !(r.group === '' && r.kind === 'Service') || r.port !== undefined,
  'Must have port for Service reference',
] as const;

/** shared_types.go BackendRef (gwapiv1.BackendObjectReference + fallback), CRD defaults applied. */
const backendRef = z.strictObject({ ...backendRefFields, fallback: z.boolean().optional() }).refine(...servicePortRule);
/** Gateway API HTTPBackendRef. */
const httpBackendRef = z.strictObject({ ...backendRefFields, filters: documented }).refine(...servicePortRule);

/** circuitbreaker_types.go CircuitBreaker. */
const circuitBreaker = z.strictObject({
  maxConnections: uint32.optional(),
  maxPendingRequests: uint32.optional(),
  maxParallelRequests: uint32.optional(),
  maxParallelRetries: uint32.optional(),
  maxRequestsPerConnection: uint32.optional(),
  perEndpoint: documented,
  retryBudget: documented,
});

/** shared_types.go ClusterSettings. */
const clusterSettings = z.strictObject({
  circuitBreaker: circuitBreaker.optional(),
  connection: z.strictObject({ bufferLimit: bytesQuantity.optional(), socketBufferLimit: documented, preconnect: documented }).optional(),
  dns: documented,
  healthCheck: documented,
  http2: documented,
  loadBalancer: documented,
  proxyProtocol: documented,
  retry: documented,
  tcpKeepalive: documented,
  timeout: documented,
});

const bodyMode = z.enum(['Streamed', 'Buffered', 'BufferedPartial', 'FullDuplexStreamed']);
const attributes = z.array(z.string().regex(/^(connection\.|source\.|destination\.|request\.|response\.|upstream\.|xds\.route_)[a-z_1-9]*$/)).optional();
// prettier-ignore
const STATUS_ON_ERROR = [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511];

/** ext_proc_types.go ExtProc (BackendCluster inlined). */
export const extProc = z
  .strictObject({
    backendRef: documented,
    backendRefs: z.array(backendRef).max(16).optional(),
    backendSettings: clusterSettings.optional(),
    messageTimeout: duration.optional(),
    failOpen: z.boolean().default(false),
    processingMode: z
      .strictObject({
        request: z.strictObject({ body: bodyMode.optional(), attributes }).optional(),
        response: z.strictObject({ body: bodyMode.optional(), attributes }).optional(),
        allowModeOverride: z.boolean().optional(),
      })
      .optional(),
    shadowMode: z.boolean().optional(),
    metadata: documented,
    statusOnError: z
      .number()
      .int()
      .refine((n) => STATUS_ON_ERROR.includes(n), 'Only 4xx and 5xx status codes are supported')
      .optional(),
  })
  .refine((e) => e.backendRef === undefined, 'BackendRefs must be used, backendRef is not supported.')
  .refine(
    (e) => (e.backendRefs ?? []).every((r) => ['Service', 'ServiceImport', 'Backend'].includes(r.kind)),
    'BackendRefs only supports Service, ServiceImport, and Backend kind.',
  )
  .refine(
    (e) => !(e.failOpen && [e.processingMode?.request?.body, e.processingMode?.response?.body].includes('FullDuplexStreamed')),
    'If FullDuplexStreamed body processing mode is used, FailOpen must be false.',
  );

const kindOf = <K extends string>(k: K, apiVersion: string, spec: z.ZodType) =>
  z.strictObject({ apiVersion: z.literal(apiVersion), kind: z.literal(k), metadata, spec, status: documented });

/** envoyextensionypolicy_types.go EnvoyExtensionPolicy. */
export const envoyExtensionPolicy = kindOf(
  'EnvoyExtensionPolicy',
  'gateway.envoyproxy.io/v1alpha1',
  withTargets({ mergeType: documented, wasm: documented, extProc: z.array(extProc).max(16).optional(), lua: documented, dynamicModule: documented }),
);

/** backendtrafficpolicy_types.go BackendTrafficPolicy. */
export const backendTrafficPolicy = kindOf(
  'BackendTrafficPolicy',
  'gateway.envoyproxy.io/v1alpha1',
  withTargets({
    mergeType: documented,
    requestBuffer: z.strictObject({ limit: bytesQuantity }).optional(),
    httpUpgrade: z.array(z.unknown()).optional(),
    admissionControl: documented,
    bandwidthLimit: documented,
    circuitBreaker: documented,
    compression: documented,
    compressor: documented,
    connection: documented,
    dns: documented,
    faultInjection: documented,
    healthCheck: documented,
    http2: documented,
    loadBalancer: documented,
    proxyProtocol: documented,
    rateLimit: documented,
    responseOverride: documented,
    retry: documented,
    routingType: documented,
    tcpKeepalive: documented,
    telemetry: documented,
    timeout: documented,
    useClientProtocol: documented,
  }).refine((s) => {
    const spec = s as { requestBuffer?: unknown; httpUpgrade?: unknown[] };
    return !(spec.requestBuffer && (spec.httpUpgrade ?? []).length > 0);
  }, 'requestBuffer cannot be used together with httpUpgrade'),
);

const headerName = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/);
const valueMatch = (maxLength: number) =>
  z.strictObject({ type: z.enum(['Exact', 'RegularExpression']).default('Exact'), name: headerName, value: z.string().min(1).max(maxLength) });

/** Gateway API v1.6.1 HTTPRoute (standard channel). */
export const httpRoute = kindOf(
  'HTTPRoute',
  'gateway.networking.k8s.io/v1',
  z.strictObject({
    parentRefs: z
      .array(
        z.strictObject({
          group: group.optional(),
          kind: kind.optional(),
          namespace: z.string().optional(),
          name: objectName,
          sectionName: sectionName.optional(),
          port: port.optional(),
        }),
      )
      .max(32)
      .optional(),
    hostnames: documented,
    rules: z
      .array(
        z.strictObject({
          name: sectionName.optional(),
          matches: z
            .array(
              z.strictObject({
                path: z
                  .strictObject({ type: z.enum(['Exact', 'PathPrefix', 'RegularExpression']).default('PathPrefix'), value: z.string().max(1024).default('/') })
                  .refine((p) => p.type === 'RegularExpression' || p.value.startsWith('/'), "value must be an absolute path and start with '/'")
                  .optional(),
                headers: z.array(valueMatch(4096)).max(16).optional(),
                queryParams: z.array(valueMatch(1024)).max(16).optional(),
                method: documented,
              }),
            )
            .max(64)
            .default([{ path: { type: 'PathPrefix', value: '/' } }]),
          filters: documented,
          backendRefs: z.array(httpBackendRef).max(16).optional(),
          timeouts: documented,
        }),
      )
      .max(16)
      .default([])
      .refine((rules) => {
        const names = rules.flatMap((r) => (r.name === undefined ? [] : [r.name]));
        return new Set(names).size === names.length;
      }, 'Rule name must be unique within the route'),
  }),
);
