import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS_HASH, auditHash, keyedAuditHash, type Store } from '../../controller/store/index.js';
import { type TestDatabase, backends, testDatabase } from '../support/db.js';

describe.each(backends)('audit log on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  /** What append() computes: HMAC-SHA256 under the audit key derived from the store's secret key. */
  const keyed = (prevHash: string, r: Parameters<typeof auditHash>[1]) => keyedAuditHash(tdb.keys.current.derive('audit'), tdb.keys.current.id, prevHash, r);

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(async () => tdb?.cleanup());

  it('verifies an empty log', async () => {
    expect(await store.audit.verify()).toEqual({ ok: true, rows: 0, head: { seq: 0, hash: GENESIS_HASH }, keyedFrom: null, keyIds: [] });
  });

  it('chains each row to the one before', async () => {
    const a = await store.audit.append({ actor: 'alice', action: 'rollout.promote', subject: 'rollout/wifi', details: { step: 2 } });
    const b = await store.audit.append({
      actor: 'controller',
      action: 'rollout.abort',
      subject: 'rollout/wifi',
      details: { reason: 'failure rate 4.1% > 2%', z: [1, 2.5, 'x'], a: { nested: true } },
    });
    expect(a).toMatchObject({ id: 1, prevHash: GENESIS_HASH, keyId: tdb.keys.current.id });
    expect(b.prevHash).toBe(a.hash);
    expect(b.hash).toBe(keyed(a.hash, b));
    // Keyed: the plain SHA-256 anyone could recompute is not what the row holds.
    expect(b.hash).not.toBe(auditHash(a.hash, b));
    const listed = await store.audit.list({ subject: 'rollout/wifi' });
    expect(listed).toEqual([a, b]);
    expect(await store.audit.verify()).toEqual({ ok: true, rows: 2, head: { seq: 2, hash: b.hash }, keyedFrom: 1, keyIds: [tdb.keys.current.id] });
  });

  it('refuses UPDATE, DELETE and TRUNCATE', async () => {
    await expect(store.db.query(`UPDATE audit_log SET actor = 'mallory' WHERE id = 1`)).rejects.toThrow(/append-only/);
    await expect(store.db.query('DELETE FROM audit_log WHERE id = 1')).rejects.toThrow(/append-only/);
    await expect(store.db.query('TRUNCATE audit_log')).rejects.toThrow(/append-only/);
    expect((await store.audit.verify()).ok).toBe(true);
  });

  it('keeps one chain under concurrent appends', async () => {
    const before = (await store.audit.verify()) as { rows: number };
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => store.audit.append({ actor: `w${i % 5}`, action: 'test.append', subject: `s/${i}`, details: { i } })),
    );
    const v = await store.audit.verify({ batchSize: 7 });
    expect(v).toMatchObject({ ok: true, rows: before.rows + 50 });
  });

  it('appends inside a caller transaction, and nothing when it rolls back', async () => {
    const before = (await store.audit.verify()) as { rows: number };
    await expect(
      store.transaction(async (tx) => {
        await store.audit.append({ actor: 'x', action: 'y', subject: 'z' }, tx);
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    await store.transaction((tx) => store.audit.append({ actor: 'x', action: 'y', subject: 'z' }, tx));
    expect(await store.audit.verify()).toMatchObject({ ok: true, rows: before.rows + 1 });
  });

  it('names the first row that was tampered with', async () => {
    const rows = await store.audit.list({ limit: 1000 });
    const victim = rows[3]!;
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query(`UPDATE audit_log SET details = '{"step": 3}'::jsonb WHERE id = $1`, [victim.id]);
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    expect(await store.audit.verify()).toEqual({
      ok: false,
      rows: victim.id - 1,
      badId: victim.id,
      reason: 'hash does not match the row content',
    });
    // Re-hashing the changed row to hide it (even with the key) breaks the link to the next one.
    const fixed = { ...victim, details: { step: 3 } };
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query('UPDATE audit_log SET hash = $2 WHERE id = $1', [victim.id, keyed(victim.prevHash, fixed)]);
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    expect(await store.audit.verify()).toMatchObject({
      ok: false,
      badId: victim.id + 1,
      reason: `prev_hash does not match the hash of row ${victim.id}`,
    });
    // Put it back: the chain is whole again.
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query('UPDATE audit_log SET details = $2::text::jsonb, hash = $3 WHERE id = $1', [
      victim.id,
      JSON.stringify(victim.details),
      victim.hash,
    ]);
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    expect((await store.audit.verify()).ok).toBe(true);
  });

  it('notices a removed row', async () => {
    const rows = await store.audit.list({ limit: 1000 });
    const victim = rows[rows.length - 3]!;
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query('DELETE FROM audit_log WHERE id = $1', [victim.id]);
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    expect(await store.audit.verify()).toEqual({
      ok: false,
      rows: victim.id - 1,
      badId: victim.id + 1,
      reason: `row ${victim.id} is missing before row ${victim.id + 1}`,
    });
  });
});
