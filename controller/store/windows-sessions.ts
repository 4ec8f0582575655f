// Windows OMA-DM session state, one row per (device, SessionID): what lets the
// next message of a session land on any replica. The state is opaque JSON
// here (protocols/windows/syncml/session.ts owns its shape). Callers lock the
// row for the length of a message (get with lock inside a transaction), so
// two replicas never fold two messages of one session into the same state.
import type { Db, Queryable } from './db.js';

export interface WindowsSessionRow {
  deviceId: string;
  sessionId: string;
  state: unknown;
  ended: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface WindowsSessionStore {
  /** One session; `lock` takes the row FOR UPDATE (inside a transaction). */
  get(deviceId: string, sessionId: string, q?: Queryable, o?: { lock?: boolean }): Promise<WindowsSessionRow | undefined>;
  /** Inserts or replaces a session's state. */
  put(deviceId: string, sessionId: string, state: unknown, ended: boolean, q?: Queryable): Promise<void>;
  /** The device's sessions that have not ended (locked FOR UPDATE inside a transaction). */
  open(deviceId: string, q?: Queryable): Promise<WindowsSessionRow[]>;
  /** Deletes sessions not touched since `olderThan`; returns how many. */
  prune(olderThan: Date, q?: Queryable): Promise<number>;
}

interface Row {
  device_id: string;
  session_id: string;
  state: unknown;
  ended: boolean;
  created_at: Date;
  updated_at: Date;
}

const toRow = (r: Row): WindowsSessionRow => ({ deviceId: r.device_id, sessionId: r.session_id, state: r.state, ended: r.ended, createdAt: r.created_at, updatedAt: r.updated_at });

export function createWindowsSessionStore(db: Db): WindowsSessionStore {
  return {
    async get(deviceId, sessionId, q = db, o = {}) {
      const r = await q.query<Row>(`SELECT * FROM windows_sessions WHERE device_id = $1 AND session_id = $2${o.lock ? ' FOR UPDATE' : ''}`, [deviceId, sessionId]);
      return r.rows[0] ? toRow(r.rows[0]) : undefined;
    },

    async put(deviceId, sessionId, state, ended, q = db) {
      await q.query(
        `INSERT INTO windows_sessions (device_id, session_id, state, ended)
         VALUES ($1, $2, $3::text::jsonb, $4)
         ON CONFLICT (device_id, session_id) DO UPDATE SET state = EXCLUDED.state, ended = EXCLUDED.ended, updated_at = now()`,
        [deviceId, sessionId, JSON.stringify(state), ended],
      );
    },

    async open(deviceId, q = db) {
      const r = await q.query<Row>('SELECT * FROM windows_sessions WHERE device_id = $1 AND NOT ended ORDER BY updated_at FOR UPDATE', [deviceId]);
      return r.rows.map(toRow);
    },

    async prune(olderThan, q = db) {
      const r = await q.query('DELETE FROM windows_sessions WHERE updated_at < $1', [olderThan]);
      return r.rowCount;
    },
  };
}
