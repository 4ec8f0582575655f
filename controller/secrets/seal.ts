// Sealed values: a secret (an unlock PIN, a reset password, a Bootstrap
// Token) stored as AES-256-GCM ciphertext under the keyring's sealing key.
// The associated data binds each value to the device and the purpose it was
// sealed for (a command's id and field, "apple.bootstrap-token"), so a value
// copied to another row, field or device does not open. The envelope names
// the key id, so values sealed before a key rotation still open with the
// older key while it stays on the keyring.
//
//   msk1.<key id>.<12-byte nonce, base64url>.<ciphertext + 16-byte tag, base64url>
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Keyring } from './keys.js';

const PREFIX = 'msk1';
const ENVELOPE = /^msk1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{22,})$/;

/** What a sealed value belongs to; the same binding must be given to open it. */
export interface SealBinding {
  deviceId: string;
  /** e.g. `command <uuid> ["fields","PIN"]` or `apple.bootstrap-token`. */
  purpose: string;
}

export interface Sealer {
  /** Whether a key is configured (without one, seal and open throw SecretKeyMissingError). */
  readonly configured: boolean;
  seal(value: string, binding: SealBinding): string;
  open(sealed: string, binding: SealBinding): string;
  /** Whether a sealed value is under an older key than the current one (seal it again after a rotation). */
  isStale(sealed: string): boolean;
}

/** A sealed value did not open: changed, moved, or sealed under a key that is not on the keyring. */
export class SealError extends Error {
  override name = 'SealError';
}

/** No secret key is configured, so a secret can neither be stored safely nor read back. */
export class SecretKeyMissingError extends Error {
  override name = 'SecretKeyMissingError';
}

/** Whether a value is a sealed envelope (its form only; whether it opens is another matter). */
export const isSealed = (v: unknown): v is string => typeof v === 'string' && v.startsWith(`${PREFIX}.`);

// JSON keeps the parts apart whatever characters a device id holds.
const aad = (keyId: string, b: SealBinding) => Buffer.from(JSON.stringify([PREFIX, keyId, b.purpose, b.deviceId]), 'utf8');

export function createSealer(ring: Keyring | undefined): Sealer {
  if (!ring) {
    const missing = (what: string) => {
      throw new SecretKeyMissingError(`no secret key is configured, so ${what} (set MUSTER_SECRET_KEY or MUSTER_SECRET_KEY_FILE; see docs/security.md)`);
    };
    return {
      configured: false,
      seal: () => missing('a secret cannot be stored (it is never stored in clear)'),
      open: () => missing('a sealed secret cannot be read'),
      isStale: () => false,
    };
  }
  const keys = new Map<string, Buffer>();
  const keyFor = (id: string): Buffer | undefined => {
    let k = keys.get(id);
    if (!k) {
      const master = ring.get(id);
      if (!master) return undefined;
      keys.set(id, (k = master.derive('seal')));
    }
    return k;
  };
  return {
    configured: true,
    seal(value, binding) {
      const id = ring.current.id;
      const iv = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', keyFor(id)!, iv);
      c.setAAD(aad(id, binding));
      const body = Buffer.concat([c.update(value, 'utf8'), c.final(), c.getAuthTag()]);
      return `${PREFIX}.${id}.${iv.toString('base64url')}.${body.toString('base64url')}`;
    },
    isStale(sealed) {
      const id = ENVELOPE.exec(sealed)?.[1];
      return id !== undefined && id !== ring.current.id;
    },
    open(sealed, binding) {
      const m = ENVELOPE.exec(sealed);
      if (!m) throw new SealError('not a sealed value');
      const [, id, iv, body] = m as unknown as [string, string, string, string];
      const key = keyFor(id);
      if (!key) throw new SealError(`sealed with key ${id}, which is not configured (current key ${ring.current.id}; an older key goes in MUSTER_SECRET_KEY_PREVIOUS)`);
      const bytes = Buffer.from(body, 'base64url');
      if (bytes.length < 17) throw new SealError('not a sealed value');
      try {
        const d = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
        d.setAAD(aad(id, binding));
        d.setAuthTag(bytes.subarray(bytes.length - 16));
        return Buffer.concat([d.update(bytes.subarray(0, bytes.length - 16)), d.final()]).toString('utf8');
      } catch {
        throw new SealError(`the sealed value does not open with key ${id} for device "${binding.deviceId}" (${binding.purpose}): it was changed, or moved from another row or device`);
      }
    },
  };
}
