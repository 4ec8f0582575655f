// Bundles by content hash. The store checks the hash against the content it
// is given, and that one name + version never names two contents.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Db, Queryable } from './db.js';

export interface BundleInput {
  /** "sha256:" + hex SHA-256 of the RFC 8785 canonical JSON of `content`. */
  hash: string;
  name: string;
  version: string;
  /** What was hashed (for a PolicyBundle, `{ name, spec }`). */
  content: unknown;
  /** The Git commit (or other source revision) it was first seen in. */
  commit?: string;
}

export interface Bundle {
  hash: string;
  name: string;
  version: string;
  content: unknown;
  /** The canonical JSON text the hash is over. */
  canonical: string;
  firstCommit: string | null;
  firstSeenAt: Date;
}

export class BundleConflictError extends Error {
  constructor(
    readonly bundleName: string,
    readonly version: string,
    readonly existingHash: string,
    readonly newHash: string,
  ) {
    super(`bundle ${bundleName}@${version} is already stored with hash ${existingHash}; a changed bundle needs a new version`);
    this.name = 'BundleConflictError';
  }
}

export interface BundleStore {
  /** Stores a bundle once; storing it again is a no-op that keeps the first commit. */
  put(bundle: BundleInput, q?: Queryable): Promise<{ bundle: Bundle; created: boolean }>;
  get(hash: string, q?: Queryable): Promise<Bundle | undefined>;
  getByVersion(name: string, version: string): Promise<Bundle | undefined>;
  /** Newest first. */
  list(opts?: { name?: string; limit?: number }): Promise<Bundle[]>;
}

export function contentHash(content: unknown): { hash: string; canonical: string } {
  const canonical = canonicalize(content);
  if (canonical === undefined) throw new Error('bundle content has no JSON form');
  return { hash: 'sha256:' + createHash('sha256').update(canonical).digest('hex'), canonical };
}

interface BundleRow {
  hash: string;
  name: string;
  version: string;
  content: string;
  first_commit: string | null;
  first_seen_at: Date;
}

const toBundle = (r: BundleRow): Bundle => ({
  hash: r.hash,
  name: r.name,
  version: r.version,
  content: JSON.parse(r.content) as unknown,
  canonical: r.content,
  firstCommit: r.first_commit,
  firstSeenAt: r.first_seen_at,
});

export function createBundleStore(db: Db): BundleStore {
  async function get(hash: string, q: Queryable = db): Promise<Bundle | undefined> {
    const r = await q.query<BundleRow>('SELECT * FROM bundles WHERE hash = $1', [hash]);
    return r.rows[0] ? toBundle(r.rows[0]) : undefined;
  }
  return {
    async put(b, q = db) {
      const { hash, canonical } = contentHash(b.content);
      if (hash !== b.hash) throw new Error(`bundle ${b.name}@${b.version}: hash ${b.hash} does not match its content (${hash})`);
      const ins = await q.query<BundleRow>(
        `INSERT INTO bundles (hash, name, version, content, first_commit) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING RETURNING *`,
        [hash, b.name, b.version, canonical, b.commit ?? null],
      );
      if (ins.rows[0]) return { bundle: toBundle(ins.rows[0]), created: true };
      const same = await get(hash, q);
      if (same) return { bundle: same, created: false };
      const other = await q.query<{ hash: string }>('SELECT hash FROM bundles WHERE name = $1 AND version = $2', [b.name, b.version]);
      throw new BundleConflictError(b.name, b.version, other.rows[0]?.hash ?? '?', hash);
    },

    get,

    async getByVersion(name, version) {
      const r = await db.reader.query<BundleRow>('SELECT * FROM bundles WHERE name = $1 AND version = $2', [name, version]);
      return r.rows[0] ? toBundle(r.rows[0]) : undefined;
    },

    async list(opts = {}) {
      const r = await db.reader.query<BundleRow>(
        `SELECT * FROM bundles WHERE ($1::text IS NULL OR name = $1) ORDER BY first_seen_at DESC, hash LIMIT $2`,
        [opts.name ?? null, opts.limit ?? 1000],
      );
      return r.rows.map(toBundle);
    },
  };
}
