// `muster db migrate` and `muster audit verify`, run in-process.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerDbCommands } from '../../controller/cli/commands/db.js';
import { CliError, EXIT, type CliIO } from '../../controller/cli/io.js';
import { openStore } from '../../controller/store/index.js';
import { silentLogger } from '../../controller/store/db.js';
import { type Backend, backends, databaseUrl, freshSchemaName, testDatabase } from '../support/db.js';

/** The same exit-code mapping as the real program (program.ts's runCli), with only these commands. */
async function run(args: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()) {
  let stdout = '';
  let stderr = '';
  const io: CliIO = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) }, env, cwd };
  let code: number = EXIT.ok;
  const program = new Command('muster')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  registerDbCommands(program, io, (c) => (code = c));
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    else if (e instanceof CliError) {
      stderr += `muster: ${e.message}\n`;
      code = e.exitCode;
    } else throw e;
  }
  return { code, stdout, stderr };
}

describe('muster db / audit usage', () => {
  it('documents itself with examples', async () => {
    const r = await run(['audit', 'verify', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Examples:');
    expect(r.stdout).toContain('--database-url');
    const m = await run(['db', 'migrate', '--help']);
    expect(m.stdout).toContain('muster db migrate');
  });

  it('exits 2 on bad usage', async () => {
    expect((await run(['audit', 'verify', '--output', 'yaml'])).code).toBe(EXIT.usage);
    expect((await run(['db', 'migrate', '--schema', 'Bad-Name'])).code).toBe(EXIT.usage);
    expect((await run(['db', 'migrate', '--database-url', 'mysql://x'])).code).toBe(EXIT.usage);
  });

  it('says in one line when it cannot connect, and exits 1', async () => {
    const r = await run(['db', 'migrate', '--database-url', 'postgres://nobody:secret@127.0.0.1:1/none']);
    expect(r.code).toBe(EXIT.failed);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot connect to postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none/);
    expect(r.stderr).not.toContain('secret');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 1 when there is no database to verify', async () => {
    const r = await run(['audit', 'verify', '--data-dir', join(tmpdir(), 'muster-does-not-exist-' + Date.now())]);
    expect(r.code).toBe(EXIT.failed);
    expect(r.stderr).toMatch(/no database at/);
  });
});

describe.each(backends)('muster db migrate / audit verify on %s', (backend: Backend) => {
  let dir: string;
  let schema: string;
  let args: string[];
  let env: NodeJS.ProcessEnv;
  const cleanup: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    schema = freshSchemaName();
    if (backend === 'pglite') {
      dir = mkdtempSync(join(tmpdir(), 'muster-cli-'));
      args = ['--data-dir', dir, '--schema', schema];
      env = {};
      cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
    } else {
      // The URL from the environment, as in production; the schema by flag.
      args = ['--schema', schema];
      env = { DATABASE_URL: databaseUrl };
      const tdb = await testDatabase('postgres');
      cleanup.push(async () => {
        await tdb.admin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await tdb.cleanup();
      });
    }
  });
  afterAll(async () => {
    for (const c of cleanup) await c();
  });

  const openIt = () =>
    openStore({
      ...(backend === 'pglite' ? { dataDir: dir } : { databaseUrl: databaseUrl! }),
      schema,
      migrate: false,
      logger: silentLogger,
    });

  it('migrates, then finds nothing left to do', async () => {
    const first = await run(['db', 'migrate', ...args], env);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('applied 001_initial');
    expect(first.stdout).toContain('applied 002_reconciler');
    expect(first.stdout).toContain('applied 003_enrollment_challenges');
    expect(first.stdout).toContain('applied 004_windows');
    expect(first.stdout).toContain('applied 005_identity_binding');
    const again = await run(['db', 'migrate', ...args, '--output', 'json'], env);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ applied: [], current: 5, backend: backend === 'pglite' ? 'pglite' : 'postgres' });
  });

  it('exits 0 on an intact chain and 1 naming the first bad row', async () => {
    let store = await openIt();
    for (let i = 0; i < 5; i++) await store.audit.append({ actor: 'cli-test', action: 'test', subject: `s/${i}`, details: { i } });
    await store.close();

    const ok = await run(['audit', 'verify', ...args], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^audit log intact: 5 rows, head [0-9a-f]{64}\n$/);

    store = await openIt();
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query(`UPDATE audit_log SET actor = 'mallory' WHERE id = 3`);
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    await store.close();

    const bad = await run(['audit', 'verify', ...args], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('audit log broken at row 3: hash does not match the row content (2 rows before it verified)\n');
    const json = await run(['audit', 'verify', ...args, '--output', 'json'], env);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual({ ok: false, rows: 2, badId: 3, reason: 'hash does not match the row content' });
  });
});
