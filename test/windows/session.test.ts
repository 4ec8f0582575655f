// The OMA-DM session state machine, pure: device messages in (fixtures shaped
// like real Windows clients), statuses, outcomes and server messages out.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Composer, newSession, receive, specProblem, unfinishedWork, type SessionState } from '../../protocols/windows/syncml/session.js';
import { decodeClientMessage, decodeServerMessage, encodeDeviceMessage, type DeviceBodyElement } from '../../protocols/windows/syncml/wire.js';

const SERVER = 'https://mdm.example.com/ManagementServer/MDM.svc';
const DEVICE = '7A3F9C2E41B84D6E9F05C1D2B3A4E5F6';
const fixture = (name: string, subs: Record<string, string> = {}) => {
  let t = readFileSync(join(import.meta.dirname, '../fixtures/windows/syncml', name), 'utf8');
  for (const [k, v] of Object.entries(subs)) t = t.replaceAll(`@${k}@`, v);
  return decodeClientMessage(t);
};
const deviceMsg = (msgId: string, body: DeviceBodyElement[], final = true) => decodeClientMessage(encodeDeviceMessage({ version: '1.2', sessionId: 'D', msgId, source: DEVICE, target: SERVER, body, final }));
const start = () => newSession({ sessionId: 'D', version: '1.2', device: DEVICE, maxMsgSize: 512000 });

/** The server's CmdIDs by verb, in the order sent, from its message text. */
const sentIds = (xml: string) => decodeServerMessage(xml).body.filter((c) => c.kind !== 'Status');

describe('answering a device message', () => {
  it('answers the SyncHdr first (CmdRef 0, Cmd SyncHdr, 212 for accepted credentials) and then every command, MsgRef = its MsgID', () => {
    const r = receive(start(), fixture('first-package.xml'), { credentialsAccepted: true });
    expect(r.statuses).toEqual([
      { kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: '0', cmd: 'SyncHdr', targetRefs: [SERVER], sourceRefs: [DEVICE], data: '212' },
      { kind: 'Status', cmdId: '2', msgRef: '1', cmdRef: '2', cmd: 'Alert', data: '200' },
      { kind: 'Status', cmdId: '3', msgRef: '1', cmdRef: '3', cmd: 'Alert', data: '200' },
      { kind: 'Status', cmdId: '4', msgRef: '1', cmdRef: '4', cmd: 'Replace', data: '200' },
    ]);
    expect(r.alerts.map((a) => a.code)).toEqual(['1201', '1224']);
    expect(r.facts.find((f) => f.locUri === './DevInfo/Mod')).toEqual({ locUri: './DevInfo/Mod', data: 'Surface Laptop 5' });
    expect(r.state.maxMsgSize).toBe(512000);
    expect(r.clientFinal).toBe(true);
  });

  it('answers 200 to a header without credentials, 406 to commands a device may not send a server, 400 to a non-command', () => {
    const m = decodeClientMessage(`<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>D</SessionID><MsgID>5</MsgID><Target><LocURI>${SERVER}</LocURI></Target><Source><LocURI>${DEVICE}</LocURI></Source></SyncHdr><SyncBody><Get><CmdID>a</CmdID><Item><Target><LocURI>./x</LocURI></Target></Item></Get><Exec><CmdID>b</CmdID><Item><Target><LocURI>./y</LocURI></Target></Item></Exec><Bogus><CmdID>c</CmdID></Bogus><Atomic><CmdID>d</CmdID><Replace><CmdID>e</CmdID><Item><Source><LocURI>./DevInfo/Lang</LocURI></Source><Data>de-DE</Data></Item></Replace><Delete><CmdID>f</CmdID><Item><Target><LocURI>./z</LocURI></Target></Item></Delete></Atomic><Final/></SyncBody></SyncML>`);
    const r = receive(start(), m, { credentialsAccepted: true });
    expect(r.statuses.map((s) => [s.cmdRef, s.cmd, s.data])).toEqual([
      ['0', 'SyncHdr', '200'],
      ['a', 'Get', '406'],
      ['b', 'Exec', '406'],
      ['c', 'Bogus', '400'],
      // One child fails inside the device's Atomic: the Atomic is 507 and the one that worked is rolled back (216).
      ['d', 'Atomic', '507'],
      ['e', 'Replace', '216'],
      ['f', 'Delete', '406'],
    ]);
    expect(r.statuses.every((s) => s.msgRef === '5')).toBe(true);
  });
});

describe('sending queued commands and matching what comes back', () => {
  it('gives server commands fresh CmdIDs after the statuses, remembers them by MsgID, and matches Status and Results by MsgRef/CmdRef', () => {
    const r1 = receive(start(), fixture('first-package.xml'), { credentialsAccepted: true });
    const c = new Composer(r1.state, r1.statuses, SERVER);
    expect(c.add('u-replace', { spec: { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', data: '0' }] } })).toBe('added');
    expect(c.add('u-get', { spec: { verb: 'Get', items: [{ target: './DevDetail/SwV' }, { target: './DevDetail/Ext/Microsoft/OSPlatform' }, { target: './Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance' }] } })).toBe('added');
    const out = c.finish();
    expect(out).toMatchObject({ final: true, ended: false });
    const msg = decodeServerMessage(out.xml);
    expect(msg).toMatchObject({ sessionId: 'D', msgId: '1', target: DEVICE, source: SERVER, final: true });
    expect(msg.body.map((b) => [b.kind, b.cmdId])).toEqual([['Status', '1'], ['Status', '2'], ['Status', '3'], ['Status', '4'], ['Replace', '5'], ['Get', '6']]);

    // The device answers: the Replace worked, the Get with three items comes back in one Results.
    const reply = fixture('results-multi-item.xml', { GET: '6' });
    reply.body.splice(1, 0, { kind: 'Status', cmdId: 'x1', msgRef: '1', cmdRef: '5', cmd: 'Replace', data: '200', targetRefs: [], sourceRefs: [], items: [] });
    const r2 = receive(out.state, reply, { credentialsAccepted: true });
    expect(r2.completed.map((o) => [o.uuid, o.ok])).toEqual([['u-replace', true], ['u-get', true]]);
    expect(r2.completed[1]!.results.map((x) => [x.source, x.format, x.data])).toEqual([
      ['./DevDetail/SwV', 'chr', '10.0.26100.2314'],
      ['./DevDetail/Ext/Microsoft/OSPlatform', 'chr', 'Windows 11 Enterprise'],
      ['./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance', 'int', '1'],
    ]);
    // Only its SyncHdr is answered (MsgRef its MsgID 2): never its Statuses, nor its Results (OMA DM).
    expect(r2.statuses.map((s) => [s.msgRef, s.cmdRef, s.cmd])).toEqual([['2', '0', 'SyncHdr']]);
    expect(r2.state.sent).toEqual({});
    expect(r2.state.work).toEqual({});
    // Nothing left: the answer is statuses and Final, and the session is over.
    const end = new Composer(r2.state, r2.statuses, SERVER).finish();
    expect(end).toMatchObject({ final: true, ended: true });
    expect(decodeServerMessage(end.xml).body.every((b) => b.kind === 'Status')).toBe(true);
    expect(decodeServerMessage(end.xml).msgId).toBe('2');
  });

  it('keeps per-item statuses of a Get (TargetRef) on the command', () => {
    const s = start();
    const c = new Composer(s, [], SERVER);
    c.add('rb', { spec: { verb: 'Get', items: [{ target: './Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera' }, { target: './Device/Vendor/MSFT/Policy/Result/Storage/RemovableDiskDenyWriteAccess' }] }, tolerate: [404] });
    const out = c.finish();
    const [get] = sentIds(out.xml);
    const r = receive(out.state, fixture('status-targetref.xml', { GET: get!.cmdId }), { credentialsAccepted: true });
    expect(r.completed).toHaveLength(1);
    expect(r.completed[0]).toMatchObject({ uuid: 'rb', ok: true });
    expect(r.completed[0]!.statuses.map((x) => [x.targetRefs, x.code])).toEqual([
      [['./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera'], 200],
      [['./Device/Vendor/MSFT/Policy/Result/Storage/RemovableDiskDenyWriteAccess'], 404],
    ]);
    // Without tolerating 404 the same answer is a failure naming the node.
    const c2 = new Composer(start(), [], SERVER);
    c2.add('rb2', { spec: { verb: 'Get', items: [{ target: './Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera' }, { target: './Device/Vendor/MSFT/Policy/Result/Storage/RemovableDiskDenyWriteAccess' }] } });
    const o2 = c2.finish();
    const r2 = receive(o2.state, fixture('status-targetref.xml', { GET: sentIds(o2.xml)[0]!.cmdId }), { credentialsAccepted: true });
    expect(r2.completed[0]).toMatchObject({ ok: false, error: 'Get ./Device/Vendor/MSFT/Policy/Result/Storage/RemovableDiskDenyWriteAccess: 404 not found' });
  });

  it('sends an Add that answers 418 (already exists) once more as Replace, then reports it', () => {
    const c = new Composer(start(), [], SERVER);
    c.add('wifi', { spec: { verb: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', format: 'chr', data: '<WLANProfile/>' }] } });
    const o1 = c.finish();
    const [add] = sentIds(o1.xml);
    expect(add!.kind).toBe('Add');
    const r1 = receive(o1.state, deviceMsg('2', [{ kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: add!.cmdId, cmd: 'Add', data: '418' }]), { credentialsAccepted: true });
    expect(r1.completed).toEqual([]);
    expect(r1.state.carry).toEqual(['wifi']);
    const c2 = new Composer(r1.state, r1.statuses, SERVER);
    expect(c2.pending('wifi')).toEqual({ replaceTargets: ['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml'] });
    c2.add('wifi', { spec: { verb: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', format: 'chr', data: '<WLANProfile/>' }] } });
    const o2 = c2.finish();
    const [again] = sentIds(o2.xml);
    expect(again).toMatchObject({ kind: 'Replace', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', data: '<WLANProfile/>' }] });
    expect(o2.state.carry).toEqual([]);
    const r2 = receive(o2.state, deviceMsg('3', [{ kind: 'Status', cmdId: '1', msgRef: '2', cmdRef: again!.cmdId, cmd: 'Replace', data: '200' }]), { credentialsAccepted: true });
    expect(r2.completed).toEqual([expect.objectContaining({ uuid: 'wifi', ok: true, replacedAfter418: ['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml'] })]);
  });

  it('fails a whole Atomic when one child fails (507 / 216) and names the child that did', () => {
    const c = new Composer(start(), [], SERVER);
    c.add('lock', {
      spec: {
        verb: 'Atomic',
        commands: [
          { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled', format: 'int', data: '0' }] },
          { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength', format: 'int', data: '12' }] },
        ],
      },
    });
    const o = c.finish();
    const [atomic] = sentIds(o.xml);
    expect(atomic!.kind).toBe('Atomic');
    const kids = atomic!.kind === 'Atomic' ? atomic!.commands : [];
    const r = receive(o.state, fixture('atomic-rollback.xml', { ATOMIC: atomic!.cmdId, CHILD1: kids[0]!.cmdId, CHILD2: kids[1]!.cmdId }), { credentialsAccepted: true });
    expect(r.completed).toHaveLength(1);
    expect(r.completed[0]).toMatchObject({ uuid: 'lock', ok: false, error: 'Replace ./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength: 405 command not allowed' });
    expect(r.completed[0]!.statuses.map((s) => [s.path, s.verb, s.code])).toEqual([['0', 'Atomic', 507], ['0.0', 'Replace', 216], ['0.1', 'Replace', 405]]);
  });

  it('refuses to put a Get or an Atomic inside an Atomic', () => {
    expect(specProblem({ verb: 'Atomic', commands: [{ verb: 'Get', items: [{ target: './a' }] }] })).toMatch(/cannot hold a Get/);
    expect(specProblem({ verb: 'Atomic', commands: [{ verb: 'Atomic', commands: [{ verb: 'Delete', items: [{ target: './a' }] }] }] })).toMatch(/another Atomic/);
    expect(specProblem({ verb: 'Sequence', commands: [{ verb: 'Get', items: [{ target: './a' }] }] })).toBeUndefined();
    expect(new Composer(start(), [], SERVER).add('x', { spec: { verb: 'Atomic', commands: [{ verb: 'Get', items: [{ target: './a' }] }] } })).toBe('invalid');
  });
});

describe('messages bounded by the device MaxMsgSize', () => {
  const big = (n: number) => ({ spec: { verb: 'Replace' as const, items: [{ target: `./Vendor/MSFT/Policy/Config/Test/Node${n}`, format: 'chr', data: 'x'.repeat(700) }] } });

  it('sends what fits with Final (a complete package) and the rest in the next package, once the device has answered', () => {
    const s: SessionState = { ...start(), maxMsgSize: 2300 };
    const c = new Composer(s, [], SERVER);
    const results = [1, 2, 3, 4].map((n) => c.add(`u${n}`, big(n)));
    expect(results).toEqual(['added', 'added', 'full', 'full']);
    const o1 = c.finish();
    // OMA DM: the server closes every package it can, and sends nothing new before the statuses of what it sent.
    expect(o1).toMatchObject({ final: true, ended: false });
    expect(decodeServerMessage(o1.xml).final).toBe(true);
    expect(Buffer.byteLength(o1.xml)).toBeLessThanOrEqual(2300);
    expect(o1.state.carry).toEqual(['u3', 'u4']);
    const ids = sentIds(o1.xml).map((x) => x.cmdId);
    const r = receive(
      o1.state,
      deviceMsg('2', [
        { kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: ids[0]!, cmd: 'Replace', data: '200' },
        { kind: 'Status', cmdId: '2', msgRef: '1', cmdRef: ids[1]!, cmd: 'Replace', data: '200' },
      ]),
      { credentialsAccepted: true },
    );
    expect(r.completed.map((o) => o.uuid)).toEqual(['u1', 'u2']);
    expect(r.lost).toEqual([]);
    // Package by package until nothing waits; every message stays within the limit and is Final.
    let state = r.state;
    let statuses = r.statuses;
    const delivered: string[] = [];
    for (let msgId = 2; msgId < 10; msgId++) {
      const c2 = new Composer(state, statuses, SERVER);
      for (const u of state.carry) c2.add(u, big(Number(u.slice(1))));
      const o = c2.finish();
      expect(Buffer.byteLength(o.xml)).toBeLessThanOrEqual(2300);
      const m = decodeServerMessage(o.xml);
      expect(m.msgId).toBe(String(msgId));
      expect(m.final).toBe(true);
      const cmds = sentIds(o.xml);
      delivered.push(...cmds.map((x) => (x.kind === 'Replace' ? (x.items[0]!.target ?? '') : '')));
      expect(o.ended).toBe(cmds.length === 0);
      if (o.ended) break;
      const next = receive(o.state, deviceMsg(String(msgId + 1), cmds.map((x, i) => ({ kind: 'Status' as const, cmdId: String(i + 1), msgRef: m.msgId, cmdRef: x.cmdId, cmd: 'Replace', data: '200' }))), { credentialsAccepted: true });
      expect(next.completed.map((x) => x.uuid)).toHaveLength(cmds.length);
      state = next.state;
      statuses = next.statuses;
    }
    expect(delivered).toEqual(['./Vendor/MSFT/Policy/Config/Test/Node3', './Vendor/MSFT/Policy/Config/Test/Node4']);
  });

  it('ends the session with a message that carries no command, leaving what still waits for the caller to requeue', () => {
    // Only the SyncHdr status fits beside this big command: it waits, and the message (statuses only) ends the session.
    const statuses = Array.from({ length: 8 }, (_, i) => ({ kind: 'Status' as const, cmdId: String(i + 1), msgRef: '1', cmdRef: String(i), cmd: i ? 'Alert' : 'SyncHdr', ...(i ? {} : { targetRefs: [SERVER], sourceRefs: [DEVICE] }), data: '200' }));
    const sized = new Composer({ ...start(), maxMsgSize: 1e9 }, [statuses[0]!], SERVER);
    sized.add('probe', big(1));
    // Room for the command beside the SyncHdr status, not beside all eight statuses.
    const limit = Buffer.byteLength(sized.finish().xml) + 40;
    const c = new Composer({ ...start(), maxMsgSize: limit }, statuses, SERVER);
    expect(c.add('u1', big(1))).toBe('full');
    // One that fits still goes: a message without commands would end the session.
    expect(c.add('small', { spec: { verb: 'Get', items: [{ target: './DevDetail/SwV' }] } })).toBe('added');
    const o = c.finish();
    expect(o).toMatchObject({ final: true, ended: false });
    expect(o.state.carry).toEqual(['u1']);
    const c2 = new Composer({ ...start(), maxMsgSize: limit }, statuses, SERVER);
    expect(c2.add('u1', big(1))).toBe('full');
    const o2 = c2.finish();
    expect(o2).toMatchObject({ final: true, ended: true });
    expect(unfinishedWork(o2.state)).toEqual(['u1']);
  });

  it('waits for a Get\'s Results when the device sends them in the next message of its package', () => {
    const c = new Composer(start(), [], SERVER);
    c.add('g', { spec: { verb: 'Get', items: [{ target: './DevDetail/SwV' }] } });
    const o = c.finish();
    const [get] = sentIds(o.xml);
    const r1 = receive(o.state, deviceMsg('2', [{ kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: get!.cmdId, cmd: 'Get', data: '200' }], false), { credentialsAccepted: true });
    expect(r1.completed).toEqual([]);
    const r2 = receive(r1.state, deviceMsg('3', [{ kind: 'Results', cmdId: '2', msgRef: '1', cmdRef: get!.cmdId, items: [{ source: './DevDetail/SwV', format: 'chr', data: '10.0.26100.1' }] }]), { credentialsAccepted: true });
    expect(r2.completed).toEqual([expect.objectContaining({ uuid: 'g', ok: true, results: [{ source: './DevDetail/SwV', format: 'chr', data: '10.0.26100.1' }] })]);
    // Without Results by the end of the device's package, the Get is done with what it has.
    const r3 = receive(r1.state, deviceMsg('3', [{ kind: 'Alert', cmdId: '2', data: '1224' }]), { credentialsAccepted: true });
    expect(r3.completed).toEqual([expect.objectContaining({ uuid: 'g', ok: true, results: [] })]);
  });

  it('calls a command that can never fit too large', () => {
    const c = new Composer({ ...start(), maxMsgSize: 1000 }, [], SERVER);
    expect(c.add('huge', big(1))).toBe('too-large');
  });

  it('answers a device message without Final with Next Message: statuses and Alert 1222, no commands, no Final', () => {
    const r = receive(start(), deviceMsg('1', [{ kind: 'Alert', cmdId: '1', data: '1201' }], false), { credentialsAccepted: true });
    expect(r.clientFinal).toBe(false);
    const c = new Composer(r.state, r.statuses, SERVER);
    c.askForNextMessage();
    const o = c.finish();
    expect(o).toMatchObject({ final: false, ended: false });
    const m = decodeServerMessage(o.xml);
    expect(m.final).toBe(false);
    expect(m.body.map((b) => (b.kind === 'Alert' ? `Alert ${b.data}` : b.kind))).toEqual(['Status', 'Status', 'Alert 1222']);
  });
});

describe('commands a session loses', () => {
  it('counts a command the device did not answer before its Final as lost (to be requeued), and lists unfinished work', () => {
    const c = new Composer(start(), [], SERVER);
    c.add('a', { spec: { verb: 'Exec', items: [{ target: './Vendor/MSFT/RemoteLock/Lock', format: 'null', data: '' }] } });
    c.add('b', { spec: { verb: 'Get', items: [{ target: './DevDetail/SwV' }] } });
    const o = c.finish();
    expect(unfinishedWork(o.state).sort()).toEqual(['a', 'b']);
    const [exec] = sentIds(o.xml);
    const r = receive(o.state, deviceMsg('2', [{ kind: 'Status', cmdId: '1', msgRef: '1', cmdRef: exec!.cmdId, cmd: 'Exec', data: '200' }]), { credentialsAccepted: true });
    expect(r.completed.map((x) => x.uuid)).toEqual(['a']);
    expect(r.lost).toEqual(['b']);
    expect(unfinishedWork(r.state)).toEqual([]);
  });

  it('notes an abort (1223) and leaves the sent work for the service to requeue', () => {
    const c = new Composer(start(), [], SERVER);
    c.add('a', { spec: { verb: 'Delete', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp' }] } });
    const o = c.finish();
    const r = receive(o.state, fixture('abort-1223.xml'), { credentialsAccepted: true });
    expect(r.aborted).toBe(true);
    expect(r.lost).toEqual([]);
    expect(unfinishedWork(r.state)).toEqual(['a']);
    expect(r.statuses.map((s) => [s.cmdRef, s.cmd, s.data])).toEqual([['0', 'SyncHdr', '200'], ['2', 'Alert', '200']]);
  });

  it('ignores statuses for commands it never sent, and counts them', () => {
    const r = receive(start(), deviceMsg('2', [{ kind: 'Status', cmdId: '1', msgRef: '9', cmdRef: '99', cmd: 'Replace', data: '200' }]), { credentialsAccepted: true });
    expect(r.unmatched).toBe(1);
    expect(r.completed).toEqual([]);
  });
});
