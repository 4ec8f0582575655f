// Real SCEP clients against the plugin on 127.0.0.1: micromdm's scepclient
// (Go), the certmonger daemon (OpenSSL; it makes its own key, CSR and
// PKCSReq) and certmonger's scep-submit helper on its own. Every certificate
// they end up with must pass `openssl verify` against the CA.
import { spawn } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildCsr,
  buildPkiRequest,
  loadOrCreateCa,
  OneTimeChallenges,
  scepRoutes,
  selfSignedCert,
  sha256Fingerprint,
  type CertificateAuthority,
  type ScepIssued,
} from '../../protocols/apple/scep/index.js';
import { missingTool } from '../support/tools.js';

const SCEP_SUBMIT = '/usr/lib/certmonger/scep-submit';
// The daemon is in /usr/sbin, often not on a user's PATH; getcert (same package) is in /usr/bin.
const CERTMONGER = existsSync('/usr/sbin/certmonger') ? '/usr/sbin/certmonger' : 'certmonger';
const noOpenssl = missingTool('openssl', 'openssl');
const noScepclient = missingTool('scepclient', 'scep');
const noCertmonger = missingTool('getcert', 'certmonger') ?? missingTool('dbus-run-session', 'dbus-daemon');
const noScepSubmit = missingTool(SCEP_SUBMIT, 'certmonger');

interface Run {
  code: number | null;
  out: string;
}

/** Runs a tool in its own process group, killed whole on timeout (certmonger starts helpers). */
function run(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: o.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
      reject(new Error(`${cmd} timed out:\n${out}`));
    }, o.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

async function opensslVerify(caPem: string, certPem: string): Promise<string> {
  const r = await run('openssl', ['verify', '-CAfile', caPem, certPem]);
  expect(r.out).toBe(`${certPem}: OK\n`);
  return r.out;
}

describe.skipIf(!!noOpenssl)('real SCEP clients', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-scep-clients-'));
  const caPem = join(dir, 'ca.pem');
  const challenges = new OneTimeChallenges();
  const issued: ScepIssued[] = [];
  const refused: string[] = [];
  let ca: CertificateAuthority;
  let app: FastifyInstance;
  let url: string;
  let strictUrl: string;

  beforeAll(async () => {
    ca = await loadOrCreateCa({ keyFile: join(dir, 'ca', 'key.pem'), certFile: caPem, passphrase: 'clients test' });
    app = Fastify();
    const options = {
      ca,
      challenges,
      onIssued: (i: ScepIssued) => void issued.push(i),
      log: { info: () => {}, warn: (_m: string, f?: Record<string, unknown>) => void refused.push(String(f?.reason)), error: () => {} },
    };
    // micromdm's scepclient sends single-DES envelopes whatever GetCACaps says.
    await app.register(scepRoutes, { ...options, allowSingleDes: true });
    await app.register(scepRoutes, { ...options, path: '/strict/scep' });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    url = `${address}/mdm/apple/scep`;
    strictUrl = `${address}/strict/scep`;
  });
  afterAll(async () => {
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe.skipIf(!!noScepclient)("micromdm's scepclient", () => {
    const d = join(dir, 'scepclient');
    const args = (certDir: string, challenge?: string) => [
      '-server-url', url,
      ...(challenge ? ['-challenge', challenge] : []),
      '-private-key', join(certDir, 'key.pem'),
      '-certificate', join(certDir, 'cert.pem'),
      '-cn', 'scepclient-device',
      '-organization', 'Muster Tests',
    ];

    it('enrolls with a one-time challenge (PKCSReq)', async () => {
      mkdirSync(d);
      const challenge = challenges.issue();
      const r = await run('scepclient', args(d, challenge));
      expect(r.code, r.out).toBe(0);
      await opensslVerify(caPem, join(d, 'cert.pem'));
      expect(new X509Certificate(readFileSync(join(d, 'cert.pem'))).subject).toBe('C=US\nO=Muster Tests\nOU=MDM\nCN=scepclient-device');
      expect(issued.at(-1)).toMatchObject({ messageType: 'PKCSReq', challengeUsed: challenge, csrSubject: 'C=US, O=Muster Tests, OU=MDM, CN=scepclient-device' });
    });

    it('renews with the certificate it holds (RenewalReq, no challenge)', async () => {
      const before = readFileSync(join(d, 'cert.pem'), 'utf8');
      const r = await run('scepclient', args(d));
      expect(r.code, r.out).toBe(0);
      const after = readFileSync(join(d, 'cert.pem'), 'utf8');
      expect(after).not.toBe(before);
      await opensslVerify(caPem, join(d, 'cert.pem'));
      expect(issued.at(-1)).toMatchObject({ messageType: 'RenewalReq', challengeUsed: undefined, renewalOf: sha256Fingerprint(before) });
    });

    it('is refused with badRequest when the challenge was already used', async () => {
      const used = issued.find((i) => i.challengeUsed)!.challengeUsed!;
      const other = join(dir, 'scepclient-reused');
      mkdirSync(other);
      const r = await run('scepclient', args(other, used));
      expect(r.code).toBe(1);
      expect(r.out).toContain('PKCSReq (19) request failed, failInfo: badRequest (2)');
      expect(existsSync(join(other, 'cert.pem'))).toBe(false);
    });

    it('is refused with badAlg where single DES is not allowed', async () => {
      const other = join(dir, 'scepclient-strict');
      mkdirSync(other);
      const r = await run('scepclient', ['-server-url', strictUrl, '-challenge', challenges.issue(), '-private-key', join(other, 'key.pem'), '-certificate', join(other, 'cert.pem')]);
      expect(r.code).toBe(1);
      expect(r.out).toContain('failInfo: badAlg (0)');
    });
  });

  describe.skipIf(!!noCertmonger)('the certmonger daemon', () => {
    it('enrolls with getcert request -L <challenge> (its own key, CSR and PKCSReq)', async () => {
      const d = join(dir, 'certmonger');
      const state = join(d, 'state');
      for (const s of ['cas', 'requests', 'config', 'local', 'tmp', 'home']) mkdirSync(join(state, s), { recursive: true });
      const challenge = challenges.issue();
      // -r/-N: our CA certificate is both the RA (encrypts, signs replies) and the trust anchor.
      writeFileSync(
        join(d, 'enroll.sh'),
        [
          'set -e',
          `getcert add-scep-ca -s -c muster -u '${url}' -r '${caPem}' -N '${caPem}'`,
          `getcert request -s -w -v -c muster -f '${d}/cert.pem' -k '${d}/key.pem' -L '${challenge}' -N 'CN=certmonger-device,O=Muster Tests'`,
          'getcert list -s',
        ].join('\n'),
      );
      // A private session bus, and every state directory in the test's folder (never /var/lib/certmonger).
      const env = {
        ...process.env,
        HOME: join(state, 'home'),
        CERTMONGER_CAS_DIR: join(state, 'cas'),
        CERTMONGER_REQUESTS_DIR: join(state, 'requests'),
        CERTMONGER_CONFIG_DIR: join(state, 'config'),
        CERTMONGER_LOCAL_CA_DIR: join(state, 'local'),
        CERTMONGER_TMPDIR: join(state, 'tmp'),
      };
      const r = await run('dbus-run-session', ['--', CERTMONGER, '-s', '-n', '-c', `sh ${join(d, 'enroll.sh')}`], { env });
      expect(r.out).toContain('status: MONITORING');
      await opensslVerify(caPem, join(d, 'cert.pem'));
      const cert = new X509Certificate(readFileSync(join(d, 'cert.pem')));
      expect(cert.subject).toBe('CN=certmonger-device\nO=Muster Tests');
      expect(issued.at(-1)).toMatchObject({ messageType: 'PKCSReq', challengeUsed: challenge, fingerprint: sha256Fingerprint(cert.toString()) });
    });
  });

  describe.skipIf(!!noScepSubmit)("certmonger's scep-submit helper", () => {
    const d = join(dir, 'scep-submit');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const self = selfSignedCert(privateKey, 'scep-submit-device');
    const submit = (challenge: string) => {
      // A DES3 PKCSReq (certmonger itself always picks AES when offered); scep-submit sends it by GET.
      const req = buildPkiRequest({ messageType: 'PKCSReq', csrDer: buildCsr(privateKey, [{ shortName: 'CN', value: 'scep-submit-device' }], challenge), signerCertDer: self, signerKey: privateKey, caCertDer: ca.certDer, cipher: 'des3' });
      writeFileSync(join(d, 'req.pem'), `-----BEGIN PKCS7-----\n${req.der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PKCS7-----\n`);
      return run(SCEP_SUBMIT, ['-u', url, '-r', caPem, '-N', caPem, '-p', join(d, 'req.pem')]);
    };

    it('gets a DES3 envelope that openssl decrypts to a certificate from the CA', async () => {
      mkdirSync(d);
      writeFileSync(join(d, 'self.pem'), new X509Certificate(self).toString());
      writeFileSync(join(d, 'key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const r = await submit(challenges.issue());
      expect(r.code, r.out).toBe(0);
      const b64 = /-----BEGIN PKCS7-----([\s\S]*?)-----END PKCS7-----/.exec(r.out)?.[1];
      expect(b64).toBeDefined();
      writeFileSync(join(d, 'envelope.der'), Buffer.from(b64!.replace(/\s/g, ''), 'base64'));
      const dec = await run('openssl', ['cms', '-decrypt', '-inform', 'DER', '-in', join(d, 'envelope.der'), '-recip', join(d, 'self.pem'), '-inkey', join(d, 'key.pem'), '-binary', '-out', join(d, 'certs.der')]);
      expect(dec.code, dec.out).toBe(0);
      const pem = await run('openssl', ['pkcs7', '-inform', 'DER', '-in', join(d, 'certs.der'), '-print_certs', '-out', join(d, 'cert.pem')]);
      expect(pem.code, pem.out).toBe(0);
      await opensslVerify(caPem, join(d, 'cert.pem'));
    });

    it('reports the rejection of a wrong challenge (exit status 2)', async () => {
      const r = await submit('not-a-challenge');
      expect(r.code).toBe(2);
      expect(r.out).toContain('Transaction either is not permitted or is not supported by server');
      expect(refused.at(-1)).toBe('wrong, expired or already used challenge');
    });
  });
});
