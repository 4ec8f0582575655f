// The reconciler at fleet scale: 100,000 devices × 5 rollouts.
//  - pure: desired state + compile + diff for every device, in memory;
//  - first rollout: every device assigned and its commands queued (writes);
//  - full resync of a converged fleet: reload from the tables and recompute;
//  - one device report: the incremental path.
// Baselines from the same run: the bare SELECTs a resync cannot avoid, and a
// primary-key read for the incremental path. PostgreSQL when DATABASE_URL is
// set (in a throwaway schema), PGlite in memory otherwise.
import { randomBytes } from 'node:crypto';
import { createDrivers } from '../controller/drivers.js';
import { validatePolicyFiles } from '../controller/policy/validate.js';
import { BucketCache, computeChanges, rolloutView, toFleetDevice } from '../controller/reconcile/desired.js';
import type { NativeState } from '../controller/reconcile/driver.js';
import { Reconciler } from '../controller/reconcile/reconciler.js';
import { newRevision } from '../controller/rollout/engine.js';
import { openStore } from '../controller/store/index.js';
import { silentLogger } from '../controller/store/db.js';
import { randomKeyring } from '../controller/secrets/keys.js';
import { fleetDevices } from '../protocols/simulated/fleet.js';
import { heapUsedMB, percentile, timeMs, type Benchmark, type BenchRow } from './harness.js';

const DEVICES = Number(process.env.BENCH_DEVICES ?? 100_000);

function policyFiles() {
  const doc = (kind: string, name: string, spec: string) => `apiVersion: muster.dev/v1alpha1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec:\n${spec}\n`;
  const files: Array<{ path: string; text: string }> = [];
  const rollouts: Array<[string, string]> = [
    ['apple-base', '    matchLabels: { muster.dev/platform: apple }'],
    ['windows-base', '    matchLabels: { muster.dev/platform: windows }'],
    ['android-base', '    matchLabels: { muster.dev/platform: android }'],
    ['finance', '    matchLabels: { department: finance }'],
    ['corporate', '    matchExpressions: [{ key: muster.dev/ownership, operator: In, values: [corporate] }]'],
  ];
  rollouts.forEach(([name, selector], i) => {
    files.push({ path: `b-${name}.yaml`, text: doc('PolicyBundle', name, `  version: "1.0.0"\n  settings:\n    restrictions: { ${['allowCamera', 'allowBluetooth', 'allowScreenCapture', 'allowCloudBackup', 'allowRemovableStorage'][i]}: false }`) });
    files.push({ path: `g-${name}.yaml`, text: doc('DeviceGroup', name, `  selector:\n${selector}`) });
    files.push({ path: `r-${name}.yaml`, text: doc('Rollout', name, `  bundle: ${name}\n  groups: [${name}]\n  steps:\n    - setWeight: 100`) });
  });
  return files;
}

export const reconcileBenchmark: Benchmark = {
  name: 'reconcile',
  description: `desired state + compile + diff: ${DEVICES.toLocaleString('en')} devices × 5 rollouts, full and incremental`,
  async run(): Promise<BenchRow[]> {
    const url = process.env.DATABASE_URL;
    const schema = `muster_bench_${randomBytes(4).toString('hex')}`;
    const store = await openStore({ ...(url ? { databaseUrl: url, poolSize: 8 } : { dataDir: 'memory' }), schema, logger: silentLogger, keys: randomKeyring() });
    const backend = store.backend;
    const rows: BenchRow[] = [];
    try {
      const v = validatePolicyFiles(policyFiles());
      if (!v.ok) throw new Error('bench policy is invalid');
      const devices = fleetDevices(DEVICES, 'bench');

      // 1. Pure: what every device should have, compiled and diffed, no I/O.
      const drivers = createDrivers();
      const groups = new Map([...v.policySet.groups].map(([n, l]) => [n, l.resource.spec]));
      const views = [...v.policySet.rollouts].map(([name, l]) =>
        rolloutView(name, l.resource.spec, { ...newRevision({ revision: 1, stableHash: null, canaryHash: v.policySet.hashes.get(l.resource.spec.bundle)!, generation: 1, steps: 1 }, new Date()), weight: 100, currentStep: 1, phase: 'Healthy' }, groups),
      );
      const fleet = devices.map((d) => toFleetDevice({ id: d.id, platform: d.platform, serialNumber: d.serialNumber ?? null, osVersion: d.osVersion ?? null, model: d.model ?? null, labels: d.labels ?? {}, attributes: d.attributes ?? {} }));
      const heap0 = heapUsedMB();
      let actions = 0;
      const pureMs = await timeMs(() => {
        const { changes } = computeChanges(views, fleet, () => undefined, new BucketCache(), { pace: false });
        const per = new Map<string, string[]>();
        for (const c of changes) if (c.to) (per.get(c.deviceId) ?? per.set(c.deviceId, []).get(c.deviceId)!).push(c.to);
        const cache = new Map<string, NativeState>();
        for (const d of fleet) {
          const hashes = (per.get(d.id) ?? []).sort();
          const key = `${d.platform}|${hashes.join(',')}`;
          const driver = drivers.get(d.platform)!;
          let native = cache.get(key);
          if (!native) {
            native = driver.compile(
              hashes.map((h) => {
                const name = [...v.policySet.hashes].find(([, x]) => x === h)![0];
                const spec = v.policySet.bundles.get(name)!.resource.spec;
                return { name, version: spec.version, hash: h, spec, rollout: name };
              }),
              { id: d.id, platform: d.platform, osVersion: d.osVersion, model: d.model },
            );
            cache.set(key, native);
          }
          actions += driver.diff(native, undefined).length;
        }
      });
      rows.push({ name: `pure: desired + compile + diff, ${DEVICES} devices × 5 rollouts`, value: Math.round(pureMs), unit: 'ms', extra: { backend: 'none', actions, heapDeltaMB: Math.round((heapUsedMB() - heap0) * 10) / 10 } });

      // 2. First rollout: every device assigned and its commands queued.
      for (let i = 0; i < devices.length; i += 5000) await store.devices.upsertMany(devices.slice(i, i + 5000));
      const rec = new Reconciler({ store, drivers, log: { info: () => {}, warn: () => {}, error: () => {} }, batchSize: 1000 });
      await rec.load();
      await rec.applyPolicy(v.policySet, 'bench');
      const heap1 = heapUsedMB();
      let changed = 0;
      const firstMs = await timeMs(async () => void (changed = (await rec.tick({ pace: false })).changed));
      rows.push({ name: 'first rollout: assign + queue commands (writes)', value: Math.round(changed / (firstMs / 1000)), unit: 'devices/s', extra: { backend, ms: Math.round(firstMs), devices: changed, heapDeltaMB: Math.round((heapUsedMB() - heap1) * 10) / 10 } });

      // 3. Full resync of the converged fleet: reload everything and recompute; nothing to write.
      const floorMs = await timeMs(async () => {
        await store.db.query('SELECT * FROM devices');
        await store.db.query('SELECT * FROM assignments');
      });
      const heap2 = heapUsedMB();
      let resyncChanged = -1;
      const resyncMs = await timeMs(async () => {
        await rec.load();
        resyncChanged = (await rec.tick({ pace: false })).changed;
      });
      rows.push({ name: 'full resync, nothing changed (reload + recompute)', value: Math.round(resyncMs), unit: 'ms', baseline: { name: 'bare SELECT devices + assignments', value: Math.round(floorMs), unit: 'ms' }, extra: { backend, changed: resyncChanged, heapMB: heapUsedMB(), heapDeltaMB: Math.round((heapUsedMB() - heap2) * 10) / 10 } });

      // 4. One device reports: the incremental path (read its state, diff, sync state).
      const lat: number[] = [];
      const floor: number[] = [];
      for (const d of devices.slice(0, 300)) {
        await store.devices.report(d.id, 'items', { items: {} });
        floor.push(await timeMs(() => store.db.query('SELECT * FROM devices WHERE id = $1', [d.id])));
        lat.push(await timeMs(() => rec.deviceReported(d.id)));
      }
      const s = [...lat].sort((a, b) => a - b);
      const f = [...floor].sort((a, b) => a - b);
      rows.push({
        name: 'one device report (incremental)',
        value: Math.round((lat.length / lat.reduce((a, b) => a + b, 0)) * 1000),
        unit: 'reports/s',
        p50: percentile(s, 50),
        p99: percentile(s, 99),
        baseline: { name: 'PK SELECT p50', value: percentile(f, 50), unit: 'ms' },
        extra: { backend },
      });
      return rows;
    } finally {
      if (backend === 'postgres') await store.db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
      await store.close();
    }
  },
};
