// Bundles → AMAPI Policy: every vocabulary setting to its AMAPI field and enum
// value, the merge of several bundles, the raw fragment winning (and being
// reported), policy ids from bundle hashes, secrets left as references — and
// every compiled policy accepted by the local AMAPI server's field checks.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCa } from '../../protocols/pki/ca.js';
import { Amapi } from '../../protocols/android/client.js';
import { BASE_POLICY_ID, compileAndroidPolicy, fragmentConflicts, policyIdFor, resolveSecrets, STATUS_REPORTING, vocabularyPolicy } from '../../protocols/android/compile.js';
import { renderAndroid, renderAndroidJson, renderAndroidNotes } from '../../protocols/android/render.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';
import type { PolicyBundleSpec } from '../../controller/policy/types.js';
import { policyOf } from '../reconcile/helpers.js';

const bundleDoc = (name: string, spec: string) => `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: ${name} }
spec:
  version: "1.0.0"
${spec}`;

/** Bundles from YAML, validated exactly as `muster validate` does. */
function bundles(files: Record<string, string>) {
  const set = policyOf(files);
  return [...set.bundles].map(([name, l]) => ({ name, hash: set.hashes.get(name)!, spec: l.resource.spec }));
}
const one = (spec: string) => bundles({ 'b.yaml': bundleDoc('b', spec) })[0]!;

describe('compiling bundles to an AMAPI policy', () => {
  it('maps the passcode to passwordPolicies (never passwordRequirements), one per scope', () => {
    const p = (s: string) => vocabularyPolicy(one(`  settings:\n    passcode: ${s}`).spec);
    expect(p('{ required: true, minLength: 8, complexity: alphanumeric, maxFailedAttempts: 10, maxInactivityMinutes: 5, maxAgeDays: 90, historyCount: 5 }')).toEqual({
      passwordPolicies: [
        { passwordScope: 'SCOPE_DEVICE', passwordQuality: 'ALPHANUMERIC', passwordMinimumLength: 8, maximumFailedPasswordsForWipe: 10, passwordExpirationTimeout: '7776000s', passwordHistoryLength: 5 },
      ],
      maximumTimeToLock: '300000',
    });
    expect(p('{ required: true, complexity: numeric, allowSimple: false }').passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'NUMERIC_COMPLEX' }]);
    expect(p('{ required: true, complexity: numeric }').passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'NUMERIC' }]);
    expect(p('{ required: true, complexity: complex, minLength: 12, minComplexCharacters: 2 }').passwordPolicies).toEqual([
      { passwordScope: 'SCOPE_DEVICE', passwordQuality: 'COMPLEX', passwordMinimumLength: 12, passwordMinimumSymbols: 2 },
    ]);
    // SOMETHING enforces no length: a length needs at least NUMERIC.
    expect(p('{ required: true }').passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'SOMETHING' }]);
    expect(p('{ required: true, minLength: 6 }').passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'NUMERIC', passwordMinimumLength: 6 }]);
    expect(p('{ required: false }').passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'PASSWORD_QUALITY_UNSPECIFIED' }]);
    expect(JSON.stringify(p('{ required: true, minLength: 8 }'))).not.toContain('passwordRequirements');
  });

  it('maps restrictions and encryption to cameraAccess, usbDataAccess, untrustedAppsPolicy and friends', () => {
    const off = vocabularyPolicy(
      one(`  settings:
    encryption: { required: true }
    restrictions: { allowCamera: false, allowScreenCapture: false, allowRemovableStorage: false, allowUnknownSources: false, allowBluetooth: false, allowFactoryReset: false, allowAppInstallation: false }`).spec,
    );
    expect(off).toEqual({
      encryptionPolicy: 'ENABLED_WITHOUT_PASSWORD',
      cameraAccess: 'CAMERA_ACCESS_DISABLED',
      screenCaptureDisabled: true,
      deviceConnectivityManagement: { usbDataAccess: 'DISALLOW_USB_FILE_TRANSFER' },
      mountPhysicalMediaDisabled: true,
      advancedSecurityOverrides: { untrustedAppsPolicy: 'DISALLOW_INSTALL' },
      bluetoothDisabled: true,
      factoryResetDisabled: true,
      installAppsDisabled: true,
    });
    const on = vocabularyPolicy(one(`  settings:\n    restrictions: { allowCamera: true, allowScreenCapture: true, allowRemovableStorage: true, allowUnknownSources: true }`).spec);
    expect(on).toEqual({
      cameraAccess: 'CAMERA_ACCESS_USER_CHOICE',
      screenCaptureDisabled: false,
      deviceConnectivityManagement: { usbDataAccess: 'ALLOW_USB_DATA_TRANSFER' },
      mountPhysicalMediaDisabled: false,
      advancedSecurityOverrides: { untrustedAppsPolicy: 'ALLOW_INSTALL_DEVICE_WIDE' },
    });
    // Deprecated or ignored fields are never produced; usbDataAccess lives under deviceConnectivityManagement.
    for (const field of ['cameraDisabled', 'usbFileTransferDisabled', 'usbMassStorageEnabled', 'installUnknownSourcesAllowed', 'usbDataAccess']) {
      expect(off).not.toHaveProperty(field);
      expect(on).not.toHaveProperty(field);
    }
  });

  it('puts Wi-Fi in openNetworkConfiguration with its CA certificate, and leaves secret references alone', () => {
    const ca = generateCa({ keyBits: 2048 });
    const pem = ca.certPem.trim().split('\n').map((l) => `          ${l}`).join('\n');
    const b = one(`  settings:
    certificates:
      - name: radius-root
        type: root
        pem: |
${pem}
    wifi:
      - ssid: Corp
        security: wpa2-enterprise
        eap: { methods: [peap, tls], identity: alice, password: "\${secret:EAP_PW}", trustedCertificates: [radius-root], serverNames: [radius.example.com] }
      - ssid: Guest
        security: wpa2-personal
        password: "\${secret:GUEST_PSK}"
        hidden: true
        autoJoin: false
        proxy: { type: manual, server: proxy.example.com, port: 3128 }`);
    const onc = vocabularyPolicy(b.spec).openNetworkConfiguration as { Type: string; NetworkConfigurations: Array<Record<string, unknown>>; Certificates: Array<Record<string, unknown>> };
    expect(onc.Type).toBe('UnencryptedConfiguration');
    const [cert] = onc.Certificates;
    expect(cert).toMatchObject({ Type: 'Authority', GUID: expect.stringMatching(/^muster-cert-/) });
    expect(Buffer.from(cert!.X509 as string, 'base64').equals(Buffer.from(ca.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))).toBe(true);
    const [corp, guest] = onc.NetworkConfigurations;
    expect(corp).toEqual({
      GUID: expect.stringMatching(/^muster-wifi-/),
      Name: 'Corp',
      Type: 'WiFi',
      WiFi: { SSID: 'Corp', Security: 'WPA-EAP', AutoConnect: true, HiddenSSID: false, EAP: { Outer: 'PEAP', Identity: 'alice', Password: '${secret:EAP_PW}', ServerCARefs: [cert!.GUID], DomainSuffixMatch: ['radius.example.com'] } },
    });
    expect(guest).toMatchObject({ WiFi: { SSID: 'Guest', Security: 'WPA-PSK', Passphrase: '${secret:GUEST_PSK}', AutoConnect: false, HiddenSSID: true }, ProxySettings: { Type: 'Manual', Manual: { HTTPProxy: { Host: 'proxy.example.com', Port: 3128 } } } });
    // The same bundle always gives the same GUIDs.
    expect(vocabularyPolicy(b.spec)).toEqual(vocabularyPolicy(b.spec));
  });

  it('maps apps to applications with installType, kiosk to KIOSK, OS updates to systemUpdate and minimumApiLevel', () => {
    const b = one(`  settings:
    apps:
      - { name: checkin, installType: required, android: { packageName: com.example.checkin, minimumVersionCode: 42 }, configuration: { site: HQ } }
      - { name: chat, installType: available, android: { packageName: com.example.chat } }
      - { name: game, installType: blocked, android: { packageName: com.example.game } }
      - { name: mail, installType: required, apple: { bundleId: com.example.mail } }
    kiosk: { app: checkin, showStatusBar: false, allowSystemNavigation: true }
    osUpdates: { automaticInstall: true, minimumVersion: { android: "13" } }`);
    expect(vocabularyPolicy(b.spec)).toEqual({
      applications: [
        { packageName: 'com.example.checkin', installType: 'KIOSK', minimumVersionCode: 42, managedConfiguration: { site: 'HQ' } },
        { packageName: 'com.example.chat', installType: 'AVAILABLE' },
        { packageName: 'com.example.game', installType: 'BLOCKED' },
      ],
      kioskCustomization: { statusBar: 'NOTIFICATIONS_AND_SYSTEM_INFO_DISABLED', systemNavigation: 'NAVIGATION_ENABLED' },
      systemUpdate: { type: 'AUTOMATIC' },
      minimumApiLevel: 33,
    });
    expect(vocabularyPolicy(one(`  settings:\n    osUpdates: { deferralDays: 10 }`).spec)).toEqual({ systemUpdate: { type: 'POSTPONE' } });
  });

  it('always turns on the status reports convergence and compliance need', () => {
    expect(compileAndroidPolicy([])).toEqual({ statusReportingSettings: STATUS_REPORTING });
    expect(STATUS_REPORTING).toMatchObject({ deviceSettingsEnabled: true, softwareInfoEnabled: true, hardwareStatusEnabled: true });
  });

  it('merges bundles (apps by package), lays every fragment over every vocabulary, and skips bundles for other platforms', () => {
    const [a, b, mac] = bundles({
      'a.yaml': bundleDoc('a', `  settings:\n    restrictions: { allowCamera: false }\n    apps: [{ name: chat, installType: available, android: { packageName: com.example.chat } }]`),
      'b.yaml': bundleDoc('b', `  settings:\n    apps: [{ name: chat2, installType: required, android: { packageName: com.example.chat2 } }]\n  android:\n    policy:\n      cameraAccess: CAMERA_ACCESS_ENFORCED\n      applications: [{ packageName: com.example.chat, installType: FORCE_INSTALLED }]\n      statusReportingSettings: { applicationReportsEnabled: false }`),
      'c.yaml': bundleDoc('mac', `  platforms: [apple]\n  settings:\n    restrictions: { allowScreenCapture: false }`),
    });
    const p = compileAndroidPolicy([b!, mac!, a!]);
    expect(p.cameraAccess).toBe('CAMERA_ACCESS_ENFORCED');
    expect(p.applications).toEqual([
      { packageName: 'com.example.chat', installType: 'FORCE_INSTALLED' },
      { packageName: 'com.example.chat2', installType: 'FORCE_INSTALLED' },
    ]);
    expect(p.screenCaptureDisabled).toBeUndefined();
    expect(p.statusReportingSettings).toEqual({ ...STATUS_REPORTING, applicationReportsEnabled: false });
    // Order of the bundles does not matter.
    expect(compileAndroidPolicy([a!, b!, mac!])).toEqual(p);
  });

  it('names a policy from the set of bundle hashes: same set, same policy, whatever the order', () => {
    expect(policyIdFor(['sha256:b', 'sha256:a'])).toBe(policyIdFor(['sha256:a', 'sha256:b']));
    expect(policyIdFor(['sha256:a'])).not.toBe(policyIdFor(['sha256:a', 'sha256:b']));
    expect(policyIdFor(['sha256:a'])).toMatch(/^m-[0-9a-f]{20}$/);
    expect(BASE_POLICY_ID).toBe(policyIdFor([]));
  });

  it('reports where a fragment overrides its own bundle’s settings or Muster’s status reporting', () => {
    const b = one(`  settings:
    passcode: { required: true, minLength: 8 }
    restrictions: { allowCamera: false, allowUnknownSources: false }
  android:
    policy:
      cameraAccess: CAMERA_ACCESS_DISABLED
      passwordPolicies: [{ passwordScope: SCOPE_DEVICE, passwordMinimumLength: 12 }]
      advancedSecurityOverrides: { developerSettings: DEVELOPER_SETTINGS_DISABLED, untrustedAppsPolicy: ALLOW_INSTALL_DEVICE_WIDE }
      statusReportingSettings: { deviceSettingsEnabled: false }
      keyguardDisabled: true`);
    const c = fragmentConflicts(b.spec);
    expect(c.map((x) => [x.field, x.produced, x.fragment, x.muster])).toEqual([
      ['passwordPolicies[SCOPE_DEVICE].passwordMinimumLength', '8', '12', false],
      ['advancedSecurityOverrides.untrustedAppsPolicy', '"DISALLOW_INSTALL"', '"ALLOW_INSTALL_DEVICE_WIDE"', false],
      ['statusReportingSettings.deviceSettingsEnabled', 'true', 'false', true],
    ]);
    expect(c[0]!.path).toEqual(['passwordPolicies', 0, 'passwordMinimumLength']);
    // The compiled policy has the fragment's values.
    const p = compileAndroidPolicy([b]);
    expect(p.passwordPolicies).toEqual([{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'NUMERIC', passwordMinimumLength: 12 }]);
    expect(p.advancedSecurityOverrides).toEqual({ untrustedAppsPolicy: 'ALLOW_INSTALL_DEVICE_WIDE', developerSettings: 'DEVELOPER_SETTINGS_DISABLED' });
    // A list without keys replaces what the settings made: reported too.
    const whole = one(`  settings:\n    apps: [{ name: chat, installType: available, android: { packageName: com.example.chat } }]\n  android:\n    policy:\n      applications: [{ installType: BLOCKED }]`);
    expect(fragmentConflicts(whole.spec).map((x) => x.field)).toEqual(['applications']);
    expect(fragmentConflicts(one(`  settings:\n    restrictions: { allowCamera: false }`).spec)).toEqual([]);
  });

  it('fills ${secret:NAME} only when asked, and names what is missing', () => {
    const p = { openNetworkConfiguration: { NetworkConfigurations: [{ WiFi: { Passphrase: '${secret:PSK}', SSID: 'x' } }, { WiFi: { Passphrase: '${secret:OTHER}' } }] }, note: 'not ${secret:PSK} inline' };
    const r = resolveSecrets(p, (n) => (n === 'PSK' ? 'hunter22' : undefined));
    expect(r.missing).toEqual(['OTHER']);
    expect(JSON.stringify(r.policy)).toContain('"Passphrase":"hunter22"');
    expect(JSON.stringify(p)).not.toContain('hunter22');
    expect((r.policy as typeof p).note).toBe('not ${secret:PSK} inline');
  });

  it('renders a bundle as its policy JSON, with what was overridden or left out', () => {
    const b = one(`  settings:\n    restrictions: { allowCamera: false }\n    vpn: [{ name: corp, type: ikev2, server: vpn.example.com, authentication: { method: eap, username: u, password: "\${secret:VPN}" } }]\n  android:\n    policy: { cameraAccess: CAMERA_ACCESS_ENFORCED, cameraDisabled: true }`);
    const r = renderAndroid(b)!;
    expect(r.policyId).toBe(policyIdFor([b.hash]));
    expect(r.policy).toEqual(compileAndroidPolicy([b]));
    expect(JSON.parse(renderAndroidJson(b)!)).toEqual(r.policy);
    expect(r.overridden).toEqual(['cameraAccess']);
    expect(renderAndroidNotes(r)).toEqual([`AMAPI policy ${r.policyId}`, 'android.policy overrides: cameraAccess', expect.stringMatching(/^not on Android: settings.vpn/), 'deprecated in android.policy: cameraDisabled (use cameraAccess)']);
    expect(renderAndroid(one(`  platforms: [apple]\n  settings:\n    restrictions: { allowCamera: false }`))).toBeUndefined();
  });
});

describe('compiled policies against the local AMAPI server', () => {
  const sim = new AmapiSimulator();
  let amapi: Amapi;
  let enterprise: string;
  beforeAll(async () => {
    await sim.start();
    enterprise = sim.createEnterprise();
    amapi = new Amapi({ keyJson: sim.serviceAccountKey(), rootUrl: sim.url });
  });
  afterAll(() => sim.stop());

  it('accepts every example bundle’s policy: known fields, valid enum values', async () => {
    const dir = join(import.meta.dirname, '../../policies-example');
    const files = readdirSync(join(dir, 'bundles')).map((f) => ({ [`bundles/${f}`]: readFileSync(join(dir, 'bundles', f), 'utf8') }));
    const all = bundles(Object.assign({}, ...files));
    const android = all.filter((b) => !b.spec.platforms || b.spec.platforms.includes('android'));
    expect(android.map((b) => b.name).sort()).toEqual(expect.arrayContaining(['android-kiosk', 'corp-baseline']));
    for (const b of android) {
      const { policy } = resolveSecrets(compileAndroidPolicy([b]), () => 'secret-value');
      const saved = await amapi.patchPolicy(`${enterprise}/policies/${policyIdFor([b.hash])}`, policy);
      expect(saved.version).toBe('1');
    }
    // The kiosk bundle's fragment wins over nothing of its own, and its app is the kiosk app.
    const kiosk = android.find((b) => b.name === 'android-kiosk')!;
    const kp = compileAndroidPolicy([kiosk]);
    expect(kp.systemUpdate).toEqual({ type: 'WINDOWED', startMinutes: 120, endMinutes: 240 });
    expect(kp.applications).toEqual([expect.objectContaining({ packageName: 'com.example.visitorcheckin', installType: 'KIOSK' })]);
    expect(fragmentConflicts(kiosk.spec as PolicyBundleSpec)).toEqual([]);
  });

  it('answers a policy patch with the same content with 200 and the same version', async () => {
    const name = `${enterprise}/policies/m-same`;
    expect((await amapi.patchPolicy(name, { screenCaptureDisabled: true })).version).toBe('1');
    expect((await amapi.patchPolicy(name, { screenCaptureDisabled: true })).version).toBe('1');
    expect((await amapi.patchPolicy(name, { screenCaptureDisabled: false })).version).toBe('2');
  });
});
