// The forged proxy header. With header device auth, the device certificate
// arrives in a header a TLS-terminating proxy sets. The certificate is public
// (it travels in every Mdm-Signature), so an attacker who reaches the
// listener directly and sends the header would be that device. The header is
// believed only from the --trusted-proxy addresses: from any other peer the
// request is refused 403 and logged, whatever else it carries, while a request
// without the header goes on to the other configured modes.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../controller/server/app.js';
import { createPino, logOf } from '../../controller/server/log.js';
import { trustedProxies } from '../../controller/server/trusted-proxy.js';
import { Controller } from '../../controller/serve/controller.js';
import { createDirSource } from '../../controller/sources/dir-source.js';
import type { Store } from '../../controller/store/index.js';
import { DeviceAuthError, authenticateDevice } from '../../protocols/apple/auth.js';
import { createAppleMdm } from '../../protocols/apple/index.js';
import { encodePlist } from '../../protocols/apple/plist.js';
import { CertificateAuthority, generateCa } from '../../protocols/pki/ca.js';
import { WindowsAuthError, authenticateWindowsDevice } from '../../protocols/windows/auth.js';
import { createWindowsMdm } from '../../protocols/windows/index.js';
import { rstEnvelope } from '../../protocols/windows/simulator/enroll-client.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { writeXml } from '../../protocols/windows/xml.js';
import { Clock, reconcilerFor } from '../reconcile/helpers.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { missingTool } from '../support/tools.js';
import { enrollDevice, recordingLog } from '../windows/session-support.js';

const PROXY = '10.0.0.5';
const ATTACKER = '203.0.113.9';
const proxies = trustedProxies(['10.0.0.0/24']);
const trustedProxy = (a: string) => proxies.has(a);
const header = (der: Buffer) => `:${der.toString('base64')}:`;
const sha256 = (der: Buffer) => createHash('sha256').update(der).digest('hex');

function deviceCert(ca: CertificateAuthority, cn: string) {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = ca.issue({ publicKey: keys.publicKey, subject: [{ name: 'commonName', value: cn }] });
  return { cert, der: CertificateAuthority.toDer(cert), pem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey) };
}

describe('a forged client-certificate header', () => {
  let ca: CertificateAuthority;
  let device: ReturnType<typeof deviceCert>;
  beforeAll(() => {
    ca = generateCa({ keyBits: 2048 });
    device = deviceCert(ca, 'device');
  });

  describe('authentication functions', () => {
    it('Apple: the header counts from a trusted proxy only', () => {
      const h = { 'client-cert': header(device.der) };
      expect(authenticateDevice({ headers: h, body: Buffer.alloc(0), socket: { remoteAddress: PROXY } }, { modes: ['header'], ca, trustedProxy })).toEqual({ certSha256: sha256(device.der), via: 'header' });
      const refused = (() => {
        try {
          authenticateDevice({ headers: h, body: Buffer.alloc(0), socket: { remoteAddress: ATTACKER } }, { modes: ['header'], ca, trustedProxy });
        } catch (e) {
          return e;
        }
      })();
      expect(refused).toBeInstanceOf(DeviceAuthError);
      expect((refused as DeviceAuthError).untrustedPeer).toBe(ATTACKER);
      // No trusted list at all: header mode trusts no one.
      expect(() => authenticateDevice({ headers: h, body: Buffer.alloc(0), socket: { remoteAddress: PROXY } }, { modes: ['header'], ca })).toThrow(/not a trusted proxy/);
      // A dual-stack listener reports the proxy as ::ffff:10.0.0.5.
      expect(authenticateDevice({ headers: h, body: Buffer.alloc(0), socket: { remoteAddress: `::ffff:${PROXY}` } }, { modes: ['header'], ca, trustedProxy }).via).toBe('header');
    });

    it('Apple: a forged header is refused even when the request also carries a valid proof, and no header means the other modes', () => {
      // mTLS stands in for any other mode: it would accept this request on its own.
      const socket = { remoteAddress: ATTACKER, getPeerCertificate: () => ({ raw: device.der }) };
      expect(() => authenticateDevice({ headers: { 'client-cert': header(device.der) }, body: Buffer.alloc(0), socket }, { modes: ['mtls', 'header'], ca, trustedProxy })).toThrow(/203\.0\.113\.9, which is not a trusted proxy/);
      expect(authenticateDevice({ headers: {}, body: Buffer.alloc(0), socket }, { modes: ['header', 'mtls'], ca, trustedProxy }).via).toBe('mtls');
    });

    it('Windows: the header counts from a trusted proxy only; a forged one is refused even beside a valid TLS certificate', () => {
      const h = { 'client-cert': header(device.der) };
      expect(authenticateWindowsDevice({ headers: h, socket: { remoteAddress: PROXY } }, { modes: ['header'], ca, trustedProxy }).via).toBe('header');
      expect(() => authenticateWindowsDevice({ headers: h, socket: { remoteAddress: ATTACKER } }, { modes: ['header'], ca, trustedProxy })).toThrow(WindowsAuthError);
      const socket = { remoteAddress: ATTACKER, getPeerCertificate: () => ({ raw: device.der }) };
      expect(() => authenticateWindowsDevice({ headers: h, socket }, { modes: ['mtls', 'header'], ca, trustedProxy })).toThrow(/not a trusted proxy/);
      expect(authenticateWindowsDevice({ headers: {}, socket }, { modes: ['header', 'mtls'], ca, trustedProxy }).via).toBe('mtls');
    });

    it('refuses a header sent twice (a proxy that appends instead of overwriting), even from the proxy', () => {
      const other = deviceCert(ca, 'other');
      // node joins a repeated header with ", "; an array is what some frameworks hand over.
      for (const value of [`${header(other.der)}, ${header(device.der)}`, [header(other.der), header(device.der)]]) {
        expect(() => authenticateWindowsDevice({ headers: { 'client-cert': value }, socket: { remoteAddress: PROXY } }, { modes: ['header'], ca, trustedProxy })).toThrow(/more than once/);
      }
      const pems = `${encodeURIComponent(other.pem)}, ${encodeURIComponent(device.pem)}`;
      expect(() => authenticateDevice({ headers: { 'client-cert': pems }, body: Buffer.alloc(0), socket: { remoteAddress: PROXY } }, { modes: ['header'], ca, trustedProxy })).toThrow(/more than once/);
    });
  });

  describe('over HTTP', () => {
    let tdb: TestDatabase;
    let store: Store;
    beforeAll(async () => {
      tdb = await testDatabase('pglite');
      store = await tdb.open();
    });
    afterAll(async () => {
      await tdb?.cleanup();
    });

    describe('Apple check-in and command endpoints (--device-auth header,signature)', () => {
      const skip = missingTool('openssl', 'openssl');
      const dir = mkdtempSync(join(tmpdir(), 'muster-proxy-header-'));
      const UDID = '00008030-0000000000000F0E';
      const log = recordingLog();
      let app: FastifyInstance;
      let apple: Awaited<ReturnType<typeof createAppleMdm>>;
      const checkin = (remoteAddress: string, dict: Record<string, unknown>, headers: Record<string, string> = {}) =>
        app.inject({ method: 'PUT', url: '/mdm/apple/checkin', remoteAddress, payload: encodePlist({ UDID, ...dict }), headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin', ...headers } });
      const authenticate = { MessageType: 'Authenticate', Topic: 'com.apple.mgmt.External.test', SerialNumber: 'C02PROXY' };
      const sign = (body: Buffer) => {
        writeFileSync(join(dir, 'dev.pem'), device.pem);
        writeFileSync(join(dir, 'dev.key'), device.keyPem);
        writeFileSync(join(dir, 'body'), body);
        execFileSync('openssl', ['cms', '-sign', '-binary', '-noattr', '-md', 'sha1', '-in', join(dir, 'body'), '-signer', join(dir, 'dev.pem'), '-inkey', join(dir, 'dev.key'), '-outform', 'DER', '-out', join(dir, 'sig')]);
        return readFileSync(join(dir, 'sig')).toString('base64');
      };

      beforeAll(async () => {
        await store.identities.add({ certSha256: sha256(device.der), platform: 'apple', protocol: 'apple-scep', serialNumber: device.cert.serialNumber, notAfter: device.cert.validity.notAfter });
        apple = await createAppleMdm(store, { ca, topic: 'com.apple.mgmt.External.test', publicUrl: 'https://mdm.example.com', deviceAuth: ['header', 'signature'], trustedProxy, secret: () => undefined, log: { ...log, error: log.warn } });
        app = Fastify();
        await app.register(async (scope) => apple.register(scope));
      });
      afterAll(async () => {
        await app?.close();
        await apple?.close();
        rmSync(dir, { recursive: true, force: true });
      });

      it('refuses 403 (not 401) a check-in with a forged header from a peer that is not a proxy, logs the peer, and enrolls nothing', async () => {
        const r = await checkin(ATTACKER, authenticate, { 'client-cert': header(device.der) });
        expect(r.statusCode).toBe(403);
        expect(await store.devices.getEnrollment(UDID)).toBeUndefined();
        expect(log.lines).toContainEqual(expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/not a trusted proxy/), fields: expect.objectContaining({ peer: ATTACKER }) }));
        // A command report with a body it cannot read would be an empty 200: a forged header is refused first.
        const report = await app.inject({ method: 'PUT', url: '/mdm/apple/connect', remoteAddress: ATTACKER, payload: 'not a plist', headers: { 'content-type': 'application/x-apple-aspen-mdm', 'client-cert': header(device.der) } });
        expect(report.statusCode).toBe(403);
      });

      it.skipIf(!!skip)('refuses the forged header even beside a valid Mdm-Signature, and takes the signature alone from the same peer', async () => {
        const body = encodePlist({ UDID, ...authenticate });
        const put = (headers: Record<string, string>) => app.inject({ method: 'PUT', url: '/mdm/apple/checkin', remoteAddress: ATTACKER, payload: body, headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin', ...headers } });
        const signature = sign(body);
        expect((await put({ 'mdm-signature': signature, 'client-cert': header(device.der) })).statusCode).toBe(403);
        expect((await put({ 'mdm-signature': signature })).statusCode).toBe(200);
      });

      it('believes the header from the proxy', async () => {
        const r = await checkin(PROXY, authenticate, { 'client-cert': header(device.der) });
        expect(r.statusCode).toBe(200);
        expect(await store.devices.getEnrollment(UDID)).toMatchObject({ platform: 'apple' });
      });
    });

    describe('Windows OMA-DM and enrollment (--windows-device-auth header)', () => {
      const log = recordingLog();
      let app: FastifyInstance;
      let url: string;
      let enrolled: Awaited<ReturnType<typeof enrollDevice>>;
      // The simulated PCs reach the listener from 127.0.0.1: trusted or not as each test says.
      let trusting = trustedProxies(['10.0.0.0/24']);
      const pc = () => new SimulatedWindowsDevice({ managementUrl: `${url}/ManagementServer/MDM.svc`, deviceId: enrolled.deviceId, certPem: enrolled.certPem, keyPem: '', caPem: '', certHeader: 'client-cert' });

      beforeAll(async () => {
        enrolled = await enrollDevice(store, ca, '0000000000000000000000000000PRXY');
        const windows = createWindowsMdm(store, { ca, publicUrl: 'https://mdm.example.com', credentialDomain: 'example.com', deviceAuth: ['header'], trustedProxy: (a) => trusting.has(a), secret: () => undefined, log: { ...log, error: log.warn } });
        app = Fastify();
        await app.register(async (scope) => windows.register(scope));
        url = await app.listen({ port: 0, host: '127.0.0.1' });
      });
      afterAll(async () => {
        await app?.close();
      });

      it('refuses 403 an OMA-DM session that forwards a device certificate from a peer that is not a proxy (the attacker has no key)', async () => {
        trusting = trustedProxies(['10.0.0.0/24']);
        await expect(pc().sync()).rejects.toMatchObject({ status: 403 });
        expect(await store.windowsSessions.get(enrolled.deviceId, '1')).toBeUndefined();
        expect(log.lines).toContainEqual(expect.objectContaining({ level: 'warn', fields: expect.objectContaining({ peer: '127.0.0.1', url: '/ManagementServer/MDM.svc' }) }));
      });

      it('runs the session when the same header comes from the proxy', async () => {
        trusting = trustedProxies(['127.0.0.1']);
        const s = await pc().sync();
        expect(s.messages).toBeGreaterThan(0);
        expect((await store.windowsSessions.get(enrolled.deviceId, '1'))?.ended).toBe(true);
      });

      it('refuses a certificate renewal with a forged header; from the proxy the header reaches the renewal, which still needs the key', async () => {
        const body = writeXml(rstEnvelope({ to: 'https://mdm.example.com/EnrollmentServer/Enrollment.svc', csrDer: Buffer.from('not signed with the device key'), context: [['DeviceID', enrolled.deviceId]], renew: true }), { declaration: true });
        const renew = (remoteAddress: string, headers: Record<string, string> = {}) =>
          app.inject({ method: 'POST', url: '/EnrollmentServer/Enrollment.svc', remoteAddress, payload: body, headers: { 'content-type': 'application/soap+xml; charset=utf-8', ...headers } });
        trusting = trustedProxies(['10.0.0.0/24']);
        const forged = await renew(ATTACKER, { 'client-cert': header(new X509Certificate(enrolled.certPem).raw) });
        expect(forged.statusCode).toBe(403);
        // Without the header the request is judged as any renewal: no certificate on the connection.
        const bare = await renew(ATTACKER);
        expect(bare.statusCode).toBe(500);
        expect(bare.body).toMatch(/must come with the current device certificate/);
        // From the proxy the certificate is read, and the PKCS#7 it must have signed is what fails.
        const viaProxy = await renew(PROXY, { 'client-cert': header(new X509Certificate(enrolled.certPem).raw) });
        expect(viaProxy.statusCode).toBe(500);
        expect(viaProxy.body).not.toMatch(/must come with the current device certificate/);
      });
    });

    it("sets req.ip from X-Forwarded-For only on a trusted proxy's connections", async () => {
      const pino = createPino({ level: 'silent' });
      const reconciler = reconcilerFor(store, new Clock());
      const controller = new Controller({ store, source: createDirSource('/nonexistent'), reconciler, log: logOf(pino) });
      const app = await buildApp({ store, reconciler, controller, drivers: new Map(), logger: pino, trustProxy: trustedProxy, protocols: [async (scope) => void scope.get('/ip', async (req) => ({ ip: req.ip }))] });
      try {
        const ip = async (remoteAddress: string) => (await app.inject({ url: '/ip', remoteAddress, headers: { 'x-forwarded-for': '198.51.100.7' } })).json().ip;
        expect(await ip(PROXY)).toBe('198.51.100.7');
        expect(await ip(ATTACKER)).toBe(ATTACKER);
      } finally {
        await app.close();
      }
    });
  });
});
