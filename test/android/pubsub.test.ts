// POST /android/pubsub against pushes from the Pub/Sub stand-in, over real
// HTTP in the real envelope: the OIDC token is checked (issuer, audience,
// service account, verified email, signature, algorithm, expiry); unreadable
// bodies are acknowledged; each notification type lands in the store; a
// redelivery — to this process or any other — changes nothing; a store
// failure answers 503 and Pub/Sub's redelivery then stores it.
import { generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POSTURE } from '../../controller/compliance/evaluate.js';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import type { Device } from '../../protocols/android/client.js';
import { POLICY_ITEM } from '../../protocols/android/driver.js';
import { ANDROID_STATUS, ANDROID_USAGE_LOGS, itemsOf, recordDeviceStatus } from '../../protocols/android/status.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { androidRig, AUDIENCE, type AndroidRig } from './helpers.js';

const reported = async (store: Store, id: string) => new Map((await store.devices.reported(id)).map((r) => [r.kind, r.state]));

describe.each(backends)('the Pub/Sub push endpoint (%s)', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let rig: AndroidRig;
  let token: { value: string; name: string };

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    rig = await androidRig(store);
    await rig.sim.settle();
    const t = await rig.mdm.enrollmentToken({ labels: { team: 'warehouse', 'muster.dev/platform': 'windows', 'bad key!': 'x' } });
    token = { value: t.value, name: t.name };
  });
  afterAll(async () => {
    await rig?.close();
    await tdb?.cleanup();
  });

  it('acknowledged the test notification Google sends when the topic is set', () => {
    expect(rig.sim.pusher.answers.filter((a) => a.type === 'test').map((a) => a.status)).toEqual([204]);
    expect(rig.logs.some((l) => l.msg === 'Pub/Sub test notification received')).toBe(true);
  });

  it('refuses pushes without a valid token for this endpoint and account: 401 without one, 403 for a bad one', async () => {
    const p = rig.sim.pusher;
    const body = p.envelope('STATUS_REPORT', { name: `${rig.enterprise}/devices/x1` }).body;
    expect(await p.pushRaw(body, { token: null })).toBe(401);
    expect(await p.pushRaw(body, { token: 'not-a-jwt' })).toBe(403);
    expect(await p.pushRaw(body, { token: await p.sign({}, { audience: 'https://elsewhere.example/android/pubsub' }) })).toBe(403);
    expect(await p.pushRaw(body, { token: await p.sign({}, { issuer: 'https://evil.example.com' }) })).toBe(403);
    expect(await p.pushRaw(body, { token: await p.sign({ email: 'someone@else.iam.gserviceaccount.com' }) })).toBe(403);
    expect(await p.pushRaw(body, { token: await p.sign({ email_verified: false }) })).toBe(403);
    expect(await p.pushRaw(body, { token: await p.sign({}, { expiresInS: -3600 }) })).toBe(403);
    const other = await generateKeyPair('RS256');
    expect(await p.pushRaw(body, { token: await p.sign({}, { key: other.privateKey }) })).toBe(403);
    // Nothing refused was read.
    expect(await store.devices.get('x1')).toBeUndefined();
    // Both spellings of Google's issuer are accepted.
    expect(await p.pushRaw(body, { token: await p.sign({}, { issuer: 'accounts.google.com', audience: AUDIENCE }) })).toBe(204);
    expect((await store.devices.get('x1'))?.platform).toBe('android');
  });

  it('acknowledges bodies that can never be read (redelivering them would not help) and stores nothing', async () => {
    const p = rig.sim.pusher;
    const before = rig.mdm.pubsubStats.unreadable;
    expect(await p.pushRaw('{not json')).toBe(204);
    expect(await p.pushRaw('{"subscription":"s"}')).toBe(204);
    expect(await p.pushRaw(JSON.stringify({ message: { messageId: '1', data: '***', attributes: { notificationType: 'STATUS_REPORT' } } }))).toBe(204);
    expect(await p.pushRaw(JSON.stringify({ message: { messageId: '2', data: Buffer.from('{"name": ').toString('base64'), attributes: { notificationType: 'ENROLLMENT' } } }))).toBe(204);
    expect(await p.pushRaw(JSON.stringify({ message: { messageId: '3', data: Buffer.from('[1]').toString('base64'), attributes: { notificationType: 'STATUS_REPORT' } } }), { contentType: 'text/plain' })).toBe(204);
    expect(rig.mdm.pubsubStats.unreadable - before).toBe(5);
    expect(rig.logs.filter((l) => /unreadable body|cannot be read/.test(l.msg))).toHaveLength(5);
  });

  it('stores an enrolled device from ENROLLMENT and STATUS_REPORT: record, labels from the token, status, posture, reported policy', async () => {
    const name = rig.sim.enroll(token.value, { serial: 'PX-0001', model: 'Pixel 8 Pro', androidVersion: '15', encrypted: true, secure: false });
    await rig.sim.settle();
    const id = name.split('/').pop()!;
    const d = (await store.devices.get(id))!;
    expect(d).toMatchObject({ platform: 'android', serialNumber: 'PX-0001', model: 'Pixel 8 Pro', osVersion: '15', identifiers: { amapi: name, serial: 'PX-0001', enrollmentToken: token.name } });
    // Labels the token asked for; reserved and malformed keys are dropped.
    expect(d.labels).toEqual({ team: 'warehouse' });
    expect(d.attributes).toMatchObject({ os: 'android', 'enrollment-source': 'amapi', ownership: 'company', 'management-mode': 'DEVICE_OWNER' });
    const e = (await store.devices.getEnrollment(id))!;
    expect(e).toMatchObject({ status: 'enrolled', state: { name, state: 'ACTIVE', appliedPolicyVersion: '1' } });
    const r = await reported(store, id);
    expect(r.get(POSTURE)).toMatchObject({ osFamily: 'android', osVersion: '15', encrypted: true, passcodePresent: false });
    expect(r.get(ANDROID_STATUS)).toMatchObject({ state: 'ACTIVE', policyCompliant: true, hardwareInfo: { serialNumber: 'PX-0001' }, softwareInfo: { androidVersion: '15' } });
    // The token's policy, which Muster did not set for it: reported as held, so the reconciler can move it.
    expect(r.get(REPORTED_ITEMS)).toEqual({ items: { [POLICY_ITEM]: { hash: e.state.appliedPolicyName!.toString().split('/').pop(), status: 'installed' } } });
    const events = await store.events.read(0, { topics: ['device.changed', 'device.reported'] });
    expect(events.filter((x) => (x.payload as { deviceId: string }).deviceId === id).map((x) => x.topic)).toEqual(['device.changed', 'device.reported', 'device.reported']);
  });

  it('changes nothing on a redelivery, whether this process saw the message id or not, and ignores older reports', async () => {
    const [name, dev] = [...rig.sim.devices.entries()][0]!;
    const id = name.split('/').pop()!;
    const eventsBefore = (await store.events.read(0)).length;
    const reportedBefore = await store.devices.reported(id);
    const { body } = rig.sim.pusher.envelope('STATUS_REPORT', dev.resource);
    expect(await rig.sim.pusher.pushRaw(body)).toBe(204);
    expect(await rig.sim.pusher.pushRaw(body)).toBe(204);
    // A new message id for the same Device (Pub/Sub redelivering to another replica, or after a restart).
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('STATUS_REPORT', dev.resource).body)).toBe(204);
    expect(await recordDeviceStatus(store, dev.resource as Device, { enterprise: rig.enterprise })).toBe('duplicate');
    const older = { ...dev.resource, lastStatusReportTime: '2020-01-01T00:00:00Z', policyCompliant: false };
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('STATUS_REPORT', older).body)).toBe(204);
    expect(await recordDeviceStatus(store, older as Device, { enterprise: rig.enterprise })).toBe('stale');
    expect((await store.events.read(0)).length).toBe(eventsBefore);
    expect(await store.devices.reported(id)).toEqual(reportedBefore);
    expect(rig.mdm.pubsubStats).toMatchObject({ duplicate: expect.any(Number), stale: expect.any(Number) });
    expect(rig.mdm.pubsubStats.duplicate).toBeGreaterThanOrEqual(2);
  });

  it('takes a burst of status reports from the whole fleet (what the benchmark drives), each acknowledged once stored', async () => {
    const t = await rig.mdm.enrollmentToken({});
    for (let i = 0; i < 40; i++) rig.sim.enroll(t.value, { serial: `B${i}` });
    await rig.sim.settle();
    const before = { ...rig.mdm.pubsubStats };
    const answered = rig.sim.pusher.answers.length;
    const sent = rig.sim.reportAll();
    await rig.sim.settle();
    expect(sent).toBe(rig.sim.devices.size);
    expect(rig.sim.pusher.answers.slice(answered).every((a) => a.status === 204)).toBe(true);
    expect(rig.mdm.pubsubStats.stored - before.stored).toBe(sent);
  });

  it('asks for a COMMAND notification again when it outruns the worker’s record of the operation', async () => {
    const [name] = [...rig.sim.devices.keys()];
    const id = name!.split('/').pop()!;
    const uuid = '00000000-0000-4000-8000-0000000c0001';
    await store.commands.enqueue({ uuid, deviceId: id, type: 'amapi.issueCommand', payload: { type: 'LOCK' } });
    await store.commands.claim({ types: ['amapi.issueCommand'] });
    const op = { name: `${name}/operations/1700000000000`, done: true, metadata: { '@type': 'type.googleapis.com/google.android.devicemanagement.v1.Command', type: 'LOCK', createTime: new Date().toISOString() } };
    const { body } = rig.sim.pusher.envelope('COMMAND', op);
    expect(await rig.sim.pusher.pushRaw(body)).toBe(503);
    // The worker's transaction commits: the operation is on record.
    await store.commands.report(uuid, { status: 'acknowledged', result: { operation: op.name } });
    await store.devices.patchEnrollmentState(id, { operations: { [op.name]: uuid } });
    expect(await rig.sim.pusher.pushRaw(body)).toBe(204);
    expect((await store.commands.get(uuid))?.state).toBe('completed');
    // An operation Muster never issued, from long ago: acknowledged and dropped.
    const old = { ...op, name: `${name}/operations/1`, metadata: { ...op.metadata, createTime: '2020-01-01T00:00:00Z' } };
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('COMMAND', old).body)).toBe(204);
  });

  it('judges reports of one device handled at once one after the other: the newer always wins', async () => {
    const [name, dev] = [...rig.sim.devices.entries()][1]!;
    const id = name.split('/').pop()!;
    for (let i = 0; i < 10; i++) {
      const base = Date.parse('2030-01-01T00:00:00Z') + i * 10_000;
      const older = { ...dev.resource, lastStatusReportTime: new Date(base).toISOString(), appliedPolicyVersion: String(2 * i + 1) } as Device;
      const newer = { ...dev.resource, lastStatusReportTime: new Date(base + 5_000).toISOString(), appliedPolicyVersion: String(2 * i + 2) } as Device;
      const outcomes = await Promise.all([recordDeviceStatus(store, newer, { enterprise: rig.enterprise }), recordDeviceStatus(store, older, { enterprise: rig.enterprise })]);
      expect(outcomes.sort()).toEqual(outcomes.includes('stale') ? ['stale', 'stored'] : ['stored', 'stored']);
      expect((await store.devices.getEnrollment(id))?.state).toMatchObject({ lastStatusReportTime: newer.lastStatusReportTime, appliedPolicyVersion: String(2 * i + 2) });
    }
  });

  it('stores USAGE_LOGS batches and acknowledges notifications for other enterprises without storing them', async () => {
    const [name] = [...rig.sim.devices.keys()];
    const id = name!.split('/').pop()!;
    const batch = { device: name, retrievalTime: '2026-03-01T10:00:00Z', usageLogEvents: [{ eventId: '1', eventTime: '2026-03-01T09:59:00Z', eventType: 'KEYGUARD_DISMISSED' }] };
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('USAGE_LOGS', batch).body)).toBe(204);
    expect((await reported(store, id)).get(ANDROID_USAGE_LOGS)).toEqual({ retrievalTime: '2026-03-01T10:00:00Z', count: 1, events: [{ eventId: '1', eventTime: '2026-03-01T09:59:00Z', eventType: 'KEYGUARD_DISMISSED' }] });
    const foreign = { name: 'enterprises/LCother/devices/abc123', state: 'ACTIVE', lastStatusReportTime: new Date().toISOString() };
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('ENROLLMENT', foreign).body)).toBe(204);
    expect(await rig.sim.pusher.pushRaw(rig.sim.pusher.envelope('ENTERPRISE_UPGRADE', { enterprise: rig.enterprise }).body)).toBe(204);
    expect(await store.devices.get('abc123')).toBeUndefined();
  });
});

describe('the Pub/Sub push endpoint when the store fails', () => {
  let tdb: TestDatabase;
  let rig: AndroidRig;
  let store: Store;
  let failures = 0;
  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    const real = await tdb.open();
    // The first two transactions of device reports fail, as a database outage would.
    store = { ...real, transaction: (fn) => (failures++ < 2 ? Promise.reject(new Error('connection terminated')) : real.transaction(fn)) } as Store;
    rig = await androidRig(store);
    await rig.sim.settle();
    failures = 0;
  });
  afterAll(async () => {
    await rig?.close();
    await tdb?.cleanup();
  });

  it('answers 503 until the update is stored, and Pub/Sub redelivers until it is', async () => {
    const t = await rig.mdm.enrollmentToken({});
    failures = 0;
    const name = rig.sim.enroll(t.value, { serial: 'FAIL-1', applyDelayMs: 500 });
    await rig.sim.settle();
    const answers = rig.sim.pusher.answers.filter((a) => a.type === 'ENROLLMENT').map((a) => a.status);
    expect(answers).toEqual([503, 503, 204]);
    expect((await store.devices.getEnrollment(name.split('/').pop()!))?.status).toBe('enrolled');
    expect(rig.mdm.pubsubStats.failed).toBe(2);
  });
});

describe('the reported policy item (pure)', () => {
  const expected = { policyId: 'm-new', version: '10', at: '2026-01-01T00:00:00Z' };
  const dev = (o: Partial<Device>): Device => ({ name: 'enterprises/E/devices/d', appliedPolicyName: 'enterprises/E/policies/m-new', ...o });

  it('is converged only at a version at least the one policies.patch returned, compared as int64 integers', () => {
    expect(itemsOf(dev({ appliedPolicyVersion: '9' }), { expected })).toEqual({});
    expect(itemsOf(dev({ appliedPolicyVersion: '10' }), { expected })).toEqual({ policy: { hash: 'm-new', status: 'installed' } });
    // "9" > "10" as text; 11 > 10 as numbers.
    expect(itemsOf(dev({ appliedPolicyVersion: '11' }), { expected })).toEqual({ policy: { hash: 'm-new', status: 'installed' } });
    // Past 2^53 a float would call these equal.
    const big = { ...expected, version: '9007199254740993' };
    expect(itemsOf(dev({ appliedPolicyVersion: '9007199254740992' }), { expected: big })).toEqual({});
    expect(itemsOf(dev({ appliedPolicyVersion: '9007199254740993' }), { expected: big })).toEqual({ policy: { hash: 'm-new', status: 'installed' } });
    expect(itemsOf(dev({ appliedPolicyVersion: 'junk' }), { expected })).toEqual({});
  });

  it('reports nonComplianceDetails as a failure with the reasons, but "pending" as not yet applied', () => {
    expect(itemsOf(dev({ appliedPolicyVersion: '10', policyCompliant: false, nonComplianceDetails: [{ settingName: 'cameraAccess', nonComplianceReason: 'API_LEVEL' }, { settingName: 'applications', packageName: 'com.x', nonComplianceReason: 'APP_NOT_INSTALLED', installationFailureReason: 'NOT_FOUND' }] }), { expected })).toEqual({
      policy: { hash: 'm-new', status: 'failed', error: 'cameraAccess API_LEVEL; applications APP_NOT_INSTALLED com.x NOT_FOUND' },
    });
    expect(itemsOf(dev({ appliedPolicyVersion: '10', policyCompliant: false, nonComplianceDetails: [{ settingName: 'applications', nonComplianceReason: 'PENDING' }] }), { expected })).toEqual({});
    expect(itemsOf(dev({ appliedPolicyVersion: '10', policyCompliant: false }), { expected })).toEqual({ policy: { hash: 'm-new', status: 'failed', error: 'the device reports it is not compliant with its policy' } });
  });

  it('reports a policy Muster did not set as held (whatever its version), and nothing before any is applied', () => {
    expect(itemsOf(dev({ appliedPolicyName: 'enterprises/E/policies/m-old', appliedPolicyVersion: '1' }), { expected })).toEqual({ policy: { hash: 'm-old', status: 'installed' } });
    expect(itemsOf({ name: 'enterprises/E/devices/d' }, {})).toEqual({});
  });
});
