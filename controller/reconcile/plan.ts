// `muster plan`, pure: what applying a policy set would change, computed by
// the reconciler's own functions (decideRevisions, evaluate, computeChanges,
// driver compile and diff) over a snapshot of the fleet. Pacing is left out:
// a plan shows where the first tick's decisions lead, not how many ticks the
// fan-out takes.
import type { PolicySet } from '../policy/resources.js';
import type { Platform } from '../policy/types.js';
import { describeStep, evaluate } from '../rollout/engine.js';
import { BucketCache, computeChanges, rolloutView, type CurrentAssignment, type FleetDevice } from './desired.js';
import type { PlatformDriver, ResolvedBundle } from './driver.js';
import { toStatus } from './reconciler.js';
import { decideRevisions } from './revisions.js';
import type { RolloutRevision } from '../store/index.js';

export interface PlanInput {
  next: PolicySet;
  inForce: ReadonlyMap<string, RolloutRevision>;
  devices: readonly FleetDevice[];
  assignments: (deviceId: string) => ReadonlyMap<string, CurrentAssignment> | undefined;
  drivers: ReadonlyMap<Platform, PlatformDriver>;
  /** Bundles not in `next` (stable ones from earlier commits), by hash. */
  storedBundle: (hash: string) => Omit<ResolvedBundle, 'rollout'> | undefined;
  now: Date;
  against: string;
}

export interface BundleRef {
  name: string;
  version: string;
  hash: string;
}

export interface Counts {
  gain: number;
  change: number;
  lose: number;
}

export interface RolloutPlan extends Counts {
  rollout: string;
  bundle: BundleRef | null;
  revision: number;
  restarting: boolean;
  deleted: boolean;
  weight: number;
  step: string;
  byGroup: Record<string, Counts>;
  /** Per platform: devices touched, and what they receive (item summary → devices). */
  byPlatform: Partial<Record<Platform, { devices: number; install: Record<string, number>; remove: Record<string, number> }>>;
}

export interface Plan {
  against: string;
  devices: number;
  restarting: Array<{ rollout: string; revision: number; from: BundleRef | null; to: BundleRef; stable: BundleRef | null; firstStep: string }>;
  deletedRollouts: string[];
  rollouts: RolloutPlan[];
  /** Final assignments of the devices that change: deviceId → rollout → hash|null (for comparing plan and apply). */
  assignments: Record<string, Record<string, string | null>>;
  unchanged: boolean;
}

export function computePlan(p: PlanInput): Plan {
  // Hash → bundle of the new tree, built once: plans look bundles up per rollout and per compiled device set.
  const byHash = new Map<string, Omit<ResolvedBundle, 'rollout'>>();
  for (const [name, l] of p.next.bundles) {
    const hash = p.next.hashes.get(name)!;
    byHash.set(hash, { name, version: l.resource.spec.version, hash, spec: l.resource.spec });
  }
  const ref = (hash: string | null): BundleRef | null => {
    if (!hash) return null;
    const mine = byHash.get(hash);
    if (mine) return { name: mine.name, version: mine.version, hash };
    const b = p.storedBundle(hash);
    return b ? { name: b.name, version: b.version, hash } : { name: '?', version: '?', hash };
  };
  const decisions = decideRevisions(p.next, p.inForce, undefined, p.now);
  const groups = new Map([...p.next.groups].map(([n, l]) => [n, l.resource.spec]));
  const views = [];
  const restarting: Plan['restarting'] = [];
  const deleted = new Set(decisions.filter((d) => d.kind === 'delete').map((d) => d.rollout));
  const started = new Map(decisions.flatMap((d) => (d.kind === 'start' ? [[d.rollout, d] as const] : [])));
  const names = new Set([...p.next.rollouts.keys(), ...p.inForce.keys()]);
  for (const name of [...names].sort()) {
    const cur = p.inForce.get(name);
    if (!p.next.rollouts.has(name) && cur?.deleted) continue;
    const spec = p.next.rollouts.get(name)?.resource.spec ?? (cur!.spec as NonNullable<ReturnType<PolicySet['rollouts']['get']>>['resource']['spec']);
    const start = started.get(name);
    // The first evaluation of a new revision: what the reconciler's next tick decides.
    const status = start ? evaluate(spec, start.status, { targeted: 0, ring: 0, ringAssigned: 0, reported: 0, failed: 0 }, p.now).status : toStatus(cur!);
    if (start) {
      restarting.push({
        rollout: name,
        revision: status.revision,
        from: ref(cur?.canaryHash ?? null),
        to: ref(status.canaryHash)!,
        stable: ref(status.stableHash),
        firstStep: describeStep(spec.steps[status.currentStep]),
      });
    }
    const bundle = p.next.bundles.get(spec.bundle)?.resource.spec;
    views.push(rolloutView(name, spec, status, groups, { deleted: deleted.has(name), ...(bundle?.platforms ? { platforms: bundle.platforms } : {}) }));
  }

  const { changes } = computeChanges(views, p.devices, p.assignments, new BucketCache(), { pace: false });
  const plans = new Map<string, RolloutPlan>(
    views.map((v) => [
      v.name,
      {
        rollout: v.name,
        bundle: ref(v.status.canaryHash),
        revision: v.status.revision,
        restarting: started.has(v.name),
        deleted: v.deleted,
        weight: v.status.aborted ? 0 : v.status.weight,
        step: v.status.aborted ? 'aborted' : describeStep(v.spec.steps[v.status.currentStep]),
        gain: 0,
        change: 0,
        lose: 0,
        byGroup: {},
        byPlatform: {},
      },
    ]),
  );
  const assignments: Plan['assignments'] = {};
  const byDevice = new Map<string, typeof changes>();
  for (const c of changes) {
    if (c.from === c.to) continue; // a revision bump only
    const rp = plans.get(c.rollout)!;
    const kind = c.from === null ? 'gain' : c.to === null ? 'lose' : 'change';
    rp[kind]++;
    const g = (rp.byGroup[c.group ?? '(left the groups)'] ??= { gain: 0, change: 0, lose: 0 });
    g[kind]++;
    (assignments[c.deviceId] ??= {})[c.rollout] = c.to;
    let l = byDevice.get(c.deviceId);
    if (!l) byDevice.set(c.deviceId, (l = []));
    l.push(c);
  }

  // What each platform receives: the driver's own diff between the device's native state before and after.
  const devices = new Map(p.devices.map((d) => [d.id, d]));
  const compiled = new Map<string, ReturnType<PlatformDriver['compile']>>();
  const bundleOf = (hash: string): Omit<ResolvedBundle, 'rollout'> | undefined => byHash.get(hash) ?? p.storedBundle(hash);
  const native = (d: FleetDevice, driver: PlatformDriver, set: ReadonlyMap<string, string>) => {
    const entries = [...set].sort(([a], [b]) => a.localeCompare(b));
    const key = `${d.platform}|${d.osVersion ?? ''}|${d.model ?? ''}|${entries.map(([r, h]) => `${r}=${h}`).join(',')}`;
    let n = compiled.get(key);
    if (!n) {
      n = driver.compile(
        entries.flatMap(([rollout, h]) => {
          const b = bundleOf(h);
          return b ? [{ ...b, rollout }] : [];
        }),
        { id: d.id, platform: d.platform, osVersion: d.osVersion, model: d.model },
      );
      compiled.set(key, n);
    }
    return n;
  };
  for (const [id, list] of byDevice) {
    const d = devices.get(id)!;
    const driver = p.drivers.get(d.platform);
    if (!driver) continue;
    const before = new Map([...(p.assignments(id) ?? new Map<string, CurrentAssignment>())].map(([r, a]) => [r, a.bundleHash]));
    const after = new Map(before);
    for (const c of list) {
      if (c.to === null) after.delete(c.rollout);
      else after.set(c.rollout, c.to);
    }
    const was = native(d, driver, before);
    const now = native(d, driver, after);
    const reportedAsBefore = { items: Object.fromEntries(was.items.map((i) => [i.id, { hash: i.hash, status: 'installed' as const }])) };
    const actions = driver.diff(now, reportedAsBefore);
    for (const c of list) {
      const bp = (plans.get(c.rollout)!.byPlatform[d.platform] ??= { devices: 0, install: {}, remove: {} });
      bp.devices++;
      const mine = c.to;
      for (const a of actions) {
        if (a.kind === 'install' && mine && a.item.sources.includes(mine)) bp.install[a.item.summary] = (bp.install[a.item.summary] ?? 0) + 1;
        if (a.kind === 'remove' && c.from && was.items.find((i) => i.id === a.id)?.sources.includes(c.from)) bp.remove[a.id] = (bp.remove[a.id] ?? 0) + 1;
      }
    }
  }

  const rollouts = [...plans.values()];
  return {
    against: p.against,
    devices: p.devices.length,
    restarting,
    deletedRollouts: [...deleted].sort(),
    rollouts,
    assignments,
    unchanged: restarting.length === 0 && deleted.size === 0 && rollouts.every((r) => r.gain + r.change + r.lose === 0),
  };
}
