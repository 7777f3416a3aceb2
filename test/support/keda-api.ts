/**
 * The shape of KEDA's ScaledObject with a Prometheus trigger, as deploy/kubernetes uses it, written
 * from KEDA v2.20.2 (not copied from it):
 *  - the CRD keda.sh/v1alpha1 ScaledObject, generated from the Go API types:
 *    https://github.com/kedacore/keda/blob/v2.20.2/config/crd/bases/keda.sh_scaledobjects.yaml and
 *    https://github.com/kedacore/keda/blob/v2.20.2/apis/keda/v1alpha1/scaledobject_types.go
 *    (documented at https://keda.sh/docs/2.20/reference/scaledobject-spec/), with the admission
 *    webhook's replica bounds (CheckReplicaCountBoundsAreValid in the same file);
 *  - the Prometheus scaler's trigger metadata:
 *    https://github.com/kedacore/keda/blob/v2.20.2/pkg/scalers/prometheus_scaler.go
 *    (prometheusMetadata; https://keda.sh/docs/2.20/scalers/prometheus/).
 * Fields deploy/kubernetes sets are typed with their documented ranges; other documented fields
 * are accepted by name only (`documented`); anything else is refused, as the API server would
 * prune a misspelt field and the scaler ignore a misspelt metadata key, silently.
 */
import { z } from 'zod';

/** A field the API documents but deploy/kubernetes does not set: accepted, not checked. */
const documented = z.unknown().optional();

const int32 = (min: number) => z.number().int().min(min).max(2147483647);
/** Go's strconv.ParseFloat, as the scaler parses `threshold`: a finite decimal number. */
const floatString = z.string().regex(/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/);
/** Go's strconv.ParseBool. */
const boolString = z.enum(['1', 't', 'T', 'TRUE', 'true', 'True', '0', 'f', 'F', 'FALSE', 'false', 'False']);

/** prometheusMetadata: the keys the scaler reads from `metadata` (authentication ones by name only). */
export const prometheusTriggerMetadata = z.strictObject({
  serverAddress: z.url({ protocol: /^https?$/ }),
  query: z.string().min(1),
  threshold: floatString,
  activationThreshold: floatString.optional(),
  ignoreNullValues: boolString.optional(),
  unsafeSsl: boolString.optional(),
  namespace: documented,
  customHeaders: documented,
  queryParameters: documented,
  awsRegion: documented,
  timeout: documented,
  identityOwner: documented,
  authModes: documented,
});

const trigger = z.strictObject({
  type: z.string().min(1),
  name: z.string().optional(),
  // The CRD: any string-valued map; the scaler of `type` says which keys mean something.
  metadata: z.record(z.string(), z.string()),
  metricType: z.enum(['AverageValue', 'Value', 'Utilization']).optional(),
  authenticationRef: documented,
  useCachedMetrics: documented,
});

/** Defaults of the Go types: HPA bounds 1 and 100 (scaledobject_types.go). */
const DEFAULT_MAX_REPLICAS = 100;

export const scaledObject = z.strictObject({
  apiVersion: z.literal('keda.sh/v1alpha1'),
  kind: z.literal('ScaledObject'),
  metadata: z.looseObject({ name: z.string().min(1).max(253), namespace: z.string().optional() }),
  spec: z
    .strictObject({
      scaleTargetRef: z.strictObject({
        name: z.string().min(1),
        apiVersion: z.string().optional(),
        kind: z.string().optional(),
        envSourceContainerName: z.string().optional(),
      }),
      pollingInterval: int32(1).optional(),
      initialCooldownPeriod: int32(0).optional(),
      cooldownPeriod: int32(0).optional(),
      idleReplicaCount: int32(0).optional(),
      minReplicaCount: int32(0).optional(),
      maxReplicaCount: int32(1).optional(),
      advanced: documented,
      triggers: z.array(trigger).min(1),
      fallback: documented,
    })
    .superRefine((s, ctx) => {
      const min = s.minReplicaCount ?? 0;
      const max = s.maxReplicaCount ?? DEFAULT_MAX_REPLICAS;
      if (min > max) ctx.addIssue({ code: 'custom', message: 'minReplicaCount must be less than or equal to maxReplicaCount' });
      if (s.idleReplicaCount !== undefined && s.idleReplicaCount >= min) {
        ctx.addIssue({ code: 'custom', message: `IdleReplicaCount=${s.idleReplicaCount} must be less than MinReplicaCount=${min}` });
      }
      for (const [i, t] of s.triggers.entries()) {
        if (t.type !== 'prometheus') continue;
        const r = prometheusTriggerMetadata.safeParse(t.metadata);
        for (const issue of r.error?.issues ?? []) {
          ctx.addIssue({ code: 'custom', message: `prometheus metadata: ${issue.message}`, path: ['triggers', i, 'metadata', ...issue.path] });
        }
      }
    }),
});

export type ScaledObject = z.infer<typeof scaledObject>;
