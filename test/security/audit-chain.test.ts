// The audit chain against someone who can write the database: a superuser (or
// a table owner) who bypasses the append-only triggers, rewrites rows and
// recomputes hashes, or cuts the tail off. The chain is keyed outside the
// database, so a forged row does not verify; a cut tail shows against an
// anchored head. On PostgreSQL, the least-privilege role from
// controller/store/least-privilege.sql cannot do any of it in the first place.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../controller/package-root.js';
import { keyring, randomKeyring } from '../../controller/secrets/keys.js';
import { silentLogger } from '../../controller/store/db.js';
import { loadMigrations, migrate } from '../../controller/store/migrate.js';
import { type AuditHead, type AuditRecord, type Store, GENESIS_HASH, auditHash, keyedAuditHash, openStore } from '../../controller/store/index.js';
import { type Backend, type TestDatabase, backends, databaseUrl, testDatabase } from '../support/db.js';
import { missingTool } from '../support/tools.js';

const noPsql = backends.includes('postgres') ? missingTool('psql', 'postgresql-client') : undefined;

describe.each(backends)('the audit chain against a database superuser on %s', (backend: Backend) => {
  let tdb: TestDatabase;
  let store: Store;

  /** Runs SQL with the append-only triggers out of the way, as only a superuser or the table's owner can. */
  const bypassingTriggers = async (sql: string, params: unknown[] = []) => {
    if (backend === 'postgres') {
      // ALTER TABLE … DISABLE TRIGGER: what a superuser or the table's owner can do on a server.
      await store.db.transaction(async (tx) => {
        await tx.query('ALTER TABLE audit_log DISABLE TRIGGER USER');
        await tx.query(sql, params);
        await tx.query('ALTER TABLE audit_log ENABLE TRIGGER USER');
      });
    } else {
      // PGlite runs as a superuser: session_replication_role = replica skips ordinary triggers.
      await store.db.transaction(async (tx) => {
        await tx.query(`SET LOCAL session_replication_role = replica`);
        await tx.query(sql, params);
      });
    }
  };
  const rows = () => store.audit.list({ limit: 10_000 });
  const head = async (): Promise<AuditHead> => {
    const v = await store.audit.verify();
    if (!v.ok) throw new Error(`chain broken: ${v.reason}`);
    return v.head;
  };
  /** Puts a row back exactly as it was. */
  const restore = (r: AuditRecord) =>
    bypassingTriggers(`UPDATE audit_log SET actor = $2, details = $3::text::jsonb, hash = $4, key_id = $5, prev_hash = $6 WHERE id = $1`, [r.id, r.actor, JSON.stringify(r.details), r.hash, r.keyId, r.prevHash]);

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    // A database from before the chain was keyed: migrated up to 006 exclusive, written the old way.
    store = await tdb.open({ migrate: false });
    await migrate(store.db, loadMigrations().filter((m) => m.version < 6));
    let prev = GENESIS_HASH;
    for (let id = 1; id <= 3; id++) {
      const r = { id, at: new Date(Date.UTC(2025, 0, id)), actor: 'alice', action: 'rollout.promote', subject: `rollout/r${id}`, details: { step: id } };
      const hash = auditHash(prev, r);
      await store.db.query(`INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)`, [id, r.at, r.actor, r.action, r.subject, JSON.stringify(r.details), prev, hash]);
      prev = hash;
    }
    await store.migrate();
    for (let i = 0; i < 5; i++) await store.audit.append({ actor: 'controller', action: 'policy.apply', subject: `commit/c${i}`, details: { i } });
  });
  afterAll(async () => tdb?.cleanup());

  it('verifies a log keyed after an upgrade, and says from which row it is keyed', async () => {
    expect(await store.audit.verify()).toEqual({ ok: true, rows: 8, head: { seq: 8, hash: (await rows())[7]!.hash }, keyedFrom: 4, keyIds: [tdb.keys.current.id] });
    const all = await rows();
    expect(all.map((r) => r.keyId)).toEqual([null, null, null, ...Array(5).fill(tdb.keys.current.id)]);
    // The first keyed row seals the plain history before it: its HMAC covers row 3's hash.
    expect(all[3]!.prevHash).toBe(all[2]!.hash);
  });

  it('detects a row forged with a recomputed plain SHA-256, keyed or passed off as unkeyed', async () => {
    const victim = (await rows())[5]!; // row 6, keyed
    const forged = { ...victim, actor: 'mallory' };
    // Keeps its key id: the HMAC does not match.
    await bypassingTriggers(`UPDATE audit_log SET actor = 'mallory', hash = $2 WHERE id = $1`, [victim.id, auditHash(victim.prevHash, forged)]);
    expect(await store.audit.verify()).toEqual({ ok: false, rows: 5, badId: 6, reason: 'hash does not match the row content' });
    // Passed off as a row from before keying: not after keyed ones.
    await bypassingTriggers(`UPDATE audit_log SET key_id = NULL WHERE id = $1`, [victim.id]);
    expect(await store.audit.verify()).toEqual({ ok: false, rows: 5, badId: 6, reason: 'the row is not keyed, but the chain is keyed from row 4: an unkeyed row after keyed ones is forged' });
    // Under a key id this deployment never had.
    const stranger = randomKeyring().current;
    await bypassingTriggers(`UPDATE audit_log SET key_id = $2, hash = $3 WHERE id = $1`, [victim.id, stranger.id, keyedAuditHash(stranger.derive('audit'), stranger.id, victim.prevHash, forged)]);
    expect(await store.audit.verify()).toMatchObject({ ok: false, badId: 6, reason: expect.stringMatching(`^the row is keyed with key ${stranger.id}, which is not configured`) });
    // Under the right key id but another key.
    await bypassingTriggers(`UPDATE audit_log SET key_id = $2, hash = $3 WHERE id = $1`, [victim.id, victim.keyId, keyedAuditHash(stranger.derive('audit'), victim.keyId!, victim.prevHash, forged)]);
    expect(await store.audit.verify()).toMatchObject({ ok: false, badId: 6, reason: 'hash does not match the row content' });
    await restore(victim);
    expect((await store.audit.verify()).ok).toBe(true);
  });

  it('detects a forged row appended at the end with a plain SHA-256', async () => {
    const { seq, hash } = await head();
    const r = { id: seq + 1, at: new Date(), actor: 'mallory', action: 'token.create', subject: 'token/x', details: {} };
    await bypassingTriggers(`INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, '{}'::jsonb, $6, $7)`, [r.id, r.at, r.actor, r.action, r.subject, hash, auditHash(hash, r)]);
    expect(await store.audit.verify()).toMatchObject({ ok: false, badId: seq + 1, reason: expect.stringMatching(/^the row is not keyed/) });
    await bypassingTriggers('DELETE FROM audit_log WHERE id = $1', [r.id]);
  });

  it('detects the tail cut off (or the whole log emptied) against an anchored head, which the chain alone cannot', async () => {
    const anchored = await head();
    for (let i = 0; i < 3; i++) await store.audit.append({ actor: 'alice', action: 'device.wipe', subject: `device/d${i}`, details: {} });
    // The log grew after the anchor: still fine.
    expect(await store.audit.verify({ expectHead: anchored })).toMatchObject({ ok: true, rows: anchored.seq + 3 });
    const kept = await rows();

    await bypassingTriggers('DELETE FROM audit_log WHERE id >= $1', [anchored.seq - 1]);
    // What is left is a valid, shorter chain ...
    expect(await store.audit.verify()).toMatchObject({ ok: true, rows: anchored.seq - 2 });
    // ... which the anchored head exposes.
    expect(await store.audit.verify({ expectHead: anchored })).toEqual({
      ok: false,
      rows: anchored.seq - 2,
      badId: anchored.seq,
      reason: `the log ends at row ${anchored.seq - 2}, before the anchored head: rows were removed from the end (or this is another database)`,
    });
    await bypassingTriggers('TRUNCATE audit_log');
    expect(await store.audit.verify({ expectHead: anchored })).toMatchObject({ ok: false, rows: 0, badId: anchored.seq, reason: expect.stringMatching(/^the log ends at row 0/) });

    // Rewritten from scratch as a plain, unkeyed chain of the same length: verifies alone, not against the anchor.
    let prev = GENESIS_HASH;
    for (const r of kept) {
      const hash = auditHash(prev, r);
      await bypassingTriggers(`INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)`, [r.id, r.at, r.actor, r.action, r.subject, JSON.stringify(r.details), prev, hash]);
      prev = hash;
    }
    expect(await store.audit.verify()).toMatchObject({ ok: true, keyedFrom: null });
    expect(await store.audit.verify({ expectHead: anchored })).toMatchObject({ ok: false, badId: anchored.seq, reason: expect.stringMatching(/^the row's hash is [0-9a-f]{64}, not the anchored head's/) });

    // Put the real log back.
    await bypassingTriggers('TRUNCATE audit_log');
    for (const r of kept) await bypassingTriggers(`INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash, key_id) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9)`, [r.id, r.at, r.actor, r.action, r.subject, JSON.stringify(r.details), r.prevHash, r.hash, r.keyId]);
    expect(await store.audit.verify({ expectHead: anchored })).toMatchObject({ ok: true, keyedFrom: 4 });
  });

  it('cannot be appended to or verified without the key, nor verified with another', async () => {
    await store.close();
    store = await tdb.open({ keys: undefined });
    try {
      await expect(store.audit.append({ actor: 'a', action: 'b', subject: 'c' })).rejects.toThrow(/^the audit key is needed to append to the audit log/);
      await expect(store.audit.verify()).rejects.toThrow(/^the audit key is needed to verify the audit log/);
      await store.close();
      store = await tdb.open({ keys: randomKeyring() });
      expect(await store.audit.verify()).toMatchObject({ ok: false, badId: 4, reason: expect.stringMatching(`^the row is keyed with key ${tdb.keys.current.id}, which is not configured`) });
    } finally {
      await store.close();
      store = await tdb.open();
    }
  });

  // A role only the PostgreSQL server can have: the one Muster runs as, per docs/security.md.
  // A role is a PostgreSQL thing: PGlite has one superuser, so the case exists only for the postgres backend.
  if (backend === 'postgres') it.skipIf(!!noPsql)('gives the least-privilege role INSERT and SELECT on the audit log, and no way to change, remove or unguard a row', async () => {
    const role = `muster_app_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    await tdb.admin(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    let app: Store | undefined;
    try {
      // The script as an operator runs it, through psql.
      execFileSync('psql', [databaseUrl!, '-X', '-q', '-v', `schema=${tdb.schema}`, '-v', `app_role=${role}`, '-f', join(packageRoot(), 'controller', 'store', 'least-privilege.sql')], { stdio: 'pipe' });
      const url = new URL(databaseUrl!);
      url.username = role;
      url.password = password;
      // Start-up as the app: migrations are all applied, so nothing needs creating.
      app = await openStore({ databaseUrl: url.toString(), schema: tdb.schema, keys: tdb.keys, logger: silentLogger, poolSize: 2 });
      const before = await app.audit.verify();
      const rec = await app.audit.append({ actor: 'token:alice', action: 'rollout.promote', subject: 'rollout/wifi', details: { step: 2 } });
      expect((await app.audit.list({ afterId: rec.id - 1 }))[0]).toEqual(rec);
      expect(await app.audit.verify()).toMatchObject({ ok: true, rows: (before as { rows: number }).rows + 1 });
      // Its ordinary work goes on.
      await app.devices.upsert({ id: 'lp-device', platform: 'windows' });
      await app.commands.enqueue({ uuid: '3b0c1c52-7f1e-4a55-9d0e-5d1f7c1e2a01', deviceId: 'lp-device', type: 'x', payload: {} });
      await app.commands.clearForDevice('lp-device', 'done');

      const denied = /permission denied|must be owner/;
      for (const sql of [
        `UPDATE audit_log SET actor = 'mallory' WHERE id = ${rec.id}`,
        `DELETE FROM audit_log WHERE id = ${rec.id}`,
        'TRUNCATE audit_log',
        'ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete',
        'ALTER TABLE audit_log DISABLE TRIGGER USER',
        'DROP TRIGGER audit_log_no_truncate ON audit_log',
        'DROP TABLE audit_log',
        `DELETE FROM schema_migrations WHERE version = 6`,
        `SET session_replication_role = replica`,
      ]) {
        await expect(app.db.query(sql), sql).rejects.toThrow(denied);
      }
      expect(await app.audit.verify()).toMatchObject({ ok: true, head: { seq: rec.id, hash: rec.hash } });
    } finally {
      await app?.close();
      await tdb.admin(`DROP OWNED BY ${role}`);
      await tdb.admin(`DROP ROLE ${role}`);
    }
  });

  // Last: from here on the chain is under another key.
  it('survives a key rotation, and refuses rows appended later under the retired key (say, a leaked one)', async () => {
    const retired = tdb.keys;
    const next = keyring(randomKeyring().current, [retired.current]);
    await store.close();
    store = await tdb.open({ keys: next });
    try {
      const rec = await store.audit.append({ actor: 'controller', action: 'policy.apply', subject: 'commit/after-rotation' });
      expect(rec.keyId).toBe(next.current.id);
      const v = await store.audit.verify();
      expect(v).toMatchObject({ ok: true, keyedFrom: 4, keyIds: [retired.current.id, next.current.id], head: { seq: rec.id, hash: rec.hash } });

      // Whoever kept the retired key writes a perfectly keyed row with it.
      await store.close();
      store = await tdb.open({ keys: retired });
      const forged = await store.audit.append({ actor: 'token:alice', action: 'token.create', subject: 'token/backdoor' });
      await store.close();
      store = await tdb.open({ keys: next });
      expect(await store.audit.verify()).toEqual({
        ok: false,
        rows: rec.id,
        badId: forged.id,
        reason: `the row is keyed with key ${retired.current.id}, which the chain had already left for key ${next.current.id}: a retired key used again is taken as forged (switch every writer to a new key at once)`,
      });
    } finally {
      await store.close();
      store = await tdb.open();
    }
  });
});
