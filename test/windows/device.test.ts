// The simulated Windows PC against the real endpoint over HTTPS with its
// enrollment certificate (mTLS): full sessions, MaxMsgSize, 418 → Replace,
// Atomic roll-back, and what the endpoint answers to bad requests.
import https from 'node:https';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { generateCa, type CertificateAuthority } from '../../protocols/pki/ca.js';
import { cspHash } from '../../protocols/windows/csp.js';
import { WINDOWS_COMMAND, recordWindowsResults, renderWindowsCommand, type WindowsQueuedCommand } from '../../protocols/windows/driver.js';
import { createWindowsMdmService } from '../../protocols/windows/mdm-service.js';
import { MDM_PATH, windowsMdmRoutes } from '../../protocols/windows/mdm-routes.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { decodeClientMessage, decodeServerMessage } from '../../protocols/windows/syncml/wire.js';
import { testDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { enrollDevice, quiet, recordingLog, serverCertificate } from './session-support.js';

describe('a simulated Windows PC over HTTPS with mTLS', { timeout: 60_000 }, () => {
  let tdb: TestDatabase;
  let store: Store;
  let ca: CertificateAuthority;
  let app: FastifyInstance;
  let url: string;
  let tls: { key: string; cert: string };
  const log = recordingLog();
  let n = 0;
  const pc = async (o: Partial<ConstructorParameters<typeof SimulatedWindowsDevice>[0]> = {}) => {
    const id = `0000000000000000000000000000${String(++n).padStart(4, '0')}`;
    const e = await enrollDevice(store, ca, id);
    return new SimulatedWindowsDevice({ managementUrl: url, deviceId: id, certPem: e.certPem, keyPem: e.keyPem, caPem: tls.cert, ...o });
  };
  const queue = (deviceId: string, uuid: string, payload: WindowsQueuedCommand) => store.commands.enqueue({ uuid, deviceId, type: WINDOWS_COMMAND.install, payload });

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    ca = generateCa({ keyBits: 2048 });
    tls = serverCertificate();
    app = Fastify({ https: { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false, ca: [ca.certPem] } });
    const service = createWindowsMdmService({ store, log, serverUrl: 'https://127.0.0.1/ManagementServer/MDM.svc', renderCommand: (c) => renderWindowsCommand(c, { secret: () => undefined }), onResults: (id, done, tx) => recordWindowsResults(store, id, done, tx) });
    await app.register(windowsMdmRoutes, { service, auth: { modes: ['mtls'], ca }, log: quiet });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    url = `${base}${MDM_PATH}`;
  });
  afterAll(async () => {
    await app?.close();
    await tdb?.cleanup();
  });

  it('runs a session: package 1 with Cred and DevInfo, the server answers 212, the session ends with statuses only', async () => {
    const d = await pc({ credentials: { name: 'dummy', secret: 's3cret' }, model: 'ThinkPad X1 Carbon Gen 12' });
    const s = await d.sync();
    expect(s.messages).toBe(1);
    const first = decodeClientMessage(d.sent[0]!);
    expect(first.hdr).toMatchObject({ sessionId: '1', msgId: '1', source: { locUri: d.deviceId, locName: 'dummy' }, cred: { format: 'b64', type: 'syncml:auth-md5' }, meta: { maxMsgSize: 524288 } });
    expect(first.body.map((c) => (c.kind === 'Alert' ? c.data : c.kind))).toEqual(['1201', '1224', 'Replace']);
    const answer = decodeServerMessage(d.received[0]!);
    expect(answer.final).toBe(true);
    expect(answer.body.map((c) => c.kind === 'Status' && [c.cmdRef, c.data])).toEqual([['0', '212'], ['1', '200'], ['2', '200'], ['3', '200']]);
    expect((await store.devices.get(d.deviceId))!).toMatchObject({ model: 'ThinkPad X1 Carbon Gen 12' });
    expect((await store.windowsSessions.get(d.deviceId, '1'))!.ended).toBe(true);
  });

  it('keeps every server message within the device MaxMsgSize: many commands go out package by package, each message Final', async () => {
    const d = await pc({ maxMsgSize: 4000 });
    for (let i = 0; i < 12; i++) {
      await queue(d.deviceId, `0d0d0d0d-0000-4000-8000-0000000000${String(i).padStart(2, '0')}`, { kind: 'install', spec: { verb: 'Replace', items: [{ target: `./Device/Vendor/MSFT/Policy/Config/Test/Setting${i}`, format: 'chr', data: 'v'.repeat(600) }] }, nodes: [{ id: `./Device/Vendor/MSFT/Policy/Config/Test/Setting${i}`, hash: cspHash('chr', 'v'.repeat(600)) }] });
    }
    const s = await d.sync();
    expect(s.messages).toBeGreaterThan(3);
    expect(d.received.every((m) => Buffer.byteLength(m) <= 4000)).toBe(true);
    // OMA DM: the server closes each package, and sends the next commands only after the statuses of the last.
    expect(d.received.map((m) => decodeServerMessage(m).final).every(Boolean)).toBe(true);
    expect(s.nextMessages).toBe(0);
    expect(d.sent.map((m) => decodeClientMessage(m).final).every(Boolean)).toBe(true);
    expect(d.sent.some((m) => decodeClientMessage(m).body.some((c) => c.kind === 'Alert' && c.data === '1222'))).toBe(false);
    for (const [i, text] of d.received.entries()) {
      const m = decodeServerMessage(text);
      const sentIds = new Set(m.body.filter((c) => c.kind !== 'Status').map((c) => c.cmdId));
      // Every command of a package is answered in the device's very next message.
      if (sentIds.size && d.sent[i + 1]) expect(decodeClientMessage(d.sent[i + 1]!).body.filter((c) => c.kind === 'Status' && c.msgRef === m.msgId && sentIds.has(c.cmdRef))).toHaveLength(sentIds.size);
    }
    expect(s.commands.filter((c) => c.startsWith('Replace'))).toHaveLength(12);
    for (let i = 0; i < 12; i++) expect(d.tree.get(`./Device/Vendor/MSFT/Policy/Config/Test/Setting${i}`)?.value).toBe('v'.repeat(600));
    expect(await store.commands.unfinishedCount(d.deviceId)).toBe(0);
    expect((await store.windowsSessions.get(d.deviceId, s.sessionId))!.ended).toBe(true);
  });

  it('takes a device package sent over several messages: Next Message answers (Alert 1222, no Final) until the device sends Final', async () => {
    const d = await pc({ maxElementsPerMessage: 2 });
    await queue(d.deviceId, '0d0d0d0d-0000-4000-8000-0000000000aa', { kind: 'install', spec: { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', data: '0' }] }, nodes: [{ id: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', hash: cspHash('int', '0') }] });
    const s = await d.sync();
    const first = decodeClientMessage(d.sent[0]!);
    expect(first.final).toBe(false);
    const answer = decodeServerMessage(d.received[0]!);
    expect(answer.final).toBe(false);
    expect(answer.body.filter((c) => c.kind !== 'Status').map((c) => c.kind === 'Alert' && c.data)).toEqual(['1222']);
    expect(s.nextMessages).toBeGreaterThan(0);
    // The command went out only once the device had closed its package, in a Final message of the server.
    const withCommands = d.received.map((m) => decodeServerMessage(m)).filter((m) => m.body.some((c) => c.kind === 'Replace'));
    expect(withCommands).toHaveLength(1);
    expect(withCommands[0]!.final).toBe(true);
    expect(d.tree.get('./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera')?.value).toBe('0');
    expect((await store.commands.get('0d0d0d0d-0000-4000-8000-0000000000aa'))!.state).toBe('completed');
    expect((await store.windowsSessions.get(d.deviceId, s.sessionId))!.ended).toBe(true);
  });

  it('sends an Add again as Replace when the node already exists (418)', async () => {
    const d = await pc();
    d.tree.set('./Vendor/MSFT/WiFi/Profile/Corp/WlanXml', { format: 'chr', value: '<WLANProfile>old</WLANProfile>' });
    await queue(d.deviceId, '0e0e0e0e-0000-4000-8000-000000000001', { kind: 'install', spec: { verb: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', format: 'chr', data: '<WLANProfile>new</WLANProfile>' }] }, nodes: [{ id: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', hash: 'h-wifi' }] });
    const s = await d.sync();
    expect(s.commands).toEqual(['Add ./Vendor/MSFT/WiFi/Profile/Corp/WlanXml', 'Replace ./Vendor/MSFT/WiFi/Profile/Corp/WlanXml']);
    expect(d.tree.get('./Vendor/MSFT/WiFi/Profile/Corp/WlanXml')!.value).toBe('<WLANProfile>new</WLANProfile>');
    const c = (await store.commands.get('0e0e0e0e-0000-4000-8000-000000000001'))!;
    expect(c.state).toBe('completed');
    expect((await store.commands.results(c.uuid))[0]!.result).toMatchObject({ replacedAfter418: ['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml'] });
    const items = ((await store.devices.reportedMany([d.deviceId], REPORTED_ITEMS)).get(d.deviceId)!.state as { items: Record<string, unknown> }).items;
    expect(items['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml']).toEqual({ hash: 'h-wifi', status: 'installed' });
  });

  it('answers 404 for a node it does not have and 405 for one it will not change, and each is recorded per node', async () => {
    const RO = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera';
    const NONE = './Vendor/MSFT/NoSuchCsp/Node';
    const d = await pc({ readOnly: [RO] });
    await queue(d.deviceId, '1d1d1d1d-0000-4000-8000-000000000001', { kind: 'install', spec: { verb: 'Replace', items: [{ target: RO, format: 'int', data: '0' }] }, nodes: [{ id: RO, hash: 'h-ro' }] });
    await queue(d.deviceId, '1d1d1d1d-0000-4000-8000-000000000002', { kind: 'install', spec: { verb: 'Delete', items: [{ target: NONE }] }, nodes: [{ id: NONE }] });
    await d.sync();
    const reply = decodeClientMessage(d.sent[1]!);
    expect(reply.body.filter((c) => c.kind === 'Status' && c.cmd !== 'SyncHdr').map((c) => c.kind === 'Status' && [c.cmd, c.data])).toEqual([['Replace', '405'], ['Delete', '404']]);
    expect(await store.commands.get('1d1d1d1d-0000-4000-8000-000000000001')).toMatchObject({ state: 'failed', lastError: expect.stringContaining(`${RO}: 405`) });
    const items = ((await store.devices.reportedMany([d.deviceId], REPORTED_ITEMS)).get(d.deviceId)!.state as { items: Record<string, { status: string }> }).items;
    expect(items[RO]).toMatchObject({ status: 'failed' });
  });

  it('rolls an Atomic back on the device when one node fails inside it; both nodes are reported failed', async () => {
    const A = './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled';
    const B = './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength';
    const d = await pc({ failInAtomic: [B] });
    await queue(d.deviceId, '0f0f0f0f-0000-4000-8000-000000000001', { kind: 'install', spec: { verb: 'Atomic', commands: [{ verb: 'Replace', items: [{ target: A, format: 'int', data: '0' }] }, { verb: 'Replace', items: [{ target: B, format: 'int', data: '12' }] }] }, nodes: [{ id: A, hash: 'ha' }, { id: B, hash: 'hb' }] });
    await d.sync();
    expect(d.tree.get(A)).toBeUndefined();
    const reply = decodeClientMessage(d.sent[1]!);
    expect(reply.body.filter((c) => c.kind === 'Status').map((c) => c.kind === 'Status' && [c.cmd, c.data])).toEqual([['SyncHdr', '200'], ['Atomic', '507'], ['Replace', '216'], ['Replace', '500']]);
    const c = (await store.commands.get('0f0f0f0f-0000-4000-8000-000000000001'))!;
    expect(c).toMatchObject({ state: 'failed', lastError: `Replace ${B}: 500 command failed` });
    const items = ((await store.devices.reportedMany([d.deviceId], REPORTED_ITEMS)).get(d.deviceId)!.state as { items: Record<string, { status: string }> }).items;
    expect([items[A]!.status, items[B]!.status]).toEqual(['failed', 'failed']);
  });

  it('polls on its schedule until stopped', async () => {
    const d = await pc();
    d.startPolling({ everyMs: 20 });
    await waitFor(() => d.sessions.length >= 3, 10_000, 'three polls');
    d.stopPolling();
    await d.idle();
    const count = d.sessions.length;
    expect(new Set(d.sessions.map((s) => s.sessionId)).size).toBe(count);
    expect(d.lastError).toBeUndefined();
  });

  it('answers 413 with a short reason to a message over the size limit, and keeps nothing of it', async () => {
    const d = await pc();
    const huge = `<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>77</SessionID><MsgID>1</MsgID><Target><LocURI>${url}</LocURI></Target><Source><LocURI>${d.deviceId}</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Replace><CmdID>2</CmdID><Item><Source><LocURI>./DevInfo/Mod</LocURI></Source><Data>${'x'.repeat(1024 * 1024 + 10)}</Data></Item></Replace><Final/></SyncBody></SyncML>`;
    const r = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      const req = https.request(url, { method: 'POST', ca: tls.cert, cert: d['o'].certPem, key: d['o'].keyPem, agent: false, headers: { 'content-type': 'application/vnd.syncml.dm+xml' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: text }));
      });
      req.on('error', reject);
      req.end(huge);
    });
    expect(r).toMatchObject({ status: 413, body: 'the message is larger than 1048576 bytes' });
    expect(r.type).toMatch(/^text\/plain/);
    expect(await store.windowsSessions.get(d.deviceId, '77')).toBeUndefined();
    expect((await store.devices.get(d.deviceId))!.model ?? '').not.toMatch(/^x/);
  });

  it('answers 400 to unreadable SyncML from an enrolled PC, 415 to WBXML, 403 without a client certificate whatever the body; answers are application/vnd.syncml.dm+xml', async () => {
    const post = (body: string, o: { type?: string; withCert?: SimulatedWindowsDevice } = {}) =>
      new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
        const cert = o.withCert ? { cert: o.withCert['o'].certPem, key: o.withCert['o'].keyPem } : {};
        const req = https.request(url, { method: 'POST', ca: tls.cert, ...cert, agent: false, headers: { 'content-type': o.type ?? 'application/vnd.syncml.dm+xml' } }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const d = await pc();
    const bad = await post('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>', { withCert: d });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatch(/^unreadable SyncML: malformed XML/);
    // The certificate is checked before the body is read: without one, the same body is a 403.
    expect(await post('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>')).toMatchObject({ status: 403, body: 'device certificate not accepted' });
    expect((await post('\x02\x00', { type: 'application/vnd.syncml.dm+wbxml' })).status).toBe(415);
    const noCert = await post(`<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>${url}</LocURI></Target><Source><LocURI>${d.deviceId}</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Final/></SyncBody></SyncML>`);
    expect(noCert).toMatchObject({ status: 403, body: 'device certificate not accepted' });
    // A PC whose certificate is bound to another device is refused too.
    const e = await enrollDevice(store, ca, 'FFFF0000FFFF0000FFFF0000FFFF0000');
    const impostor = new SimulatedWindowsDevice({ managementUrl: url, deviceId: d.deviceId, certPem: e.certPem, keyPem: e.keyPem, caPem: tls.cert });
    await expect(impostor.sync()).rejects.toMatchObject({ status: 403 });
    await d.sync();
    expect(d.received.at(-1)).toContain('<SyncML xmlns="SYNCML:SYNCML1.2">');
    const ok = await new Promise<string>((resolve, reject) => {
      const req = https.request(url, { method: 'POST', ca: tls.cert, cert: d['o'].certPem, key: d['o'].keyPem, agent: false, headers: { 'content-type': 'application/vnd.syncml.dm+xml' } }, (res) => {
        res.resume();
        resolve(String(res.headers['content-type']));
      });
      req.on('error', reject);
      req.end(d.sent[0]!);
    });
    expect(ok).toBe('application/vnd.syncml.dm+xml');
    expect(log.lines.some((l) => l.msg === 'windows OMA-DM message refused')).toBe(true);
  });
});
