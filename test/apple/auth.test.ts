// Device authentication: mTLS, a proxy's certificate header, and Mdm-Signature
// made by openssl the way devices make it (detached, SHA-1, no signed
// attributes, BER indefinite lengths) and with signed attributes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceAuthError, authenticateDevice, fromHeader } from '../../protocols/apple/auth.js';
import { CertificateAuthority, generateCa } from '../../protocols/pki/ca.js';
import { missingTool } from '../support/tools.js';

const skip = missingTool('openssl', 'openssl');

describe.skipIf(!!skip)('Apple device authentication', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-auth-'));
  let ca: CertificateAuthority;
  let other: CertificateAuthority;
  let certDer: Buffer;
  const body = Buffer.from('<?xml version="1.0"?><plist version="1.0"><dict><key>MessageType</key><string>TokenUpdate</string></dict></plist>');

  const device = (issuer: CertificateAuthority, name: string) => {
    const keys = forge.pki.rsa.generateKeyPair(2048);
    const cert = issuer.issue({ publicKey: keys.publicKey, subject: [{ name: 'commonName', value: name }] });
    writeFileSync(join(dir, `${name}.pem`), forge.pki.certificateToPem(cert));
    writeFileSync(join(dir, `${name}.key`), forge.pki.privateKeyToPem(keys.privateKey));
    return CertificateAuthority.toDer(cert);
  };
  const sign = (name: string, extra: string[]) => {
    writeFileSync(join(dir, 'body'), body);
    execFileSync('openssl', ['cms', '-sign', '-binary', '-in', join(dir, 'body'), '-signer', join(dir, `${name}.pem`), '-inkey', join(dir, `${name}.key`), '-outform', 'DER', '-out', join(dir, 'sig'), ...extra]);
    return readFileSync(join(dir, 'sig')).toString('base64');
  };
  const auth = (headers: Record<string, string>, b = body, modes = ['signature', 'header'] as const) => authenticateDevice({ headers, body: b }, { modes, ca });

  beforeAll(() => {
    ca = generateCa({ keyBits: 2048 });
    other = generateCa({ keyBits: 2048 });
    certDer = device(ca, 'ipad');
    device(other, 'stranger');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts a device-style Mdm-Signature: SHA-1, no signed attributes, BER indefinite lengths', () => {
    const sig = sign('ipad', ['-md', 'sha1', '-noattr', '-stream']);
    expect(Buffer.from(sig, 'base64').subarray(0, 2).toString('hex')).toBe('3080'); // indefinite length, as devices send
    expect(auth({ 'mdm-signature': sig })).toEqual({ certSha256: createHash('sha256').update(certDer).digest('hex'), via: 'signature' });
  });

  it('accepts a SHA-256 signature with signed attributes', () => {
    expect(auth({ 'mdm-signature': sign('ipad', ['-md', 'sha256']) }).via).toBe('signature');
  });

  it('refuses a signature over another body, by a certificate from another CA, or garbage', () => {
    const sig = sign('ipad', ['-md', 'sha1', '-noattr']);
    expect(() => auth({ 'mdm-signature': sig }, Buffer.concat([body, Buffer.from(' ')]))).toThrow(/does not verify/);
    expect(() => auth({ 'mdm-signature': sign('stranger', ['-md', 'sha256']) })).toThrow(/not issued by this CA/);
    expect(() => auth({ 'mdm-signature': 'AAAA' })).toThrow(DeviceAuthError);
    expect(() => auth({})).toThrow(/no device certificate/);
  });

  it('refuses a signature nested deeper than the ASN.1 depth limit', () => {
    let node = Buffer.from([0x05, 0x00]);
    for (let i = 0; i < 200; i++) node = Buffer.concat([Buffer.from([0x30, 0x80]), node, Buffer.from([0, 0])]);
    expect(() => auth({ 'mdm-signature': node.toString('base64') })).toThrow(DeviceAuthError);
  });

  it('reads a forwarded certificate as RFC 9440 :base64: or as a URL-escaped PEM', () => {
    const pem = readFileSync(join(dir, 'ipad.pem'), 'utf8');
    expect(fromHeader(`:${certDer.toString('base64')}:`)).toEqual(certDer);
    expect(fromHeader(encodeURIComponent(pem))).toEqual(certDer);
    // From a trusted proxy's address (test/security/proxy-header.test.ts covers the others).
    const proxy = { socket: { remoteAddress: '10.0.0.5' }, trustedProxy: (a: string) => a === '10.0.0.5' };
    expect(authenticateDevice({ headers: { 'client-cert': `:${certDer.toString('base64')}:` }, body, socket: proxy.socket }, { modes: ['signature', 'header'], ca, trustedProxy: proxy.trustedProxy }).via).toBe('header');
    expect(() => fromHeader('not a certificate')).toThrow(/neither/);
  });

  it('takes the TLS client certificate on an mTLS connection', () => {
    const socket = { getPeerCertificate: () => ({ raw: certDer }) };
    expect(authenticateDevice({ headers: {}, body, socket }, { modes: ['mtls'], ca }).via).toBe('mtls');
    expect(() => authenticateDevice({ headers: { 'client-cert': `:${certDer.toString('base64')}:` }, body, socket: {} }, { modes: ['mtls'], ca })).toThrow(/no device certificate/);
  });
});
