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
import { keyring, randomMasterKey } from '../../controller/secrets/keys.js';
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

  it('refuses a malformed --expect-head as bad usage', async () => {
    for (const bad of ['12', '12:abc', 'x:' + 'a'.repeat(64), '12:' + 'A'.repeat(64)]) {
      expect((await run(['audit', 'verify', '--expect-head', bad])).code).toBe(EXIT.usage);
    }
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

  // The key the CLI reads from the environment; the store opened below gets the same one.
  const key = randomMasterKey();

  beforeAll(async () => {
    schema = freshSchemaName();
    if (backend === 'pglite') {
      dir = mkdtempSync(join(tmpdir(), 'muster-cli-'));
      args = ['--data-dir', dir, '--schema', schema];
      env = { MUSTER_SECRET_KEY: key.export() };
      cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
    } else {
      // The URL from the environment, as in production; the schema by flag.
      args = ['--schema', schema];
      env = { DATABASE_URL: databaseUrl, MUSTER_SECRET_KEY: key.export() };
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
      keys: keyring(key),
    });

  it('migrates, then finds nothing left to do', async () => {
    const first = await run(['db', 'migrate', ...args], env);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('applied 001_initial');
    expect(first.stdout).toContain('applied 002_reconciler');
    expect(first.stdout).toContain('applied 003_enrollment_challenges');
    expect(first.stdout).toContain('applied 004_windows');
    expect(first.stdout).toContain('applied 005_identity_binding');
    expect(first.stdout).toContain('applied 006_secrets_at_rest');
    const again = await run(['db', 'migrate', ...args, '--output', 'json'], env);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ applied: [], current: 6, backend: backend === 'pglite' ? 'pglite' : 'postgres' });
  });

  it('exits 0 on an intact chain and 1 naming the first bad row', async () => {
    let store = await openIt();
    for (let i = 0; i < 5; i++) await store.audit.append({ actor: 'cli-test', action: 'test', subject: `s/${i}`, details: { i } });
    await store.close();

    const ok = await run(['audit', 'verify', ...args], env);
    expect(ok.code).toBe(0);
    const head = /^audit log intact: 5 rows, head (5:[0-9a-f]{64})\nkeyed \(HMAC-SHA256\) from row 1, key ([0-9a-f]{16})\n$/.exec(ok.stdout);
    expect(head, ok.stdout).not.toBeNull();
    expect(head![2]).toBe(key.id);
    const okJson = await run(['audit', 'verify', ...args, '--output', 'json'], env);
    expect(JSON.parse(okJson.stdout)).toEqual({ ok: true, rows: 5, head: { seq: 5, hash: head![1]!.slice(2) }, keyedFrom: 1, keyIds: [key.id] });
    // The head printed is the one to anchor: given back, it is found.
    const anchored = await run(['audit', 'verify', ...args, '--expect-head', head![1]!], env);
    expect(anchored.code).toBe(0);
    expect(anchored.stdout).toContain(`anchored head 5 is in the log with the expected hash`);
    // Without the key nothing is vouched for.
    const { MUSTER_SECRET_KEY: _k, ...keyless } = env;
    const nokey = await run(['audit', 'verify', ...args], keyless);
    expect(nokey.code).toBe(EXIT.failed);
    expect(nokey.stderr).toMatch(/^muster: the audit key is needed to verify/);
    expect(nokey.stdout).toBe('');

    // Cutting the tail off leaves a valid, shorter chain: only the anchored head shows it.
    store = await openIt();
    await store.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete');
    await store.db.query('DELETE FROM audit_log WHERE id = 5');
    await store.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete');
    await store.close();
    expect((await run(['audit', 'verify', ...args], env)).stdout).toMatch(/^audit log intact: 4 rows, head 4:/);
    const cut = await run(['audit', 'verify', ...args, '--expect-head', head![1]!], env);
    expect(cut.code).toBe(EXIT.failed);
    expect(cut.stdout).toBe('audit log broken at row 5: the log ends at row 4, before the anchored head: rows were removed from the end (or this is another database) (4 rows before it verified)\n');

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
