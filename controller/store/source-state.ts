// The source's memory across restarts: which commit is applied, which was
// last refused and why. Small JSON values under fixed keys.
import type { Db, Queryable } from './db.js';

export interface AppliedCommit {
  commit: string;
  appliedAt: string;
  /** Bundle versions seen so far, for the immutability check of the next commit. */
  source: string;
}

export interface RefusedCommit {
  commit: string;
  refusedAt: string;
  errors: number;
  /** The first diagnostics, as `file:line:col: message` lines. */
  messages: string[];
}

export interface SourceStateStore {
  get<T>(key: string, q?: Queryable): Promise<T | undefined>;
  set(key: string, value: unknown, q?: Queryable): Promise<void>;
}

export function createSourceStateStore(db: Db): SourceStateStore {
  return {
    async get<T>(key: string, q: Queryable = db) {
      const r = await q.query<{ value: T }>('SELECT value FROM source_state WHERE key = $1', [key]);
      return r.rows[0]?.value;
    },
    async set(key, value, q = db) {
      await q.query(
        `INSERT INTO source_state (key, value) VALUES ($1, $2::text::jsonb)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
        [key, JSON.stringify(value)],
      );
    },
  };
}
