// Windows MDM throughput, each figure beside a same-run baseline:
//  - OMA-DM sessions: 1,000 simulated PCs, each with a bundle's CSP nodes
//    queued (an Atomic of DeviceLock policies, the camera policy, the
//    read-back Get), run one whole client-initiated session over HTTPS with
//    their enrollment certificates against Muster's endpoint on the store
//    (PostgreSQL when DATABASE_URL is set): package 1, the commands, their
//    statuses and results, the closing message. The baseline is the same
//    client against a bare node:https server that answers the same number
//    of messages per session with canned SyncML, without reading them.
//  - enrollments: simulated PCs enrolling end to end (probe, Discover,
//    GetPolicies, RequestSecurityToken with a fresh 2048-bit key and CSR),
//    each with its own one-time credential; the baseline is the client's
//    own work alone (key generation and CSR), the floor any server sits on.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import Fastify from 'fastify';
import forge from 'node-forge';
import { openStore, type Store } from '../controller/store/index.js';
import { silentLogger } from '../controller/store/db.js';
import { randomKeyring } from '../controller/secrets/keys.js';
import type { ResolvedBundle } from '../controller/reconcile/driver.js';
import { generateCa, sha256Fingerprint } from '../protocols/pki/ca.js';
import { localServerCertificate } from '../protocols/pki/local-tls.js';
import { createWindowsDriver, recordWindowsResults, renderWindowsCommand } from '../protocols/windows/driver.js';
import { windowsEnrollRoutes } from '../protocols/windows/enroll-routes.js';
import { createWindowsEnrollService } from '../protocols/windows/enroll-service.js';
import { createWindowsMdmService } from '../protocols/windows/mdm-service.js';
import { MDM_PATH, windowsMdmRoutes } from '../protocols/windows/mdm-routes.js';
import { SimulatedWindowsDevice } from '../protocols/windows/simulator/device.js';
import { enrollWindowsDevice, windowsCsr } from '../protocols/windows/simulator/enroll-client.js';
import { encodeServerMessage } from '../protocols/windows/syncml/wire.js';
import { percentile, pool, type Benchmark, type BenchRow } from './harness.js';

const DEVICES = Number(process.env.BENCH_WINDOWS_DEVICES ?? 1000);
const CONCURRENCY = 50;
const ENROLLMENTS = Number(process.env.BENCH_WINDOWS_ENROLLMENTS ?? 100);
const ENROLL_CONCURRENCY = 8;
const quiet = { info: () => {}, warn: () => {}, error: () => {} };


async function freePort(): Promise<number> {
  const s = createTcpServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function openBenchStore(): Promise<Store> {
  const url = process.env.DATABASE_URL;
  return openStore({ ...(url ? { databaseUrl: url, poolSize: 16 } : { dataDir: 'memory' }), schema: `muster_bench_${randomBytes(4).toString('hex')}`, logger: silentLogger, keys: randomKeyring() });
}

const bundle: ResolvedBundle = {
  name: 'bench-baseline',
  version: '1.0.0',
  hash: 'sha256:' + '7'.repeat(64),
  rollout: 'bench',
  spec: { version: '1.0.0', platforms: ['windows'], settings: { passcode: { required: true, minLength: 10, complexity: 'alphanumeric' }, restrictions: { allowCamera: false } } },
};

async function sessions(): Promise<BenchRow[]> {
  const store = await openBenchStore();
  const tls = localServerCertificate();
  const app = Fastify({ https: { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false } });
  let bare: Server | undefined;
  try {
    const ca = generateCa({ keyBits: 2048 });
    const service = createWindowsMdmService({ store, log: quiet, serverUrl: 'https://127.0.0.1/ManagementServer/MDM.svc', renderCommand: (c) => renderWindowsCommand(c, { secret: () => undefined }), onResults: (id, done, tx) => recordWindowsResults(store, id, done, tx) });
    await app.register(windowsMdmRoutes, { service, auth: { modes: ['mtls'], ca }, log: quiet });
    const url = `${await app.listen({ port: 0, host: '127.0.0.1' })}${MDM_PATH}`;

    // One key for every PC, a certificate each from the CA, bound as enrollment leaves it (enrollment is measured below).
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const forgeKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string) as forge.pki.rsa.PublicKey;
    const driver = createWindowsDriver();
    const pcs: Array<{ id: string; certPem: string }> = [];
    for (let i = 0; i < DEVICES; i++) {
      const id = `BENCH${String(i).padStart(6, '0')}${randomBytes(10).toString('hex').toUpperCase()}`;
      const cert = ca.issue({ publicKey: forgeKey, subject: [{ shortName: 'CN', value: id }] });
      await store.devices.upsert({ id, platform: 'windows', attributes: { os: 'windows' } });
      await store.devices.setEnrollment({ deviceId: id, platform: 'windows', status: 'enrolled', state: {} });
      await store.identities.add({ certSha256: sha256Fingerprint(cert), deviceId: id, platform: 'windows', protocol: 'windows-wstep', serialNumber: cert.serialNumber, notAfter: cert.validity.notAfter });
      pcs.push({ id, certPem: forge.pki.certificateToPem(cert) });
    }
    // The bundle's nodes, queued exactly as the reconciler would queue them.
    const desired = (d: { id: string }) => driver.compile([bundle], { id: d.id, platform: 'windows', osVersion: null, model: null });
    await store.transaction((tx) => driver.deliver({ store, tx, secret: () => undefined, nonce: () => 'bench' }, pcs.map((d) => ({ device: { id: d.id, platform: 'windows', osVersion: null, model: null }, actions: driver.diff(desired(d), undefined) }))));
    const queued = (await store.commands.countByState()).pending;

    const make = (managementUrl: string) => pcs.map((d) => new SimulatedWindowsDevice({ managementUrl, deviceId: d.id, certPem: d.certPem, keyPem, caPem: tls.cert }));
    const devices = make(url);
    let messages = 0;
    const muster = await pool(devices, CONCURRENCY, async (d) => {
      const s = await d.sync();
      messages += s.messages;
    });
    const converged = devices.filter((d) => d.tree.get('./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera')?.value === '0').length;
    const perSession = messages / DEVICES;

    // The floor: the same PCs against a server that answers each message with canned SyncML (a Replace, then only a closing status), reading nothing.
    // Placeholders for what a device checks in every answer (its SessionID, and its MsgID as MsgRef), filled in by string replacement.
    const canned = (withCommand: boolean) =>
      encodeServerMessage({
        version: '1.2',
        sessionId: 'SID-PLACEHOLDER',
        msgId: '1',
        target: 'bench',
        source: 'https://127.0.0.1/ManagementServer/MDM.svc',
        body: [{ kind: 'Status', cmdId: '1', msgRef: 'MSG-PLACEHOLDER', cmdRef: '0', cmd: 'SyncHdr', data: '200' }, ...(withCommand ? [{ kind: 'Replace' as const, cmdId: '2', items: [{ target: './Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', data: '0' }] }] : [])],
        final: true,
      });
    const withCommand = canned(true);
    const closing = canned(false);
    const seen = new Map<string, number>();
    bare = createServer({ key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        // A cheap look at three header fields, no parsing: the canned answers stop after as many messages as Muster's sessions had.
        const body = Buffer.concat(chunks).toString('latin1');
        const field = (name: string) => new RegExp(`<${name}>([^<]+)</${name}>`).exec(body)?.[1] ?? '';
        const who = `${/<Source><LocURI>([^<]+)</.exec(body)?.[1] ?? ''}/${field('SessionID')}`;
        const n = (seen.get(who) ?? 0) + 1;
        seen.set(who, n);
        const answer = Buffer.from((n < Math.round(perSession) ? withCommand : closing).replace('SID-PLACEHOLDER', field('SessionID')).replace('MSG-PLACEHOLDER', field('MsgID')));
        res.writeHead(200, { 'content-type': 'application/vnd.syncml.dm+xml', 'content-length': answer.length });
        res.end(answer);
      });
    });
    bare.listen(0, '127.0.0.1');
    await once(bare, 'listening');
    const floorDevices = make(`https://127.0.0.1:${(bare.address() as AddressInfo).port}${MDM_PATH}`);
    let floorMessages = 0;
    const floor = await pool(floorDevices, CONCURRENCY, async (d) => {
      const s = await d.sync();
      floorMessages += s.messages;
    });

    const rate = (wallMs: number) => DEVICES / (wallMs / 1000);
    return [
      {
        name: `OMA-DM sessions over mTLS, ${DEVICES} PCs, ${CONCURRENCY} at once (${store.backend})`,
        value: rate(muster.wallMs),
        unit: 'sessions/s',
        p50: percentile(muster.lat, 50),
        p99: percentile(muster.lat, 99),
        baseline: { name: 'bare node:https, same client, canned answers', value: rate(floor.wallMs), unit: 'sessions/s' },
        extra: { messagesPerSession: Math.round(perSession * 100) / 100, floorMessagesPerSession: Math.round((floorMessages / DEVICES) * 100) / 100, commandsQueued: queued, converged, floorP50Ms: Math.round(percentile(floor.lat, 50) * 10) / 10, floorP99Ms: Math.round(percentile(floor.lat, 99) * 10) / 10, latency: 'per session' },
      },
    ];
  } finally {
    bare?.close();
    await app.close();
    await store.close();
  }
}

async function enrollments(): Promise<BenchRow[]> {
  const store = await openBenchStore();
  const tls = localServerCertificate();
  const app = Fastify({ https: { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false } });
  try {
    const ca = generateCa({ keyBits: 2048 });
    // Every URL a PC is given is built on the public URL, so the port is chosen before the routes mount.
    const port = await freePort();
    const service = createWindowsEnrollService({ store, ca, config: { publicUrl: `https://127.0.0.1:${port}`, credentialDomain: 'bench.example.com' }, log: quiet });
    await app.register(windowsEnrollRoutes, { service, log: quiet });
    await app.listen({ port, host: '127.0.0.1' });
    {
      const creds = await Promise.all(Array.from({ length: ENROLLMENTS }, () => service.issueCredential({ group: 'bench' })));
      let failed = 0;
      let lastError = '';
      const ours = await pool(creds, ENROLL_CONCURRENCY, (c) =>
        enrollWindowsDevice({ discoveryUrl: service.urls.discovery, email: c.username, password: c.password, ca: tls.cert }).catch((e: Error) => {
          failed++;
          lastError = e.message.slice(0, 200);
        }),
      );
      const enrolled = await store.devices.count({ platform: 'windows' });
      // The client's own work, with nothing on the wire: what any server's rate sits under.
      const floor = await pool(creds, ENROLL_CONCURRENCY, async () => windowsCsr({ commonName: 'bench' }));
      const rate = (r: { wallMs: number }, n: number) => n / (r.wallMs / 1000);
      return [
        {
          name: `enrollments (discovery, policy, WSTEP with a fresh key), ${ENROLLMENTS}, ${ENROLL_CONCURRENCY} at once (${store.backend})`,
          value: rate(ours, ENROLLMENTS - failed),
          unit: 'enrollments/s',
          p50: percentile(ours.lat, 50),
          p99: percentile(ours.lat, 99),
          baseline: { name: 'the client alone: key generation + CSR', value: rate(floor, ENROLLMENTS), unit: 'CSRs/s' },
          extra: { failed, enrolled, ...(lastError ? { error: lastError } : {}) },
        },
      ];
    }
  } finally {
    await app.close();
    await store.close();
  }
}

export const windowsBenchmark: Benchmark = {
  name: 'windows',
  description: `OMA-DM sessions with ${DEVICES} simulated PCs over mTLS vs a bare node:https server; enrollments end to end vs the client's own floor`,
  async run() {
    return [...(await sessions()), ...(await enrollments())];
  },
};
