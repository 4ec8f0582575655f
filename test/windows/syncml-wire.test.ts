// The SyncML codec on messages shaped like real Windows clients send them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseXml, child, children, textAt } from '../../protocols/windows/xml.js';
import { SyncmlError, decodeClientMessage, decodeServerMessage, encodeDeviceMessage, encodeServerMessage } from '../../protocols/windows/syncml/wire.js';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/windows/syncml', name), 'utf8');

describe('decoding device messages', () => {
  it('reads a first package: header with Cred (syncml:auth-md5) and LocName, MaxMsgSize, alerts and the DevInfo Replace in order', () => {
    const m = decodeClientMessage(fixture('first-package.xml'));
    expect(m.version).toBe('1.2');
    expect(m.final).toBe(true);
    expect(m.hdr).toEqual({
      verDTD: '1.2',
      verProto: 'DM/1.2',
      sessionId: 'D',
      msgId: '1',
      target: { locUri: 'https://mdm.example.com/ManagementServer/MDM.svc' },
      source: { locUri: '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6', locName: 'dummy' },
      cred: { format: 'b64', type: 'syncml:auth-md5', data: 'wG3fT1Jc7mVbN5kQm0x8dA==' },
      meta: { maxMsgSize: 512000 },
    });
    expect(m.body.map((c) => c.kind)).toEqual(['Alert', 'Alert', 'Replace']);
    expect(m.body[0]).toEqual({ kind: 'Alert', cmdId: '2', data: '1201', items: [] });
    expect(m.body[1]).toEqual({ kind: 'Alert', cmdId: '3', data: '1224', items: [{ meta: { type: 'com.microsoft/MDM/LoginStatus' }, data: 'user' }] });
    const replace = m.body[2]!;
    expect(replace.kind === 'Replace' && replace.items.map((i) => [i.source, i.data])).toEqual([
      ['./DevInfo/DevId', '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6'],
      ['./DevInfo/Man', 'Microsoft Corporation'],
      ['./DevInfo/Mod', 'Surface Laptop 5'],
      ['./DevInfo/DmV', '1.3'],
      ['./DevInfo/Lang', 'en-US'],
      ['./Vendor/MSFT/DMClient/HWDevID', 'A0E1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F'],
      ['./DevDetail/Ext/Microsoft/DeviceName', 'DESKTOP-4F2K9QJ'],
      ['./DevDetail/SwV', '10.0.22631.4317'],
    ]);
  });

  it('keeps UUID CmdIDs as opaque text, and reads a Results with several items, each with Meta Format and Type', () => {
    const m = decodeClientMessage(fixture('results-multi-item.xml').replaceAll('@GET@', '7'));
    const [hdr, st, res] = m.body;
    expect(hdr).toMatchObject({ kind: 'Status', cmdId: 'e5b3a1c2-7d4f-4b8e-9a6c-0f1e2d3c4b5a', msgRef: '1', cmdRef: '0', cmd: 'SyncHdr', data: '200' });
    expect(st).toMatchObject({ kind: 'Status', cmdRef: '7', cmd: 'Get', data: '200', targetRefs: [] });
    expect(res).toEqual({
      kind: 'Results',
      cmdId: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
      msgRef: '1',
      cmdRef: '7',
      targetRefs: [],
      sourceRefs: [],
      items: [
        { source: './DevDetail/SwV', meta: { format: 'chr', type: 'text/plain' }, data: '10.0.26100.2314' },
        { source: './DevDetail/Ext/Microsoft/OSPlatform', meta: { format: 'chr' }, data: 'Windows 11 Enterprise' },
        { source: './Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance', meta: { format: 'int' }, data: '1' },
      ],
    });
  });

  it('reads per-item statuses with TargetRef', () => {
    const m = decodeClientMessage(fixture('status-targetref.xml').replaceAll('@GET@', '5'));
    const statuses = m.body.filter((c) => c.kind === 'Status').slice(1);
    expect(statuses.map((s) => s.kind === 'Status' && [s.targetRefs, s.data])).toEqual([
      [['./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera'], '200'],
      [['./Device/Vendor/MSFT/Policy/Result/Storage/RemovableDiskDenyWriteAccess'], '404'],
    ]);
  });

  it('accepts the SyncML 1.1 namespace (single-quoted, with an XML declaration)', () => {
    const m = decodeClientMessage(fixture('syncml11-package.xml'));
    expect(m.version).toBe('1.1');
    expect(m.hdr.sessionId).toBe('2F');
    expect(m.body[1]).toMatchObject({ kind: 'Replace', items: [{ source: './DevInfo/Mod', meta: { format: 'chr' }, data: 'Latitude 7440' }] });
  });

  it('reads the unenrollment generic alert and the session abort', () => {
    const u = decodeClientMessage(fixture('unenroll-1226.xml'));
    expect(u.body[1]).toEqual({ kind: 'Alert', cmdId: '3', data: '1226', items: [{ meta: { type: 'com.microsoft:mdm.unenrollment.userrequest', format: 'int' }, data: '1' }] });
    const a = decodeClientMessage(fixture('abort-1223.xml'));
    expect(a.body[1]).toEqual({ kind: 'Alert', cmdId: '2', data: '1223', items: [] });
  });

  it('reads nested Atomic commands with their children in order, and marks elements that are no SyncML command', () => {
    const m = decodeClientMessage(`<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>3</MsgID><Target><LocURI>s</LocURI></Target><Source><LocURI>d</LocURI></Source></SyncHdr><SyncBody><Atomic><CmdID>1</CmdID><Replace><CmdID>2</CmdID><Item><Source><LocURI>./a</LocURI></Source><Data>1</Data></Item></Replace><Add><CmdID>3</CmdID><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Item><Source><LocURI>./b</LocURI></Source><Data>2</Data></Item></Add></Atomic><Frobnicate><CmdID>4</CmdID></Frobnicate></SyncBody></SyncML>`);
    expect(m.final).toBe(false);
    expect(m.body[0]).toMatchObject({ kind: 'Atomic', cmdId: '1', commands: [{ kind: 'Replace', cmdId: '2' }, { kind: 'Add', cmdId: '3', meta: { format: 'int' } }] });
    expect(m.body[1]).toEqual({ kind: 'Unknown', name: 'Frobnicate', cmdId: '4' });
  });

  it('refuses what is not a SyncML message, with a clear reason', () => {
    const bad = (s: string, re: RegExp) => expect(() => decodeClientMessage(s)).toThrow(re);
    bad('', /empty body/);
    bad('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>', /malformed/);
    bad('<Envelope/>', /not <SyncML>/);
    bad('<SyncML xmlns="SYNCML:SYNCML2.0"><SyncHdr/><SyncBody/></SyncML>', /unsupported SyncML namespace/);
    bad('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncBody/></SyncML>', /SyncHdr and SyncBody/);
    bad('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><MsgID>1</MsgID><Target><LocURI>s</LocURI></Target><Source><LocURI>d</LocURI></Source></SyncHdr><SyncBody/></SyncML>', /SessionID is missing/);
    bad('<!DOCTYPE SyncML [<!ENTITY a "aaaa">]><SyncML xmlns="SYNCML:SYNCML1.2"/>', /entity declarations are refused/);
    expect(() => decodeClientMessage(fixture('first-package.xml'), { maxBytes: 100 })).toThrow(SyncmlError);
    const many = `<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>s</LocURI></Target><Source><LocURI>d</LocURI></Source></SyncHdr><SyncBody>${'<Alert><CmdID>1</CmdID><Data>1224</Data></Alert>'.repeat(30)}</SyncBody></SyncML>`;
    expect(() => decodeClientMessage(many, { maxCommands: 20 })).toThrow(/more than 20 commands/);
    let deep = '<Data>x</Data>';
    for (let i = 0; i < 40; i++) deep = `<Atomic><CmdID>${i}</CmdID>${deep}</Atomic>`;
    expect(() => decodeClientMessage(`<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>s</LocURI></Target><Source><LocURI>d</LocURI></Source></SyncHdr><SyncBody>${deep}</SyncBody></SyncML>`)).toThrow(SyncmlError);
  });
});

describe('encoding server messages', () => {
  const wlan = '<WLANProfile xmlns="http://www.microsoft.com/networking/WLAN/profile/v1"><name>R&D "Lab"</name></WLANProfile>';
  const text = encodeServerMessage({
    version: '1.2',
    sessionId: 'D',
    msgId: '1',
    target: '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6',
    source: 'https://mdm.example.com/ManagementServer/MDM.svc',
    final: true,
    body: [
      { kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: '0', cmd: 'SyncHdr', targetRefs: ['https://mdm.example.com/ManagementServer/MDM.svc'], sourceRefs: ['7A3F9C2E41B84D6E9F05C1D2B3A4E5F6'], data: '212' },
      { kind: 'Add', cmdId: '2', items: [{ target: './Vendor/MSFT/WiFi/Profile/R%26D/WlanXml', format: 'chr', data: wlan }] },
      { kind: 'Atomic', cmdId: '3', commands: [{ kind: 'Replace', cmdId: '4', items: [{ target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled', format: 'int', data: '0' }] }] },
    ],
  });
  const root = parseXml(text);

  it('writes the header the device expects: VerDTD 1.2, DM/1.2, the session echoed, Target the device, Source the server', () => {
    expect(text.startsWith('<?xml version="1.0" encoding="utf-8"?><SyncML xmlns="SYNCML:SYNCML1.2">')).toBe(true);
    const h = child(root, 'SyncHdr')!;
    expect(h.children.map((c) => c.name)).toEqual(['VerDTD', 'VerProto', 'SessionID', 'MsgID', 'Target', 'Source']);
    expect([textAt(h, 'VerDTD'), textAt(h, 'VerProto'), textAt(h, 'SessionID'), textAt(h, 'MsgID'), textAt(h, 'Target', 'LocURI'), textAt(h, 'Source', 'LocURI')]).toEqual(['1.2', 'DM/1.2', 'D', '1', '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6', 'https://mdm.example.com/ManagementServer/MDM.svc']);
  });

  it('orders Status children as the DTD does and ends the body with Final', () => {
    const body = child(root, 'SyncBody')!;
    expect(body.children.map((c) => c.name)).toEqual(['Status', 'Add', 'Atomic', 'Final']);
    expect(children(body, 'Status')[0]!.children.map((c) => c.name)).toEqual(['CmdID', 'MsgRef', 'CmdRef', 'Cmd', 'TargetRef', 'SourceRef', 'Data']);
  });

  it('puts Meta Format in the syncml:metinf namespace and escapes embedded XML as entities, never CDATA', () => {
    expect(text).toContain('<Meta><Format xmlns="syncml:metinf">chr</Format></Meta>');
    expect(text).not.toContain('CDATA');
    expect(text).toContain('<Data>&lt;WLANProfile xmlns=&quot;http://www.microsoft.com/networking/WLAN/profile/v1&quot;&gt;&lt;name&gt;R&amp;D &quot;Lab&quot;&lt;/name&gt;&lt;/WLANProfile&gt;</Data>');
    // And a device reading it back gets the profile text exactly.
    const back = decodeServerMessage(text);
    expect(back.body[1]).toMatchObject({ kind: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/R%26D/WlanXml', meta: { format: 'chr' }, data: wlan }] });
    expect(back.body[2]).toMatchObject({ kind: 'Atomic', cmdId: '3', commands: [{ kind: 'Replace', cmdId: '4' }] });
  });

  it('answers a SyncML 1.1 device in 1.1', () => {
    const t = encodeServerMessage({ version: '1.1', sessionId: '2F', msgId: '1', target: 'd', source: 's', final: true, body: [] });
    expect(t).toContain('<SyncML xmlns="SYNCML:SYNCML1.1"><SyncHdr><VerDTD>1.1</VerDTD><VerProto>DM/1.1</VerProto>');
  });

  it('writes device messages (the simulator) that the server decoder reads back unchanged', () => {
    const t = encodeDeviceMessage({
      version: '1.2',
      sessionId: '1A',
      msgId: '1',
      source: 'DEV1',
      target: 'https://s/ManagementServer/MDM.svc',
      cred: { format: 'b64', type: 'syncml:auth-md5', data: 'abc=', locName: 'user1' },
      maxMsgSize: 65536,
      final: true,
      body: [
        { kind: 'Alert', cmdId: '1', data: '1224', items: [{ type: 'com.microsoft/MDM/LoginStatus', format: 'chr', data: 'others' }] },
        { kind: 'Results', cmdId: '2', msgRef: '1', cmdRef: '3', items: [{ source: './DevDetail/SwV', format: 'chr', data: '10.0.1' }] },
      ],
    });
    const m = decodeClientMessage(t);
    expect(m.hdr).toMatchObject({ source: { locUri: 'DEV1', locName: 'user1' }, cred: { format: 'b64', type: 'syncml:auth-md5', data: 'abc=' }, meta: { maxMsgSize: 65536 } });
    expect(m.body[0]).toMatchObject({ kind: 'Alert', items: [{ meta: { type: 'com.microsoft/MDM/LoginStatus', format: 'chr' }, data: 'others' }] });
    expect(m.body[1]).toMatchObject({ kind: 'Results', msgRef: '1', cmdRef: '3', items: [{ source: './DevDetail/SwV', data: '10.0.1' }] });
  });
});
