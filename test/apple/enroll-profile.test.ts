// The enrollment profile: its payloads and keys, and its signature checked by
// OpenSSL (the signed content is the plist, the chain ends at the CA, the
// signed attributes are there, nothing precedes the DER).
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, describe, expect, it } from 'vitest';
import { ENROLLMENT_CONTENT_TYPE, EnrollmentProfileError, buildEnrollmentProfile, enrollmentProfileBytes, type EnrollmentProfileOptions } from '../../protocols/apple/enroll-profile.js';
import { decodePlist, encodePlist, isPlistDict, type PlistDict } from '../../protocols/apple/plist.js';
import { signProfile, type ProfileSigner } from '../../protocols/apple/profiles.js';
import { parseDer } from '../../protocols/pki/asn1.js';
import { generateCa } from '../../protocols/apple/scep/index.js';
import { missingTool } from '../support/tools.js';

const noOpenssl = missingTool('openssl', 'openssl');

const ca = generateCa({ subject: { commonName: 'Muster Test CA', organization: 'Muster' } });

/** A TLS-server-like certificate from the CA, as servers usually sign their profiles with. */
function issuedSigner(): ProfileSigner {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = ca.issue({
    publicKey: forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string),
    subject: [{ shortName: 'CN', value: 'mdm.example.com' }],
    ekus: ['serverAuth'],
  });
  return { certPem: forge.pki.certificateToPem(cert), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, chainPems: [ca.certPem] };
}
const signer = issuedSigner();

/** Options with reproducible UUIDs: every call numbers them from 1 again. */
function options(): EnrollmentProfileOptions {
  let n = 0;
  return { ...BASE, uuid: () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}` };
}
const BASE: EnrollmentProfileOptions = {
  serverUrl: 'https://mdm.example.com/mdm/apple/server',
  checkInUrl: 'https://mdm.example.com/mdm/apple/checkin',
  topic: 'com.apple.mgmt.External.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0',
  scep: { url: 'https://mdm.example.com/mdm/apple/scep', challenge: 'one-time-challenge', subject: { commonName: 'Muster device', organization: 'Example Corp' } },
  ca,
  organization: 'Example Corp',
};
const OPTIONS = options();

describe('buildEnrollmentProfile', () => {
  const p = buildEnrollmentProfile(OPTIONS);
  const [root, scep, mdm] = p.PayloadContent;

  it('holds the CA root, the SCEP identity and the MDM payload, in that order', () => {
    expect(p).toMatchObject({ PayloadType: 'Configuration', PayloadVersion: 1, PayloadIdentifier: 'dev.muster.enrollment', PayloadOrganization: 'Example Corp', PayloadScope: 'System' });
    expect(p.PayloadContent.map((x) => x.PayloadType)).toEqual(['com.apple.security.root', 'com.apple.security.scep', 'com.apple.mdm']);
    expect(root!.PayloadContent).toEqual(ca.certDer);
  });

  it('asks for a 2048-bit RSA identity for signing and encryption, with the subject as nested arrays', () => {
    expect(scep!.PayloadContent).toEqual({
      URL: 'https://mdm.example.com/mdm/apple/scep',
      Name: 'muster',
      Challenge: 'one-time-challenge',
      Keysize: 2048,
      'Key Type': 'RSA',
      'Key Usage': 5,
      Subject: [[['CN', 'Muster device']], [['O', 'Example Corp']]],
    });
  });

  it('names that identity in the MDM payload, with every access right and both capabilities', () => {
    expect(mdm).toMatchObject({
      ServerURL: 'https://mdm.example.com/mdm/apple/server',
      CheckInURL: 'https://mdm.example.com/mdm/apple/checkin',
      Topic: OPTIONS.topic,
      IdentityCertificateUUID: scep!.PayloadUUID,
      SignMessage: true,
      AccessRights: 8191,
      CheckOutWhenRemoved: true,
      ServerCapabilities: ['com.apple.mdm.per-user-connections', 'com.apple.mdm.bootstraptoken'],
    });
    expect(mdm).not.toHaveProperty('UseDevelopmentAPNS');
    expect(new Set(p.PayloadContent.map((x) => x.PayloadUUID).concat(p.PayloadUUID)).size).toBe(4);
  });

  it('uses random upper-case UUIDs by default', () => {
    const a = buildEnrollmentProfile(BASE);
    expect(a.PayloadUUID).toMatch(/^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
    expect(buildEnrollmentProfile(BASE).PayloadUUID).not.toBe(a.PayloadUUID);
  });

  it.each<[string, Partial<EnrollmentProfileOptions>, RegExp]>([
    ['a topic that is not an MDM topic', { topic: 'com.example.push' }, /not an MDM push topic/],
    ['an http server URL', { serverUrl: 'http://mdm.example.com/server' }, /server URL must be https/],
    ['an http SCEP URL', { scep: { url: 'http://mdm.example.com/scep', challenge: 'c' } }, /SCEP URL must be https/],
    ['a check-in URL that is not a URL', { checkInUrl: 'not a url' }, /is not a URL/],
    ['no challenge', { scep: { url: 'https://mdm.example.com/scep', challenge: '' } }, /challenge is required/],
  ])('refuses %s', (_name, change, message) => {
    expect(() => buildEnrollmentProfile({ ...OPTIONS, ...change })).toThrow(EnrollmentProfileError);
    expect(() => buildEnrollmentProfile({ ...OPTIONS, ...change })).toThrow(message);
  });
});

describe('signProfile', () => {
  it('is DER with nothing before the SEQUENCE, and the DER is the whole output', () => {
    const der = enrollmentProfileBytes(OPTIONS, signer);
    expect(der[0]).toBe(0x30);
    expect(() => parseDer(der, 'profile')).not.toThrow();
    expect(ENROLLMENT_CONTENT_TYPE).toBe('application/x-apple-aspen-config');
  });

  it('refuses a key that does not belong to the certificate, and a non-RSA key', () => {
    const other = issuedSigner();
    expect(() => signProfile(Buffer.from('x'), { ...signer, keyPem: other.keyPem })).toThrow(/does not belong to the certificate/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expect(() => signProfile(Buffer.from('x'), { ...signer, keyPem: ec })).toThrow(/must be RSA/);
    expect(() => signProfile(Buffer.from('x'), { ...signer, certPem: 'nope' })).toThrow(/not a PEM certificate/);
  });
});

describe.skipIf(!!noOpenssl)('the signed profile, checked by openssl cms', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-enroll-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const caPem = join(dir, 'ca.pem');
  writeFileSync(caPem, ca.certPem);

  /** `openssl cms -verify`; the chain is checked against the CA (any purpose: Apple does not require an S/MIME key usage). */
  function verify(der: Buffer, name: string): { ok: boolean; content: Buffer; err: string } {
    const file = join(dir, `${name}.mobileconfig`);
    const out = join(dir, `${name}.content`);
    writeFileSync(file, der);
    rmSync(out, { force: true });
    const r = spawnSync('openssl', ['cms', '-verify', '-inform', 'DER', '-in', file, '-CAfile', caPem, '-purpose', 'any', '-binary', '-out', out], { encoding: 'utf8' });
    return { ok: r.status === 0, content: r.status === 0 ? readFileSync(out) : Buffer.alloc(0), err: r.stderr };
  }

  it('verifies against the CA, and its content is the enrollment plist with both payloads', () => {
    const plist = encodePlist(buildEnrollmentProfile(options()));
    const r = verify(signProfile(plist, signer), 'enroll');
    expect(r.err).toMatch(/Verification successful/);
    expect(r.ok).toBe(true);
    expect(r.content).toEqual(plist);
    const read = decodePlist(r.content) as PlistDict;
    const content = read.PayloadContent as PlistDict[];
    const scep = content.find((x) => x.PayloadType === 'com.apple.security.scep')!;
    const mdm = content.find((x) => x.PayloadType === 'com.apple.mdm')!;
    expect(isPlistDict(scep.PayloadContent) && scep.PayloadContent.Subject).toEqual([[['CN', 'Muster device']], [['O', 'Example Corp']]]);
    expect(mdm).toMatchObject({ IdentityCertificateUUID: scep.PayloadUUID, Topic: OPTIONS.topic, AccessRights: 8191, SignMessage: true, CheckOutWhenRemoved: true });
    expect(content.find((x) => x.PayloadType === 'com.apple.security.root')!.PayloadContent).toEqual(ca.certDer);
  });

  it('carries contentType, signingTime and messageDigest as signed attributes, SHA-256, and the certificates as issued', () => {
    const now = new Date('2026-03-04T05:06:07Z');
    const der = signProfile(Buffer.from('<plist/>'), signer, now);
    const file = join(dir, 'attrs.der');
    writeFileSync(file, der);
    const printed = execFileSync('openssl', ['cms', '-cmsout', '-print', '-inform', 'DER', '-in', file], { encoding: 'utf8' });
    const signed = printed.slice(printed.indexOf('signedAttrs:'));
    const at = (re: RegExp): number => signed.search(re);
    const attrs = [
      at(/object: contentType \(1\.2\.840\.113549\.1\.9\.3\)\s+set:\s+OBJECT:pkcs7-data/),
      at(/object: signingTime \(1\.2\.840\.113549\.1\.9\.5\)\s+set:\s+UTCTIME:Mar\s+4 05:06:07 2026 GMT/),
      at(/object: messageDigest \(1\.2\.840\.113549\.1\.9\.4\)/),
    ];
    expect(attrs.every((i) => i > 0)).toBe(true);
    // In DER SET OF order.
    expect([...attrs].sort((a, b) => a - b)).toEqual(attrs);
    expect(printed).toMatch(/digestAlgorithm:\s+algorithm: sha256/);
    expect(printed).toMatch(/eContentType: pkcs7-data/);
    const certs = execFileSync('openssl', ['pkcs7', '-inform', 'DER', '-in', file, '-print_certs'], { encoding: 'utf8' });
    const lf = (pem: string): string => pem.replace(/\r\n/g, '\n').trim();
    expect(certs).toContain(lf(signer.certPem));
    expect(certs).toContain(lf(ca.certPem));
  });

  it('fails verification when a byte of the content changes, or against another CA', () => {
    const plist = encodePlist(buildEnrollmentProfile(OPTIONS));
    const der = signProfile(plist, signer);
    const at = der.indexOf(Buffer.from('one-time-challenge'));
    expect(at).toBeGreaterThan(0);
    const tampered = Buffer.from(der);
    tampered[at] = 'O'.charCodeAt(0);
    expect(verify(tampered, 'tampered').ok).toBe(false);

    const stranger = generateCa({ subject: { commonName: 'Someone else' } });
    const strangerPem = join(dir, 'stranger.pem');
    writeFileSync(strangerPem, stranger.certPem);
    const file = join(dir, 'stranger.mobileconfig');
    writeFileSync(file, der);
    const r = spawnSync('openssl', ['cms', '-verify', '-inform', 'DER', '-in', file, '-CAfile', strangerPem, '-purpose', 'any', '-out', '/dev/null'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
  });

  it('signs with the CA itself, its key read from the encrypted PEM the CA exports', () => {
    const passphrase = 'enrollment signing';
    const selfSigned: ProfileSigner = { certPem: ca.certPem, keyPem: ca.exportKeyPem(passphrase), passphrase };
    const plist = encodePlist(buildEnrollmentProfile(options()));
    const r = verify(enrollmentProfileBytes(options(), selfSigned), 'self');
    expect(r.err).toMatch(/Verification successful/);
    expect(r.content).toEqual(plist);
    expect(() => signProfile(plist, { ...selfSigned, passphrase: 'wrong' })).toThrow(/keyPem cannot be read/);
  });
});
