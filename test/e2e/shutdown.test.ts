// `muster serve` stops within a bound on SIGTERM, as the real binary: it
// stops accepting connections at once, closes an idle keep-alive connection
// at once, lets a request in flight finish and closes its connection with the
// answer, cuts a client still trickling its body when --shutdown-grace runs
// out, and exits 0.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childEnv, createToken, serve, type Served } from './support.js';

const GRACE_MS = 2_000;
/** What a loaded machine may add to the grace: closing the database, the process exiting. */
const MARGIN_MS = 15_000;

/** A raw HTTP/1.1 client connection: what the server sent, and when it closed (in the order events happened). */
class Raw {
  readonly socket: Socket;
  text = '';
  closed = false;
  private readonly waiters: Array<() => void> = [];
  constructor(port: number, events: string[], name: string) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => {
      this.text += d;
      this.wake();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      events.push(`${name} closed`);
      this.wake();
    });
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  /** Resolves once `pred` holds (or rejects after timeoutMs). */
  until(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.text.slice(0, 300))}, closed ${this.closed}`)), timeoutMs);
      const check = () => {
        if (pred()) {
          clearTimeout(t);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }
  write(s: string): void {
    this.socket.write(s);
  }
  statuses(): number[] {
    return [...this.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  }
}

const refused = (port: number) =>
  new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });

describe('muster serve on SIGTERM', { timeout: 120_000 }, () => {
  const root = mkdtempSync(join(tmpdir(), 'muster-shutdown-'));
  let server: Served | undefined;
  const sockets: Raw[] = [];
  let trickle: NodeJS.Timeout | undefined;
  // The admin API checks its token before reading a body: with one, the server reads the body it is sent.
  let token = '';

  beforeAll(async () => {
    token = createToken(join(root, 'db'), 'read');
    server = await serve(['--source', root, '--source-type', 'dir', '--data-dir', join(root, 'db'), '--shutdown-grace', `${GRACE_MS}ms`], childEnv({ MUSTER_DATA_DIR: join(root, 'db') }));
  }, 120_000);

  afterAll(async () => {
    if (trickle) clearInterval(trickle);
    for (const s of sockets) s.socket.destroy();
    // Never hang the suite on a server that did not stop.
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) await server.kill();
    rmSync(root, { recursive: true, force: true });
  });

  it('drains within the grace, then cuts what is left and exits 0', async () => {
    const s = server!;
    const port = Number(new URL(s.url).port);
    const events: string[] = [];
    const open = (name: string) => {
      const r = new Raw(port, events, name);
      sockets.push(r);
      return r;
    };

    // (a) An idle keep-alive connection: answered once, left open.
    const idle = open('idle');
    idle.write(`GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await idle.until(() => /"status":"ready"/.test(idle.text), 'readiness before the shutdown');
    expect(idle.statuses()).toEqual([200]);

    // (b) A request in flight that finishes during the drain. Expect: 100-continue makes the server
    // say when it has read the headers, so the request is known to be in flight before SIGTERM.
    const body = JSON.stringify({ files: [] });
    const finishing = open('finishing');
    finishing.write(`POST /api/v1/plan HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
    await finishing.until(() => finishing.text.includes('100 Continue'), 'the server reading the finishing request');

    // (c) A client that sends its headers and then trickles its body, never finishing.
    const slow = open('slow');
    slow.write(`POST /api/v1/plan HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n`);
    await slow.until(() => slow.text.includes('100 Continue'), 'the server reading the slow request');
    trickle = setInterval(() => !slow.closed && slow.write(' '), 100);

    const exited = new Promise<number | null>((r) => (s.proc.exitCode !== null ? r(s.proc.exitCode) : s.proc.once('exit', (code) => r(code))));
    const signalled = Date.now();
    s.proc.kill('SIGTERM');
    await s.waitLog((l) => l.msg === 'stopped accepting connections; draining', 20_000, 'the drain to start');
    events.push('draining');

    // New connections are refused.
    expect(await refused(port)).toBe('ECONNREFUSED');

    // The in-flight request finishes normally, and its answer closes the connection (a keep-alive left open would hold the drain).
    finishing.write(body);
    await finishing.until(() => finishing.statuses().length === 2 && finishing.closed, 'the finishing request');
    expect(finishing.statuses()).toEqual([100, 200]);
    expect(finishing.text.toLowerCase()).toContain('connection: close');

    const code = await exited;
    const took = Date.now() - signalled;
    expect(code).toBe(0);
    expect(took).toBeLessThan(GRACE_MS + MARGIN_MS);
    await slow.until(() => slow.closed, 'the slow connection to be closed');

    // The idle connection was closed at once; the slow one only when the grace ran out, without an answer.
    expect(events.indexOf('idle closed')).toBeGreaterThanOrEqual(0);
    expect(events.indexOf('idle closed')).toBeLessThan(events.indexOf('slow closed'));
    expect(events.indexOf('finishing closed')).toBeLessThan(events.indexOf('slow closed'));
    expect(slow.statuses()).toEqual([100]);
    const done = s.logs.find((l) => l.msg === 'shut down');
    expect(done).toMatchObject({ signal: 'SIGTERM', drained: false, connectionsCut: 1, leftBehind: [] });
    expect(s.logs.some((l) => l.msg === 'shutdown grace over: closing the connections still open' && l.connections === 1)).toBe(true);
  });
});
