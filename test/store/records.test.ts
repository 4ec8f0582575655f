// Devices, identities, enrollment, reported state, bundles, rollouts and
// assignments: the typed functions the reconciler and the drivers build on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleConflictError, type Condition, type Store, contentHash } from '../../controller/store/index.js';
import { type TestDatabase, backends, testDatabase } from '../support/db.js';

const sha = (c: string) => c.repeat(64);

function bundle(name: string, version: string, spec: unknown) {
  const content = { name, spec: { version, ...(spec as object) } };
  return { name, version, content, hash: contentHash(content).hash };
}

describe.each(backends)('records on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(async () => tdb?.cleanup());

  describe('devices', () => {
    it('upserts, keeping what an update does not mention', async () => {
      const d = await store.devices.upsert({
        id: 'mac-1',
        platform: 'apple',
        identifiers: { udid: 'U-1' },
        serialNumber: 'C02XYZ',
        model: 'Mac14,2',
        osVersion: '14.4',
        labels: { team: 'design', site: 'ber' },
        attributes: { ownership: 'corporate' },
      });
      expect(d).toMatchObject({ id: 'mac-1', platform: 'apple', serialNumber: 'C02XYZ', lastSeenAt: null });
      expect(d.enrolledAt).toBeInstanceOf(Date);
      const u = await store.devices.upsert({ id: 'mac-1', platform: 'apple', osVersion: '14.5' });
      expect(u).toMatchObject({ osVersion: '14.5', model: 'Mac14,2', labels: { team: 'design', site: 'ber' } });
      expect(u.enrolledAt).toEqual(d.enrolledAt);
      const cleared = await store.devices.upsert({ id: 'mac-1', platform: 'apple', model: null });
      expect(cleared.model).toBeNull();
      expect(await store.devices.findByIdentifier('udid', 'U-1')).toMatchObject({ id: 'mac-1' });
      expect(await store.devices.findByIdentifier('udid', 'nope')).toBeUndefined();
    });

    it('lists by the fields group selectors use, page by page', async () => {
      await store.devices.upsert({ id: 'win-1', platform: 'windows', model: 'Surface', labels: { team: 'design' } });
      await store.devices.upsert({ id: 'win-2', platform: 'windows', model: 'Surface', labels: { team: 'ops', vip: 'yes' } });
      await store.devices.upsert({ id: 'and-1', platform: 'android', labels: { team: 'ops' }, attributes: { ownership: 'byod' } });
      const ids = async (f: Parameters<Store['devices']['list']>[0]) => (await store.devices.list(f)).map((d) => d.id);
      expect(await ids({ platform: 'windows' })).toEqual(['win-1', 'win-2']);
      expect(await ids({ labels: { team: 'design' } })).toEqual(['mac-1', 'win-1']);
      expect(await ids({ hasLabels: ['vip'] })).toEqual(['win-2']);
      expect(await ids({ attributes: { ownership: 'byod' } })).toEqual(['and-1']);
      expect(await ids({ model: 'Surface', labels: { team: 'ops' } })).toEqual(['win-2']);
      expect(await ids({ limit: 2 })).toEqual(['and-1', 'mac-1']);
      expect(await ids({ limit: 2, afterId: 'mac-1' })).toEqual(['win-1', 'win-2']);
      expect(await store.devices.count({ platform: 'windows' })).toBe(2);
      // Values are parameters, never SQL.
      expect(await ids({ model: "x' OR '1'='1" })).toEqual([]);
    });

    it('moves last seen only forward', async () => {
      const t1 = new Date('2025-01-01T00:00:00.000Z');
      const t0 = new Date('2024-01-01T00:00:00.000Z');
      await store.devices.touch('win-1', t1);
      await store.devices.touch('win-1', t0);
      expect((await store.devices.get('win-1'))!.lastSeenAt).toEqual(t1);
    });

    it('keeps enrollment state and reported state per device', async () => {
      await store.devices.setEnrollment({ deviceId: 'mac-1', platform: 'apple', status: 'enrolled', state: { token: 'aa', pushMagic: 'pm' } });
      const p = await store.devices.patchEnrollmentState('mac-1', { token: 'bb' });
      expect(p!.state).toEqual({ token: 'bb', pushMagic: 'pm' });
      expect(await store.devices.patchEnrollmentState('nobody', { token: 'x' })).toBeUndefined();
      expect((await store.devices.getEnrollment('mac-1'))!.status).toBe('enrolled');

      await store.devices.report('mac-1', 'profiles', [{ id: 'a' }]);
      await store.devices.report('mac-1', 'device_information', { OSVersion: '14.5' });
      await store.devices.report('mac-1', 'profiles', [{ id: 'a' }, { id: 'b' }]);
      const rep = await store.devices.reported('mac-1');
      expect(rep.map((r) => [r.kind, r.state])).toEqual([
        ['device_information', { OSVersion: '14.5' }],
        ['profiles', [{ id: 'a' }, { id: 'b' }]],
      ]);
    });
  });

  describe('identities', () => {
    it('binds, authenticates and revokes certificates', async () => {
      const notAfter = new Date(Date.now() + 86_400_000);
      const i = await store.identities.add({ certSha256: sha('A'), platform: 'apple', protocol: 'apple-scep', serialNumber: '01', subject: 'CN=mac-1', notAfter });
      expect(i).toMatchObject({ certSha256: sha('a'), deviceId: null, revokedAt: null });
      expect(await store.identities.authenticate(sha('a'))).toBeUndefined(); // not bound yet
      await store.identities.bind(sha('a'), 'mac-1');
      expect(await store.identities.authenticate(sha('a'))).toMatchObject({ deviceId: 'mac-1' });
      expect(await store.identities.authenticate(sha('a'), new Date(notAfter.getTime() + 1))).toBeUndefined();
      await store.identities.add({ certSha256: sha('b'), platform: 'apple', protocol: 'apple-scep', deviceId: 'mac-1', serialNumber: '02', notAfter });
      expect((await store.identities.listForDevice('mac-1')).length).toBe(2);
      const at = new Date('2025-06-01T00:00:00.000Z');
      expect((await store.identities.revoke(sha('a'), at))!.revokedAt).toEqual(at);
      expect((await store.identities.revoke(sha('a'), new Date()))!.revokedAt).toEqual(at);
      expect(await store.identities.authenticate(sha('a'))).toBeUndefined();
      expect(await store.identities.revokeDevice('mac-1')).toBe(1);
      expect(await store.identities.authenticate(sha('b'))).toBeUndefined();
    });
  });

  describe('bundles', () => {
    it('stores a bundle once by hash and refuses a changed content under one version', async () => {
      const b = bundle('wifi', '1.0.0', { settings: { wifi: [{ ssid: 'corp' }] } });
      const first = await store.bundles.put({ ...b, commit: 'abc123' });
      expect(first.created).toBe(true);
      expect(first.bundle).toMatchObject({ hash: b.hash, firstCommit: 'abc123', content: b.content });
      const again = await store.bundles.put({ ...b, commit: 'def456' });
      expect(again.created).toBe(false);
      expect(again.bundle.firstCommit).toBe('abc123');
      const changed = bundle('wifi', '1.0.0', { settings: { wifi: [{ ssid: 'guest' }] } });
      await expect(store.bundles.put(changed)).rejects.toBeInstanceOf(BundleConflictError);
      await expect(store.bundles.put({ ...b, hash: changed.hash })).rejects.toThrow(/does not match its content/);
      expect(await store.bundles.getByVersion('wifi', '1.0.0')).toMatchObject({ hash: b.hash });
      expect((await store.bundles.get(b.hash))!.canonical).toBe(contentHash(b.content).canonical);
    });
  });

  describe('rollouts and assignments', () => {
    const v1 = bundle('passcode', '1.0.0', { settings: { passcode: { minLength: 6 } } });
    const v2 = bundle('passcode', '2.0.0', { settings: { passcode: { minLength: 8 } } });

    it('keeps one row per revision with status', async () => {
      await store.bundles.put(v1);
      await store.bundles.put(v2);
      const r1 = await store.rollouts.startRevision({ name: 'passcode', stableHash: null, canaryHash: v1.hash });
      expect(r1).toMatchObject({ revision: 1, currentStep: 0, weight: 0, phase: 'Progressing', conditions: [] });
      await store.rollouts.updateStatus('passcode', 1, { phase: 'Healthy', currentStep: 3, weight: 100 });
      const r2 = await store.rollouts.startRevision({ name: 'passcode', stableHash: v1.hash, canaryHash: v2.hash, observedGeneration: 2 });
      expect(r2).toMatchObject({ revision: 2, stableHash: v1.hash, canaryHash: v2.hash });
      const cond: Condition = {
        type: 'Progressing',
        status: 'True',
        reason: 'StepAdvanced',
        message: 'weight 10',
        lastTransitionTime: '2025-01-01T00:00:00Z',
      };
      const u = await store.rollouts.updateStatus('passcode', 2, { currentStep: 1, weight: 10, conditions: [cond] });
      expect(u).toMatchObject({ currentStep: 1, weight: 10, phase: 'Progressing', conditions: [cond] });
      expect(await store.rollouts.current('passcode')).toMatchObject({ revision: 2, weight: 10 });
      expect((await store.rollouts.history('passcode')).map((r) => r.revision)).toEqual([2, 1]);
      expect((await store.rollouts.list()).map((r) => [r.name, r.revision])).toEqual([['passcode', 2]]);
      expect(await store.rollouts.updateStatus('passcode', 9, { weight: 1 })).toBeUndefined();
      await expect(store.rollouts.updateStatus('passcode', 2, { weight: 101 })).rejects.toThrow();
    });

    it('reports which devices an assignment actually changed', async () => {
      const base = { rollout: 'passcode', revision: 2 };
      const changed = await store.assignments.assign([
        { ...base, deviceId: 'mac-1', bundleHash: v1.hash, bucket: 42 },
        { ...base, deviceId: 'win-1', bundleHash: v1.hash, bucket: 9000 },
      ]);
      expect(changed.sort()).toEqual(['mac-1', 'win-1']);
      const same = await store.assignments.assign([
        { ...base, deviceId: 'mac-1', bundleHash: v2.hash, bucket: 42 },
        { ...base, deviceId: 'win-1', bundleHash: v1.hash, bucket: 9000 },
      ]);
      expect(same).toEqual(['mac-1']);
      expect(await store.assignments.forDevice('mac-1')).toMatchObject([{ bundleHash: v2.hash, bucket: 42 }]);
      expect(await store.assignments.countByBundle('passcode')).toEqual({ [v1.hash]: 1, [v2.hash]: 1 });
      expect((await store.assignments.forRollout('passcode', { limit: 1 })).map((a) => a.deviceId)).toEqual(['mac-1']);
      expect((await store.assignments.forRollout('passcode', { afterDeviceId: 'mac-1' })).map((a) => a.deviceId)).toEqual(['win-1']);
      // A hash no stored bundle has.
      await expect(store.assignments.assign([{ ...base, deviceId: 'mac-1', bundleHash: 'sha256:' + sha('f'), bucket: 1 }])).rejects.toThrow();
      expect(await store.assignments.remove('passcode', ['win-1'])).toBe(1);
      expect(await store.assignments.remove('passcode')).toBe(1);
    });
  });
});
