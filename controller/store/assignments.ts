// Desired state: for each device and rollout, the bundle hash the device
// should have and the sticky bucket that decided it (kept for audit).
import type { Db, Queryable } from './db.js';

export interface AssignmentInput {
  deviceId: string;
  rollout: string;
  revision: number;
  bundleHash: string;
  /** 0..9999, basis points. */
  bucket: number;
}

export type SyncState = 'Synced' | 'OutOfSync' | 'Pending' | 'Failed';

export interface Assignment extends AssignmentInput {
  /** When the bundle last changed for this device. */
  assignedAt: Date;
  sync: SyncState;
  syncDetail: string;
}

export interface SyncUpdate {
  deviceId: string;
  rollout: string;
  sync: SyncState;
  detail?: string;
}

export interface AssignmentStore {
  /**
   * Upserts in one statement; returns the device ids whose bundle, revision or
   * bucket actually changed (the devices the reconciler must diff again).
   */
  assign(list: readonly AssignmentInput[], q?: Queryable): Promise<string[]>;
  forDevice(deviceId: string, q?: Queryable): Promise<Assignment[]>;
  /** Keyset-paginated by device id. */
  forRollout(rollout: string, opts?: { afterDeviceId?: string; limit?: number }): Promise<Assignment[]>;
  /** How many devices each bundle hash is assigned to under a rollout. */
  countByBundle(rollout: string): Promise<Record<string, number>>;
  /** Every assignment, page by page (the reconciler's cache at start-up). */
  all(pageSize?: number): AsyncGenerator<Assignment[]>;
  /** Sets sync state; returns how many rows changed. */
  setSync(list: readonly SyncUpdate[], q?: Queryable): Promise<number>;
  /** Device counts per bundle hash and sync state under a rollout: {"sha256:…": {"Synced": 3}}. */
  syncCounts(rollout: string, q?: Queryable): Promise<Record<string, Partial<Record<SyncState, number>>>>;
  /** Devices with at least one assignment in this sync state, by id (keyset-paginated). */
  devicesInState(sync: SyncState, opts?: { afterDeviceId?: string; limit?: number }): Promise<Array<{ deviceId: string; rollouts: string[]; detail: string }>>;
  /** Removes a rollout's assignments (all, or of these devices); returns how many. */
  remove(rollout: string, deviceIds?: readonly string[], q?: Queryable): Promise<number>;
  /** Removes every assignment of one device (a device that came back as a new one); returns how many. */
  removeDevice(deviceId: string, q?: Queryable): Promise<number>;
}

interface AssignmentRow {
  device_id: string;
  rollout: string;
  revision: number;
  bundle_hash: string;
  bucket: number;
  assigned_at: Date;
  sync: SyncState;
  sync_detail: string;
}

const toAssignment = (r: AssignmentRow): Assignment => ({
  deviceId: r.device_id,
  rollout: r.rollout,
  revision: r.revision,
  bundleHash: r.bundle_hash,
  bucket: r.bucket,
  assignedAt: r.assigned_at,
  sync: r.sync,
  syncDetail: r.sync_detail,
});

export function createAssignmentStore(db: Db): AssignmentStore {
  return {
    async assign(list, q = db) {
      // One row per (device, rollout): a statement may not update a row twice. The last one wins.
      const rows = [...new Map(list.map((a) => [`${a.rollout}\u0000${a.deviceId}`, a])).values()];
      if (rows.length === 0) return [];
      const r = await q.query<{ device_id: string }>(
        `INSERT INTO assignments (device_id, rollout, revision, bundle_hash, bucket)
         SELECT e->>'d', e->>'r', (e->>'v')::int, e->>'h', (e->>'b')::int
           FROM jsonb_array_elements($1::text::jsonb) AS b(e)
         ON CONFLICT (device_id, rollout) DO UPDATE
           SET revision = EXCLUDED.revision, bundle_hash = EXCLUDED.bundle_hash, bucket = EXCLUDED.bucket,
               sync = CASE WHEN assignments.bundle_hash = EXCLUDED.bundle_hash THEN assignments.sync ELSE 'OutOfSync' END,
               assigned_at = CASE WHEN assignments.bundle_hash = EXCLUDED.bundle_hash
                                  THEN assignments.assigned_at ELSE now() END
           WHERE (assignments.revision, assignments.bundle_hash, assignments.bucket)
                 IS DISTINCT FROM (EXCLUDED.revision, EXCLUDED.bundle_hash, EXCLUDED.bucket)
         RETURNING device_id`,
        [JSON.stringify(rows.map((a) => ({ d: a.deviceId, r: a.rollout, v: a.revision, h: a.bundleHash, b: a.bucket })))],
      );
      return r.rows.map((x) => x.device_id);
    },

    async forDevice(deviceId, q = db) {
      const r = await q.query<AssignmentRow>('SELECT * FROM assignments WHERE device_id = $1 ORDER BY rollout', [deviceId]);
      return r.rows.map(toAssignment);
    },

    async forRollout(rollout, opts = {}) {
      const r = await db.reader.query<AssignmentRow>(
        `SELECT * FROM assignments WHERE rollout = $1 AND device_id > $2 ORDER BY device_id LIMIT $3`,
        [rollout, opts.afterDeviceId ?? '', opts.limit ?? 1000],
      );
      return r.rows.map(toAssignment);
    },

    async countByBundle(rollout) {
      const r = await db.reader.query<{ bundle_hash: string; n: number }>(
        'SELECT bundle_hash, count(*) AS n FROM assignments WHERE rollout = $1 GROUP BY bundle_hash',
        [rollout],
      );
      return Object.fromEntries(r.rows.map((x) => [x.bundle_hash, Number(x.n)]));
    },

    async *all(pageSize = 10_000) {
      let after = { d: '', r: '' };
      for (;;) {
        const r = await db.reader.query<AssignmentRow>(
          'SELECT * FROM assignments WHERE (device_id, rollout) > ($1, $2) ORDER BY device_id, rollout LIMIT $3',
          [after.d, after.r, pageSize],
        );
        if (r.rows.length === 0) return;
        yield r.rows.map(toAssignment);
        const last = r.rows[r.rows.length - 1]!;
        after = { d: last.device_id, r: last.rollout };
        if (r.rows.length < pageSize) return;
      }
    },

    async setSync(list, q = db) {
      if (list.length === 0) return 0;
      const r = await q.query(
        `UPDATE assignments a SET sync = e->>'s', sync_detail = COALESCE(e->>'m', ''),
                synced_at = CASE WHEN e->>'s' = 'Synced' THEN now() ELSE a.synced_at END
           FROM jsonb_array_elements($1::text::jsonb) AS b(e)
          WHERE a.device_id = e->>'d' AND a.rollout = e->>'r'
            AND (a.sync, a.sync_detail) IS DISTINCT FROM (e->>'s', COALESCE(e->>'m', ''))`,
        [JSON.stringify(list.map((u) => ({ d: u.deviceId, r: u.rollout, s: u.sync, m: u.detail ?? '' })))],
      );
      return r.rowCount;
    },

    async devicesInState(sync, opts = {}) {
      const r = await db.reader.query<{ device_id: string; rollouts: string[]; detail: string }>(
        `SELECT device_id, array_agg(rollout ORDER BY rollout) AS rollouts, min(sync_detail) AS detail
           FROM assignments WHERE sync = $1 AND device_id > $2
          GROUP BY device_id ORDER BY device_id LIMIT $3`,
        [sync, opts.afterDeviceId ?? '', opts.limit ?? 100],
      );
      return r.rows.map((x) => ({ deviceId: x.device_id, rollouts: x.rollouts, detail: x.detail }));
    },

    async syncCounts(rollout, q = db) {
      const r = await q.query<{ bundle_hash: string; sync: SyncState; n: number }>(
        'SELECT bundle_hash, sync, count(*) AS n FROM assignments WHERE rollout = $1 GROUP BY bundle_hash, sync',
        [rollout],
      );
      const out: Record<string, Partial<Record<SyncState, number>>> = {};
      for (const x of r.rows) (out[x.bundle_hash] ??= {})[x.sync] = Number(x.n);
      return out;
    },

    async remove(rollout, deviceIds, q = db) {
      const r = await q.query('DELETE FROM assignments WHERE rollout = $1 AND ($2::text[] IS NULL OR device_id = ANY($2::text[]))', [
        rollout,
        deviceIds ? [...deviceIds] : null,
      ]);
      return r.rowCount;
    },

    async removeDevice(deviceId, q = db) {
      const r = await q.query('DELETE FROM assignments WHERE device_id = $1', [deviceId]);
      return r.rowCount;
    },
  };
}
