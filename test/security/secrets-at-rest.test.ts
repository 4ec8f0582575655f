// Secrets at rest: what someone holding a copy of the database (a pg_dump, a
// backup, a replica) learns about a Mac's unlock PIN, an Android reset
// password or a Mac's Bootstrap Token. The PIN goes through the real admin
// action path and the real Apple command channel; the database is then read
// the way an attacker would: pg_dump on PostgreSQL, and every column of every
// row on both backends.
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminActionError, parseAdminAction, runAdminAction } from '../../controller/actions/admin.js';
import type { Platform } from '../../controller/policy/types.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { keyring, randomKeyring } from '../../controller/secrets/keys.js';
import { SealError, createSealer } from '../../controller/secrets/seal.js';
import { sealBinding } from '../../controller/store/commands.js';
import { loadMigrations, migrate } from '../../controller/store/migrate.js';
import { type Store, isSealed } from '../../controller/store/index.js';
import { createAndroidDriver } from '../../protocols/android/driver.js';
import { createAppleDriver, renderAppleCommand } from '../../protocols/apple/driver.js';
import { type AppleService, createAppleService } from '../../protocols/apple/service.js';
import { parseCheckin, parseReport } from '../../protocols/apple/wire.js';
import { type Backend, type TestDatabase, backends, databaseUrl, testDatabase } from '../support/db.js';
import { missingTool } from '../support/tools.js';

const TOPIC = 'com.apple.mgmt.External.1f3c0a9e-4b8d-4c2e-9a7f-6d5e4c3b2a10';
const MAC = '5A1D3B2C-9F4E-4D6A-8B7C-0E1F2A3B4C5D';
const OTHER_MAC = '0C9E8D7F-1A2B-4C3D-8E9F-A0B1C2D3E4F5';
const PHONE = 'android-3f9c1e';

const noPgDump = backends.includes('postgres') ? missingTool('pg_dump', 'postgresql-client') : undefined;

/**
 * Text that can hold a six-digit run by chance and never a secret: timestamps
 * (microseconds), UUIDs, long hex (hashes, key ids). Removed before looking
 * for a PIN in clear, so a match is a leak, not a coincidence. Encoded forms
 * are looked for in the untouched text.
 */
const withoutNoise = (s: string) =>
  s
    .replace(/\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?|Z)?/g, '<time>')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<uuid>')
    .replace(/[0-9a-f]{16,}/gi, '<hex>');

/** Every base64 (and base64url) form the secret can take inside a longer encoded string, at each byte alignment. */
function base64Forms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const out = new Set<string>();
  for (const off of [0, 1, 2]) {
    const b64 = Buffer.concat([Buffer.alloc(off), bytes]).toString('base64');
    // Only the characters whose six bits all come from the secret.
    const core = b64.slice(Math.ceil((8 * off) / 6), Math.floor((8 * (off + bytes.length)) / 6));
    out.add(core).add(core.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return [...out];
}

/** The ways `secret` shows in `dump`: in clear, base64 or hex. */
function leaks(dump: string, secret: string): string[] {
  const found: string[] = [];
  if (withoutNoise(dump).includes(secret)) found.push('clear');
  for (const f of base64Forms(secret)) if (dump.includes(f)) found.push(`base64 ${f}`);
  const hex = Buffer.from(secret, 'utf8').toString('hex');
  if (dump.toLowerCase().includes(hex)) found.push(`hex ${hex}`);
  return found;
}

describe('the leak detector', () => {
  it('finds a secret in clear, in base64 at any alignment and in hex, and not in the noise it removes', () => {
    const pin = '204816';
    expect(leaks(`{"PIN": "${pin}"}`, pin)).toEqual(['clear']);
    for (const prefix of ['', 'a', 'ab']) expect(leaks(Buffer.from(`${prefix}${pin}xyz`).toString('base64'), pin)).toEqual([expect.stringMatching(/^base64/)]);
    expect(leaks(`\\x${Buffer.from(`k=${pin};`).toString('hex')}`, pin)).toEqual([`hex ${Buffer.from(pin).toString('hex')}`]);
    expect(leaks(`2025-01-02 03:04:05.${pin}+00 c0ffee${pin}deadbeefcafe`, pin)).toEqual([]);
  });
});

describe.each(backends)('secrets at rest on %s', (backend: Backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let svc: AppleService;
  let drivers: Map<Platform, PlatformDriver>;
  const certs: Record<string, string> = {};

  const openWith = async (keys: Parameters<TestDatabase['open']>[0]) => {
    await store.close();
    store = await tdb.open(keys);
    svc = appleService(store);
  };
  const appleService = (s: Store) => createAppleService({ store: s, log: { info: () => {}, warn: () => {} }, renderCommand: (c) => renderAppleCommand(c, { secret: () => undefined }), inventoryOnEnroll: false });
  const checkin = (udid: string, dict: Record<string, unknown>) => svc.checkin(parseCheckin({ UDID: udid, ...dict }), { certSha256: certs[udid]! });
  const connect = (udid: string, dict: Record<string, unknown>) => svc.connect(parseReport({ UDID: udid, ...dict }), { certSha256: certs[udid]! });

  /** Every row of every table in the store's schema, as text: what a copy of the database holds. */
  const rows = async (): Promise<string> => {
    const tables = await store.db.query<{ t: string }>(`SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1`, [tdb.schema]);
    expect(tables.rows.map((r) => r.t)).toEqual(expect.arrayContaining(['commands', 'command_results', 'enrollments', 'audit_log', 'events']));
    const out: string[] = [];
    for (const { t } of tables.rows) {
      const r = await store.db.query<{ row: string }>(`SELECT x::text AS row FROM ${tdb.schema}.${t} x`);
      out.push(`-- ${t}`, ...r.rows.map((x) => x.row));
    }
    return out.join('\n');
  };
  const pgDump = () => execFileSync('pg_dump', ['--schema', tdb.schema, '--no-owner', databaseUrl!], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });

  /** The database as an attacker reads it: every row, and on PostgreSQL a real pg_dump too. */
  const dumps = async (): Promise<Array<[string, string]>> => {
    const all: Array<[string, string]> = [['every row', await rows()]];
    if (backend === 'postgres' && !noPgDump) all.push(['pg_dump', pgDump()]);
    return all;
  };
  const expectNoLeak = async (secret: string, ...sealed: string[]) => {
    for (const [how, text] of await dumps()) {
      expect(leaks(text, secret), `${secret} in ${how}`).toEqual([]);
      for (const s of sealed) expect(text.includes(s), `the sealed value in ${how}`).toBe(false);
    }
  };

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    svc = appleService(store);
    drivers = new Map<Platform, PlatformDriver>([
      ['apple', createAppleDriver()],
      ['android', createAndroidDriver()],
    ]);
    for (const udid of [MAC, OTHER_MAC]) {
      certs[udid] = randomBytes(32).toString('hex');
      await store.identities.add({ certSha256: certs[udid]!, platform: 'apple', protocol: 'apple-scep', serialNumber: randomBytes(8).toString('hex'), notAfter: new Date(Date.now() + 86_400_000) });
      expect(await checkin(udid, { MessageType: 'Authenticate', Topic: TOPIC, OSVersion: '15.1', ProductName: 'Mac15,3', SerialNumber: `C02${udid.slice(0, 8)}` })).toEqual({ status: 200 });
    }
    await store.devices.upsert({ id: PHONE, platform: 'android', model: 'Pixel 8' });
  });
  afterAll(async () => tdb?.cleanup());

  it.skipIf(backend === 'postgres' && !!noPgDump)(
    "keeps a Mac's unlock PIN out of every column and out of pg_dump while the lock is queued, delivers it, and drops even its sealed form once the lock is final",
    async () => {
      const lock = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, { message: 'Return to IT' }), 'token:alice');
      const pin = lock.secrets!.pin!;
      expect(pin).toMatch(/^\d{6}$/);
      const queued = (await store.commands.get(lock.commands[0]!))!;
      const sealed = (queued.payload as { fields: { PIN: string } }).fields.PIN;
      expect(isSealed(sealed)).toBe(true);
      expect(queued).toMatchObject({ state: 'pending', sealed: [['fields', 'PIN']], payload: { fields: { Message: 'Return to IT' } } });
      await expectNoLeak(pin);

      // The Mac gets it in clear, and only the Mac.
      const sent = await connect(MAC, { Status: 'Idle' });
      expect(sent).toMatchObject({ status: 200, uuid: queued.uuid, command: { CommandUUID: queued.uuid, Command: { RequestType: 'DeviceLock', PIN: pin, Message: 'Return to IT' } } });
      await expectNoLeak(pin);

      expect(await connect(MAC, { Status: 'Acknowledged', CommandUUID: queued.uuid })).toEqual({ status: 200 });
      const done = (await store.commands.get(queued.uuid))!;
      expect(done).toMatchObject({ state: 'completed', sealed: null, payload: { RequestType: 'DeviceLock', fields: { Message: 'Return to IT' } } });
      expect((done.payload as { fields: Record<string, unknown> }).fields).not.toHaveProperty('PIN');
      await expectNoLeak(pin, sealed);
    },
  );

  it('does the same for an Android reset password, sealed in the queue and gone when the command ends', async () => {
    const password = `Tr0ub4dor&${randomBytes(6).toString('hex')}`;
    const reset = await runAdminAction(store, drivers, PHONE, parseAdminAction('reset-passcode', PHONE, { newPasscode: password }), 'token:alice');
    const queued = (await store.commands.get(reset.commands[0]!))!;
    const sealed = (queued.payload as { newPassword: string }).newPassword;
    expect(isSealed(sealed)).toBe(true);
    await expectNoLeak(password);
    // What the AMAPI worker claims is what it sends: the password itself.
    const [claimed] = await store.commands.claim({ types: ['amapi.issueCommand'] });
    expect(claimed).toMatchObject({ uuid: queued.uuid, payload: { type: 'RESET_PASSWORD', newPassword: password } });
    await store.commands.report(queued.uuid, { status: 'failed', error: 'the device refused the password' });
    expect(await store.commands.get(queued.uuid)).toMatchObject({ state: 'failed', sealed: null, payload: { type: 'RESET_PASSWORD' } });
    await expectNoLeak(password, sealed);
  });

  it('drops the secret whichever way a command ends: completed, failed, cleared, expired, out of attempts', async () => {
    const device = MAC;
    const enqueue = async (o: { expiresAt?: Date; maxAttempts?: number } = {}) => {
      const uuid = randomUUID();
      await store.commands.enqueue({ uuid, deviceId: device, type: 'DeviceLock', payload: { RequestType: 'DeviceLock', fields: { PIN: '135790' } }, sealed: [['fields', 'PIN']], priority: -100, ...o });
      return uuid;
    };
    const ends: Array<[string, () => Promise<string[]>]> = [
      ['completed', async () => { const u = await enqueue(); await store.commands.report(u, { status: 'completed' }); return [u]; }],
      ['failed', async () => { const u = await enqueue(); await store.commands.report(u, { status: 'failed', error: 'x' }); return [u]; }],
      ['cleared (expired)', async () => { const u = [await enqueue(), await enqueue()]; await store.commands.clearForDevice(device, 'the device checked out'); return u; }],
      ['expired by the sweep', async () => { const u = await enqueue({ expiresAt: new Date(Date.now() - 1000) }); await store.commands.sweep(); return [u]; }],
      ['out of attempts', async () => {
        const u = await enqueue({ maxAttempts: 1 });
        await store.db.query(`UPDATE commands SET attempts = 1, state = 'sent', not_before = now() - interval '1 second' WHERE uuid = $1`, [u]);
        await store.commands.sweep();
        return [u];
      }],
    ];
    for (const [how, end] of ends) {
      for (const u of await end()) {
        const c = (await store.commands.get(u))!;
        expect(['completed', 'failed', 'expired'], how).toContain(c.state);
        expect(c.sealed, how).toBeNull();
        expect(c.payload, how).toEqual({ RequestType: 'DeviceLock', fields: {} });
      }
    }
    // And the database itself refuses a finished command that still holds one.
    const u = await enqueue();
    await expect(store.db.query(`UPDATE commands SET state = 'completed' WHERE uuid = $1`, [u])).rejects.toThrow(/commands_finished_hold_no_secret/);
    await store.commands.clearForDevice(device, 'tidy up');
  });

  it('does not open a sealed PIN moved to another Mac or another command: that command fails, unsent, and the queue goes on', async () => {
    const lock = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, { pin: '802113' }), 'token:alice');
    const sealed = ((await store.commands.get(lock.commands[0]!))!.payload as { fields: { PIN: string } }).fields.PIN;
    // Someone with write access to the table copies it into a lock for another Mac, and into another lock for the same Mac.
    const moved = await runAdminAction(store, drivers, OTHER_MAC, parseAdminAction('lock', OTHER_MAC, { pin: '111111' }), 'token:mallory');
    const other = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, { pin: '222222' }), 'token:mallory');
    for (const uuid of [moved.commands[0]!, other.commands[0]!]) {
      await store.db.query(`UPDATE commands SET payload = jsonb_set(payload, '{fields,PIN}', to_jsonb($2::text)) WHERE uuid = $1`, [uuid, sealed]);
    }
    const behind = randomUUID();
    await store.commands.enqueue({ uuid: behind, deviceId: OTHER_MAC, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: {} }, priority: 10 });

    const next = await connect(OTHER_MAC, { Status: 'Idle' });
    expect(next).toMatchObject({ status: 200, uuid: behind });
    const failed = (await store.commands.get(moved.commands[0]!))!;
    expect(failed).toMatchObject({ state: 'failed', sealed: null, lastError: expect.stringMatching(/^not sent: the sealed value does not open/) });
    expect(failed.payload).toEqual({ RequestType: 'DeviceLock', fields: {} });

    // On the same Mac: the original still opens, the copy in the other command does not.
    const [first] = await store.commands.nextForDevice(MAC, { limit: 5 }).then((cs) => cs.filter((c) => c.uuid === lock.commands[0]));
    expect(first).toMatchObject({ payload: { fields: { PIN: '802113' } } });
    expect(await store.commands.get(other.commands[0]!)).toMatchObject({ state: 'failed', lastError: expect.stringMatching(/does not open/) });

    // A changed byte does not open either.
    const sealer = createSealer(tdb.keys);
    const binding = sealBinding(MAC, lock.commands[0]!, ['fields', 'PIN']);
    expect(sealer.open(sealed, binding)).toBe('802113');
    const flipped = sealed.slice(0, -2) + (sealed.at(-2) === 'A' ? 'B' : 'A') + sealed.at(-1);
    expect(() => sealer.open(flipped, binding)).toThrow(SealError);
    expect(() => sealer.open(sealed, sealBinding(OTHER_MAC, lock.commands[0]!, ['fields', 'PIN']))).toThrow(/does not open/);
    expect(() => sealer.open(sealed, sealBinding(MAC, lock.commands[0]!, ['fields', 'Message']))).toThrow(/does not open/);
    await store.commands.clearForDevice(MAC, 'tidy up');
    await store.commands.clearForDevice(OTHER_MAC, 'tidy up');
  });

  it('keeps the Bootstrap Token sealed in the enrollment state and hands it back; moved to another Mac it does not open', async () => {
    const token = randomBytes(48);
    expect(await checkin(MAC, { MessageType: 'SetBootstrapToken', BootstrapToken: token })).toEqual({ status: 200 });
    const state = (await store.devices.getEnrollment(MAC))!.state;
    expect(isSealed(state.bootstrapToken)).toBe(true);
    for (const [how, text] of await dumps()) {
      expect(text.includes(token.toString('base64')), how).toBe(false);
      expect(text.toLowerCase().includes(token.toString('hex')), how).toBe(false);
      expect(leaks(text, token.toString('base64')), how).toEqual([]);
    }
    expect(await checkin(MAC, { MessageType: 'GetBootstrapToken' })).toEqual({ status: 200, body: { BootstrapToken: token } });

    await store.devices.patchEnrollmentState(OTHER_MAC, { bootstrapToken: state.bootstrapToken });
    await expect(checkin(OTHER_MAC, { MessageType: 'GetBootstrapToken' })).rejects.toThrow(/does not open/);
    await store.devices.patchEnrollmentState(OTHER_MAC, { bootstrapToken: null });
    expect(await checkin(OTHER_MAC, { MessageType: 'GetBootstrapToken' })).toEqual({ status: 200, body: {} });

    // One escrowed before tokens were sealed is handed back, and sealed from then on.
    const legacy = randomBytes(32);
    await store.devices.patchEnrollmentState(OTHER_MAC, { bootstrapToken: legacy.toString('base64') });
    expect(await checkin(OTHER_MAC, { MessageType: 'GetBootstrapToken' })).toEqual({ status: 200, body: { BootstrapToken: legacy } });
    expect(isSealed((await store.devices.getEnrollment(OTHER_MAC))!.state.bootstrapToken)).toBe(true);
    expect(await checkin(OTHER_MAC, { MessageType: 'GetBootstrapToken' })).toEqual({ status: 200, body: { BootstrapToken: legacy } });
  });

  it('fails clearly under the wrong key, and opens again once the old key is on the keyring (rotation)', async () => {
    const old = tdb.keys;
    const lock = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, { pin: '640320' }), 'token:alice');
    const wrong = randomKeyring();
    await openWith({ keys: wrong });
    try {
      expect(await store.commands.nextForDevice(MAC)).toEqual([]);
      expect(await store.commands.get(lock.commands[0]!)).toMatchObject({ state: 'failed', sealed: null, lastError: `not sent: sealed with key ${old.current.id}, which is not configured (current key ${wrong.current.id}; an older key goes in MUSTER_SECRET_KEY_PREVIOUS)` });
      await expect(checkin(MAC, { MessageType: 'GetBootstrapToken' })).rejects.toThrow(`sealed with key ${old.current.id}, which is not configured`);

      // A new key with the old one kept: the old seals open, new ones use the new key.
      const rotated = keyring(wrong.current, [old.current]);
      await openWith({ keys: rotated });
      const before = (await store.devices.getEnrollment(MAC))!.state.bootstrapToken as string;
      expect(before.startsWith(`msk1.${old.current.id}.`)).toBe(true);
      const got = (await checkin(MAC, { MessageType: 'GetBootstrapToken' })) as { body?: { BootstrapToken?: Buffer } };
      expect(got).toMatchObject({ status: 200, body: { BootstrapToken: expect.any(Buffer) } });
      // Read once, it is sealed again under the new key, so the old key can leave the keyring later.
      const after = (await store.devices.getEnrollment(MAC))!.state.bootstrapToken as string;
      expect(after.startsWith(`msk1.${wrong.current.id}.`)).toBe(true);
      expect(await checkin(MAC, { MessageType: 'GetBootstrapToken' })).toEqual(got);
      const again = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, { pin: '640321' }), 'token:alice');
      const sealed = ((await store.commands.get(again.commands[0]!))!.payload as { fields: { PIN: string } }).fields.PIN;
      expect(sealed.startsWith(`msk1.${wrong.current.id}.`)).toBe(true);
      expect(await store.commands.nextForDevice(MAC)).toMatchObject([{ uuid: again.commands[0], payload: { fields: { PIN: '640321' } } }]);
      await store.commands.clearForDevice(MAC, 'tidy up');
    } finally {
      await openWith({ keys: old });
    }
  });

  it('refuses a lock or a password reset when no key is configured, and stores nothing', async () => {
    await openWith({ keys: undefined });
    try {
      const before = await store.commands.unfinishedCount(MAC);
      const err = await runAdminAction(store, drivers, MAC, parseAdminAction('lock', MAC, {}), 'token:alice').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AdminActionError);
      expect(err).toMatchObject({ status: 503, message: expect.stringMatching(/DeviceLock for .* carries a secret \(fields\.PIN\) and no secret key is configured: it is refused rather than stored in clear/) });
      await expect(runAdminAction(store, drivers, PHONE, parseAdminAction('reset-passcode', PHONE, { newPasscode: 'abcd1234' }), 'token:alice')).rejects.toMatchObject({ status: 503 });
      expect(await store.commands.unfinishedCount(MAC)).toBe(before);
      expect(await store.commands.unfinishedCount(PHONE)).toBe(0);
      // Nor can a Bootstrap Token be escrowed in clear.
      await expect(checkin(MAC, { MessageType: 'SetBootstrapToken', BootstrapToken: randomBytes(16) })).rejects.toThrow(/no secret key is configured/);
    } finally {
      await openWith({ keys: tdb.keys });
    }
  });
});

describe.each(backends)('a database from before secrets were sealed, upgraded by migration 006, on %s', (backend: Backend) => {
  let tdb: TestDatabase;
  let store: Store;
  const MAC_ID = 'C3D4E5F6-0000-4000-8000-000000000006';
  const PIN_DONE = '482913';
  const PIN_QUEUED = '907351';
  const PASSWORD_QUEUED = 'old-clear-password-77';
  const uuids = { done: randomUUID(), queued: randomUUID(), android: randomUUID() };

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open({ migrate: false });
    await migrate(store.db, loadMigrations().filter((m) => m.version < 6));
    // What older versions stored: the PIN and the password in clear in the payload.
    await store.db.query(`INSERT INTO devices (id, platform, model) VALUES ($1, 'apple', 'Mac15,3'), ('android-legacy', 'android', 'Pixel 8')`, [MAC_ID]);
    const insert = (uuid: string, device: string, type: string, payload: unknown, state: string) =>
      store.db.query(`INSERT INTO commands (uuid, device_id, type, payload, state, finished_at) VALUES ($1, $2, $3, $4::text::jsonb, $5, CASE WHEN $5 IN ('completed', 'failed', 'expired') THEN now() END)`, [uuid, device, type, JSON.stringify(payload), state]);
    await insert(uuids.done, MAC_ID, 'DeviceLock', { RequestType: 'DeviceLock', fields: { PIN: PIN_DONE, Message: 'old' } }, 'completed');
    await insert(uuids.queued, MAC_ID, 'DeviceLock', { RequestType: 'DeviceLock', fields: { PIN: PIN_QUEUED } }, 'pending');
    await insert(uuids.android, 'android-legacy', 'amapi.issueCommand', { type: 'RESET_PASSWORD', newPassword: PASSWORD_QUEUED }, 'pending');
    await store.migrate();
  });
  afterAll(async () => tdb?.cleanup());

  it('removes the secrets of finished commands at once, and those of unfinished ones when they finish', async () => {
    expect(await store.commands.get(uuids.done)).toMatchObject({ state: 'completed', sealed: null, payload: { RequestType: 'DeviceLock', fields: { Message: 'old' } } });
    const dump = (await store.db.query<{ row: string }>(`SELECT x::text AS row FROM commands x`)).rows.map((r) => r.row).join('\n');
    expect(leaks(dump, PIN_DONE)).toEqual([]);
    // Still delivered as queued (the migration cannot seal without the key), then gone.
    expect(await store.commands.get(uuids.queued)).toMatchObject({ sealed: [['fields', 'PIN']] });
    expect(await store.commands.nextForDevice(MAC_ID)).toMatchObject([{ uuid: uuids.queued, payload: { fields: { PIN: PIN_QUEUED } } }]);
    await store.commands.report(uuids.queued, { status: 'completed' });
    expect(await store.commands.get(uuids.queued)).toMatchObject({ sealed: null, payload: { RequestType: 'DeviceLock', fields: {} } });
    await store.commands.clearForDevice('android-legacy', 'the device was deleted');
    expect(await store.commands.get(uuids.android)).toMatchObject({ state: 'expired', sealed: null, payload: { type: 'RESET_PASSWORD' } });
    const after = (await store.db.query<{ row: string }>(`SELECT x::text AS row FROM commands x`)).rows.map((r) => r.row).join('\n');
    for (const s of [PIN_DONE, PIN_QUEUED, PASSWORD_QUEUED]) expect(leaks(after, s), s).toEqual([]);
  });
});
