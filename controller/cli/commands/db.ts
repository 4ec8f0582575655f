// `muster db migrate` and `muster audit verify`: the store's two commands.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { type Store, DEFAULT_DATA_DIR, StoreConnectError, openStore, redactUrl } from '../../store/index.js';
import { silentLogger } from '../../store/db.js';
import { CliError, EXIT, println, type CliIO } from '../io.js';

export interface ConnectionOpts {
  databaseUrl?: string;
  dataDir?: string;
  schema?: string;
  output: 'text' | 'json';
}

export function withConnectionOptions(cmd: Command): Command {
  // No commander defaults here: a default is printed by --help, and DATABASE_URL may hold a password.
  return cmd
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL; without one, the embedded PGlite database)')
    .option('--data-dir <dir>', `PGlite data folder (default: $MUSTER_DATA_DIR or ${DEFAULT_DATA_DIR})`)
    .option('--schema <name>', 'PostgreSQL schema holding the tables (default: $MUSTER_DB_SCHEMA or public)')
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
}

export interface Target {
  databaseUrl?: string;
  dataDir?: string;
  schema?: string;
  /** For messages: the database without its password. */
  label: string;
}

export function targetOf(io: CliIO, o: ConnectionOpts): Target {
  const url = o.databaseUrl ?? io.env.DATABASE_URL;
  const schema = o.schema ?? io.env.MUSTER_DB_SCHEMA;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,47}$/.test(schema)) {
    throw new CliError(`--schema: "${schema}" is not a plain lower-case identifier`, EXIT.usage);
  }
  if (url) {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new CliError('--database-url: expected postgres://...', EXIT.usage);
    return { databaseUrl: url, ...(schema ? { schema } : {}), label: redactUrl(url) + (schema ? ` (schema ${schema})` : '') };
  }
  const dataDir = resolve(io.cwd, o.dataDir ?? io.env.MUSTER_DATA_DIR ?? DEFAULT_DATA_DIR);
  return { dataDir, ...(schema ? { schema } : {}), label: `PGlite at ${dataDir}` };
}

export async function openTarget(t: Target, migrate: boolean): Promise<Store> {
  try {
    return await openStore({
      ...(t.databaseUrl ? { databaseUrl: t.databaseUrl } : { dataDir: t.dataDir! }),
      ...(t.schema ? { schema: t.schema } : {}),
      migrate,
      logger: silentLogger,
      poolSize: 2,
    });
  } catch (e) {
    if (e instanceof StoreConnectError) throw new CliError(e.message);
    throw new CliError(`${t.label}: ${(e as Error).message}`);
  }
}

const isMissingTable = (e: unknown) => (e as { code?: string }).code === '42P01';

export function registerDbCommands(program: Command, io: CliIO, setExit: (code: number) => void): void {
  const db = program.commands.find((c) => c.name() === 'db') ?? program.command('db').description('The database: schema migrations');
  withConnectionOptions(db.command('migrate'))
    .description('Apply pending schema migrations (serve also does this at start-up)')
    .addHelpText(
      'after',
      `
Migrations are forward-only and applied in one transaction under an advisory
lock, so several processes starting at once are safe. Without a database URL
the embedded PGlite database in the data folder is created if needed.

Examples:
  $ muster db migrate                                   # .muster/data (PGlite)
  $ DATABASE_URL=postgres://muster@db:5432/muster muster db migrate
  $ muster db migrate --database-url postgres://localhost/muster --output json`,
    )
    .action(async (o: ConnectionOpts) => {
      const t = targetOf(io, o);
      const store = await openTarget(t, false);
      try {
        const r = await store.migrate().catch((e: Error) => {
          throw new CliError(`${t.label}: migration failed: ${e.message}`);
        });
        if (o.output === 'json') {
          println(io.stdout, JSON.stringify({ database: t.label, backend: store.backend, ...r }, null, 2));
        } else {
          for (const m of r.applied) println(io.stdout, `applied ${String(m.version).padStart(3, '0')}_${m.name}`);
          println(
            io.stdout,
            r.applied.length
              ? `${t.label}: now at version ${r.current}`
              : `${t.label}: up to date at version ${r.current}`,
          );
        }
        setExit(EXIT.ok);
      } finally {
        await store.close();
      }
    });

  const audit =
    program.commands.find((c) => c.name() === 'audit') ?? program.command('audit').description('The append-only, hash-chained audit log');
  withConnectionOptions(audit.command('verify'))
    .description('Walk the audit log hash chain from the first row and report the first row that does not match')
    .addHelpText(
      'after',
      `
Each row stores the hash of the row before it and the hash of its own content.
verify recomputes both for every row; it exits 1 naming the first row whose
content or link was changed, or before which a row was removed. Keep the
printed head hash somewhere else to detect rows removed from the end.

Exit status: 0 intact, 1 broken (or the database could not be read), 2 bad usage.

Examples:
  $ muster audit verify
  $ muster audit verify --database-url postgres://localhost/muster --output json`,
    )
    .action(async (o: ConnectionOpts) => {
      const t = targetOf(io, o);
      if (t.dataDir && !existsSync(t.dataDir)) throw new CliError(`no database at ${t.dataDir} (nothing to verify)`);
      const store = await openTarget(t, false);
      try {
        const v = await store.audit.verify().catch((e: unknown) => {
          if (isMissingTable(e)) throw new CliError(`${t.label}: no audit log table (run muster db migrate)`);
          throw new CliError(`${t.label}: ${(e as Error).message}`);
        });
        if (o.output === 'json') println(io.stdout, JSON.stringify(v, null, 2));
        else if (v.ok) println(io.stdout, `audit log intact: ${v.rows} row${v.rows === 1 ? '' : 's'}, head ${v.head}`);
        else println(io.stdout, `audit log broken at row ${v.badId}: ${v.reason} (${v.rows} row${v.rows === 1 ? '' : 's'} before it verified)`);
        setExit(v.ok ? EXIT.ok : EXIT.failed);
      } finally {
        await store.close();
      }
    });
}
