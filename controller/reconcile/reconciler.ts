// The reconciler: gathers inputs (policy, rollout status, devices, what they
// reported), calls the pure core (rollout engine, desired state, driver
// compile and diff), and writes the results — each rollout transition in its
// own transaction, each batch of assignment changes in one transaction with the
// commands it queues. Caches of devices and assignments are rebuilt from the
// tables at start, so a crash loses nothing: the tables are the truth.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { PolicySet } from '../policy/resources.js';
import type { Platform, PolicyBundleSpec, RolloutSpec } from '../policy/types.js';
import { applyAction, evaluate, type Observations, type OperatorAction, type RolloutStatus } from '../rollout/engine.js';
import type { Device, Queryable, RolloutRevision, Store, SyncState } from '../store/index.js';
import { BucketCache, computeChanges, rolloutView, toFleetDevice, type AssignmentChange, type CurrentAssignment, type FleetDevice, type RolloutView } from './desired.js';
import type { Action, DriverDevice, NativeState, PlatformDriver, ReportedItems, ResolvedBundle } from './driver.js';
import { decideRevisions } from './revisions.js';
import { syncOf } from './sync.js';

export interface Log {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface ReconcilerOptions {
  store: Store;
  drivers: ReadonlyMap<Platform, PlatformDriver>;
  log: Log;
  now?: () => Date;
  secret?: (name: string) => string | undefined;
  /** Devices written per transaction. */
  batchSize?: number;
}

interface CachedAssignment extends CurrentAssignment {
  sync: SyncState;
}

/** Reported state kind under which drivers store ReportedItems. */
export const REPORTED_ITEMS = 'items';

export interface TickResult {
  changed: number;
  deferred: number;
  transitions: Array<{ rollout: string; text: string }>;
}

export class Reconciler {
  private readonly store: Store;
  private readonly drivers: ReadonlyMap<Platform, PlatformDriver>;
  private readonly log: Log;
  private readonly now: () => Date;
  private readonly secret: (name: string) => string | undefined;
  private readonly batchSize: number;
  private readonly buckets = new BucketCache();
  private readonly devices = new Map<string, FleetDevice>();
  private readonly assignments = new Map<string, Map<string, CachedAssignment>>();
  private readonly bundleCache = new Map<string, ResolvedBundle>();
  private readonly compileCache = new Map<string, NativeState>();
  private policy: PolicySet | undefined;
  private statuses = new Map<string, RolloutRevision>();
  private tallies = new Map<string, { targeted: number; ring: number; ringAssigned: number }>();
  private running: Promise<unknown> = Promise.resolve();

  constructor(o: ReconcilerOptions) {
    this.store = o.store;
    this.drivers = o.drivers;
    this.log = o.log;
    this.now = o.now ?? (() => new Date());
    this.secret = o.secret ?? (() => undefined);
    this.batchSize = o.batchSize ?? 500;
  }

  /** Every public operation runs one at a time: the reconciler is single-writer by design (one leader). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.running.then(fn, fn);
    this.running = p.catch(() => {});
    return p;
  }

  /** Loads devices, assignments and rollout status from the store. */
  load(): Promise<void> {
    return this.serial(async () => {
      this.devices.clear();
      this.assignments.clear();
      for await (const page of this.store.devices.all()) for (const d of page) this.devices.set(d.id, toFleetDevice(d));
      for await (const page of this.store.assignments.all()) {
        for (const a of page) this.cacheAssignment(a.deviceId, a.rollout, { bundleHash: a.bundleHash, revision: a.revision, bucket: a.bucket, sync: a.sync });
      }
      this.statuses = new Map((await this.store.rollouts.list()).map((r) => [r.name, r]));
    });
  }

  get policySet(): PolicySet | undefined {
    return this.policy;
  }

  rolloutStatuses(): RolloutRevision[] {
    return [...this.statuses.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  deviceCount(): number {
    return this.devices.size;
  }

  /**
   * Makes a validated policy set the one in force: stores its bundles, starts
   * a revision for every rollout whose bundle changed, marks rollouts that are
   * gone, and records the commit — one transaction. Returns the rollouts that
   * changed.
   */
  applyPolicy(policy: PolicySet, commit: string, actor = 'controller'): Promise<string[]> {
    return this.serial(async () => {
      const now = this.now();
      const changed: string[] = [];
      const started: Array<{ rollout: string; revision: number; stable: string | null; canary: string }> = [];
      await this.store.transaction(async (tx) => {
        for (const [name, { resource }] of policy.bundles) {
          await this.store.bundles.put({ hash: policy.hashes.get(name)!, name, version: resource.spec.version, content: { name, spec: resource.spec }, commit }, tx);
        }
        for (const d of decideRevisions(policy, this.statuses, this.policy, now)) {
          changed.push(d.rollout);
          if (d.kind === 'start') {
            const { stableHash: stable, canaryHash: canary } = d.status;
            const row = await this.store.rollouts.startRevision({ name: d.rollout, stableHash: stable, canaryHash: canary, bundle: d.spec.bundle, spec: d.spec, ...statusPatch(d.status) }, tx);
            this.statuses.set(d.rollout, row);
            started.push({ rollout: d.rollout, revision: row.revision, stable, canary });
          } else if (d.kind === 'spec') {
            const cur = this.statuses.get(d.rollout)!;
            this.statuses.set(d.rollout, (await this.store.rollouts.updateStatus(d.rollout, cur.revision, { spec: d.spec, deleted: false, observedGeneration: d.generation }, tx))!);
          } else if (d.kind === 'delete') {
            const cur = this.statuses.get(d.rollout)!;
            this.statuses.set(d.rollout, (await this.store.rollouts.updateStatus(d.rollout, cur.revision, { deleted: true, message: 'removed from the source' }, tx))!);
          }
        }
        await this.store.sourceState.set('applied', { commit, appliedAt: now.toISOString() }, tx);
        await this.store.audit.append({ actor, action: 'policy.apply', subject: `commit/${commit}`, details: { changed, started } }, tx);
        await this.store.events.publish({ topic: 'policy.applied', payload: { commit, changed } }, tx);
      });
      this.policy = policy;
      for (const s of started) {
        this.log.info('rollout revision started', { rollout: s.rollout, revision: s.revision, stable: s.stable, canary: s.canary });
      }
      return changed;
    });
  }

  /**
   * One pass: evaluates every live rollout, then writes the assignment changes
   * for the given rollouts (all when omitted) or devices.
   */
  tick(scope: { rollouts?: readonly string[]; devices?: readonly string[]; pace?: boolean } = {}): Promise<TickResult> {
    return this.serial(() => this.tickNow(scope));
  }

  private async tickNow(scope: { rollouts?: readonly string[]; devices?: readonly string[]; pace?: boolean }): Promise<TickResult> {
    const result: TickResult = { changed: 0, deferred: 0, transitions: [] };
    if (!this.policy) return result;
    const now = this.now();
    const evaluated = new Set<string>();
    for (const [name, row] of this.statuses) {
      if (row.deleted) continue;
      const spec = this.policy.rollouts.get(name)?.resource.spec;
      if (!spec) continue;
      const obs = await this.observe(name, row);
      const { status, transitions } = evaluate(spec, toStatus(row), obs, now);
      if (transitions.length || statusDiffers(row, status)) {
        await this.persistStatus(name, row, status, transitions, 'controller');
        evaluated.add(name);
        for (const t of transitions) result.transitions.push({ rollout: name, text: t });
      }
      if (row.phase !== 'Healthy' || status.phase !== 'Healthy') evaluated.add(name);
    }

    const views = this.views();
    const wanted = scope.rollouts ? new Set([...scope.rollouts, ...evaluated]) : undefined;
    const chosen = wanted ? views.filter((v) => wanted.has(v.name)) : views;
    const devices = scope.devices ? scope.devices.flatMap((id) => this.devices.get(id) ?? []) : this.devices.values();
    const { changes, deferred, tally } = computeChanges(chosen, devices, (id) => this.assignments.get(id), this.buckets, { pace: scope.pace ?? true });
    if (!scope.devices) {
      for (const [name, t] of tally) this.tallies.set(name, t);
      // Ring counts are only meaningful at the weight they were taken at.
      for (const v of chosen) this.tallyWeight.set(v.name, v.status.weight);
    }
    for (const n of deferred.values()) result.deferred += n;
    result.changed = await this.writeChanges(changes);
    await this.refreshCounts(chosen.map((v) => v.name));
    return result;
  }

  /** Applies what a person asked for (promote, pause, resume, abort), then reconciles. */
  act(rollout: string, action: OperatorAction, actor: string): Promise<RolloutRevision> {
    return this.serial(async () => {
      const row = this.statuses.get(rollout);
      const spec = this.policy?.rollouts.get(rollout)?.resource.spec;
      if (!row || !spec || row.deleted) throw new UnknownRolloutError(rollout);
      const { status, transitions } = applyAction(spec, toStatus(row), action, this.now());
      await this.persistStatus(rollout, row, status, transitions, actor, `rollout.${action}`);
      await this.tickNow({ rollouts: [rollout] });
      return this.statuses.get(rollout)!;
    });
  }

  /** A device was enrolled or its labels or attributes changed: re-derive its assignments. */
  deviceChanged(deviceId: string): Promise<TickResult> {
    return this.serial(async () => {
      const d = await this.store.devices.get(deviceId);
      if (!d) {
        this.devices.delete(deviceId);
        this.assignments.delete(deviceId);
        return { changed: 0, deferred: 0, transitions: [] };
      }
      this.devices.set(d.id, toFleetDevice(d));
      return this.tickNow({ devices: [deviceId] });
    });
  }

  /**
   * A device reported: recompute its sync state, and queue again what it
   * should hold but does not (drift, or work lost on the way) when nothing is
   * in flight for it.
   */
  deviceReported(deviceId: string): Promise<void> {
    return this.serial(() => this.resend(deviceId, false));
  }

  /**
   * A device (re-)enrolled: a fresh management client that holds nothing and
   * has an empty queue. Re-reads it and its assignments (an unapproved
   * re-enrollment dropped them), re-derives them, and sends everything it
   * should hold at once, whatever else is queued (inventory, DeviceConfigured).
   */
  deviceEnrolled(deviceId: string): Promise<TickResult> {
    return this.serial(async () => {
      const d = await this.store.devices.get(deviceId);
      this.assignments.delete(deviceId);
      if (!d) {
        this.devices.delete(deviceId);
        return { changed: 0, deferred: 0, transitions: [] };
      }
      this.devices.set(d.id, toFleetDevice(d));
      for (const a of await this.store.assignments.forDevice(deviceId)) this.cacheAssignment(deviceId, a.rollout, { bundleHash: a.bundleHash, revision: a.revision, bucket: a.bucket, sync: a.sync });
      const r = await this.tickNow({ devices: [deviceId] });
      await this.resend(deviceId, true);
      return r;
    });
  }

  /** Recomputes sync state and queues what the device should hold but does not (only when nothing is in flight, unless `always`). */
  private async resend(deviceId: string, always: boolean): Promise<void> {
    const device = this.devices.get(deviceId);
    const mine = this.assignments.get(deviceId);
    if (!device || !mine) return;
    const driver = this.drivers.get(device.platform);
    if (!driver) return;
    const desired = await this.nativeFor(device, mine, driver);
    const rep = (await this.store.devices.reportedMany([deviceId], REPORTED_ITEMS)).get(deviceId);
    const reported = rep?.state as ReportedItems | undefined;
    const actions = driver.diff(desired, reported);
    await this.store.transaction(async (tx) => {
      let queued: readonly Action[] = [];
      if (actions.length) {
        const inflight = always ? 0 : await this.store.commands.unfinishedCount(deviceId, tx);
        if (inflight === 0) {
          const drift = actions.some((a) => a.kind === 'install' && a.replaces) || actions.some((a) => a.kind === 'remove');
          this.log.info(drift ? 'drift: re-converging device' : 're-sending work the device does not hold', { device: deviceId, actions: actions.length });
          await driver.deliver(this.deliverCtx(tx, () => nonceOf(rep)), [{ device: driverDevice(device), actions }]);
        }
        queued = actions;
      }
      const updates = [...mine].map(([rollout, a]) => ({ deviceId, rollout, ...syncOf(a.bundleHash, desired, reported, queued) }));
      await this.store.assignments.setSync(updates, tx);
      for (const u of updates) mine.get(u.rollout)!.sync = u.sync;
    });
    if (actions.length) await driver.wake?.([deviceId]);
  }

  // ------------------------------------------------------------------ internals

  private views(): RolloutView[] {
    const policy = this.policy!;
    const groups = new Map([...policy.groups].map(([n, l]) => [n, l.resource.spec]));
    const out: RolloutView[] = [];
    for (const [name, row] of this.statuses) {
      const spec = (policy.rollouts.get(name)?.resource.spec ?? row.spec) as RolloutSpec;
      const bundle = policy.bundles.get(spec.bundle)?.resource.spec;
      out.push(rolloutView(name, spec, toStatus(row), groups, { deleted: row.deleted, ...(bundle?.platforms ? { platforms: bundle.platforms } : {}) }));
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  private async observe(name: string, row: RolloutRevision): Promise<Observations> {
    const t = this.tallies.get(name) ?? { targeted: 0, ring: 0, ringAssigned: 0 };
    const counts = await this.store.assignments.syncCounts(name);
    const canary = counts[row.canaryHash] ?? {};
    const synced = canary.Synced ?? 0;
    const failed = canary.Failed ?? 0;
    // Until a tick has tallied this weight, the ring is not known to be assigned.
    const fresh = this.tallies.has(name) && (this.tallyWeight.get(name) ?? -1) === row.weight;
    return { ...t, ringAssigned: fresh ? t.ringAssigned : -1, reported: synced + failed, failed };
  }

  private readonly tallyWeight = new Map<string, number>();

  private async persistStatus(name: string, row: RolloutRevision, s: RolloutStatus, transitions: string[], actor: string, action = 'rollout.transition'): Promise<void> {
    const updated = await this.store.transaction(async (tx) => {
      const r = await this.store.rollouts.updateStatus(name, row.revision, statusPatch(s), tx);
      if (transitions.length) {
        await this.store.audit.append({ actor, action, subject: `rollout/${name}`, details: { revision: row.revision, transitions, phase: s.phase, step: s.currentStep, weight: s.weight } }, tx);
        await this.store.events.publish({ topic: 'rollout.changed', payload: { rollout: name, revision: row.revision, phase: s.phase, transitions } }, tx);
      }
      return r!;
    });
    this.statuses.set(name, updated);
    for (const t of transitions) this.log.info(`rollout ${name}: ${t}`, { rollout: name, revision: row.revision, phase: s.phase, step: s.currentStep, weight: s.weight });
  }

  private async writeChanges(changes: AssignmentChange[]): Promise<number> {
    if (changes.length === 0) return 0;
    const byDevice = new Map<string, AssignmentChange[]>();
    for (const c of changes) {
      let l = byDevice.get(c.deviceId);
      if (!l) byDevice.set(c.deviceId, (l = []));
      l.push(c);
    }
    const ids = [...byDevice.keys()];
    let written = 0;
    for (let i = 0; i < ids.length; i += this.batchSize) {
      const batch = ids.slice(i, i + this.batchSize);
      written += await this.writeBatch(batch, byDevice);
    }
    return written;
  }

  private async writeBatch(batch: string[], byDevice: Map<string, AssignmentChange[]>): Promise<number> {
    const reported = await this.store.devices.reportedMany(batch, REPORTED_ITEMS);
    const woken = new Map<PlatformDriver, string[]>();
    const work = new Map<PlatformDriver, Array<{ device: DriverDevice; actions: Action[] }>>();
    const next = new Map<string, Map<string, CachedAssignment>>();
    await this.store.transaction(async (tx) => {
      const upserts: Array<{ deviceId: string; rollout: string; revision: number; bundleHash: string; bucket: number }> = [];
      const removals = new Map<string, string[]>();
      const syncs: Array<{ deviceId: string; rollout: string; sync: SyncState; detail: string }> = [];
      for (const id of batch) {
        const device = this.devices.get(id)!;
        const mine = new Map(this.assignments.get(id) ?? []);
        for (const c of byDevice.get(id)!) {
          if (c.to === null) {
            mine.delete(c.rollout);
            let l = removals.get(c.rollout);
            if (!l) removals.set(c.rollout, (l = []));
            l.push(id);
          } else {
            const prev = mine.get(c.rollout);
            mine.set(c.rollout, { bundleHash: c.to, revision: c.revision, bucket: c.bucket, sync: prev?.bundleHash === c.to ? prev.sync : 'OutOfSync' });
            upserts.push({ deviceId: id, rollout: c.rollout, revision: c.revision, bundleHash: c.to, bucket: c.bucket });
          }
        }
        next.set(id, mine);
        const driver = this.drivers.get(device.platform);
        if (!driver) continue;
        const desired = await this.nativeFor(device, mine, driver, tx);
        const rep = reported.get(id)?.state as ReportedItems | undefined;
        const actions = driver.diff(desired, rep);
        if (actions.length) {
          let w = work.get(driver);
          if (!w) work.set(driver, (w = []));
          w.push({ device: driverDevice(device), actions });
          let l = woken.get(driver);
          if (!l) woken.set(driver, (l = []));
          l.push(id);
        }
        for (const [rollout, a] of mine) {
          const s = syncOf(a.bundleHash, desired, rep, actions);
          a.sync = s.sync;
          syncs.push({ deviceId: id, rollout, sync: s.sync, detail: s.detail });
        }
      }
      for (const [driver, w] of work) await driver.deliver(this.deliverCtx(tx, (id) => nonceOf(reported.get(id))), w);
      await this.store.assignments.assign(upserts, tx);
      for (const [rollout, devs] of removals) await this.store.assignments.remove(rollout, devs, tx);
      await this.store.assignments.setSync(syncs, tx);
    });
    for (const [id, m] of next) {
      if (m.size) this.assignments.set(id, m);
      else this.assignments.delete(id);
    }
    for (const [driver, ids] of woken) await driver.wake?.(ids).catch((e: Error) => this.log.warn('wake-up failed', { error: e.message }));
    return batch.length;
  }

  private async refreshCounts(names: readonly string[]): Promise<void> {
    for (const name of names) {
      const row = this.statuses.get(name);
      if (!row) continue;
      const by = await this.store.assignments.syncCounts(name);
      const counts: Record<string, number> = { targeted: this.tallies.get(name)?.targeted ?? 0 };
      for (const [hash, states] of Object.entries(by)) {
        const role = hash === row.canaryHash ? 'canary' : hash === row.stableHash ? 'stable' : 'other';
        for (const [state, n] of Object.entries(states)) {
          counts[`${role}.${state}`] = (counts[`${role}.${state}`] ?? 0) + n;
          counts[state] = (counts[state] ?? 0) + n;
        }
        counts[role] = (counts[role] ?? 0) + Object.values(states).reduce((a, b) => a + b, 0);
      }
      if (canonicalize(counts) !== canonicalize(row.counts)) {
        this.statuses.set(name, (await this.store.rollouts.updateStatus(name, row.revision, { counts }))!);
      }
    }
  }

  private deliverCtx(tx: Parameters<PlatformDriver['deliver']>[0]['tx'], nonce: (deviceId: string) => string) {
    return { store: this.store, tx, secret: this.secret, nonce };
  }

  private async nativeFor(device: FleetDevice, mine: ReadonlyMap<string, CachedAssignment>, driver: PlatformDriver, q?: Queryable): Promise<NativeState> {
    const entries = [...mine].sort(([a], [b]) => a.localeCompare(b));
    const key = `${device.platform}|${device.osVersion ?? ''}|${device.model ?? ''}|${entries.map(([r, a]) => `${r}=${a.bundleHash}`).join(',')}`;
    let state = this.compileCache.get(key);
    if (!state) {
      const bundles: ResolvedBundle[] = [];
      for (const [rollout, a] of entries) bundles.push({ ...(await this.bundle(a.bundleHash, q)), rollout });
      state = driver.compile(bundles, driverDevice(device));
      if (this.compileCache.size > 10_000) this.compileCache.clear();
      this.compileCache.set(key, state);
    }
    return state;
  }

  /** q: the open transaction, when there is one (PGlite has a single connection). */
  private async bundle(hash: string, q?: Queryable): Promise<Omit<ResolvedBundle, 'rollout'>> {
    let b = this.bundleCache.get(hash);
    if (!b) {
      const stored = await this.store.bundles.get(hash, q);
      if (!stored) throw new Error(`bundle ${hash} is assigned but not stored`);
      const content = stored.content as { name: string; spec: PolicyBundleSpec };
      b = { name: stored.name, version: stored.version, hash, spec: content.spec, rollout: '' };
      this.bundleCache.set(hash, b);
    }
    return b;
  }

  private cacheAssignment(deviceId: string, rollout: string, a: CachedAssignment): void {
    let m = this.assignments.get(deviceId);
    if (!m) this.assignments.set(deviceId, (m = new Map()));
    m.set(rollout, a);
  }
}

export class UnknownRolloutError extends Error {
  constructor(name: string) {
    super(`no rollout named "${name}" is in force`);
  }
}

export function toStatus(r: RolloutRevision): RolloutStatus {
  return {
    revision: r.revision,
    stableHash: r.stableHash,
    canaryHash: r.canaryHash,
    currentStep: r.currentStep,
    weight: r.weight,
    phase: r.phase,
    paused: r.paused,
    aborted: r.aborted,
    stepStartedAt: r.stepStartedAt,
    conditions: r.conditions as RolloutStatus['conditions'],
    observedGeneration: r.observedGeneration,
    message: r.message,
  };
}

function statusPatch(s: RolloutStatus) {
  return {
    currentStep: s.currentStep,
    weight: s.weight,
    phase: s.phase,
    paused: s.paused,
    aborted: s.aborted,
    stepStartedAt: s.stepStartedAt,
    conditions: s.conditions,
    message: s.message,
    observedGeneration: s.observedGeneration,
  };
}

function statusDiffers(row: RolloutRevision, s: RolloutStatus): boolean {
  return (
    row.currentStep !== s.currentStep ||
    row.weight !== s.weight ||
    row.phase !== s.phase ||
    row.paused !== s.paused ||
    row.aborted !== s.aborted ||
    row.message !== s.message ||
    row.stepStartedAt.getTime() !== s.stepStartedAt.getTime() ||
    canonicalize(row.conditions) !== canonicalize(s.conditions)
  );
}

/** What the device last said, as a short token: its time and a digest of its content. */
function nonceOf(rep: { state: unknown; reportedAt: Date } | undefined): string {
  if (!rep) return '';
  return `${rep.reportedAt.toISOString()}/${createHash('sha256').update(canonicalize(rep.state) ?? '').digest('hex').slice(0, 16)}`;
}

export function driverDevice(d: FleetDevice): DriverDevice {
  return { id: d.id, platform: d.platform, osVersion: d.osVersion, model: d.model };
}

/** Deterministic command ids: the same work for the same device never queues twice. */
export function commandUuid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u0000')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h.slice(16, 17), 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export type { Device };
