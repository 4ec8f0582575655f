// The Apple check-in and command channel over a real store, fed the shapes
// real devices send.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command, Store } from '../../controller/store/index.js';
import { createAppleService, type AppleService } from '../../protocols/apple/service.js';
import { WireError, parseCheckin, parseReport, profileListOf, queryResponsesOf, type CommandReport } from '../../protocols/apple/wire.js';
import { testDatabase, type TestDatabase } from '../support/db.js';

const IPAD = '00008027-000A2C1E3A42002E';
const MAC = '5A1D3B2C-9F4E-4D6A-8B7C-0E1F2A3B4C5D';
const TOPIC = 'com.apple.mgmt.External.1f3c0a9e-4b8d-4c2e-9a7f-6d5e4c3b2a10';

describe('Apple check-in and command channel', () => {
  let tdb: TestDatabase;
  let store: Store;
  let svc: AppleService;
  const results: Array<{ command: Command; report: CommandReport }> = [];
  const certs: Record<string, string> = {};

  const newCert = async (opts: { revoked?: boolean; expired?: boolean } = {}) => {
    const sha = randomBytes(32).toString('hex');
    await store.identities.add({ certSha256: sha, platform: 'apple', protocol: 'apple-scep', serialNumber: randomBytes(8).toString('hex'), notAfter: new Date(Date.now() + (opts.expired ? -1 : 1) * 86_400_000) });
    if (opts.revoked) await store.identities.revoke(sha);
    return sha;
  };
  const checkin = (udid: string, dict: Record<string, unknown>, cert: string | null | undefined = certs[udid]) => svc.checkin(parseCheckin({ UDID: udid, ...dict }), cert ? { certSha256: cert } : undefined);
  const report = (udid: string, dict: Record<string, unknown>, cert: string | null | undefined = certs[udid]) => svc.connect(parseReport({ UDID: udid, ...dict }), cert ? { certSha256: cert } : undefined);

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    // Inventory on enrollment has its own test below; here the queue holds only what each test puts in it.
    svc = createAppleService({ store, log: { info: () => {}, warn: () => {} }, onResult: async (command, r) => void results.push({ command, report: r }), inventoryOnEnroll: false });
    certs[IPAD] = await newCert();
    certs[MAC] = await newCert();
  });
  afterAll(async () => tdb.cleanup());

  it('Authenticate (an iPad with IMEI and MEID) records the device, binds its certificate and clears its queue', async () => {
    await store.devices.upsert({ id: IPAD, platform: 'apple' });
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: IPAD, type: 'Stale', payload: { RequestType: 'ProfileList' } });
    const r = await checkin(IPAD, {
      MessageType: 'Authenticate',
      Topic: TOPIC,
      BuildVersion: '22B83',
      DeviceName: 'Reception iPad',
      IMEI: '35 328208 123456 7',
      MEID: '35328208123456',
      Model: 'iPad13,18',
      ModelName: 'iPad',
      OSVersion: '18.1',
      ProductName: 'iPad13,18',
      SerialNumber: 'DMPXK0Q2Q1GC',
    });
    expect(r).toEqual({ status: 200 });
    const d = (await store.devices.get(IPAD))!;
    expect(d).toMatchObject({ platform: 'apple', serialNumber: 'DMPXK0Q2Q1GC', osVersion: '18.1', identifiers: { udid: IPAD, imei: '35 328208 123456 7', meid: '35328208123456' }, attributes: { os: 'ipados' } });
    expect((await store.identities.get(certs[IPAD]!))!.deviceId).toBe(IPAD);
    expect(await store.commands.unfinishedCount(IPAD)).toBe(0);
    expect((await store.devices.getEnrollment(IPAD))!.status).toBe('pending');
  });

  it('TokenUpdate (a Mac with a large UnlockToken, awaiting configuration) enrolls it and queues DeviceConfigured once', async () => {
    expect(await checkin(MAC, { MessageType: 'Authenticate', Topic: TOPIC, OSVersion: '15.1', ProductName: 'Mac15,3', SerialNumber: 'C02FK3ZXQ6L4' })).toEqual({ status: 200 });
    const token = randomBytes(32);
    const tu = { MessageType: 'TokenUpdate', Topic: TOPIC, Token: token, PushMagic: '2F1E1C6B-3D5A-4B2E-8F9A-7C6D5E4F3A2B', UnlockToken: randomBytes(4096), AwaitingConfiguration: true };
    expect(await checkin(MAC, tu)).toEqual({ status: 200 });
    expect(await checkin(MAC, tu)).toEqual({ status: 200 }); // may come any time, any number of times
    const e = (await store.devices.getEnrollment(MAC))!;
    expect(e).toMatchObject({ status: 'enrolled', state: { token: token.toString('hex'), pushMagic: tu.PushMagic, topic: TOPIC, awaitingConfiguration: true, hasUnlockToken: true } });
    expect(JSON.stringify(e.state)).not.toContain(tu.UnlockToken.toString('base64').slice(0, 40)); // the unlock token is not stored in the clear
    const queued = await store.commands.listForDevice(MAC);
    expect(queued.filter((c) => c.type === 'DeviceConfigured')).toHaveLength(1);
  });

  it('asks a newly enrolled device for its inventory once, behind DeviceConfigured', async () => {
    const udid = '00008112-000A1D2E3F40801E';
    const withInventory = createAppleService({ store, log: { info: () => {}, warn: () => {} } });
    certs[udid] = await newCert();
    const cert = { certSha256: certs[udid]! };
    await withInventory.checkin(parseCheckin({ UDID: udid, MessageType: 'Authenticate', Topic: TOPIC, ProductName: 'iPhone16,1', SerialNumber: 'F2LZK0Q1' }), cert);
    const tu = { UDID: udid, MessageType: 'TokenUpdate', Topic: TOPIC, Token: randomBytes(32), PushMagic: 'magic', AwaitingConfiguration: true };
    await withInventory.checkin(parseCheckin(tu), cert);
    await withInventory.checkin(parseCheckin(tu), cert);
    const order: string[] = [];
    let a = await withInventory.connect(parseReport({ UDID: udid, Status: 'Idle' }), cert);
    while (a.status === 200 && a.command) {
      const c = a.command as { CommandUUID: string; Command: { RequestType: string; Queries?: string[] } };
      order.push(c.Command.RequestType);
      if (c.Command.RequestType === 'DeviceInformation') expect(c.Command.Queries).toEqual(expect.arrayContaining(['OSVersion', 'SerialNumber', 'ModelName', 'IsSupervised']));
      a = await withInventory.connect(parseReport({ UDID: udid, Status: 'Acknowledged', CommandUUID: c.CommandUUID }), cert);
    }
    expect(order).toEqual(['DeviceConfigured', 'DeviceInformation', 'SecurityInfo', 'InstalledApplicationList']);
  });

  it('Idle gets the next command; Acknowledged completes it once, however often it is repeated', async () => {
    const first = await report(MAC, { Status: 'Idle' });
    expect(first).toMatchObject({ status: 200, command: { Command: { RequestType: 'DeviceConfigured' } } });
    const uuid = (first as { uuid: string }).uuid;
    const ack = { Status: 'Acknowledged', CommandUUID: uuid };
    expect(await report(MAC, ack)).toEqual({ status: 200 });
    expect(await report(MAC, ack)).toEqual({ status: 200 });
    expect(results.filter((r) => r.command.uuid === uuid)).toHaveLength(1);
    expect((await store.commands.get(uuid))!.state).toBe('completed');
    expect((await store.devices.getEnrollment(MAC))!.state.awaitingConfiguration).toBe(false);
  });

  it('skips a NotNow command for the rest of the connection and keeps the queue moving', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await store.commands.enqueue([
      { uuid: a, deviceId: IPAD, type: 'InstallProfile', payload: { RequestType: 'InstallProfile', fields: { Payload: Buffer.from('x').toString('base64') } } },
      { uuid: b, deviceId: IPAD, type: 'ProfileList', payload: { RequestType: 'ProfileList' } },
    ]);
    expect(((await report(IPAD, { Status: 'Idle' })) as { uuid: string }).uuid).toBe(a);
    const next = await report(IPAD, { Status: 'NotNow', CommandUUID: a });
    expect((next as { uuid: string }).uuid).toBe(b);
    expect((await store.commands.get(a))!.state).toBe('not_now');
    const list = await report(IPAD, { Status: 'Acknowledged', CommandUUID: b, ProfileList: [{ PayloadIdentifier: 'dev.muster.bundle.base', PayloadUUID: 'ABC' }] });
    expect(list).toEqual({ status: 200 });
    const r = results.find((x) => x.command.uuid === b)!;
    expect(profileListOf(r.report.result)).toEqual(new Map([['dev.muster.bundle.base', 'ABC']]));
  });

  it('stores an ErrorChain as the failure, and answers reports it cannot match without blocking', async () => {
    const c = randomUUID();
    await store.commands.enqueue({ uuid: c, deviceId: MAC, type: 'InstallProfile', payload: { RequestType: 'InstallProfile' } });
    await report(MAC, { Status: 'Idle' });
    await report(MAC, { Status: 'Error', CommandUUID: c, ErrorChain: [{ ErrorCode: 1009, ErrorDomain: 'MCProfileErrorDomain', LocalizedDescription: 'Le profil est invalide', USEnglishDescription: 'The profile is invalid' }] });
    expect((await store.commands.get(c))!).toMatchObject({ state: 'failed', lastError: 'MCProfileErrorDomain 1009: The profile is invalid' });
    expect(await report(MAC, { Status: 'Acknowledged', CommandUUID: randomUUID() })).toEqual({ status: 200 });
  });

  it('fails a command that cannot be prepared and sends the next one', async () => {
    const broken = createAppleService({
      store,
      log: { info: () => {}, warn: () => {} },
      renderCommand: (cmd) => {
        if (cmd.type === 'Broken') throw new Error('secret WIFI_PSK is not set');
        return { CommandUUID: cmd.uuid, Command: { RequestType: cmd.type } };
      },
    });
    const [x, y] = [randomUUID(), randomUUID()];
    await store.commands.enqueue([
      { uuid: x, deviceId: MAC, type: 'Broken', priority: 5 },
      { uuid: y, deviceId: MAC, type: 'SecurityInfo' },
    ]);
    const r = await broken.connect(parseReport({ UDID: MAC, Status: 'Idle' }), { certSha256: certs[MAC]! });
    expect(r).toMatchObject({ uuid: y, command: { Command: { RequestType: 'SecurityInfo' } } });
    expect((await store.commands.get(x))!).toMatchObject({ state: 'failed', lastError: 'not sent: secret WIFI_PSK is not set' });
  });

  it('authenticates every message by its certificate: 403, never 401', async () => {
    const other = await newCert();
    const revoked = await newCert({ revoked: true });
    const expired = await newCert({ expired: true });
    expect(await checkin(IPAD, { MessageType: 'TokenUpdate', Topic: TOPIC, Token: randomBytes(32), PushMagic: 'x' }, null)).toMatchObject({ status: 403, error: /no device certificate/ });
    expect(await checkin(IPAD, { MessageType: 'TokenUpdate', Topic: TOPIC, Token: randomBytes(32), PushMagic: 'x' }, other)).toMatchObject({ status: 403, error: /not bound/ });
    expect(await report(IPAD, { Status: 'Idle' }, certs[MAC])).toMatchObject({ status: 403, error: /another device/ });
    expect(await checkin('NEWDEVICE-1', { MessageType: 'Authenticate', Topic: TOPIC }, revoked)).toMatchObject({ status: 403, error: /revoked/ });
    expect(await checkin('NEWDEVICE-2', { MessageType: 'Authenticate', Topic: TOPIC }, expired)).toMatchObject({ status: 403, error: /expired/ });
    expect(await checkin('NEWDEVICE-3', { MessageType: 'Authenticate', Topic: TOPIC }, 'f'.repeat(64))).toMatchObject({ status: 403, error: /not issued/ });
  });

  it('declines UserAuthenticate with 410, keeps the bootstrap token, and checks out', async () => {
    expect(await checkin(MAC, { MessageType: 'UserAuthenticate', UserID: 'B3D3A4B2-0000-0000-0000-000000000001' })).toMatchObject({ status: 410 });
    const bt = randomBytes(48);
    expect(await checkin(MAC, { MessageType: 'SetBootstrapToken', BootstrapToken: bt })).toEqual({ status: 200 });
    expect(await checkin(MAC, { MessageType: 'GetBootstrapToken' })).toEqual({ status: 200, body: { BootstrapToken: bt } });
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: IPAD, type: 'ProfileList' });
    expect(await checkin(IPAD, { MessageType: 'CheckOut' })).toEqual({ status: 200 });
    expect((await store.devices.getEnrollment(IPAD))!.status).toBe('unenrolled');
    expect(await store.commands.unfinishedCount(IPAD)).toBe(0);
    expect((await store.identities.get(certs[IPAD]!))!.revokedAt).not.toBeNull();
    expect(await report(IPAD, { Status: 'Idle' })).toMatchObject({ status: 403 });
  });
});

describe('Apple wire decoding', () => {
  it.each([
    [{}, /MessageType/],
    [{ MessageType: 'Authenticate', Topic: 't' }, /UDID/],
    [{ MessageType: 'Authenticate', UDID: 'x' }, /Topic/],
    [{ MessageType: 'TokenUpdate', UDID: 'x', Topic: 't', PushMagic: 'm' }, /Token/],
    [{ MessageType: 'Bogus', UDID: 'x' }, /unknown check-in/],
    [{ MessageType: 'CheckOut', UDID: 'x/../../etc' }, /not an identifier/],
    ['<plist/>', /dictionary/],
  ])('refuses %o', (v, msg) => expect(() => parseCheckin(v)).toThrow(msg));
  it('accepts User Enrollment by EnrollmentID', () => expect(parseCheckin({ MessageType: 'CheckOut', EnrollmentID: 'EID-1' })).toMatchObject({ udid: 'EID-1' }));
  it.each([
    [{ UDID: 'x', Status: 'Maybe' }, /unknown report Status/],
    [{ UDID: 'x', Status: 'Acknowledged' }, /without CommandUUID/],
  ])('refuses report %o', (v, msg) => {
    expect(() => parseReport(v)).toThrow(WireError);
    expect(() => parseReport(v)).toThrow(msg);
  });
  it('reads a DeviceInformation answer with QueryResponses', () => {
    const r = parseReport({
      UDID: 'x',
      Status: 'Acknowledged',
      CommandUUID: 'c',
      QueryResponses: { OSVersion: '18.1', SerialNumber: 'DMPX', IsSupervised: true, BatteryLevel: 0.81, AvailableDeviceCapacity: 101.3, ServiceSubscriptions: [{ CarrierSettingsVersion: '1' }] },
    });
    expect(queryResponsesOf(r.result)).toEqual({ OSVersion: '18.1', SerialNumber: 'DMPX', IsSupervised: 'true', BatteryLevel: '0.81', AvailableDeviceCapacity: '101.3' });
  });
});
