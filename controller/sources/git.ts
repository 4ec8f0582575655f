// A Git branch as the policy source (simple-git): one bare clone per URL in a
// cache folder, fetched on an interval and on demand (webhook). Credentials
// never enter the URL, the command line or a log: an HTTPS token travels in
// an http.extraHeader set through GIT_CONFIG_* environment variables, an SSH
// key through GIT_SSH_COMMAND.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';
import { readPolicyRevision } from './git-tree.js';
import type { ReadResult } from './dir.js';
import type { PolicySource } from './source.js';

export interface GitSourceOptions {
  url: string;
  branch?: string;
  cacheDir: string;
  credentials?: { token?: string; tokenFile?: string; sshKeyFile?: string };
  intervalMs?: number;
  log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export class GitSourceError extends Error {}

/** The URL with any user:password removed, for logs and messages. */
export function redactGitUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, '$1***@');
}

export function createGitSource(o: GitSourceOptions): PolicySource & { readonly dir: string } {
  const branch = o.branch ?? 'main';
  const dir = join(o.cacheDir, createHash('sha256').update(o.url).digest('hex').slice(0, 16) + '.git');
  const shown = `${redactGitUrl(o.url)} (${branch})`;
  let last: string | undefined;
  let running: Promise<{ commit: string; changed: boolean }> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let queued: Promise<void> | undefined;
  let listener: ((commit: string) => void | Promise<void>) | undefined;

  /** Secrets in the environment of each git call only; read the token file each time so a rotated secret works. */
  const env = (): Record<string, string> => {
    const e: Record<string, string> = { GIT_TERMINAL_PROMPT: '0' };
    for (const k of ['PATH', 'HOME', 'TMPDIR', 'SSH_AUTH_SOCK', 'GIT_SSL_CAINFO']) if (process.env[k]) e[k] = process.env[k]!;
    const token = o.credentials?.token ?? (o.credentials?.tokenFile ? readFileSync(o.credentials.tokenFile, 'utf8').trim() : undefined);
    if (token) {
      e.GIT_CONFIG_COUNT = '1';
      e.GIT_CONFIG_KEY_0 = 'http.extraHeader';
      e.GIT_CONFIG_VALUE_0 = `Authorization: Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}`;
    }
    if (o.credentials?.sshKeyFile) e.GIT_SSH_COMMAND = `ssh -i '${o.credentials.sshKeyFile.replace(/'/g, "'\\''")}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new`;
    return e;
  };
  // simple-git refuses these variables unless allowed: they are ours, built above from configuration, never from input.
  const unsafe = { allowUnsafeConfigEnvCount: true, allowUnsafeSshCommand: true };
  const allowEnvironment = ['GIT_TERMINAL_PROMPT', 'GIT_CONFIG_COUNT', 'GIT_CONFIG_KEY_0', 'GIT_CONFIG_VALUE_0', 'GIT_SSH_COMMAND', 'GIT_SSL_CAINFO'];
  const git = (cwd?: string): SimpleGit => simpleGit({ ...(cwd ? { baseDir: cwd } : {}), timeout: { block: 120_000 }, unsafe, allowEnvironment }).env(env());
  /** git's own message, without anything secret, on one line. */
  const clean = (e: unknown): string => {
    let msg = (e instanceof Error ? e.message : String(e)).replace(/Authorization: \S+ \S+/gi, 'Authorization: ***');
    const token = o.credentials?.token;
    if (token) msg = msg.split(token).join('***');
    return redactGitUrl(msg.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('hint:'))[0] ?? 'git failed');
  };

  const sync = async (): Promise<{ commit: string; changed: boolean }> => {
    try {
      if (!existsSync(join(dir, 'HEAD'))) {
        mkdirSync(o.cacheDir, { recursive: true });
        await git().raw(['init', '--bare', '--quiet', dir]);
        await git(dir).raw(['remote', 'add', 'origin', o.url]);
        o.log.info('cloning the policy repository', { source: shown });
      }
      await git(dir).raw(['fetch', '--quiet', '--no-tags', '--prune', 'origin', `+refs/heads/${branch}:refs/remotes/origin/${branch}`]);
      const commit = (await git(dir).raw(['rev-parse', '--verify', `refs/remotes/origin/${branch}^{commit}`])).trim();
      const changed = commit !== last;
      last = commit;
      return { commit, changed };
    } catch (e) {
      const msg = clean(e);
      if (/couldn't find remote ref/i.test(msg)) throw new GitSourceError(`${shown}: the branch "${branch}" does not exist`);
      throw new GitSourceError(`${shown}: ${msg}`);
    }
  };
  const syncOnce = () => (running ??= sync().finally(() => (running = undefined)));
  const poll = async () => {
    const r = await syncOnce();
    if (r.changed) await listener?.(r.commit);
  };

  return {
    dir,
    description: shown,
    sync: syncOnce,
    read: (commit: string): Promise<ReadResult> => readPolicyRevision(dir, commit),
    start(onChange) {
      listener = onChange;
      last = undefined;
      const loop = () => {
        poll()
          .catch((e: Error) => o.log.warn('fetching the policy repository failed; the applied commit stays in force', { error: e.message }))
          .finally(() => {
            if (listener) timer = setTimeout(loop, o.intervalMs ?? 30_000);
          });
      };
      loop();
    },
    // A webhook means "there is something newer than any fetch already under way": wait for that one,
    // then fetch again. Triggers arriving while one waits share it.
    trigger: () =>
      (queued ??= (async () => {
        await running?.catch(() => {});
        queued = undefined;
        await poll();
      })()),
    async stop() {
      listener = undefined;
      if (timer) clearTimeout(timer);
      await running?.catch(() => {});
    },
  };
}
