// Where the CLI finds Muster's secret key: one decision for serve, token and
// audit verify. Which source wins, what a bad key says (never the key), the
// PGlite key file beside the data folder, older keys for rotation.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError, EXIT, type CliIO } from '../../controller/cli/io.js';
import { localKeyFile, requireSecretKeys, secretKeysFrom } from '../../controller/cli/secret-key.js';
import { RESERVED_SECRET_VARIABLES, serveContext } from '../../controller/cli/commands/serve-protocol.js';
import { masterKeyFromPassphrase, parseMasterKey, randomMasterKey } from '../../controller/secrets/keys.js';
import type { Store } from '../../controller/store/index.js';

const dir = mkdtempSync(join(tmpdir(), 'muster-key-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const io = (env: NodeJS.ProcessEnv): CliIO => ({ stdout: { write: () => true }, stderr: { write: () => true }, env, cwd: dir });
let n = 0;
const dataDir = () => join(dir, `data-${++n}`);

describe('the secret key from the environment', () => {
  it('reads 32 bytes as base64, base64url or hex, from the variable or its file, and names it by id only', () => {
    const key = randomMasterKey();
    const raw = Buffer.from(key.export(), 'base64');
    for (const text of [key.export(), raw.toString('base64url'), raw.toString('hex'), raw.toString('hex').toUpperCase()]) {
      expect(secretKeysFrom(io({ MUSTER_SECRET_KEY: text }), { create: false })!.keys.current.id).toBe(key.id);
    }
    const file = join(dir, 'key-file');
    writeFileSync(file, `${key.export()}\n`);
    expect(secretKeysFrom(io({ MUSTER_SECRET_KEY_FILE: file }), { create: false })).toMatchObject({ keys: { current: { id: key.id } }, source: `$MUSTER_SECRET_KEY_FILE (${file})` });
    expect(JSON.stringify(key)).toBe(`"MasterKey(${key.id})"`);
    expect(JSON.stringify(key)).not.toContain(key.export());
  });

  it('refuses anything else as bad usage, without repeating it', () => {
    for (const bad of ['hunter2', 'a'.repeat(63), Buffer.alloc(16).toString('base64'), Buffer.alloc(33).toString('base64')]) {
      let err: unknown;
      try {
        secretKeysFrom(io({ MUSTER_SECRET_KEY: bad }), { create: false });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CliError);
      expect(err).toMatchObject({ exitCode: EXIT.usage, message: expect.stringMatching(/^\$MUSTER_SECRET_KEY is not a secret key: expected 32 bytes as base64 or 64 hex digits/) });
      expect((err as Error).message).not.toContain(bad);
    }
    expect(() => secretKeysFrom(io({ MUSTER_SECRET_KEY_FILE: join(dir, 'nope') }), { create: false })).toThrow(/\$MUSTER_SECRET_KEY_FILE: ENOENT/);
  });

  it('prefers its own key, then the PGlite key file, then the CA passphrase, keeping the others as older keys', () => {
    const own = randomMasterKey();
    const pass = 'correct horse battery staple';
    const fromPass = masterKeyFromPassphrase(pass);
    // A first start: not even the data folder's parent exists yet.
    const d = join(dataDir(), '.muster', 'data');
    // Alone on PGlite: a key file is made beside the data folder, readable by its owner only.
    const generated = secretKeysFrom(io({}), { dataDir: d, create: true })!;
    expect(generated.source).toBe(`${d}.key`);
    expect(statSync(localKeyFile(d)).mode & 0o777).toBe(0o600);
    expect(parseMasterKey(readFileSync(localKeyFile(d), 'utf8'), 'file').id).toBe(generated.keys.current.id);
    // The same key next time.
    expect(secretKeysFrom(io({}), { dataDir: d, create: false })!.keys.current.id).toBe(generated.keys.current.id);

    // A passphrase added later (to enrol Macs) does not move the embedded database to another key.
    const withPass = secretKeysFrom(io({ MUSTER_CA_PASSPHRASE: pass }), { dataDir: d, create: true })!;
    expect(withPass.keys.current.id).toBe(generated.keys.current.id);
    expect(withPass.keys.ids).toEqual([generated.keys.current.id, fromPass.id]);
    // Without a key file (or on PostgreSQL), the passphrase gives the key.
    expect(secretKeysFrom(io({ MUSTER_CA_PASSPHRASE: pass }), { create: true })!.keys.ids).toEqual([fromPass.id]);

    const all = secretKeysFrom(io({ MUSTER_SECRET_KEY: own.export(), MUSTER_CA_PASSPHRASE: pass }), { dataDir: d, create: true })!;
    expect(all.keys.current.id).toBe(own.id);
    expect(all.keys.ids).toEqual([own.id, generated.keys.current.id, fromPass.id]);
    expect(all.source).toBe('$MUSTER_SECRET_KEY');
  });

  it('makes no key file where its own key is given, or where it may not (verify), and none on PostgreSQL', () => {
    const d = dataDir();
    expect(secretKeysFrom(io({ MUSTER_SECRET_KEY: randomMasterKey().export() }), { dataDir: d, create: true })!.source).toBe('$MUSTER_SECRET_KEY');
    expect(secretKeysFrom(io({ MUSTER_CA_PASSPHRASE: 'x' }), { dataDir: d, create: false })!.source).toBe('derived from $MUSTER_CA_PASSPHRASE');
    expect(secretKeysFrom(io({}), { dataDir: d, create: false })).toBeUndefined();
    expect(() => statSync(localKeyFile(d))).toThrow(/ENOENT/);
    // The first command that writes makes it, passphrase or not.
    expect(secretKeysFrom(io({ MUSTER_CA_PASSPHRASE: 'x' }), { dataDir: d, create: true })!.source).toBe(localKeyFile(d));
    expect(secretKeysFrom(io({}), { create: true })).toBeUndefined();
    expect(() => requireSecretKeys(io({}), { create: true }, 'muster serve needs it')).toThrow(/^muster serve needs it: set \$MUSTER_SECRET_KEY or \$MUSTER_SECRET_KEY_FILE/);
  });

  it('adds older keys from MUSTER_SECRET_KEY_PREVIOUS, so what they sealed still opens after a rotation', () => {
    const [a, b, c] = [randomMasterKey(), randomMasterKey(), randomMasterKey()];
    const k = secretKeysFrom(io({ MUSTER_SECRET_KEY: a.export(), MUSTER_SECRET_KEY_PREVIOUS: `${b.export()}, ${Buffer.from(c.export(), 'base64').toString('hex')}` }), { create: false })!;
    expect(k.keys.ids).toEqual([a.id, b.id, c.id]);
    expect(() => secretKeysFrom(io({ MUSTER_SECRET_KEY: a.export(), MUSTER_SECRET_KEY_PREVIOUS: 'nope' }), { create: false })).toThrow(/^key 1 of \$MUSTER_SECRET_KEY_PREVIOUS is not a secret key/);
  });

  it('never hands Muster\'s own key to a policy as ${secret:KEY}', () => {
    const env = { MUSTER_SECRET_KEY: randomMasterKey().export(), MUSTER_SECRET_KEY_PREVIOUS: randomMasterKey().export(), MUSTER_SECRET_KEY_FILE: '/run/secrets/k', MUSTER_SECRET_WIFI_PSK: 'psk' };
    const ctx = serveContext({ io: io(env), store: {} as Store, log: { info: () => {}, warn: () => {}, error: () => {} } });
    for (const name of ['KEY', 'key', 'KEY_FILE', 'key-file', 'KEY_PREVIOUS', 'key.previous']) expect(ctx.policySecret(name), name).toBeUndefined();
    expect(ctx.policySecret('wifi-psk')).toBe('psk');
    expect([...RESERVED_SECRET_VARIABLES].every((v) => v.startsWith('MUSTER_SECRET_KEY'))).toBe(true);
  });
});
