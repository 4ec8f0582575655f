// Muster's secret key: one 32-byte master key, kept outside the database,
// from which each use gets its own key (HKDF-SHA256 with a distinct info
// string), so sealing device secrets and keying the audit chain never share
// key material. A key is known by its id (derived from it, safe to store
// beside what it protects), which lets keys rotate: the keyring holds the
// current key, used for everything new, and older keys that still open and
// verify what they wrote.
//
// Where the key comes from (the environment, a file, the CA passphrase) is the
// CLI's business (controller/cli/secret-key.ts); everything else receives a
// Keyring.
import { hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import { inspect } from 'node:util';

/** What a derived key is for; each is a distinct HKDF info string. */
export type KeyPurpose = 'seal' | 'audit';

const INFO: Record<KeyPurpose | 'id', string> = {
  id: 'muster key id v1',
  seal: 'muster sealed values v1 (AES-256-GCM)',
  audit: 'muster audit chain v1 (HMAC-SHA256)',
};

const KEY_BYTES = 32;

/** A clear, expected problem with a key (malformed, missing, unknown id); its message never contains key material. */
export class SecretKeyError extends Error {
  override name = 'SecretKeyError';
}

export class MasterKey {
  /** 16 hex characters derived from the key: names it in sealed values and audit rows without revealing it. */
  readonly id: string;
  readonly #bytes: Buffer;

  constructor(bytes: Buffer) {
    if (bytes.length !== KEY_BYTES) throw new SecretKeyError(`a secret key is ${KEY_BYTES} bytes, not ${bytes.length}`);
    this.#bytes = Buffer.from(bytes);
    this.id = hkdf(this.#bytes, INFO.id, 8).toString('hex');
  }

  /** The key for one purpose. */
  derive(purpose: KeyPurpose): Buffer {
    return hkdf(this.#bytes, INFO[purpose], KEY_BYTES);
  }

  /** The key as text for a key file (base64). */
  export(): string {
    return this.#bytes.toString('base64');
  }

  // A key that reaches a log or an error message shows its id only.
  toJSON(): string {
    return `MasterKey(${this.id})`;
  }
  [inspect.custom](): string {
    return `MasterKey(${this.id})`;
  }
}

const hkdf = (ikm: Buffer, info: string, length: number): Buffer => Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), info, length));

/** A fresh random key (a new deployment's key file, tests). */
export function randomMasterKey(): MasterKey {
  return new MasterKey(randomBytes(KEY_BYTES));
}

/**
 * A key from text: 32 bytes as base64 (standard or URL-safe, padded or not) or
 * as 64 hex digits, e.g. from `openssl rand -base64 32`. `where` names the
 * source in errors; the text itself is never repeated.
 */
export function parseMasterKey(text: string, where: string): MasterKey {
  const t = text.trim();
  let bytes: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) bytes = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) bytes = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!bytes || bytes.length !== KEY_BYTES) {
    throw new SecretKeyError(`${where} is not a secret key: expected 32 bytes as base64 or 64 hex digits (make one with: openssl rand -base64 32)`);
  }
  return new MasterKey(bytes);
}

// A passphrase is chosen by a person, so it is stretched (scrypt) before HKDF
// derives anything from it: the sealed values in a database dump must not
// make guessing it cheap. The salt is fixed because nothing may be stored to
// derive the same key again; it only separates this use from others.
const PASSPHRASE_SALT = 'muster secret key from the CA passphrase v1';

/** The key derived from a passphrase (MUSTER_CA_PASSPHRASE when no key of its own is set). */
export function masterKeyFromPassphrase(passphrase: string): MasterKey {
  if (!passphrase) throw new SecretKeyError('an empty passphrase cannot give a secret key');
  return new MasterKey(scryptSync(passphrase.normalize('NFC'), PASSPHRASE_SALT, KEY_BYTES, { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }));
}

/** The current key and the older ones that still open what they sealed and verify what they keyed. */
export interface Keyring {
  readonly current: MasterKey;
  /** Every key by id, the current one included. */
  get(id: string): MasterKey | undefined;
  readonly ids: readonly string[];
}

export function keyring(current: MasterKey, older: readonly MasterKey[] = []): Keyring {
  const byId = new Map<string, MasterKey>([[current.id, current]]);
  for (const k of older) if (!byId.has(k.id)) byId.set(k.id, k);
  return { current, get: (id) => byId.get(id), ids: [...byId.keys()] };
}

/** A keyring of one fresh random key (tests, benchmarks, throw-away databases). */
export function randomKeyring(): Keyring {
  return keyring(randomMasterKey());
}
