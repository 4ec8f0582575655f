// Apple end to end, the way a fleet runs: policy in a Git repository,
// `muster serve` with Apple MDM and APNs token auth, a push service on a
// local HTTP/2 TLS socket, and simulated Macs that enroll through SCEP and
// then connect only when pushed. A commit rolls a bundle out in stages (a
// person promotes past the pause), an admin locks a Mac from the CLI, and a
// commit that drops the rollout removes the profile again.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf } from '../../controller/rollout/bucket.js';
import { SimulatedApns } from '../../protocols/apple/apns-simulator.js';
import { decodePlist } from '../../protocols/apple/plist.js';
import { readSignedData } from '../../protocols/apple/scep/cms.js';
import { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { group, rollout } from '../reconcile/helpers.js';
import { BIN, PolicyRepo, childEnv, createToken, serve, until, type Served } from './support.js';

const run = promisify(execFile);
const TOPIC = 'com.apple.mgmt.External.0c7f5b1e-2222-4000-8000-00000000e2e1';
const PROFILE = 'dev.muster.bundle.mac-baseline';
const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: mac-baseline }
spec:
  version: "1.0.0"
  platforms: [apple]
  settings:
    passcode: { required: true, minLength: 12 }
    restrictions: { allowCamera: false }
`;
const groupYaml = group('macs', '{ matchLabels: { muster.dev/platform: apple } }');

/** A throwaway CA and a server certificate for 127.0.0.1 (the push service's TLS identity). */
function tlsFor127(): { caPem: string; certPem: string; keyPem: string } {
  const make = () => forge.pki.rsa.generateKeyPair(2048);
  const caKeys = make();
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = '01';
  ca.validity.notBefore = new Date(Date.now() - 3_600_000);
  ca.validity.notAfter = new Date(Date.now() + 86_400_000);
  ca.setSubject([{ shortName: 'CN', value: 'Test push CA' }]);
  ca.setIssuer(ca.subject.attributes);
  ca.setExtensions([{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, critical: true }]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());
  const keys = make();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '02';
  cert.validity = { notBefore: ca.validity.notBefore, notAfter: ca.validity.notAfter };
  cert.setSubject([{ shortName: 'CN', value: 'api.push.test' }]);
  cert.setIssuer(ca.subject.attributes);
  cert.setExtensions([{ name: 'extKeyUsage', serverAuth: true }, { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }]);
  cert.sign(caKeys.privateKey, forge.md.sha256.create());
  return { caPem: forge.pki.certificateToPem(ca), certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey) };
}

describe('Apple fleet from a Git commit, woken by APNs', { timeout: 180_000 }, () => {
  const repo = new PolicyRepo();
  const dir = repo.root;
  let server: Served;
  let apns: SimulatedApns;
  let token: string;
  const macs: SimulatedAppleDevice[] = [];
  // Asynchronous on purpose: the push service and the Macs live in this process, and a blocking call would starve them.
  const cli = async (...args: string[]) => (await run(process.execPath, [BIN, ...args, '--server', server.url], { env: childEnv({ MUSTER_TOKEN: token }), encoding: 'utf8' })).stdout;

  beforeAll(async () => {
    const tls = tlsFor127();
    writeFileSync(join(dir, 'push-ca.pem'), tls.caPem);
    const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writeFileSync(join(dir, 'AuthKey.p8'), p8.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    apns = new SimulatedApns({ certPem: tls.certPem, keyPem: tls.keyPem, topic: TOPIC, providerPublicKeyPem: p8.publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    const apnsUrl = await apns.listen();

    repo.commit({ 'groups/macs.yaml': groupYaml }, 'macs group');
    const db = join(dir, 'db');
    token = createToken(db, 'operate');
    // The push service's certificate is trusted the way an operator would trust a private CA.
    const env = childEnv({ MUSTER_CA_PASSPHRASE: 'a passphrase for the e2e CA', NODE_EXTRA_CA_CERTS: join(dir, 'push-ca.pem') });
    server = await serve(
      ['--source', repo.bare, '--git-interval', '1s', '--data-dir', db, '--ca-dir', join(dir, 'ca'), '--git-cache', join(dir, 'git-cache'), '--apple-topic', TOPIC, '--public-url', 'https://mdm.example.com', '--tick', '200ms',
        '--apns-p8', join(dir, 'AuthKey.p8'), '--apns-key-id', 'KEY1234567', '--apns-team-id', 'TEAM123456', '--apns-url', apnsUrl],
      env,
    );

    for (let i = 0; i < 6; i++) {
      // Each Mac gets its own signed enrollment profile, with a one-time challenge inside.
      const res = await fetch(`${server.url}/api/v1/enroll/apple`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ note: `mac ${i}` }) });
      expect(res.status).toBe(200);
      const profile = decodePlist(readSignedData(Buffer.from(await res.arrayBuffer()), 1 << 20, 'profile').content) as { PayloadContent: Array<{ PayloadType: string; PayloadContent?: { Challenge?: string } }> };
      const challenge = profile.PayloadContent.find((p) => p.PayloadType === 'com.apple.security.scep')!.PayloadContent!.Challenge!;
      const mac = new SimulatedAppleDevice({ server: server.url, udid: `E2E1MAC${i}-0000-4000-8000-0000000000${i}0`, serialNumber: `C02GIT${i}`, topic: TOPIC, challenge });
      await mac.enroll();
      apns.register(mac);
      macs.push(mac);
    }
  }, 150_000);
  afterAll(async () => {
    // A clean stop also proves serve closes its APNs sessions (they would keep it running).
    await server?.stop();
    await apns?.close();
    repo.cleanup();
  });

  it('rolls a committed bundle to the ring, waits for a person, then to every Mac, all through pushes', async () => {
    const ring = macs.filter((m) => bucketOf('mac', m.udid) < 5000);
    expect(ring.length).toBeGreaterThan(0);
    expect(ring.length).toBeLessThan(macs.length);
    const before = macs.map((m) => m.seen.length);

    repo.commit({ 'groups/macs.yaml': groupYaml, 'bundles/mac.yaml': bundleYaml, 'rollouts/mac.yaml': rollout('mac', 'mac-baseline', ['macs'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') }, 'roll out mac-baseline');
    await until(async () => ring.every((m) => m.profiles.has(PROFILE)), 60_000, 'the profile on the ring');
    await until(async () => JSON.parse(await cli('rollout', 'status', 'mac', '--output', 'json')).phase === 'Paused', 30_000, 'the pause');
    expect(macs.filter((m) => m.profiles.has(PROFILE)).map((m) => m.udid)).toEqual(ring.map((m) => m.udid));

    await cli('rollout', 'promote', 'mac');
    await until(async () => macs.every((m) => m.profiles.has(PROFILE)), 60_000, 'the profile on every Mac');
    await until(async () => JSON.parse(await cli('rollout', 'status', 'mac', '--output', 'json')).phase === 'Healthy', 30_000, 'a healthy rollout');
    // Nothing but pushes made them connect after enrolling, and every push was a valid one.
    expect(macs.every((m, i) => m.seen.length > before[i]!)).toBe(true);
    expect(apns.accepted.length).toBeGreaterThanOrEqual(macs.length);
    expect(apns.refused).toEqual([]);
    expect(apns.errors).toEqual([]);
  });

  it('locks a Mac from the CLI; the PIN is printed once and reaches the Mac through a push', async () => {
    const mac = macs[0]!;
    const out = await cli('devices', 'lock', mac.udid, '--message', 'Return to IT');
    const pin = /PIN to unlock the device: (\d{6})/.exec(out)?.[1];
    expect(pin).toBeDefined();
    await until(async () => mac.locked?.pin === pin, 30_000, 'the Mac to lock');
    expect(mac.locked!.message).toBe('Return to IT');
    const shown = JSON.parse(await cli('devices', 'show', mac.udid, '--output', 'json')) as { commands: Array<{ type: string; state: string }> };
    expect(shown.commands.find((c) => c.type === 'DeviceLock')).toMatchObject({ state: 'completed' });
  });

  it('removes the profile from every Mac when a commit drops the rollout', async () => {
    repo.commit({ 'groups/macs.yaml': groupYaml, 'bundles/mac.yaml': bundleYaml }, 'retire the mac rollout');
    await until(async () => macs.every((m) => !m.profiles.has(PROFILE)), 60_000, 'the profile gone from every Mac');
  });
});
