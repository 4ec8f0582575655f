// Hostile input before authentication: each attack shape of bench/
// hostile-shapes.ts sent to the endpoint it targets on `muster serve`'s app
// (bench/serve-rig.ts: buildApp with Apple, Windows and the Pub/Sub endpoint,
// the store on PostgreSQL when DATABASE_URL is set), from a separate process
// (hostile-load.ts) so the load never shares the server's thread, one request
// at a time, while that process also probes /healthz. Per shape: the share of
// answers under 100 ms (the goal for every 1 MiB body), p50/p99, the status,
// /healthz p99 meanwhile. Rate limits are off so every request reaches its
// route. The baseline, measured in the same run, is a bare node:http server
// that reads the same body and answers 413: the cost of moving it at all.
// Rows marked "at its limit" send the largest body the route reads, so the
// work done before authentication is measured too; the one row after
// authentication (an enrolled device's message) is there for contrast.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { openStore } from '../controller/store/index.js';
import { silentLogger } from '../controller/store/db.js';
import { percentile, type Benchmark, type BenchRow } from './harness.js';
import type { LoadResult, LoadTarget } from './hostile-load.js';
import { MiB, type BodyShape } from './hostile-shapes.js';
import { serveRig } from './serve-rig.js';

const REQUESTS = Number(process.env.BENCH_HOSTILE_REQUESTS ?? 30);
const GOAL_MS = 100;
const KiB = 1024;
const SOAP = 'application/soap+xml; charset=utf-8';

interface Shape {
  name: string;
  method: 'POST' | 'PUT';
  path: string;
  shape: BodyShape;
  size: number;
  headers?: Record<string, string>;
  expect: number;
  /** Sent as an enrolled device (after authentication): not held to the goal. */
  device?: boolean;
}

const SHAPES: Shape[] = [
  { name: '1 MiB <!DOCTYPE ×N → Discovery.svc', method: 'POST', path: '/EnrollmentServer/Discovery.svc', shape: 'doctype', size: MiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '16 KiB <!DOCTYPE ×N → Discovery.svc (at its limit, scanned)', method: 'POST', path: '/EnrollmentServer/Discovery.svc', shape: 'doctype', size: 16 * KiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '1 MiB <!DOCTYPE ×N → MDM.svc, no certificate', method: 'POST', path: '/ManagementServer/MDM.svc', shape: 'doctype', size: MiB, headers: { 'content-type': 'application/vnd.syncml.dm+xml' }, expect: 403 },
  { name: '1 MiB nested XML → Enrollment.svc', method: 'POST', path: '/EnrollmentServer/Enrollment.svc', shape: 'nestedXml', size: MiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '64 KiB nested XML → Enrollment.svc (at its limit, parsed)', method: 'POST', path: '/EnrollmentServer/Enrollment.svc', shape: 'nestedXml', size: 64 * KiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '1 MiB of attributes → Policy.svc', method: 'POST', path: '/EnrollmentServer/Policy.svc', shape: 'manyAttributes', size: MiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '32 KiB of attributes → Policy.svc (at its limit, parsed)', method: 'POST', path: '/EnrollmentServer/Policy.svc', shape: 'manyAttributes', size: 32 * KiB, headers: { 'content-type': SOAP }, expect: 500 },
  { name: '1 MiB plist → /mdm/apple/checkin', method: 'PUT', path: '/mdm/apple/checkin', shape: 'hugePlist', size: MiB, headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin' }, expect: 413 },
  { name: '256 KiB plist → /mdm/apple/checkin (at its limit, parsed)', method: 'PUT', path: '/mdm/apple/checkin', shape: 'hugePlist', size: 256 * KiB, headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin' }, expect: 400 },
  { name: '256 KiB nested plist → /mdm/apple/checkin (at its limit)', method: 'PUT', path: '/mdm/apple/checkin', shape: 'nestedPlist', size: 256 * KiB, headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin' }, expect: 400 },
  { name: '1 MiB nested plist → /mdm/apple/connect, no certificate', method: 'PUT', path: '/mdm/apple/connect', shape: 'nestedPlist', size: MiB, headers: { 'content-type': 'application/x-apple-aspen-mdm' }, expect: 403 },
  { name: '1 MiB garbage DER → SCEP PKIOperation', method: 'POST', path: '/mdm/apple/scep?operation=PKIOperation', shape: 'garbageDer', size: MiB, headers: { 'content-type': 'application/x-pki-message' }, expect: 400 },
  { name: '64 KiB garbage DER → SCEP PKIOperation (at its limit, parsed)', method: 'POST', path: '/mdm/apple/scep?operation=PKIOperation', shape: 'garbageDer', size: 64 * KiB, headers: { 'content-type': 'application/x-pki-message' }, expect: 400 },
  { name: '1 MiB deep JSON → /android/pubsub, no token', method: 'POST', path: '/android/pubsub', shape: 'deepJson', size: MiB, headers: { 'content-type': 'application/json' }, expect: 401 },
  { name: '1 MiB deep JSON → /api/v1/plan, no token', method: 'POST', path: '/api/v1/plan', shape: 'deepJson', size: MiB, headers: { 'content-type': 'application/json' }, expect: 401 },
  { name: '1 MiB JSON → /hooks/git, bad signature', method: 'POST', path: '/hooks/git', shape: 'hugeJson', size: MiB, headers: { 'content-type': 'application/json', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }, expect: 401 },
  { name: '1 MiB nested XML → MDM.svc from an enrolled device (after authentication)', method: 'POST', path: '/ManagementServer/MDM.svc', shape: 'nestedXml', size: MiB, headers: { 'content-type': 'application/vnd.syncml.dm+xml' }, expect: 400, device: true },
];

/** Runs the load process on `targets` and returns what it measured. */
async function load(targets: LoadTarget[], healthz: string): Promise<LoadResult[]> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./hostile-load.js', import.meta.url))], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  child.stdin.end(JSON.stringify({ targets, healthz }));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the load process exited ${code}: ${Buffer.concat(err).toString().trim().split('\n').slice(-3).join(' ')}`);
  return JSON.parse(Buffer.concat(out).toString('utf8')) as LoadResult[];
}

const round = (n: number) => Math.round(n * 100) / 100;

async function run(): Promise<BenchRow[]> {
  const url = process.env.DATABASE_URL;
  const store = await openStore({ ...(url ? { databaseUrl: url, poolSize: 8 } : { dataDir: 'memory' }), schema: `muster_bench_${randomBytes(4).toString('hex')}`, logger: silentLogger });
  const rig = await serveRig(store, { enrollRatePerMinute: 0, authFailuresPerMinute: 0 });
  // The floor: reads the whole body, answers 413.
  const bare = createServer((req, res) => {
    if (req.url === '/healthz') return void res.end('{"status":"ok"}');
    req.resume();
    req.on('end', () => res.writeHead(413, { 'content-type': 'text/plain' }).end('too large'));
  });
  try {
    bare.listen(0, '127.0.0.1');
    await once(bare, 'listening');
    const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;
    const device = await rig.deviceCertificate({ bindTo: `BENCH${randomBytes(14).toString('hex').toUpperCase()}` });
    const targets = (base: string): LoadTarget[] =>
      SHAPES.map((s) => ({ name: s.name, url: `${base}${s.path}`, method: s.method, headers: { ...s.headers, ...(s.device ? { 'client-cert': device.header } : {}) }, shape: s.shape, size: s.size, count: s.device ? Math.min(REQUESTS, 10) : REQUESTS }));
    const ours = await load(targets(rig.url), `${rig.url}/healthz`);
    const floor = await load(targets(bareUrl), `${bareUrl}/healthz`);
    return SHAPES.map((s, i): BenchRow => {
      const r = ours[i]!;
      const b = floor[i]!;
      const lat = [...r.latencies].sort((x, y) => x - y);
      const wrong = r.statuses.filter((st) => st !== s.expect);
      const lost = r.errors.filter((e) => !e.startsWith('healthz'));
      // Refused before the upload ended, the connection closed under it: the client saw the reset, not the answer.
      const resets = lost.filter((e) => /EPIPE|ECONNRESET|socket hang up/.test(e)).length;
      const failed = wrong.length + lost.length - resets;
      // Counted as met: the expected answer, under the goal; a wrong status, a reset or no answer never is.
      const met = r.latencies.filter((ms, k) => ms < GOAL_MS && r.statuses[k] === s.expect).length;
      const attempted = r.latencies.length + lost.length;
      const notes = [
        ...(failed ? [`FAILED ${failed}: expected ${s.expect}, got ${[...new Set(wrong)].join('/') || 'no answer'}${lost[0] ? ` (${lost[0]})` : ''}`] : []),
        ...(resets ? [`${resets} refused before the upload ended: the client saw the connection reset, not the ${s.expect}`] : []),
        ...(s.device ? ['after authentication: not held to the goal'] : []),
      ];
      return {
        name: `${s.name} → ${s.expect}`,
        value: attempted ? round((100 * met) / attempted) : NaN,
        unit: `% under ${GOAL_MS} ms`,
        p50: percentile(lat, 50),
        p99: percentile(lat, 99),
        baseline: { name: 'bare node:http 413 p99', value: round(percentile([...b.latencies].sort((x, y) => x - y), 99)), unit: 'ms' },
        extra: {
          requests: r.latencies.length,
          healthzP99Ms: round(percentile([...r.healthz].sort((x, y) => x - y), 99)),
          healthzProbes: r.healthz.length,
          ...(failed ? { failed } : {}),
          ...(resets ? { resets } : {}),
          ...(notes.length ? { note: notes.join('; ') } : {}),
        },
      };
    });
  } catch (e) {
    return [{ name: 'hostile input before authentication', value: NaN, unit: `% under ${GOAL_MS} ms`, extra: { note: `not measured: ${(e as Error).message}` } }];
  } finally {
    bare.close();
    await rig.close();
    await store.close();
  }
}

export const hostileBenchmark: Benchmark = {
  name: 'hostile',
  description: `Hostile input before authentication: each 1 MiB attack shape (and the largest body each route reads) against serve's app, ${REQUESTS} each from another process, vs a bare node:http 413`,
  run,
};
