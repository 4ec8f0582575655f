// The route × credential matrix of docs/security.md: every device and admin
// endpoint against each kind of wrong credential — none, another device's,
// expired, revoked, from a foreign CA, another platform's, replayed, of the
// wrong scope (a credential this server issued for another purpose, or a
// token of a lower scope). Cells another test already proves are cited in
// the document instead of repeated here (takeover.test.ts holds the
// another-device and other-platform attacks). One server mounts Apple and
// Windows with one CA, as `muster serve` does (identity-rig.ts).
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePlist } from '../../protocols/apple/plist.js';
import { buildCsr, buildPkiRequest, readCertRep, selfSignedCert } from '../../protocols/apple/scep/client.js';
import { FailInfo } from '../../protocols/apple/scep/cms.js';
import type { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { generateCa } from '../../protocols/pki/ca.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { backends } from '../support/db.js';
import {
  CORP_PSK,
  MAC_BUNDLE,
  WEBHOOK_SECRET,
  api,
  applePut,
  auditOf,
  authenticate,
  challengeOf,
  enrollPc,
  enrolledMac,
  federatedSignIn,
  heldOfPc,
  identityRig,
  issueRequest,
  labelled,
  mdmSignature,
  omaDm,
  pemOf,
  policyRequest,
  profileChallenge,
  scep,
  scepIdentity,
  sha256Of,
  tokenSecurity,
  tokenUpdate,
  usernameSecurity,
  windowsRenew,
  type Held,
  type Rig,
} from './identity-rig.js';

const DAY = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DENIED = 'device certificate not accepted';

describe.each(backends)('route × credential matrix (%s)', { timeout: 180_000 }, (backend) => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await identityRig(backend);
  });
  afterAll(async () => {
    await rig?.close();
  });

  const takeoverReasons = async (id: string) => (await auditOf(rig, id)).filter((a) => a.action === 'device.takeover-refused').map((a) => a.details.reason);
  /** An identity of our own, through SCEP and Authenticate as `udid` (a device whose key the test holds). */
  const ownMac = async (udid: string): Promise<Held> => {
    const held = await scepIdentity(rig.url, await profileChallenge(rig));
    expect((await applePut(rig.url, 'checkin', authenticate(udid), held)).status).toBe(200);
    return held;
  };

  describe('Apple checkin and connect (PUT /mdm/apple/checkin, /mdm/apple/connect)', () => {
    // The Mac every refused request names: at the end it still has its queue and gets its command.
    let mac: SimulatedAppleDevice;
    let queued: string[];
    beforeAll(async () => {
      mac = await enrolledMac(rig, '00008112-0000000000M00001');
      await labelled(rig, mac.udid, 'apple', { team: 'design' });
      queued = (await rig.store.commands.listForDevice(mac.udid)).filter((c) => c.state === 'pending').map((c) => c.uuid);
      expect(queued.length).toBeGreaterThan(0);
    });

    it('none: a check-in or command report without Mdm-Signature is 403, never 401', async () => {
      for (const dict of [authenticate(mac.udid), tokenUpdate(mac.udid, Buffer.alloc(32, 1)), { MessageType: 'CheckOut', UDID: mac.udid }]) {
        const r = await applePut(rig.url, 'checkin', dict, null);
        expect(r.status).toBe(403);
        expect(r.text).toBe(DENIED);
      }
      expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, null)).status).toBe(403);
    });

    it("another device's: a certificate bound to one Mac, naming another, is 403 on both and audited as a takeover", async () => {
      const other = await ownMac('00008112-0000000000M0000A');
      for (const dict of [authenticate(mac.udid), tokenUpdate(mac.udid, Buffer.alloc(32, 2)), { MessageType: 'CheckOut', UDID: mac.udid }]) {
        expect((await applePut(rig.url, 'checkin', dict, other)).status).toBe(403);
      }
      const report = await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, other);
      expect(report.status).toBe(403);
      expect(report.text).toMatch(/belongs to another device/);
      // Acknowledging the Mac's command by its UUID as another device is refused before the report is read.
      expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Acknowledged', CommandUUID: queued[0] }, other)).status).toBe(403);
      expect(await takeoverReasons(mac.udid)).toEqual(['other-device', 'other-device', 'other-device', 'other-device', 'other-device']);
    });

    it('expired: an expired certificate of this CA, bound to the Mac, is 403 on both', async () => {
      const expired = rig.issue({ agedMs: 3 * DAY, validityDays: 1, cn: mac.udid });
      await rig.record(expired, 'apple', mac.udid);
      expect((await applePut(rig.url, 'checkin', tokenUpdate(mac.udid, Buffer.alloc(32, 3)), expired)).status).toBe(403);
      expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, expired)).status).toBe(403);
      expect(rig.log.lines).toContainEqual(expect.objectContaining({ msg: 'command report without a valid device certificate', fields: expect.objectContaining({ reason: expect.stringMatching(/expired/) }) }));
    });

    it('revoked: the certificate of a Mac that checked out is 403 on both', async () => {
      const udid = '00008112-0000000000M0000B';
      const held = await ownMac(udid);
      expect((await applePut(rig.url, 'checkin', { MessageType: 'CheckOut', UDID: udid }, held)).status).toBe(200);
      expect((await rig.store.identities.get(sha256Of(held.certDer)))!.revokedAt).not.toBeNull();
      const again = await applePut(rig.url, 'checkin', authenticate(udid), held);
      expect(again.status).toBe(403);
      expect(again.text).toMatch(/revoked/);
      expect((await applePut(rig.url, 'connect', { UDID: udid, Status: 'Idle' }, held)).text).toMatch(/revoked/);
    });

    it('foreign CA: a certificate from another CA is 403 on both, even for a new UDID', async () => {
      const foreign = rig.issue({ ca: generateCa({ keyBits: 2048 }) });
      expect((await applePut(rig.url, 'checkin', authenticate('00008112-0000000000M0000C'), foreign)).status).toBe(403);
      expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, foreign)).status).toBe(403);
      expect(await rig.store.devices.get('00008112-0000000000M0000C')).toBeUndefined();
      expect(rig.log.lines).toContainEqual(expect.objectContaining({ fields: expect.objectContaining({ reason: expect.stringMatching(/not issued by this CA/) }) }));
    });

    it("replayed: a device's signature over another body is 403; the device's own Idle, the same bytes again, is answered", async () => {
      const udid = '00008112-0000000000M0000D';
      const held = await ownMac(udid);
      const first = tokenUpdate(udid, Buffer.alloc(32, 4));
      expect((await applePut(rig.url, 'checkin', first, held)).status).toBe(200);
      // Someone who saw that request swaps the token for theirs, keeping the signature.
      const stolen = mdmSignature(encodePlist(first), held);
      const swapped = await applePut(rig.url, 'checkin', tokenUpdate(udid, Buffer.alloc(32, 5)), null, { signature: stolen });
      expect(swapped.status).toBe(403);
      expect((await rig.store.devices.getEnrollment(udid))!.state.token).toBe(Buffer.alloc(32, 4).toString('hex'));
      expect((await applePut(rig.url, 'connect', { UDID: udid, Status: 'Idle', Extra: 1 }, null, { signature: mdmSignature(encodePlist({ UDID: udid, Status: 'Idle' }), held) })).status).toBe(403);
      // Mdm-Signature carries no nonce or time, and a device's Idle is the same body every time (RSA PKCS#1 v1.5 is
      // deterministic): the same bytes must keep working, or real devices would be locked out after one poll.
      const idle = { UDID: udid, Status: 'Idle' };
      expect(mdmSignature(encodePlist(idle), held)).toBe(mdmSignature(encodePlist(idle), held));
      expect((await applePut(rig.url, 'connect', idle, held)).status).toBe(200);
      expect((await applePut(rig.url, 'connect', idle, held)).status).toBe(200);
    });

    it('wrong scope: a certificate of this CA that is no device identity (never recorded by an enrollment) is 403 on both', async () => {
      const stray = rig.issue({ cn: 'not a device' });
      const r = await applePut(rig.url, 'checkin', authenticate('00008112-0000000000M0000E'), stray);
      expect(r.status).toBe(403);
      expect(r.text).toMatch(/not issued by this server/);
      expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, stray)).status).toBe(403);
      expect(await rig.store.devices.get('00008112-0000000000M0000E')).toBeUndefined();
    });

    it('after every refusal above the Mac still holds its queue and gets its command', async () => {
      const now = (await rig.store.commands.listForDevice(mac.udid)).filter((c) => queued.includes(c.uuid));
      expect(now.map((c) => c.state)).toEqual(queued.map(() => 'pending'));
      expect((await rig.store.devices.getEnrollment(mac.udid))!.state.token).toBe(mac.pushToken);
      await mac.connect();
      expect(JSON.stringify(mac.profiles.get(MAC_BUNDLE)?.content)).toContain(CORP_PSK);
    });
  });

  describe('Apple SCEP (/mdm/apple/scep)', () => {
    it("PKCSReq · another device's: a profile an admin issued for one Mac gives a certificate that Authenticates as that Mac only", async () => {
      const x = '00008112-0000000000S00001';
      const y = await enrolledMac(rig, '00008112-0000000000S00002');
      await rig.store.devices.upsert({ id: x, platform: 'apple' });
      const held = await scepIdentity(rig.url, await profileChallenge(rig, x));
      for (const udid of [y.udid, '00008112-0000000000S00003']) {
        const r = await applePut(rig.url, 'checkin', authenticate(udid), held);
        expect(r.status).toBe(403);
        expect(r.text).toMatch(/issued for another device/);
      }
      expect(await takeoverReasons(y.udid)).toEqual(['credential-for-other-device']);
      expect((await rig.store.identities.get(sha256Of(held.certDer)))!.deviceId).toBeNull();
      await y.connect();
      expect((await applePut(rig.url, 'checkin', authenticate(x), held)).status).toBe(200);
    });

    it('PKCSReq · expired: an expired challenge gets a FAILURE and no certificate', async () => {
      const challenge = challengeOf((await rig.apple.enrollmentProfile({ ttlMs: 1 })).bytes);
      await sleep(50);
      expect(await scep(rig.url, { challenge })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
    });

    it("PKCSReq · other platform's and wrong scope: a Windows enrollment password or an enrollment-link code is no SCEP challenge, and neither is used up", async () => {
      const cred = await rig.windows.issueCredential({});
      const link = await rig.apple.enrollmentLink();
      const code = new URL(link).searchParams.get('code')!;
      for (const challenge of [cred.password, code]) expect(await scep(rig.url, { challenge })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
      expect(await rig.store.challenges.peek(cred.password, 'windows-enroll')).toBeDefined();
      expect((await fetch(`${rig.url}/mdm/apple/enroll?code=${code}`)).status).toBe(200);
    });

    it('RenewalReq · none: signed with a self-signed certificate (no identity at all) gets a FAILURE', async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      expect(await scep(rig.url, { renewing: { key: privateKey, certDer: selfSignedCert(privateKey, 'nobody') } })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
    });

    it("RenewalReq · another device's: a renewal signed with a Mac's certificate stays that Mac's: it cannot Authenticate as another", async () => {
      const udid = '00008112-0000000000S00004';
      const held = await ownMac(udid);
      const victim = await enrolledMac(rig, '00008112-0000000000S00005');
      const r = await scep(rig.url, { renewing: held });
      if (r.status !== 'SUCCESS') throw new Error(`renewal refused: ${r.status}`);
      expect(await rig.store.identities.get(sha256Of(r.held.certDer))).toMatchObject({ deviceId: udid, renewalOf: sha256Of(held.certDer) });
      expect((await applePut(rig.url, 'checkin', authenticate(victim.udid), r.held)).status).toBe(403);
      expect(await takeoverReasons(victim.udid)).toEqual(['other-device']);
      expect((await applePut(rig.url, 'connect', { UDID: udid, Status: 'Idle' }, r.held)).status).toBe(200);
    });

    it('RenewalReq · expired and foreign CA: a certificate that has expired, or is from another CA, gets a FAILURE', async () => {
      const udid = '00008112-0000000000S00006';
      await ownMac(udid);
      const expired = rig.issue({ agedMs: 3 * DAY, validityDays: 1, cn: udid });
      await rig.record(expired, 'apple', udid);
      const foreign = rig.issue({ ca: generateCa({ keyBits: 2048 }) });
      for (const renewing of [expired, foreign]) expect(await scep(rig.url, { renewing })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
      expect(await rig.store.identities.listForDevice(udid)).toHaveLength(2);
    });

    it('RenewalReq · revoked: the certificate of a Mac that checked out cannot renew', async () => {
      const udid = '00008112-0000000000S00007';
      const held = await ownMac(udid);
      expect((await applePut(rig.url, 'checkin', { MessageType: 'CheckOut', UDID: udid }, held)).status).toBe(200);
      expect(await scep(rig.url, { renewing: held })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
      expect(await rig.store.identities.listForDevice(udid)).toHaveLength(1);
    });

    it('RenewalReq · replayed: the same signed request again gives one more certificate for the same new key, bound to the same Mac, readable only with its key', async () => {
      const udid = '00008112-0000000000S00008';
      const held = await ownMac(udid);
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const req = buildPkiRequest({ messageType: 'RenewalReq', csrDer: buildCsr(privateKey, [{ shortName: 'CN', value: udid }]), signerCertDer: held.certDer, signerKey: held.key, caCertDer: rig.ca.certDer });
      const post = async () => Buffer.from(await (await fetch(`${rig.url}/mdm/apple/scep?operation=PKIOperation`, { method: 'POST', headers: { 'content-type': 'application/x-pki-message' }, body: req.der })).arrayBuffer());
      const answers = [await post(), await post()];
      const issued = answers.map((a) => readCertRep(a, { caCertDer: rig.ca.certDer, recipientCertDer: held.certDer, recipientKey: held.key }));
      expect(issued.map((x) => x.status)).toEqual(['SUCCESS', 'SUCCESS']);
      for (const x of issued) {
        expect(await rig.store.identities.get(sha256Of(x.certificates[0]!))).toMatchObject({ deviceId: udid, renewalOf: sha256Of(held.certDer) });
      }
      // The answer is encrypted to the signer: whoever replayed the request cannot read it.
      const { privateKey: someoneElse } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      expect(() => readCertRep(answers[1]!, { caCertDer: rig.ca.certDer, recipientCertDer: selfSignedCert(someoneElse, 'eve'), recipientKey: someoneElse })).toThrow();
    });

    it('RenewalReq · wrong scope: a certificate of this CA that is no device identity cannot renew', async () => {
      expect(await scep(rig.url, { renewing: rig.issue({ cn: 'not a device' }) })).toMatchObject({ status: 'FAILURE', failInfo: FailInfo.badRequest });
    });
  });

  describe('Apple enroll link (GET /mdm/apple/enroll?code=)', () => {
    const open = (code: string | undefined) => fetch(`${rig.url}/mdm/apple/enroll${code === undefined ? '' : `?code=${encodeURIComponent(code)}`}`);

    it('none: no code, or an unknown one, is 403 and serves nothing', async () => {
      for (const code of [undefined, '', 'f'.repeat(40)]) {
        const r = await open(code);
        expect(r.status).toBe(403);
        expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
      }
    });

    it("another device's: a link an admin made for one Mac serves, once, a profile whose certificate Authenticates as that Mac only", async () => {
      const mac = await enrolledMac(rig, '00008112-0000000000L00001');
      const other = await enrolledMac(rig, '00008112-0000000000L00002');
      const code = new URL(await rig.apple.enrollmentLink({ device: mac.udid })).searchParams.get('code')!;
      const r = await open(code);
      expect(r.status).toBe(200);
      expect((await open(code)).status).toBe(403);
      const held = await scepIdentity(rig.url, challengeOf(Buffer.from(await r.arrayBuffer())));
      expect((await applePut(rig.url, 'checkin', authenticate(other.udid), held)).status).toBe(403);
      expect(await takeoverReasons(other.udid)).toEqual(['credential-for-other-device']);
      // For the Mac it was made for it is an admin's approval: it replaces that Mac's identity.
      expect((await applePut(rig.url, 'checkin', authenticate(mac.udid), held)).status).toBe(200);
      expect((await rig.store.identities.get(mac.certSha256))!.revokedAt).not.toBeNull();
    });

    it('expired: an expired link is 403', async () => {
      const code = new URL(await rig.apple.enrollmentLink({ ttlMs: 1 })).searchParams.get('code')!;
      await sleep(50);
      expect((await open(code)).status).toBe(403);
    });

    it("other platform's and wrong scope: a Windows enrollment password or an SCEP challenge is no link code (403), and neither is used up", async () => {
      const cred = await rig.windows.issueCredential({});
      const challenge = await profileChallenge(rig);
      for (const code of [cred.password, challenge]) expect((await open(code)).status).toBe(403);
      expect(await rig.store.challenges.peek(cred.password, 'windows-enroll')).toBeDefined();
      expect(await scep(rig.url, { challenge })).toMatchObject({ status: 'SUCCESS' });
    });
  });

  describe('Windows Policy, Auth page, Issue (Policy.svc, /EnrollmentServer/Auth, Enrollment.svc Issue)', () => {
    const newId = () => `MX${Math.random().toString(16).slice(2, 12).toUpperCase()}`.padEnd(32, '0');

    it('none: GetPolicies and RequestSecurityToken without wsse:Security are InvalidSecurity faults; an empty code on the page hands back no token', async () => {
      for (const r of [await policyRequest(rig, undefined), await issueRequest(rig, undefined, newId())]) {
        expect(r.status).toBe(500);
        expect(r.subcode).toBe('a:InvalidSecurity');
      }
      const page = await federatedSignIn(rig, '');
      expect(page.status).toBe(200);
      expect(page.token).toBeUndefined();
    });

    it("another device's: a credential an admin issued for one PC gets the policy (it names no device), and is refused for another DeviceID", async () => {
      const { enrolled } = await enrollPc(rig, await rig.windows.issueCredential({}));
      const approved = await rig.windows.issueCredential({ device: enrolled.deviceId });
      expect((await policyRequest(rig, usernameSecurity(approved.username, approved.password))).status).toBe(200);
      const r = await issueRequest(rig, usernameSecurity(approved.username, approved.password), newId());
      expect(r.subcode).toBe('s:Authorization');
      expect(r.reason).toMatch(/issued for another device/);
      expect(await rig.store.challenges.peek(approved.password, 'windows-enroll')).toBeDefined();
    });

    it('expired: an expired credential is an Authentication fault at Policy.svc and Enrollment.svc, and the page hands back no token', async () => {
      const cred = await rig.windows.issueCredential({ ttlMs: 1 });
      await sleep(50);
      expect((await policyRequest(rig, usernameSecurity(cred.username, cred.password))).subcode).toBe('s:Authentication');
      const id = newId();
      expect((await issueRequest(rig, usernameSecurity(cred.username, cred.password), id)).subcode).toBe('s:Authentication');
      expect(await rig.store.devices.get(id)).toBeUndefined();
      expect((await federatedSignIn(rig, cred.password)).token).toBeUndefined();
    });

    it("other platform's: an Apple SCEP challenge or enrollment-link code is no Windows credential, and is not used up", async () => {
      const challenge = await profileChallenge(rig);
      const code = new URL(await rig.apple.enrollmentLink()).searchParams.get('code')!;
      for (const secret of [challenge, code]) {
        expect((await policyRequest(rig, usernameSecurity('enroll-x@example.com', secret))).subcode).toBe('s:Authentication');
        expect((await issueRequest(rig, usernameSecurity('enroll-x@example.com', secret), newId())).subcode).toBe('s:Authentication');
        expect((await federatedSignIn(rig, secret)).token).toBeUndefined();
      }
      expect(await scep(rig.url, { challenge })).toMatchObject({ status: 'SUCCESS' });
      expect((await fetch(`${rig.url}/mdm/apple/enroll?code=${code}`)).status).toBe(200);
    });

    it("wrong scope: a federated sign-in token is no password, a credential's password is no sign-in token, and a token is no code", async () => {
      const cred = await rig.windows.issueCredential({});
      const { token } = await federatedSignIn(rig, cred.password);
      expect(token).toMatch(/^muster_wab_/);
      const bare = token!.slice('muster_wab_'.length);
      for (const security of [usernameSecurity(cred.username, token!), usernameSecurity(cred.username, bare), tokenSecurity(cred.password), tokenSecurity(`muster_wab_${cred.password}`)]) {
        expect((await policyRequest(rig, security)).subcode).toBe('s:Authentication');
        expect((await issueRequest(rig, security, newId())).subcode).toBe('s:Authentication');
      }
      expect((await federatedSignIn(rig, token!)).token).toBeUndefined();
      // Both still work for what they are.
      expect((await policyRequest(rig, tokenSecurity(token!))).status).toBe(200);
      expect((await policyRequest(rig, usernameSecurity(cred.username, cred.password))).status).toBe(200);
    });

    it('replayed: once a one-time credential has enrolled a PC, its code on the page hands back no token, and a token the page gave before is refused', async () => {
      const cred = await rig.windows.issueCredential({});
      const { token } = await federatedSignIn(rig, cred.password);
      await enrollPc(rig, cred);
      expect((await federatedSignIn(rig, cred.password)).token).toBeUndefined();
      expect((await issueRequest(rig, tokenSecurity(token!), newId())).subcode).toBe('s:Authentication');
    });
  });

  describe('Windows Renew (Enrollment.svc Renew)', () => {
    let a: Awaited<ReturnType<typeof enrollPc>>;
    let b: Awaited<ReturnType<typeof enrollPc>>;
    beforeAll(async () => {
      a = await enrollPc(rig, await rig.windows.issueCredential({}));
      b = await enrollPc(rig, await rig.windows.issueCredential({}));
    });
    const identitiesOf = async (id: string) => (await rig.store.identities.listForDevice(id)).length;

    it('none: a renewal without the current certificate is NotEligibleToRenew', async () => {
      const r = await windowsRenew(rig, heldOfPc(a.enrolled), { deviceId: a.enrolled.deviceId, presented: null });
      expect(r).toMatchObject({ status: 500, subcode: 's:Authentication' });
      expect(r.body).toContain('NotEligibleToRenew');
    });

    it("another device's: PC A's certificate renewing for PC B's DeviceID is an Authorization fault, and nothing is issued", async () => {
      const r = await windowsRenew(rig, heldOfPc(a.enrolled), { deviceId: b.enrolled.deviceId });
      expect(r).toMatchObject({ subcode: 's:Authorization', reason: expect.stringMatching(/belongs to device/) });
      expect(await identitiesOf(a.enrolled.deviceId)).toBe(1);
      expect(await identitiesOf(b.enrolled.deviceId)).toBe(1);
      // A claim on PC B made with PC A's certificate: audited like every other takeover attempt.
      expect((await auditOf(rig, b.enrolled.deviceId)).filter((x) => x.action === 'device.takeover-refused').map((x) => [x.actor, x.details.reason, x.details.certSha256])).toEqual([['wstep', 'other-device', sha256Of(heldOfPc(a.enrolled).certDer)]]);
    });

    it('expired: an expired certificate of this CA, bound to the PC, cannot renew', async () => {
      const expired = rig.issue({ agedMs: 3 * DAY, validityDays: 1, cn: a.enrolled.deviceId });
      await rig.record(expired, 'windows', a.enrolled.deviceId);
      const r = await windowsRenew(rig, expired, { deviceId: a.enrolled.deviceId });
      expect(r).toMatchObject({ subcode: 's:Authentication', reason: expect.stringMatching(/expired/) });
    });

    it('foreign CA: a certificate from another CA cannot renew', async () => {
      const r = await windowsRenew(rig, rig.issue({ ca: generateCa({ keyBits: 2048 }) }), { deviceId: a.enrolled.deviceId });
      expect(r).toMatchObject({ subcode: 's:Authentication', reason: expect.stringMatching(/not issued by this CA/) });
    });

    it("other platform's: an Apple identity of this CA cannot renew at WSTEP, not even naming a PC", async () => {
      const held = await ownMac('00008112-0000000000R00001');
      const before = await identitiesOf(a.enrolled.deviceId);
      for (const deviceId of [undefined, a.enrolled.deviceId]) {
        const r = await windowsRenew(rig, held, deviceId ? { deviceId } : {});
        expect(r).toMatchObject({ subcode: 's:Authentication', reason: expect.stringMatching(/another platform/) });
      }
      expect(await identitiesOf(a.enrolled.deviceId)).toBe(before);
      expect(await identitiesOf('00008112-0000000000R00001')).toBe(1);
    });

    it("replayed: PC A's signed renewal sent with PC B's certificate is refused", async () => {
      const r = await windowsRenew(rig, heldOfPc(a.enrolled), { presented: heldOfPc(b.enrolled).certDer });
      expect(r.status).toBe(500);
      expect(r.subcode).toBe('s:CertificateRequest');
      expect(await identitiesOf(b.enrolled.deviceId)).toBe(1);
    });

    it('wrong scope: a certificate of this CA that is no device identity cannot renew', async () => {
      const r = await windowsRenew(rig, rig.issue({ cn: 'not a device' }));
      expect(r).toMatchObject({ subcode: 's:Authentication', reason: expect.stringMatching(/not issued by this server/) });
    });

    it('revoked: a retired PC cannot renew; the honest renewal of a live one works', async () => {
      const ok = await windowsRenew(rig, heldOfPc(b.enrolled), { deviceId: b.enrolled.deviceId });
      expect(ok.status).toBe(200);
      expect(await rig.store.identities.get(sha256Of(ok.certDer!))).toMatchObject({ deviceId: b.enrolled.deviceId, platform: 'windows', renewalOf: sha256Of(heldOfPc(b.enrolled).certDer) });
      expect((await api(rig, 'POST', `/devices/${b.enrolled.deviceId}/retire`, rig.tokens.admin, { confirm: b.enrolled.deviceId })).status).toBe(200);
      const r = await windowsRenew(rig, heldOfPc(b.enrolled), { deviceId: b.enrolled.deviceId });
      expect(r).toMatchObject({ subcode: 's:Authentication', reason: expect.stringMatching(/revoked/) });
    });
  });

  describe('Windows OMA-DM (POST /ManagementServer/MDM.svc)', () => {
    let a: Awaited<ReturnType<typeof enrollPc>>;
    let b: Awaited<ReturnType<typeof enrollPc>>;
    beforeAll(async () => {
      a = await enrollPc(rig, await rig.windows.issueCredential({}));
      b = await enrollPc(rig, await rig.windows.issueCredential({}));
      await b.pc.sync();
    });

    it('none: a session without a certificate is 403', async () => {
      const bare = new SimulatedWindowsDevice({ managementUrl: b.enrolled.managementUrl, deviceId: b.enrolled.deviceId, certPem: b.enrolled.certPem, keyPem: '', caPem: '' });
      await expect(bare.sync()).rejects.toMatchObject({ status: 403 });
    });

    it("another device's: PC A's certificate naming PC B is 403 and audited; B's sessions go on", async () => {
      const before = await rig.store.windowsSessions.get(b.enrolled.deviceId, b.pc.sessions.at(-1)!.sessionId);
      await expect(omaDm({ ...b.enrolled, certPem: a.enrolled.certPem }).sync()).rejects.toMatchObject({ status: 403 });
      expect(await takeoverReasons(b.enrolled.deviceId)).toEqual(['other-device']);
      expect(await rig.store.windowsSessions.get(b.enrolled.deviceId, b.pc.sessions.at(-1)!.sessionId)).toEqual(before);
      await b.pc.sync();
    });

    it('expired: an expired certificate of this CA, bound to the PC, is 403', async () => {
      const expired = rig.issue({ agedMs: 3 * DAY, validityDays: 1, cn: b.enrolled.deviceId });
      await rig.record(expired, 'windows', b.enrolled.deviceId);
      await expect(omaDm({ ...b.enrolled, certPem: pemOf(expired.certDer) }).sync()).rejects.toMatchObject({ status: 403 });
    });

    it('foreign CA: a certificate from another CA is 403', async () => {
      await expect(omaDm({ ...b.enrolled, certPem: pemOf(rig.issue({ ca: generateCa({ keyBits: 2048 }) }).certDer) }).sync()).rejects.toMatchObject({ status: 403 });
    });

    it('wrong scope: a certificate of this CA that is no device identity is 403', async () => {
      await expect(omaDm({ ...b.enrolled, certPem: pemOf(rig.issue({ cn: b.enrolled.deviceId }).certDer) }).sync()).rejects.toMatchObject({ status: 403 });
      expect(rig.log.lines).toContainEqual(expect.objectContaining({ msg: 'windows OMA-DM message refused', fields: expect.objectContaining({ reason: 'the identity was not issued by this server' }) }));
    });

    it('revoked: the certificate an approved re-enrollment replaced is 403', async () => {
      const approved = await rig.windows.issueCredential({ device: a.enrolled.deviceId });
      const replaced = await enrollPc(rig, { ...approved, deviceId: a.enrolled.deviceId });
      await expect(a.pc.sync()).rejects.toMatchObject({ status: 403 });
      expect(rig.log.lines).toContainEqual(expect.objectContaining({ msg: 'windows OMA-DM message refused', fields: expect.objectContaining({ reason: 'the identity is revoked' }) }));
      await replaced.pc.sync();
    });
  });

  describe('admin API and webhook (/api/v1, /hooks/git)', () => {
    const routes = {
      read: ['GET', '/devices'] as const,
      operate: ['POST', '/enroll/windows'] as const,
      admin: ['POST', '/devices/nobody/retire'] as const,
    };

    it('none: every scope of route answers 401 without a token', async () => {
      for (const [method, path] of Object.values(routes)) {
        const r = await api(rig, method, path, undefined, method === 'POST' ? {} : undefined);
        expect(r.status).toBe(401);
      }
    });

    it('revoked: a revoked token of any scope is 401', async () => {
      for (const scope of ['read', 'operate', 'admin'] as const) {
        const { token, record } = await rig.store.tokens.create(`revoked-${scope}`, scope);
        const [method, path] = routes[scope];
        expect((await api(rig, method, path, token, method === 'POST' ? { confirm: 'nobody' } : undefined)).status).not.toBe(401);
        expect(await rig.store.tokens.revoke(record.id)).toBe(true);
        expect((await api(rig, method, path, token, method === 'POST' ? { confirm: 'nobody' } : undefined)).status).toBe(401);
      }
    });

    it('wrong scope: a read token cannot enroll or retire, an operate token cannot retire (403), and nothing happens', async () => {
      const { enrolled } = await enrollPc(rig, await rig.windows.issueCredential({}));
      const id = enrolled.deviceId;
      expect((await api(rig, 'POST', '/enroll/windows', rig.tokens.read, {})).status).toBe(403);
      for (const token of [rig.tokens.read, rig.tokens.operate]) expect((await api(rig, 'POST', `/devices/${id}/retire`, token, { confirm: id })).status).toBe(403);
      expect((await rig.store.devices.getEnrollment(id))!.status).toBe('enrolled');
      expect(await rig.store.identities.liveForDevice(id)).toHaveLength(1);
    });

    it('/hooks/git · none: an unsigned push is 401 and starts no sync; replayed: the same signed push again is accepted (a sync only fetches the branch head)', async () => {
      const body = JSON.stringify({ ref: 'refs/heads/main', after: 'abc' });
      const push = (sig?: string) => rig.app.inject({ method: 'POST', url: '/hooks/git', payload: body, headers: { 'content-type': 'application/json', ...(sig ? { 'x-hub-signature-256': sig } : {}) } });
      const before = rig.syncs.count;
      expect((await push()).statusCode).toBe(401);
      expect(rig.syncs.count).toBe(before);
      const sig = 'sha256=' + createHmac('sha256', WEBHOOK_SECRET).update(body).digest('hex');
      expect((await push(sig)).statusCode).toBe(202);
      expect((await push(sig)).statusCode).toBe(202);
      expect(rig.syncs.count).toBe(before + 2);
    });
  });

  it('every refusal left the audit chain whole', async () => {
    expect(await rig.store.audit.verify()).toMatchObject({ ok: true });
  });
});
