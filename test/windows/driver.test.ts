// The Windows driver's edges: what deliver queues, how a queued command is
// rendered (secrets), and how outcomes become reported state.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Action, NativeItem } from '../../controller/reconcile/driver.js';
import { REPORTED_ITEMS, commandUuid } from '../../controller/reconcile/reconciler.js';
import type { Command, Store } from '../../controller/store/index.js';
import { compileWindowsNodes, cspHash } from '../../protocols/windows/csp.js';
import { WINDOWS_COMMAND, createWindowsDriver, deleteTargetFor, recordWindowsResults, renderWindowsCommand, type WindowsQueuedCommand } from '../../protocols/windows/driver.js';
import type { CommandOutcome } from '../../protocols/windows/syncml/session.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';

const DEV = 'D1D1D1D1D1D1D1D1D1D1D1D1D1D1D1D1';
const spec = { version: '1.0.0', settings: { passcode: { required: true, minLength: 8 }, restrictions: { allowCamera: false }, wifi: [{ ssid: 'Corp', security: 'wpa2-personal' as const, password: '${secret:CORP_PSK}' }] }, windows: { poll: { then: '4h' } } };
const items = compileWindowsNodes([{ name: 'b', hash: `sha256:${'9'.repeat(64)}`, spec }]).items;
const item = (suffix: string): NativeItem => items.find((i) => i.id.endsWith(suffix))!;
const payloadOf = (c: Command) => c.payload as WindowsQueuedCommand;

for (const backend of backends) {
  describe(`Windows driver on ${backend}`, () => {
    let tdb: TestDatabase;
    let store: Store;
    const driver = createWindowsDriver();
    const deliver = (actions: Action[], nonce = 'n1') => store.transaction((tx) => driver.deliver({ store, tx, secret: () => undefined, nonce: () => nonce }, [{ device: { id: DEV, platform: 'windows', osVersion: null, model: null }, actions }]));
    const queued = async () => (await store.commands.listForDevice(DEV)).reverse();

    beforeAll(async () => {
      tdb = await testDatabase(backend);
      store = await tdb.open();
      await store.devices.upsert({ id: DEV, platform: 'windows' });
    });
    afterAll(async () => tdb?.cleanup());

    it('queues the DeviceLock policies as one Atomic of Replace, Add for a new Wi-Fi profile, Replace for policies, then one read-back Get', async () => {
      await deliver(items.filter((i) => !i.id.includes('DMClient')).map((item) => ({ kind: 'install', item, replaces: false })));
      const cmds = await queued();
      expect(cmds.map((c) => c.type)).toEqual([WINDOWS_COMMAND.install, WINDOWS_COMMAND.install, WINDOWS_COMMAND.install, WINDOWS_COMMAND.readBack]);
      const [camera, lock, wifi, get] = cmds.map(payloadOf);
      expect(camera!.spec).toEqual({ verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', data: '0' }] });
      expect(lock!.spec).toEqual({
        verb: 'Atomic',
        commands: [
          { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled', format: 'int', data: '0' }] },
          { verb: 'Replace', items: [{ target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength', format: 'int', data: '8' }] },
        ],
      });
      expect(lock!.nodes!.map((n) => n.id)).toEqual(['./Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled', './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength']);
      expect(wifi).toMatchObject({ spec: { verb: 'Add', items: [{ target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml', format: 'chr' }] }, xmlTargets: ['./Vendor/MSFT/WiFi/Profile/Corp/WlanXml'], sensitive: true });
      expect(JSON.stringify(wifi)).toContain('${secret:CORP_PSK}');
      // Each policy at Policy/Config (what Muster set) and Policy/Result (what is in force).
      expect(get!.spec).toEqual({
        verb: 'Get',
        items: [
          { target: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera' },
          { target: './Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera' },
          { target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled' },
          { target: './Device/Vendor/MSFT/Policy/Result/DeviceLock/DevicePasswordEnabled' },
          { target: './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength' },
          { target: './Device/Vendor/MSFT/Policy/Result/DeviceLock/MinDevicePasswordLength' },
          { target: './Vendor/MSFT/WiFi/Profile/Corp/WlanXml' },
        ],
      });
      expect(get!.tolerate).toEqual([404]);
      // The same work from the same report queues nothing new.
      await deliver(items.filter((i) => !i.id.includes('DMClient')).map((item) => ({ kind: 'install', item, replaces: false })));
      expect(await queued()).toHaveLength(4);
      expect(cmds[0]!.uuid).toBe(commandUuid(DEV, WINDOWS_COMMAND.install, `${item('AllowCamera').id}=${item('AllowCamera').hash}`, 'n1'));
    });

    it('replaces a profile the device already holds, deletes what is no longer wanted, releases poll values it cannot delete', async () => {
      await store.devices.report(DEV, REPORTED_ITEMS, { items: { [item('IntervalForRemainingScheduledRetries').id]: { hash: 'old', status: 'installed' }, keep: { hash: 'k', status: 'installed' } } });
      await deliver(
        [
          { kind: 'install', item: item('WlanXml'), replaces: true },
          { kind: 'remove', id: './Vendor/MSFT/WiFi/Profile/Old/WlanXml' },
          { kind: 'remove', id: './Device/Vendor/MSFT/RootCATrustedCertificates/Root/0123456789ABCDEF0123456789ABCDEF01234567/EncodedCertificate' },
          { kind: 'remove', id: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera' },
          { kind: 'remove', id: item('IntervalForRemainingScheduledRetries').id },
        ],
        'n2',
      );
      const cmds = (await queued()).slice(4).map(payloadOf);
      expect(cmds.map((c) => [c.kind, c.spec.verb, 'items' in c.spec ? c.spec.items[0]!.target : ''])).toEqual([
        ['install', 'Replace', './Vendor/MSFT/WiFi/Profile/Corp/WlanXml'],
        ['remove', 'Delete', './Vendor/MSFT/WiFi/Profile/Old'],
        ['remove', 'Delete', './Device/Vendor/MSFT/RootCATrustedCertificates/Root/0123456789ABCDEF0123456789ABCDEF01234567'],
        ['remove', 'Delete', './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera'],
        ['readback', 'Get', './Vendor/MSFT/WiFi/Profile/Corp/WlanXml'],
      ]);
      expect(cmds[1]!.tolerate).toEqual([404]);
      const rep = (await store.devices.reportedMany([DEV], REPORTED_ITEMS)).get(DEV)!.state as { items: Record<string, unknown> };
      expect(Object.keys(rep.items)).toEqual(['keep']);
      expect(deleteTargetFor('./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera')).toBe('./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera');
    });

    it('resolves secrets only when rendering, XML-escaped inside the Wi-Fi profile, and refuses to render without them', async () => {
      const wifi = (await queued()).find((c) => payloadOf(c).kind === 'install' && JSON.stringify(c.payload).includes('WlanXml'))!;
      expect(() => renderWindowsCommand(wifi, { secret: () => undefined })).toThrow('secret CORP_PSK not set');
      const r = renderWindowsCommand(wifi, { secret: (n) => (n === 'CORP_PSK' ? 'a<b&"c"' : undefined) });
      const data = r.spec.verb === 'Add' || r.spec.verb === 'Replace' ? r.spec.items[0]!.data! : '';
      expect(data).toContain('<keyMaterial>a&lt;b&amp;&quot;c&quot;</keyMaterial>');
      const raw = { ...wifi, payload: { kind: 'install', spec: { verb: 'Replace', items: [{ target: './Vendor/MSFT/X', format: 'chr', data: 'k=${secret:CORP_PSK}' }] } } };
      const r2 = renderWindowsCommand(raw as Command, { secret: () => 'a<b' });
      expect(r2.spec).toEqual({ verb: 'Replace', items: [{ target: './Vendor/MSFT/X', format: 'chr', data: 'k=a<b' }] });
      expect(() => renderWindowsCommand({ ...wifi, payload: { RequestType: 'InstallProfile' } }, { secret: () => undefined })).toThrow(/not a Windows command/);
    });

    it('offers lock, wipe, restart and refresh as Exec / Get commands', async () => {
      const run = (kind: 'lock' | 'wipe' | 'restart' | 'refresh') => store.transaction((tx) => driver.adminAction!({ store, tx, actor: 'token:alice', requestId: `r-${kind}` }, { id: DEV, platform: 'windows', osVersion: null, model: null }, { kind }));
      for (const [kind, target] of [['lock', './Vendor/MSFT/RemoteLock/Lock'], ['wipe', './Device/Vendor/MSFT/RemoteWipe/doWipe'], ['restart', './Device/Vendor/MSFT/Reboot/RebootNow']] as const) {
        const r = await run(kind);
        const c = (await store.commands.get(r.commands[0]!))!;
        expect(c.priority).toBe(50);
        expect(payloadOf(c).spec).toEqual({ verb: 'Exec', items: [{ target, format: 'null', type: 'text/plain', data: '' }] });
      }
      const r = await run('refresh');
      const [inv, back] = await Promise.all(r.commands.map((u) => store.commands.get(u)));
      expect(payloadOf(inv!).spec).toMatchObject({ verb: 'Get', items: expect.arrayContaining([{ target: './DevDetail/SwV' }, { target: './Vendor/MSFT/DMClient/HWDevID' }]) });
      expect(payloadOf(back!).spec).toEqual({ verb: 'Get', items: [{ target: 'keep' }] });
      expect(driver.adminActions).toEqual(['lock', 'wipe', 'restart', 'refresh']);
    });

    describe('outcomes → reported state', () => {
      const cmd = (payload: WindowsQueuedCommand): Command => ({ payload, type: 'x', uuid: '00000000-0000-4000-8000-000000000000', deviceId: DEV } as Command);
      const outcome = (o: Partial<CommandOutcome>): CommandOutcome => ({ uuid: 'u', ok: true, statuses: [], results: [], ...o });
      const reported = async () => ((await store.devices.reportedMany([DEV], REPORTED_ITEMS)).get(DEV)!.state as { items: Record<string, { hash: string; status: string; error?: string }> }).items;
      const record = (c: Command, o: CommandOutcome) => store.transaction((tx) => recordWindowsResults(store, DEV, [{ command: c, outcome: o }], tx));
      const A = './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled';
      const B = './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength';
      const RA = './Device/Vendor/MSFT/Policy/Result/DeviceLock/DevicePasswordEnabled';

      beforeAll(async () => store.devices.report(DEV, REPORTED_ITEMS, { items: {} }));

      it('records a node that failed (405) as failed, and the node the Atomic rolled back as failed with the cause', async () => {
        await record(cmd({ kind: 'install', spec: { verb: 'Atomic', commands: [] }, nodes: [{ id: A, hash: 'ha' }, { id: B, hash: 'hb' }] }), outcome({ ok: false, error: 'Replace ' + B + ': 405 command not allowed', statuses: [{ path: '0', verb: 'Atomic', targets: [], code: 507 }, { path: '0.0', verb: 'Replace', targets: [A], code: 216 }, { path: '0.1', verb: 'Replace', targets: [B], code: 405 }] }));
        expect(await reported()).toEqual({
          [A]: { hash: 'ha', status: 'failed', error: `rolled back: Replace ${B}: 405 command not allowed` },
          [B]: { hash: 'hb', status: 'failed', error: 'Replace: 405 command not allowed' },
        });
      });

      it('takes read-back values as the truth: the same hash is installed, a missing node is gone, another value is drift', async () => {
        await record(cmd({ kind: 'install', spec: { verb: 'Replace', items: [] }, nodes: [{ id: A, hash: cspHash('int', '0') }] }), outcome({ statuses: [{ path: '0', verb: 'Replace', targets: [A], code: 200 }] }));
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: A, hash: cspHash('int', '0'), read: RA, verify: 'value', format: 'int' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [RA], code: 200 }], results: [{ source: RA, format: 'int', data: '0' }] }));
        expect((await reported())[A]).toEqual({ hash: cspHash('int', '0'), status: 'installed' });
        // Set and accepted, but another source wins: failed, so the reconciler does not loop.
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: A, hash: cspHash('int', '0'), read: RA, verify: 'value', format: 'int' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [RA], code: 200 }], results: [{ source: RA, format: 'int', data: '1' }] }));
        expect((await reported())[A]).toEqual({ hash: cspHash('int', '0'), status: 'failed', error: `set, but ${RA} reads back "1"` });
        // A refresh (no expected hash) records what is there: drift for the reconciler to repair.
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: B, read: B, verify: 'value' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [B], code: 200 }], results: [{ source: B, format: 'int', data: '6' }] }));
        expect((await reported())[B]).toEqual({ hash: cspHash('int', '6'), status: 'installed' });
        // Gone on the device (per-item status with TargetRef).
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: B, read: B, verify: 'value' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [B], code: 404, targetRefs: [B] }] }));
        expect((await reported())[B]).toBeUndefined();
        const events = await store.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM events WHERE topic = 'device.reported' AND payload->>'deviceId' = $1`, [DEV]);
        expect(events.rows[0]!.n).toBeGreaterThanOrEqual(5);
      });

      it('reads a policy at Policy/Config and Policy/Result: set and in force, set but overridden, or another value set', async () => {
        const P = './Device/Vendor/MSFT/Policy/Config/Update/AllowAutoUpdate';
        const R = './Device/Vendor/MSFT/Policy/Result/Update/AllowAutoUpdate';
        const h = cspHash('int', '2');
        const back = (config: string | undefined, result: string | undefined, expected: string | null = h) =>
          record(
            cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: P, ...(expected ? { hash: expected } : {}), read: R, config: P, verify: 'value', format: 'int' }] }),
            outcome({ statuses: [{ path: '0', verb: 'Get', targets: [P, R], code: 200 }], results: [...(config !== undefined ? [{ source: P, format: 'int', data: config }] : []), ...(result !== undefined ? [{ source: R, format: 'int', data: result }] : [])] }),
          );
        // Read back before the install's own status is in: Policy/Config shows Muster's value, Group Policy's is in force.
        await back('2', '0');
        expect((await reported())[P]).toEqual({ hash: h, status: 'failed', error: `set, but ${R} reads back "0"` });
        await store.devices.report(DEV, REPORTED_ITEMS, { items: {} });
        await back('2', '2');
        expect((await reported())[P]).toEqual({ hash: h, status: 'installed' });
        // Set by Muster, but Group Policy wins: failed for this very content, so the reconciler does not loop.
        await back('2', '0');
        expect((await reported())[P]).toEqual({ hash: h, status: 'failed', error: `set, but ${R} reads back "0"` });
        // A refresh finds another value set: drift (the reconciler sends the wanted one again).
        await back('5', '5', null);
        expect((await reported())[P]).toEqual({ hash: cspHash('int', '5'), status: 'installed' });
      });

      it('keeps a node the device took (200) but cannot read back (404): no reinstall at every poll', async () => {
        const C = './Device/Vendor/MSFT/Policy/Config/ADMX_Foo/Bar';
        const RC = './Device/Vendor/MSFT/Policy/Result/ADMX_Foo/Bar';
        const h = cspHash('chr', '<enabled/>');
        await record(cmd({ kind: 'install', spec: { verb: 'Replace', items: [] }, nodes: [{ id: C, hash: h }] }), outcome({ statuses: [{ path: '0', verb: 'Replace', targets: [C], code: 200 }] }));
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: C, hash: h, read: RC, verify: 'exists', format: 'chr' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [RC], code: 404 }] }));
        expect((await reported())[C]).toEqual({ hash: h, status: 'installed' });
        // A refresh (no expected hash) that finds it gone is drift.
        await record(cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: C, read: RC, verify: 'exists' }] }), outcome({ statuses: [{ path: '0', verb: 'Get', targets: [RC], code: 404 }] }));
        expect((await reported())[C]).toBeUndefined();
      });

      it('reads a Get of several nodes answered by one 404 Status: nodes with Results are there, the others are not', async () => {
        const P = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera';
        const RP = './Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera';
        const Q = './Vendor/MSFT/WiFi/Profile/Gone/WlanXml';
        await store.devices.report(DEV, REPORTED_ITEMS, { items: { [Q]: { hash: 'q', status: 'installed' } } });
        await record(
          cmd({ kind: 'readback', spec: { verb: 'Get', items: [] }, nodes: [{ id: P, read: RP, verify: 'value' }, { id: Q, read: Q, verify: 'exists' }] }),
          outcome({ statuses: [{ path: '0', verb: 'Get', targets: [RP, Q], code: 404 }], results: [{ source: RP, format: 'int', data: '0' }] }),
        );
        expect(await reported()).toEqual({ [P]: { hash: cspHash('int', '0'), status: 'installed' } });
      });

      it('forgets a node once deleted, already gone (404) or not deletable (405), keeps it on another failure', async () => {
        await store.devices.report(DEV, REPORTED_ITEMS, { items: { x: { hash: '1', status: 'installed' }, y: { hash: '1', status: 'installed' }, z: { hash: '1', status: 'installed' } } });
        const del = (id: string, code: number) => record(cmd({ kind: 'remove', spec: { verb: 'Delete', items: [{ target: id }] }, nodes: [{ id }] }), outcome({ ok: code < 300, statuses: [{ path: '0', verb: 'Delete', targets: [id], code }] }));
        await del('x', 200);
        await del('y', 404);
        await del('z', 500);
        expect(Object.keys(await reported())).toEqual(['z']);
      });
    });
  });
}
