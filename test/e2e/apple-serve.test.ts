// Apple through `muster serve`: an enrollment profile from `muster enroll
// apple`, a simulated Mac that enrolls with the challenge inside it (SCEP),
// and a bundle from the policy folder arriving on it as a signed profile.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodePlist } from '../../protocols/apple/plist.js';
import { readSignedData } from '../../protocols/apple/scep/cms.js';
import { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { group, rollout } from '../reconcile/helpers.js';
import { BIN, childEnv, createToken, serve, until, type Served } from './support.js';
import { missingTool } from '../support/tools.js';

const skip = missingTool('openssl', 'openssl');
const TOPIC = 'com.apple.mgmt.External.7d0c9a1e-0000-4000-8000-00000000e2e0';
const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: mac-baseline }
spec:
  version: "1.0.0"
  platforms: [apple]
  settings:
    passcode: { required: true, minLength: 12 }
    wifi:
      - { ssid: Corp, security: wpa2-personal, password: "\${secret:CORP_PSK}" }
`;

describe.skipIf(!!skip)('Apple MDM through muster serve', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-apple-e2e-'));
  let server: Served | undefined;
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrolls a Mac with the downloaded profile and installs its bundle, secrets filled in at delivery', async () => {
    const policy = join(dir, 'policy');
    mkdirSync(policy);
    writeFileSync(join(policy, 'b.yaml'), bundleYaml);
    writeFileSync(join(policy, 'g.yaml'), group('macs', '{ matchLabels: { muster.dev/platform: apple } }'));
    writeFileSync(join(policy, 'r.yaml'), rollout('mac', 'mac-baseline', ['macs'], '    - setWeight: 100'));
    const db = join(dir, 'db');
    const token = createToken(db, 'operate');
    const env = childEnv({ MUSTER_CA_PASSPHRASE: 'correct horse battery staple', MUSTER_SECRET_CORP_PSK: 'wifi-psk-value' });
    server = await serve(['--source', policy, '--data-dir', db, '--ca-dir', join(dir, 'ca'), '--apple-topic', TOPIC, '--public-url', 'https://mdm.example.com', '--tick', '200ms'], env);
    expect(readFileSync(join(dir, 'ca', 'ca.key'), 'utf8')).toMatch(/ENCRYPTED/);

    const out = join(dir, 'enroll.mobileconfig');
    execFileSync(process.execPath, [BIN, 'enroll', 'apple', '--out', out, '--server', server.url, '--note', 'e2e'], { env: childEnv({ MUSTER_TOKEN: token }) });
    const signed = readFileSync(out);
    // A signed profile, verifiable by openssl against the CA.
    execFileSync('openssl', ['cms', '-verify', '-inform', 'DER', '-in', out, '-CAfile', join(dir, 'ca', 'ca.pem'), '-purpose', 'any', '-out', join(dir, 'content.plist')], { stdio: 'ignore' });
    const profile = decodePlist(readSignedData(signed, 1 << 20, 'profile').content) as { PayloadContent: Array<{ PayloadType: string; PayloadContent?: { Challenge?: string; URL?: string }; ServerURL?: string; Topic?: string }> };
    const scep = profile.PayloadContent.find((p) => p.PayloadType === 'com.apple.security.scep')!;
    const mdm = profile.PayloadContent.find((p) => p.PayloadType === 'com.apple.mdm')!;
    expect(scep.PayloadContent!.URL).toBe('https://mdm.example.com/mdm/apple/scep');
    expect(mdm).toMatchObject({ ServerURL: 'https://mdm.example.com/mdm/apple/connect', Topic: TOPIC });

    const mac = new SimulatedAppleDevice({ server: server.url, udid: 'E2E0MAC0-1111-2222-3333-444455556666', serialNumber: 'C02E2E', topic: TOPIC, challenge: scep.PayloadContent!.Challenge! });
    await mac.enroll();
    // The challenge inside the profile worked once.
    const again = new SimulatedAppleDevice({ server: server.url, udid: 'E2E0MAC0-9999', serialNumber: 'C02E2F', topic: TOPIC, challenge: scep.PayloadContent!.Challenge! });
    await expect(again.enroll()).rejects.toThrow(/FAILURE/);

    await until(async () => {
      await mac.connect();
      return mac.profiles.has('dev.muster.bundle.mac-baseline');
    }, 60_000, 'the profile on the Mac');
    expect(mac.seen).toContain('InstallProfile');
    // A one-time link serves the profile once, as application/x-apple-aspen-config, raw DER first.
    const link = execFileSync(process.execPath, [BIN, 'enroll', 'apple', '--link', '--server', server.url], { env: childEnv({ MUSTER_TOKEN: token }), encoding: 'utf8' }).trim();
    expect(link).toMatch(/^https:\/\/mdm\.example\.com\/mdm\/apple\/enroll\?code=[0-9a-f]{40}$/);
    const local = server.url + new URL(link).pathname + new URL(link).search;
    const got = await fetch(local);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('application/x-apple-aspen-config');
    expect(Buffer.from(await got.arrayBuffer())[0]).toBe(0x30);
    expect((await fetch(local)).status).toBe(403);
    expect((await fetch(server.url + '/mdm/apple/enroll')).status).toBe(403);
    const installed = mac.profiles.get('dev.muster.bundle.mac-baseline')!.content as { PayloadContent: Array<{ PayloadType: string; Password?: string }> };
    expect(installed.PayloadContent.find((p) => p.PayloadType === 'com.apple.wifi.managed')!.Password).toBe('wifi-psk-value');
  });
});
