// One store suite, two backends: PGlite always, PostgreSQL when DATABASE_URL
// is set. Every TestDatabase gets its own fresh schema (and, on PGlite, its own
// data folder), dropped by cleanup(), so parallel workers and concurrent CI
// runs never see each other's rows.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { type Store, type StoreOptions, openStore } from '../../controller/store/index.js';
import { silentLogger } from '../../controller/store/db.js';
import { type Keyring, randomKeyring } from '../../controller/secrets/keys.js';
import { inCI } from './tools.js';

export type Backend = 'pglite' | 'postgres';

export const databaseUrl = process.env.DATABASE_URL;

// CI always tests both backends: a CI run without a server is a broken CI run.
if (inCI && !databaseUrl) throw new Error('CI=true but DATABASE_URL is not set: the store suite must also run on PostgreSQL');

/** The backends this run tests: PGlite, plus PostgreSQL when DATABASE_URL is set. */
export const backends: Backend[] = databaseUrl ? ['pglite', 'postgres'] : ['pglite'];

export const freshSchemaName = (): string => `muster_test_${randomBytes(6).toString('hex')}`;

export interface TestDatabase {
  backend: Backend;
  schema: string;
  /**
   * The secret key every open() gets, as the CLI hands one to the store
   * (controller/cli/secret-key.ts): fresh per database, the same across restarts.
   */
  keys: Keyring;
  /** Opens (and migrates) a store on this database; call again to "restart". */
  open(extra?: Partial<StoreOptions>): Promise<Store>;
  /** Runs SQL outside the store on PostgreSQL (a separate connection, e.g. pg_terminate_backend). */
  admin<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Closes every store it opened and drops the schema / data folder. */
  cleanup(): Promise<void>;
}

export async function testDatabase(backend: Backend): Promise<TestDatabase> {
  const schema = freshSchemaName();
  const stores = new Set<Store>();
  let adminPool: pg.Pool | undefined;
  const dataDir = backend === 'pglite' ? mkdtempSync(join(tmpdir(), 'muster-store-')) : undefined;
  const keys = randomKeyring();

  const track = (s: Store): Store => {
    stores.add(s);
    const close = s.close.bind(s);
    s.close = async () => {
      stores.delete(s);
      await close();
    };
    return s;
  };

  return {
    backend,
    schema,
    keys,
    async open(extra = {}) {
      if (backend === 'pglite') {
        // One PGlite per data folder at a time, as in production.
        if (stores.size) throw new Error('a PGlite store is already open on this data folder');
        return track(await openStore({ dataDir, schema, logger: silentLogger, keys, ...extra }));
      }
      return track(await openStore({ databaseUrl, schema, logger: silentLogger, poolSize: 20, keys, ...extra }));
    },
    async admin<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      if (backend !== 'postgres') throw new Error('admin() needs PostgreSQL');
      adminPool ??= new pg.Pool({ connectionString: databaseUrl, max: 2 });
      return (await adminPool.query(sql, params)).rows as T[];
    },
    async cleanup() {
      for (const s of [...stores]) await s.close();
      if (backend === 'postgres') {
        adminPool ??= new pg.Pool({ connectionString: databaseUrl, max: 2 });
        await adminPool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await adminPool.end();
      }
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
