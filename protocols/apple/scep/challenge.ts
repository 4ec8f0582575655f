// SCEP challenge passwords. The handler only sees the ChallengeStore
// interface, so the in-memory one-time store here can give way to a
// database-backed one without touching the protocol code.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface ChallengeStore {
  /** Whether the challenge would be accepted now. Uses nothing up. */
  verify(challenge: string): Promise<boolean>;
  /**
   * Accepts the challenge and uses it up, atomically: a one-time challenge
   * is accepted once only, even by two concurrent requests. False when it is
   * unknown, expired or already used.
   */
  consume(challenge: string): Promise<boolean>;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time string comparison: timingSafeEqual over SHA-256 digests (equal lengths, no length leak). */
export function challengeEquals(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** One shared challenge for every device (what most MDMs configure in the SCEP payload). */
export class StaticChallenge implements ChallengeStore {
  readonly #secret: string;
  constructor(secret: string) {
    if (!secret) throw new Error('a static SCEP challenge must not be empty');
    this.#secret = secret;
  }
  async verify(challenge: string): Promise<boolean> {
    return challengeEquals(challenge, this.#secret);
  }
  async consume(challenge: string): Promise<boolean> {
    return this.verify(challenge);
  }
}

export interface OneTimeOptions {
  /** How long an issued challenge stays valid. Default one hour. */
  ttlMs?: number;
  now?: () => number;
}

/**
 * Single-use challenges with an expiry, in memory (one process). Entries are
 * keyed by the challenge's SHA-256: looking a digest up reveals nothing
 * about the secret, which is the same guarantee a constant-time compare
 * gives, and the challenges themselves are never kept.
 */
export class OneTimeChallenges implements ChallengeStore {
  readonly #expiry = new Map<string, number>();
  readonly #ttlMs: number;
  readonly #now: () => number;
  #lastSweep = 0;

  constructor(o: OneTimeOptions = {}) {
    this.#ttlMs = o.ttlMs ?? 3_600_000;
    this.#now = o.now ?? Date.now;
  }

  /** A new random challenge (40 hex characters: PrintableString-safe for every client). */
  issue(ttlMs = this.#ttlMs): string {
    const challenge = randomBytes(20).toString('hex');
    this.add(challenge, ttlMs);
    return challenge;
  }

  /** Registers a challenge made elsewhere. */
  add(challenge: string, ttlMs = this.#ttlMs): void {
    if (!challenge) throw new Error('a SCEP challenge must not be empty');
    // Expired entries go at most once a minute, so issuing stays O(1) amortized.
    if (this.#now() - this.#lastSweep > 60_000) this.sweep();
    this.#expiry.set(sha256(challenge).toString('hex'), this.#now() + ttlMs);
  }

  async verify(challenge: string): Promise<boolean> {
    const expires = this.#expiry.get(sha256(challenge).toString('hex'));
    return expires !== undefined && expires > this.#now();
  }

  async consume(challenge: string): Promise<boolean> {
    const key = sha256(challenge).toString('hex');
    const expires = this.#expiry.get(key);
    // Delete before answering: there is no await in between, so two requests
    // racing for one challenge cannot both see it.
    this.#expiry.delete(key);
    return expires !== undefined && expires > this.#now();
  }

  /** Drops expired challenges; returns how many remain. */
  sweep(): number {
    const now = (this.#lastSweep = this.#now());
    for (const [k, exp] of this.#expiry) if (exp <= now) this.#expiry.delete(k);
    return this.#expiry.size;
  }
}
