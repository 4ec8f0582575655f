// Device takeover, attack by attack (issue 13, docs/security.md "Device
// identity"). One server mounts Apple and Windows on one listener with one
// device CA, as `muster serve` does; honest devices are the simulators, and
// attackers hold real credentials (an enrollment profile, a Windows
// enrollment credential, another platform's certificate) and lie about which
// device they are. Each attack is refused (403 to Apple, 403 on OMA-DM, a SOAP
// Authorization fault at Windows enrollment), audited as
// device.takeover-refused, and changes nothing: the live device keeps its
// queue, push token, certificate, labels and bundles, and goes on working.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Platform } from '../../controller/policy/types.js';
import { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { WindowsEnrollError, enrollWindowsDevice } from '../../protocols/windows/simulator/enroll-client.js';
import { backends } from '../support/db.js';
import {
  CAMERA,
  CORP_PSK,
  MAC_BUNDLE,
  TOPIC,
  api,
  applePut,
  auditOf,
  authenticate,
  enrollPc,
  enrolledMac as enrolledMacOf,
  heldOfPc,
  identityRig,
  labelled as labelledOf,
  omaDm,
  pemOf,
  profileChallenge,
  scep,
  scepIdentity,
  sha256Of,
  tokenUpdate,
  type Rig,
} from './identity-rig.js';

describe.each(backends)('device takeover attempts (%s)', { timeout: 180_000 }, (backend) => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await identityRig(backend);
  });
  afterAll(async () => {
    await rig?.close();
  });

  const enrolledMac = (udid: string) => enrolledMacOf(rig, udid);
  const labelled = (id: string, platform: Platform, labels: Record<string, string>) => labelledOf(rig, id, platform, labels);
  /** What must not change when an attack is refused. */
  const stateOf = async (id: string) => {
    const d = await rig.store.devices.get(id);
    const e = await rig.store.devices.getEnrollment(id);
    return {
      platform: d?.platform,
      labels: d?.labels,
      enrollment: e && { platform: e.platform, status: e.status, token: e.state.token ?? null, pushMagic: e.state.pushMagic ?? null, topic: e.state.topic ?? null, certSha256: e.state.certSha256 ?? null },
      identities: (await rig.store.identities.listForDevice(id)).map((i) => ({ certSha256: i.certSha256, revokedAt: i.revokedAt })),
      assignments: (await rig.store.assignments.forDevice(id)).map((a) => ({ rollout: a.rollout, bundleHash: a.bundleHash })),
      commands: (await rig.store.commands.listForDevice(id, { limit: 100 })).map((c) => ({ uuid: c.uuid, type: c.type, state: c.state })),
    };
  };
  const refusals = async (id: string) => (await auditOf(rig, id)).filter((a) => a.action === 'device.takeover-refused');

  it('Apple: a profile holder gets a certificate through SCEP and Authenticates as another Mac: 403, audited; the Mac keeps its queue (a command with a secret), push token, certificate and labels, and gets its command', async () => {
    const victim = await enrolledMac('00008112-00000000000A0001');
    await labelled(victim.udid, 'apple', { team: 'design' });
    const before = await stateOf(victim.udid);
    expect(before.commands.filter((c) => c.state === 'pending').map((c) => c.type)).toContain('InstallProfile');
    expect(before.enrollment?.token).toBe(victim.pushToken);

    // The attacker holds a profile of its own, so a real certificate from the CA, and claims the Mac's UDID.
    const attacker = await scepIdentity(rig.url, await profileChallenge(rig));
    const auth = await applePut(rig.url, 'checkin', authenticate(victim.udid), attacker);
    expect(auth.status).toBe(403);
    expect(auth.text).toMatch(/another identity that is still valid/);
    // Nor can it take the push token, the queued command (and its secret), or check the Mac out.
    expect((await applePut(rig.url, 'checkin', tokenUpdate(victim.udid, randomBytes(32)), attacker)).status).toBe(403);
    const stolen = await applePut(rig.url, 'connect', { UDID: victim.udid, Status: 'Idle' }, attacker);
    expect(stolen.status).toBe(403);
    expect(stolen.text).not.toContain(CORP_PSK);
    expect((await applePut(rig.url, 'checkin', { MessageType: 'CheckOut', UDID: victim.udid }, attacker)).status).toBe(403);
    // Once its certificate is bound to a Mac of its own, it is that Mac's only: a CheckOut for the victim is still refused.
    expect((await applePut(rig.url, 'checkin', authenticate('00008112-00000000000A0A7A'), attacker)).status).toBe(200);
    expect((await applePut(rig.url, 'checkin', { MessageType: 'CheckOut', UDID: victim.udid }, attacker)).status).toBe(403);
    expect((await applePut(rig.url, 'checkin', authenticate(victim.udid), attacker)).status).toBe(403);

    const refused = await refusals(victim.udid);
    // Every kind of attempt is on record: the unbound certificate's probes, the Authenticate, the bound one's CheckOut.
    expect(refused.map((r) => r.details.reason)).toEqual(expect.arrayContaining(['unbound', 'device-has-live-identity', 'other-device']));
    expect(refused.every((r) => r.details.certSha256 === sha256Of(attacker.certDer) && r.details.platform === 'apple')).toBe(true);
    expect(await stateOf(victim.udid)).toEqual(before);
    expect((await rig.store.identities.get(victim.certSha256))!).toMatchObject({ deviceId: victim.udid, revokedAt: null });

    // The Mac goes on: it connects with its own certificate and installs the profile, the secret filled in.
    await victim.connect();
    expect(victim.seen).toContain('InstallProfile');
    expect(JSON.stringify(victim.profiles.get(MAC_BUNDLE)?.content)).toContain(CORP_PSK);
  });

  it('cross-platform: an Apple certificate cannot Authenticate as a PC nor open its OMA-DM session; a PC certificate gets nothing on the Apple endpoints; both devices keep working', async () => {
    const cred = await rig.windows.issueCredential({});
    const { enrolled, pc } = await enrollPc(rig, cred);
    await pc.sync();
    await labelled(enrolled.deviceId, 'windows', { team: 'qa' });
    const mac = await enrolledMac('00008112-00000000000B0001');
    await labelled(mac.udid, 'apple', { team: 'design' });
    const pcBefore = await stateOf(enrolled.deviceId);
    const macBefore = await stateOf(mac.udid);
    expect(pcBefore.commands.some((c) => c.state === 'pending')).toBe(true);

    // An Apple identity (a real profile's) names the PC's DeviceID.
    const appleId = await scepIdentity(rig.url, await profileChallenge(rig));
    expect((await applePut(rig.url, 'checkin', authenticate(enrolled.deviceId), appleId)).status).toBe(403);
    expect((await rig.store.identities.get(sha256Of(appleId.certDer)))!.deviceId).toBeNull();
    // …and is presented (through the TLS proxy) on the PC's OMA-DM endpoint.
    await expect(omaDm({ ...enrolled, certPem: pemOf(appleId.certDer) }).sync()).rejects.toMatchObject({ status: 403 });
    const pcRefused = await refusals(enrolled.deviceId);
    expect(pcRefused.map((r) => [r.actor, r.details.reason])).toContainEqual(['apple-mdm', 'other-platform']);
    // MDM.svc refuses before reading the message, so it cannot know the PC was named: the certificate is on record.
    const byCert = (await rig.store.audit.list({ limit: 1000, subject: `certificate/${sha256Of(appleId.certDer)}` })).filter((a) => a.action === 'device.takeover-refused');
    expect(byCert.map((r) => [r.actor, (r.details as { reason: string }).reason])).toContainEqual(['omadm', 'other-platform']);

    // The PC's own certificate, on the Apple endpoints: as itself, and as the Mac.
    const pcId = heldOfPc(enrolled);
    expect((await applePut(rig.url, 'checkin', authenticate(enrolled.deviceId), pcId)).status).toBe(403);
    expect((await applePut(rig.url, 'checkin', authenticate(mac.udid), pcId)).status).toBe(403);
    expect((await applePut(rig.url, 'connect', { UDID: mac.udid, Status: 'Idle' }, pcId)).status).toBe(403);
    expect((await applePut(rig.url, 'checkin', { MessageType: 'CheckOut', UDID: mac.udid }, pcId)).status).toBe(403);
    expect((await refusals(mac.udid)).map((r) => r.details.reason)).toContain('other-platform');

    expect(await stateOf(enrolled.deviceId)).toEqual(pcBefore);
    expect(await stateOf(mac.udid)).toEqual(macBefore);
    // Both go on: the PC takes its camera restriction, the Mac its profile.
    await pc.sync();
    expect(pc.tree.get(CAMERA)?.value).toBe('0');
    await mac.connect();
    expect(mac.profiles.has(MAC_BUNDLE)).toBe(true);
  });

  describe('Windows: a valid enrollment credential naming a live DeviceID', () => {
    let id: string;
    let live: Awaited<ReturnType<typeof enrollPc>>;
    let oneTime: Awaited<ReturnType<Rig['windows']['issueCredential']>>;

    it('is a SOAP Authorization fault, one-time or reusable: the PC keeps its certificate, labels and bundle, and the one-time credential is not used up', async () => {
      live = await enrollPc(rig, await rig.windows.issueCredential({ group: 'lab' }));
      id = live.enrolled.deviceId;
      await live.pc.sync();
      await labelled(id, 'windows', { team: 'qa' });
      const before = await stateOf(id);
      expect(before.assignments.map((a) => a.rollout)).toEqual(['win']);

      oneTime = await rig.windows.issueCredential({});
      const reusable = await rig.windows.issueCredential({ oneTime: false });
      for (const cred of [oneTime, reusable]) {
        const e = await enrollWindowsDevice({ discoveryUrl: rig.url, email: cred.username, password: cred.password, deviceId: id, hwDevId: live.enrolled.hwDevId }).catch((x: unknown) => x);
        expect(e).toBeInstanceOf(WindowsEnrollError);
        expect(e).toMatchObject({ step: 'enroll', fault: { subcode: 's:Authorization', reason: expect.stringMatching(/another identity that is still valid/) } });
      }
      expect(await rig.store.challenges.peek(oneTime.password, 'windows-enroll')).toBeDefined();
      expect((await refusals(id)).filter((r) => r.actor === 'wstep' && r.details.reason === 'device-has-live-identity')).toHaveLength(2);
      expect(await stateOf(id)).toEqual(before);
      expect(await rig.store.identities.authenticate(sha256Of(heldOfPc(live.enrolled).certDer))).toMatchObject({ deviceId: id });

      await live.pc.sync();
      expect(live.pc.tree.get(CAMERA)?.value).toBe('0');
    });

    it('after an admin retires the PC (API, admin scope), the same credential enrolls the id as a new device: no labels, no bundles carried over', async () => {
      expect((await api(rig, 'POST', `/devices/${id}/retire`, rig.tokens.operate, { confirm: id })).status).toBe(403);
      expect((await api(rig, 'POST', `/devices/${id}/retire`, rig.tokens.admin, {})).status).toBe(400);
      const r = await api(rig, 'POST', `/devices/${id}/retire`, rig.tokens.admin, { confirm: id, note: 'left the company' });
      expect(r).toMatchObject({ status: 200, json: { deviceId: id, retired: true, revokedIdentities: 1 } });
      await expect(live.pc.sync()).rejects.toMatchObject({ status: 403 });

      const fresh = await enrollPc(rig, { ...oneTime, deviceId: id });
      expect(await rig.store.challenges.peek(oneTime.password, 'windows-enroll')).toBeUndefined();
      expect((await rig.store.devices.get(id))!.labels).toEqual({});
      expect(await rig.store.assignments.forDevice(id)).toEqual([]);
      expect((await auditOf(rig, id)).filter((a) => a.action === 'device.enroll').at(-1)!.details).toMatchObject({ kind: 're-enrollment' });
      // The reconciler finds nothing for an unlabelled PC: the bundle does not come back.
      await rig.rec.deviceEnrolled(id);
      expect(await rig.store.assignments.forDevice(id)).toEqual([]);
      await fresh.pc.sync();
      expect(fresh.pc.tree.get(CAMERA)).toBeUndefined();
      live = fresh;
    });

    it('a credential an admin issued for the PC (--device) replaces its identity and keeps its labels; it enrolls no other id', async () => {
      await labelled(id, 'windows', { team: 'qa' });
      const approved = await rig.windows.issueCredential({ device: id });
      // Issued for this PC, it cannot enroll another one (nor is it used up trying).
      const other = await enrollPc(rig, await rig.windows.issueCredential({}));
      const e = await enrollWindowsDevice({ discoveryUrl: rig.url, email: approved.username, password: approved.password, deviceId: other.enrolled.deviceId }).catch((x: unknown) => x);
      expect(e).toMatchObject({ step: 'enroll', fault: { subcode: 's:Authorization' } });
      expect((await refusals(other.enrolled.deviceId)).map((r) => r.details.reason)).toContain('credential-for-other-device');
      expect(await rig.store.challenges.peek(approved.password, 'windows-enroll')).toBeDefined();

      const replaced = await enrollPc(rig, { ...approved, deviceId: id });
      expect((await rig.store.devices.get(id))!.labels).toEqual({ team: 'qa' });
      expect((await auditOf(rig, id)).filter((a) => a.action === 'device.enroll').at(-1)!.details).toMatchObject({ kind: 'approved', revoked: 1 });
      expect((await rig.store.identities.get(sha256Of(heldOfPc(live.enrolled).certDer)))!.revokedAt).not.toBeNull();
      await expect(live.pc.sync()).rejects.toMatchObject({ status: 403 });
      await rig.rec.deviceEnrolled(id);
      expect((await rig.store.assignments.forDevice(id)).map((a) => a.rollout)).toEqual(['win']);
      await replaced.pc.sync();
      expect(replaced.pc.tree.get(CAMERA)?.value).toBe('0');
    });
  });

  it('Apple: Authenticate under another push topic is refused 403 and stores nothing; TokenUpdate under another topic keeps the token', async () => {
    const udid = '00008112-00000000000C0001';
    const held = await scepIdentity(rig.url, await profileChallenge(rig));
    const r = await applePut(rig.url, 'checkin', authenticate(udid, 'com.apple.mgmt.External.11111111-2222-3333-4444-555555555555'), held);
    expect(r.status).toBe(403);
    expect(r.text).toMatch(/topic/);
    expect(await rig.store.devices.get(udid)).toBeUndefined();
    expect(await rig.store.devices.getEnrollment(udid)).toBeUndefined();
    expect((await rig.store.identities.get(sha256Of(held.certDer)))!.deviceId).toBeNull();

    // Under this server's topic the same certificate enrolls; a later TokenUpdate under another topic changes nothing.
    expect((await applePut(rig.url, 'checkin', authenticate(udid), held)).status).toBe(200);
    const token = randomBytes(32);
    expect((await applePut(rig.url, 'checkin', tokenUpdate(udid, token), held)).status).toBe(200);
    expect((await applePut(rig.url, 'checkin', tokenUpdate(udid, randomBytes(32), 'com.apple.mgmt.External.other'), held)).status).toBe(403);
    expect((await rig.store.devices.getEnrollment(udid))!.state).toMatchObject({ token: token.toString('hex'), topic: TOPIC });
  });

  it('Apple re-enrollment: after a CheckOut an unapproved profile brings the Mac back with no labels or bundles; an approved one (profile for the device) keeps them and revokes the old identity', async () => {
    const gone = await enrolledMac('00008112-00000000000D0001');
    await labelled(gone.udid, 'apple', { team: 'design' });
    expect((await rig.store.assignments.forDevice(gone.udid)).map((a) => a.rollout)).toEqual(['mac']);
    await gone.checkin({ MessageType: 'CheckOut' });
    expect((await rig.store.identities.get(gone.certSha256))!.revokedAt).not.toBeNull();
    const back = await enrolledMac(gone.udid);
    expect((await rig.store.devices.get(gone.udid))!.labels).toEqual({});
    expect(await rig.store.assignments.forDevice(gone.udid)).toEqual([]);
    expect((await auditOf(rig, gone.udid)).filter((a) => a.action === 'device.enroll').at(-1)!.details).toMatchObject({ kind: 're-enrollment' });
    await rig.rec.deviceEnrolled(back.udid);
    await back.connect();
    expect(back.profiles.has(MAC_BUNDLE)).toBe(false);

    const kept = await enrolledMac('00008112-00000000000D0002');
    await labelled(kept.udid, 'apple', { team: 'design' });
    await kept.connect();
    expect(kept.profiles.has(MAC_BUNDLE)).toBe(true);
    // An admin issues a profile for this Mac (it was erased and set up again, say): no CheckOut came.
    const again = new SimulatedAppleDevice({ server: rig.url, udid: kept.udid, serialNumber: 'C02D0002', topic: TOPIC, challenge: await profileChallenge(rig, kept.udid) });
    await again.enroll();
    expect((await rig.store.devices.get(kept.udid))!.labels).toEqual({ team: 'design' });
    expect((await rig.store.assignments.forDevice(kept.udid)).map((a) => a.rollout)).toEqual(['mac']);
    expect((await auditOf(rig, kept.udid)).filter((a) => a.action === 'device.enroll').at(-1)!.details).toMatchObject({ kind: 'approved', revoked: 1 });
    expect((await rig.store.identities.get(kept.certSha256))!.revokedAt).not.toBeNull();
    await expect(kept.connect()).rejects.toThrow(/403/);
    await rig.rec.deviceEnrolled(kept.udid);
    await again.connect();
    expect(JSON.stringify(again.profiles.get(MAC_BUNDLE)?.content)).toContain(CORP_PSK);
  });

  it('Apple wipe: while an erase is only queued the Mac keeps its UDID; once it confirms the erase the UDID enrolls afresh, nothing carried over', async () => {
    const mac = await enrolledMac('00008112-00000000000F0001');
    await labelled(mac.udid, 'apple', { team: 'design' });
    const wipe = await api(rig, 'POST', `/devices/${mac.udid}/actions/wipe`, rig.tokens.operate, { confirm: mac.udid });
    expect(wipe.status).toBe(202);
    // Queued, not confirmed: the Mac still holds a live identity, so another profile's certificate cannot take its UDID.
    const early = await scepIdentity(rig.url, await profileChallenge(rig));
    expect((await applePut(rig.url, 'checkin', authenticate(mac.udid), early)).status).toBe(403);
    expect((await refusals(mac.udid)).map((r) => r.details.reason)).toEqual(['device-has-live-identity']);
    await mac.connect();
    expect(mac.erased).toBe(true);
    expect((await rig.store.devices.getEnrollment(mac.udid))!.status).toBe('unenrolled');
    expect((await rig.store.identities.get(mac.certSha256))!.revokedAt).not.toBeNull();
    // The erased Mac is set up again with a plain profile: a new device that reuses the UDID.
    const fresh = await enrolledMac(mac.udid);
    expect((await rig.store.devices.get(fresh.udid))!.labels).toEqual({});
    expect(await rig.store.assignments.forDevice(fresh.udid)).toEqual([]);
    expect((await auditOf(rig, fresh.udid)).filter((a) => a.action === 'device.enroll').at(-1)!.details).toMatchObject({ kind: 're-enrollment' });
  });

  it('renewal: an Apple RenewalReq signed with a bound identity stays with its Mac; one signed with a PC certificate of the same CA gets nothing', async () => {
    const mac = await enrolledMac('00008112-00000000000E0001');
    const first = mac.certSha256;
    await mac.renew();
    expect(mac.certSha256).not.toBe(first);
    expect(await rig.store.identities.get(mac.certSha256)).toMatchObject({ deviceId: mac.udid, platform: 'apple', renewalOf: first, revokedAt: null });
    // No new Authenticate: the renewed certificate is this Mac's at once.
    await mac.connect();
    expect((await auditOf(rig, mac.udid)).some((a) => a.action === 'device.takeover-refused')).toBe(false);

    const { enrolled } = await enrollPc(rig, await rig.windows.issueCredential({}));
    const pcCert = heldOfPc(enrolled);
    const r = await scep(rig.url, { renewing: pcCert });
    expect(r).toMatchObject({ status: 'FAILURE' });
    expect((await rig.store.identities.listForDevice(enrolled.deviceId)).map((i) => i.certSha256)).toEqual([sha256Of(pcCert.certDer)]);
    // The attempt is on the PC's record.
    expect((await refusals(enrolled.deviceId)).map((a) => [a.details.reason, a.actor])).toContainEqual(['other-platform', 'scep']);
  });

  it('renewal: a certificate from a profile for Mac X that never Authenticated cannot renew into one without that limit', async () => {
    const x = '00008112-0000000000RENEW01';
    await rig.store.devices.upsert({ id: x, platform: 'apple' });
    const unbound = await scepIdentity(rig.url, await profileChallenge(rig, x));
    expect((await rig.store.identities.get(sha256Of(unbound.certDer)))!.forDevice).toBe(x);
    // Renewing would need no challenge: each renewal would be a fresh certificate free to claim any id without a live identity.
    expect(await scep(rig.url, { renewing: unbound })).toMatchObject({ status: 'FAILURE' });
    expect((await applePut(rig.url, 'checkin', authenticate('00008112-0000000000RENEW02'), unbound)).status).toBe(403);
    expect(await rig.store.devices.get('00008112-0000000000RENEW02')).toBeUndefined();
  });
});
