// The event bus. The `events` table is the truth and the only thing consumers
// read; NOTIFY is a wake-up that carries ids (one notify per published batch,
// always under PostgreSQL's 8,000-byte payload limit). Each consumer keeps its
// position in `event_consumers` and resumes from it after a restart; it also
// polls on a slow timer and catches up after every listener reconnection, so
// a lost notification only costs latency. Delivery is at-least-once: a
// handler may see an event again after a crash, so handlers must be idempotent.
import { type Db, type Listener, type Queryable, type StoreLogger, backoffDelay, lockKey, stderrLogger } from './db.js';

export interface NewEvent {
  topic: string;
  payload?: unknown;
}

export interface StoredEvent {
  id: number;
  topic: string;
  payload: unknown;
  createdAt: Date;
}

export interface ConsumerOptions {
  /** The cursor's key: one running consumer per name. */
  name: string;
  handler(events: StoredEvent[]): Promise<void>;
  /** Only these topics; all when omitted. */
  topics?: string[];
  batchSize?: number;
  /** The safety-net poll, in case a notification was lost. Default 5 s. */
  pollMs?: number;
  /** Where a consumer with no saved position starts. Default 'beginning'. */
  from?: 'beginning' | 'latest';
}

export interface Consumer {
  readonly name: string;
  /** The id of the last event handled. */
  position(): number;
  /** Reads and handles everything published so far, then resolves. */
  catchUp(): Promise<void>;
  stop(): Promise<void>;
}

export interface EventBus {
  /** The NOTIFY channel: one per schema, so stores sharing a database do not wake each other. */
  readonly channel: string;
  /**
   * Appends events and sends one NOTIFY, both in one transaction (`q` when
   * given, which must then be a transaction). Publishers serialize on an
   * advisory lock until commit, so ids become visible in order and a cursor
   * never skips an event that commits late. Publish last in a long transaction.
   */
  publish(events: NewEvent | readonly NewEvent[], q?: Queryable): Promise<number[]>;
  read(afterId: number, opts?: { limit?: number; topics?: string[] }): Promise<StoredEvent[]>;
  consume(opts: ConsumerOptions): Promise<Consumer>;
  /** The saved position of a consumer, 0 when it has none. */
  position(name: string): Promise<number>;
  /** Deletes events every known consumer has passed and older than `olderThanMs`. */
  prune(olderThanMs: number): Promise<number>;
  /** The listening connection, once a consumer has started (for operations and tests). */
  readonly listener: Listener | undefined;
  close(): Promise<void>;
}

/** PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more; stay clear of it. */
export const NOTIFY_PAYLOAD_LIMIT = 7_900;

/**
 * The wake-up payload: the batch's ids comma-joined, or "first-last" when the
 * list would not fit. Either way it stays under NOTIFY_PAYLOAD_LIMIT bytes.
 */
export function encodeWakeup(ids: readonly number[]): string {
  if (ids.length === 0) return '';
  const list = ids.join(',');
  if (list.length <= NOTIFY_PAYLOAD_LIMIT) return list;
  return `${Math.min(...ids)}-${Math.max(...ids)}`;
}

/** The highest id a wake-up names, or undefined when it cannot tell. */
export function wakeupMaxId(payload: string): number | undefined {
  let max: number | undefined;
  for (const part of payload.split(/[,-]/)) {
    const n = Number(part);
    if (part !== '' && Number.isSafeInteger(n)) max = max === undefined ? n : Math.max(max, n);
  }
  return max;
}

export function channelFor(schema: string): string {
  return schema === 'public' ? 'muster_events' : `muster_events_${schema}`;
}

interface EventRow {
  id: number | string;
  topic: string;
  payload: unknown;
  created_at: Date;
}

const toEvent = (r: EventRow): StoredEvent => ({ id: Number(r.id), topic: r.topic, payload: r.payload, createdAt: r.created_at });

export function createEventBus(db: Db, logger: StoreLogger = stderrLogger): EventBus {
  const channel = channelFor(db.schema);
  const consumers = new Set<EventConsumer>();
  let listener: Listener | undefined;
  let listening: Promise<Listener> | undefined;

  async function ensureListener(): Promise<void> {
    if (listener) return;
    listening ??= db.listen(channel, {
      onNotify(payload) {
        const max = wakeupMaxId(payload);
        for (const c of consumers) if (max === undefined || max > c.position()) c.wake();
      },
      onConnect() {
        for (const c of consumers) c.wake();
      },
    });
    try {
      listener = await listening;
    } finally {
      listening = undefined;
    }
  }

  async function read(afterId: number, opts: { limit?: number; topics?: string[] } = {}): Promise<StoredEvent[]> {
    const r = await db.query<EventRow>(
      `SELECT id, topic, payload, created_at FROM events
        WHERE id > $1 AND ($2::text[] IS NULL OR topic = ANY($2::text[]))
        ORDER BY id LIMIT $3`,
      [afterId, opts.topics ?? null, opts.limit ?? 500],
    );
    return r.rows.map(toEvent);
  }

  async function savePosition(name: string, id: number): Promise<void> {
    await db.query(
      `INSERT INTO event_consumers (name, last_event_id) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE
         SET last_event_id = GREATEST(event_consumers.last_event_id, EXCLUDED.last_event_id), updated_at = now()`,
      [name, id],
    );
  }

  async function position(name: string): Promise<number> {
    const r = await db.query<{ last_event_id: number }>('SELECT last_event_id FROM event_consumers WHERE name = $1', [name]);
    return r.rows[0] ? Number(r.rows[0].last_event_id) : 0;
  }

  return {
    channel,
    get listener() {
      return listener;
    },

    async publish(events, q) {
      const list = Array.isArray(events) ? events : [events as NewEvent];
      if (list.length === 0) return [];
      const run = async (tx: Queryable): Promise<number[]> => {
        await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey('events', db.schema)]);
        const r = await tx.query<{ id: number }>(
          `INSERT INTO events (topic, payload)
           SELECT e->>'t', e->'p' FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS b(e, i)
            ORDER BY i
           RETURNING id`,
          [JSON.stringify(list.map((e) => ({ t: e.topic, p: e.payload ?? {} })))],
        );
        const ids = r.rows.map((x) => Number(x.id)).sort((a, b) => a - b);
        await tx.query('SELECT pg_notify($1, $2)', [channel, encodeWakeup(ids)]);
        return ids;
      };
      return q ? run(q) : db.transaction(run);
    },

    read,

    async consume(opts) {
      let start = await position(opts.name);
      const known = await db.query('SELECT 1 FROM event_consumers WHERE name = $1', [opts.name]);
      if (known.rowCount === 0) {
        if (opts.from === 'latest') {
          const r = await db.query<{ max: number | null }>('SELECT max(id) AS max FROM events');
          start = Number(r.rows[0]?.max ?? 0);
        }
        await savePosition(opts.name, start);
      }
      const c = new EventConsumer(opts, start, read, savePosition, logger, () => consumers.delete(c));
      consumers.add(c);
      try {
        await ensureListener();
      } catch (err) {
        await c.stop();
        throw err;
      }
      c.wake();
      return c;
    },

    position,

    async prune(olderThanMs) {
      const r = await db.query(
        `DELETE FROM events
          WHERE id <= (SELECT COALESCE(min(last_event_id), 0) FROM event_consumers)
            AND created_at < now() - ($1::double precision * interval '1 millisecond')`,
        [olderThanMs],
      );
      return r.rowCount;
    },

    async close() {
      await Promise.all([...consumers].map((c) => c.stop()));
      await listener?.close();
      listener = undefined;
    },
  };
}

class EventConsumer implements Consumer {
  readonly name: string;
  private cursor: number;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly poll: NodeJS.Timeout;

  constructor(
    private readonly opts: ConsumerOptions,
    start: number,
    private readonly read: EventBus['read'],
    private readonly save: (name: string, id: number) => Promise<void>,
    private readonly logger: StoreLogger,
    private readonly onStop: () => void,
  ) {
    this.name = opts.name;
    this.cursor = start;
    this.poll = setInterval(() => this.wake(), opts.pollMs ?? 5_000);
    this.poll.unref();
  }

  position(): number {
    return this.cursor;
  }

  /** Starts a drain, or asks the running one to go round once more. */
  wake(): void {
    if (this.stopped || this.retryTimer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  async catchUp(): Promise<void> {
    for (;;) {
      if (this.running) await this.running;
      if (this.stopped) return;
      const before = this.cursor;
      this.again = false;
      this.wake();
      await this.running;
      if (this.retryTimer) throw new Error(`consumer ${this.name}: handler failed; will retry`);
      if (this.cursor === before && !this.again) return;
    }
  }

  private async drain(): Promise<void> {
    const batchSize = this.opts.batchSize ?? 500;
    try {
      while (!this.stopped) {
        const batch = await this.read(this.cursor, { limit: batchSize, ...(this.opts.topics ? { topics: this.opts.topics } : {}) });
        if (batch.length === 0) break;
        await this.opts.handler(batch);
        this.cursor = batch[batch.length - 1]!.id;
        await this.save(this.name, this.cursor);
        this.failures = 0;
        if (batch.length < batchSize) break;
      }
    } catch (err) {
      if (this.stopped) return;
      const delay = backoffDelay(this.failures++, 200, 30_000);
      this.logger.warn('event consumer failed; retrying', {
        consumer: this.name,
        error: err instanceof Error ? err.message : String(err),
        retryInMs: delay,
      });
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.wake();
      }, delay);
      this.retryTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.poll);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.running?.catch(() => {});
    this.onStop();
  }
}
