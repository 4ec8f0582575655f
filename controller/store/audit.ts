// The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)
// and chained. Row n carries prev_hash = hash of row n-1 and
//   hash = HMAC-SHA256(audit key, prev_hash + canonical JSON of
//          {id, at, actor, action, subject, details, keyId})
// computed here, in TypeScript, so verify() recomputes exactly what append()
// wrote. The audit key is derived from Muster's secret key, which is never in
// the database: whoever can write the table (the triggers are only a speed
// bump for a table owner or a superuser) cannot forge a row that verifies.
// Rows written before the chain was keyed (migration 006) have no key_id and
// hash = sha256(prev_hash + canonical JSON of {id, at, actor, action, subject,
// details}); they are accepted only before the first keyed row, and verify()
// says from which row the chain is keyed.
// Appends serialize on an advisory lock, so the chain never forks.
// The chain proves the rows were not changed, removed or reordered; removing
// rows from the end leaves a shorter valid chain, which only comparing the
// head (sequence and hash) with a copy kept elsewhere can reveal: verify()'s
// expectHead.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Keyring } from '../secrets/keys.js';
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
  /** The id of the key the row's HMAC is under; null for a row from before the chain was keyed. */
  keyId: string | null;
}

/** The last row of the chain: anchor it elsewhere, and check it later with verify({ expectHead }). */
export interface AuditHead {
  /** The row's id (0 and the genesis hash for an empty log). */
  seq: number;
  hash: string;
}

export type AuditVerification =
  | {
      ok: true;
      rows: number;
      head: AuditHead;
      /** The first keyed row; null when no row is keyed (an empty log, or one written only before keying). */
      keyedFrom: number | null;
      /** The ids of the keys the keyed rows are under, in the order the chain used them (a key never returns). */
      keyIds: string[];
    }
  | { ok: false; rows: number; badId: number; reason: string };

/** The audit key is needed (to append or to verify) and none is configured. */
export class AuditKeyMissingError extends Error {
  override name = 'AuditKeyMissingError';
}

export interface AuditLog {
  /** Appends one entry; in `q`'s transaction when given (it must be one). */
  append(entry: AuditEntry, q?: Queryable): Promise<AuditRecord>;
  list(opts?: { afterId?: number; limit?: number; subject?: string }): Promise<AuditRecord[]>;
  /**
   * Walks the whole chain from the first row. With `expectHead`, the row
   * `seq` must be there with exactly that hash (rows after it may follow):
   * that is what detects rows removed from the end, or a chain rewritten
   * from the start.
   */
  verify(opts?: { batchSize?: number; expectHead?: AuditHead }): Promise<AuditVerification>;
}

type RowContent = Omit<AuditRecord, 'prevHash' | 'hash' | 'keyId'>;

/** A row's content as hashed: canonical JSON of its fields (plus the key id for keyed rows). */
function rowJson(r: RowContent, extra: { keyId?: string } = {}): string {
  const content = canonicalize({ id: r.id, at: r.at.toISOString(), actor: r.actor, action: r.action, subject: r.subject, details: r.details, ...extra });
  if (content === undefined) throw new Error('audit entry has no JSON form');
  return content;
}

/** The hash of a row written before the chain was keyed: plain SHA-256 of its predecessor's hash and its content. */
export function auditHash(prevHash: string, r: RowContent): string {
  return createHash('sha256').update(prevHash).update(rowJson(r)).digest('hex');
}

/** The hash of a keyed row: HMAC-SHA256 under the audit key of its predecessor's hash and its content, key id included. */
export function keyedAuditHash(auditKey: Buffer, keyId: string, prevHash: string, r: RowContent): string {
  return createHmac('sha256', auditKey).update(prevHash).update(rowJson(r, { keyId })).digest('hex');
}

const sameHex = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

interface AuditRow {
  id: number | string;
  at: Date;
  actor: string;
  action: string;
  subject: string;
  details: unknown;
  prev_hash: string;
  hash: string;
  key_id: string | null;
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
  keyId: r.key_id ?? null,
});

export function createAuditLog(db: Db, keys?: Keyring): AuditLog {
  const derived = new Map<string, Buffer>();
  const auditKey = (id: string): Buffer | undefined => {
    let k = derived.get(id);
    if (!k) {
      const master = keys?.get(id);
      if (!master) return undefined;
      derived.set(id, (k = master.derive('audit')));
    }
    return k;
  };
  const missing = (what: string) =>
    new AuditKeyMissingError(`the audit key is needed to ${what}: the audit log is an HMAC chain keyed by Muster's secret key, which is not configured (set MUSTER_SECRET_KEY or MUSTER_SECRET_KEY_FILE; see docs/security.md)`);

  return {
    async append(entry, q) {
      if (!keys) throw missing('append to the audit log');
      const keyId = keys.current.id;
      const key = auditKey(keyId)!;
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
          keyId,
        };
        rec.hash = keyedAuditHash(key, keyId, rec.prevHash, rec);
        await tx.query(
          `INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash, key_id)
           VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9)`,
          [rec.id, rec.at, rec.actor, rec.action, rec.subject, JSON.stringify(details), rec.prevHash, rec.hash, keyId],
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
      // Without the key nothing can be vouched for: a keyed row cannot be checked, and an unkeyed log may be a rewrite.
      if (!keys) throw missing('verify the audit log');
      const batch = opts.batchSize ?? 1000;
      const expect = opts.expectHead;
      let prevHash = GENESIS_HASH;
      let prevId = 0;
      let rows = 0;
      let keyedFrom: number | null = null;
      const keyIds: string[] = [];
      const fail = (badId: number, reason: string): AuditVerification => ({ ok: false, rows, badId, reason });
      for (;;) {
        const r = await db.query<AuditRow>('SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2', [prevId, batch]);
        for (const row of r.rows) {
          const rec = toRecord(row);
          if (rec.id !== prevId + 1) return fail(rec.id, `row ${prevId + 1} is missing before row ${rec.id}`);
          if (rec.prevHash !== prevHash) {
            return fail(rec.id, `prev_hash does not match ${prevId ? `the hash of row ${prevId}` : 'the genesis value'}`);
          }
          if (rec.keyId === null) {
            // Plain SHA-256 anyone can recompute: believable only as the history from before the chain was keyed.
            if (keyedFrom !== null) return fail(rec.id, `the row is not keyed, but the chain is keyed from row ${keyedFrom}: an unkeyed row after keyed ones is forged`);
            if (auditHash(rec.prevHash, rec) !== rec.hash) return fail(rec.id, 'hash does not match the row content');
          } else {
            const key = auditKey(rec.keyId);
            if (!key) return fail(rec.id, `the row is keyed with key ${rec.keyId}, which is not configured (an older key goes in MUSTER_SECRET_KEY_PREVIOUS; a key never configured means a forged row)`);
            if (!sameHex(keyedAuditHash(key, rec.keyId, rec.prevHash, rec), rec.hash)) return fail(rec.id, 'hash does not match the row content');
            // A key the chain moved away from never comes back: whoever still holds a retired (perhaps leaked) key cannot append under it.
            const last = keyIds.at(-1);
            if (last !== undefined && last !== rec.keyId && keyIds.includes(rec.keyId)) {
              return fail(rec.id, `the row is keyed with key ${rec.keyId}, which the chain had already left for key ${last}: a retired key used again is taken as forged (switch every writer to a new key at once)`);
            }
            keyedFrom ??= rec.id;
            if (last !== rec.keyId) keyIds.push(rec.keyId);
          }
          if (expect && rec.id === expect.seq && rec.hash !== expect.hash) {
            return fail(rec.id, `the row's hash is ${rec.hash}, not the anchored head's ${expect.hash}: the log was rewritten up to here (or this is another database)`);
          }
          prevHash = rec.hash;
          prevId = rec.id;
          rows++;
        }
        if (r.rows.length < batch) break;
      }
      if (expect && expect.seq > prevId) {
        return fail(expect.seq, `the log ends at row ${prevId}, before the anchored head: rows were removed from the end (or this is another database)`);
      }
      if (expect && expect.seq === 0 && expect.hash !== GENESIS_HASH) return fail(0, 'the anchored head 0 must carry the genesis hash');
      return { ok: true, rows, head: { seq: prevId, hash: prevHash }, keyedFrom, keyIds };
    },
  };
}
