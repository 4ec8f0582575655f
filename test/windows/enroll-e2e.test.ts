// A simulated Windows PC enrolling against Muster over real HTTPS (fastify
// listening, node:https on the device side), on each store backend: every
// answer has a Content-Length and none is chunked; the certificate chains
// to the CA for client authentication (openssl verify); the store holds the
// device, its attributes, the bound identity, the enrollment and the audit
// trail. Then re-enrollment, federated sign-in and automatic renewal.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { sha256Fingerprint, generateCa, type CertificateAuthority } from '../../protocols/pki/ca.js';
import { localServerCertificate } from '../../protocols/pki/local-tls.js';
import { createWindowsEnrollService, type WindowsEnrollConfig, type WindowsEnrollService } from '../../protocols/windows/enroll-service.js';
import { windowsEnrollRoutes } from '../../protocols/windows/enroll-routes.js';
import { enrollWindowsDevice, renewWindowsCertificate, WindowsEnrollError, type EnrollStep, type HttpAnswer } from '../../protocols/windows/simulator/enroll-client.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { missingTool } from '../support/tools.js';
import { freePort } from '../e2e/support.js';

const noOpenssl = missingTool('openssl', 'openssl');
const sha1Hex = (pem: string) => createHash('sha1').update(new X509Certificate(pem).raw).digest('hex').toUpperCase();
const quiet = { info: () => {}, warn: () => {}, error: () => {} };

describe.each(backends)('Windows enrollment end to end (%s)', (backend) => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-win-e2e-'));
  const tls = localServerCertificate();
  let tdb: TestDatabase;
  let store: Store;
  let ca: CertificateAuthority;
  const servers: FastifyInstance[] = [];

  /** A listening server with its own service: devices reach it at https://127.0.0.1:port. */
  async function serve(config: Partial<WindowsEnrollConfig> = {}): Promise<{ url: string; service: WindowsEnrollService }> {
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    const service = createWindowsEnrollService({ store, ca, config: { publicUrl: url, credentialDomain: 'example.com', ...config }, log: quiet });
    // Client certificates asked for, not required: a renewal presents one, an enrollment has none yet.
    const app = Fastify({ https: { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false } });
    await app.register(windowsEnrollRoutes, { service, log: quiet });
    await app.listen({ port, host: '127.0.0.1' });
    servers.push(app);
    return { url, service };
  }

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    ca = generateCa();
  });
  afterAll(async () => {
    for (const s of servers) await s.close();
    await tdb?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const opensslVerify = (certPem: string, purpose = 'sslclient'): string => {
    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    writeFileSync(join(dir, 'dev.pem'), certPem);
    return execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', join(dir, 'ca.pem'), join(dir, 'dev.pem')], { encoding: 'utf8' }).trim();
  };
  const sha1Of = (pem: string): string => {
    writeFileSync(join(dir, 'fp.pem'), pem);
    return execFileSync('openssl', ['x509', '-in', join(dir, 'fp.pem'), '-noout', '-fingerprint', '-sha1'], { encoding: 'utf8' }).split('=')[1]!.trim().replace(/:/g, '');
  };

  it('enrolls a PC with a user name and password: the whole wire, then the store', async () => {
    const { url, service } = await serve();
    const cred = await service.issueCredential({ group: 'front-office', note: 'reception' });
    const answers: Array<[EnrollStep, HttpAnswer]> = [];
    const pc = await enrollWindowsDevice({ discoveryUrl: url, email: cred.username, password: cred.password, ca: tls.cert, deviceName: 'RECEPTION-01', onResponse: (s, r) => answers.push([s, r]) });

    expect(answers.map(([s]) => s)).toEqual(['probe', 'discover', 'policy', 'enroll']);
    for (const [step, r] of answers) {
      expect(r.status, step).toBe(200);
      expect(r.headers['transfer-encoding'], step).toBeUndefined();
      expect(Number(r.headers['content-length']), step).toBe(r.body.length);
      if (step !== 'probe') expect(r.headers['content-type'], step).toBe('application/soap+xml; charset=utf-8');
    }
    expect(answers[0]![1].body.length).toBe(0);

    expect(pc.managementUrl).toBe(`${url}/ManagementServer/MDM.svc`);
    expect(pc.providerId).toBe('Muster');
    expect(pc.provisioned.dmClient).toMatchObject({ EntDMID: pc.deviceId, EntDeviceName: 'RECEPTION-01' });
    expect(pc.poll).toEqual({ first: { everyMinutes: 3, times: 15 }, second: { everyMinutes: 15, times: 12 }, thenMinutes: 480, onLogin: true });
    expect(pc.policy.minimalKeyLength).toBe(2048);
    expect(forge.pki.certificateFromPem(pc.certPem).subject.getField('CN').value).toBe(`${pc.deviceId}!${cred.username}`);

    if (!noOpenssl) {
      expect(opensslVerify(pc.certPem)).toMatch(/: OK$/);
      // The document named both certificates by the thumbprints openssl computes.
      expect(pc.provisioned.client.thumbprint).toBe(sha1Of(pc.certPem));
      expect(Object.keys(pc.provisioned.roots)).toEqual([sha1Of(ca.certPem)]);
    }

    const certSha256 = sha256Fingerprint(pc.certPem);
    const device = await store.devices.get(pc.deviceId);
    expect(device).toMatchObject({ platform: 'windows', osVersion: '10.0.22631.2861', identifiers: { 'windows-device-id': pc.deviceId, hwdevid: pc.hwDevId }, labels: {} });
    expect(device!.attributes).toEqual({
      os: 'windows',
      'enrollment-source': 'mde2',
      'enrollment-type': 'full',
      'enrollment-group': 'front-office',
      'enrollment-user': cred.username,
      'device-name': 'RECEPTION-01',
      'os-edition': '48',
      'windows-device-type': 'CIMClient_Windows',
      'application-version': '10.0.22631.2861',
      'ux-initiated': 'true',
      locale: 'en-US',
    });
    expect(await store.identities.authenticate(certSha256)).toMatchObject({ deviceId: pc.deviceId, subject: `CN=${pc.deviceId}!${cred.username}`, revokedAt: null });
    const enrollment = await store.devices.getEnrollment(pc.deviceId);
    expect(enrollment).toMatchObject({ platform: 'windows', status: 'enrolled' });
    expect(enrollment!.state).toMatchObject({ hwDevId: pc.hwDevId, enrollmentType: 'full', certSha256, certThumbprint: pc.provisioned.client.thumbprint, certStore: 'User', providerId: 'Muster', user: cred.username });
    expect(Date.parse(String(enrollment!.state.enrolledAt))).toBeGreaterThan(Date.now() - 60_000);
    const audit = await store.audit.list({ limit: 1000 });
    expect(audit.find((a) => a.action === 'certificate.issue' && a.subject === `certificate/${certSha256}`)!.details).toMatchObject({ device: pc.deviceId, subject: `CN=${pc.deviceId}!${cred.username}`, revokedPrevious: 0 });
    expect(audit.find((a) => a.action === 'device.enroll' && a.subject === `device/${pc.deviceId}`)!.details).toMatchObject({ platform: 'windows', user: cred.username, group: 'front-office', oneTime: true, kind: 'new' });
    expect(await store.audit.verify()).toMatchObject({ ok: true });
    // The one-time credential is spent.
    await expect(enrollWindowsDevice({ discoveryUrl: url, email: cred.username, password: cred.password, ca: tls.cert })).rejects.toMatchObject({ step: 'policy', fault: { subcode: 's:Authentication' } });
  });

  it('a live DeviceID is re-enrolled only with a credential an admin issued for it: the identity and group are replaced, labels kept', async () => {
    const { url, service } = await serve();
    const first = await service.issueCredential({ group: 'lab' });
    const pc1 = await enrollWindowsDevice({ discoveryUrl: url, email: first.username, password: first.password, ca: tls.cert });
    await store.devices.upsert({ id: pc1.deviceId, platform: 'windows', labels: { ...(await store.devices.get(pc1.deviceId))!.labels, team: 'qa' } });
    // Any other credential naming this live DeviceID is a takeover attempt: refused, and it changes nothing.
    const other = await service.issueCredential({ group: 'office' });
    await expect(enrollWindowsDevice({ discoveryUrl: url, email: other.username, password: other.password, ca: tls.cert, deviceId: pc1.deviceId, hwDevId: pc1.hwDevId })).rejects.toMatchObject({ step: 'enroll' });
    expect(await store.identities.authenticate(sha256Fingerprint(pc1.certPem))).toMatchObject({ deviceId: pc1.deviceId });
    expect(await store.challenges.peek(other.password, 'windows-enroll')).toBeDefined();
    expect((await store.audit.list({ limit: 1000, subject: `device/${pc1.deviceId}` })).map((a) => a.action)).toContain('device.takeover-refused');
    // The same GUID in another case is the same PC (DeviceIDs are case-insensitive): refused too, and no second record.
    await expect(enrollWindowsDevice({ discoveryUrl: url, email: other.username, password: other.password, ca: tls.cert, deviceId: pc1.deviceId.toLowerCase(), hwDevId: pc1.hwDevId })).rejects.toMatchObject({ step: 'enroll' });
    expect(await store.devices.get(pc1.deviceId.toLowerCase())).toBeUndefined();

    const approved = await service.issueCredential({ group: 'office', device: pc1.deviceId });
    const pc2 = await enrollWindowsDevice({ discoveryUrl: url, email: approved.username, password: approved.password, ca: tls.cert, deviceId: pc1.deviceId, hwDevId: pc1.hwDevId });
    const [old, current] = await store.identities.listForDevice(pc1.deviceId);
    expect(old!.certSha256).toBe(sha256Fingerprint(pc1.certPem));
    expect(old!.revokedAt).not.toBeNull();
    expect(current).toMatchObject({ certSha256: sha256Fingerprint(pc2.certPem), revokedAt: null, platform: 'windows', protocol: 'windows-wstep', forDevice: pc1.deviceId });
    expect(await store.identities.authenticate(sha256Fingerprint(pc1.certPem))).toBeUndefined();
    // The admin approved this device coming back: its labels stay; the enrollment group is the new credential's.
    expect((await store.devices.get(pc1.deviceId))!.labels).toEqual({ team: 'qa' });
    expect((await store.devices.get(pc1.deviceId))!.attributes['enrollment-group']).toBe('office');
    expect((await store.devices.getEnrollment(pc1.deviceId))!.state.certSha256).toBe(sha256Fingerprint(pc2.certPem));
    const enrolls = (await store.audit.list({ limit: 1000, subject: `device/${pc1.deviceId}` })).filter((a) => a.action === 'device.enroll');
    expect(enrolls.map((a) => (a.details as { kind: string }).kind)).toEqual(['new', 'approved']);
    expect((await store.audit.list({ limit: 1000, subject: `certificate/${sha256Fingerprint(pc2.certPem)}` }))[0]!.details).toMatchObject({ revokedPrevious: 1 });
    // A credential for one device enrolls no other.
    const forPc1 = await service.issueCredential({ device: pc1.deviceId });
    await expect(enrollWindowsDevice({ discoveryUrl: url, email: forPc1.username, password: forPc1.password, ca: tls.cert })).rejects.toMatchObject({ step: 'enroll' });
  });

  it('enrolls through the federated page: the code typed once, the token used as bearer', async () => {
    const { url, service } = await serve({ authPolicy: 'Federated' });
    const cred = await service.issueCredential({ group: 'remote' });
    const steps: EnrollStep[] = [];
    const pc = await enrollWindowsDevice({ discoveryUrl: url, email: cred.username, enrollmentCode: cred.password, ca: tls.cert, enrollmentType: 'Device', onResponse: (s, r) => {
      steps.push(s);
      expect(r.headers['transfer-encoding']).toBeUndefined();
    } });
    expect(steps).toEqual(['probe', 'discover', 'auth-page', 'auth-submit', 'policy', 'enroll']);
    expect(pc.discovery.authenticationServiceUrl).toBe(`${url}/EnrollmentServer/Auth`);
    expect(pc.provisioned.client.store).toBe('System');
    expect((await store.devices.get(pc.deviceId))!.attributes['enrollment-group']).toBe('remote');
    expect((await store.audit.list({ limit: 1000, subject: `device/${pc.deviceId}` }))[0]!.details).toMatchObject({ via: 'token', enrollmentType: 'device' });
    // A wrong code never gets a token.
    const again = await service.issueCredential();
    await expect(enrollWindowsDevice({ discoveryUrl: url, email: again.username, enrollmentCode: 'wrong', ca: tls.cert })).rejects.toMatchObject({ step: 'auth-submit' });
  });

  it('renews automatically with the current certificate on the TLS connection', async () => {
    const { url, service } = await serve();
    const cred = await service.issueCredential();
    const pc = await enrollWindowsDevice({ discoveryUrl: url, email: cred.username, password: cred.password, ca: tls.cert });
    const renewUrl = pc.provisioned.renewal!.ServerURL!;
    expect(renewUrl).toBe(`${url}/EnrollmentServer/Enrollment.svc`);
    const renewed = await renewWindowsCertificate({ enrollmentUrl: renewUrl, certPem: pc.certPem, keyPem: pc.keyPem, deviceId: pc.deviceId, ca: tls.cert });
    expect(renewed.store).toBe('User');
    if (!noOpenssl) expect(opensslVerify(renewed.certPem)).toMatch(/: OK$/);
    const newSha = sha256Fingerprint(renewed.certPem);
    expect(await store.identities.authenticate(newSha)).toMatchObject({ deviceId: pc.deviceId });
    // The renewed-from certificate stays valid until it expires (in case this answer was lost).
    expect(await store.identities.authenticate(sha256Fingerprint(pc.certPem))).toMatchObject({ deviceId: pc.deviceId });
    expect((await store.devices.getEnrollment(pc.deviceId))!.state).toMatchObject({ certSha256: newSha, certThumbprint: sha1Hex(renewed.certPem) });
    expect((await store.audit.list({ limit: 1000, subject: `certificate/${newSha}` }))[0]).toMatchObject({ action: 'certificate.renew', details: { device: pc.deviceId, renewalOf: sha256Fingerprint(pc.certPem) } });

    // With a revoked certificate, or one of another CA: NotEligibleToRenew (without one: enroll-routes.test.ts).
    await store.identities.revokeDevice(pc.deviceId);
    const refused = await renewWindowsCertificate({ enrollmentUrl: renewUrl, certPem: renewed.certPem, keyPem: renewed.keyPem, ca: tls.cert }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WindowsEnrollError);
    expect(refused).toMatchObject({ fault: { subcode: 's:Authentication', errorType: 'NotEligibleToRenew' } });
    const otherCa = generateCa();
    const k = forge.pki.rsa.generateKeyPair(1024);
    const foreign = otherCa.issue({ publicKey: k.publicKey, subject: [{ shortName: 'CN', value: 'stranger' }] });
    const strange = await renewWindowsCertificate({ enrollmentUrl: renewUrl, certPem: forge.pki.certificateToPem(foreign), keyPem: forge.pki.privateKeyToPem(k.privateKey), ca: tls.cert }).catch((e: unknown) => e);
    expect(strange).toMatchObject({ fault: { subcode: 's:Authentication', reason: expect.stringMatching(/not issued by this CA/) } });
  });
});
