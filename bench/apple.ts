// Apple MDM throughput, each figure beside a same-run baseline:
//  - check-in + command round trips: 1,000 simulated Macs (signed plists,
//    Mdm-Signature verified by the server) each fetch a queued command and
//    acknowledge it, against Muster's endpoints on the store (PostgreSQL when
//    DATABASE_URL is set), and the same client against a bare node:http
//    server that answers the same plists without looking at them;
//  - SCEP issuance: micromdm's scepclient (Debian package scep) enrolling
//    against Muster's SCEP CA and against micromdm's own scepserver, CA keys
//    of the same size, the same number of clients at once.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import Fastify from 'fastify';
import forge from 'node-forge';
import { openStore } from '../controller/store/index.js';
import { silentLogger } from '../controller/store/db.js';
import { randomKeyring } from '../controller/secrets/keys.js';
import { recordAppleResult, renderAppleCommand } from '../protocols/apple/driver.js';
import { encodePlist } from '../protocols/apple/plist.js';
import { appleRoutes } from '../protocols/apple/routes.js';
import { scepRoutes } from '../protocols/apple/scep/routes.js';
import { createAppleService } from '../protocols/apple/service.js';
import { SimulatedAppleDevice } from '../protocols/apple/simulator.js';
import { CertificateAuthority, generateCa, sha256Fingerprint } from '../protocols/pki/ca.js';
import { percentile, pool, type Benchmark, type BenchRow } from './harness.js';

const DEVICES = Number(process.env.BENCH_APPLE_DEVICES ?? 1000);
const CONCURRENCY = 50;
const SCEP_REQUESTS = Number(process.env.BENCH_SCEP_REQUESTS ?? 200);
const SCEP_CONCURRENCY = 8;
const TOPIC = 'com.apple.mgmt.External.00000000-0000-4000-8000-0000000bench';
const quiet = { info: () => {}, warn: () => {}, error: () => {} };


async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function roundTrips(): Promise<BenchRow[]> {
  const url = process.env.DATABASE_URL;
  const store = await openStore({ ...(url ? { databaseUrl: url, poolSize: 16 } : { dataDir: 'memory' }), schema: `muster_bench_${randomBytes(4).toString('hex')}`, logger: silentLogger, keys: randomKeyring() });
  const app = Fastify();
  try {
    const ca = generateCa({ keyBits: 2048 });
    const service = createAppleService({ store, log: quiet, inventoryOnEnroll: false, renderCommand: (c) => renderAppleCommand(c, { secret: () => undefined }), onResult: (c, r) => recordAppleResult(store, c, r) });
    await app.register(appleRoutes, { service, auth: { modes: ['signature'], ca }, log: quiet });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });

    // One key, a certificate per device from the CA (SCEP is measured on its own below).
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forgeKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString()) as forge.pki.rsa.PublicKey;
    const enrolled: Array<{ device: SimulatedAppleDevice; der: Buffer }> = [];
    for (let i = 0; i < DEVICES; i++) {
      const udid = `BENCH-${String(i).padStart(6, '0')}-${randomUUID().slice(0, 8)}`;
      const cert = ca.issue({ publicKey: forgeKey, subject: [{ name: 'commonName', value: udid }] });
      const der = CertificateAuthority.toDer(cert);
      await store.identities.add({ certSha256: sha256Fingerprint(der), platform: 'apple', protocol: 'apple-scep', serialNumber: cert.serialNumber, notAfter: cert.validity.notAfter });
      enrolled.push({ device: new SimulatedAppleDevice({ server: base, udid, serialNumber: `BENCH${i}`, topic: TOPIC, challenge: '' }), der });
    }
    await pool(enrolled, CONCURRENCY, (e) => e.device.enrollWithIdentity(privateKey, e.der));
    const devices = enrolled.map((e) => e.device);
    await store.commands.enqueue(devices.map((d) => ({ uuid: randomUUID(), deviceId: d.udid, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } } })));

    // A session is Idle → command, then Acknowledged → nothing: two round trips.
    const muster = await pool(devices, CONCURRENCY, (d) => d.connect());
    const answered = devices.filter((d) => d.seen.includes('ProfileList')).length;

    // The floor: the same devices and bodies against a server that only reads the body and answers.
    const command = encodePlist({ CommandUUID: randomUUID(), Command: { RequestType: 'ProfileList', ManagedOnly: true } });
    const bare = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const idle = Buffer.concat(chunks).includes('<string>Idle</string>');
        res.writeHead(200, { 'content-type': 'application/xml', 'content-length': idle ? command.length : 0 });
        res.end(idle ? command : undefined);
      });
    });
    const bareUrl = await listen(bare);
    for (const d of devices) d.useServer(bareUrl);
    const floor = await pool(devices, CONCURRENCY, (d) => d.connect());
    bare.close();

    const rt = (wallMs: number) => (2 * DEVICES) / (wallMs / 1000);
    return [
      {
        name: `check-in+command round trips, ${DEVICES} Macs, ${CONCURRENCY} at once (${store.backend})`,
        value: rt(muster.wallMs),
        unit: 'round trips/s',
        p50: percentile(muster.lat, 50),
        p99: percentile(muster.lat, 99),
        baseline: { name: 'bare node:http, same client', value: rt(floor.wallMs), unit: 'round trips/s' },
        extra: { sessionP50FloorMs: Math.round(percentile(floor.lat, 50) * 100) / 100, sessionP99FloorMs: Math.round(percentile(floor.lat, 99) * 100) / 100, answered, latency: 'per session (2 round trips)' },
      },
    ];
  } finally {
    await app.close();
    await store.close();
  }
}

/** One enrollment by micromdm's scepclient (its own key, CSR and PKCSReq) in a fresh folder; a CN per device (scepserver refuses a CN it already certified). */
function scepclient(server: string, challenge: string, dir: string): Promise<void> {
  mkdirSync(dir);
  return new Promise((resolve, reject) => {
    const child = spawn('scepclient', ['-server-url', server, '-challenge', challenge, '-private-key', join(dir, 'key.pem'), '-certificate', join(dir, 'cert.pem'), '-cn', basename(dir)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 && existsSync(join(dir, 'cert.pem')) ? resolve() : reject(new Error(`scepclient exited ${code}: ${err.slice(-1500)}`))));
  });
}

/** Enrollments that failed are counted, not fatal: a refusal under load is part of what is measured. */
async function scepAgainst(server: string, challenge: string, root: string, tag: string): Promise<{ lat: number[]; wallMs: number; failed: number; lastError?: string }> {
  let failed = 0;
  let lastError: string | undefined;
  const r = await pool(
    Array.from({ length: SCEP_REQUESTS }, (_, i) => join(root, `${tag}-${i}`)),
    SCEP_CONCURRENCY,
    (dir) =>
      scepclient(server, challenge, dir).catch((e: Error) => {
        failed++;
        lastError = e.message.split('\n').filter((l) => !l.includes('level=info')).join(' ').slice(0, 200);
      }),
  );
  return { ...r, failed, ...(lastError ? { lastError } : {}) };
}

async function scep(): Promise<BenchRow[]> {
  const challenge = 'bench-challenge';
  const root = mkdtempSync(join(tmpdir(), 'muster-bench-scep-'));
  let proc: ChildProcess | undefined;
  // As in production: each certificate is recorded as an identity and in the audit log.
  const url = process.env.DATABASE_URL;
  const store = await openStore({ ...(url ? { databaseUrl: url, poolSize: 16 } : { dataDir: 'memory' }), schema: `muster_bench_${randomBytes(4).toString('hex')}`, logger: silentLogger, keys: randomKeyring() });
  const app = Fastify();
  try {
    const ca = generateCa({ keyBits: 2048 });
    await app.register(scepRoutes, {
      ca,
      // micromdm's scepclient sends single-DES envelopes whatever GetCACaps says.
      allowSingleDes: true,
      challenges: { verify: async (c) => c === challenge, consume: async (c) => c === challenge },
      onIssued: async (i) => {
        await store.identities.add({ certSha256: i.fingerprint, platform: 'apple', protocol: 'apple-scep', serialNumber: i.serialNumber, subject: i.csrSubject, notAfter: i.notAfter });
        await store.audit.append({ actor: 'scep', action: 'certificate.issue', subject: `certificate/${i.fingerprint}`, details: { serial: i.serialNumber } });
      },
    });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const ours = await scepAgainst(`${base}/mdm/apple/scep`, challenge, root, 'muster');

    const depot = join(root, 'depot');
    await new Promise<void>((resolve, reject) => {
      const init = spawn('scepserver', ['ca', '-init', '-depot', depot, '-keySize', '2048'], { stdio: 'ignore' });
      init.once('error', reject);
      init.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`scepserver ca -init exited ${code}`))));
    });
    const port = String(20_000 + Math.floor(Math.random() * 20_000));
    proc = spawn('scepserver', ['-depot', depot, '-port', port, '-challenge', challenge], { stdio: 'ignore' });
    const theirUrl = `http://127.0.0.1:${port}/scep`;
    await waitForPort(theirUrl);
    const theirs = await scepAgainst(theirUrl, challenge, root, 'micromdm');
    const rate = (r: { wallMs: number; failed: number }) => (SCEP_REQUESTS - r.failed) / (r.wallMs / 1000);
    return [
      {
        name: `SCEP enrollments by micromdm scepclient, ${SCEP_REQUESTS}, ${SCEP_CONCURRENCY} at once (${store.backend})`,
        value: rate(ours),
        unit: 'certs/s',
        p50: percentile(ours.lat, 50),
        p99: percentile(ours.lat, 99),
        baseline: { name: 'micromdm scepserver, same client', value: rate(theirs), unit: 'certs/s' },
        extra: {
          failed: ours.failed,
          scepserverFailed: theirs.failed,
          ...(ours.lastError ? { error: ours.lastError } : {}),
          ...(theirs.lastError ? { scepserverError: theirs.lastError } : {}),
          scepserverP50Ms: Math.round(percentile(theirs.lat, 50) * 100) / 100,
          scepserverP99Ms: Math.round(percentile(theirs.lat, 99) * 100) / 100,
          latency: 'per enrollment, client key generation included',
        },
      },
    ];
  } catch (e) {
    return [{ name: 'SCEP enrollments', value: NaN, unit: 'certs/s', extra: { note: `not measured: ${(e as Error).message} (needs scepclient and scepserver: apt-get install scep)` } }];
  } finally {
    proc?.kill();
    await app.close();
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

async function waitForPort(url: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      await fetch(`${url}?operation=GetCACaps`);
      return;
    } catch {
      if (Date.now() > end) throw new Error(`${url} did not come up`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export const appleBenchmark: Benchmark = {
  name: 'apple',
  description: `Apple: check-in+command round trips with ${DEVICES} simulated Macs vs bare node:http; SCEP issuance vs micromdm scepserver`,
  async run() {
    return [...(await roundTrips()), ...(await scep())];
  },
};
