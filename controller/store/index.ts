// openStore(): the one way in. DATABASE_URL (databaseUrl) selects PostgreSQL;
// without it the store is embedded PGlite with its data in dataDir.
import { join } from 'node:path';
import type { Keyring } from '../secrets/keys.js';
import { type Sealer, createSealer } from '../secrets/seal.js';
import { type AssignmentStore, createAssignmentStore } from './assignments.js';
import { type AuditLog, createAuditLog } from './audit.js';
import { type BundleStore, createBundleStore } from './bundles.js';
import { type EnrollmentChallenges, createEnrollmentChallenges } from './challenges.js';
import { type CommandQueue, type QueueOptions, createCommandQueue } from './commands.js';
import { type Db, type StoreLogger, type Tx, openPglite, openPostgres, stderrLogger } from './db.js';
import { type DeviceStore, createDeviceStore } from './devices.js';
import { type EventBus, createEventBus } from './events.js';
import { type IdentityStore, createIdentityStore } from './identities.js';
import { type MigrationResult, migrate } from './migrate.js';
import { type RolloutStore, createRolloutStore } from './rollouts.js';
import { type SourceStateStore, createSourceStateStore } from './source-state.js';
import { type TokenStore, createTokenStore } from './tokens.js';
import { type WindowsSessionStore, createWindowsSessionStore } from './windows-sessions.js';

export interface StoreOptions {
  /** postgres://... ; PGlite when absent. See storeOptionsFromEnv() for DATABASE_URL. */
  databaseUrl?: string;
  /** A read replica for read-only queries (PostgreSQL only). */
  readUrl?: string;
  /** PGlite's data folder; default .muster/data. `memory` keeps it in memory. */
  dataDir?: string;
  /** The PostgreSQL schema for every table; default public. */
  schema?: string;
  /** Apply pending migrations on open; default true. */
  migrate?: boolean;
  poolSize?: number;
  queue?: QueueOptions;
  logger?: StoreLogger;
  /** Event listener reconnect backoff (PostgreSQL). */
  reconnect?: { baseMs?: number; capMs?: number };
  /**
   * Muster's secret key (never stored in the database): it seals secrets in
   * command payloads and enrollment state, and keys the audit chain. Without
   * it, commands that carry a secret are refused and the audit log can be
   * neither appended to nor verified. The CLI reads it from the environment
   * (controller/cli/secret-key.ts).
   */
  keys?: Keyring;
}

export interface Store {
  readonly db: Db;
  readonly backend: Db['backend'];
  /** What migrations the open applied (empty when `migrate: false`). */
  readonly migrations: MigrationResult;
  devices: DeviceStore;
  identities: IdentityStore;
  bundles: BundleStore;
  rollouts: RolloutStore;
  assignments: AssignmentStore;
  commands: CommandQueue;
  events: EventBus;
  audit: AuditLog;
  sourceState: SourceStateStore;
  tokens: TokenStore;
  challenges: EnrollmentChallenges;
  windowsSessions: WindowsSessionStore;
  /** Seals secrets a protocol keeps in its enrollment state (bind each to its device and purpose). */
  secrets: Sealer;
  /** One transaction; pass `tx` as the last argument of the store functions to join it. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  migrate(): Promise<MigrationResult>;
  close(): Promise<void>;
}

export const DEFAULT_DATA_DIR = join('.muster', 'data');

/**
 * The store options the environment gives: DATABASE_URL, DATABASE_READ_URL,
 * MUSTER_DATA_DIR. The store itself never reads the environment.
 */
export function storeOptionsFromEnv(env: NodeJS.ProcessEnv): Pick<StoreOptions, 'databaseUrl' | 'readUrl' | 'dataDir'> {
  return {
    ...(env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : {}),
    ...(env.DATABASE_READ_URL ? { readUrl: env.DATABASE_READ_URL } : {}),
    ...(env.MUSTER_DATA_DIR ? { dataDir: env.MUSTER_DATA_DIR } : {}),
  };
}

/** Opens the database the options name, without migrating. */
export async function openDb(opts: StoreOptions = {}): Promise<Db> {
  const logger = opts.logger ?? stderrLogger;
  const url = opts.databaseUrl;
  if (url) {
    const readUrl = opts.readUrl;
    const db = openPostgres({
      url,
      ...(readUrl ? { readUrl } : {}),
      ...(opts.schema ? { schema: opts.schema } : {}),
      ...(opts.poolSize ? { poolSize: opts.poolSize } : {}),
      ...(opts.reconnect ? { reconnect: opts.reconnect } : {}),
      logger,
    });
    try {
      await db.query('SELECT 1');
    } catch (err) {
      await db.close().catch(() => {});
      throw new StoreConnectError(url, err);
    }
    return db;
  }
  if (opts.readUrl) throw new Error('a read URL needs a PostgreSQL database URL too');
  const dataDir = opts.dataDir ?? DEFAULT_DATA_DIR;
  return openPglite({ ...(dataDir === 'memory' ? {} : { dataDir }), ...(opts.schema ? { schema: opts.schema } : {}) });
}

/** The database could not be reached; the message names it without the password. */
export class StoreConnectError extends Error {
  constructor(url: string, cause: unknown) {
    super(`cannot connect to ${redactUrl(url)}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StoreConnectError';
  }
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable database URL)';
  }
}

export async function openStore(opts: StoreOptions = {}): Promise<Store> {
  const logger = opts.logger ?? stderrLogger;
  const db = await openDb(opts);
  let migrations: MigrationResult = { applied: [], current: 0 };
  if (opts.migrate !== false) {
    try {
      migrations = await migrate(db);
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
  }
  return createStore(db, migrations, { ...(opts.queue ? { queue: opts.queue } : {}), logger, ...(opts.keys ? { keys: opts.keys } : {}) });
}

/** A Store over an already open Db (tests, tools). */
export function createStore(db: Db, migrations: MigrationResult, o: { queue?: QueueOptions; logger?: StoreLogger; keys?: Keyring } = {}): Store {
  const logger = o.logger ?? stderrLogger;
  const events = createEventBus(db, logger);
  const secrets = createSealer(o.keys);
  return {
    db,
    backend: db.backend,
    migrations,
    devices: createDeviceStore(db),
    identities: createIdentityStore(db),
    bundles: createBundleStore(db),
    rollouts: createRolloutStore(db),
    assignments: createAssignmentStore(db),
    commands: createCommandQueue(db, o.queue, { sealer: secrets, logger }),
    events,
    audit: createAuditLog(db, o.keys),
    sourceState: createSourceStateStore(db),
    tokens: createTokenStore(db),
    challenges: createEnrollmentChallenges(db),
    windowsSessions: createWindowsSessionStore(db),
    secrets,
    transaction: (fn) => db.transaction(fn),
    migrate: () => migrate(db),
    async close() {
      await events.close();
      await db.close();
    },
  };
}

export type { Db, Queryable, Tx, StoreLogger, Listener } from './db.js';
export type { MigrationResult } from './migrate.js';
export type * from './commands.js';
export type * from './events.js';
export type * from './audit.js';
export type * from './devices.js';
export type * from './identities.js';
export type * from './bundles.js';
export type * from './rollouts.js';
export type * from './assignments.js';
export type * from './source-state.js';
export type * from './tokens.js';
export type * from './challenges.js';
export type * from './windows-sessions.js';
export { scopeAllows, TOKEN_SCOPES } from './tokens.js';
export { BundleConflictError, contentHash } from './bundles.js';
export { AuditKeyMissingError, GENESIS_HASH, auditHash, keyedAuditHash } from './audit.js';
export { SealError, SecretKeyMissingError, isSealed } from '../secrets/seal.js';
export type { Keyring } from '../secrets/keys.js';
export { isUuid } from './commands.js';
export { encodeWakeup, wakeupMaxId, NOTIFY_PAYLOAD_LIMIT } from './events.js';
export { migrate, loadMigrations } from './migrate.js';
