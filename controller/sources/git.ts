// A Git branch as the policy source (simple-git): one bare clone per URL in a
// cache folder, fetched on an interval and on demand (webhook). Credentials
// never enter the URL, the command line or a log: an HTTPS token travels in
// an http.extraHeader set through GIT_CONFIG_* environment variables, an SSH
// key through GIT_SSH_COMMAND.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';
import type { ReadResult } from './dir.js';
import { readPolicyRevision, RevisionError } from './git-tree.js';
import type { PolicySource } from './source.js';

export interface GitSourceOptions {
  /** Anything git accepts: https://, ssh://, scp-style, file://, a local path. */
  url: string;
  /** Default `main`. */
  branch?: string;
  /** The bare clone lives in a subfolder named from the SHA-256 of the URL. */
  cacheDir: string;
  /** `tokenFile` is read at every fetch, so a rotated mounted secret is picked up. */
  credentials?: { token?: string; tokenFile?: string; sshKeyFile?: string };
  /** Poll interval for start(); default 30 s. */
  intervalMs?: number;
  log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export type GitSource = PolicySource & {
  /** The bare clone's folder. */
  readonly dir: string;
};

export class GitSourceError extends Error {
  override name = 'GitSourceError';
}

/** The URL with any user:password removed, for logs and messages. */
export function redactGitUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/]*@/i, '$1***@');
}

/** Every URL inside a text (git's messages quote them) with its userinfo removed. */
const redactUrlsIn = (text: string): string => text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/'"]*@/gi, '$1***@');

/** Environment variables simple-git refuses to pass on unless allowed; the ambient ones are dropped. */
const GUARDED = new Set(['editor', 'visual', 'pager', 'prefix', 'ssh_askpass']);
/** Ambient git variables that stay: TLS trust settings. GIT_DIR and friends would point git elsewhere. */
const PASSED_THROUGH = ['GIT_SSL_CAINFO', 'GIT_SSL_CAPATH'];
const OURS = ['GIT_TERMINAL_PROMPT', 'GIT_CONFIG_COUNT', 'GIT_CONFIG_KEY_0', 'GIT_CONFIG_VALUE_0', 'GIT_SSH_COMMAND'];

export function createGitSource(o: GitSourceOptions): GitSource {
  const branch = o.branch ?? 'main';
  const dir = join(o.cacheDir, createHash('sha256').update(o.url).digest('hex').slice(0, 16) + '.git');
  const shown = `${redactGitUrl(o.url)} (${branch})`;
  /** Every token handed to git so far, so a message can never echo one (the file may rotate). */
  const secrets = new Set<string>();
  let prepared = false;
  let last: string | undefined;
  let running: Promise<{ commit: string; changed: boolean }> | undefined;

  const token = (): string | undefined => {
    const c = o.credentials;
    if (c?.token) return c.token;
    if (!c?.tokenFile) return undefined;
    let t: string;
    try {
      t = readFileSync(c.tokenFile, 'utf8').trim();
    } catch (e) {
      throw new GitSourceError(`${shown}: cannot read the token file ${c.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!t) throw new GitSourceError(`${shown}: the token file ${c.tokenFile} is empty`);
    return t;
  };

  /** The process environment without variables that redirect or hijack git, plus our credentials. */
  const env = (): Record<string, string> => {
    const e: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      const lk = k.toLowerCase();
      if (v === undefined || GUARDED.has(lk) || (lk.startsWith('git_') && !PASSED_THROUGH.includes(k))) continue;
      e[k] = v;
    }
    e.GIT_TERMINAL_PROMPT = '0';
    const t = token();
    if (t) {
      const basic = Buffer.from(`x-access-token:${t}`).toString('base64');
      secrets.add(t).add(basic);
      e.GIT_CONFIG_COUNT = '1';
      e.GIT_CONFIG_KEY_0 = 'http.extraHeader';
      e.GIT_CONFIG_VALUE_0 = `Authorization: Basic ${basic}`;
    }
    // BatchMode: a key with a passphrase or an unknown prompt fails instead of hanging on a terminal nobody watches.
    if (o.credentials?.sshKeyFile)
      e.GIT_SSH_COMMAND = `ssh -i '${o.credentials.sshKeyFile.replace(/'/g, "'\\''")}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes`;
    return e;
  };
  // simple-git refuses these variables unless allowed: they are ours, built above from configuration, never from input.
  const unsafe = { allowUnsafeConfigEnvCount: true, allowUnsafeSshCommand: true };
  const allowEnvironment = [...OURS, ...PASSED_THROUGH];
  const git = (cwd?: string): SimpleGit => simpleGit({ ...(cwd ? { baseDir: cwd } : {}), timeout: { block: 120_000 }, unsafe, allowEnvironment }).env(env());

  /** git's own complaint on one line, with no secret and no credentials in a URL. */
  const clean = (e: unknown): string => {
    let msg = (e instanceof Error ? e.message : String(e)).replace(/Authorization: *\S+( \S+)?/gi, 'Authorization: ***');
    for (const s of secrets) msg = msg.split(s).join('***');
    const lines = msg.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('hint:'));
    return redactUrlsIn(lines.find((l) => /^fatal:/i.test(l)) ?? lines[0] ?? 'git failed');
  };
  const explain = (msg: string): string => {
    if (/couldn't find remote ref/i.test(msg)) return `the branch "${branch}" does not exist`;
    if (/could not read (username|password)|authentication failed|terminal prompts disabled|\b40[13]\b/i.test(msg)) {
      const given = o.credentials?.token || o.credentials?.tokenFile ? 'the token was refused' : 'no credentials were given';
      return `authentication failed: ${given} (${msg.replace(/^fatal: */i, '')})`;
    }
    if (/permission denied \(publickey/i.test(msg)) return `the SSH key was refused (${msg.replace(/^fatal: */i, '')})`;
    return msg.replace(/^fatal: */i, '');
  };

  /** The bare repository and its remote, created once (and repaired if a first attempt stopped half-way). */
  const prepare = async (): Promise<void> => {
    if (prepared) return;
    if (!existsSync(join(dir, 'HEAD'))) {
      mkdirSync(o.cacheDir, { recursive: true });
      o.log.info('cloning the policy repository', { source: shown });
      await git().raw(['init', '--bare', '--quiet', dir]);
    }
    const url = await git(dir)
      .raw(['config', '--get', 'remote.origin.url'])
      .then((s) => s.trim())
      .catch(() => '');
    if (url !== o.url) await git(dir).raw(url ? ['remote', 'set-url', 'origin', o.url] : ['remote', 'add', 'origin', o.url]);
    prepared = true;
  };

  const sync = async (): Promise<{ commit: string; changed: boolean }> => {
    try {
      await prepare();
      // Only the one branch, into a remote-tracking ref: nothing else of the repository is downloaded.
      await git(dir).raw(['fetch', '--quiet', '--no-tags', '--prune', 'origin', `+refs/heads/${branch}:refs/remotes/origin/${branch}`]);
      const commit = (await git(dir).raw(['rev-parse', '--verify', `refs/remotes/origin/${branch}^{commit}`])).trim();
      const changed = commit !== last;
      last = commit;
      return { commit, changed };
    } catch (e) {
      prepared = false; // check the clone again next time: it may have been removed or left half-made
      if (e instanceof GitSourceError) throw e;
      throw new GitSourceError(`${shown}: ${explain(clean(e))}`);
    }
  };
  /** One fetch at a time; a caller arriving during one shares its result. */
  const syncOnce = () => (running ??= sync().finally(() => (running = undefined)));

  // Polling: a poll is a sync followed, when the head is not the one last handed over, by onChange.
  // Polls run one at a time; while one runs, at most one more waits, and every trigger meanwhile joins it.
  let listener: ((commit: string) => void | Promise<void>) | undefined;
  let notified: string | undefined;
  let generation = 0;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> | undefined;
  let waiting: Promise<void> | undefined;

  const runPoll = async (): Promise<void> => {
    const { commit } = await syncOnce();
    const onChange = listener;
    // Compared with what onChange last accepted, not with `changed`: a sync() from elsewhere must not swallow a change,
    // and a failed onChange is retried at the next poll.
    if (onChange && commit !== notified) {
      await onChange(commit);
      if (listener === onChange) notified = commit;
    }
  };
  const poll = (): Promise<void> => {
    if (waiting) return waiting;
    if (!polling) return (polling = runPoll().finally(() => (polling = undefined)));
    return (waiting = polling
      .catch(() => {})
      .then(() => {
        waiting = undefined;
        return poll();
      }));
  };

  return {
    dir,
    description: shown,
    sync: syncOnce,
    async read(commit: string): Promise<ReadResult> {
      if (!existsSync(join(dir, 'HEAD'))) throw new GitSourceError(`${shown}: nothing fetched yet, so ${commit} cannot be read`);
      try {
        return await readPolicyRevision(dir, commit);
      } catch (e) {
        if (e instanceof RevisionError) throw new GitSourceError(`${shown}: ${commit} is not a fetched commit`);
        throw new GitSourceError(`${shown}: reading ${commit} failed: ${clean(e)}`);
      }
    },
    start(onChange) {
      if (timer) clearTimeout(timer);
      const gen = ++generation;
      listener = onChange;
      notified = undefined; // the current head is reported once at start
      const loop = () => {
        poll()
          .catch((e: Error) => o.log.warn('fetching the policy repository failed; the applied commit stays in force', { source: shown, error: e.message }))
          .finally(() => {
            if (gen === generation) timer = setTimeout(loop, o.intervalMs ?? 30_000);
          });
      };
      loop();
    },
    // A webhook means "there is something newer than any fetch already under way", so it waits for that one and
    // fetches again; a burst of webhooks shares that second fetch.
    trigger: poll,
    async stop() {
      generation++;
      listener = undefined;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await Promise.allSettled([waiting, polling, running]);
    },
  };
}
