// The Git source against real repositories: a bare repository by path and by
// file:// URL, and a smart-HTTP server (git http-backend behind node:http)
// that demands a token — which must never appear in a log, an error or the
// clone's configuration.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitSourceError, createGitSource, redactGitUrl } from '../../controller/sources/git.js';
import { missingTool } from '../support/tools.js';

const TOKEN = 'ghp_supersecrettoken1234567890';
const BASIC = Buffer.from(`x-access-token:${TOKEN}`).toString('base64');
const tmpRoot = mkdtempSync(join(tmpdir(), 'muster-gitsource-'));

/** A bare repository with a work clone that commits and pushes to it. */
class Repo {
  readonly bare: string;
  readonly work: string;
  constructor(name: string) {
    this.bare = join(tmpRoot, name, 'policy.git');
    this.work = join(tmpRoot, name, 'work');
    execFileSync('git', ['init', '--bare', '--quiet', '--initial-branch=main', this.bare]);
    execFileSync('git', ['clone', '--quiet', this.bare, this.work], { stdio: 'ignore' });
    this.git('config', 'user.email', 'admin@example.com');
    this.git('config', 'user.name', 'Admin');
    this.git('config', 'commit.gpgsign', 'false');
    this.git('checkout', '--quiet', '-B', 'main');
  }
  git(...args: string[]): string {
    return execFileSync('git', args, { cwd: this.work, encoding: 'utf8' }).trim();
  }
  /** Makes the tree exactly `files`, commits and pushes main; returns the commit. */
  commit(files: Record<string, string>, message = 'change'): string {
    for (const f of this.git('ls-files').split('\n').filter(Boolean)) rmSync(join(this.work, f));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(this.work, path)), { recursive: true });
      writeFileSync(join(this.work, path), text);
    }
    this.git('add', '-A');
    this.git('commit', '--quiet', '--allow-empty', '-m', message);
    this.git('push', '--quiet', 'origin', 'main');
    return this.git('rev-parse', 'HEAD');
  }
}

function collectingLog() {
  const lines: string[] = [];
  const warned: Array<() => void> = [];
  const push = (m: string, f?: object) => void lines.push(m + ' ' + JSON.stringify(f ?? {}));
  return {
    lines,
    /** Resolves at the next warning. */
    nextWarning: () => new Promise<void>((r) => warned.push(r)),
    log: {
      info: push,
      warn: (m: string, f?: object) => {
        push(m, f);
        warned.splice(0).forEach((r) => r());
      },
    },
  };
}

/** onChange that records commits and lets a test wait for the next call. */
function recorder(fail?: (n: number) => boolean) {
  const seen: string[] = [];
  let waiters: Array<() => void> = [];
  return {
    seen,
    next: () => new Promise<void>((r) => waiters.push(r)),
    onChange: (commit: string) => {
      seen.push(commit);
      const w = waiters;
      waiters = [];
      w.forEach((r) => r());
      if (fail?.(seen.length)) throw new Error('apply failed');
    },
  };
}

const errorOf = (p: Promise<unknown>): Promise<Error> =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: Error) => e,
  );

afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));

describe('Git source', () => {
  const repo = new Repo('local');
  const cache = join(tmpRoot, 'cache');

  it.each([
    ['a local path', () => repo.bare],
    ['a file:// URL', () => `file://${repo.bare}`],
  ])('clones %s, reports a change only when the branch moves, and reads any fetched commit', async (what, url) => {
    const { log } = collectingLog();
    const first = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n', 'README.md': `${what}\n`, '.github/ci.yaml': 'on: push\n' }, 'one');
    const src = createGitSource({ url: url(), branch: 'main', cacheDir: join(cache, what.replace(/\W/g, '')), log });
    expect(src.dir.startsWith(join(cache, what.replace(/\W/g, '')))).toBe(true);
    expect(await src.sync()).toEqual({ commit: first, changed: true });
    expect(await src.sync()).toEqual({ commit: first, changed: false });
    const second = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# two\n', 'policy/b.yml': 'kind: Rollout\n' }, 'two');
    expect(await src.sync()).toEqual({ commit: second, changed: true });
    expect(await src.sync()).toEqual({ commit: second, changed: false });

    const r1 = await src.read(first);
    expect(r1.files).toEqual([{ path: 'policy/a.yaml', text: 'kind: DeviceGroup\n' }]);
    const r2 = await src.read(second);
    expect(r2.files.map((f) => f.path)).toEqual(['policy/a.yaml', 'policy/b.yml']);
    expect(r2.files[0]!.text).toBe('kind: DeviceGroup\n# two\n');
  });

  it('uses one cache folder per URL, and only the one branch is fetched', async () => {
    const { log } = collectingLog();
    repo.commit({ 'a.yaml': 'kind: DeviceGroup\n' });
    repo.git('push', '--quiet', 'origin', 'main:other');
    const a = createGitSource({ url: repo.bare, cacheDir: join(cache, 'shared'), log });
    const b = createGitSource({ url: `file://${repo.bare}`, cacheDir: join(cache, 'shared'), log });
    expect(a.dir).not.toBe(b.dir);
    expect(createGitSource({ url: repo.bare, branch: 'other', cacheDir: join(cache, 'shared'), log }).dir).toBe(a.dir);
    await a.sync();
    const refs = execFileSync('git', ['for-each-ref', '--format=%(refname)'], { cwd: a.dir, encoding: 'utf8' }).trim().split('\n');
    expect(refs).toEqual(['refs/remotes/origin/main']);
  });

  it('serializes concurrent syncs: callers during a fetch share its result', async () => {
    const { log } = collectingLog();
    const head = repo.commit({ 'a.yaml': 'kind: DeviceGroup\n# concurrent\n' });
    const src = createGitSource({ url: repo.bare, cacheDir: join(cache, 'concurrent'), log });
    // Two first syncs at once would both create the bare clone and its remote; the second would fail.
    const [x, y] = await Promise.all([src.sync(), src.sync()]);
    expect(x).toEqual({ commit: head, changed: true });
    expect(y).toEqual(x);
    expect(await src.sync()).toEqual({ commit: head, changed: false });
  });

  it('names a missing branch clearly, on one line', async () => {
    const { log } = collectingLog();
    const src = createGitSource({ url: repo.bare, branch: 'nope', cacheDir: join(cache, 'nobranch'), log });
    const e = await errorOf(src.sync());
    expect(e).toBeInstanceOf(GitSourceError);
    expect(e.message).toMatch(/\(nope\): the branch "nope" does not exist$/);
    expect(e.message).not.toContain('\n');
    // The half-made cache is reused: a later attempt fails the same way, not differently.
    await expect(src.sync()).rejects.toThrow(/branch "nope" does not exist/);
  });

  it('refuses to read a commit it has not fetched', async () => {
    const { log } = collectingLog();
    const src = createGitSource({ url: repo.bare, cacheDir: join(cache, 'unread'), log });
    await expect(src.read('0'.repeat(40))).rejects.toThrow(GitSourceError);
    await src.sync();
    await expect(src.read('0'.repeat(40))).rejects.toThrow(/is not a fetched commit/);
  });

  it('calls onChange once at start and again after trigger() when a commit lands; nothing after stop()', async () => {
    const { log } = collectingLog();
    const head = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# watch\n' });
    const src = createGitSource({ url: repo.bare, cacheDir: join(cache, 'watch'), intervalMs: 3_600_000, log });
    const r = recorder();
    const started = r.next();
    src.start(r.onChange);
    await started;
    expect(r.seen).toEqual([head]);

    await src.trigger(); // nothing new
    expect(r.seen).toEqual([head]);

    const next = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# changed\n' });
    // A burst of webhooks: one change, one onChange.
    await Promise.all([src.trigger(), src.trigger(), src.trigger()]);
    expect(r.seen).toEqual([head, next]);

    await src.stop();
    repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# after stop\n' });
    await src.trigger();
    expect(r.seen).toEqual([head, next]);
  });

  it('does not lose a change to a sync() made by someone else, and retries a failed onChange', async () => {
    const logs = collectingLog();
    const head = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# retry\n' });
    const src = createGitSource({ url: repo.bare, cacheDir: join(cache, 'retry'), intervalMs: 3_600_000, log: logs.log });
    const r = recorder((n) => n === 1); // the first apply fails
    const warned = logs.nextWarning();
    src.start(r.onChange);
    await warned;
    expect(r.seen).toEqual([head]);
    await src.trigger();
    expect(r.seen).toEqual([head, head]);

    const next = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# elsewhere\n' });
    expect(await src.sync()).toEqual({ commit: next, changed: true }); // this caller sees the change…
    await src.trigger(); // …and the listener still gets it
    expect(r.seen).toEqual([head, head, next]);
    await src.stop();
  });

  it('redacts credentials in URLs, in descriptions and in errors', async () => {
    expect(redactGitUrl('https://user:pw@git.example.com/x.git')).toBe('https://***@git.example.com/x.git');
    expect(redactGitUrl('https://user:p@ss@git.example.com/x@y.git')).toBe('https://***@git.example.com/x@y.git');
    expect(redactGitUrl('file:///srv/x.git')).toBe('file:///srv/x.git');
    expect(redactGitUrl('/srv/a@b/x.git')).toBe('/srv/a@b/x.git');
    const { log, lines } = collectingLog();
    // Nothing listens on port 1: the fetch fails at once.
    const src = createGitSource({ url: 'http://deploy:hunter2secret@127.0.0.1:1/x.git', cacheDir: join(cache, 'userinfo'), log });
    expect(src.description).toBe('http://***@127.0.0.1:1/x.git (main)');
    const e = await errorOf(src.sync());
    expect(e).toBeInstanceOf(GitSourceError);
    expect(e.message).not.toContain('\n');
    for (const text of [e.message, ...lines]) expect(text).not.toContain('hunter2secret');
  });

  describe('over smart HTTP with a token', () => {
    const backend = join(execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim(), 'git-http-backend');
    const skip = missingTool(backend, 'git');
    let server: Server;
    let url: string;
    const seen: Array<{ url: string; auth: string | undefined }> = [];
    const root = join(tmpRoot, 'http');

    beforeAll(async () => {
      if (skip) return;
      mkdirSync(root, { recursive: true });
      execFileSync('git', ['clone', '--quiet', '--bare', repo.bare, join(root, 'policy.git')]);
      server = createServer((req, res) => {
        seen.push({ url: req.url!, auth: req.headers.authorization });
        if (req.headers.authorization !== `Basic ${BASIC}`) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end('authentication required');
          return;
        }
        const u = new URL(req.url!, 'http://x');
        const cgi = spawn(backend, [], {
          stdio: ['pipe', 'pipe', 'ignore'],
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            GIT_PROJECT_ROOT: root,
            GIT_HTTP_EXPORT_ALL: '1',
            PATH_INFO: u.pathname,
            QUERY_STRING: u.search.slice(1),
            REQUEST_METHOD: req.method!,
            CONTENT_TYPE: req.headers['content-type'] ?? '',
            REMOTE_USER: 'x-access-token',
            REMOTE_ADDR: '127.0.0.1',
            ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
            ...(req.headers['git-protocol'] ? { GIT_PROTOCOL: String(req.headers['git-protocol']) } : {}),
          },
        });
        req.pipe(cgi.stdin);
        // CGI answers with headers (Status: among them), a blank line, then the body.
        let head = Buffer.alloc(0);
        let headersDone = false;
        cgi.stdout.on('data', (d: Buffer) => {
          if (headersDone) return void res.write(d);
          head = Buffer.concat([head, d]);
          const i = head.indexOf('\r\n\r\n');
          if (i < 0) return;
          headersDone = true;
          let status = 200;
          const headers: Record<string, string> = {};
          for (const line of head.subarray(0, i).toString().split('\r\n')) {
            const c = line.indexOf(':');
            const k = line.slice(0, c);
            const v = line.slice(c + 1).trim();
            if (k.toLowerCase() === 'status') status = parseInt(v, 10);
            else headers[k] = v;
          }
          res.writeHead(status, headers);
          res.write(head.subarray(i + 4));
        });
        cgi.on('close', () => res.end());
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}/policy.git`;
    });
    afterAll(async () => {
      if (server) await new Promise((r) => server.close(r));
    });

    it.skipIf(!!skip)('clones with the token, fails cleanly without it, and never shows the token', async () => {
      const good = collectingLog();
      const withToken = createGitSource({ url, cacheDir: join(cache, 'http-ok'), credentials: { token: TOKEN }, log: good.log });
      const head = execFileSync('git', ['rev-parse', 'main'], { cwd: join(root, 'policy.git'), encoding: 'utf8' }).trim();
      expect(await withToken.sync()).toEqual({ commit: head, changed: true });
      expect((await withToken.read(head)).files.length).toBeGreaterThan(0);
      // The token went in a header, not in the URL, and was not written into the clone's configuration.
      expect(seen.some((s) => s.auth === `Basic ${BASIC}`)).toBe(true);
      expect(seen.every((s) => !s.url.includes(TOKEN))).toBe(true);
      expect(readFileSync(join(withToken.dir, 'config'), 'utf8')).not.toContain(TOKEN);
      expect(readFileSync(join(withToken.dir, 'config'), 'utf8')).not.toContain(BASIC);

      const bad = collectingLog();
      const none = createGitSource({ url, cacheDir: join(cache, 'http-none'), log: bad.log });
      const e1 = await errorOf(none.sync());
      expect(e1).toBeInstanceOf(GitSourceError);
      expect(e1.message).toMatch(/authentication failed: no credentials were given/);
      expect(e1.message).not.toContain('\n');

      const wrong = createGitSource({ url, cacheDir: join(cache, 'http-wrong'), credentials: { token: 'not-' + TOKEN }, log: bad.log });
      const e2 = await errorOf(wrong.sync());
      expect(e2).toBeInstanceOf(GitSourceError);
      expect(e2.message).toMatch(/authentication failed: the token was refused/);

      // The polling loop logs a failed fetch as a warning: that line must be clean too.
      const polled = createGitSource({ url, cacheDir: join(cache, 'http-poll'), credentials: { token: 'not-' + TOKEN }, intervalMs: 3_600_000, log: bad.log });
      const warned = bad.nextWarning();
      polled.start(() => {});
      await warned;
      await polled.stop();
      expect(bad.lines.some((l) => l.includes('authentication failed'))).toBe(true);

      for (const text of [e1.message, e2.message, ...good.lines, ...bad.lines]) {
        expect(text).not.toContain(TOKEN);
        expect(text).not.toContain(BASIC);
      }
    });

    it.skipIf(!!skip)('reads the token file at every fetch, so a rotated secret is used', async () => {
      const logs = collectingLog();
      const tokenFile = join(tmpRoot, 'token');
      writeFileSync(tokenFile, TOKEN + '\n');
      const src = createGitSource({ url, cacheDir: join(cache, 'http-file'), credentials: { tokenFile }, log: logs.log });
      const { commit } = await src.sync();

      writeFileSync(tokenFile, 'revoked-token\n');
      const e = await errorOf(src.sync());
      expect(e).toBeInstanceOf(GitSourceError);
      expect(e.message).toMatch(/the token was refused/);
      expect(e.message).not.toContain('revoked-token');

      writeFileSync(tokenFile, TOKEN);
      expect(await src.sync()).toEqual({ commit, changed: false });

      rmSync(tokenFile);
      await expect(src.sync()).rejects.toThrow(/cannot read the token file .*token: ENOENT/);
      for (const text of logs.lines) expect(text).not.toContain(TOKEN);
    });
  });
});
