// Devices, their per-platform enrollment state and what they last reported.
// Identities (certificates) are in identities.ts.
import { lockKey, type Db, type Queryable } from './db.js';

export type Platform = 'apple' | 'windows' | 'android' | 'agent';

export interface DeviceInput {
  id: string;
  platform: Platform;
  identifiers?: Record<string, string>;
  serialNumber?: string | null;
  model?: string | null;
  osVersion?: string | null;
  labels?: Record<string, string>;
  attributes?: Record<string, string>;
  enrolledAt?: Date;
}

export interface Device {
  id: string;
  platform: Platform;
  identifiers: Record<string, string>;
  serialNumber: string | null;
  model: string | null;
  osVersion: string | null;
  labels: Record<string, string>;
  attributes: Record<string, string>;
  enrolledAt: Date;
  lastSeenAt: Date | null;
  updatedAt: Date;
}

/** The fields group selectors can be narrowed by in SQL; the exact selector runs in TypeScript. */
export interface DeviceFilter {
  platform?: Platform;
  model?: string;
  osVersion?: string;
  serialNumber?: string;
  /** Every one of these label values (matchLabels). */
  labels?: Record<string, string>;
  /** Every one of these label keys present (Exists). */
  hasLabels?: string[];
  /** Every one of these attribute values. */
  attributes?: Record<string, string>;
  /** Keyset pagination: ids after this one. */
  afterId?: string;
  limit?: number;
}

export type EnrollmentStatus = 'pending' | 'enrolled' | 'unenrolled';

export interface Enrollment {
  deviceId: string;
  platform: Platform;
  status: EnrollmentStatus;
  /** Driver-owned: APNs token and push magic, Windows session, AMAPI device name ... */
  state: Record<string, unknown>;
  updatedAt: Date;
}

export interface ReportedState {
  kind: string;
  state: unknown;
  reportedAt: Date;
}

export interface DeviceStore {
  /** Inserts, or updates the fields given (platform and enrolledAt are kept on update). */
  upsert(device: DeviceInput, q?: Queryable): Promise<Device>;
  /** Bulk insert-or-replace (fleet imports, simulators): one statement per call. */
  upsertMany(devices: readonly DeviceInput[], q?: Queryable): Promise<number>;
  /** Every device, page by page in id order (the reconciler's full resync). */
  all(pageSize?: number): AsyncGenerator<Device[]>;
  /** One kind of reported state for many devices at once. */
  reportedMany(deviceIds: readonly string[], kind: string, q?: Queryable): Promise<Map<string, { state: unknown; reportedAt: Date }>>;
  get(id: string, q?: Queryable): Promise<Device | undefined>;
  /** The stored id of this platform's device whose id equals `id` ignoring case (Windows DeviceIDs are GUIDs). */
  canonicalId(id: string, platform: Platform, q?: Queryable): Promise<string | undefined>;
  /** By a platform identifier, e.g. findByIdentifier('udid', '0000-...'). */
  findByIdentifier(key: string, value: string): Promise<Device | undefined>;
  list(filter?: DeviceFilter): Promise<Device[]>;
  count(filter?: Omit<DeviceFilter, 'afterId' | 'limit'>): Promise<number>;
  /** Records a check-in: last_seen_at only moves forward. */
  touch(id: string, at?: Date, q?: Queryable): Promise<void>;

  setEnrollment(e: Omit<Enrollment, 'updatedAt'>, q?: Queryable): Promise<Enrollment>;
  /** Shallow-merges keys into the enrollment state (e.g. a new push token). */
  patchEnrollmentState(deviceId: string, patch: Record<string, unknown>, q?: Queryable): Promise<Enrollment | undefined>;
  getEnrollment(deviceId: string, q?: Queryable): Promise<Enrollment | undefined>;
  /**
   * Holds a lock on one device until the transaction `tx` ends (an advisory
   * lock, so it works before the device has a row): a protocol that reads,
   * then rewrites a device's state from its reports takes it first, so two
   * reports handled at once never lose an update.
   */
  lockDevice(deviceId: string, tx: Queryable): Promise<void>;

  /** Replaces the device's report of this kind. */
  report(deviceId: string, kind: string, state: unknown, at?: Date, q?: Queryable): Promise<void>;
  reported(deviceId: string, q?: Queryable): Promise<ReportedState[]>;
}

interface DeviceRow {
  id: string;
  platform: Platform;
  identifiers: Record<string, string>;
  serial_number: string | null;
  model: string | null;
  os_version: string | null;
  labels: Record<string, string>;
  attributes: Record<string, string>;
  enrolled_at: Date;
  last_seen_at: Date | null;
  updated_at: Date;
}

const toDevice = (r: DeviceRow): Device => ({
  id: r.id,
  platform: r.platform,
  identifiers: r.identifiers,
  serialNumber: r.serial_number,
  model: r.model,
  osVersion: r.os_version,
  labels: r.labels,
  attributes: r.attributes,
  enrolledAt: r.enrolled_at,
  lastSeenAt: r.last_seen_at,
  updatedAt: r.updated_at,
});

interface EnrollmentRow {
  device_id: string;
  platform: Platform;
  status: EnrollmentStatus;
  state: Record<string, unknown>;
  updated_at: Date;
}

const toEnrollment = (r: EnrollmentRow): Enrollment => ({
  deviceId: r.device_id,
  platform: r.platform,
  status: r.status,
  state: r.state,
  updatedAt: r.updated_at,
});

const json = (v: unknown): string | null => (v === undefined ? null : JSON.stringify(v));

/** WHERE clause and parameters for a filter; every value is a parameter. */
function whereOf(f: DeviceFilter, params: unknown[]): string {
  const conds: string[] = [];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  if (f.platform) conds.push(`platform = ${p(f.platform)}`);
  if (f.model) conds.push(`model = ${p(f.model)}`);
  if (f.osVersion) conds.push(`os_version = ${p(f.osVersion)}`);
  if (f.serialNumber) conds.push(`serial_number = ${p(f.serialNumber)}`);
  if (f.labels && Object.keys(f.labels).length) conds.push(`labels @> ${p(JSON.stringify(f.labels))}::text::jsonb`);
  if (f.hasLabels?.length) conds.push(`labels ?& ${p(f.hasLabels)}::text[]`);
  if (f.attributes && Object.keys(f.attributes).length) {
    conds.push(`attributes @> ${p(JSON.stringify(f.attributes))}::text::jsonb`);
  }
  if (f.afterId !== undefined) conds.push(`id > ${p(f.afterId)}`);
  return conds.length ? 'WHERE ' + conds.join(' AND ') : '';
}

export function createDeviceStore(db: Db): DeviceStore {
  return {
    async upsert(d, q = db) {
      const r = await q.query<DeviceRow>(
        `INSERT INTO devices (id, platform, identifiers, serial_number, model, os_version, labels, attributes, enrolled_at)
         VALUES ($1, $2, COALESCE($3::text::jsonb, '{}'), $4, $5, $6,
                 COALESCE($7::text::jsonb, '{}'), COALESCE($8::text::jsonb, '{}'), COALESCE($9::timestamptz, now()))
         ON CONFLICT (id) DO UPDATE SET
           identifiers   = COALESCE($3::text::jsonb, devices.identifiers),
           serial_number = CASE WHEN $10 THEN $4 ELSE devices.serial_number END,
           model         = CASE WHEN $11 THEN $5 ELSE devices.model END,
           os_version    = CASE WHEN $12 THEN $6 ELSE devices.os_version END,
           labels        = COALESCE($7::text::jsonb, devices.labels),
           attributes    = COALESCE($8::text::jsonb, devices.attributes),
           updated_at    = now()
         RETURNING *`,
        [
          d.id,
          d.platform,
          json(d.identifiers),
          d.serialNumber ?? null,
          d.model ?? null,
          d.osVersion ?? null,
          json(d.labels),
          json(d.attributes),
          d.enrolledAt ?? null,
          d.serialNumber !== undefined,
          d.model !== undefined,
          d.osVersion !== undefined,
        ],
      );
      return toDevice(r.rows[0]!);
    },

    async upsertMany(list, q = db) {
      if (list.length === 0) return 0;
      const r = await q.query(
        `INSERT INTO devices (id, platform, identifiers, serial_number, model, os_version, labels, attributes, enrolled_at)
         SELECT e->>'id', e->>'platform', COALESCE(e->'identifiers', '{}'), e->>'serial', e->>'model', e->>'os',
                COALESCE(e->'labels', '{}'), COALESCE(e->'attributes', '{}'), COALESCE((e->>'at')::timestamptz, now())
           FROM jsonb_array_elements($1::text::jsonb) AS b(e)
         ON CONFLICT (id) DO UPDATE SET
           identifiers = EXCLUDED.identifiers, serial_number = EXCLUDED.serial_number, model = EXCLUDED.model,
           os_version = EXCLUDED.os_version, labels = EXCLUDED.labels, attributes = EXCLUDED.attributes, updated_at = now()`,
        [
          JSON.stringify(
            [...new Map(list.map((d) => [d.id, d])).values()].map((d) => ({
              id: d.id,
              platform: d.platform,
              identifiers: d.identifiers,
              serial: d.serialNumber ?? null,
              model: d.model ?? null,
              os: d.osVersion ?? null,
              labels: d.labels,
              attributes: d.attributes,
              at: d.enrolledAt?.toISOString() ?? null,
            })),
          ),
        ],
      );
      return r.rowCount;
    },

    async *all(pageSize = 5000) {
      let after = '';
      for (;;) {
        const r = await db.reader.query<DeviceRow>('SELECT * FROM devices WHERE id > $1 ORDER BY id LIMIT $2', [after, pageSize]);
        if (r.rows.length === 0) return;
        yield r.rows.map(toDevice);
        after = r.rows[r.rows.length - 1]!.id;
        if (r.rows.length < pageSize) return;
      }
    },

    async reportedMany(ids, kind, q = db) {
      const out = new Map<string, { state: unknown; reportedAt: Date }>();
      if (ids.length === 0) return out;
      const r = await q.query<{ device_id: string; state: unknown; reported_at: Date }>(
        'SELECT device_id, state, reported_at FROM reported_state WHERE kind = $1 AND device_id = ANY($2::text[])',
        [kind, [...ids]],
      );
      for (const x of r.rows) out.set(x.device_id, { state: x.state, reportedAt: x.reported_at });
      return out;
    },

    async get(id, q = db) {
      const r = await q.query<DeviceRow>('SELECT * FROM devices WHERE id = $1', [id]);
      return r.rows[0] ? toDevice(r.rows[0]) : undefined;
    },

    async canonicalId(id, platform, q = db) {
      const r = await q.query<{ id: string }>('SELECT id FROM devices WHERE lower(id) = lower($1) AND platform = $2 ORDER BY id LIMIT 1', [id, platform]);
      return r.rows[0]?.id;
    },

    async findByIdentifier(key, value) {
      const r = await db.query<DeviceRow>('SELECT * FROM devices WHERE identifiers @> $1::text::jsonb ORDER BY id LIMIT 1', [
        JSON.stringify({ [key]: value }),
      ]);
      return r.rows[0] ? toDevice(r.rows[0]) : undefined;
    },

    async list(filter = {}) {
      const params: unknown[] = [];
      const where = whereOf(filter, params);
      params.push(filter.limit ?? 1000);
      const r = await db.reader.query<DeviceRow>(`SELECT * FROM devices ${where} ORDER BY id LIMIT $${params.length}`, params);
      return r.rows.map(toDevice);
    },

    async count(filter = {}) {
      const params: unknown[] = [];
      const r = await db.reader.query<{ n: number }>(`SELECT count(*) AS n FROM devices ${whereOf(filter, params)}`, params);
      return Number(r.rows[0]?.n ?? 0);
    },

    async touch(id, at = new Date(), q = db) {
      await q.query(
        `UPDATE devices SET last_seen_at = GREATEST(COALESCE(last_seen_at, $2::timestamptz), $2::timestamptz) WHERE id = $1`,
        [id, at],
      );
    },

    async setEnrollment(e, q = db) {
      const r = await q.query<EnrollmentRow>(
        `INSERT INTO enrollments (device_id, platform, status, state) VALUES ($1, $2, $3, $4::text::jsonb)
         ON CONFLICT (device_id) DO UPDATE
           SET platform = EXCLUDED.platform, status = EXCLUDED.status, state = EXCLUDED.state, updated_at = now()
         RETURNING *`,
        [e.deviceId, e.platform, e.status, JSON.stringify(e.state)],
      );
      return toEnrollment(r.rows[0]!);
    },

    async patchEnrollmentState(deviceId, patch, q = db) {
      const r = await q.query<EnrollmentRow>(
        `UPDATE enrollments SET state = state || $2::text::jsonb, updated_at = now() WHERE device_id = $1 RETURNING *`,
        [deviceId, JSON.stringify(patch)],
      );
      return r.rows[0] ? toEnrollment(r.rows[0]) : undefined;
    },

    async getEnrollment(deviceId, q = db) {
      const r = await q.query<EnrollmentRow>('SELECT * FROM enrollments WHERE device_id = $1', [deviceId]);
      return r.rows[0] ? toEnrollment(r.rows[0]) : undefined;
    },

    async lockDevice(deviceId, tx) {
      await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey(`device:${deviceId}`, db.schema)]);
    },

    async report(deviceId, kind, state, at = new Date(), q = db) {
      await q.query(
        `INSERT INTO reported_state (device_id, kind, state, reported_at) VALUES ($1, $2, $3::text::jsonb, $4)
         ON CONFLICT (device_id, kind) DO UPDATE SET state = EXCLUDED.state, reported_at = EXCLUDED.reported_at`,
        [deviceId, kind, JSON.stringify(state ?? null), at],
      );
    },

    async reported(deviceId, q = db) {
      const r = await q.query<{ kind: string; state: unknown; reported_at: Date }>(
        'SELECT kind, state, reported_at FROM reported_state WHERE device_id = $1 ORDER BY kind',
        [deviceId],
      );
      return r.rows.map((x) => ({ kind: x.kind, state: x.state, reportedAt: x.reported_at }));
    },
  };
}
