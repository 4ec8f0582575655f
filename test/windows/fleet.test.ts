// Windows end to end in one process: the OMA-DM endpoint on a real HTTPS
// socket that asks for client certificates, the reconciler with the Windows
// driver, and simulated PCs that hold certificates from Muster's CA and run
// OMA-DM sessions. A bundle rolls out in stages, lands as CSP nodes, is read
// back, fails visibly where a node is read-only, repairs drift, and is
// deleted from devices when the rollout goes away.
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAdminAction, runAdminAction } from '../../controller/actions/admin.js';
import { PLATFORMS, type Platform } from '../../controller/policy/types.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import { bucketOf } from '../../controller/rollout/bucket.js';
import type { Store } from '../../controller/store/index.js';
import { generateCa } from '../../protocols/pki/ca.js';
import { createSimulatedDriver } from '../../protocols/simulated/driver.js';
import { createWindowsDriver, recordWindowsResults, renderWindowsCommand, windowsInventoryOnSession } from '../../protocols/windows/driver.js';
import { createWindowsMdmService } from '../../protocols/windows/mdm-service.js';
import { MDM_PATH, windowsMdmRoutes } from '../../protocols/windows/mdm-routes.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { parseXml, textAt } from '../../protocols/windows/xml.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, group, policyOf, quietLog, rollout } from '../reconcile/helpers.js';
import { enrollDevice, quiet, serverCertificate } from './session-support.js';

const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: win-baseline }
spec:
  version: "1.0.0"
  platforms: [windows]
  settings:
    passcode: { required: true, minLength: 10, complexity: alphanumeric }
    restrictions: { allowCamera: false }
    encryption: { required: true }
    wifi:
      - { ssid: "Corp WiFi", security: wpa2-personal, password: "\${secret:CORP_PSK}" }
  windows:
    settings:
      - { omaUri: ./Device/Vendor/MSFT/Policy/Config/Defender/AllowRealtimeMonitoring, format: int, value: 1 }
    poll: { then: 4h }
  compliance:
    - { name: bitlocker, encryptionRequired: true }
`;
const CAMERA = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera';
const WIFI = './Vendor/MSFT/WiFi/Profile/Corp%20WiFi/WlanXml';
const POLL = './Vendor/MSFT/DMClient/Provider/Muster/Poll/IntervalForRemainingScheduledRetries';
const DL = './Device/Vendor/MSFT/Policy/Config/DeviceLock';
const IDS = [0, 2, 3, 5, 8].map((i) => `5C1A7E2B90D84F3A8E6B${String(i).padStart(12, '0')}`);

describe('Windows PCs converge through a staged rollout', { timeout: 120_000 }, () => {
  let tdb: TestDatabase;
  let store: Store;
  let app: FastifyInstance;
  let rec: Reconciler;
  let drivers: Map<Platform, PlatformDriver>;
  const clock = new Clock();
  const devices: SimulatedWindowsDevice[] = [];
  /** The PC whose camera policy is read-only (a policy it cannot take): its node fails with 405. */
  let stubborn: SimulatedWindowsDevice;

  /** PCs with queued work start a session (what their poll does), then the reconciler hears their reports. */
  const settle = async () => {
    for (let round = 0; round < 6; round++) {
      const due = new Set(await store.commands.devicesWithDueCommands());
      if (due.size === 0) return;
      await Promise.all(devices.filter((d) => due.has(d.deviceId) && !d.unenrolled && !d.wiped).map((d) => d.sync()));
      for (const d of devices) await rec.deviceReported(d.deviceId);
    }
  };
  const syncOf = async (id: string) => (await store.assignments.forDevice(id)).map((a) => a.sync);

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    const ca = generateCa({ keyBits: 2048 });
    const tls = serverCertificate();
    app = Fastify({ https: { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false, ca: [ca.certPem] } });
    const service = createWindowsMdmService({
      store,
      log: quiet,
      serverUrl: 'https://127.0.0.1/ManagementServer/MDM.svc',
      renderCommand: (c) => renderWindowsCommand(c, { secret: (n) => (n === 'CORP_PSK' ? 'correct horse & battery' : undefined) }),
      onResults: (id, done, tx) => recordWindowsResults(store, id, done, tx),
      onSessionStart: windowsInventoryOnSession(store),
    });
    await app.register(windowsMdmRoutes, { service, auth: { modes: ['mtls'], ca }, log: quiet });
    const url = `${await app.listen({ port: 0, host: '127.0.0.1' })}${MDM_PATH}`;
    for (const [i, id] of IDS.entries()) {
      const e = await enrollDevice(store, ca, id);
      const d = new SimulatedWindowsDevice({ managementUrl: url, deviceId: id, certPem: e.certPem, keyPem: e.keyPem, caPem: tls.cert, cmdIds: i % 2 ? 'uuid' : 'numeric', maxMsgSize: 16_384, ...(i === 3 ? { readOnly: [CAMERA] } : {}) });
      devices.push(d);
    }
    stubborn = devices[3]!;
    // The first session after enrollment: attributes and inventory.
    for (const d of devices) await d.sync();
    drivers = new Map(PLATFORMS.map((p) => [p, p === 'windows' ? createWindowsDriver() : createSimulatedDriver(p)]));
    rec = new Reconciler({ store, drivers, log: quietLog, now: clock.now });
    await rec.load();
    await settle();
  });
  afterAll(async () => {
    for (const d of devices) d.stopPolling();
    await app?.close();
    await tdb?.cleanup();
  });

  it('learned what each PC is from its first sessions', async () => {
    for (const d of devices) {
      const row = (await store.devices.get(d.deviceId))!;
      expect(row).toMatchObject({ platform: 'windows', model: 'Surface Laptop 5', osVersion: '10.0.22631.4317' });
      expect(row.attributes).toMatchObject({ manufacturer: 'Contoso', 'os-edition': 'Windows 11 Enterprise', 'login-status': 'user' });
      expect(row.serialNumber).toMatch(/^SN[0-9A-F]{10}$/);
    }
  });

  it('installs the bundle on the 50 % ring, waits for a person, then on every PC; reads every node back', async () => {
    const set = policyOf({ 'b.yaml': bundleYaml, 'g.yaml': group('pcs', '{ matchLabels: { muster.dev/platform: windows } }'), 'r.yaml': rollout('win', 'win-baseline', ['pcs'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') });
    await rec.applyPolicy(set, 'c1');
    await rec.tick();
    await settle();
    await rec.tick();
    const ring = devices.filter((d) => bucketOf('win', d.deviceId) < 5000);
    expect(ring.length).toBeGreaterThan(0);
    expect(ring.length).toBeLessThan(devices.length);
    expect(ring).not.toContain(stubborn);
    const holders = devices.filter((d) => d.tree.get(CAMERA)?.value === '0');
    expect(holders.map((d) => d.deviceId)).toEqual(ring.map((d) => d.deviceId));
    expect(rec.rolloutStatuses()[0]).toMatchObject({ phase: 'Paused', weight: 50 });
    for (const d of ring) {
      expect(d.tree.get(`${DL}/DevicePasswordEnabled`)?.value).toBe('0');
      expect(d.tree.get(`${DL}/MinDevicePasswordLength`)?.value).toBe('10');
      expect(d.tree.get('./Device/Vendor/MSFT/Policy/Config/Defender/AllowRealtimeMonitoring')?.value).toBe('1');
      expect(d.tree.get('./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption')?.value).toBe('1');
      // The poll node existed since enrollment and now holds the bundle's interval.
      expect(d.tree.get(POLL)?.value).toBe('240');
      // The Wi-Fi profile arrived as a document, the secret resolved inside it.
      const profile = parseXml(d.tree.get(WIFI)!.value);
      expect(textAt(profile, 'MSM', 'security', 'sharedKey', 'keyMaterial')).toBe('correct horse & battery');
      // What was sent was read back: Policy nodes from Policy/Result.
      expect(d.sessions.flatMap((s) => s.commands)).toContain('Get ./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera');
      expect(await syncOf(d.deviceId)).toEqual(['Synced']);
    }
    for (const d of devices.filter((x) => !ring.includes(x))) expect(d.tree.get(CAMERA)).toBeUndefined();

    await rec.act('win', 'promote', 'alice');
    await settle();
    await rec.tick();
    await rec.tick();
    expect(devices.every((d) => d.tree.get(`${DL}/DevicePasswordEnabled`)?.value === '0')).toBe(true);
    const s = rec.rolloutStatuses()[0]!;
    expect(s.weight).toBe(100);
    expect(s.counts['canary.Synced']).toBe(devices.length - 1);
    expect(s.counts['canary.Failed']).toBe(1);
  });

  it('shows the PC whose camera node is read-only (405) as Failed, naming the node', async () => {
    expect(await syncOf(stubborn.deviceId)).toEqual(['Failed']);
    const [a] = await store.assignments.forDevice(stubborn.deviceId);
    expect(a!.syncDetail).toContain(CAMERA);
    expect(a!.syncDetail).toContain('405');
    // Everything else still landed on it.
    expect(stubborn.tree.get(`${DL}/MinDevicePasswordLength`)?.value).toBe('10');
  });

  it('judges compliance from what the PCs report: BitLocker on after the policy', async () => {
    const { deviceCompliance } = await import('../../controller/compliance/device.js');
    await runAdminAction(store, drivers, devices[0]!.deviceId, parseAdminAction('refresh', devices[0]!.deviceId), 'token:alice');
    await settle();
    expect(await deviceCompliance(store, devices[0]!.deviceId)).toMatchObject({ state: 'compliant', checks: [expect.objectContaining({ rule: 'bitlocker', status: 'pass' })] });
  });

  it('puts back a Wi-Fi profile removed behind Muster\'s back, seen when a refresh reads it back', async () => {
    const victim = devices[1]!;
    victim.tree.delete('./Vendor/MSFT/WiFi/Profile/Corp%20WiFi');
    expect(victim.tree.get(WIFI)).toBeUndefined();
    await runAdminAction(store, drivers, victim.deviceId, parseAdminAction('refresh', victim.deviceId), 'token:alice');
    await settle();
    expect(victim.tree.get(WIFI)).toBeDefined();
    expect(await syncOf(victim.deviceId)).toEqual(['Synced']);
  });

  it('locks a PC through RemoteLock and audits it', async () => {
    const d = devices[2]!;
    const r = await runAdminAction(store, drivers, d.deviceId, parseAdminAction('lock', d.deviceId), 'token:alice');
    await settle();
    expect(d.locked).toBe(true);
    expect((await store.commands.get(r.commands[0]!))!.state).toBe('completed');
    const audit = await store.audit.list({ subject: `device/${d.deviceId}` });
    expect(audit.map((x) => [x.action, x.actor])).toContainEqual(['device.lock', 'token:alice']);
  });

  it('wipes a PC through RemoteWipe, once confirmed, and audits it', async () => {
    const d = devices[1]!;
    expect(() => parseAdminAction('wipe', d.deviceId, {})).toThrow(/confirm/);
    const r = await runAdminAction(store, drivers, d.deviceId, parseAdminAction('wipe', d.deviceId, { confirm: d.deviceId }), 'token:alice');
    await settle();
    expect(d.wiped).toBe(true);
    expect((await store.commands.get(r.commands[0]!))!.state).toBe('completed');
    expect(d.received.some((x) => x.includes('<Exec>') && x.includes('RemoteWipe/doWipe'))).toBe(true);
    const audit = await store.audit.list({ subject: `device/${d.deviceId}` });
    expect(audit.map((x) => [x.action, x.actor])).toContainEqual(['device.wipe', 'token:alice']);
    // The wipe is confirmed: the PC is out of management and its certificate no longer works.
    expect(audit.map((x) => [x.action, x.actor])).toContainEqual(['device.wiped', `device:${d.deviceId}`]);
    expect((await store.devices.getEnrollment(d.deviceId))!.status).toBe('unenrolled');
    await expect(d.sync()).rejects.toMatchObject({ status: 403 });
  });

  it('deletes the bundle\'s nodes from every PC when the rollout is removed; poll values are released, not deleted', async () => {
    const set = policyOf({ 'b.yaml': bundleYaml, 'g.yaml': group('pcs', '{ matchLabels: { muster.dev/platform: windows } }') });
    await rec.applyPolicy(set, 'c2');
    await rec.tick();
    await settle();
    await rec.tick();
    for (const d of devices.filter((x) => !x.wiped)) {
      expect(d.tree.get(CAMERA)).toBeUndefined();
      expect(d.tree.get(`${DL}/DevicePasswordEnabled`)).toBeUndefined();
      expect(d.tree.get(WIFI)).toBeUndefined();
      expect(d.tree.get('./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption')).toBeUndefined();
      expect(d.tree.get(POLL)?.value).toBe('240');
      expect(await store.assignments.forDevice(d.deviceId)).toEqual([]);
      expect(await store.commands.unfinishedCount(d.deviceId)).toBe(0);
    }
  });

  it('unenrolls a PC whose user removes the work account, and refuses its certificate afterwards', async () => {
    const d = devices[4]!;
    await d.unenroll();
    expect((await store.devices.getEnrollment(d.deviceId))!.status).toBe('unenrolled');
    await expect(d.sync()).rejects.toMatchObject({ status: 403 });
  });

  it('keeps polling on the schedule the bundle set (scaled for the test)', async () => {
    const d = devices[0]!;
    const before = d.sessions.length;
    d.startPolling({ minuteMs: 0.05 }); // 240 minutes → 12 ms
    const end = Date.now() + 5_000;
    while (d.sessions.length < before + 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    d.stopPolling();
    await d.idle();
    expect(d.sessions.length).toBeGreaterThanOrEqual(before + 2);
    expect(d.lastError).toBeUndefined();
  });
});
