// Gathers a plan's inputs from a store (or none: an empty fleet), then calls
// the pure computePlan. Used by `muster plan --database-url` and by the
// server's POST /api/v1/plan.
import type { PolicySet } from '../policy/resources.js';
import type { Platform, PolicyBundleSpec } from '../policy/types.js';
import type { RolloutRevision, Store } from '../store/index.js';
import { toFleetDevice, type CurrentAssignment, type FleetDevice } from './desired.js';
import type { PlatformDriver, ResolvedBundle } from './driver.js';
import { computePlan, type Plan } from './plan.js';

export async function planAgainstStore(store: Store | undefined, next: PolicySet, drivers: ReadonlyMap<Platform, PlatformDriver>, against: string, now = new Date()): Promise<Plan> {
  const devices: FleetDevice[] = [];
  const assignments = new Map<string, Map<string, CurrentAssignment>>();
  const inForce = new Map<string, RolloutRevision>();
  const bundles = new Map<string, Omit<ResolvedBundle, 'rollout'>>();
  if (store) {
    for await (const page of store.devices.all()) for (const d of page) devices.push(toFleetDevice(d));
    for await (const page of store.assignments.all()) {
      for (const a of page) {
        let m = assignments.get(a.deviceId);
        if (!m) assignments.set(a.deviceId, (m = new Map()));
        m.set(a.rollout, { bundleHash: a.bundleHash, revision: a.revision, bucket: a.bucket });
      }
    }
    for (const r of await store.rollouts.list()) inForce.set(r.name, r);
    const hashes = new Set([...inForce.values()].flatMap((r) => [r.canaryHash, r.stableHash ?? '']).filter(Boolean));
    for (const m of assignments.values()) for (const a of m.values()) hashes.add(a.bundleHash);
    for (const h of hashes) {
      const b = await store.bundles.get(h);
      if (b) bundles.set(h, { name: b.name, version: b.version, hash: h, spec: (b.content as { spec: PolicyBundleSpec }).spec });
    }
  }
  return computePlan({ next, inForce, devices, assignments: (id) => assignments.get(id), drivers, storedBundle: (h) => bundles.get(h), now, against });
}
