// Desired state, pure: which bundle each device should have under each
// rollout now, and the changes from what is assigned. The reconciler and
// `muster plan` both call this, so a plan is exactly what applying would do.
import { compileGroup, groupContains, type CompiledGroup, type DeviceFacts, type DeviceRef } from '../policy/selector.js';
import type { DeviceGroupSpec, Platform, RolloutSpec } from '../policy/types.js';
import { bucketOf, inCanary } from '../rollout/bucket.js';
import { bundleFor, type RolloutStatus } from '../rollout/engine.js';

/** A device as desired state sees it. */
export interface FleetDevice {
  id: string;
  platform: Platform;
  serial: string | null;
  osVersion: string | null;
  model: string | null;
  facts: DeviceFacts;
}

/** The store's device fields → the facts group selectors match (labels + muster.dev/ attributes). */
export function toFleetDevice(d: {
  id: string;
  platform: Platform;
  serialNumber: string | null;
  osVersion: string | null;
  model: string | null;
  labels: Record<string, string>;
  attributes: Record<string, string>;
}): FleetDevice {
  const facts: Record<string, string> = { ...d.labels };
  for (const [k, v] of Object.entries(d.attributes)) facts[k.includes('/') ? k : `muster.dev/${k}`] = v;
  facts['muster.dev/platform'] = d.platform;
  if (d.osVersion) facts['muster.dev/os-version'] = d.osVersion;
  if (d.model) facts['muster.dev/model'] = d.model;
  if (d.serialNumber) facts['muster.dev/serial'] = d.serialNumber;
  return { id: d.id, platform: d.platform, serial: d.serialNumber, osVersion: d.osVersion, model: d.model, facts };
}

/** A rollout ready for membership and bucket questions. */
export interface RolloutView {
  name: string;
  spec: RolloutSpec;
  status: RolloutStatus;
  /** The rollout is gone from the source: its devices lose the bundle (unless prune is off). */
  deleted: boolean;
  groups: ReadonlyArray<{ name: string; spec: DeviceGroupSpec; compiled: CompiledGroup }>;
  /** Platforms the bundles can reach (undefined: all). */
  platforms?: readonly Platform[];
}

export function rolloutView(
  name: string,
  spec: RolloutSpec,
  status: RolloutStatus,
  groups: ReadonlyMap<string, DeviceGroupSpec>,
  opts: { deleted?: boolean; platforms?: readonly Platform[] } = {},
): RolloutView {
  return {
    name,
    spec,
    status,
    deleted: !!opts.deleted,
    groups: spec.groups.flatMap((g) => {
      const gs = groups.get(g);
      return gs ? [{ name: g, spec: gs, compiled: compileGroup(gs) }] : [];
    }),
    ...(opts.platforms ? { platforms: opts.platforms } : {}),
  };
}

export interface CurrentAssignment {
  bundleHash: string;
  revision: number;
  bucket: number;
}

export interface AssignmentChange {
  deviceId: string;
  rollout: string;
  revision: number;
  bucket: number;
  from: string | null;
  to: string | null;
  /** Which of the rollout's groups hold the device (for plans). */
  group: string | null;
}

/** Buckets are a pure function of (salt, id): cache them across ticks. */
export class BucketCache {
  private readonly cache = new Map<string, Map<string, number>>();
  get(salt: string, deviceId: string): number {
    let m = this.cache.get(salt);
    if (!m) this.cache.set(salt, (m = new Map()));
    let b = m.get(deviceId);
    if (b === undefined) m.set(deviceId, (b = bucketOf(salt, deviceId)));
    return b;
  }
  forget(deviceId: string): void {
    for (const m of this.cache.values()) m.delete(deviceId);
  }
}

export const saltOf = (r: RolloutView): string => r.spec.salt ?? r.name;

/** The first of the rollout's groups that holds the device, or null. */
export function memberGroup(r: RolloutView, d: FleetDevice): string | null {
  if (r.platforms && !r.platforms.includes(d.platform)) return null;
  const ref: DeviceRef = { id: d.id, facts: d.facts, ...(d.serial ? { serial: d.serial } : {}) };
  for (const g of r.groups) if (groupContains(g.spec, ref)) return g.name;
  return null;
}

/** The bundle this rollout wants on this device now (null: none), with its bucket and group. */
export function desiredOf(r: RolloutView, d: FleetDevice, buckets: BucketCache): { hash: string | null; bucket: number; group: string | null } {
  const bucket = buckets.get(saltOf(r), d.id);
  const group = r.deleted ? null : memberGroup(r, d);
  if (!group) return { hash: null, bucket, group };
  return { hash: bundleFor(r.status, (w) => inCanary(bucket, w)), bucket, group };
}

export interface RolloutTally {
  targeted: number;
  ring: number;
  ringAssigned: number;
}

export interface DesiredResult {
  changes: AssignmentChange[];
  /** Changes toward a canary held back by maxDevicesPerTick, per rollout. */
  deferred: Map<string, number>;
  tally: Map<string, RolloutTally>;
}

/**
 * Compares desired with current for these devices. Moves toward a canary are
 * paced per rollout (`maxDevicesPerTick`, unless `pace` is false); moves back
 * to stable and removals are never held back. A rollout with `prune: false`
 * leaves its bundle on devices that leave it.
 */
export function computeChanges(
  rollouts: readonly RolloutView[],
  devices: Iterable<FleetDevice>,
  current: (deviceId: string) => ReadonlyMap<string, CurrentAssignment> | undefined,
  buckets: BucketCache,
  opts: { pace: boolean } = { pace: true },
): DesiredResult {
  const changes: AssignmentChange[] = [];
  const deferred = new Map<string, number>();
  const budget = new Map<string, number>();
  const tally = new Map<string, RolloutTally>(rollouts.map((r) => [r.name, { targeted: 0, ring: 0, ringAssigned: 0 }]));
  for (const r of rollouts) budget.set(r.name, opts.pace ? (r.spec.maxDevicesPerTick ?? Infinity) : Infinity);
  for (const d of devices) {
    const cur = current(d.id);
    for (const r of rollouts) {
      const want = desiredOf(r, d, buckets);
      const have = cur?.get(r.name);
      const t = tally.get(r.name)!;
      if (want.group) {
        t.targeted++;
        const inRing = !r.status.aborted && r.status.weight > 0 && inCanary(want.bucket, r.status.weight);
        if (inRing) t.ring++;
        // Counted as assigned when it already has, or is being given, the canary.
        let assigned = have?.bundleHash === r.status.canaryHash;
        if ((have?.bundleHash ?? null) !== want.hash) {
          if (want.hash === null && r.spec.prune === false) continue;
          const towardCanary = want.hash !== null && want.hash === r.status.canaryHash && want.hash !== r.status.stableHash;
          if (towardCanary) {
            const left = budget.get(r.name)!;
            if (left <= 0) {
              deferred.set(r.name, (deferred.get(r.name) ?? 0) + 1);
              continue;
            }
            budget.set(r.name, left - 1);
            assigned = true;
          }
          changes.push({ deviceId: d.id, rollout: r.name, revision: r.status.revision, bucket: want.bucket, from: have?.bundleHash ?? null, to: want.hash, group: want.group });
        } else if (have && have.revision !== r.status.revision) {
          // Same bundle under a new revision: record the revision, no device work.
          changes.push({ deviceId: d.id, rollout: r.name, revision: r.status.revision, bucket: want.bucket, from: have.bundleHash, to: want.hash, group: want.group });
        }
        if (inRing && assigned) t.ringAssigned++;
      } else if (have) {
        if (r.spec.prune === false) continue;
        changes.push({ deviceId: d.id, rollout: r.name, revision: r.status.revision, bucket: want.bucket, from: have.bundleHash, to: null, group: null });
      }
    }
  }
  return { changes, deferred, tally };
}
