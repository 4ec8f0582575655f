// End-to-end support: a real bare Git repository the test pushes to, and the
// real `muster` binary (dist/) run as a child process on its own PGlite folder.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer as createNetServer } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { packageRoot } from '../../controller/package-root.js';

export const BIN = join(packageRoot(), 'dist', 'controller', 'cli', 'main.js');

/** The environment children get: no DATABASE_URL, so each uses its own PGlite folder. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { DATABASE_URL: _u, DATABASE_READ_URL: _r, MUSTER_TOKEN: _t, ...rest } = process.env;
  return { ...rest, NO_COLOR: '1', ...extra };
}

export class PolicyRepo {
  readonly root = mkdtempSync(join(tmpdir(), 'muster-e2e-'));
  readonly bare = join(this.root, 'policy.git');
  readonly work = join(this.root, 'work');

  constructor() {
    execFileSync('git', ['init', '--bare', '--quiet', '--initial-branch=main', this.bare]);
    execFileSync('git', ['clone', '--quiet', this.bare, this.work], { stdio: 'ignore' });
    this.git('config', 'user.email', 'admin@example.com');
    this.git('config', 'user.name', 'Admin');
    this.git('checkout', '--quiet', '-b', 'main');
  }

  git(...args: string[]): string {
    return execFileSync('git', args, { cwd: this.work, encoding: 'utf8' }).trim();
  }

  /** Replaces the whole tree with `files`, commits and pushes; returns the commit SHA. */
  commit(files: Record<string, string>, message: string): string {
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

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export interface Served {
  proc: ChildProcess;
  url: string;
  logs: Array<Record<string, unknown>>;
  /** Resolves when a log line matching `pred` appears (or rejects after timeoutMs). */
  waitLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export async function serve(args: string[], env: NodeJS.ProcessEnv): Promise<Served> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--log-format', 'json', '--listen', '127.0.0.1:0', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; done: (l: Record<string, unknown>) => void }> = [];
  let buf = '';
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let l: Record<string, unknown>;
      try {
        l = JSON.parse(line) as Record<string, unknown>;
      } catch {
        l = { msg: line };
      }
      logs.push(l);
      for (const w of [...waiters]) {
        if (!w.pred(l)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.done(l);
      }
    }
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000, what = 'log line') => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stderr: ${stderr.slice(-2000)}; last logs: ${JSON.stringify(logs.slice(-5))}`)), timeoutMs);
      waiters.push({ pred, done: (l) => (clearTimeout(t), resolve(l)) });
      void exited.then((code) => reject(new Error(`muster serve exited (${code}) while waiting for ${what}: ${stderr.slice(-2000)}`)));
    });
  };
  const ready = await waitLog((l) => l.msg === 'muster is serving', 60_000, 'the server to start');
  return {
    proc,
    url: String(ready.url),
    logs,
    waitLog,
    async stop() {
      proc.kill('SIGTERM');
      await exited;
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Calls the admin API with a token. */
export async function api<T = unknown>(base: string, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; data: T }> {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, data: (await res.json()) as T };
}

/** Polls `fn` until it returns a truthy value. */
export async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

export function createToken(dataDir: string, scope: 'read' | 'operate' | 'admin'): string {
  return execFileSync(process.execPath, [BIN, 'token', 'create', '--name', `e2e-${scope}`, '--scope', scope, '--data-dir', dataDir], { env: childEnv(), encoding: 'utf8' }).trim();
}

/** A TCP port free right now on 127.0.0.1, for a server whose public URL must be known before it listens. */
export function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}
