// Enrollment tokens through the real client and the local AMAPI server: bound
// to a policy that exists, one-time or not, a duration, labels for the device;
// the QR code is AMAPI's qrCode JSON as is (terminal text and PNG); and the
// policy a new device of a group should start on, from the rollouts.
import QRCode from 'qrcode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RolloutRevision } from '../../controller/store/index.js';
import { Amapi } from '../../protocols/android/client.js';
import { BASE_POLICY_ID, compileAndroidPolicy, policyIdFor } from '../../protocols/android/compile.js';
import { configureNotifications, createEnrollmentToken, policyForNewDevice, qrForTerminal, qrToPng } from '../../protocols/android/enroll.js';
import { createAndroidMdm } from '../../protocols/android/index.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';
import type { Store } from '../../controller/store/index.js';
import { group, policyOf, rollout } from '../reconcile/helpers.js';

const bundle = (name: string, version: string, setting: string) => `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: ${name} }
spec:
  version: "${version}"
  settings:
    restrictions: { ${setting} }
`;

describe('enrollment tokens', () => {
  const sim = new AmapiSimulator();
  let amapi: Amapi;
  let enterprise: string;
  beforeAll(async () => {
    await sim.start();
    enterprise = sim.createEnterprise();
    amapi = new Amapi({ keyJson: sim.serviceAccountKey(), rootUrl: sim.url });
  });
  afterAll(() => sim.stop());

  it('creates the base policy first and binds the token to it, one-time, for the duration asked, with the labels', async () => {
    const t = await createEnrollmentToken(amapi, { enterprise, oneTime: true, durationMs: 2 * 3_600_000, labels: { site: 'hq' } });
    expect(t.policyId).toBe(BASE_POLICY_ID);
    expect(sim.policies.get(`${enterprise}/policies/${BASE_POLICY_ID}`)?.policy).toEqual(compileAndroidPolicy([]));
    const created = sim.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/enrollmentTokens')).at(-1)!.body;
    expect(created).toEqual({ policyName: `${enterprise}/policies/${BASE_POLICY_ID}`, duration: '7200s', oneTimeOnly: true, additionalData: '{"labels":{"site":"hq"}}' });
    expect(Date.parse(t.expires!) - Date.now()).toBeGreaterThan(7_100_000);
    expect(t.link).toBe(`https://enterprise.google.com/android/enroll?et=${t.value}`);
    // One device, then no more.
    sim.enroll(t.value);
    expect(() => sim.enroll(t.value)).toThrow(/one-time/);
    await expect(createEnrollmentToken(amapi, { enterprise, durationMs: 30_000 })).rejects.toThrow(/at least one minute/);
    await expect(createEnrollmentToken(amapi, { enterprise, labels: { k: 'v'.repeat(63) }, durationMs: 60_000, policy: { policyId: 'm-x', policy: { cameraAccess: '${secret:NOPE}' } } })).rejects.toThrow(/secret NOPE not set/);
  });

  it('encodes exactly the qrCode JSON AMAPI returned, for a terminal and as a PNG', async () => {
    const t = await createEnrollmentToken(amapi, { enterprise });
    const qr = JSON.parse(t.qrCode) as Record<string, unknown>;
    expect(qr).toMatchObject({
      'android.app.extra.PROVISIONING_DEVICE_ADMIN_COMPONENT_NAME': 'com.google.android.apps.work.clouddpc/.receivers.CloudDeviceAdminReceiver',
      'android.app.extra.PROVISIONING_ADMIN_EXTRAS_BUNDLE': { 'com.google.android.apps.work.clouddpc.EXTRA_ENROLLMENT_TOKEN': t.value },
    });
    const code = QRCode.create(t.qrCode, { errorCorrectionLevel: 'M' });
    expect(code.segments.map((s) => (s as unknown as { data: Uint8Array }).data).map((d) => Buffer.from(d).toString('utf8')).join('')).toBe(t.qrCode);
    const text = await qrForTerminal(t.qrCode);
    expect(text.split('\n').length).toBeGreaterThan(20);
    expect(text).toMatch(/[▀▄█]/);
    const png = await qrToPng(t.qrCode);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  });

  it('points the enterprise notifications at a topic with an updateMask, and refuses a malformed topic', async () => {
    await configureNotifications(amapi, { enterprise, pubsubTopic: 'projects/p/topics/amapi' });
    const patch = sim.requests.filter((r) => r.method === 'PATCH' && r.path === `/v1/${enterprise}`).at(-1)!;
    expect(patch.query.updateMask).toBe('pubsubTopic,enabledNotificationTypes');
    expect(sim.enterprises.get(enterprise)).toMatchObject({ pubsubTopic: 'projects/p/topics/amapi', enabledNotificationTypes: ['ENROLLMENT', 'STATUS_REPORT', 'COMMAND', 'USAGE_LOGS'] });
    await expect(configureNotifications(amapi, { enterprise, pubsubTopic: 'amapi' })).rejects.toThrow(/projects\/PROJECT\/topics\/TOPIC/);
  });

  it('refuses a configuration that would let any Google-signed token in, or names no enterprise', () => {
    const store = {} as Store;
    const base = { keyJson: sim.serviceAccountKey(), rootUrl: sim.url, secret: () => undefined, log: { info() {}, warn() {} } };
    expect(() => createAndroidMdm(store, { ...base, enterprise: 'LC123', pubsub: { audience: 'https://m/android/pubsub', serviceAccountEmail: 'a@b' } })).toThrow(/enterprises\/LC0…/);
    expect(() => createAndroidMdm(store, { ...base, enterprise, pubsub: { audience: 'https://m/android/pubsub', serviceAccountEmail: '' } })).toThrow(/push service account/);
    expect(() => createAndroidMdm(store, { ...base, enterprise, pubsub: { audience: '', serviceAccountEmail: 'a@b' } })).toThrow(/audience/);
  });
});

describe('the policy a new device starts on', () => {
  const set = policyOf({
    'a.yaml': bundle('base', '1.0.0', 'allowCamera: false'),
    'b.yaml': bundle('kiosk', '2.0.0', 'allowScreenCapture: false'),
    'c.yaml': bundle('mac-only', '1.0.0', 'allowBluetooth: false').replace('spec:\n', 'spec:\n  platforms: [apple]\n'),
    'g1.yaml': group('everyone', '{}'),
    'g2.yaml': group('kiosks', '{ matchLabels: { role: kiosk } }'),
    'r1.yaml': rollout('base', 'base', ['everyone'], '    - setWeight: 100'),
    'r2.yaml': rollout('kiosk', 'kiosk', ['kiosks'], '    - setWeight: 20\n    - pause: {}\n    - setWeight: 100'),
    'r3.yaml': rollout('mac', 'mac-only', ['everyone'], '    - setWeight: 100'),
  });
  const h = (n: string) => set.hashes.get(n)!;
  const row = (name: string, o: Partial<RolloutRevision>): RolloutRevision =>
    ({ name, revision: 1, stableHash: null, canaryHash: h(name === 'mac' ? 'mac-only' : name), currentStep: 0, weight: 0, phase: 'Progressing', paused: false, aborted: false, stepStartedAt: new Date(), conditions: [], observedGeneration: 1, message: '', deleted: false, counts: {}, ...o }) as RolloutRevision;

  it('holds the stable bundle of every rollout whose groups select the labels, the canary once at 100 %, and nothing for other platforms', () => {
    const rollouts = [row('base', { weight: 100, phase: 'Healthy' }), row('kiosk', { weight: 20, stableHash: null }), row('mac', { weight: 100 })];
    // Kiosk at 20 % with no stable yet: a new kiosk device starts with the base bundle only.
    expect(policyForNewDevice(set, rollouts, { role: 'kiosk' })).toMatchObject({ policyId: policyIdFor([h('base')]), bundles: ['base'] });
    const later = [rollouts[0]!, row('kiosk', { weight: 100, phase: 'Healthy' }), rollouts[2]!];
    expect(policyForNewDevice(set, later, { role: 'kiosk' })).toMatchObject({ policyId: policyIdFor([h('base'), h('kiosk')]), bundles: ['base', 'kiosk'] });
    expect(policyForNewDevice(set, later, {})).toMatchObject({ policyId: policyIdFor([h('base')]) });
    // An aborted rollout gives its stable bundle.
    const aborted = [rollouts[0]!, row('kiosk', { weight: 100, aborted: true, stableHash: null })];
    expect(policyForNewDevice(set, aborted, { role: 'kiosk' }).bundles).toEqual(['base']);
    expect(policyForNewDevice(set, [], { role: 'kiosk' })).toMatchObject({ policyId: BASE_POLICY_ID, bundles: [] });
  });
});
