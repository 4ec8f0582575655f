import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Migration, loadMigrations, migrate, migrationsDir } from '../../controller/store/migrate.js';
import type { Store } from '../../controller/store/index.js';
import { type TestDatabase, backends, testDatabase } from '../support/db.js';

const TABLES = [
  'api_tokens',
  'assignments',
  'audit_log',
  'bundles',
  'command_results',
  'commands',
  'device_identities',
  'devices',
  'enrollment_challenges',
  'enrollments',
  'event_consumers',
  'events',
  'reported_state',
  'rollouts',
  'schema_migrations',
  'source_state',
  'windows_sessions',
];

const extra = (version: number, sql: string): Migration => ({
  version,
  name: `extra_${version}`,
  sql,
  checksum: createHash('sha256').update(sql).digest('hex'),
});

describe('migration files', () => {
  it('are found from the package root and ordered by version', () => {
    expect(migrationsDir()).toMatch(/controller[/\\]store[/\\]migrations$/);
    const all = loadMigrations();
    expect(all[0]).toMatchObject({ version: 1, name: 'initial' });
    expect(all.map((m) => m.version)).toEqual([...all.map((m) => m.version)].sort((a, b) => a - b));
  });

  it('refuses a file not named NNN_name.sql', () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-mig-'));
    try {
      writeFileSync(join(dir, 'add-things.sql'), 'SELECT 1');
      expect(() => loadMigrations(dir)).toThrow(/NNN_name\.sql/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.each(backends)('migrations on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(async () => tdb?.cleanup());

  it('applies every migration to a fresh schema and records it', async () => {
    expect(store.migrations.applied.map((m) => m.version)).toEqual(loadMigrations().map((m) => m.version));
    const r = await store.db.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [tdb.schema],
    );
    expect(r.rows.map((x) => x.table_name)).toEqual(TABLES);
  });

  it('is idempotent', async () => {
    const again = await store.migrate();
    expect(again).toEqual({ applied: [], current: store.migrations.current });
  });

  it('applies a new migration forward only, and refuses a changed one', async () => {
    const base = loadMigrations();
    const next = base.at(-1)!.version + 1;
    const added = await migrate(store.db, [...base, extra(next, 'CREATE TABLE scratch (x int); CREATE INDEX scratch_x ON scratch (x);')]);
    expect(added).toEqual({ applied: [{ version: next, name: `extra_${next}` }], current: next });
    await expect(migrate(store.db, [...base, extra(next, 'CREATE TABLE scratch (y int)')])).rejects.toThrow(/forward-only/);
  });

  it('rolls a failing migration back whole', async () => {
    const base = loadMigrations();
    const v = 900;
    await expect(migrate(store.db, [...base, extra(v, 'CREATE TABLE half (x int); SELECT nonsense FROM nowhere;')])).rejects.toThrow();
    const r = await store.db.query(`SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'half'`, [tdb.schema]);
    expect(r.rowCount).toBe(0);
    const rec = await store.db.query('SELECT 1 FROM schema_migrations WHERE version = $1', [v]);
    expect(rec.rowCount).toBe(0);
  });
});

// Racing processes need a server; PGlite is one process by construction.
if (backends.includes('postgres')) describe('concurrent start-up on postgres', () => {
  let tdb: TestDatabase;
  afterAll(async () => tdb?.cleanup());

  it('lets several processes migrate one fresh schema at once, applying each migration once', async () => {
    tdb = await testDatabase('postgres');
    const stores = await Promise.all(Array.from({ length: 5 }, () => tdb.open()));
    const applied = stores.flatMap((s) => s.migrations.applied.map((m) => m.version));
    expect(applied.sort()).toEqual(loadMigrations().map((m) => m.version));
    const r = await stores[0]!.db.query<{ n: number }>('SELECT count(*) AS n FROM schema_migrations');
    expect(Number(r.rows[0]!.n)).toBe(loadMigrations().length);
  });
});
