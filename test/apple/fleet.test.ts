// Apple end to end in one process: a server with the SCEP CA and the MDM
// endpoints on a real socket, the reconciler with the Apple driver, and
// simulated Macs that enroll through SCEP and answer over HTTP with signed
// plists. A bundle rolls out in stages and lands as a profile on each device.
import { randomUUID } from 'node:crypto';
import { bucketOf } from '../../controller/rollout/bucket.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLATFORMS, type Platform } from '../../controller/policy/types.js';
import { AdminActionError, parseAdminAction, runAdminAction } from '../../controller/actions/admin.js';
import { deviceCompliance } from '../../controller/compliance/device.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { createAppleDriver, recordAppleResult, recordDeclarationStatus, renderAppleCommand } from '../../protocols/apple/driver.js';
import { profileUuid } from '../../protocols/apple/profiles.js';
import { appleRoutes } from '../../protocols/apple/routes.js';
import { recordScepIssue } from '../../protocols/apple/index.js';
import { queueStaleInventory } from '../../protocols/apple/inventory.js';
import { generateCa } from '../../protocols/pki/ca.js';
import { scepRoutes } from '../../protocols/apple/scep/routes.js';
import { createAppleService } from '../../protocols/apple/service.js';
import { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { createSimulatedDriver } from '../../protocols/simulated/driver.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, group, policyOf, quietLog, rollout } from '../reconcile/helpers.js';

const TOPIC = 'com.apple.mgmt.External.0b6f7f8e-1111-2222-3333-444455556666';
const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: mac-baseline }
spec:
  version: "1.0.0"
  platforms: [apple]
  settings:
    passcode: { required: true, minLength: 10, complexity: alphanumeric, maxFailedAttempts: 10 }
    restrictions: { allowCamera: false }
  compliance:
    - { name: disk-encrypted, encryptionRequired: true }
    - { name: macos-15, minimumOsVersion: { macos: "15.0" } }
    - { name: passcode, passcodeRequired: true, severity: warning }
`;

describe('Apple devices converge through a staged rollout', { timeout: 120_000 }, () => {
  let tdb: TestDatabase;
  let store: Store;
  let app: FastifyInstance;
  let rec: Reconciler;
  let drivers: Map<Platform, PlatformDriver>;
  const clock = new Clock();
  const devices: SimulatedAppleDevice[] = [];

  /** Devices with queued work connect (what an APNs push makes them do), then the reconciler hears their reports. */
  const settle = async () => {
    for (let round = 0; round < 5; round++) {
      const due = new Set(await store.commands.devicesWithDueCommands());
      if (due.size === 0) return;
      // An erased Mac's identity is revoked: it would only be refused.
      for (const d of devices) if (due.has(d.udid) && !d.erased) await d.connect();
      for (const d of devices) await rec.deviceReported(d.udid);
    }
  };

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    const ca = generateCa({ keyBits: 2048 });
    const log = { info: () => {}, warn: () => {}, error: () => {} };
    app = Fastify();
    await app.register(scepRoutes, {
      ca,
      challenges: { verify: (c) => store.challenges.verify(c, 'apple-scep'), consume: async (c) => !!(await store.challenges.consume(c, 'apple-scep')) },
      onIssued: (i) => recordScepIssue(store, i),
      renewalAllowed: async (fp) => !(await store.identities.get(fp))?.revokedAt,
    });
    const service = createAppleService({ store, log, renderCommand: (c) => renderAppleCommand(c, { secret: () => undefined }), onResult: (c, r) => recordAppleResult(store, c, r), onDeclarativeStatus: (u, r) => recordDeclarationStatus(store, u, r) });
    await app.register(appleRoutes, { service, auth: { modes: ['signature'], ca }, log });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    // Fixed UDIDs: which of them fall in the 50 % ring is known (sticky buckets), so the test cannot flip.
    for (let i = 0; i < 6; i++) {
      const d = new SimulatedAppleDevice({ server: url, udid: `00008103-00000000000${i}`, serialNumber: `C02SIM${i}`, topic: TOPIC, challenge: await store.challenges.issue('apple-scep', 600_000) });
      await d.enroll();
      devices.push(d);
    }
    drivers = new Map(PLATFORMS.map((p) => [p, p === 'apple' ? createAppleDriver() : createSimulatedDriver(p)]));
    rec = new Reconciler({ store, drivers, log: quietLog, now: clock.now });
    await rec.load();
  });
  afterAll(async () => {
    await app?.close();
    await tdb?.cleanup();
  });

  it('enrolled every device through SCEP with a one-time challenge', async () => {
    for (const d of devices) {
      expect((await store.devices.getEnrollment(d.udid))!.status).toBe('enrolled');
      expect((await store.identities.get(d.certSha256))!.deviceId).toBe(d.udid);
    }
  });

  it('installs the profile on half, waits for a person, then on every device; reads it back from ProfileList', async () => {
    const set = policyOf({ 'b.yaml': bundleYaml, 'g.yaml': group('macs', '{ matchLabels: { muster.dev/platform: apple } }'), 'r.yaml': rollout('mac', 'mac-baseline', ['macs'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') });
    await rec.applyPolicy(set, 'c1');
    const uuid = profileUuid(set.hashes.get('mac-baseline')!);
    await rec.tick();
    await settle();
    await rec.tick();
    const holders = devices.filter((d) => d.profiles.get('dev.muster.bundle.mac-baseline')?.uuid === uuid);
    const ring = devices.filter((d) => bucketOf('mac', d.udid) < 5000);
    expect(ring.length).toBeGreaterThan(0);
    expect(ring.length).toBeLessThan(devices.length);
    expect(holders.map((d) => d.udid)).toEqual(ring.map((d) => d.udid));
    expect(rec.rolloutStatuses()[0]).toMatchObject({ phase: 'Paused', weight: 50 });
    expect(holders.every((d) => d.seen.includes('ProfileList'))).toBe(true);
    await rec.act('mac', 'promote', 'alice');
    await settle();
    await rec.tick();
    await rec.tick();
    expect(devices.every((d) => d.profiles.get('dev.muster.bundle.mac-baseline')?.uuid === uuid)).toBe(true);
    const s = rec.rolloutStatuses()[0]!;
    expect(s.phase).toBe('Healthy');
    expect(s.counts['canary.Synced']).toBe(devices.length);
  });

  it('keeps a device that renewed its certificate through SCEP bound, without a new Authenticate', async () => {
    const d = devices[4]!;
    const old = d.certSha256;
    await d.renew();
    expect(d.certSha256).not.toBe(old);
    expect((await store.identities.get(d.certSha256))!.deviceId).toBe(d.udid);
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: d.udid, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } } });
    expect(await d.connect()).toBe(1);
    const audit = (await store.audit.list({ subject: `certificate/${d.certSha256}` }))[0]!;
    expect(audit.details).toMatchObject({ type: 'RenewalReq', renewalOf: old, device: d.udid });
  });

  it('puts back a profile removed behind its back (drift), seen through ProfileList', async () => {
    const victim = devices[0]!;
    victim.profiles.clear();
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: victim.udid, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } } });
    await settle();
    expect(victim.profiles.has('dev.muster.bundle.mac-baseline')).toBe(true);
  });

  it('keeps an inventory per device and judges the bundle compliance rules from SecurityInfo', async () => {
    const d = devices[1]!;
    const reported = new Map((await store.devices.reported(d.udid)).map((r) => [r.kind, r.state]));
    expect(reported.get('apple.installedApplications')).toMatchObject({ count: 2, apps: [{ identifier: 'com.apple.Safari', name: 'Safari', shortVersion: '18.1' }, { identifier: 'com.microsoft.Word' }] });
    expect((await store.devices.get(d.udid))!.osVersion).toBe('15.1');
    expect(await deviceCompliance(store, d.udid)).toMatchObject({ state: 'compliant', checks: expect.arrayContaining([expect.objectContaining({ rule: 'disk-encrypted', status: 'pass' }), expect.objectContaining({ rule: 'macos-15', status: 'pass', detail: '15.1 ≥ 15.0' })]) });

    // The user turns FileVault off; a refresh shows it.
    d.encrypted = false;
    const r = await runAdminAction(store, drivers, d.udid, parseAdminAction('refresh', d.udid), 'token:alice');
    expect(r.commands).toHaveLength(4);
    await settle();
    const c = (await deviceCompliance(store, d.udid))!;
    expect(c.state).toBe('noncompliant');
    expect(c.checks.find((x) => x.rule === 'disk-encrypted')).toMatchObject({ status: 'fail', bundle: 'mac-baseline', severity: 'critical' });
    expect(c.checks.find((x) => x.rule === 'passcode')).toMatchObject({ status: 'pass', severity: 'warning' });
  });

  it('asks again for inventory only where it is older than the interval, once per interval', async () => {
    const day = 86_400_000;
    // Everything was reported moments ago: nothing is stale yet.
    expect(await queueStaleInventory(store, { maxAgeMs: day })).toEqual([]);
    const later = new Date(Date.now() + 2 * day);
    const asked = await queueStaleInventory(store, { maxAgeMs: day, now: later });
    expect(asked.sort()).toEqual(devices.map((d) => d.udid).sort());
    expect(await queueStaleInventory(store, { maxAgeMs: day, now: later })).toEqual([]); // queued once per window
    await settle();
    expect(devices.every((d) => d.seen.filter((t) => t === 'InstalledApplicationList').length >= 2)).toBe(true);
  });

  it('locks a Mac with a PIN only the admin gets back, erases only when confirmed, and audits both', async () => {
    const d = devices[2]!;
    const lock = await runAdminAction(store, drivers, d.udid, parseAdminAction('lock', d.udid, { message: 'Please return to IT' }), 'token:alice');
    expect(lock.secrets?.pin).toMatch(/^\d{6}$/);
    await settle();
    expect(d.locked).toEqual({ pin: lock.secrets!.pin, message: 'Please return to IT' });

    expect(() => parseAdminAction('wipe', d.udid, {})).toThrow(AdminActionError);
    expect(() => parseAdminAction('wipe', d.udid, { confirm: devices[3]!.udid })).toThrow(/cannot be undone/);
    await expect(runAdminAction(store, drivers, d.udid, parseAdminAction('reset-passcode', d.udid), 'token:alice')).rejects.toThrow(/cannot reset-passcode.*lock, wipe, restart, refresh/);
    await expect(runAdminAction(store, drivers, 'no-such-device', parseAdminAction('restart', 'x'), 'token:alice')).rejects.toMatchObject({ status: 404 });
    expect(d.erased).toBe(false);
    const wipe = await runAdminAction(store, drivers, d.udid, parseAdminAction('wipe', d.udid, { confirm: d.udid, pin: '246810' }), 'token:alice');
    await settle();
    expect(d.erased).toBe(true);
    expect(wipe.secrets).toEqual({ pin: '246810' });
    // The erase is confirmed: the device is out of management and its certificate no longer works.
    expect((await store.devices.getEnrollment(d.udid))!.status).toBe('unenrolled');
    await expect(d.connect()).rejects.toThrow(/403/);

    const audit = await store.audit.list({ subject: `device/${d.udid}` });
    const actions = audit.filter((a) => a.action === 'device.lock' || a.action === 'device.wipe');
    expect(actions.map((a) => [a.action, a.actor])).toEqual([['device.lock', 'token:alice'], ['device.wipe', 'token:alice']]);
    expect(audit.map((a) => a.action)).toContain('device.wiped');
    expect(JSON.stringify(actions)).not.toContain(lock.secrets!.pin);
    expect(JSON.stringify(actions)).not.toContain('246810');
    expect(actions[0]!.details).toMatchObject({ commands: lock.commands, message: 'Please return to IT', secrets: ['pin'] });
  });

  it('requires an OS version by a deadline through a declaration, and sees it applied in the status report', async () => {
    const updates = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: mac-updates }
spec:
  version: "1.0.0"
  platforms: [apple]
  settings:
    osUpdates: { minimumVersion: { macos: "15.2", ios: "18.2" }, deadline: "2026-12-15T17:00:00Z" }
`;
    const set = policyOf({
      'b.yaml': bundleYaml,
      'u.yaml': updates,
      'g.yaml': group('macs', '{ matchLabels: { muster.dev/platform: apple } }'),
      'r.yaml': rollout('mac', 'mac-baseline', ['macs'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100'),
      'r2.yaml': rollout('mac-updates', 'mac-updates', ['macs'], '    - setWeight: 100'),
    });
    await rec.applyPolicy(set, 'c2');
    await rec.tick();
    await settle();
    await rec.tick();
    const managed = devices.filter((d) => !d.erased);
    for (const d of managed) {
      const decl = d.declarations.get('dev.muster.bundle.mac-updates.softwareupdate');
      expect(decl).toMatchObject({ Type: 'com.apple.configuration.softwareupdate.enforcement.specific', Payload: { TargetOSVersion: '15.2', TargetLocalDateTime: '2026-12-15T17:00:00' } });
      // The activation turns on every configuration, the status subscription included.
      expect(d.declarations.get('dev.muster.activation')!.Payload.StandardConfigurations).toEqual(['dev.muster.bundle.mac-updates.softwareupdate', 'dev.muster.status-subscriptions']);
      expect(d.osVersion).toBe('15.2');
      expect((await store.devices.get(d.udid))!.osVersion).toBe('15.2');
      // Profiles are untouched by the declaration's arrival.
      expect(d.profiles.has('dev.muster.bundle.mac-baseline')).toBe(true);
    }
    const s = rec.rolloutStatuses().find((r) => r.name === 'mac-updates')!;
    expect(s.counts['canary.Synced']).toBe(managed.length);
  });
});
