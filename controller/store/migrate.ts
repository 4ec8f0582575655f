// Versioned, forward-only SQL migrations from controller/store/migrations/
// (NNN_name.sql), recorded in schema_migrations with a checksum, applied in
// one transaction under an advisory lock so two processes starting at once
// neither race nor apply anything twice.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';
import { type Db, lockKey } from './db.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrationResult {
  /** Migrations this call applied, in order. */
  applied: { version: number; name: string }[];
  /** The highest version now in the database. */
  current: number;
}

const FILE = /^(\d{3,})_([a-z0-9_]+)\.sql$/;

/** The .sql files live beside the sources, outside dist/, found from the package root. */
export function migrationsDir(): string {
  return join(packageRoot(), 'controller', 'store', 'migrations');
}

export function loadMigrations(dir: string = migrationsDir()): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const m = FILE.exec(file);
    if (!m) throw new Error(`migration file ${file} is not named NNN_name.sql`);
    const sql = readFileSync(join(dir, file), 'utf8');
    out.push({
      version: Number(m[1]),
      name: m[2] as string,
      sql,
      checksum: createHash('sha256').update(sql).digest('hex'),
    });
  }
  for (let i = 1; i < out.length; i++) {
    if (out[i]!.version === out[i - 1]!.version) throw new Error(`two migrations share version ${out[i]!.version}`);
  }
  return out;
}

export async function migrate(db: Db, migrations: Migration[] = loadMigrations()): Promise<MigrationResult> {
  return db.transaction(async (tx) => {
    // Held until commit; a second process waits here, then finds nothing left to do.
    await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey('migrate', db.schema)]);
    // Only when missing: a least-privilege role (docs/security.md) may not
    // create anything, and even CREATE ... IF NOT EXISTS needs the privilege.
    const present = await tx.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [`${db.schema}.schema_migrations`]);
    if (!present.rows[0]?.t) {
      await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${db.schema}`);
      await tx.exec(
        `CREATE TABLE IF NOT EXISTS ${db.schema}.schema_migrations (
           version integer PRIMARY KEY,
           name text NOT NULL,
           checksum text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now()
         )`,
      );
    }
    const done = await tx.query<{ version: number; name: string; checksum: string }>(
      'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
    );
    const known = new Map(done.rows.map((r) => [r.version, r]));
    for (const m of migrations) {
      const prior = known.get(m.version);
      if (prior && prior.checksum !== m.checksum) {
        throw new Error(
          `migration ${m.version}_${m.name} was changed after it was applied; migrations are forward-only, add a new one`,
        );
      }
    }
    const applied: MigrationResult['applied'] = [];
    for (const m of migrations) {
      if (known.has(m.version)) continue;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
        m.version,
        m.name,
        m.checksum,
      ]);
      applied.push({ version: m.version, name: m.name });
    }
    const versions = [...known.keys(), ...applied.map((a) => a.version)];
    return { applied, current: versions.length ? Math.max(...versions) : 0 };
  });
}
