// Apple end to end in one process: a server with the SCEP CA and the MDM
// endpoints on a real socket, the reconciler with the Apple driver, and
// simulated Macs that enroll through SCEP and answer over HTTP with signed
// plists. A bundle rolls out in stages and lands as a profile on each device.
import { randomUUID } from 'node:crypto';
import { bucketOf } from '../../controller/rollout/bucket.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLATFORMS } from '../../controller/policy/types.js';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { createAppleDriver, recordAppleResult, renderAppleCommand } from '../../protocols/apple/driver.js';
import { profileUuid } from '../../protocols/apple/profiles.js';
import { appleRoutes } from '../../protocols/apple/routes.js';
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
`;

describe('Apple devices converge through a staged rollout', { timeout: 120_000 }, () => {
  let tdb: TestDatabase;
  let store: Store;
  let app: FastifyInstance;
  let rec: Reconciler;
  const clock = new Clock();
  const devices: SimulatedAppleDevice[] = [];

  /** Devices with queued work connect (what an APNs push makes them do), then the reconciler hears their reports. */
  const settle = async () => {
    for (let round = 0; round < 5; round++) {
      const due = new Set(await store.commands.devicesWithDueCommands());
      if (due.size === 0) return;
      for (const d of devices) if (due.has(d.udid)) await d.connect();
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
      onIssued: async (i) => void (await store.identities.add({ certSha256: i.fingerprint, serialNumber: i.serialNumber, subject: i.csrSubject, notAfter: i.notAfter })),
    });
    const service = createAppleService({ store, log, renderCommand: (c) => renderAppleCommand(c, { secret: () => undefined }), onResult: (c, r) => recordAppleResult(store, c, r) });
    await app.register(appleRoutes, { service, auth: { modes: ['signature'], ca }, log });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    // Fixed UDIDs: which of them fall in the 50 % ring is known (sticky buckets), so the test cannot flip.
    for (let i = 0; i < 6; i++) {
      const d = new SimulatedAppleDevice({ server: url, udid: `00008103-00000000000${i}`, serialNumber: `C02SIM${i}`, topic: TOPIC, challenge: await store.challenges.issue('apple-scep', 600_000) });
      await d.enroll();
      devices.push(d);
    }
    const drivers = new Map(PLATFORMS.map((p) => [p, p === 'apple' ? createAppleDriver() : createSimulatedDriver(p)]));
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

  it('puts back a profile removed behind its back (drift), seen through ProfileList', async () => {
    const victim = devices[0]!;
    victim.profiles.clear();
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: victim.udid, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } } });
    await settle();
    expect(victim.profiles.has('dev.muster.bundle.mac-baseline')).toBe(true);
  });
});
