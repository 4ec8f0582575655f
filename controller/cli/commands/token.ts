// `muster token create|list|revoke`: admin API bearer tokens, straight in the
// database (run where the controller's database is reachable).
import { Command, Option } from 'commander';
import { type Store, TOKEN_SCOPES, type TokenScope } from '../../store/index.js';
import { CliError, EXIT, println, table, type CliIO } from '../io.js';
import { requireSecretKeys } from '../secret-key.js';
import { type Target, openTarget, targetOf, withConnectionOptions, type ConnectionOpts } from './db.js';

/** Creating and revoking are audited, and the audit log is keyed: the key is checked before anything changes. */
const auditedTarget = (io: CliIO, o: ConnectionOpts, what: string): Promise<Store> => {
  const t: Target = targetOf(io, o);
  const { keys } = requireSecretKeys(io, { ...(t.dataDir ? { dataDir: t.dataDir } : {}), create: true }, `${what} is written to the audit log, which needs Muster's secret key`);
  return openTarget(t, true, keys);
};

export function registerToken(program: Command, io: CliIO): void {
  const token = program.command('token').description('Bearer tokens for the admin API (muster rollout …, the dashboard, scripts)');
  withConnectionOptions(token.command('create'))
    .description('Create a token and print it once (only its SHA-256 is stored)')
    .requiredOption('--name <name>', 'who or what holds it, for the audit log (e.g. alice, ci)')
    .addOption(new Option('--scope <scope>', 'read: status and plans; operate: also promote/pause/resume/abort; admin: everything').choices([...TOKEN_SCOPES]).default('read'))
    .addHelpText(
      'after',
      `
Examples:
  $ muster token create --name alice --scope operate
  $ export MUSTER_TOKEN=$(muster token create --name ci --scope read --output json | jq -r .token)`,
    )
    .action(async (o: ConnectionOpts & { name: string; scope: TokenScope }) => {
      if (!/^[\w.@-]{1,64}$/.test(o.name)) throw new CliError('--name: 1 to 64 letters, digits, ".", "@", "_" or "-"', EXIT.usage);
      const store = await auditedTarget(io, o, 'a new token');
      try {
        const { token: secret, record } = await store.tokens.create(o.name, o.scope);
        await store.audit.append({ actor: 'cli', action: 'token.create', subject: `token/${record.id}`, details: { name: o.name, scope: o.scope } });
        if (o.output === 'json') println(io.stdout, JSON.stringify({ id: record.id, name: record.name, scope: record.scope, token: secret }, null, 2));
        else {
          println(io.stdout, secret);
          println(io.stderr, `token ${record.id} for ${o.name} (${o.scope}); shown once — keep it in a secret store`);
        }
      } finally {
        await store.close();
      }
    });
  withConnectionOptions(token.command('list'))
    .description('List tokens (never their secrets)')
    .action(async (o: ConnectionOpts) => {
      const store = await openTarget(targetOf(io, o), true);
      try {
        const list = await store.tokens.list();
        if (o.output === 'json') println(io.stdout, JSON.stringify(list, null, 2));
        else
          println(
            io.stdout,
            table([
              ['ID', 'NAME', 'SCOPE', 'CREATED', 'LAST USED', 'REVOKED'],
              ...list.map((t) => [t.id, t.name, t.scope, t.createdAt.toISOString(), t.lastUsedAt?.toISOString() ?? '-', t.revokedAt?.toISOString() ?? '-']),
            ]),
          );
      } finally {
        await store.close();
      }
    });
  withConnectionOptions(token.command('revoke'))
    .description('Revoke a token by id')
    .argument('<id>', 'the token id (muster token list)')
    .action(async (id: string, o: ConnectionOpts) => {
      const store = await auditedTarget(io, o, 'a revoked token');
      try {
        if (!(await store.tokens.revoke(id))) throw new CliError(`no active token with id ${id}`);
        await store.audit.append({ actor: 'cli', action: 'token.revoke', subject: `token/${id}` });
        println(io.stdout, `revoked ${id}`);
      } finally {
        await store.close();
      }
    });
}
