// The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)
// and hash-chained. Row n carries prev_hash = hash of row n-1 and
//   hash = sha256(prev_hash + canonical JSON of {id, at, actor, action, subject, details})
// computed here, in TypeScript, so verify() recomputes exactly what append()
// wrote. Appends serialize on an advisory lock, so the chain never forks.
// The chain proves the rows were not changed, removed or reordered; removing
// rows from the end leaves a shorter valid chain, which only comparing the
// head hash against a copy kept elsewhere can reveal.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { type Db, type Queryable, lockKey } from './db.js';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEntry {
  /** Who: a user, a token name, or "controller". */
  actor: string;
  /** What, e.g. "rollout.promote". */
  action: string;
  /** On what, e.g. "rollout/office-wifi". */
  subject: string;
  details?: unknown;
  at?: Date;
}

export interface AuditRecord {
  id: number;
  at: Date;
  actor: string;
  action: string;
  subject: string;
  details: unknown;
  prevHash: string;
  hash: string;
}

export type AuditVerification =
  | { ok: true; rows: number; head: string }
  | { ok: false; rows: number; badId: number; reason: string };

export interface AuditLog {
  /** Appends one entry; in `q`'s transaction when given (it must be one). */
  append(entry: AuditEntry, q?: Queryable): Promise<AuditRecord>;
  list(opts?: { afterId?: number; limit?: number; subject?: string }): Promise<AuditRecord[]>;
  /** Walks the whole chain from the first row. */
  verify(opts?: { batchSize?: number }): Promise<AuditVerification>;
}

/** The hash of a row, from its predecessor's hash and its own content. */
export function auditHash(prevHash: string, r: Omit<AuditRecord, 'prevHash' | 'hash'>): string {
  const content = canonicalize({
    id: r.id,
    at: r.at.toISOString(),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: r.details,
  });
  if (content === undefined) throw new Error('audit entry has no JSON form');
  return createHash('sha256').update(prevHash).update(content).digest('hex');
}

interface AuditRow {
  id: number | string;
  at: Date;
  actor: string;
  action: string;
  subject: string;
  details: unknown;
  prev_hash: string;
  hash: string;
}

const toRecord = (r: AuditRow): AuditRecord => ({
  id: Number(r.id),
  at: r.at,
  actor: r.actor,
  action: r.action,
  subject: r.subject,
  details: r.details,
  prevHash: r.prev_hash,
  hash: r.hash,
});

export function createAuditLog(db: Db): AuditLog {
  return {
    async append(entry, q) {
      // Hash exactly what the database will hand back: plain JSON, millisecond time.
      const details: unknown = JSON.parse(JSON.stringify(entry.details ?? {}));
      const at = new Date((entry.at ?? new Date()).getTime());
      const run = async (tx: Queryable): Promise<AuditRecord> => {
        await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey('audit', db.schema)]);
        const tail = await tx.query<{ id: number; hash: string }>('SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1');
        const prev = tail.rows[0];
        const rec: AuditRecord = {
          id: prev ? Number(prev.id) + 1 : 1,
          at,
          actor: entry.actor,
          action: entry.action,
          subject: entry.subject,
          details,
          prevHash: prev?.hash ?? GENESIS_HASH,
          hash: '',
        };
        rec.hash = auditHash(rec.prevHash, rec);
        await tx.query(
          `INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)`,
          [rec.id, rec.at, rec.actor, rec.action, rec.subject, JSON.stringify(details), rec.prevHash, rec.hash],
        );
        return rec;
      };
      return q ? run(q) : db.transaction(run);
    },

    async list(opts = {}) {
      const r = await db.reader.query<AuditRow>(
        `SELECT * FROM audit_log WHERE id > $1 AND ($2::text IS NULL OR subject = $2) ORDER BY id LIMIT $3`,
        [opts.afterId ?? 0, opts.subject ?? null, opts.limit ?? 100],
      );
      return r.rows.map(toRecord);
    },

    async verify(opts = {}) {
      const batch = opts.batchSize ?? 1000;
      let prevHash = GENESIS_HASH;
      let prevId = 0;
      let rows = 0;
      for (;;) {
        const r = await db.query<AuditRow>('SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2', [prevId, batch]);
        for (const row of r.rows) {
          const rec = toRecord(row);
          if (rec.id !== prevId + 1) {
            return { ok: false, rows, badId: rec.id, reason: `row ${prevId + 1} is missing before row ${rec.id}` };
          }
          if (rec.prevHash !== prevHash) {
            return {
              ok: false,
              rows,
              badId: rec.id,
              reason: `prev_hash does not match ${prevId ? `the hash of row ${prevId}` : 'the genesis value'}`,
            };
          }
          if (auditHash(rec.prevHash, rec) !== rec.hash) {
            return { ok: false, rows, badId: rec.id, reason: 'hash does not match the row content' };
          }
          prevHash = rec.hash;
          prevId = rec.id;
          rows++;
        }
        if (r.rows.length < batch) return { ok: true, rows, head: prevHash };
      }
    },
  };
}
