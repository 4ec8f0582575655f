// The one seam between the store and a database: a tiny Db interface with two
// implementations, PostgreSQL through `pg` (writer pool, optional reader pool,
// a dedicated reconnecting LISTEN connection) and embedded PGlite (one
// in-process connection). Every store module is written against Db only.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';

export interface QueryResult<T> {
  rows: T[];
  /** Rows returned or changed by the statement. */
  rowCount: number;
}

/** Anything a parameterized statement can run on: the Db, a transaction, the reader. */
export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
}

export interface Tx extends Queryable {
  /** Runs a multi-statement script with no parameters (migrations only). */
  exec(script: string): Promise<void>;
}

export interface ListenHandlers {
  onNotify(payload: string): void;
  /** Called after every (re)connection once LISTEN is in place: catch up from the table here. */
  onConnect?(): void;
}

export interface Listener {
  /** The backend pid of the listening connection (PostgreSQL), undefined on PGlite. */
  readonly pid: number | undefined;
  /** How many times the connection was re-established after a loss. */
  readonly reconnects: number;
  close(): Promise<void>;
}

export interface StoreLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: StoreLogger = { warn: () => {}, info: () => {} };

export const stderrLogger: StoreLogger = {
  warn: (msg, fields) => process.stderr.write(`store: ${msg}${fields ? ' ' + JSON.stringify(fields) : ''}\n`),
  info: () => {},
};

export interface Db extends Queryable {
  readonly backend: 'postgres' | 'pglite';
  /** The schema every unqualified name resolves to. */
  readonly schema: string;
  /** Read-only queries that tolerate replica lag; the writer when no reader is configured. */
  readonly reader: Queryable;
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  listen(channel: string, handlers: ListenHandlers): Promise<Listener>;
  close(): Promise<void>;
}

const IDENT = /^[a-z_][a-z0-9_]{0,47}$/;

/** Schema and channel names go into SQL text, so only plain lower-case identifiers are allowed. */
export function checkIdentifier(name: string, what: string): string {
  if (!IDENT.test(name)) throw new Error(`${what} "${name}" must match ${IDENT.source}`);
  return name;
}

/**
 * A 64-bit advisory lock key for `purpose` within `schema`, so stores in
 * different schemas of one database never wait on each other.
 */
export function lockKey(purpose: string, schema: string): string {
  return createHash('sha256').update(`muster:${schema}:${purpose}`).digest().readBigInt64BE(0).toString();
}

/** Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)));
}

// ------------------------------------------------------------------ PostgreSQL

export interface PostgresOptions {
  url: string;
  readUrl?: string;
  schema?: string;
  poolSize?: number;
  logger?: StoreLogger;
  /** Listener reconnect backoff. */
  reconnect?: { baseMs?: number; capMs?: number };
}

// int8 (counts, sequences) as numbers on both backends; PGlite already does so.
const INT8_OID = 20;
const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
};

function pgConfig(url: string, schema: string, max: number): pg.PoolConfig {
  return {
    connectionString: url,
    max,
    types: typeParsers,
    // search_path is set at connection start-up, so every pooled connection has it.
    ...(schema === 'public' ? {} : { options: `-c search_path=${schema}` }),
    application_name: 'muster',
  };
}

function pgQueryable(q: pg.Pool | pg.PoolClient): Queryable {
  return {
    async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
      const r = await q.query(sql, params as unknown[]);
      return { rows: r.rows as T[], rowCount: r.rowCount ?? r.rows.length };
    },
  };
}

export function openPostgres(opts: PostgresOptions): Db {
  const schema = checkIdentifier(opts.schema ?? 'public', 'schema');
  const logger = opts.logger ?? stderrLogger;
  const max = opts.poolSize ?? 10;
  const writer = new pg.Pool(pgConfig(opts.url, schema, max));
  const reader = opts.readUrl ? new pg.Pool(pgConfig(opts.readUrl, schema, max)) : undefined;
  // An idle pooled connection that dies must not crash the process; the pool replaces it.
  writer.on('error', (err) => logger.warn('idle writer connection lost', { error: err.message }));
  reader?.on('error', (err) => logger.warn('idle reader connection lost', { error: err.message }));
  const listeners = new Set<PgListener>();
  const writerQ = pgQueryable(writer);

  return {
    backend: 'postgres',
    schema,
    reader: reader ? pgQueryable(reader) : writerQ,
    query: writerQ.query,
    async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
      const client = await writer.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const tx: Tx = {
          ...pgQueryable(client),
          async exec(script) {
            await client.query(script);
          },
        };
        const out = await fn(tx);
        await client.query('COMMIT');
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch((e: Error) => (broken = e));
        throw err;
      } finally {
        client.release(broken);
      }
    },
    async listen(channel, handlers) {
      const l = new PgListener(
        pgConfig(opts.url, schema, 1),
        checkIdentifier(channel, 'channel'),
        handlers,
        logger,
        opts.reconnect ?? {},
      );
      listeners.add(l);
      l.onClose = () => listeners.delete(l);
      await l.start();
      return l;
    },
    async close() {
      await Promise.all([...listeners].map((l) => l.close()));
      await writer.end();
      await reader?.end();
    },
  };
}

/**
 * A dedicated connection that only LISTENs. When it is lost (server restart,
 * pg_terminate_backend, network) it reconnects with full-jitter exponential
 * backoff, re-LISTENs and calls onConnect so consumers catch up from their
 * cursor: notifications sent while it was away are gone, the rows are not.
 */
class PgListener implements Listener {
  pid: number | undefined;
  reconnects = 0;
  onClose: (() => void) | undefined;
  private client: pg.Client | undefined;
  private closed = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly baseMs: number;
  private readonly capMs: number;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly channel: string,
    private readonly handlers: ListenHandlers,
    private readonly logger: StoreLogger,
    backoff: { baseMs?: number; capMs?: number },
  ) {
    this.baseMs = backoff.baseMs ?? 100;
    this.capMs = backoff.capMs ?? 30_000;
  }

  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client(this.config);
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost) return;
      lost = true;
      this.pid = undefined;
      if (this.client === client) this.client = undefined;
      if (this.closed) return;
      this.logger.warn('event listener connection lost; reconnecting', { error: err?.message });
      this.scheduleReconnect();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (msg) => {
      if (msg.channel === this.channel) this.handlers.onNotify(msg.payload ?? '');
    });
    try {
      await client.connect();
      const r = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await client.query(`LISTEN ${this.channel}`);
      if (this.closed) {
        await client.end().catch(() => {});
        return;
      }
      this.client = client;
      this.pid = r.rows[0]?.pid;
      this.attempt = 0;
    } catch (err) {
      lost = true;
      await client.end().catch(() => {});
      throw err;
    }
    this.handlers.onConnect?.();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.timer) return;
    const delay = backoffDelay(this.attempt++, this.baseMs, this.capMs);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect().then(
        () => {
          this.reconnects++;
        },
        (err: Error) => {
          this.logger.warn('event listener reconnect failed', { error: err.message, attempt: this.attempt });
          this.scheduleReconnect();
        },
      );
    }, delay);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const c = this.client;
    this.client = undefined;
    this.pid = undefined;
    await c?.end().catch(() => {});
    this.onClose?.();
  }
}

// ------------------------------------------------------------------ PGlite

export interface PgliteOptions {
  /** A folder for the data; in memory when omitted. */
  dataDir?: string;
  schema?: string;
}

/**
 * Embedded PostgreSQL (WebAssembly, one connection, in-process). PGlite runs
 * one statement at a time and holds a mutex across transaction(), so plain
 * queries wait while a transaction is open: never call the Db itself inside
 * transaction(fn), only `tx`, or it waits for itself.
 */
export async function openPglite(opts: PgliteOptions = {}): Promise<Db> {
  const schema = checkIdentifier(opts.schema ?? 'public', 'schema');
  if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true });
  const lite = opts.dataDir ? new PGlite(opts.dataDir) : new PGlite();
  await lite.waitReady;
  // One session, so a session-level search_path covers every statement. The
  // schema may not exist yet: migrate() creates it.
  if (schema !== 'public') await lite.exec(`SET search_path TO ${schema}`);
  const q: Queryable = {
    async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
      const r = await lite.query<T>(sql, params as unknown[]);
      return { rows: r.rows, rowCount: r.rowCount ?? r.affectedRows ?? r.rows.length };
    },
  };
  const unlistens = new Set<() => Promise<void>>();

  return {
    backend: 'pglite',
    schema,
    reader: q,
    query: q.query,
    transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
      return lite.transaction(async (t) =>
        fn({
          async query<R>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
            const r = await t.query<R>(sql, params as unknown[]);
            return { rows: r.rows, rowCount: r.rowCount ?? r.affectedRows ?? r.rows.length };
          },
          async exec(script) {
            await t.exec(script);
          },
        }),
      );
    },
    async listen(channel, handlers) {
      const unlisten = await lite.listen(checkIdentifier(channel, 'channel'), (payload) => handlers.onNotify(payload));
      const off = async () => {
        unlistens.delete(off);
        if (!lite.closed) await unlisten();
      };
      unlistens.add(off);
      handlers.onConnect?.();
      return { pid: undefined, reconnects: 0, close: off };
    },
    async close() {
      await Promise.all([...unlistens].map((off) => off()));
      if (!lite.closed) await lite.close();
    },
  };
}
