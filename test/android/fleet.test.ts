// Android end to end in one process: the local AMAPI server with its
// simulated fleet; Muster's Android side as `muster serve` builds it
// (createAndroidMdm: the googleapis client, the worker, the driver, the
// Pub/Sub endpoint on a real socket); and the real Reconciler. Devices enroll
// with an enrollment token, report through Pub/Sub pushes with signed OIDC
// tokens, and a bundle rolls out to them in stages by moving them between
// AMAPI policies.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAdminAction, runAdminAction } from '../../controller/actions/admin.js';
import { PLATFORMS, type Platform } from '../../controller/policy/types.js';
import type { PolicySet } from '../../controller/policy/resources.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import { bucketOf } from '../../controller/rollout/bucket.js';
import type { Store } from '../../controller/store/index.js';
import { BASE_POLICY_ID, policyIdFor } from '../../protocols/android/compile.js';
import { APPLY_POLICY } from '../../protocols/android/driver.js';
import { createSimulatedDriver } from '../../protocols/simulated/driver.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, group, policyOf, quietLog, rollout } from '../reconcile/helpers.js';
import { androidRig, type AndroidRig } from './helpers.js';

const ROLLOUT = 'android-base';
const bundleYaml = (version: string, extra = '') => `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: android-base }
spec:
  version: "${version}"
  platforms: [android]
  settings:
    passcode: { required: true, minLength: 8, complexity: alphanumeric }
    restrictions: { allowCamera: false${extra} }
    wifi:
      - { ssid: Corp, security: wpa2-personal, password: "\${secret:CORP_PSK}" }
`;
const files = (version: string, extra = '', steps = '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') => ({
  'b.yaml': bundleYaml(version, extra),
  'g.yaml': group('android-fleet', '{ matchLabels: { fleet: android } }'),
  'r.yaml': rollout(ROLLOUT, 'android-base', ['android-fleet'], steps),
});

describe.each(backends)('Android devices converge through a staged rollout (%s)', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let rig: AndroidRig;
  let rec: Reconciler;
  let drivers: Map<Platform, PlatformDriver>;
  const clock = new Clock();
  let cursor = 0;
  /** AMAPI device names by Muster device id. */
  const names = new Map<string, string>();
  const ring: string[] = [];
  const outside: string[] = [];
  let v1: PolicySet;

  /** What `muster serve` does between pushes: the reconciler hears reports, the worker makes the API calls. */
  const converge = async () => {
    for (let round = 0; round < 30; round++) {
      await rig.sim.settle();
      const events = await store.events.read(cursor, { topics: ['device.changed', 'device.reported'] });
      for (const e of events) {
        cursor = Math.max(cursor, e.id);
        const id = (e.payload as { deviceId: string }).deviceId;
        if (e.topic === 'device.changed') await rec.deviceChanged(id);
        else await rec.deviceReported(id);
      }
      const worked = await rig.mdm.worker.drain();
      if (events.length === 0 && worked === 0) return;
    }
    throw new Error('the fleet did not settle');
  };
  const applied = (id: string) => rig.sim.device(names.get(id)!)?.resource.appliedPolicyName as string | undefined;
  const policyName = (id: string) => `${rig.enterprise}/policies/${id}`;
  const status = () => rec.rolloutStatuses().find((r) => r.name === ROLLOUT)!;

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    rig = await androidRig(store, { secrets: { CORP_PSK: 'correct horse battery' } });
    drivers = new Map(PLATFORMS.map((p) => [p, p === 'android' ? rig.mdm.driver : createSimulatedDriver(p)]));
    rec = new Reconciler({ store, drivers, log: quietLog, now: clock.now });
    await rec.load();
    // Device ids AMAPI would assign, chosen so that half fall in the 50 % ring (buckets are sticky and known).
    for (let i = 0; ring.length < 4 || outside.length < 4; i++) {
      const id = `3f5a9c${String(i).padStart(10, '0')}`;
      const inRing = bucketOf(ROLLOUT, id) < 5000;
      if (inRing && ring.length < 4) ring.push(id);
      else if (!inRing && outside.length < 4) outside.push(id);
    }
    const token = await rig.mdm.enrollmentToken({ labels: { fleet: 'android' }, durationMs: 600_000 });
    expect(token.policyId).toBe(BASE_POLICY_ID);
    for (const [i, id] of [...ring, ...outside].entries()) names.set(id, rig.sim.enroll(token.value, { id, serial: `SIM${i}`, model: 'Pixel 8' }));
    await converge();
  });
  afterAll(async () => {
    await rig?.close();
    await tdb?.cleanup();
  });

  it('enrolled every device with the token, on the base policy, labelled for its group', async () => {
    for (const id of names.keys()) {
      expect((await store.devices.get(id))?.labels).toEqual({ fleet: 'android' });
      expect(applied(id)).toBe(policyName(BASE_POLICY_ID));
    }
    // The token's QR code is what AMAPI made, for the setup wizard.
    const t = await rig.mdm.enrollmentToken({ oneTime: true });
    const qr = JSON.parse(t.qrCode) as Record<string, unknown>;
    expect(qr['android.app.extra.PROVISIONING_ADMIN_EXTRAS_BUNDLE']).toEqual({ 'com.google.android.apps.work.clouddpc.EXTRA_ENROLLMENT_TOKEN': t.value });
    expect(t.link).toBe(`https://enterprise.google.com/android/enroll?et=${t.value}`);
  });

  it('moves half the devices to the bundle’s policy, waits for a person, then the rest; one policies.patch, one devices.patch per device', async () => {
    v1 = policyOf(files('1.0.0'));
    const policy = policyIdFor([v1.hashes.get('android-base')!]);
    await rec.applyPolicy(v1, 'c1');
    await rec.tick();
    await converge();
    await rec.tick();
    expect(ring.map(applied)).toEqual(ring.map(() => policyName(policy)));
    expect(outside.map(applied)).toEqual(outside.map(() => policyName(BASE_POLICY_ID)));
    expect(status()).toMatchObject({ phase: 'Paused', weight: 50 });
    expect(status().counts['canary.Synced']).toBe(4);

    // One status report after the promotion is lost on its way: the device applied its policy, Muster never heard.
    rig.sim.pusher.loseNext(1, 'STATUS_REPORT');
    await rec.act(ROLLOUT, 'promote', 'alice');
    await converge();
    await rec.tick();
    expect([...names.keys()].map(applied)).toEqual([...names.keys()].map(() => policyName(policy)));
    expect(rig.sim.pusher.stats.lost).toBe(1);
    expect(status().counts['canary.Synced']).toBe(7);

    // The periodic devices.list sync repairs what the lost notification missed.
    const r = await rig.mdm.sync();
    expect(r.devices).toBe(8);
    expect(r.outcomes.stored).toBe(1);
    await converge();
    await rec.tick();
    expect(status()).toMatchObject({ phase: 'Healthy' });
    expect(status().counts['canary.Synced']).toBe(8);

    // Quota spent: the policy patched once, not once per device; each device patched once (with updateMask=policyName).
    const patches = rig.sim.requests.filter((q) => q.method === 'PATCH' && q.path === `/v1/${policyName(policy)}`);
    expect(patches).toHaveLength(1);
    expect(rig.mdm.worker.stats.devicesPatched).toBe(8);
    const devicePatches = rig.sim.requests.filter((q) => q.method === 'PATCH' && /\/devices\//.test(q.path));
    expect(devicePatches).toHaveLength(8);
    expect(devicePatches.every((q) => q.query.updateMask === 'policyName')).toBe(true);
  });

  it('sent the Wi-Fi passphrase to AMAPI only, never to the database', async () => {
    const policy = policyIdFor([v1.hashes.get('android-base')!]);
    const sent = rig.sim.policies.get(policyName(policy))!.policy as { openNetworkConfiguration: { NetworkConfigurations: Array<{ WiFi: { Passphrase: string } }> } };
    expect(sent.openNetworkConfiguration.NetworkConfigurations[0]!.WiFi.Passphrase).toBe('correct horse battery');
    const everything: unknown[] = [];
    for (const id of names.keys()) {
      for (const c of await store.commands.listForDevice(id)) everything.push(c, await store.commands.results(c.uuid));
      everything.push(await store.devices.reported(id), await store.devices.getEnrollment(id));
    }
    everything.push(await store.audit.list({}), await store.bundles.get(v1.hashes.get('android-base')!));
    const text = JSON.stringify(everything);
    expect(text).toContain('${secret:CORP_PSK}');
    expect(text).not.toContain('correct horse battery');
    expect(JSON.stringify(rig.logs)).not.toContain('correct horse battery');
  });

  it('starts a device enrolled for the group on the policy the group’s rollouts give it: no devices.patch needed', async () => {
    const token = await rig.mdm.enrollmentToken({ labels: { fleet: 'android' }, policySet: rec.policySet!, rollouts: rec.rolloutStatuses() });
    const policy = policyIdFor([v1.hashes.get('android-base')!]);
    expect(token.policyId).toBe(policy);
    const patchesBefore = rig.mdm.worker.stats.devicesPatched;
    const id = '3f5a9cffff00000001';
    names.set(id, rig.sim.enroll(token.value, { id, serial: 'SIM-NEW' }));
    await converge();
    await rec.tick();
    expect(applied(id)).toBe(policyName(policy));
    expect(rig.mdm.worker.stats.devicesPatched).toBe(patchesBefore);
    expect((await store.assignments.forDevice(id)).map((a) => a.sync)).toEqual(['Synced']);
  });

  it('shows a device whose policy is not compliant as Failed, and an analysis step aborts the rollout on it', async () => {
    // Two of the ring's devices cannot apply screenCaptureDisabled (too old an Android, say).
    for (const id of ring.slice(0, 2)) rig.sim.device(names.get(id)!)!.o.rejects = ['screenCaptureDisabled'];
    const v2 = policyOf(files('2.0.0', ', allowScreenCapture: false', '    - setWeight: 50\n    - analysis: { maxFailureRate: 0.2, minReports: 3 }\n    - setWeight: 100'));
    const v2policy = policyIdFor([v2.hashes.get('android-base')!]);
    const v1policy = policyIdFor([v1.hashes.get('android-base')!]);
    await rec.applyPolicy(v2, 'c2');
    await rec.tick();
    await converge();
    // The failures are on record before the analysis judges them.
    const failed = (await store.assignments.devicesInState('Failed')).map((f) => f.deviceId).sort();
    expect(failed).toEqual(ring.slice(0, 2).sort());
    const detail = (await store.assignments.forDevice(ring[0]!))[0]!.syncDetail;
    expect(detail).toContain('screenCaptureDisabled API_LEVEL');
    await rec.tick();
    await converge();
    await rec.tick();
    const s = status();
    expect(s).toMatchObject({ phase: 'Degraded', aborted: true });
    // Every device is back on the stable bundle's policy; the canary's policy is used by nothing.
    for (const id of names.keys()) expect(applied(id)).toBe(policyName(v1policy));
    expect([...rig.sim.devices.values()].some((d) => d.resource.policyName === policyName(v2policy))).toBe(false);

    // Sync deletes Muster's policies no device uses or should use; the base policy stays for enrollment tokens.
    const r = await rig.mdm.sync();
    expect(r.deletedPolicies).toEqual([v2policy]);
    expect([...rig.sim.policies.keys()].sort()).toEqual([policyName(BASE_POLICY_ID), policyName(v1policy)].sort());
  });

  it('locks, restarts and resets the passcode through issueCommand, wipes through devices.delete, and audits each', async () => {
    const id = outside[0]!;
    const name = names.get(id)!;
    // The lock's COMMAND notification will be lost: the sync finds the operation done.
    rig.sim.pusher.loseNext(1, 'COMMAND');
    const lock = await runAdminAction(store, drivers, id, parseAdminAction('lock', id, { message: 'Please return to IT' }), 'token:alice');
    const restart = await runAdminAction(store, drivers, id, parseAdminAction('restart', id), 'token:alice');
    const reset = await runAdminAction(store, drivers, id, parseAdminAction('reset-passcode', id, { newPasscode: '80864711' }), 'token:alice');
    await converge();
    const dev = rig.sim.device(name)!;
    expect(dev).toMatchObject({ locked: true, reboots: 1, passwordResets: 1 });
    const commands = rig.sim.requests.filter((q) => q.path === `/v1/${name}:issueCommand`).map((q) => q.body as { type: string; duration: string; newPassword?: string });
    expect(commands.map((c) => c.type)).toEqual(['LOCK', 'REBOOT', 'RESET_PASSWORD']);
    expect(commands.every((c) => c.duration === '86400s')).toBe(true);
    expect(commands[2]!.newPassword).toBe('80864711');
    // Finished when the COMMAND notification said so; the lost one is found by the sync (operations.get).
    for (const r of [restart, reset]) expect((await store.commands.get(r.commands[0]!))?.state).toBe('completed');
    expect((await store.commands.get(lock.commands[0]!))?.state).toBe('acknowledged');
    expect((await rig.mdm.sync()).operations).toBe(1);
    expect((await store.commands.get(lock.commands[0]!))?.state).toBe('completed');

    // Refresh reads the Device back (devices.get) and stores it like a report.
    const refresh = await runAdminAction(store, drivers, id, parseAdminAction('refresh', id), 'token:alice');
    await converge();
    expect(rig.sim.requests.filter((q) => q.method === 'GET' && q.path === `/v1/${name}`)).toHaveLength(1);
    expect((await store.commands.get(refresh.commands[0]!))?.state).toBe('completed');

    const wipe = await runAdminAction(store, drivers, id, parseAdminAction('wipe', id, { confirm: id, preserveDataPlan: false }), 'token:alice');
    await converge();
    expect(rig.sim.deleted.get(name)).toEqual(['WIPE_ESIMS']);
    expect((await store.commands.get(wipe.commands[0]!))?.state).toBe('completed');
    expect((await store.devices.getEnrollment(id))?.status).toBe('unenrolled');
    await expect(runAdminAction(store, drivers, id, parseAdminAction('lock', id), 'token:alice')).rejects.toMatchObject({ status: 409 });

    const audit = (await store.audit.list({ subject: `device/${id}` })).map((a) => [a.action, a.actor]);
    expect(audit).toEqual([
      ['device.lock', 'token:alice'],
      ['device.restart', 'token:alice'],
      ['device.reset-passcode', 'token:alice'],
      ['device.refresh', 'token:alice'],
      ['device.wipe', 'token:alice'],
      // AMAPI reported the device deleted: out of management, on record.
      ['device.unenroll', 'amapi'],
    ]);
    expect(JSON.stringify(await store.audit.list({ subject: `device/${id}` }))).not.toContain('80864711');
  });

  it('marks a device AMAPI no longer knows as unenrolled: at a 404, and when devices.list lacks it', async () => {
    // Deleted in the console, behind Muster's back.
    const [a, b] = [outside[1]!, outside[2]!];
    rig.sim.devices.delete(names.get(a)!);
    rig.sim.devices.delete(names.get(b)!);
    // A policy change reaches `a` first: its devices.patch answers 404.
    await store.commands.enqueue({ uuid: '00000000-0000-4000-8000-00000000a404', deviceId: a, type: APPLY_POLICY, payload: { policyId: BASE_POLICY_ID, policy: { statusReportingSettings: {} } } });
    await rig.mdm.worker.drain();
    expect((await store.commands.get('00000000-0000-4000-8000-00000000a404'))).toMatchObject({ state: 'failed', lastError: expect.stringMatching(/404 NOT_FOUND/) });
    expect((await store.devices.getEnrollment(a))?.status).toBe('unenrolled');
    // `b` is found gone by the sync, which has no notification to wait for.
    const r = await rig.mdm.sync();
    expect(r.gone).toEqual([b]);
    expect((await store.devices.getEnrollment(b))?.status).toBe('unenrolled');
  });
});
