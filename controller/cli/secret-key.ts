// Where Muster's secret key comes from, decided once for every command that
// opens the store (serve, token, audit verify), so they all key the audit
// chain and seal secrets alike:
//
//   MUSTER_SECRET_KEY / MUSTER_SECRET_KEY_FILE    32 bytes, base64 or hex: the key
//   <data dir>.key (PGlite only, mode 0600)       else this file, a random key made by the first
//                                                 command that writes (`npm start` needs no set-up)
//   MUSTER_CA_PASSPHRASE / _FILE                  else (PostgreSQL) the key is derived from it
//   MUSTER_SECRET_KEY_PREVIOUS / _FILE            older keys (comma, space or newline separated)
//
// Every source that is present and not the current key joins the keyring as an
// older key, so switching from the generated file or the passphrase to a key
// of its own keeps what the old one sealed or keyed readable.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { CliError, EXIT, type CliIO } from './io.js';
import { type Keyring, type MasterKey, SecretKeyError, keyring, masterKeyFromPassphrase, parseMasterKey, randomMasterKey } from '../secrets/keys.js';

export interface SecretKeys {
  keys: Keyring;
  /** Where the current key came from, for a log line (never the key). */
  source: string;
}

const fromEnv = (env: NodeJS.ProcessEnv, name: string): { text: string; where: string } | undefined => {
  if (env[name]) return { text: env[name]!, where: `$${name}` };
  const file = env[`${name}_FILE`];
  if (!file) return undefined;
  try {
    return { text: readFileSync(file, 'utf8'), where: `$${name}_FILE (${file})` };
  } catch (e) {
    throw new CliError(`$${name}_FILE: ${(e as Error).message}`, EXIT.usage);
  }
};

/** The key file beside a PGlite data folder. */
export const localKeyFile = (dataDir: string): string => `${dataDir.replace(/[/\\]+$/, '')}.key`;

function readLocalKey(file: string, create: boolean): MasterKey | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CliError(`${file}: ${(e as Error).message}`);
    if (!create) return undefined;
    const key = randomMasterKey();
    try {
      // A first start: the data folder's parent (.muster) may not exist yet.
      mkdirSync(dirname(file), { recursive: true });
      // wx: two processes starting at once never overwrite each other's key.
      writeFileSync(file, key.export() + '\n', { mode: 0o600, flag: 'wx' });
      return key;
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw new CliError(`cannot create the secret key file ${file}: ${(e2 as Error).message}`);
      text = readFileSync(file, 'utf8');
    }
  }
  return parseMasterKey(text, file);
}

/**
 * The keyring the environment gives, or undefined when there is no key.
 * `dataDir` is the PGlite folder (absent on PostgreSQL); `create` allows
 * making its key file when it is the only source (commands that write).
 */
export function secretKeysFrom(io: CliIO, o: { dataDir?: string; create: boolean }): SecretKeys | undefined {
  try {
    const candidates: Array<{ key: MasterKey; source: string }> = [];
    const own = fromEnv(io.env, 'MUSTER_SECRET_KEY');
    if (own) candidates.push({ key: parseMasterKey(own.text, own.where), source: own.where });
    // An embedded database has its own key file (made by the first command that writes), with or
    // without a passphrase in a command's environment: every command on it keys the audit chain alike.
    const file = o.dataDir ? localKeyFile(o.dataDir) : undefined;
    const local = file ? readLocalKey(file, o.create && !own) : undefined;
    if (local) candidates.push({ key: local, source: file! });
    const pass = fromEnv(io.env, 'MUSTER_CA_PASSPHRASE');
    // Exactly the passphrase the CA key is encrypted with (serve-protocol.ts secretFrom: a file's text is trimmed).
    const passphrase = pass && (pass.where.startsWith('$MUSTER_CA_PASSPHRASE_FILE') ? pass.text.trim() : pass.text);
    if (passphrase) candidates.push({ key: masterKeyFromPassphrase(passphrase), source: `derived from ${pass!.where}` });
    const previous = fromEnv(io.env, 'MUSTER_SECRET_KEY_PREVIOUS');
    const older = previous
      ? previous.text
          .split(/[\s,]+/)
          .filter(Boolean)
          .map((t, i) => parseMasterKey(t, `key ${i + 1} of ${previous.where}`))
      : [];
    const [current, ...rest] = candidates;
    if (!current) return undefined;
    return { keys: keyring(current.key, [...rest.map((c) => c.key), ...older]), source: current.source };
  } catch (e) {
    if (e instanceof SecretKeyError) throw new CliError(e.message, EXIT.usage);
    throw e;
  }
}

/** The same, for a command that cannot work without a key: a usage error naming the ways to give one. */
export function requireSecretKeys(io: CliIO, o: { dataDir?: string; create: boolean }, why: string): SecretKeys {
  const k = secretKeysFrom(io, o);
  if (k) return k;
  throw new CliError(
    `${why}: set $MUSTER_SECRET_KEY or $MUSTER_SECRET_KEY_FILE (32 bytes, base64 or hex; make one with: openssl rand -base64 32), or $MUSTER_CA_PASSPHRASE to derive it${o.dataDir ? ` (the embedded database's key file ${localKeyFile(o.dataDir)} is missing)` : ''}`,
    EXIT.usage,
  );
}
