// Plan and apply run the same code, so they cannot disagree: plan a commit,
// apply it, compare device by device.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDrivers } from '../../controller/drivers.js';
import { planAgainstStore } from '../../controller/reconcile/plan-input.js';
import { planMarkdown, planText } from '../../controller/reconcile/plan-format.js';
import type { Reconciler } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { SimulatedFleet } from '../../protocols/simulated/fleet.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, bundle, group, policyOf, reconcilerFor, rollout } from './helpers.js';

const finBundle = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: fin }
spec:
  version: "1.0.0"
  settings:
    restrictions: { allowCamera: false }
`;

describe('muster plan', () => {
  let tdb: TestDatabase;
  let store: Store;
  let rec: Reconciler;
  let fleet: SimulatedFleet;
  const clock = new Clock();

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    rec = reconcilerFor(store, clock);
    fleet = new SimulatedFleet({ store, now: clock.now, onReport: (id) => rec.deviceReported(id) });
    await fleet.enroll(300);
    await rec.load();
  });
  afterAll(async () => tdb.cleanup());

  const assignmentsNow = async () => {
    const r = await store.db.query<{ device_id: string; rollout: string; bundle_hash: string }>('SELECT device_id, rollout, bundle_hash FROM assignments');
    const m = new Map<string, string>();
    for (const x of r.rows) m.set(`${x.device_id}/${x.rollout}`, x.bundle_hash);
    return m;
  };

  /** Plans `files` against the store, applies them, and checks every planned device landed exactly there. */
  const planThenApply = async (files: Record<string, string>, commit: string) => {
    const set = policyOf(files);
    const before = await assignmentsNow();
    const plan = await planAgainstStore(store, set, createDrivers(), 'test', clock.now());
    await rec.applyPolicy(set, commit);
    await rec.tick({ pace: false });
    const after = await assignmentsNow();
    const changedKeys = new Set([...before.keys(), ...after.keys()].filter((k) => before.get(k) !== after.get(k)));
    const planned = new Set(Object.entries(plan.assignments).flatMap(([d, m]) => Object.keys(m).map((r) => `${d}/${r}`)));
    expect([...planned].sort()).toEqual([...changedKeys].sort());
    for (const [d, m] of Object.entries(plan.assignments)) for (const [r, h] of Object.entries(m)) expect(after.get(`${d}/${r}`) ?? null).toBe(h);
    await fleet.settle();
    return plan;
  };

  it('agrees with apply on a first rollout, a new revision, a group change and a removal', async () => {
    const g = group('fin', '{ matchLabels: { department: finance } }');
    const first = await planThenApply({ 'b.yaml': bundle('base', '1.0.0'), 'g.yaml': g, 'e.yaml': group('all', '{}'), 'r.yaml': rollout('base', 'base', ['all'], '    - setWeight: 100'), 'f.yaml': finBundle, 'rf.yaml': rollout('fin', 'fin', ['fin'], '    - setWeight: 100') }, 'c1');
    expect(first.restarting.map((r) => r.rollout).sort()).toEqual(['base', 'fin']);
    expect(first.rollouts.find((r) => r.rollout === 'base')!.gain).toBe(300);
    await rec.tick();
    const second = await planThenApply(
      { 'b.yaml': bundle('base', '2.0.0'), 'g.yaml': group('fin', '{ matchLabels: { department: sales } }'), 'e.yaml': group('all', '{}'), 'r.yaml': rollout('base', 'base', ['all'], '    - setWeight: 30\n    - pause: {}\n    - setWeight: 100'), 'f.yaml': finBundle, 'rf.yaml': rollout('fin', 'fin', ['fin'], '    - setWeight: 100') },
      'c2',
    );
    const base = second.rollouts.find((r) => r.rollout === 'base')!;
    expect(second.restarting).toEqual([expect.objectContaining({ rollout: 'base', from: expect.objectContaining({ version: '1.0.0' }), to: expect.objectContaining({ version: '2.0.0' }), firstStep: 'setWeight 30' })]);
    expect(base.change).toBeGreaterThan(50);
    expect(base.change).toBeLessThan(130);
    const fin = second.rollouts.find((r) => r.rollout === 'fin')!;
    expect(fin.gain).toBeGreaterThan(0);
    expect(fin.lose).toBeGreaterThan(0);
    expect(Object.keys(fin.byGroup)).toContain('fin');
    const finHolders = (await store.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM assignments WHERE rollout = 'fin'`)).rows[0]!.n;
    const third = await planThenApply({ 'b.yaml': bundle('base', '2.0.0'), 'e.yaml': group('all', '{}'), 'r.yaml': rollout('base', 'base', ['all'], '    - setWeight: 30\n    - pause: {}\n    - setWeight: 100') }, 'c3');
    expect(third.deletedRollouts).toEqual(['fin']);
    expect(third.rollouts.find((r) => r.rollout === 'fin')!.lose).toBe(finHolders);
    expect(finHolders).toBeGreaterThan(0);
    expect(planText(third)).toMatch(/Rollouts removed[\s\S]*fin/);
    expect(planMarkdown(third)).toMatch(/^<!-- muster-plan -->/);
  });

  it('says so when nothing changes', async () => {
    const same = { 'b.yaml': bundle('base', '2.0.0'), 'e.yaml': group('all', '{}'), 'r.yaml': rollout('base', 'base', ['all'], '    - setWeight: 30\n    - pause: {}\n    - setWeight: 100') };
    const plan = await planAgainstStore(store, policyOf(same), createDrivers(), 'test', clock.now());
    expect(plan.unchanged).toBe(true);
    expect(planText(plan)).toMatch(/No changes/);
  });

  it('plans against an empty fleet without a database', async () => {
    const plan = await planAgainstStore(undefined, policyOf({ 'b.yaml': bundle('x', '1.0.0'), 'e.yaml': group('all', '{}'), 'r.yaml': rollout('x', 'x', ['all'], '    - setWeight: 100') }), createDrivers(), 'an empty fleet');
    expect(plan).toMatchObject({ devices: 0, restarting: [expect.objectContaining({ rollout: 'x' })] });
  });
});
