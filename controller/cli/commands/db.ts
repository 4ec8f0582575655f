// `muster db migrate` and `muster audit verify`: the store's two commands.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { type AuditHead, type Keyring, type Store, AuditKeyMissingError, DEFAULT_DATA_DIR, StoreConnectError, openStore, redactUrl } from '../../store/index.js';
import { silentLogger } from '../../store/db.js';
import { CliError, EXIT, println, type CliIO } from '../io.js';
import { secretKeysFrom } from '../secret-key.js';

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

/** Opens the target's store; `keys` (controller/cli/secret-key.ts) when the command seals, audits or verifies. */
export async function openTarget(t: Target, migrate: boolean, keys?: Keyring): Promise<Store> {
  try {
    return await openStore({
      ...(t.databaseUrl ? { databaseUrl: t.databaseUrl } : { dataDir: t.dataDir! }),
      ...(t.schema ? { schema: t.schema } : {}),
      ...(keys ? { keys } : {}),
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
    program.commands.find((c) => c.name() === 'audit') ?? program.command('audit').description('The append-only audit log, an HMAC chain keyed outside the database');
  withConnectionOptions(audit.command('verify'))
    .description('Walk the audit log chain from the first row, report the first row that does not match, and print the head to anchor elsewhere')
    .option('--expect-head <seq:hash>', 'a head printed earlier (and kept elsewhere): that row must still be there with that hash')
    .addHelpText(
      'after',
      `
Each row stores the hash of the row before it and an HMAC-SHA256 of its own
content under the audit key, derived from Muster's secret key, which is not in
the database: whoever can write the table cannot forge a row that verifies.
verify needs that key (the same $MUSTER_SECRET_KEY, _FILE or $MUSTER_CA_PASSPHRASE
as serve; for PGlite, the key file beside the data folder). Rows written before
the chain was keyed are plain SHA-256 and are reported as such.

The chain cannot show rows removed from its end. verify prints the head
(SEQ:HASH); keep it somewhere the database's users cannot change (a ticket,
a log shipped elsewhere, a Git commit) and pass it back with --expect-head:
verify then exits 1 if that row is missing (the tail was removed) or differs
(the log was rewritten).

Exit status: 0 intact, 1 broken or not checkable (no database, no key), 2 bad usage.

Examples:
  $ muster audit verify
  $ muster audit verify --expect-head 1842:5f0c…e1 --output json
  $ MUSTER_SECRET_KEY_FILE=/run/secrets/muster-key muster audit verify --database-url postgres://localhost/muster`,
    )
    .action(async (o: ConnectionOpts & { expectHead?: string }) => {
      const t = targetOf(io, o);
      let expectHead: AuditHead | undefined;
      if (o.expectHead !== undefined) {
        const m = /^(\d{1,15}):([0-9a-f]{64})$/.exec(o.expectHead.trim());
        if (!m) throw new CliError('--expect-head: expected SEQ:HASH as verify printed it, e.g. 1842:5f0c…(64 hex digits)', EXIT.usage);
        expectHead = { seq: Number(m[1]), hash: m[2]! };
      }
      if (t.dataDir && !existsSync(t.dataDir)) throw new CliError(`no database at ${t.dataDir} (nothing to verify)`);
      const secret = secretKeysFrom(io, { ...(t.dataDir ? { dataDir: t.dataDir } : {}), create: false });
      if (!secret) {
        throw new CliError(
          `the audit key is needed to verify the audit log: set $MUSTER_SECRET_KEY or $MUSTER_SECRET_KEY_FILE (or $MUSTER_CA_PASSPHRASE if the key is derived from it), as for muster serve`,
        );
      }
      const store = await openTarget(t, false, secret.keys);
      try {
        const v = await store.audit.verify(expectHead ? { expectHead } : {}).catch((e: unknown) => {
          if (isMissingTable(e)) throw new CliError(`${t.label}: no audit log table (run muster db migrate)`);
          if (e instanceof AuditKeyMissingError) throw new CliError(e.message);
          throw new CliError(`${t.label}: ${(e as Error).message}`);
        });
        if (o.output === 'json') println(io.stdout, JSON.stringify(expectHead && v.ok ? { ...v, expectedHead: expectHead } : v, null, 2));
        else if (v.ok) {
          println(io.stdout, `audit log intact: ${v.rows} row${v.rows === 1 ? '' : 's'}, head ${v.head.seq}:${v.head.hash}`);
          if (v.keyedFrom === null) {
            if (v.rows) println(io.stdout, `no row is keyed: all ${v.rows} are plain SHA-256 from before the chain was keyed, which proves nothing against someone who can rewrite the table; anchor the head`);
          } else {
            const plain = v.keyedFrom > 1 ? `rows 1–${v.keyedFrom - 1} are plain SHA-256 (written before the chain was keyed); ` : '';
            println(io.stdout, `${plain}keyed (HMAC-SHA256) from row ${v.keyedFrom}, key${v.keyIds.length === 1 ? '' : 's'} ${v.keyIds.join(', ')}`);
          }
          if (expectHead) println(io.stdout, `anchored head ${expectHead.seq} is in the log with the expected hash`);
        } else println(io.stdout, `audit log broken at row ${v.badId}: ${v.reason} (${v.rows} row${v.rows === 1 ? '' : 's'} before it verified)`);
        setExit(v.ok ? EXIT.ok : EXIT.failed);
      } finally {
        await store.close();
      }
    });
}
