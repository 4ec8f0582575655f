// The OMA-DM service against a real store (PGlite, and PostgreSQL with
// DATABASE_URL): sessions persisted between messages (a second service
// instance — another replica — takes the next message), queue bookkeeping,
// device facts, unenrollment, abort, and certificate checks.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { generateCa, type CertificateAuthority } from '../../protocols/pki/ca.js';
import { WINDOWS_COMMAND, inventoryCommand, recordWindowsResults, renderWindowsCommand, windowsInventoryOnSession, type WindowsQueuedCommand } from '../../protocols/windows/driver.js';
import { createWindowsMdmService, type WindowsMdmService } from '../../protocols/windows/mdm-service.js';
import { decodeClientMessage, decodeServerMessage, encodeDeviceMessage, type DecodedServerMessage, type DeviceBodyElement } from '../../protocols/windows/syncml/wire.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { enrollDevice, recordingLog, type EnrolledDevice } from './session-support.js';

const SERVER = 'https://mdm.example.com/ManagementServer/MDM.svc';
const DEVICE = '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6';
const fixtureText = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/windows/syncml', name), 'utf8');
const fixture = (name: string, subs: Record<string, string> = {}) => {
  let t = fixtureText(name);
  for (const [k, v] of Object.entries(subs)) t = t.replaceAll(`@${k}@`, v);
  return decodeClientMessage(t);
};
const reply = (sessionId: string, msgId: string, body: DeviceBodyElement[], device = DEVICE) => decodeClientMessage(encodeDeviceMessage({ version: '1.2', sessionId, msgId, source: device, target: SERVER, body, final: true }));
/** What a device answers to a server message: 200 for every command (and the SyncHdr). */
const okAll = (m: DecodedServerMessage): DeviceBodyElement[] => [
  { kind: 'Status', cmdId: '1', msgRef: m.msgId, cmdRef: '0', cmd: 'SyncHdr', data: '200' },
  ...m.body.filter((c) => c.kind !== 'Status').map((c, i) => ({ kind: 'Status' as const, cmdId: String(i + 2), msgRef: m.msgId, cmdRef: c.cmdId, cmd: c.kind, data: '200' })),
];
const cameraInstall = (deviceId: string, uuid: string, value = '0') => ({
  uuid,
  deviceId,
  type: WINDOWS_COMMAND.install,
  payload: { kind: 'install', spec: { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', data: value }] }, nodes: [{ id: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', hash: 'h-camera' }] } satisfies WindowsQueuedCommand,
});

for (const backend of backends) {
  describe(`Windows OMA-DM service on ${backend}`, () => {
    let tdb: TestDatabase;
    let store: Store;
    let replica: Store;
    let ca: CertificateAuthority;
    let dev: EnrolledDevice;
    let other: EnrolledDevice;
    const log = recordingLog();
    const secrets: Record<string, string> = {};
    const serviceOn = (s: Store): WindowsMdmService =>
      createWindowsMdmService({ store: s, log, serverUrl: SERVER, renderCommand: (c) => renderWindowsCommand(c, { secret: (n) => secrets[n] }), onResults: (id, done, tx) => recordWindowsResults(s, id, done, tx), onSessionStart: windowsInventoryOnSession(s) });
    let a: WindowsMdmService;
    let b: WindowsMdmService;

    beforeAll(async () => {
      tdb = await testDatabase(backend);
      store = await tdb.open();
      // On PostgreSQL the second instance gets its own connection pool, as another replica would.
      replica = backend === 'postgres' ? await tdb.open() : store;
      ca = generateCa({ keyBits: 2048 });
      dev = await enrollDevice(store, ca, DEVICE);
      other = await enrollDevice(store, ca, 'B1C2D3E4F5A60718293A4B5C6D7E8F90');
      a = serviceOn(store);
      b = serviceOn(replica);
    });
    afterAll(async () => tdb?.cleanup());

    it('answers a first package with 212, records what the device said about itself, and sends queued work', async () => {
      await store.commands.enqueue(cameraInstall(DEVICE, '0c0c0c0c-0000-4000-8000-000000000001'));
      const ans = await a.handle(fixture('first-package.xml'), { certSha256: dev.certSha256 });
      expect(ans.status).toBe(200);
      if (ans.status !== 200) return;
      const m = decodeServerMessage(ans.body);
      expect(m).toMatchObject({ sessionId: 'D', msgId: '1', target: DEVICE, source: SERVER, final: true });
      const statuses = m.body.filter((c) => c.kind === 'Status');
      expect(statuses.map((s) => s.kind === 'Status' && [s.msgRef, s.cmdRef, s.cmd, s.data])).toEqual([
        ['1', '0', 'SyncHdr', '212'],
        ['1', '2', 'Alert', '200'],
        ['1', '3', 'Alert', '200'],
        ['1', '4', 'Replace', '200'],
      ]);
      expect(statuses[0]).toMatchObject({ targetRefs: [SERVER], sourceRefs: [DEVICE] });
      // The queued Replace, and the inventory Get the first session asks for.
      const cmds = m.body.filter((c) => c.kind !== 'Status');
      expect(cmds.map((c) => c.kind)).toEqual(['Get', 'Replace']);
      expect(cmds[1]).toMatchObject({ items: [{ target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', meta: { format: 'int' }, data: '0' }] });
      expect((await store.commands.get('0c0c0c0c-0000-4000-8000-000000000001'))!.state).toBe('sent');

      const d = (await store.devices.get(DEVICE))!;
      expect(d).toMatchObject({ model: 'Surface Laptop 5', osVersion: '10.0.22631.4317' });
      expect(d.attributes).toMatchObject({ os: 'windows', 'enrollment-source': 'windows-mdm', manufacturer: 'Microsoft Corporation', language: 'en-US', 'dm-version': '1.3', 'device-name': 'DESKTOP-4F2K9QJ', 'login-status': 'user' });
      expect(d.identifiers).toMatchObject({ 'windows-device-id': DEVICE, hwdevid: 'A0E1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F' });
      const session = (await store.windowsSessions.get(DEVICE, 'D'))!;
      expect(session.ended).toBe(false);
      expect(JSON.stringify(session.state)).not.toContain('AllowCamera" data'); // ids and codes only
    });

    it('takes the next message of the session on another instance: statuses matched, Results recorded, then ends with statuses and Final', async () => {
      // Rebuild what the device received from the stored session: the Get and the Replace it was sent.
      const st = (await store.windowsSessions.get(DEVICE, 'D'))!.state as { sent: Record<string, Record<string, { verb: string }>> };
      const sent = Object.entries(st.sent['1']!).map(([cmdId, r]) => ({ cmdId, verb: r.verb }));
      const get = sent.find((s) => s.verb === 'Get')!;
      const rep = sent.find((s) => s.verb === 'Replace')!;
      const msg = fixture('results-multi-item.xml', { GET: get.cmdId });
      msg.body.splice(1, 0, { kind: 'Status', cmdId: 'f00d', msgRef: '1', cmdRef: rep.cmdId, cmd: 'Replace', data: '200', targetRefs: [], sourceRefs: [], items: [] });
      const ans = await b.handle(msg, { certSha256: dev.certSha256 });
      expect(ans.status).toBe(200);
      if (ans.status !== 200) return;
      const m = decodeServerMessage(ans.body);
      expect(m.msgId).toBe('2');
      expect(m.final).toBe(true);
      expect(m.body.map((c) => c.kind === 'Status' && [c.msgRef, c.cmdRef, c.cmd])).toEqual([['2', '0', 'SyncHdr']]);
      expect(m.body[0]).toMatchObject({ data: '200' }); // no Cred in this message
      expect(ans.ended).toBe(true);
      expect((await replica.windowsSessions.get(DEVICE, 'D'))!.ended).toBe(true);
      expect((await store.commands.get('0c0c0c0c-0000-4000-8000-000000000001'))!.state).toBe('completed');
      const items = (await store.devices.reportedMany([DEVICE], REPORTED_ITEMS)).get(DEVICE)!.state as { items: Record<string, unknown> };
      expect(items.items['./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera']).toEqual({ hash: 'h-camera', status: 'installed' });
      // The inventory Results became device facts and posture.
      const d = (await store.devices.get(DEVICE))!;
      expect(d.osVersion).toBe('10.0.26100.2314');
      expect(d.attributes['os-edition']).toBe('Windows 11 Enterprise');
      const posture = (await store.devices.reported(DEVICE)).find((r) => r.kind === 'posture')!.state;
      expect(posture).toMatchObject({ osFamily: 'windows', osVersion: '10.0.26100.2314', encrypted: true });
      const events = await store.db.query<{ topic: string }>(`SELECT topic FROM events WHERE payload->>'deviceId' = $1 ORDER BY id`, [DEVICE]);
      expect(events.rows.map((r) => r.topic)).toContain('device.reported');
    });

    it('refuses (403) a message without a certificate, with one not bound to this device, and with a revoked one', async () => {
      expect(await a.handle(fixture('first-package.xml'), undefined)).toMatchObject({ status: 403 });
      expect(await a.handle(fixture('first-package.xml'), { certSha256: other.certSha256 })).toMatchObject({ status: 403 });
      expect(await a.handle(fixture('first-package.xml'), { certSha256: 'ab'.repeat(32) })).toMatchObject({ status: 403 });
      const unbound = await enrollDevice(store, ca, 'C0FFEE00C0FFEE00C0FFEE00C0FFEE00', { bind: false });
      expect(await a.handle(reply('1', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], unbound.deviceId), { certSha256: unbound.certSha256 })).toMatchObject({ status: 403 });
      expect(log.lines.filter((l) => l.msg === 'windows OMA-DM message refused').map((l) => l.fields!.reason)).toEqual([
        'no device identity was presented',
        'the identity belongs to another device',
        'the identity was not issued by this server',
        'the identity is not bound to a device yet',
      ]);
      // Nothing of the refused messages reached the store.
      expect(await store.windowsSessions.get(DEVICE, 'D')).toMatchObject({ ended: true });
    });

    it('puts what was in flight back in the queue when the device aborts (1223), and sends it in the next session', async () => {
      const uuid = '0c0c0c0c-0000-4000-8000-000000000002';
      await store.commands.enqueue(cameraInstall(other.deviceId, uuid, '1'));
      const start = reply('7', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId);
      const a1 = await a.handle(start, { certSha256: other.certSha256 });
      expect(a1.status === 200 && decodeServerMessage(a1.body).body.some((c) => c.kind === 'Replace')).toBe(true);
      expect((await store.commands.get(uuid))!.state).toBe('sent');
      const abort = fixture('abort-1223.xml');
      abort.hdr.sessionId = '7';
      abort.hdr.source.locUri = other.deviceId;
      const a2 = await b.handle(abort, { certSha256: other.certSha256 });
      expect(a2.status).toBe(200);
      if (a2.status !== 200) return;
      const m = decodeServerMessage(a2.body);
      expect(m.final).toBe(true);
      expect(m.body.map((c) => c.kind === 'Status' && [c.cmdRef, c.cmd, c.data])).toEqual([['0', 'SyncHdr', '200'], ['2', 'Alert', '200']]);
      expect((await store.commands.get(uuid))!.state).toBe('not_now');
      expect((await store.windowsSessions.get(other.deviceId, '7'))!.ended).toBe(true);
      // Next poll: a new session sends it again.
      const a3 = await a.handle(reply('8', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId), { certSha256: other.certSha256 });
      expect(a3.status === 200 && decodeServerMessage(a3.body).body.filter((c) => c.kind === 'Replace').length).toBe(1);
      expect((await store.commands.get(uuid))!).toMatchObject({ state: 'sent', attempts: 2 });
    });

    it('ends an open session when the device starts a new one, and requeues what it never answered', async () => {
      const uuid = '0c0c0c0c-0000-4000-8000-000000000002';
      // Session 8 (previous test) still waits for the Replace's status; the device now starts session 9.
      const a1 = await a.handle(reply('9', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId), { certSha256: other.certSha256 });
      expect((await store.windowsSessions.get(other.deviceId, '8'))!.ended).toBe(true);
      // The requeued command went straight out again in the new session.
      expect(a1.status === 200 && decodeServerMessage(a1.body).body.filter((c) => c.kind === 'Replace').length).toBe(1);
      expect((await store.commands.get(uuid))!).toMatchObject({ state: 'sent', attempts: 3 });
      const m = decodeServerMessage((a1 as { body: string }).body);
      const a2 = await a.handle(reply('9', '2', okAll(m), other.deviceId), { certSha256: other.certSha256 });
      expect(a2).toMatchObject({ status: 200, ended: true });
      expect((await store.commands.get(uuid))!.state).toBe('completed');
    });

    it('starts a session on a server-initiated Alert 1200 as on 1201, ending the one left open', async () => {
      const uuid = '0c0c0c0c-0000-4000-8000-0000000000b1';
      await store.commands.enqueue(cameraInstall(other.deviceId, uuid));
      // Session 12 takes the command and is left open (the device never answers it) …
      const open = await a.handle(reply('12', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId), { certSha256: other.certSha256 });
      expect(open.status === 200 && decodeServerMessage(open.body).body.some((c) => c.kind === 'Replace')).toBe(true);
      // … then a push makes the device start session 13 with 1200: 12 ends and its command goes out again.
      const pushed = await a.handle(reply('13', '1', [{ kind: 'Alert', cmdId: '1', data: '1200' }], other.deviceId), { certSha256: other.certSha256 });
      expect((await store.windowsSessions.get(other.deviceId, '12'))!.ended).toBe(true);
      const m = decodeServerMessage((pushed as { body: string }).body);
      expect(m.body.find((c) => c.kind === 'Status' && c.cmdRef === '1')).toMatchObject({ cmd: 'Alert', data: '200' });
      expect(m.body.filter((c) => c.kind === 'Replace')).toHaveLength(1);
      expect(await a.handle(reply('13', '2', okAll(m), other.deviceId), { certSha256: other.certSha256 })).toMatchObject({ status: 200, ended: true });
      expect((await store.commands.get(uuid))!.state).toBe('completed');
    });

    it('fails a command that cannot be rendered (a missing secret) alone and sends the next one', async () => {
      const bad = '0c0c0c0c-0000-4000-8000-000000000003';
      const good = '0c0c0c0c-0000-4000-8000-000000000004';
      await store.commands.enqueue([
        { uuid: bad, deviceId: other.deviceId, type: WINDOWS_COMMAND.install, payload: { kind: 'install', spec: { verb: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', format: 'chr', data: '<WLANProfile><keyMaterial>${secret:CORP_PSK}</keyMaterial></WLANProfile>' }] }, nodes: [{ id: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', hash: 'h' }], xmlTargets: ['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml'] } },
        inventoryCommand(other.deviceId, 'manual'),
      ].map((c, i) => (i === 1 ? { ...c, uuid: good } : c)));
      const ans = await a.handle(reply('A', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId), { certSha256: other.certSha256 });
      expect(ans.status === 200 && decodeServerMessage(ans.body).body.filter((c) => c.kind !== 'Status').map((c) => c.kind)).toEqual(['Get']);
      expect((await store.commands.get(bad))!).toMatchObject({ state: 'failed', lastError: 'not sent: secret CORP_PSK not set' });
      // With the secret set, the value goes out XML-escaped inside the profile, and the profile entity-escaped in SyncML.
      secrets.CORP_PSK = 'p&ss<word>';
      const again = '0c0c0c0c-0000-4000-8000-000000000005';
      const row = (await store.commands.get(bad))!;
      await store.commands.enqueue({ uuid: again, deviceId: other.deviceId, type: row.type, payload: row.payload });
      const m = decodeServerMessage((ans as { body: string }).body);
      const ans2 = await a.handle(reply('A', '2', okAll(m), other.deviceId), { certSha256: other.certSha256 });
      const text = (ans2 as { body: string }).body;
      expect(text).toContain('&lt;keyMaterial&gt;p&amp;amp;ss&amp;lt;word&amp;gt;&lt;/keyMaterial&gt;');
      const add = decodeServerMessage(text).body.find((c) => c.kind === 'Add');
      expect(add).toMatchObject({ items: [{ data: '<WLANProfile><keyMaterial>p&amp;ss&lt;word&gt;</keyMaterial></WLANProfile>' }] });
      // The session row never holds the rendered secret.
      expect(JSON.stringify((await store.windowsSessions.get(other.deviceId, 'A'))!.state)).not.toContain('word');
    });

    it('backs off a command the device did not execute (215), like a NotNow, and sends it again later', async () => {
      const uuid = '0c0c0c0c-0000-4000-8000-000000000007';
      await store.commands.enqueue({ uuid, deviceId: other.deviceId, type: WINDOWS_COMMAND.wipe, payload: { kind: 'admin', spec: { verb: 'Exec', items: [{ target: './Device/Vendor/MSFT/RemoteWipe/doWipe', format: 'null', data: '' }] } } satisfies WindowsQueuedCommand });
      const a1 = await a.handle(reply('B', '1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], other.deviceId), { certSha256: other.certSha256 });
      const m = decodeServerMessage((a1 as { body: string }).body);
      const exec = m.body.find((c) => c.kind === 'Exec')!;
      // Everything else in the message (work left from earlier sessions) succeeds; the wipe is not executed.
      const answer = okAll(m).map((st) => (st.kind === 'Status' && st.cmdRef === exec.cmdId ? { ...st, data: '215' } : st));
      const a2 = await a.handle(reply('B', '2', answer, other.deviceId), { certSha256: other.certSha256 });
      expect(a2.status === 200 && decodeServerMessage(a2.body).body.some((c) => c.kind === 'Exec')).toBe(false);
      const c = (await store.commands.get(uuid))!;
      expect(c.state).toBe('not_now');
      expect(c.notBefore.getTime()).toBeGreaterThan(Date.now() + 1000);
    });

    it('answers a SyncML 1.1 device in 1.1', async () => {
      const msg = fixture('syncml11-package.xml');
      const ans = await a.handle(msg, { certSha256: dev.certSha256 });
      expect(ans.status).toBe(200);
      if (ans.status !== 200) return;
      expect(ans.body).toContain('<SyncML xmlns="SYNCML:SYNCML1.1"><SyncHdr><VerDTD>1.1</VerDTD><VerProto>DM/1.1</VerProto><SessionID>2F</SessionID>');
      expect((await store.devices.get(DEVICE))!.model).toBe('Latitude 7440');
    });

    it('unenrolls the device on the user-request generic alert (1226): enrollment, identities, queue and audit', async () => {
      await store.commands.enqueue(cameraInstall(DEVICE, '0c0c0c0c-0000-4000-8000-000000000006'));
      const ans = await b.handle(fixture('unenroll-1226.xml'), { certSha256: dev.certSha256 });
      expect(ans.status).toBe(200);
      if (ans.status !== 200) return;
      const m = decodeServerMessage(ans.body);
      expect(m.final).toBe(true);
      expect(m.body.every((c) => c.kind === 'Status')).toBe(true);
      expect(m.body.map((c) => c.kind === 'Status' && [c.cmdRef, c.data])).toEqual([['0', '200'], ['2', '200'], ['3', '200']]);
      expect((await store.devices.getEnrollment(DEVICE))!.status).toBe('unenrolled');
      expect((await store.identities.get(dev.certSha256))!.revokedAt).not.toBeNull();
      expect((await store.commands.get('0c0c0c0c-0000-4000-8000-000000000006'))!.state).toBe('expired');
      expect(await store.commands.unfinishedCount(DEVICE)).toBe(0);
      const audit = await store.audit.list({ subject: `device/${DEVICE}` });
      expect(audit.map((x) => [x.action, x.actor])).toContainEqual(['device.unenroll', `device:${DEVICE}`]);
      // Its certificate no longer opens a session.
      expect(await a.handle(fixture('first-package.xml'), { certSha256: dev.certSha256 })).toMatchObject({ status: 403 });
    });
  });
}
