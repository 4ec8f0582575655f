// Bundles → CSP nodes, table by table against the Windows CSP reference.
import { X509Certificate, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { PolicyBundleSpec } from '../../controller/policy/types.js';
import { generateCa } from '../../protocols/pki/ca.js';
import { compileWindowsNodes, cspHash, normalizeValue, policyResultUri, releaseFor, type CspNode } from '../../protocols/windows/csp.js';
import { renderWindows } from '../../protocols/windows/render.js';
import { child, children, parseXml, path, textAt } from '../../protocols/windows/xml.js';
import { decodeServerMessage } from '../../protocols/windows/syncml/wire.js';
import { policyOf } from '../reconcile/helpers.js';

const bundle = (spec: Omit<PolicyBundleSpec, 'version'>, name = 'b', hash = `sha256:${'1'.repeat(64)}`) => ({ name, hash, spec: { version: '1.0.0', ...spec } as PolicyBundleSpec });
const nodes = (spec: Omit<PolicyBundleSpec, 'version'>, o = {}) => compileWindowsNodes([bundle(spec)], o).items.map((i) => i.payload as CspNode);
const values = (spec: Omit<PolicyBundleSpec, 'version'>, o = {}) => Object.fromEntries(nodes(spec, o).map((n) => [n.locUri, n.value]));
const DL = './Device/Vendor/MSFT/Policy/Config/DeviceLock';

describe('passcode → Policy CSP DeviceLock', () => {
  it('turns a full passcode policy into the DeviceLock nodes (DevicePasswordEnabled 0 means enabled)', () => {
    expect(values({ settings: { passcode: { required: true, minLength: 12, complexity: 'alphanumeric', maxFailedAttempts: 10, maxInactivityMinutes: 5, maxAgeDays: 90, historyCount: 5, allowSimple: false } } })).toEqual({
      [`${DL}/AllowSimpleDevicePassword`]: '0',
      [`${DL}/AlphanumericDevicePasswordRequired`]: '0',
      [`${DL}/DevicePasswordEnabled`]: '0',
      [`${DL}/DevicePasswordExpiration`]: '90',
      [`${DL}/DevicePasswordHistory`]: '5',
      [`${DL}/MaxDevicePasswordFailedAttempts`]: '10',
      [`${DL}/MaxInactivityTimeDeviceLock`]: '5',
      [`${DL}/MinDevicePasswordComplexCharacters`]: '2',
      [`${DL}/MinDevicePasswordLength`]: '12',
    });
  });

  it('sends only DevicePasswordEnabled = 1 to turn the password off, as the CSP requires', () => {
    expect(values({ settings: { passcode: { required: false, minLength: 8 } } })).toEqual({ [`${DL}/DevicePasswordEnabled`]: '1' });
  });

  it.each([
    ['none', { AlphanumericDevicePasswordRequired: '2' }],
    ['numeric', { AlphanumericDevicePasswordRequired: '1', MinDevicePasswordComplexCharacters: '1' }],
    ['alphanumeric', { AlphanumericDevicePasswordRequired: '0', MinDevicePasswordComplexCharacters: '2' }],
    ['complex', { AlphanumericDevicePasswordRequired: '0', MinDevicePasswordComplexCharacters: '3' }],
  ] as const)('maps complexity %s', (complexity, want) => {
    const got = values({ settings: { passcode: { complexity } } });
    expect(Object.fromEntries(Object.entries(got).map(([k, v]) => [k.slice(DL.length + 1), v]))).toEqual(want);
  });

  it('asks for every character type when symbols are required (desktop stops at 3)', () => {
    expect(values({ settings: { passcode: { complexity: 'numeric', minComplexCharacters: 2 } } })[`${DL}/MinDevicePasswordComplexCharacters`]).toBe('3');
  });

  it.each([
    [{ minLength: 2 }, 'MinDevicePasswordLength', '4'],
    [{ minLength: 40 }, 'MinDevicePasswordLength', '16'],
    [{ maxFailedAttempts: 2 }, 'MaxDevicePasswordFailedAttempts', '4'],
    [{ maxFailedAttempts: 60 }, 'MaxDevicePasswordFailedAttempts', '16'],
    [{ maxInactivityMinutes: 1440 }, 'MaxInactivityTimeDeviceLock', '999'],
    [{ allowSimple: true }, 'AllowSimpleDevicePassword', '1'],
  ])('keeps %o within what desktop Windows accepts', (passcode, node, value) => {
    expect(values({ settings: { passcode } })[`${DL}/${node}`]).toBe(value);
  });

  it('leaves out a minimum length of 0 (no minimum)', () => {
    expect(values({ settings: { passcode: { required: true, minLength: 0 } } })).toEqual({ [`${DL}/DevicePasswordEnabled`]: '0' });
  });

  it('sends DeviceLock nodes together in one Atomic, always as Replace, read back from Policy/Result', () => {
    for (const n of nodes({ settings: { passcode: { required: true, minLength: 8 } } })) {
      expect(n).toMatchObject({ format: 'int', method: 'replace', atomic: 'DeviceLock', verify: 'value', read: n.locUri.replace('/Policy/Config/', '/Policy/Result/') });
    }
  });
});

describe('encryption, restrictions and updates', () => {
  it('requires BitLocker through RequireDeviceEncryption', () => {
    expect(nodes({ settings: { encryption: { required: true, escrowRecoveryKey: true } } })).toEqual([
      { locUri: './Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption', format: 'int', value: '1', method: 'replace', read: './Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption', verify: 'value' },
    ]);
  });

  it.each([
    [{ allowCamera: false }, './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', '0'],
    [{ allowCamera: true }, './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', '1'],
    [{ allowRemovableStorage: false }, './Device/Vendor/MSFT/Policy/Config/Storage/RemovableDiskDenyWriteAccess', '1'],
    [{ allowRemovableStorage: true }, './Device/Vendor/MSFT/Policy/Config/Storage/RemovableDiskDenyWriteAccess', '0'],
    [{ allowBluetooth: false }, './Device/Vendor/MSFT/Policy/Config/Connectivity/AllowBluetooth', '0'],
    [{ allowBluetooth: true }, './Device/Vendor/MSFT/Policy/Config/Connectivity/AllowBluetooth', '2'],
    [{ allowUnknownSources: false }, './Device/Vendor/MSFT/Policy/Config/ApplicationManagement/AllowAllTrustedApps', '0'],
  ])('maps restriction %o', (restrictions, locUri, value) => {
    expect(values({ settings: { restrictions } })).toEqual({ [locUri]: value });
  });

  it('compiles nothing for restrictions Windows has no desktop CSP for', () => {
    expect(nodes({ settings: { restrictions: { allowScreenCapture: false, allowCloudBackup: false, allowFactoryReset: false, allowAppInstallation: false } } })).toEqual([]);
  });

  it('turns update settings into Policy CSP Update nodes, a minimum build into its feature release', () => {
    expect(values({ settings: { osUpdates: { deferralDays: 45, automaticInstall: true, minimumVersion: { windows: '10.0.22631', macos: '15.0' }, deadline: '2026-12-01T00:00:00Z' } } })).toEqual({
      './Device/Vendor/MSFT/Policy/Config/Update/AllowAutoUpdate': '2',
      './Device/Vendor/MSFT/Policy/Config/Update/DeferFeatureUpdatesPeriodInDays': '45',
      './Device/Vendor/MSFT/Policy/Config/Update/DeferQualityUpdatesPeriodInDays': '30',
      './Device/Vendor/MSFT/Policy/Config/Update/ProductVersion': 'Windows 11',
      './Device/Vendor/MSFT/Policy/Config/Update/TargetReleaseVersion': '23H2',
    });
    expect(releaseFor('10.0.19045.5011')).toEqual({ product: 'Windows 10', release: '22H2' });
    expect(releaseFor('10.0.12345')).toBeUndefined();
    expect(values({ settings: { osUpdates: { automaticInstall: false } } })['./Device/Vendor/MSFT/Policy/Config/Update/AllowAutoUpdate']).toBe('0');
  });
});

describe('Wi-Fi → WiFi CSP WlanXml', () => {
  it('writes a WLANProfile for a WPA2-personal network with the key as a secret reference, and names it by the escaped SSID', () => {
    const [n] = nodes({ settings: { wifi: [{ ssid: 'Corp Guest', security: 'wpa2-personal', password: '${secret:GUEST_PSK}', hidden: true, autoJoin: false }] } });
    expect(n).toMatchObject({ locUri: './Vendor/MSFT/WiFi/Profile/Corp%20Guest/WlanXml', format: 'chr', method: 'add', verify: 'exists', xml: true, secret: true });
    const p = parseXml(n!.value);
    expect(p.name).toBe('WLANProfile');
    expect(p.attrs.xmlns).toBe('http://www.microsoft.com/networking/WLAN/profile/v1');
    expect(textAt(p, 'name')).toBe('Corp Guest');
    expect(textAt(p, 'SSIDConfig', 'SSID', 'name')).toBe('Corp Guest');
    expect(textAt(p, 'SSIDConfig', 'SSID', 'hex')).toBe(Buffer.from('Corp Guest').toString('hex').toUpperCase());
    expect(textAt(p, 'SSIDConfig', 'nonBroadcast')).toBe('true');
    expect(textAt(p, 'connectionMode')).toBe('manual');
    const sec = path(p, 'MSM', 'security')!;
    expect([textAt(sec, 'authEncryption', 'authentication'), textAt(sec, 'authEncryption', 'encryption'), textAt(sec, 'authEncryption', 'useOneX')]).toEqual(['WPA2PSK', 'AES', 'false']);
    expect([textAt(sec, 'sharedKey', 'keyType'), textAt(sec, 'sharedKey', 'protected'), textAt(sec, 'sharedKey', 'keyMaterial')]).toEqual(['passPhrase', 'false', '${secret:GUEST_PSK}']);
  });

  it.each([
    ['none', 'open', 'none'],
    ['wep', 'open', 'WEP'],
    ['wpa3-personal', 'WPA3SAE', 'AES'],
  ] as const)('maps %s security to %s / %s', (security, auth, enc) => {
    const [n] = nodes({ settings: { wifi: [{ ssid: 'N', security, ...(security === 'none' ? {} : { password: '${secret:P}' }) }] } });
    const p = parseXml(n!.value);
    expect([textAt(p, 'MSM', 'security', 'authEncryption', 'authentication'), textAt(p, 'MSM', 'security', 'authEncryption', 'encryption')]).toEqual([auth, enc]);
  });

  it('configures EAP-TLS with the RADIUS server names and the trusted root by thumbprint', () => {
    const ca = generateCa({ keyBits: 1024, subject: { commonName: 'Corp Root' } });
    const thumb = createHash('sha1').update(new X509Certificate(ca.certPem).raw).digest('hex');
    const [, wifi] = nodes({ settings: { certificates: [{ name: 'corp-root', type: 'root', pem: ca.certPem }], wifi: [{ ssid: 'Corp', security: 'wpa2-enterprise', eap: { methods: ['tls'], trustedCertificates: ['corp-root'], serverNames: ['radius.example.com'] } }] } });
    const p = parseXml(wifi!.value);
    const sec = path(p, 'MSM', 'security')!;
    expect([textAt(sec, 'authEncryption', 'authentication'), textAt(sec, 'authEncryption', 'useOneX')]).toEqual(['WPA2', 'true']);
    const host = path(sec, 'OneX', 'EAPConfig', 'EapHostConfig')!;
    expect(textAt(host, 'EapMethod', 'Type')).toBe('13');
    const tls = path(host, 'Config', 'Eap', 'EapType')!;
    expect(tls.attrs.xmlns).toBe('http://www.microsoft.com/provisioning/EapTlsConnectionPropertiesV1');
    expect(textAt(tls, 'ServerValidation', 'ServerNames')).toBe('radius.example.com');
    expect(textAt(tls, 'ServerValidation', 'TrustedRootCA')).toBe(thumb.match(/../g)!.join(' '));
    expect(wifi!.secret).toBeUndefined();
  });

  it('configures PEAP with MSCHAPv2 inside, and TTLS with its own schema', () => {
    const [peap] = nodes({ settings: { wifi: [{ ssid: 'P', security: 'wpa3-enterprise', eap: { methods: ['peap'] } }] } });
    const pp = parseXml(peap!.value);
    expect(textAt(pp, 'MSM', 'security', 'authEncryption', 'authentication')).toBe('WPA3ENT');
    const peapType = path(pp, 'MSM', 'security', 'OneX', 'EAPConfig', 'EapHostConfig', 'Config', 'Eap', 'EapType')!;
    expect(textAt(peapType, 'Eap', 'Type')).toBe('26');
    const [ttls] = nodes({ settings: { wifi: [{ ssid: 'T', security: 'wpa2-enterprise', eap: { methods: ['ttls'], outerIdentity: 'anonymous@example.com' } }] } });
    const tt = parseXml(ttls!.value);
    const host = path(tt, 'MSM', 'security', 'OneX', 'EAPConfig', 'EapHostConfig')!;
    expect([textAt(host, 'EapMethod', 'Type'), textAt(host, 'EapMethod', 'AuthorId')]).toEqual(['21', '311']);
    expect(textAt(host, 'Config', 'EapTtls', 'Phase1Identity', 'AnonymousIdentity')).toBe('anonymous@example.com');
  });
});

describe('certificates, raw settings and the poll schedule', () => {
  it('installs roots and intermediates under their upper-case SHA-1 thumbprint, as base64 DER', () => {
    const root = generateCa({ keyBits: 1024, subject: { commonName: 'R' } });
    const inter = generateCa({ keyBits: 1024, subject: { commonName: 'I' } });
    const t = (pem: string) => createHash('sha1').update(new X509Certificate(pem).raw).digest('hex').toUpperCase();
    expect(nodes({ settings: { certificates: [{ name: 'r', type: 'root', pem: root.certPem }, { name: 'i', type: 'intermediate', pem: inter.certPem }, { name: 'id', type: 'pkcs12', pkcs12: '${secret:ID}' }] } }).map((n) => [n.locUri, n.format, n.value === new X509Certificate(n.locUri.includes('/Root/') ? root.certPem : inter.certPem).raw.toString('base64')]).sort()).toEqual(
      [
        [`./Device/Vendor/MSFT/RootCATrustedCertificates/CA/${t(inter.certPem)}/EncodedCertificate`, 'b64', true],
        [`./Device/Vendor/MSFT/RootCATrustedCertificates/Root/${t(root.certPem)}/EncodedCertificate`, 'b64', true],
      ].sort(),
    );
  });

  it('passes raw settings through as written, secrets kept as references and checked only for presence', () => {
    expect(nodes({ windows: { settings: [{ omaUri: './Device/Vendor/MSFT/Policy/Config/Defender/AllowRealtimeMonitoring', format: 'int', value: 1 }, { omaUri: './Vendor/MSFT/Custom/Flag', format: 'bool', value: true }, { omaUri: './Vendor/MSFT/VPNv2/Corp/Secret', format: 'chr', value: '${secret:VPN}' }] } })).toEqual([
      { locUri: './Device/Vendor/MSFT/Policy/Config/Defender/AllowRealtimeMonitoring', format: 'int', value: '1', method: 'replace', read: './Device/Vendor/MSFT/Policy/Result/Defender/AllowRealtimeMonitoring', verify: 'value' },
      { locUri: './Vendor/MSFT/Custom/Flag', format: 'bool', value: 'true', method: 'add', read: './Vendor/MSFT/Custom/Flag', verify: 'value' },
      { locUri: './Vendor/MSFT/VPNv2/Corp/Secret', format: 'chr', value: '${secret:VPN}', method: 'add', read: './Vendor/MSFT/VPNv2/Corp/Secret', verify: 'exists', secret: true },
    ]);
  });

  it('checks an ADMX-backed raw policy for presence only: Windows reads it back in another form', () => {
    const [admx] = nodes({ windows: { settings: [{ omaUri: './Device/Vendor/MSFT/Policy/Config/ADMX_RemovableStorage/RemovableStorageClasses_DenyAll_Access_2', format: 'chr', value: '<enabled/>' }] } });
    expect(admx).toMatchObject({ method: 'replace', read: './Device/Vendor/MSFT/Policy/Result/ADMX_RemovableStorage/RemovableStorageClasses_DenyAll_Access_2', verify: 'exists' });
    // A plain chr policy value is still compared.
    const [chr] = nodes({ windows: { settings: [{ omaUri: './Device/Vendor/MSFT/Policy/Config/Update/TargetReleaseVersion', format: 'chr', value: '24H2' }] } });
    expect(chr!.verify).toBe('value');
  });

  it('lets a raw setting win over the vocabulary for the same node, and says so', () => {
    const r = compileWindowsNodes([bundle({ settings: { restrictions: { allowCamera: false } }, windows: { settings: [{ omaUri: './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', format: 'int', value: 1 }] } })]);
    expect(r.items.map((i) => [i.id, (i.payload as CspNode).value])).toEqual([['./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', '1']]);
    expect(r.overridden).toEqual(['./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera']);
  });

  it('compiles the DMClient poll schedule in minutes under the provider, polling on for ever after both sets', () => {
    expect(values({ windows: { poll: { first: { every: '3m', times: 20 }, second: { every: '15m', times: 8 }, then: '8h', onLogin: true } } }, { providerId: 'Contoso MDM' })).toEqual({
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/IntervalForFirstSetOfRetries': '3',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/NumberOfFirstRetries': '20',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/IntervalForSecondSetOfRetries': '15',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/NumberOfSecondRetries': '8',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/IntervalForRemainingScheduledRetries': '480',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/NumberOfRemainingScheduledRetries': '0',
      './Vendor/MSFT/DMClient/Provider/Contoso%20MDM/Poll/PollOnLogin': 'true',
    });
    expect(nodes({ windows: { poll: { then: '90s' } } }).map((n) => [n.locUri.split('/').pop(), n.value, n.method])).toEqual([
      ['IntervalForRemainingScheduledRetries', '2', 'replace'],
      ['NumberOfRemainingScheduledRetries', '0', 'replace'],
    ]);
    expect(nodes({ windows: { poll: { onLogin: false } } })[0]).toMatchObject({ locUri: './Vendor/MSFT/DMClient/Provider/Muster/Poll/PollOnLogin', format: 'bool', value: 'false' });
  });
});

describe('items', () => {
  it('hashes format and value, so a read-back value hashes the same, ints and bools normalized', () => {
    const [item] = compileWindowsNodes([bundle({ settings: { restrictions: { allowCamera: false } } })]).items;
    expect(item!.hash).toBe(cspHash('int', '0'));
    expect(cspHash('int', normalizeValue('int', ' 00 '))).toBe(item!.hash);
    expect(normalizeValue('bool', 'True')).toBe('true');
    expect(normalizeValue('bool', '0')).toBe('false');
    expect(cspHash('chr', '0')).not.toBe(item!.hash);
    expect(policyResultUri('./Vendor/MSFT/Policy/Config/Camera/AllowCamera')).toBe('./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera');
    expect(policyResultUri('./User/Vendor/MSFT/Policy/Config/Start/HideRecentJumplists')).toBe('./User/Vendor/MSFT/Policy/Result/Start/HideRecentJumplists');
    expect(policyResultUri('./Vendor/MSFT/WiFi/Profile/A/WlanXml')).toBeUndefined();
  });

  it('merges bundles setting a node alike (both are sources), skips bundles for other platforms', () => {
    const r = compileWindowsNodes([
      bundle({ settings: { restrictions: { allowCamera: false } } }, 'a', `sha256:${'a'.repeat(64)}`),
      bundle({ settings: { restrictions: { allowCamera: false, allowBluetooth: false } } }, 'b', `sha256:${'b'.repeat(64)}`),
      bundle({ platforms: ['apple'], settings: { passcode: { required: true } } }, 'c', `sha256:${'c'.repeat(64)}`),
    ]);
    expect(r.items.map((i) => [i.id, i.sources.map((s) => s.slice(7, 8))])).toEqual([
      ['./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera', ['a', 'b']],
      ['./Device/Vendor/MSFT/Policy/Config/Connectivity/AllowBluetooth', ['b']],
    ]);
  });

  it('compiles a schema-valid bundle from YAML and renders it as SyncML: DeviceLock in one Atomic, the rest one command each', () => {
    const set = policyOf({
      'b.yaml': `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: win-baseline }
spec:
  version: "1.0.0"
  settings:
    passcode: { required: true, minLength: 10 }
    restrictions: { allowCamera: false }
    wifi:
      - { ssid: "R&D", security: wpa2-personal, password: "\${secret:RND_PSK}" }
  windows:
    poll: { then: 8h }
`,
    });
    const b = set.bundles.get('win-baseline')!.resource;
    const r = renderWindows(b)!;
    expect(r.nodes.map((n) => n.locUri)).toEqual([
      './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera',
      './Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled',
      './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength',
      './Vendor/MSFT/DMClient/Provider/Muster/Poll/IntervalForRemainingScheduledRetries',
      './Vendor/MSFT/DMClient/Provider/Muster/Poll/NumberOfRemainingScheduledRetries',
      './Vendor/MSFT/WiFi/Profile/R%26D/WlanXml',
    ]);
    const m = decodeServerMessage(r.syncml);
    expect(m.body.map((c) => c.kind)).toEqual(['Atomic', 'Replace', 'Replace', 'Replace', 'Add']);
    const atomic = m.body[0]!;
    expect(atomic.kind === 'Atomic' && atomic.commands.map((c) => c.kind === 'Replace' && [c.items[0]!.target, c.items[0]!.data])).toEqual([
      ['./Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled', '0'],
      ['./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength', '10'],
    ]);
    expect(r.syncml).toContain('${secret:RND_PSK}');
    expect(r.syncml).not.toContain('CDATA');
    const xml = parseXml(r.syncml);
    expect(children(child(xml, 'SyncBody'), 'Add')).toHaveLength(1);
    expect(renderWindows({ ...b, spec: { ...b.spec, platforms: ['android'] } })).toBeUndefined();
  });
});
