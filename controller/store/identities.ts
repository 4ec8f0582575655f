// Device identity certificates, keyed by the SHA-256 of their DER. Each
// records the platform and protocol that issued it and the enrollment
// credential it was issued under; it is bound once, to one device of its own
// platform (at issuance, or at the first authenticated check-in for SCEP), and
// never moved (migration 005 enforces that under the application's checks).
// Whether a binding is allowed is decided in controller/devices/lifecycle.ts.
import type { Db, Queryable } from './db.js';
import type { Platform } from './devices.js';

export interface IdentityInput {
  /** Lower-case hex SHA-256 of the certificate's DER. */
  certSha256: string;
  deviceId?: string | null;
  platform: Platform;
  /** Which endpoint issued it: apple-scep, windows-wstep … */
  protocol: string;
  /** SHA-256 of the enrollment credential it was issued under ('static' for a shared one); null for a renewal. */
  credential?: string | null;
  /** The device an admin issued that credential for, when one was named. */
  forDevice?: string | null;
  /** The identity that signed the renewal request this one was issued for. */
  renewalOf?: string | null;
  /** The certificate's serial number, hex. */
  serialNumber: string;
  subject?: string | null;
  notAfter: Date;
}

export interface Identity {
  certSha256: string;
  deviceId: string | null;
  platform: Platform;
  protocol: string;
  credential: string | null;
  forDevice: string | null;
  renewalOf: string | null;
  serialNumber: string;
  subject: string | null;
  notAfter: Date;
  revokedAt: Date | null;
  boundAt: Date | null;
  createdAt: Date;
}

export interface IdentityStore {
  /** Records a certificate; recording the same one again changes nothing. */
  add(identity: IdentityInput, q?: Queryable): Promise<Identity>;
  get(certSha256: string, q?: Queryable): Promise<Identity | undefined>;
  /** The identity when it is bound to a device, unrevoked and unexpired at `at`. */
  authenticate(certSha256: string, at?: Date, q?: Queryable): Promise<Identity | undefined>;
  /** Binds an unbound identity (or confirms one bound to this device); undefined when it is bound elsewhere or unknown. */
  bind(certSha256: string, deviceId: string, q?: Queryable): Promise<Identity | undefined>;
  /** The device's identities that are bound, unrevoked and unexpired at `at`. */
  liveForDevice(deviceId: string, at?: Date, q?: Queryable): Promise<Identity[]>;
  /** Revokes one certificate; revoking twice keeps the first time. */
  revoke(certSha256: string, at?: Date, q?: Queryable): Promise<Identity | undefined>;
  /** Revokes every certificate of a device; returns how many were newly revoked. */
  revokeDevice(deviceId: string, at?: Date, q?: Queryable): Promise<number>;
  listForDevice(deviceId: string): Promise<Identity[]>;
}

interface IdentityRow {
  cert_sha256: string;
  device_id: string | null;
  platform: Platform;
  protocol: string;
  credential: string | null;
  for_device: string | null;
  renewal_of: string | null;
  serial_number: string;
  subject: string | null;
  not_after: Date;
  revoked_at: Date | null;
  bound_at: Date | null;
  created_at: Date;
}

const toIdentity = (r: IdentityRow): Identity => ({
  certSha256: r.cert_sha256,
  deviceId: r.device_id,
  platform: r.platform,
  protocol: r.protocol,
  credential: r.credential,
  forDevice: r.for_device,
  renewalOf: r.renewal_of,
  serialNumber: r.serial_number,
  subject: r.subject,
  notAfter: r.not_after,
  revokedAt: r.revoked_at,
  boundAt: r.bound_at,
  createdAt: r.created_at,
});

export function createIdentityStore(db: Db): IdentityStore {
  const one = (r: { rows: IdentityRow[] }) => (r.rows[0] ? toIdentity(r.rows[0]) : undefined);
  return {
    async add(i, q = db) {
      await q.query(
        `INSERT INTO device_identities (cert_sha256, device_id, platform, protocol, credential, for_device, renewal_of, serial_number, subject, not_after, bound_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $2::text IS NULL THEN NULL ELSE now() END) ON CONFLICT (cert_sha256) DO NOTHING`,
        [i.certSha256.toLowerCase(), i.deviceId ?? null, i.platform, i.protocol, i.credential ?? null, i.forDevice ?? null, i.renewalOf?.toLowerCase() ?? null, i.serialNumber, i.subject ?? null, i.notAfter],
      );
      return (await this.get(i.certSha256, q))!;
    },

    async get(certSha256, q = db) {
      return one(await q.query<IdentityRow>('SELECT * FROM device_identities WHERE cert_sha256 = $1', [certSha256.toLowerCase()]));
    },

    async authenticate(certSha256, at = new Date(), q = db) {
      return one(
        await q.query<IdentityRow>(
          `SELECT * FROM device_identities
            WHERE cert_sha256 = $1 AND device_id IS NOT NULL AND revoked_at IS NULL AND not_after > $2`,
          [certSha256.toLowerCase(), at],
        ),
      );
    },

    async bind(certSha256, deviceId, q = db) {
      return one(
        await q.query<IdentityRow>(
          `UPDATE device_identities SET device_id = $2, bound_at = COALESCE(bound_at, now())
            WHERE cert_sha256 = $1 AND (device_id IS NULL OR device_id = $2) RETURNING *`,
          [certSha256.toLowerCase(), deviceId],
        ),
      );
    },

    async liveForDevice(deviceId, at = new Date(), q = db) {
      const r = await q.query<IdentityRow>(
        `SELECT * FROM device_identities
          WHERE device_id = $1 AND revoked_at IS NULL AND not_after > $2 ORDER BY created_at, cert_sha256`,
        [deviceId, at],
      );
      return r.rows.map(toIdentity);
    },

    async revoke(certSha256, at = new Date(), q = db) {
      return one(
        await q.query<IdentityRow>(
          `UPDATE device_identities SET revoked_at = COALESCE(revoked_at, $2) WHERE cert_sha256 = $1 RETURNING *`,
          [certSha256.toLowerCase(), at],
        ),
      );
    },

    async revokeDevice(deviceId, at = new Date(), q = db) {
      const r = await q.query('UPDATE device_identities SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL', [
        deviceId,
        at,
      ]);
      return r.rowCount;
    },

    async listForDevice(deviceId) {
      const r = await db.reader.query<IdentityRow>(
        'SELECT * FROM device_identities WHERE device_id = $1 ORDER BY created_at, cert_sha256',
        [deviceId],
      );
      return r.rows.map(toIdentity);
    },
  };
}
