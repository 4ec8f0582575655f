// The SCEP CA without a network: the CA and its key at rest, challenges, the
// pure handler (PKCSReq and RenewalReq round trips built in the test,
// failures, malformed input) and the fastify plugin through inject. Replies
// are also checked with openssl when it is installed.
import { X509Certificate, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import forge from 'node-forge';
import { octets, parseDer, printable, toBuffer, toDer } from '../../protocols/pki/asn1.js';
import { attribute, buildSignedData, CIPHERS, readSignedData } from '../../protocols/apple/scep/cms.js';
import {
  buildCsr,
  buildPkiRequest,
  CA_CAPS,
  CaError,
  CertificateAuthority,
  createScepHandler,
  FailInfo,
  generateCa,
  loadOrCreateCa,
  OneTimeChallenges,
  readCertRep,
  scepRoutes,
  selfSignedCert,
  sha256Fingerprint,
  StaticChallenge,
  type ScepIssued,
  type ScepOptions,
  type ScepRequest,
} from '../../protocols/apple/scep/index.js';
import { missingTool } from '../support/tools.js';

const PASS = 'correct horse battery staple';
const DAY = 86_400_000;
const noOpenssl = missingTool('openssl', 'openssl');

interface Device {
  key: KeyObject;
  self: Buffer;
}
const newDevice = (cn: string): Device => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { key: privateKey, self: selfSignedCert(privateKey, cn) };
};

let ca: CertificateAuthority;
let dev: Device;
const dir = mkdtempSync(join(tmpdir(), 'muster-scep-'));

beforeAll(() => {
  ca = generateCa();
  dev = newDevice('device-1');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function handlerWith(o: Partial<ScepOptions> = {}): { handle: (r: ScepRequest) => ReturnType<ReturnType<typeof createScepHandler>>; issued: ScepIssued[] } {
  const issued: ScepIssued[] = [];
  const handle = createScepHandler({ ca, challenges: new StaticChallenge('s3cret'), onIssued: (i) => void issued.push(i), ...o });
  return { handle, issued };
}

const post = (body: Buffer): ScepRequest => ({ method: 'POST', operation: 'PKIOperation', message: undefined, body });

interface ReqOptions {
  challenge?: string;
  cipher?: keyof typeof CIPHERS;
  messageType?: 'PKCSReq' | 'RenewalReq';
  /** The certificate signing the request (default: the device's self-signed one). */
  signer?: Buffer;
  recipient?: Buffer;
  cn?: string;
}
function request(d: Device, o: ReqOptions = {}) {
  const csrDer = buildCsr(d.key, [{ shortName: 'CN', value: o.cn ?? 'device-1' }, { shortName: 'O', value: 'Fleet' }], o.challenge);
  return buildPkiRequest({
    messageType: o.messageType ?? 'PKCSReq',
    csrDer,
    signerCertDer: o.signer ?? d.self,
    signerKey: d.key,
    caCertDer: o.recipient ?? ca.certDer,
    cipher: o.cipher ?? 'aes256',
  });
}
const reply = (body: Buffer, d: Device, signer = d.self) => readCertRep(body, { caCertDer: ca.certDer, recipientCertDer: signer, recipientKey: d.key });

describe('certificate authority', () => {
  it('creates the CA on first start with the key encrypted at rest, then loads the same CA', async () => {
    const keyFile = join(dir, 'ca', 'key.pem');
    const certFile = join(dir, 'ca', 'cert.pem');
    const first = await loadOrCreateCa({ keyFile, certFile, passphrase: PASS, subject: { commonName: 'Test CA', organization: 'Tests' } });
    const pem = readFileSync(keyFile, 'utf8');
    expect(pem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    expect(pem).not.toContain('BEGIN PRIVATE KEY');
    expect(() => createPrivateKey(pem)).toThrow();
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(first.cert.subject.getField('CN').value).toBe('Test CA');
    const again = await loadOrCreateCa({ keyFile, certFile, passphrase: PASS });
    expect(again.fingerprint).toBe(first.fingerprint);
  });

  it('refuses a wrong passphrase with a clear error', async () => {
    const keyFile = join(dir, 'ca', 'key.pem');
    const certFile = join(dir, 'ca', 'cert.pem');
    await expect(loadOrCreateCa({ keyFile, certFile, passphrase: 'wrong' })).rejects.toThrow(CaError);
    await expect(loadOrCreateCa({ keyFile, certFile, passphrase: 'wrong' })).rejects.toThrow(/key\.pem could not be decrypted: wrong passphrase/);
    await expect(loadOrCreateCa({ keyFile, certFile, passphrase: '' })).rejects.toThrow(/passphrase .* is required/);
  });

  it.skipIf(!!noOpenssl)('writes standard PKCS#8 that openssl decrypts with the passphrase', () => {
    const out = execFileSync('openssl', ['pkey', '-in', join(dir, 'ca', 'key.pem'), '-passin', `pass:${PASS}`, '-noout', '-text'], { encoding: 'utf8' });
    expect(out).toContain('Private-Key: (2048 bit');
  });

  it('never creates a new CA when one of the two files is missing', async () => {
    const d = mkdtempSync(join(dir, 'half-'));
    writeFileSync(join(d, 'cert.pem'), ca.certPem);
    await expect(loadOrCreateCa({ keyFile: join(d, 'key.pem'), certFile: join(d, 'cert.pem'), passphrase: PASS })).rejects.toThrow(/CA key .* does not/);
  });

  it('accepts key and certificate as PEM strings (from a secret)', async () => {
    const fromSecret = await loadOrCreateCa({ keyPem: ca.exportKeyPem(PASS), certPem: ca.certPem, passphrase: PASS });
    expect(fromSecret.fingerprint).toBe(ca.fingerprint);
    await expect(loadOrCreateCa({ keyPem: ca.exportKeyPem(PASS), certPem: ca.certPem, passphrase: 'nope' })).rejects.toThrow(/wrong passphrase/);
    const other = generateCa();
    await expect(loadOrCreateCa({ keyPem: other.exportKeyPem(PASS), certPem: ca.certPem, passphrase: PASS })).rejects.toThrow(/does not belong/);
  });

  it('issues client certificates: random positive 16-byte serial, clientAuth, key usage, SKI/AKI, chained by raw issuer bytes', () => {
    const csr = forge.pki.certificationRequestFromAsn1(parseDer(buildCsr(dev.key, [{ shortName: 'CN', value: 'leaf' }]), 'csr'), true);
    const a = ca.issue({ csr, validityDays: 30 });
    const b = ca.issue({ csr });
    for (const c of [a, b]) expect(c.serialNumber).toMatch(/^[4-7][0-9a-f]{31}$/);
    expect(a.serialNumber).not.toBe(b.serialNumber);
    const der = CertificateAuthority.toDer(a);
    const x = new X509Certificate(der);
    expect(x.verify(ca.x509.publicKey)).toBe(true);
    expect(x.checkIssued(ca.x509)).toBe(true);
    expect(x.issuer).toBe(ca.x509.subject);
    expect(x.subject).toBe('CN=leaf');
    expect(x.ca).toBe(false);
    expect(x.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // node's keyUsage is the EKU list: clientAuth
    expect(Date.parse(x.validTo) - Date.now()).toBeLessThan(31 * DAY);
    const ku = a.getExtension('keyUsage') as { digitalSignature: boolean; keyEncipherment: boolean; keyCertSign: boolean; critical: boolean };
    expect([ku.digitalSignature, ku.keyEncipherment, ku.keyCertSign, ku.critical]).toEqual([true, true, false, true]);
    const caSki = (ca.cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string }).subjectKeyIdentifier;
    const aki = a.getExtension('authorityKeyIdentifier') as { value: string };
    expect(Buffer.from(aki.value, 'binary').toString('hex')).toBe('30168014' + caSki);
    expect((a.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string }).subjectKeyIdentifier).toHaveLength(40);
    expect(sha256Fingerprint(der)).toBe(x.fingerprint256.replace(/:/g, '').toLowerCase());
    expect(sha256Fingerprint(a)).toBe(sha256Fingerprint(x.toString()));
  });
});

describe('challenges', () => {
  it('a static challenge is compared exactly and never used up', async () => {
    const s = new StaticChallenge('s3cret');
    expect(await s.verify('s3cret')).toBe(true);
    expect(await s.verify('s3cret ')).toBe(false);
    expect(await s.verify('')).toBe(false);
    expect(await s.consume('s3cret')).toBe(true);
    expect(await s.consume('s3cret')).toBe(true);
  });

  it('a one-time challenge is accepted once, and not after it expires', async () => {
    let now = 1_000_000;
    const c = new OneTimeChallenges({ ttlMs: 60_000, now: () => now });
    const one = c.issue();
    expect(one).toMatch(/^[0-9a-f]{40}$/);
    expect(await c.verify(one)).toBe(true);
    expect(await c.consume(one)).toBe(true);
    expect(await c.consume(one)).toBe(false);
    expect(await c.verify(one)).toBe(false);
    const two = c.issue();
    now += 60_001;
    expect(await c.verify(two)).toBe(false);
    expect(await c.consume(two)).toBe(false);
    expect(await c.consume('never-issued')).toBe(false);
    expect(c.sweep()).toBe(0);
  });
});

describe('SCEP handler', () => {
  it('GetCACaps lists what iOS needs and RFC 8894 promises', async () => {
    const { handle } = handlerWith();
    const r = await handle({ method: 'GET', operation: 'GetCACaps', message: undefined, body: undefined });
    expect(r.status).toBe(200);
    expect(r.contentType).toBe('text/plain');
    expect(r.body.toString().trim().split('\n')).toEqual(['POSTPKIOperation', 'SHA-256', 'AES', 'DES3', 'SCEPStandard', 'Renewal']);
    expect(CA_CAPS).not.toContain('SHA-1');
  });

  it('GetCACert answers the CA certificate DER, with or without message=', async () => {
    const { handle } = handlerWith();
    for (const message of [undefined, 'MusterCA']) {
      const r = await handle({ method: 'GET', operation: 'GetCACert', message, body: undefined });
      expect(r.status).toBe(200);
      expect(r.contentType).toBe('application/x-x509-ca-cert');
      expect(r.body.equals(ca.certDer)).toBe(true);
    }
  });

  it('refuses a missing or unknown operation with 400', async () => {
    const { handle } = handlerWith();
    expect((await handle({ method: 'GET', operation: undefined, message: undefined, body: undefined })).status).toBe(400);
    const r = await handle({ method: 'GET', operation: 'GetCRL<script>', message: undefined, body: undefined });
    expect(r.status).toBe(400);
    expect(r.body.toString()).toMatch(/^unknown operation "GetCRL<script>"\n$/);
  });

  for (const cipher of ['aes128', 'aes256', 'des3'] as const) {
    it(`PKCSReq with ${cipher}: a CertRep with the certificate, encrypted back with the same cipher`, async () => {
      const { handle, issued } = handlerWith();
      const req = request(dev, { challenge: 's3cret', cipher });
      const r = await handle(post(req.der));
      expect(r.status).toBe(200);
      expect(r.contentType).toBe('application/x-pki-message');
      const rep = reply(r.body, dev);
      expect(rep.status).toBe('SUCCESS');
      expect(rep.transactionId).toBe(req.transactionId);
      expect(rep.recipientNonce?.equals(req.senderNonce)).toBe(true);
      expect(rep.senderNonce).toHaveLength(16);
      expect(rep.senderNonce?.equals(req.senderNonce)).toBe(false);
      expect(rep.cipherOid).toBe(CIPHERS[cipher]!.oid);
      expect(rep.certificates).toHaveLength(1);
      const cert = new X509Certificate(rep.certificates[0]!);
      expect(cert.verify(ca.x509.publicKey)).toBe(true);
      expect(cert.subject).toBe('CN=device-1\nO=Fleet');
      expect(cert.publicKey.export({ format: 'der', type: 'spki' })).toEqual(new X509Certificate(dev.self).publicKey.export({ format: 'der', type: 'spki' }));
      expect(issued).toHaveLength(1);
      expect(issued[0]).toMatchObject({ csrSubject: 'CN=device-1, O=Fleet', transactionId: req.transactionId, challengeUsed: 's3cret', messageType: 'PKCSReq', fingerprint: sha256Fingerprint(rep.certificates[0]!) });
    });
  }

  it.skipIf(!!noOpenssl)('the CertRep is standard CMS: openssl verifies it against the CA and decrypts the envelope', async () => {
    const { handle } = handlerWith();
    const r = await handle(post(request(dev, { challenge: 's3cret', cipher: 'aes128' }).der));
    const d = mkdtempSync(join(dir, 'openssl-'));
    writeFileSync(join(d, 'rep.der'), r.body);
    writeFileSync(join(d, 'ca.pem'), ca.certPem);
    writeFileSync(join(d, 'self.pem'), new X509Certificate(dev.self).toString());
    writeFileSync(join(d, 'key.pem'), dev.key.export({ type: 'pkcs8', format: 'pem' }));
    execFileSync('openssl', ['cms', '-verify', '-inform', 'DER', '-in', join(d, 'rep.der'), '-CAfile', join(d, 'ca.pem'), '-binary', '-out', join(d, 'env.der')], { stdio: 'pipe' });
    execFileSync('openssl', ['cms', '-decrypt', '-inform', 'DER', '-in', join(d, 'env.der'), '-recip', join(d, 'self.pem'), '-inkey', join(d, 'key.pem'), '-binary', '-out', join(d, 'certs.der')], { stdio: 'pipe' });
    const pem = execFileSync('openssl', ['pkcs7', '-inform', 'DER', '-in', join(d, 'certs.der'), '-print_certs'], { encoding: 'utf8' });
    writeFileSync(join(d, 'cert.pem'), pem);
    expect(execFileSync('openssl', ['verify', '-CAfile', join(d, 'ca.pem'), join(d, 'cert.pem')], { encoding: 'utf8' })).toContain(': OK');
  });

  it('a wrong challenge gets a FAILURE CertRep with badRequest and no certificate', async () => {
    const { handle, issued } = handlerWith();
    for (const challenge of ['wrong', undefined]) {
      const req = request(dev, { challenge });
      const r = await handle(post(req.der));
      expect(r.status).toBe(200);
      const rep = reply(r.body, dev);
      expect(rep).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest, transactionId: req.transactionId, certificates: [] });
      expect(rep.recipientNonce?.equals(req.senderNonce)).toBe(true);
      expect(readSignedData(r.body, Infinity).content).toHaveLength(0);
    }
    expect(issued).toHaveLength(0);
  });

  it('a one-time challenge works once; the second request with it fails', async () => {
    const challenges = new OneTimeChallenges();
    const { handle, issued } = handlerWith({ challenges });
    const challenge = challenges.issue();
    expect(reply((await handle(post(request(dev, { challenge }).der))).body, dev).status).toBe('SUCCESS');
    const again = reply((await handle(post(request(dev, { challenge }).der))).body, dev);
    expect(again).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest, certificates: [] });
    expect(issued).toHaveLength(1);
  });

  it('a malformed request does not use up a one-time challenge', async () => {
    const challenges = new OneTimeChallenges();
    const { handle } = handlerWith({ challenges });
    const challenge = challenges.issue();
    const other = generateCa();
    const misdirected = request(dev, { challenge, recipient: other.certDer });
    expect(reply((await handle(post(misdirected.der))).body, dev)).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badMessageCheck });
    expect(await challenges.verify(challenge)).toBe(true);
  });

  it('RenewalReq signed with a current certificate from this CA: a new certificate, no challenge', async () => {
    const { handle, issued } = handlerWith();
    const first = reply((await handle(post(request(dev, { challenge: 's3cret' }).der))).body, dev).certificates[0]!;
    const renewal = request(dev, { messageType: 'RenewalReq', signer: first });
    const rep = reply((await handle(post(renewal.der))).body, dev, first);
    expect(rep.status).toBe('SUCCESS');
    expect(new X509Certificate(rep.certificates[0]!).serialNumber).not.toBe(new X509Certificate(first).serialNumber);
    expect(issued[1]).toMatchObject({ messageType: 'RenewalReq', challengeUsed: undefined, renewalOf: sha256Fingerprint(first) });
  });

  it('RenewalReq with a foreign, an expired or a refused certificate fails', async () => {
    const foreign = generateCa();
    const forgeCsr = forge.pki.certificationRequestFromAsn1(parseDer(buildCsr(dev.key, [{ shortName: 'CN', value: 'device-1' }]), 'csr'), true);
    const foreignCert = CertificateAuthority.toDer(foreign.issue({ csr: forgeCsr }));
    const past = await loadOrCreateCa({ keyPem: ca.exportKeyPem(PASS), certPem: ca.certPem, passphrase: PASS, now: () => new Date(Date.now() - 60 * DAY) });
    const expiredCert = CertificateAuthority.toDer(past.issue({ csr: forgeCsr, validityDays: 30 }));
    const currentCert = CertificateAuthority.toDer(ca.issue({ csr: forgeCsr }));
    const refusing = handlerWith({ renewalAllowed: (fp) => fp !== sha256Fingerprint(currentCert) });
    for (const [signer, h] of [
      [foreignCert, handlerWith()],
      [expiredCert, handlerWith()],
      [currentCert, refusing],
    ] as const) {
      const rep = reply((await h.handle(post(request(dev, { messageType: 'RenewalReq', signer }).der))).body, dev, signer);
      expect(rep).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest, certificates: [] });
      expect(h.issued).toHaveLength(0);
    }
  });

  it('a tampered signature is a FAILURE with badMessageCheck', async () => {
    const { handle, issued } = handlerWith();
    const der = Buffer.from(request(dev, { challenge: 's3cret' }).der);
    der.writeUInt8(der.readUInt8(der.length - 10) ^ 0xff, der.length - 10); // inside the signature, the last field
    expect(reply((await handle(post(der))).body, dev)).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badMessageCheck });
    expect(issued).toHaveLength(0);
  });

  it('unsupported message types get badRequest', async () => {
    const { handle } = handlerWith();
    const der = buildSignedData({
      content: Buffer.alloc(0),
      signerCert: parseDer(dev.self, 'self'),
      sign: () => Buffer.alloc(256),
      attributes: [attribute('2.16.840.1.113733.1.9.2', printable('22')), attribute('2.16.840.1.113733.1.9.7', printable('tx')), attribute('2.16.840.1.113733.1.9.5', octets('0123456789abcdef'))],
      certificates: [parseDer(dev.self, 'self')],
    });
    expect(reply((await handle(post(der))).body, dev)).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest, transactionId: 'tx' });
  });

  it('malformed, oversized and deeply nested messages get 400, never a stack trace', async () => {
    const { handle } = handlerWith({ maxBodyBytes: 4096 });
    const nested = (depth: number): Buffer => {
      let b = Buffer.from([0x05, 0x00]);
      for (let i = 0; i < depth; i++) {
        const len = b.length < 128 ? [b.length] : b.length < 256 ? [0x81, b.length] : [0x82, b.length >> 8, b.length & 0xff];
        b = Buffer.concat([Buffer.from([0x30, ...len]), b]);
      }
      return b;
    };
    const noScepAttrs = buildSignedData({ content: Buffer.from('x'), signerCert: parseDer(dev.self, 'self'), sign: () => Buffer.alloc(256), attributes: [], certificates: [] });
    const cases: Buffer[] = [Buffer.from('garbage'), Buffer.alloc(0), Buffer.alloc(5000, 0x30), nested(100), toBuffer(toDer(parseDer(ca.certDer, 'ca'))), noScepAttrs, Buffer.concat([request(dev).der, Buffer.from([0])])];
    for (const body of cases) {
      const r = await handle(post(body));
      expect(r.status).toBe(400);
      expect(r.contentType).toMatch(/^text\/plain/);
      expect(r.body.toString()).toMatch(/^malformed SCEP request: [^\n]*\n$/);
      expect(r.body.toString()).not.toMatch(/\bat .*\.ts:\d+/);
    }
    for (const message of [undefined, 'not base64!', 'A'.repeat(10_000)]) {
      expect((await handle({ method: 'GET', operation: 'PKIOperation', message, body: undefined })).status).toBe(400);
    }
  });

  it('a store failure while recording the certificate is a 500 without details', async () => {
    const { handle } = handlerWith({
      onIssued: () => {
        throw new Error('connection refused to 10.0.0.5');
      },
    });
    const r = await handle(post(request(dev, { challenge: 's3cret' }).der));
    expect(r.status).toBe(500);
    expect(r.body.toString()).toBe('internal error\n');
  });
});

describe('SCEP fastify plugin', () => {
  let app: FastifyInstance;
  const issued: ScepIssued[] = [];
  beforeAll(async () => {
    app = Fastify();
    await app.register(scepRoutes, { ca, challenges: new StaticChallenge('s3cret'), onIssued: (i) => void issued.push(i), maxBodyBytes: 16 * 1024 });
  });
  afterAll(() => app.close());

  it('serves GetCACaps and GetCACert on /mdm/apple/scep', async () => {
    const caps = await app.inject({ method: 'GET', url: '/mdm/apple/scep?operation=GetCACaps' });
    expect(caps.statusCode).toBe(200);
    expect(caps.body).toContain('POSTPKIOperation');
    const cert = await app.inject({ method: 'GET', url: '/mdm/apple/scep?operation=GetCACert&message=ca' });
    expect(cert.headers['content-type']).toBe('application/x-x509-ca-cert');
    expect(cert.rawPayload.equals(ca.certDer)).toBe(true);
  });

  it('PKIOperation by POST (raw body) and by GET (base64 message, escaped or not)', async () => {
    const viaPost = await app.inject({ method: 'POST', url: '/mdm/apple/scep?operation=PKIOperation', headers: { 'content-type': 'application/x-pki-message' }, payload: request(dev, { challenge: 's3cret' }).der });
    expect(viaPost.statusCode).toBe(200);
    expect(viaPost.headers['content-type']).toBe('application/x-pki-message');
    expect(reply(viaPost.rawPayload, dev).status).toBe('SUCCESS');
    const octet = await app.inject({ method: 'POST', url: '/mdm/apple/scep?operation=PKIOperation', headers: { 'content-type': 'application/octet-stream' }, payload: request(dev, { challenge: 's3cret' }).der });
    expect(reply(octet.rawPayload, dev).status).toBe('SUCCESS');
    const b64 = request(dev, { challenge: 's3cret', cipher: 'des3' }).der.toString('base64');
    const escaped = await app.inject({ method: 'GET', url: `/mdm/apple/scep?operation=PKIOperation&message=${encodeURIComponent(b64)}` });
    expect(reply(escaped.rawPayload, dev).status).toBe('SUCCESS');
    const raw = await app.inject({ method: 'GET', url: `/mdm/apple/scep?operation=PKIOperation&message=${b64.replace(/\//g, '%2F').replace(/=/g, '%3D')}` });
    expect(reply(raw.rawPayload, dev).status).toBe('SUCCESS');
    expect(issued).toHaveLength(4);
  });

  it('oversized and garbage bodies get 400 with a short text; other media types 415', async () => {
    const big = await app.inject({ method: 'POST', url: '/mdm/apple/scep?operation=PKIOperation', headers: { 'content-type': 'application/x-pki-message' }, payload: Buffer.alloc(17 * 1024, 0x30) });
    expect(big.statusCode).toBe(400);
    expect(big.body).toBe('malformed SCEP request: more than 16384 bytes\n');
    const garbage = await app.inject({ method: 'POST', url: '/mdm/apple/scep?operation=PKIOperation', headers: { 'content-type': 'application/x-pki-message' }, payload: Buffer.from('hello') });
    expect(garbage.statusCode).toBe(400);
    expect(garbage.headers['content-type']).toMatch(/^text\/plain/);
    const json = await app.inject({ method: 'POST', url: '/mdm/apple/scep?operation=PKIOperation', headers: { 'content-type': 'text/html' }, payload: 'x' });
    expect(json.statusCode).toBe(415);
    expect(json.body).not.toMatch(/stack|\.ts:/);
  });
});
