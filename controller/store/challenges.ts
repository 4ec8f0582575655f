// One-time enrollment challenges in the database: what several protocol
// servers share. Only the SHA-256 of a challenge is stored; a lookup by digest
// reveals nothing about the secret (the same guarantee a constant-time
// comparison gives), and consume() is one conditional UPDATE.
import { createHash, randomBytes } from 'node:crypto';
import type { Db, Queryable } from './db.js';

const digest = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/** The digest a challenge is stored under (lower-case hex SHA-256 of its UTF-8). */
export const challengeDigest = digest;

/** A challenge, or the digest of one (a record pointing at another, e.g. a token issued for a credential). */
export type ChallengeRef = string | { sha256: string };
const digestOf = (c: ChallengeRef): string => (typeof c === 'string' ? digest(c) : c.sha256.toLowerCase());

export interface ChallengeRecord {
  purpose: string;
  details: unknown;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
}

export interface EnrollmentChallenges {
  /** A new random challenge (40 hex characters: safe in every SCEP client's PrintableString). */
  issue(purpose: string, ttlMs: number, details?: unknown): Promise<string>;
  /** Whether it would be accepted now; uses nothing up. */
  verify(challenge: string, purpose: string): Promise<boolean>;
  /** Accepts and uses up, atomically; false when unknown, expired, used or for another purpose. In `q`'s transaction when given. */
  consume(challenge: ChallengeRef, purpose: string, q?: Queryable): Promise<ChallengeRecord | undefined>;
  /** The record when it would be accepted now (unused, unexpired, this purpose); uses nothing up. */
  peek(challenge: ChallengeRef, purpose: string, q?: Queryable): Promise<ChallengeRecord | undefined>;
  /** The record whatever its state (used, expired): what a credential was issued for, after it was used. */
  lookup(challenge: ChallengeRef, purpose: string, q?: Queryable): Promise<ChallengeRecord | undefined>;
  /** Deletes challenges that expired or were used before `olderThan`. */
  prune(olderThan: Date): Promise<number>;
}

interface Row {
  purpose: string;
  details: unknown;
  created_at: Date;
  expires_at: Date;
  used_at: Date | null;
}

export function createEnrollmentChallenges(db: Db): EnrollmentChallenges {
  return {
    async issue(purpose, ttlMs, details = {}) {
      const challenge = randomBytes(20).toString('hex');
      await db.query(
        `INSERT INTO enrollment_challenges (sha256, purpose, details, expires_at)
         VALUES ($1, $2, $3::text::jsonb, now() + ($4::double precision * interval '1 millisecond'))`,
        [digest(challenge), purpose, JSON.stringify(details), ttlMs],
      );
      return challenge;
    },
    async verify(challenge, purpose) {
      const r = await db.query('SELECT 1 FROM enrollment_challenges WHERE sha256 = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()', [digest(challenge), purpose]);
      return r.rowCount > 0;
    },
    async consume(challenge, purpose, q = db) {
      const r = await q.query<Row>(
        `UPDATE enrollment_challenges SET used_at = now()
          WHERE sha256 = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
          RETURNING purpose, details, created_at, expires_at, used_at`,
        [digestOf(challenge), purpose],
      );
      const x = r.rows[0];
      return x ? { purpose: x.purpose, details: x.details, createdAt: x.created_at, expiresAt: x.expires_at, usedAt: x.used_at } : undefined;
    },
    async peek(challenge, purpose, q = db) {
      const r = await q.query<Row>(
        `SELECT purpose, details, created_at, expires_at, used_at FROM enrollment_challenges
          WHERE sha256 = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()`,
        [digestOf(challenge), purpose],
      );
      const x = r.rows[0];
      return x ? { purpose: x.purpose, details: x.details, createdAt: x.created_at, expiresAt: x.expires_at, usedAt: x.used_at } : undefined;
    },
    async lookup(challenge, purpose, q = db) {
      const r = await q.query<Row>('SELECT purpose, details, created_at, expires_at, used_at FROM enrollment_challenges WHERE sha256 = $1 AND purpose = $2', [digestOf(challenge), purpose]);
      const x = r.rows[0];
      return x ? { purpose: x.purpose, details: x.details, createdAt: x.created_at, expiresAt: x.expires_at, usedAt: x.used_at } : undefined;
    },
    async prune(olderThan) {
      const r = await db.query('DELETE FROM enrollment_challenges WHERE COALESCE(used_at, expires_at) < $1', [olderThan]);
      return r.rowCount;
    },
  };
}
