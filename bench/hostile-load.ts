// The load side of bench/hostile, run as its own process so its work never
// shares the server's thread: reads {targets, healthz} as JSON on stdin, sends
// each target's hostile body `count` times (one at a time, each on a fresh
// keep-alive connection, as devices connect) while probing /healthz every few
// milliseconds, and writes each request's latency and status as JSON on
// stdout. A server that refuses a body early may close the connection under
// the upload; when the client sees that reset before the answer, it is
// recorded as an error, not an answer.
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { BODIES, type BodyShape } from './hostile-shapes.js';

export interface LoadTarget {
  name: string;
  url: string;
  method: string;
  headers: Record<string, string>;
  shape: BodyShape;
  size: number;
  count: number;
}

export interface LoadResult {
  name: string;
  url: string;
  latencies: number[];
  statuses: number[];
  errors: string[];
  /** /healthz latencies measured while this target's requests ran. */
  healthz: number[];
}

function send(url: string, method: string, headers: Record<string, string>, body?: Buffer, agent?: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(url, { method, agent: agent ?? false, headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...headers } }, (res) => {
      answered = true;
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
      res.on('error', reject);
    });
    // The server may answer before the upload ends and close the connection under it.
    req.on('error', (e) => (answered ? undefined : reject(e)));
    req.end(body);
  });
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const { targets, healthz } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { targets: LoadTarget[]; healthz: string };
  const probeAgent = new Agent({ keepAlive: true, maxSockets: 1 });
  const results: LoadResult[] = [];
  for (const t of targets) {
    const body = BODIES[t.shape](t.size);
    const r: LoadResult = { name: t.name, url: t.url, latencies: [], statuses: [], errors: [], healthz: [] };
    let running = true;
    const probe = (async () => {
      while (running) {
        const t0 = performance.now();
        try {
          await send(healthz, 'GET', {}, undefined, probeAgent);
          r.healthz.push(performance.now() - t0);
        } catch (e) {
          r.errors.push(`healthz: ${(e as Error).message}`);
        }
        await new Promise((done) => setTimeout(done, 5));
      }
    })();
    for (let i = 0; i < t.count; i++) {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const t0 = performance.now();
      try {
        r.statuses.push(await send(t.url, t.method, t.headers, body, agent));
        r.latencies.push(performance.now() - t0);
      } catch (e) {
        r.errors.push((e as Error).message);
      } finally {
        agent.destroy();
      }
    }
    running = false;
    await probe;
    results.push(r);
  }
  probeAgent.destroy();
  process.stdout.write(JSON.stringify(results));
}

await main();
