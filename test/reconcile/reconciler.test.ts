// The reconciler over a real store (PGlite, and PostgreSQL when DATABASE_URL
// is set) with the simulated driver and fleet: staged rollouts, analysis
// failure and rollback, manual gates, group changes, drift and prune.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Reconciler } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { SimulatedFleet } from '../../protocols/simulated/fleet.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, bundle, group, policyOf, reconcilerFor, rollout } from './helpers.js';

const HOUR = 3_600_000;
const everyone = group('everyone', '{}');

describe.each(backends)('reconciler on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let clock: Clock;
  let rec: Reconciler;
  let fleet: SimulatedFleet;
  let failing: Set<string>;

  beforeEach(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    clock = new Clock();
    rec = reconcilerFor(store, clock);
    failing = new Set();
    fleet = new SimulatedFleet({
      store,
      now: clock.now,
      fails: (item) => (failing.has(`${item.bundle}@${item.version}`) ? 'payload rejected' : undefined),
      onReport: (id) => rec.deviceReported(id),
    });
    await fleet.enroll(400);
    await rec.load();
  });
  afterEach(async () => tdb.cleanup());

  /** Ticks and lets the fleet answer until nothing moves (a few simulated minutes). */
  const converge = async (ticks = 6) => {
    for (let i = 0; i < ticks; i++) {
      await rec.tick();
      await fleet.settle();
      clock.advance(60_000);
    }
  };

  const ids = async (bundleName: string, version: string) => {
    const r = await store.db.query<{ device_id: string }>(
      `SELECT device_id FROM reported_state WHERE kind = 'items'
          AND state->'items'->$1->>'hash' = (SELECT hash FROM bundles WHERE name = $2 AND version = $3)
          AND state->'items'->$1->>'status' = 'installed' ORDER BY device_id`,
      [`bundle/${bundleName}`, bundleName, version],
    );
    return r.rows.map((x) => x.device_id);
  };
  const status = (name: string) => rec.rolloutStatuses().find((r) => r.name === name)!;
  const transitions = async (name: string) =>
    (await store.db.query<{ details: { transitions: string[] } }>(`SELECT details FROM audit_log WHERE subject = $1 ORDER BY id`, [`rollout/${name}`])).rows.flatMap(
      (r) => r.details.transitions,
    );
  const staged = '    - setWeight: 1\n    - pause: { duration: 1h }\n    - setWeight: 10\n    - pause: { duration: 1h }\n    - setWeight: 100';
  const v = (version: string, steps = staged, extra = '') =>
    policyOf({ 'b.yaml': bundle('base', version), 'g.yaml': everyone, 'r.yaml': rollout('base', 'base', ['everyone'], steps, extra) });
  /** Rolls v1 out to everyone in one step, so later revisions have a stable bundle. */
  const baseline = async () => {
    await rec.applyPolicy(v('1.0.0', '    - setWeight: 100'), 'c0');
    await converge();
    expect(status('base').phase).toBe('Healthy');
    expect(await ids('base', '1.0.0')).toHaveLength(400);
  };

  it('moves 1 % → 10 % → 100 % with sticky buckets, every step exactly once', async () => {
    await rec.applyPolicy(v('1.0.0'), 'c1');
    await converge();
    const ring1 = await ids('base', '1.0.0');
    expect(ring1.length).toBeGreaterThan(0);
    expect(ring1.length).toBeLessThan(15); // ~1 % of 400
    expect(status('base')).toMatchObject({ phase: 'Paused', weight: 1, currentStep: 1 });
    clock.advance(HOUR);
    await converge();
    const ring10 = await ids('base', '1.0.0');
    expect(ring10.length).toBeGreaterThan(20);
    expect(ring10.length).toBeLessThan(70);
    expect(ring10).toEqual(expect.arrayContaining(ring1)); // raising the weight only adds devices
    clock.advance(HOUR);
    await converge();
    expect(await ids('base', '1.0.0')).toHaveLength(400);
    expect(status('base')).toMatchObject({ phase: 'Healthy', weight: 100, currentStep: 5 });
    const t = await transitions('base');
    for (const step of ['step 1/5 setWeight 1 done', 'step 2/5 pause 1h done', 'step 3/5 setWeight 10 done', 'step 4/5 pause 1h done', 'step 5/5 setWeight 100 done']) {
      expect(t.filter((x) => x.startsWith(step))).toHaveLength(1);
    }
    // Buckets are stored with the assignment, for audit.
    const b = await store.db.query<{ bucket: number; device_id: string }>(`SELECT bucket, device_id FROM assignments WHERE device_id = ANY($1)`, [ring1]);
    expect(b.rows.every((r) => r.bucket < 100)).toBe(true);
  });

  it('aborts on a failed analysis and returns every device to the stable bundle', async () => {
    await baseline();
    failing.add('base@2.0.0');
    await rec.applyPolicy(v('2.0.0', '    - setWeight: 20\n    - analysis: { maxFailureRate: 0.1, minReports: 5 }\n    - setWeight: 100', 'autoRollback: true'), 'c2');
    await converge();
    expect(status('base')).toMatchObject({ phase: 'Degraded', aborted: true, weight: 0 });
    expect(status('base').message).toMatch(/analysis failed/);
    expect(await ids('base', '1.0.0')).toHaveLength(400);
    expect(await ids('base', '2.0.0')).toHaveLength(0);
  });

  it('waits at pause {} until a person promotes, and pauses/resumes on request', async () => {
    await baseline();
    await rec.applyPolicy(v('2.0.0', '    - setWeight: 10\n    - pause: {}\n    - setWeight: 100'), 'c2');
    await converge();
    clock.advance(48 * HOUR);
    await converge();
    expect(status('base')).toMatchObject({ phase: 'Paused', weight: 10 });
    const canary = (await ids('base', '2.0.0')).length;
    expect(canary).toBeGreaterThan(10);
    expect(canary).toBeLessThan(80);
    await rec.act('base', 'pause', 'alice');
    await expect(rec.act('base', 'pause', 'alice')).resolves.toMatchObject({ paused: true });
    await rec.act('base', 'resume', 'alice');
    await rec.act('base', 'promote', 'alice');
    await converge();
    expect(status('base').phase).toBe('Healthy');
    expect(await ids('base', '2.0.0')).toHaveLength(400);
    const audit = await store.db.query<{ actor: string; action: string }>(`SELECT actor, action FROM audit_log WHERE actor = 'alice' ORDER BY id`);
    expect(audit.rows.map((r) => r.action)).toEqual(['rollout.pause', 'rollout.pause', 'rollout.resume', 'rollout.promote']);
  });

  it('pauses an analysis with too little data instead of guessing', async () => {
    await baseline();
    await rec.applyPolicy(v('2.0.0', '    - setWeight: 1\n    - analysis: { maxFailureRate: 0.1, minReports: 100, window: 1h }\n    - setWeight: 100'), 'c2');
    await converge();
    expect(status('base').phase).toBe('Progressing');
    clock.advance(HOUR);
    await converge();
    expect(status('base')).toMatchObject({ phase: 'Paused', weight: 1 });
    expect(status('base').conditions).toContainEqual(expect.objectContaining({ type: 'Paused', reason: 'InsufficientData' }));
  });

  it('paces fan-out to maxDevicesPerTick', async () => {
    await rec.applyPolicy(v('1.0.0', '    - setWeight: 100', 'maxDevicesPerTick: 50'), 'c1');
    const r = await rec.tick();
    expect(r.changed).toBe(50);
    expect(r.deferred).toBe(350);
    await converge(10);
    expect(await ids('base', '1.0.0')).toHaveLength(400);
    expect(status('base').phase).toBe('Healthy');
  });

  it('moves devices in and out when a group changes, and prunes a removed rollout', async () => {
    const files = (sel: string) => ({
      'b.yaml': bundle('fin', '1.0.0'),
      'g.yaml': group('dept', sel),
      'r.yaml': rollout('fin', 'fin', ['dept'], '    - setWeight: 100'),
    });
    await rec.applyPolicy(policyOf(files('{ matchLabels: { department: finance } }')), 'c1');
    await converge();
    const finance = await ids('fin', '1.0.0');
    const expected = await store.db.query<{ id: string }>(`SELECT id FROM devices WHERE labels->>'department' = 'finance' ORDER BY id`);
    expect(finance).toEqual(expected.rows.map((r) => r.id));
    await rec.applyPolicy(policyOf(files('{ matchLabels: { department: sales } }')), 'c2');
    await converge();
    const sales = await store.db.query<{ id: string }>(`SELECT id FROM devices WHERE labels->>'department' = 'sales' ORDER BY id`);
    expect(await ids('fin', '1.0.0')).toEqual(sales.rows.map((r) => r.id));
    // The rollout and its bundle leave the repository: the bundle leaves the devices.
    await rec.applyPolicy(policyOf({ 'g.yaml': everyone }), 'c3');
    await converge();
    expect(await ids('fin', '1.0.0')).toHaveLength(0);
    expect((await store.db.query(`SELECT 1 FROM assignments WHERE rollout = 'fin'`)).rowCount).toBe(0);
  });

  it('keeps the bundle on devices that leave a rollout with prune: false', async () => {
    const files = (sel: string) => ({
      'b.yaml': bundle('kiosk', '1.0.0'),
      'g.yaml': group('dept', sel),
      'r.yaml': rollout('kiosk', 'kiosk', ['dept'], '    - setWeight: 100', 'prune: false'),
    });
    await rec.applyPolicy(policyOf(files('{ matchLabels: { department: finance } }')), 'c1');
    await converge();
    const finance = await ids('kiosk', '1.0.0');
    await rec.applyPolicy(policyOf(files('{ matchLabels: { department: sales } }')), 'c2');
    await converge();
    expect(await ids('kiosk', '1.0.0')).toEqual(expect.arrayContaining(finance));
  });

  it('re-converges a device that drifted', async () => {
    await baseline();
    const [victim] = await ids('base', '1.0.0');
    await fleet.tamper(victim!, 'bundle/base', 'sha256:' + '0'.repeat(64));
    await fleet.settle();
    expect(await ids('base', '1.0.0')).toContain(victim);
    await fleet.tamper(victim!, 'bundle/base', null);
    await fleet.settle();
    expect(await ids('base', '1.0.0')).toContain(victim);
  });

  it('starts a new revision with the completed bundle as stable, and keeps counts current', async () => {
    await baseline();
    await rec.applyPolicy(v('2.0.0', '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100'), 'c2');
    await converge();
    const s = status('base');
    expect(s.revision).toBe(2);
    const hashes = await store.db.query<{ version: string; hash: string }>(`SELECT version, hash FROM bundles WHERE name = 'base'`);
    const h = Object.fromEntries(hashes.rows.map((r) => [r.version, r.hash]));
    expect(s).toMatchObject({ stableHash: h['1.0.0'], canaryHash: h['2.0.0'] });
    expect(s.counts.canary! + s.counts.stable!).toBe(400);
    expect(s.counts['canary.Synced']).toBe((await ids('base', '2.0.0')).length);
    expect(s.counts.canary).toBeGreaterThan(150);
  });

  it('marks a device Failed when it rejects the bundle', async () => {
    failing.add('base@1.0.0');
    await rec.applyPolicy(v('1.0.0', '    - setWeight: 100'), 'c1');
    await converge();
    const r = await store.db.query<{ sync: string; n: string }>(`SELECT sync, count(*)::int AS n FROM assignments GROUP BY sync`);
    expect(r.rows).toEqual([{ sync: 'Failed', n: 400 }]);
    const d = await store.db.query<{ sync_detail: string }>(`SELECT sync_detail FROM assignments LIMIT 1`);
    expect(d.rows[0]!.sync_detail).toMatch(/payload rejected/);
  });
});
