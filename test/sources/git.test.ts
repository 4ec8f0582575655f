// The Git source against real repositories: a bare repository by path and by
// file:// URL, and a smart-HTTP server (git http-backend behind node:http)
// that demands a token — which must never appear in a log or an error.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitSourceError, createGitSource, redactGitUrl } from '../../controller/sources/git.js';
import { PolicyRepo } from '../e2e/support.js';

const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend';
const TOKEN = 'ghp_supersecrettoken1234567890';

function collectingLog() {
  const lines: string[] = [];
  return { lines, log: { info: (m: string, f?: object) => void lines.push(m + JSON.stringify(f ?? {})), warn: (m: string, f?: object) => void lines.push(m + JSON.stringify(f ?? {})) } };
}

describe('Git source', () => {
  const repo = new PolicyRepo();
  const cache = mkdtempSync(join(tmpdir(), 'muster-gitcache-'));
  let first: string;
  beforeAll(() => {
    first = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n', 'README.md': 'hi\n' }, 'one');
  });
  afterAll(() => {
    repo.cleanup();
    rmSync(cache, { recursive: true, force: true });
  });

  it.each([
    ['a local path', () => repo.bare],
    ['a file:// URL', () => `file://${repo.bare}`],
  ])('clones %s, reports changes only when the branch moves, and reads a commit', async (_what, url) => {
    const { log } = collectingLog();
    first = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n', 'README.md': `${_what}\n` }, 'one');
    const src = createGitSource({ url: url(), branch: 'main', cacheDir: join(cache, _what.replace(/\W/g, '')), log });
    expect(await src.sync()).toEqual({ commit: first, changed: true });
    expect(await src.sync()).toEqual({ commit: first, changed: false });
    const second = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n', 'policy/b.yml': 'kind: Rollout\n' }, 'two');
    expect(await src.sync()).toEqual({ commit: second, changed: true });
    expect((await src.read(first)).files.map((f) => f.path)).toEqual(['policy/a.yaml']);
    expect((await src.read(second)).files.map((f) => f.path)).toEqual(['policy/a.yaml', 'policy/b.yml']);
  });

  it('names a missing branch clearly', async () => {
    const { log } = collectingLog();
    const src = createGitSource({ url: repo.bare, branch: 'nope', cacheDir: join(cache, 'nobranch'), log });
    await expect(src.sync()).rejects.toThrow(GitSourceError);
    await expect(src.sync()).rejects.toThrow(/branch "nope" does not exist/);
  });

  it('calls onChange at start and again after trigger() when a commit lands', async () => {
    const { log } = collectingLog();
    const src = createGitSource({ url: repo.bare, branch: 'main', cacheDir: join(cache, 'watch'), intervalMs: 3_600_000, log });
    const seen: string[] = [];
    const head = repo.git('rev-parse', 'HEAD');
    src.start((c) => void seen.push(c));
    await new Promise<void>((r) => {
      const t = setInterval(() => seen.length && (clearInterval(t), r()), 20);
    });
    const next = repo.commit({ 'policy/a.yaml': 'kind: DeviceGroup\n# changed\n' }, 'three');
    await src.trigger();
    await src.stop();
    expect(seen).toEqual([head, next]);
  });

  it('redacts credentials in URLs', () => {
    expect(redactGitUrl('https://user:pw@git.example.com/x.git')).toBe('https://***@git.example.com/x.git');
    expect(redactGitUrl('file:///srv/x.git')).toBe('file:///srv/x.git');
  });

  describe('over HTTPS-style smart HTTP with a token', () => {
    let server: Server;
    let url: string;
    const root = mkdtempSync(join(tmpdir(), 'muster-githttp-'));
    beforeAll(async () => {
      execFileSync('git', ['clone', '--quiet', '--bare', repo.bare, join(root, 'policy.git')]);
      server = createServer((req, res) => {
        const auth = req.headers.authorization ?? '';
        if (auth !== `Basic ${Buffer.from(`x-access-token:${TOKEN}`).toString('base64')}`) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end('no');
          return;
        }
        const u = new URL(req.url!, 'http://x');
        const cgi = spawn(HTTP_BACKEND, [], {
          env: {
            GIT_PROJECT_ROOT: root,
            GIT_HTTP_EXPORT_ALL: '1',
            PATH_INFO: u.pathname,
            QUERY_STRING: u.search.slice(1),
            REQUEST_METHOD: req.method!,
            CONTENT_TYPE: req.headers['content-type'] ?? '',
            REMOTE_USER: 'x-access-token',
            ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
          },
        });
        req.pipe(cgi.stdin);
        let head: Buffer = Buffer.alloc(0);
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
            const [k, ...v] = line.split(':');
            if (k!.toLowerCase() === 'status') status = parseInt(v.join(':'), 10);
            else headers[k!] = v.join(':').trim();
          }
          res.writeHead(status, headers);
          res.write(head.subarray(i + 4));
        });
        cgi.on('close', () => res.end());
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}/policy.git`;
    });
    afterAll(() => {
      server?.close();
      rmSync(root, { recursive: true, force: true });
    });

    it('clones with the token, and fails cleanly without it, never showing the token', async () => {
      const withToken = collectingLog();
      const good = createGitSource({ url, cacheDir: join(cache, 'http-ok'), credentials: { token: TOKEN }, log: withToken.log });
      expect((await good.sync()).commit).toMatch(/^[0-9a-f]{40}$/);
      const tokenFile = join(cache, 'token');
      mkdirSync(cache, { recursive: true });
      writeFileSync(tokenFile, TOKEN + '\n');
      const fromFile = createGitSource({ url, cacheDir: join(cache, 'http-file'), credentials: { tokenFile }, log: withToken.log });
      expect((await fromFile.sync()).commit).toMatch(/^[0-9a-f]{40}$/);

      const without = collectingLog();
      const bad = createGitSource({ url, cacheDir: join(cache, 'http-bad'), log: without.log });
      const err = await bad.sync().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(GitSourceError);
      expect(err!.message.split('\n')).toHaveLength(1);
      const wrong = createGitSource({ url, cacheDir: join(cache, 'http-wrong'), credentials: { token: 'not-' + TOKEN }, log: without.log });
      const err2 = await wrong.sync().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err2).toBeInstanceOf(GitSourceError);
      for (const text of [err!.message, err2!.message, ...withToken.lines, ...without.lines]) {
        expect(text).not.toContain(TOKEN);
        expect(text).not.toContain(Buffer.from(`x-access-token:${TOKEN}`).toString('base64'));
      }
    });
  });
});
