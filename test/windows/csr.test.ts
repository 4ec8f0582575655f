// The PKCS#10 of a Windows enrollment: read through the bounded DER reader,
// its signature checked over the original bytes, Windows' PrintableString
// quirks accepted, everything malformed refused with a reason.
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, describe, expect, it } from 'vitest';
import { Type, parseDer, toBuffer, toDer, type Asn1 } from '../../protocols/pki/asn1.js';
import { CertificateAuthority, generateCa } from '../../protocols/pki/ca.js';
import { CsrError, readCsr, readRenewalRequest } from '../../protocols/windows/csr.js';
import { windowsCsr } from '../../protocols/windows/simulator/enroll-client.js';
import { missingTool } from '../support/tools.js';

const noOpenssl = missingTool('openssl', 'openssl');
const dir = mkdtempSync(join(tmpdir(), 'muster-win-csr-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function forgeCsr(o: { cn: string; bits?: number; md?: forge.md.MessageDigest; attrs?: forge.pki.CertificateField[] }): Buffer {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: o.bits ?? 2048 });
  const key = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string) as forge.pki.rsa.PrivateKey;
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.rsa.setPublicKey(key.n, key.e);
  csr.setSubject([{ shortName: 'CN', value: o.cn, valueTagClass: Type.PRINTABLESTRING as unknown as forge.asn1.Class }]);
  if (o.attrs) csr.setAttributes(o.attrs);
  csr.sign(key, o.md ?? forge.md.sha256.create());
  return toBuffer(toDer(forge.pki.certificationRequestToAsn1(csr)));
}

/** The subject's CN value node of a CSR, as parsed. */
const cnNode = (der: Buffer): Asn1 => {
  const cri = (parseDer(der, 'csr').value as Asn1[])[0]!;
  const subject = (cri.value as Asn1[])[1]!;
  const atv = ((subject.value as Asn1[])[0]!.value as Asn1[])[0]!;
  return (atv.value as Asn1[])[1]!;
};

describe('readCsr', () => {
  it('accepts a PrintableString subject with characters PrintableString forbids, as Windows sends it', () => {
    const der = forgeCsr({ cn: '6C2B5E1A-3D4F-4B7A-9E0D-1F2A3B4C5D6E!alex@example.com_lab' });
    // It really is a PrintableString holding '!', '@' and '_' on the wire.
    const node = cnNode(der);
    expect(node.type).toBe(Type.PRINTABLESTRING);
    expect(node.value).toContain('!alex@example.com_lab');
    const csr = readCsr(der.toString('base64'));
    expect(csr.commonName).toBe('6C2B5E1A-3D4F-4B7A-9E0D-1F2A3B4C5D6E!alex@example.com_lab');
    expect(csr.subject).toBe('CN=6C2B5E1A-3D4F-4B7A-9E0D-1F2A3B4C5D6E!alex@example.com_lab');
    expect(csr.keyBits).toBe(2048);
    expect(csr.hash).toBe('sha256');
  });

  it('keeps the subject byte for byte in the issued certificate', () => {
    const der = forgeCsr({ cn: 'PC!01' });
    const csr = readCsr(der.toString('base64'));
    const cert = generateCa().issue({ csr: csr.request });
    const issued = parseDer(CertificateAuthority.toDer(cert), 'cert');
    const tbs = (issued.value as Asn1[])[0]!.value as Asn1[];
    const subject = tbs[5]!;
    const value = (((subject.value as Asn1[])[0]!.value as Asn1[])[0]!.value as Asn1[])[1]!;
    expect(value.type).toBe(Type.PRINTABLESTRING);
    expect(value.value).toBe('PC!01');
  });

  it.skipIf(!!noOpenssl)('accepts an openssl request hand-patched to a PrintableString with "!" (and openssl agrees it is valid)', () => {
    execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=LAB-PC!07/O=Example Org', '-utf8', '-keyout', join(dir, 'k.pem'), '-outform', 'DER', '-out', join(dir, 'u.der')], { stdio: 'ignore' });
    const original = readFileSync(join(dir, 'u.der'));
    // openssl writes a UTF8String; patch the CN to PrintableString and re-sign the CertificationRequestInfo.
    const csr = parseDer(original, 'csr');
    const [cri, alg] = csr.value as Asn1[];
    const subject = (cri!.value as Asn1[])[1]!;
    for (const rdn of subject.value as Asn1[]) {
      const [type, value] = (rdn.value as Asn1[])[0]!.value as Asn1[];
      if (forge.asn1.derToOid(type!.value as string) === '2.5.4.3') value!.type = Type.PRINTABLESTRING;
    }
    const criDer = toBuffer(toDer(cri!));
    const signature = sign('sha256', criDer, createPrivateKey(readFileSync(join(dir, 'k.pem'))));
    const patched = toBuffer(toDer(forge.asn1.create(0, Type.SEQUENCE, true, [cri!, alg!, forge.asn1.create(0, Type.BITSTRING, false, '\0' + signature.toString('binary'))])));
    writeFileSync(join(dir, 'p.der'), patched);
    const verified = spawnSync('openssl', ['req', '-inform', 'DER', '-in', join(dir, 'p.der'), '-noout', '-verify'], { encoding: 'utf8' });
    expect(verified.status).toBe(0);
    expect(verified.stdout + verified.stderr).toMatch(/verify OK/);
    const asn1Dump = execFileSync('openssl', ['asn1parse', '-inform', 'DER', '-in', join(dir, 'p.der')], { encoding: 'utf8' });
    expect(asn1Dump).toMatch(/PRINTABLESTRING\s+:LAB-PC!07/);
    const read = readCsr(patched.toString('base64'));
    expect(read.commonName).toBe('LAB-PC!07');
    expect(read.subject).toBe('CN=LAB-PC!07, O=Example Org');
  });

  it('reads base64 wrapped over lines, and requests with Microsoft attributes', () => {
    const { csrDer } = windowsCsr({ commonName: 'DEV!1' });
    const wrapped = csrDer.toString('base64').replace(/(.{64})/g, '$1\r\n');
    expect(readCsr(wrapped).commonName).toBe('DEV!1');
  });

  it('refuses a request whose signature does not verify', () => {
    const der = forgeCsr({ cn: 'tampered' });
    const badSig = Buffer.from(der);
    badSig[badSig.length - 5]! ^= 0xff;
    expect(() => readCsr(badSig.toString('base64'))).toThrow(/signature does not verify/);
    // Changing the signed part (the subject) breaks it too.
    const badSubject = Buffer.from(der);
    const at = badSubject.indexOf(Buffer.from('tampered'));
    badSubject[at] = 'T'.charCodeAt(0);
    expect(() => readCsr(badSubject.toString('base64'))).toThrow(CsrError);
  });

  it('refuses what is not base64, not DER, too large, or too weak', () => {
    expect(() => readCsr('%%% not base64 %%%')).toThrow(/not base64/);
    expect(() => readCsr(Buffer.from('this is not a certificate request').toString('base64'))).toThrow(/cannot be read/);
    const big = forgeCsr({ cn: 'big', attrs: [{ type: '1.3.6.1.4.1.311.13.2.2', value: 'x'.repeat(20_000), valueTagClass: Type.IA5STRING } as unknown as forge.pki.CertificateField] });
    expect(() => readCsr(big.toString('base64'))).toThrow(/larger than 16384 bytes/);
    expect(() => readCsr(forgeCsr({ cn: 'small', bits: 1024 }).toString('base64'))).toThrow(/1024 bits, less than the 2048/);
    expect(() => readCsr(forgeCsr({ cn: 'md5', md: forge.md.md5.create() }).toString('base64'))).toThrow(/not RSA with SHA-1 or SHA-2/);
    expect(() => readCsr(forgeCsr({ cn: '' }).toString('base64'))).toThrow(/no subject common name/);
    // A DER bomb of nesting stops at the reader's depth limit, not in a stack overflow.
    const deep = Buffer.concat([...Array.from({ length: 200 }, () => Buffer.from([0x30, 0x80])), ...Array.from({ length: 200 }, () => Buffer.from([0, 0]))]);
    expect(() => readCsr(deep.toString('base64'))).toThrow(/cannot be read/);
  });
});

describe('readRenewalRequest', () => {
  const ca = generateCa();
  const device = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const deviceKey = forge.pki.privateKeyFromPem(device.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string) as forge.pki.rsa.PrivateKey;
  const current = ca.issue({ publicKey: forge.pki.rsa.setPublicKey(deviceKey.n, deviceKey.e), subject: [{ shortName: 'CN', value: 'DEV!1' }] });
  const currentDer = CertificateAuthority.toDer(current);

  const wrap = (inner: Buffer, key: forge.pki.rsa.PrivateKey, cert: forge.pki.Certificate): string => {
    const p7 = forge.pkcs7.createSignedData();
    p7.content = forge.util.createBuffer(inner.toString('binary'));
    p7.addCertificate(cert);
    p7.addSigner({ key, certificate: cert, digestAlgorithm: forge.pki.oids.sha256!, authenticatedAttributes: [{ type: forge.pki.oids.contentType!, value: forge.pki.oids.data! }, { type: forge.pki.oids.messageDigest! }] });
    p7.sign();
    return toBuffer(toDer(p7.toAsn1())).toString('base64');
  };

  it('reads the new PKCS#10 out of a PKCS#7 signed with the certificate being renewed', () => {
    const { csrDer } = windowsCsr({ commonName: 'DEV!1' });
    const csr = readRenewalRequest(wrap(csrDer, deviceKey, current), currentDer);
    expect(csr.commonName).toBe('DEV!1');
    expect(csr.der.equals(csrDer)).toBe(true);
  });

  it('refuses one signed by another key, or for another certificate', () => {
    const { csrDer } = windowsCsr({ commonName: 'DEV!1' });
    const other = forge.pki.rsa.generateKeyPair(1024);
    expect(() => readRenewalRequest(wrap(csrDer, other.privateKey, current), currentDer)).toThrow(/not signed by the certificate being renewed/);
    const someoneElse = CertificateAuthority.toDer(ca.issue({ publicKey: other.publicKey, subject: [{ shortName: 'CN', value: 'other' }] }));
    expect(() => readRenewalRequest(wrap(csrDer, deviceKey, current), someoneElse)).toThrow(/not signed by/);
    expect(() => readRenewalRequest(csrDer.toString('base64'), currentDer)).toThrow(/cannot be read|not a PKCS#7/);
  });
});
