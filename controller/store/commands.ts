// The command queue. A command is an opaque, protocol-specific payload for one
// device; the queue only knows its lifecycle:
//
//   pending ─► sent ─► acknowledged ─► completed | failed
//      ▲        │  ▲
//      │        ▼  │ (after backoff)         anything unfinished ─► expired
//      └───── not_now                        (at expires_at, by sweep())
//
// Delivery order is priority (higher first), then seq (a monotonic sequence),
// never a timestamp. Claims take rows with FOR UPDATE SKIP LOCKED, so
// concurrent workers never get the same command. A sent command that is never
// answered becomes deliverable again when its lease (not_before) runs out,
// until max_attempts deliveries have been made.
//
// Two ways to take work: nextForDevice() (a device checking in) considers the
// device's pending, not_now and sent rows directly; claim() (workers across
// all devices) reads only 'pending' rows from a small index, and sweep() puts
// sent and not_now rows whose lease or backoff ran out back to pending.
//
// Secrets in a payload (a PIN, a new password) are named by the command
// (NewCommand.sealed), sealed here before they are stored, opened only when
// the command is claimed for delivery, and removed from the payload by the
// very statement that makes the command final (migration 006 forbids a final
// row that still holds one).
import { type Sealer, SealError, SecretKeyMissingError, isSealed } from '../secrets/seal.js';
import { type Db, type Queryable, type StoreLogger, silentLogger } from './db.js';

export type CommandState = 'pending' | 'sent' | 'acknowledged' | 'not_now' | 'completed' | 'failed' | 'expired';
export const FINISHED_STATES: readonly CommandState[] = ['completed', 'failed', 'expired'];

export interface NewCommand {
  /** Idempotency key: enqueueing the same UUID again is a no-op. */
  uuid: string;
  deviceId: string;
  type: string;
  /** The protocol-specific body, opaque to the store. */
  payload?: unknown;
  /** Higher runs first. Default 0. */
  priority?: number;
  /** Deliveries allowed, NotNow ones included. Default 10. */
  maxAttempts?: number;
  notBefore?: Date;
  expiresAt?: Date;
  /**
   * Paths in `payload` (key arrays, e.g. ['fields', 'PIN']) whose string
   * values are secrets: sealed when stored, opened when the command is
   * claimed for delivery, removed once it is final. Refused when no secret
   * key is configured.
   */
  sealed?: ReadonlyArray<readonly string[]>;
}

export interface Command {
  seq: number;
  uuid: string;
  deviceId: string;
  type: string;
  payload: unknown;
  priority: number;
  state: CommandState;
  attempts: number;
  maxAttempts: number;
  notBefore: Date;
  expiresAt: Date | null;
  lastError: string | null;
  createdAt: Date;
  sentAt: Date | null;
  acknowledgedAt: Date | null;
  finishedAt: Date | null;
  /**
   * Paths of payload fields that hold secrets, while the command is unfinished.
   * A claimed command (nextForDevice, claim) carries them opened; everywhere
   * else they are sealed values. Absent or null: none.
   */
  sealed?: string[][] | null;
}

export type ReportStatus = 'acknowledged' | 'completed' | 'failed' | 'not_now';

export interface CommandReport {
  status: ReportStatus;
  /** What the device sent back, opaque to the store. */
  result?: unknown;
  error?: string;
  /** For not_now: when to try again; default exponential backoff on attempts. */
  retryAfterMs?: number;
}

export interface ReportOutcome {
  /** False when the report was a duplicate, for an unknown command, or too late to matter. */
  changed: boolean;
  reason?: 'unknown' | 'duplicate' | 'finished' | 'not-sent';
  command?: Command;
}

export interface ClaimOptions {
  limit?: number;
  /** How long a sent command waits for an answer before it may be delivered again. */
  leaseMs?: number;
}

export interface QueueOptions {
  leaseMs?: number;
  notNowBackoff?: { baseMs?: number; capMs?: number };
}

/** What the queue needs besides its options: the sealer for secrets, and a logger. */
export interface QueueDeps {
  sealer?: Sealer;
  logger?: StoreLogger;
}

export interface CommandQueue {
  enqueue(commands: NewCommand | readonly NewCommand[], q?: Queryable): Promise<{ inserted: { uuid: string; seq: number }[]; duplicates: string[] }>;
  /** Claims the next deliverable commands of one device (state → sent, attempts + 1). */
  nextForDevice(deviceId: string, opts?: ClaimOptions, q?: Queryable): Promise<Command[]>;
  /** Claims deliverable commands across all devices. */
  claim(opts?: ClaimOptions & { /** Only commands of these types (a worker for one protocol). */ types?: readonly string[] }, q?: Queryable): Promise<Command[]>;
  /** Records a device's answer; idempotent. */
  report(uuid: string, report: CommandReport, q?: Queryable): Promise<ReportOutcome>;
  get(uuid: string, q?: Queryable): Promise<Command | undefined>;
  /** Newest first, finished ones included. */
  listForDevice(deviceId: string, opts?: { limit?: number; beforeSeq?: number }): Promise<Command[]>;
  results(uuid: string): Promise<{ attempt: number; status: ReportStatus; result: unknown; error: string | null; reportedAt: Date }[]>;
  /** Ends every unfinished command of a device (state expired, with the reason); returns how many. */
  clearForDevice(deviceId: string, reason: string, q?: Queryable): Promise<number>;
  /** How many of a device's commands are not finished (pending, sent, acknowledged, not_now). */
  unfinishedCount(deviceId: string, q?: Queryable): Promise<number>;
  /** Devices with a deliverable command now (for push wake-ups). */
  devicesWithDueCommands(limit?: number): Promise<string[]>;
  /**
   * Expires overdue commands, fails those out of attempts, and puts sent and
   * not_now commands whose lease or backoff ran out back to pending. Run it
   * every few seconds (the leader does).
   */
  sweep(q?: Queryable): Promise<{ expired: number; exhausted: number; requeued: number }>;
  countByState(): Promise<Record<CommandState, number>>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

interface CommandRow {
  seq: number | string;
  uuid: string;
  device_id: string;
  type: string;
  payload: unknown;
  priority: number;
  state: CommandState;
  attempts: number;
  max_attempts: number;
  not_before: Date;
  expires_at: Date | null;
  last_error: string | null;
  created_at: Date;
  sent_at: Date | null;
  acknowledged_at: Date | null;
  finished_at: Date | null;
  sealed: string[][] | null;
}

function toCommand(r: CommandRow): Command {
  return {
    seq: Number(r.seq),
    uuid: r.uuid,
    deviceId: r.device_id,
    type: r.type,
    payload: r.payload,
    priority: r.priority,
    state: r.state,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    notBefore: r.not_before,
    expiresAt: r.expires_at,
    lastError: r.last_error,
    createdAt: r.created_at,
    sentAt: r.sent_at,
    acknowledgedAt: r.acknowledged_at,
    finishedAt: r.finished_at,
    sealed: r.sealed ?? null,
  };
}

/** What a sealed field is bound to: its device, its command and its place in the payload. */
export const sealBinding = (deviceId: string, uuid: string, path: readonly string[]) => ({ deviceId, purpose: `command ${uuid.toLowerCase()} ${JSON.stringify(path)}` });

/** A copy of `payload` with `fn` applied to the value at `path` (which must exist). */
function mapAt(payload: unknown, path: readonly string[], fn: (v: unknown) => unknown): unknown {
  if (path.length === 0) return fn(payload);
  const [head, ...rest] = path as [string, ...string[]];
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload) || !Object.hasOwn(payload, head)) {
    throw new Error(`the payload has no field ${JSON.stringify(path)} to seal`);
  }
  return { ...(payload as Record<string, unknown>), [head]: mapAt((payload as Record<string, unknown>)[head], rest, fn) };
}

const byDeliveryOrder = (a: Command, b: Command) => b.priority - a.priority || a.seq - b.seq;

// Deliverable: due, unexpired, attempts left (the state is the caller's part).
const DUE = `not_before <= now()
  AND (expires_at IS NULL OR expires_at > now())
  AND attempts < max_attempts`;
const DELIVERABLE = `state IN ('pending', 'sent', 'not_now') AND ${DUE}`;

const CLAIM_SET = `state = 'sent', attempts = c.attempts + 1, sent_at = now(),
  not_before = now() + ($LEASE::double precision * interval '1 millisecond')`;

// Part of every SET that makes a command final: its secrets go with it.
const DROP_SECRETS = `payload = commands_strip_sealed(payload, sealed), sealed = NULL`;

export function createCommandQueue(db: Db, opts: QueueOptions = {}, deps: QueueDeps = {}): CommandQueue {
  const defaultLease = opts.leaseMs ?? 5 * 60_000;
  const nnBase = opts.notNowBackoff?.baseMs ?? 30_000;
  const nnCap = opts.notNowBackoff?.capMs ?? 60 * 60_000;
  const logger = deps.logger ?? silentLogger;

  function sealPayload(c: NewCommand): unknown {
    let payload: unknown = c.payload ?? {};
    for (const path of c.sealed ?? []) {
      if (path.length === 0 || path.some((k) => typeof k !== 'string')) throw new Error(`command ${c.uuid}: a sealed path is a non-empty list of keys`);
      if (!deps.sealer?.configured) {
        throw new SecretKeyMissingError(`${c.type} for ${c.deviceId} carries a secret (${path.join('.')}) and no secret key is configured: it is refused rather than stored in clear (set MUSTER_SECRET_KEY or MUSTER_SECRET_KEY_FILE; see docs/security.md)`);
      }
      payload = mapAt(payload, path, (v) => {
        if (typeof v !== 'string') throw new Error(`command ${c.uuid}: only a string can be sealed (${path.join('.')})`);
        return deps.sealer!.seal(v, sealBinding(c.deviceId, c.uuid, path));
      });
    }
    return payload;
  }

  /** The payload with its sealed fields opened; values from before sealing existed (migration 006) are in clear already. */
  function opened(row: CommandRow): unknown {
    let payload = row.payload;
    for (const path of row.sealed ?? []) {
      try {
        payload = mapAt(payload, path, (v) => {
          if (!isSealed(v)) return v;
          if (!deps.sealer?.configured) throw new SecretKeyMissingError('the command carries a sealed secret and no secret key is configured');
          return deps.sealer.open(v, sealBinding(row.device_id, row.uuid, path));
        });
      } catch (e) {
        if (e instanceof SealError || e instanceof SecretKeyMissingError) throw e;
        // The row was changed under us: a field it says is sealed is not there.
        throw new SealError((e as Error).message);
      }
    }
    return payload;
  }

  async function claimWhere(where: string, params: unknown[], o: ClaimOptions, q: Queryable): Promise<Command[]> {
    const limit = o.limit ?? 1;
    if (!Number.isInteger(limit) || limit < 1) throw new Error('claim limit must be a positive integer');
    const n = params.length;
    const out: Command[] = [];
    // A command whose secret does not open fails on its own and is replaced by the next one, so it never blocks the queue.
    while (out.length < limit) {
      const r = await q.query<CommandRow>(
        `WITH picked AS (
           SELECT seq FROM commands
            WHERE ${where} AND ${DUE}
            ORDER BY priority DESC, seq
            LIMIT $${n + 1}
            FOR UPDATE SKIP LOCKED)
         UPDATE commands c SET ${CLAIM_SET.replace('$LEASE', `$${n + 2}`)}
           FROM picked WHERE c.seq = picked.seq
         RETURNING c.*`,
        [...params, limit - out.length, o.leaseMs ?? defaultLease],
      );
      let failed = 0;
      for (const row of r.rows) {
        if (!row.sealed) {
          out.push(toCommand(row));
          continue;
        }
        try {
          out.push({ ...toCommand(row), payload: opened(row) });
        } catch (e) {
          if (!(e instanceof SealError || e instanceof SecretKeyMissingError)) throw e;
          failed++;
          logger.warn('a command secret did not open; the command failed', { command: row.uuid, device: row.device_id, type: row.type, error: e.message });
          await q.query(`UPDATE commands SET state = 'failed', finished_at = now(), last_error = $2, ${DROP_SECRETS} WHERE seq = $1`, [row.seq, `not sent: ${e.message}`]);
        }
      }
      if (failed === 0 || r.rows.length === 0) break;
    }
    return out.sort(byDeliveryOrder);
  }

  return {
    async enqueue(commands, q = db) {
      const list = Array.isArray(commands) ? commands : [commands as NewCommand];
      const seen = new Set<string>();
      const unique: NewCommand[] = [];
      for (const c of list) {
        if (!isUuid(c.uuid)) throw new Error(`command uuid "${c.uuid}" is not a UUID`);
        const key = c.uuid.toLowerCase();
        if (seen.has(key)) continue;
        seen.add(key);
        unique.push(c);
      }
      if (unique.length === 0) return { inserted: [], duplicates: [] };
      // One JSON parameter for the whole batch: no parameter-count limit, same on both backends.
      const batch = unique.map((c) => ({
        u: c.uuid,
        d: c.deviceId,
        t: c.type,
        p: sealPayload(c),
        ...(c.sealed?.length ? { s: c.sealed } : {}),
        r: c.priority ?? 0,
        m: c.maxAttempts ?? 10,
        nb: c.notBefore?.toISOString() ?? null,
        x: c.expiresAt?.toISOString() ?? null,
      }));
      const r = await q.query<{ uuid: string; seq: number }>(
        `INSERT INTO commands (uuid, device_id, type, payload, priority, max_attempts, not_before, expires_at, sealed)
         SELECT (e->>'u')::uuid, e->>'d', e->>'t', e->'p', (e->>'r')::int, (e->>'m')::int,
                COALESCE((e->>'nb')::timestamptz, now()), (e->>'x')::timestamptz, e->'s'
           FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS b(e, i)
          ORDER BY i
         ON CONFLICT (uuid) DO NOTHING
         RETURNING uuid, seq`,
        [JSON.stringify(batch)],
      );
      const inserted = r.rows.map((x) => ({ uuid: x.uuid, seq: Number(x.seq) })).sort((a, b) => a.seq - b.seq);
      const got = new Set(inserted.map((x) => x.uuid.toLowerCase()));
      return { inserted, duplicates: unique.filter((c) => !got.has(c.uuid.toLowerCase())).map((c) => c.uuid) };
    },

    nextForDevice(deviceId, o = {}, q = db) {
      return claimWhere(`device_id = $1 AND state IN ('pending', 'sent', 'not_now')`, [deviceId], o, q);
    },

    claim(o = {}, q = db) {
      if (o.types) return claimWhere(`state = 'pending' AND type = ANY($1::text[])`, [[...o.types]], { limit: 100, ...o }, q);
      return claimWhere(`state = 'pending'`, [], { limit: 100, ...o }, q);
    },

    async report(uuid, rep, q) {
      if (!isUuid(uuid)) return { changed: false, reason: 'unknown' };
      const run = async (tx: Queryable): Promise<ReportOutcome> => {
        const cur = await tx.query<CommandRow>('SELECT * FROM commands WHERE uuid = $1 FOR UPDATE', [uuid]);
        const row = cur.rows[0];
        if (!row) return { changed: false, reason: 'unknown' };
        const ins = await tx.query(
          `INSERT INTO command_results (command_uuid, attempt, status, result, error)
           VALUES ($1, $2, $3, $4::text::jsonb, $5)
           ON CONFLICT (command_uuid, attempt, status) DO NOTHING
           RETURNING id`,
          [uuid, row.attempts, rep.status, rep.result === undefined ? null : JSON.stringify(rep.result), rep.error ?? null],
        );
        if (ins.rowCount === 0) return { changed: false, reason: 'duplicate', command: toCommand(row) };
        if (FINISHED_STATES.includes(row.state)) return { changed: false, reason: 'finished', command: toCommand(row) };
        let upd: { sql: string; params: unknown[] } | undefined;
        switch (rep.status) {
          case 'acknowledged':
            if (row.state === 'sent') {
              upd = { sql: `state = 'acknowledged', acknowledged_at = now()`, params: [] };
            }
            break;
          case 'completed':
            upd = { sql: `state = 'completed', finished_at = now(), last_error = NULL, ${DROP_SECRETS}`, params: [] };
            break;
          case 'failed':
            upd = { sql: `state = 'failed', finished_at = now(), last_error = $2, ${DROP_SECRETS}`, params: [rep.error ?? 'failed'] };
            break;
          case 'not_now': {
            if (row.state !== 'sent') break;
            const wait = rep.retryAfterMs ?? Math.min(nnCap, nnBase * 2 ** Math.max(0, Math.min(row.attempts - 1, 30)));
            upd = {
              sql: `state = 'not_now', not_before = now() + ($2::double precision * interval '1 millisecond')`,
              params: [wait],
            };
            break;
          }
        }
        if (!upd) return { changed: false, reason: 'not-sent', command: toCommand(row) };
        const done = await tx.query<CommandRow>(`UPDATE commands SET ${upd.sql} WHERE uuid = $1 RETURNING *`, [
          uuid,
          ...upd.params,
        ]);
        return { changed: true, command: toCommand(done.rows[0]!) };
      };
      return q ? run(q) : db.transaction(run);
    },

    async get(uuid, q = db) {
      if (!isUuid(uuid)) return undefined;
      const r = await q.query<CommandRow>('SELECT * FROM commands WHERE uuid = $1', [uuid]);
      return r.rows[0] ? toCommand(r.rows[0]) : undefined;
    },

    async listForDevice(deviceId, o = {}) {
      const r = await db.reader.query<CommandRow>(
        `SELECT * FROM commands WHERE device_id = $1 AND ($2::bigint IS NULL OR seq < $2)
          ORDER BY seq DESC LIMIT $3`,
        [deviceId, o.beforeSeq ?? null, o.limit ?? 100],
      );
      return r.rows.map(toCommand);
    },

    async results(uuid) {
      if (!isUuid(uuid)) return [];
      const r = await db.reader.query<{
        attempt: number;
        status: ReportStatus;
        result: unknown;
        error: string | null;
        reported_at: Date;
      }>('SELECT attempt, status, result, error, reported_at FROM command_results WHERE command_uuid = $1 ORDER BY id', [
        uuid,
      ]);
      return r.rows.map((x) => ({ attempt: x.attempt, status: x.status, result: x.result, error: x.error, reportedAt: x.reported_at }));
    },

    async clearForDevice(deviceId, reason, q = db) {
      const r = await q.query(
        `UPDATE commands SET state = 'expired', finished_at = now(), last_error = $2, ${DROP_SECRETS}
          WHERE device_id = $1 AND state IN ('pending', 'sent', 'acknowledged', 'not_now')`,
        [deviceId, reason],
      );
      return r.rowCount;
    },

    async unfinishedCount(deviceId, q = db) {
      const r = await q.query<{ n: number }>(
        `SELECT count(*) AS n FROM commands WHERE device_id = $1 AND state NOT IN ('completed', 'failed', 'expired')`,
        [deviceId],
      );
      return Number(r.rows[0]?.n ?? 0);
    },

    async devicesWithDueCommands(limit = 1000) {
      const r = await db.query<{ device_id: string }>(
        `SELECT device_id FROM (
           SELECT device_id, min(seq) AS first FROM commands WHERE ${DELIVERABLE}
            GROUP BY device_id) d
          ORDER BY first LIMIT $1`,
        [limit],
      );
      return r.rows.map((x) => x.device_id);
    },

    async sweep(q = db) {
      const expired = await q.query(
        `UPDATE commands SET state = 'expired', finished_at = now(), last_error = 'expired', ${DROP_SECRETS}
          WHERE expires_at IS NOT NULL AND expires_at <= now()
            AND state IN ('pending', 'sent', 'acknowledged', 'not_now')`,
      );
      // Out of attempts, and the last delivery's lease or backoff has run out.
      const exhausted = await q.query(
        `UPDATE commands SET state = 'failed', finished_at = now(), last_error = 'no attempts left', ${DROP_SECRETS}
          WHERE state IN ('pending', 'sent', 'not_now') AND attempts >= max_attempts AND not_before <= now()`,
      );
      const requeued = await q.query(
        `UPDATE commands SET state = 'pending'
          WHERE state IN ('sent', 'not_now') AND ${DUE}`,
      );
      return { expired: expired.rowCount, exhausted: exhausted.rowCount, requeued: requeued.rowCount };
    },

    async countByState() {
      const out: Record<CommandState, number> = {
        pending: 0,
        sent: 0,
        acknowledged: 0,
        not_now: 0,
        completed: 0,
        failed: 0,
        expired: 0,
      };
      const r = await db.reader.query<{ state: CommandState; n: number }>(
        'SELECT state, count(*) AS n FROM commands GROUP BY state',
      );
      for (const x of r.rows) out[x.state] = Number(x.n);
      return out;
    },
  };
}
