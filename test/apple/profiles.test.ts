// The Apple compiler: each vocabulary setting to its payload and keys, per OS
// family; stable identifiers and hash-derived UUIDs; secret references kept
// until delivery; raw payloads appended; bundles for other platforms (or with
// nothing for Apple) compile to nothing. The example bundles render to plists
// that read back.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { bundleHash } from '../../controller/policy/hash.js';
import type { PolicyBundle, PolicyBundleSpec, Settings } from '../../controller/policy/types.js';
import { diffItems, type DriverDevice, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { decodePlist, encodePlist, isPlistDict } from '../../protocols/apple/plist.js';
import {
  appleFamily,
  appleProfileDiff,
  buildAppleProfile,
  compileAppleProfiles,
  hashUuid,
  payloadUuid,
  pemToDer,
  profileUuid,
  resolveProfileSecrets,
  type AppleFamily,
  type AppleProfile,
  type ProfilePayload,
} from '../../protocols/apple/profiles.js';
import { renderApple } from '../../protocols/apple/render.js';
import { generateCa } from '../../protocols/apple/scep/index.js';

const CA = generateCa({ subject: { commonName: 'Test Root' } });
const ROOT_PEM = CA.certPem;

function bundle(name: string, spec: Omit<PolicyBundleSpec, 'version'> & { version?: string }): ResolvedBundle {
  const full = { version: '1.0.0', ...spec } as PolicyBundleSpec;
  return { name, version: full.version, hash: bundleHash(name, full), spec: full, rollout: 'r' };
}
const withSettings = (settings: Settings, extra: Partial<PolicyBundleSpec> = {}): ResolvedBundle => bundle('b', { settings, ...extra });

const MODELS: Record<AppleFamily, string> = {
  macos: 'MacBookPro18,3',
  ios: 'iPhone15,2',
  ipados: 'iPad13,4',
  tvos: 'AppleTV6,2',
  watchos: 'Watch6,1',
  visionos: 'RealityDevice14,1',
};
const device = (family: AppleFamily | null): DriverDevice => ({ id: 'd1', platform: 'apple', osVersion: null, model: family ? MODELS[family] : null });

/** The one profile a bundle compiles to for a device of this family. */
function profileFor(b: ResolvedBundle, family: AppleFamily | null = null): AppleProfile {
  const state = compileAppleProfiles([b], device(family));
  expect(state.items).toHaveLength(1);
  return state.items[0]!.payload as AppleProfile;
}
const payloads = (p: AppleProfile, type: string): ProfilePayload[] => p.PayloadContent.filter((x) => x.PayloadType === type);
function only(p: AppleProfile, type: string): ProfilePayload {
  const found = payloads(p, type);
  expect(found, `one ${type} payload`).toHaveLength(1);
  return found[0]!;
}
/** A payload's own keys (without the common Payload* keys). */
const own = (p: ProfilePayload): Record<string, unknown> => Object.fromEntries(Object.entries(p).filter(([k]) => !['PayloadType', 'PayloadVersion', 'PayloadIdentifier', 'PayloadUUID', 'PayloadDisplayName'].includes(k)));

describe('appleFamily', () => {
  it.each([
    ['MacBookPro18,3', 'macos'],
    ['Mac14,2', 'macos'],
    ['iMac21,1', 'macos'],
    ['Macmini9,1', 'macos'],
    ['VirtualMac2,1', 'macos'],
    ['MacBook Air', 'macos'],
    ['iPhone15,2', 'ios'],
    ['iPod9,1', 'ios'],
    ['iPad13,4', 'ipados'],
    ['AppleTV6,2', 'tvos'],
    ['Apple TV', 'tvos'],
    ['Watch6,1', 'watchos'],
    ['RealityDevice14,1', 'visionos'],
    ['MN9P3LL/A', undefined],
    [null, undefined],
  ])('%s → %s', (model, family) => {
    expect(appleFamily(model)).toBe(family);
  });
});

describe('passcode → com.apple.mobiledevice.passwordpolicy', () => {
  it.each<[string, Settings['passcode'], Record<string, unknown>]>([
    ['required and length', { required: true, minLength: 8 }, { forcePIN: true, minLength: 8 }],
    ['numeric', { complexity: 'numeric' }, { requireAlphanumeric: false }],
    ['none', { complexity: 'none' }, { requireAlphanumeric: false }],
    ['alphanumeric', { complexity: 'alphanumeric' }, { requireAlphanumeric: true }],
    ['complex needs a symbol', { complexity: 'complex' }, { requireAlphanumeric: true, minComplexChars: 1 }],
    ['complex with more symbols', { complexity: 'complex', minComplexCharacters: 3 }, { requireAlphanumeric: true, minComplexChars: 3 }],
    ['symbols without complexity', { minComplexCharacters: 2 }, { minComplexChars: 2 }],
    ['failed attempts', { maxFailedAttempts: 6 }, { maxFailedAttempts: 6 }],
    ['inactivity in minutes', { maxInactivityMinutes: 5 }, { maxInactivity: 5 }],
    ['age in days', { maxAgeDays: 90 }, { maxPINAgeInDays: 90 }],
    ['history', { historyCount: 12 }, { pinHistory: 12 }],
    ['no history is left to the device', { historyCount: 0, minLength: 4 }, { minLength: 4 }],
    ['simple passcodes refused', { allowSimple: false }, { allowSimple: false }],
    [
      'everything',
      { required: true, minLength: 12, complexity: 'complex', minComplexCharacters: 1, maxFailedAttempts: 6, maxInactivityMinutes: 2, maxAgeDays: 90, historyCount: 12, allowSimple: false },
      { forcePIN: true, minLength: 12, requireAlphanumeric: true, minComplexChars: 1, maxFailedAttempts: 6, maxInactivity: 2, maxPINAgeInDays: 90, pinHistory: 12, allowSimple: false },
    ],
  ])('%s', (_name, passcode, keys) => {
    for (const family of ['macos', 'ios', null] as const) {
      expect(own(only(profileFor(withSettings({ passcode }), family), 'com.apple.mobiledevice.passwordpolicy'))).toEqual(keys);
    }
  });

  it('does not reach Apple TV', () => {
    expect(compileAppleProfiles([withSettings({ passcode: { minLength: 6 } })], device('tvos')).items).toEqual([]);
  });
});

describe('restrictions → com.apple.applicationaccess', () => {
  const all = { allowCamera: false, allowScreenCapture: false, allowCloudBackup: false, allowAppInstallation: false, allowFactoryReset: false, allowUnknownSources: false };
  it.each<[AppleFamily | null, Record<string, unknown>]>([
    ['ios', { allowCamera: false, allowScreenShot: false, allowCloudBackup: false, allowAppInstallation: false, allowEraseContentAndSettings: false, allowMarketplaceAppInstallation: false }],
    ['ipados', { allowCamera: false, allowScreenShot: false, allowCloudBackup: false, allowAppInstallation: false, allowEraseContentAndSettings: false, allowMarketplaceAppInstallation: false }],
    // No iCloud Backup or App Store switch on macOS; unknown sources are Gatekeeper there.
    ['macos', { allowCamera: false, allowScreenShot: false, allowEraseContentAndSettings: false }],
    ['tvos', { allowCamera: false }],
    [null, { allowCamera: false, allowScreenShot: false, allowCloudBackup: false, allowAppInstallation: false, allowEraseContentAndSettings: false, allowMarketplaceAppInstallation: false }],
  ])('%s', (family, keys) => {
    expect(own(only(profileFor(withSettings({ restrictions: all }), family), 'com.apple.applicationaccess'))).toEqual(keys);
  });

  it('sends true as true (explicitly allowed)', () => {
    expect(own(only(profileFor(withSettings({ restrictions: { allowCamera: true } }), 'ios'), 'com.apple.applicationaccess'))).toEqual({ allowCamera: true });
  });

  it('turns Gatekeeper on for macOS when unknown sources are refused, and leaves it alone when they are allowed', () => {
    const mac = profileFor(withSettings({ restrictions: { allowUnknownSources: false } }), 'macos');
    expect(own(only(mac, 'com.apple.systempolicy.control'))).toEqual({ EnableAssessment: true, AllowIdentifiedDevelopers: true });
    expect(payloads(mac, 'com.apple.applicationaccess')).toEqual([]);
    expect(payloads(profileFor(withSettings({ restrictions: { allowUnknownSources: true, allowCamera: true } }), 'macos'), 'com.apple.systempolicy.control')).toEqual([]);
    expect(payloads(profileFor(withSettings({ restrictions: { allowUnknownSources: false } }), 'ios'), 'com.apple.systempolicy.control')).toEqual([]);
  });

  it('sends nothing for Bluetooth and removable storage (no Apple profile key turns them off)', () => {
    expect(compileAppleProfiles([withSettings({ restrictions: { allowBluetooth: false, allowRemovableStorage: false } })], device(null)).items).toEqual([]);
  });
});

describe('encryption → com.apple.MCX.FileVault2 on macOS', () => {
  it('turns FileVault on at the next login, showing the key when it cannot be escrowed', () => {
    const p = profileFor(withSettings({ encryption: { required: true, escrowRecoveryKey: true } }), 'macos');
    expect(own(only(p, 'com.apple.MCX.FileVault2'))).toEqual({ Enable: 'On', Defer: true, DeferForceAtUserLoginMaxBypassAttempts: 0, UseRecoveryKey: true });
    expect(payloads(p, 'com.apple.security.FDERecoveryKeyEscrow')).toEqual([]);
  });

  it('escrows the personal recovery key to the configured certificate', () => {
    const b = withSettings({ encryption: { required: true, escrowRecoveryKey: true } });
    const state = compileAppleProfiles([b], device('macos'), { fileVaultEscrow: { certificateDer: CA.certDer, location: 'Muster at mdm.example.com' } });
    const p = state.items[0]!.payload as AppleProfile;
    expect(only(p, 'com.apple.MCX.FileVault2').ShowRecoveryKey).toBe(false);
    const cert = only(p, 'com.apple.security.pkcs1');
    expect(cert.PayloadContent).toEqual(CA.certDer);
    expect(own(only(p, 'com.apple.security.FDERecoveryKeyEscrow'))).toEqual({ Location: 'Muster at mdm.example.com', EncryptCertPayloadUUID: cert.PayloadUUID });
  });

  it('does nothing on iPhone (encrypted whenever a passcode is set) or when not required', () => {
    expect(compileAppleProfiles([withSettings({ encryption: { required: true } })], device('ios')).items).toEqual([]);
    expect(compileAppleProfiles([withSettings({ encryption: { required: false } })], device('macos')).items).toEqual([]);
  });
});

describe('certificates → com.apple.security.root / pkcs1 / pkcs12', () => {
  const certs: Settings['certificates'] = [
    { name: 'corp-root', type: 'root', pem: ROOT_PEM },
    { name: 'corp-issuing', type: 'intermediate', pem: ROOT_PEM },
    { name: 'wifi-identity', type: 'pkcs12', pkcs12: '${secret:WIFI_P12}', passphrase: '${secret:WIFI_P12_PASS}' },
  ];

  it('carries root and intermediate certificates as DER bytes', () => {
    const p = profileFor(withSettings({ certificates: certs }));
    expect(own(only(p, 'com.apple.security.root'))).toEqual({ PayloadCertificateFileName: 'corp-root.cer', PayloadContent: CA.certDer });
    expect(own(only(p, 'com.apple.security.pkcs1'))).toEqual({ PayloadCertificateFileName: 'corp-issuing.cer', PayloadContent: CA.certDer });
    expect(Buffer.isBuffer(only(p, 'com.apple.security.root').PayloadContent)).toBe(true);
    expect(pemToDer(ROOT_PEM, 'x')).toEqual(CA.certDer);
  });

  it('keeps the PKCS#12 and its passphrase as secret references', () => {
    const p = profileFor(withSettings({ certificates: certs }));
    expect(own(only(p, 'com.apple.security.pkcs12'))).toEqual({ PayloadCertificateFileName: 'wifi-identity.p12', PayloadContent: '${secret:WIFI_P12}', Password: '${secret:WIFI_P12_PASS}' });
  });
});

describe('Wi-Fi → com.apple.wifi.managed', () => {
  it.each<[string, NonNullable<Settings['wifi']>[number], Record<string, unknown>]>([
    ['open', { ssid: 'Guest', security: 'none' }, { SSID_STR: 'Guest', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'None' }],
    ['WEP', { ssid: 'Old', security: 'wep', password: '${secret:OLD}' }, { SSID_STR: 'Old', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'WEP', Password: '${secret:OLD}' }],
    [
      'WPA2 personal, hidden, not auto-joined',
      { ssid: 'Lab', security: 'wpa2-personal', password: '${secret:LAB_PSK}', hidden: true, autoJoin: false },
      { SSID_STR: 'Lab', HIDDEN_NETWORK: true, AutoJoin: false, EncryptionType: 'WPA2', Password: '${secret:LAB_PSK}' },
    ],
    ['WPA3 personal', { ssid: 'New', security: 'wpa3-personal', password: '${secret:NEW}' }, { SSID_STR: 'New', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'WPA3', Password: '${secret:NEW}' }],
    [
      'manual proxy',
      { ssid: 'P', security: 'none', proxy: { type: 'manual', server: 'proxy.example.com', port: 3128 } },
      { SSID_STR: 'P', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'None', ProxyType: 'Manual', ProxyServer: 'proxy.example.com', ProxyServerPort: 3128 },
    ],
    [
      'PAC proxy',
      { ssid: 'P', security: 'none', proxy: { type: 'auto', url: 'https://wpad.example.com/proxy.pac' } },
      { SSID_STR: 'P', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'None', ProxyType: 'Auto', ProxyPACURL: 'https://wpad.example.com/proxy.pac' },
    ],
    ['proxy discovery', { ssid: 'P', security: 'none', proxy: { type: 'auto' } }, { SSID_STR: 'P', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'None', ProxyType: 'Auto' }],
    ['no proxy', { ssid: 'P', security: 'none', proxy: { type: 'none' } }, { SSID_STR: 'P', HIDDEN_NETWORK: false, AutoJoin: true, EncryptionType: 'None', ProxyType: 'None' }],
  ])('%s', (_name, network, keys) => {
    expect(own(only(profileFor(withSettings({ wifi: [network] })), 'com.apple.wifi.managed'))).toEqual(keys);
  });

  it('builds EAP from the vocabulary, pointing at the trusted and client certificate payloads of the same profile', () => {
    const p = profileFor(
      withSettings({
        certificates: [
          { name: 'radius-root', type: 'root', pem: ROOT_PEM },
          { name: 'me', type: 'pkcs12', pkcs12: '${secret:ME_P12}' },
        ],
        wifi: [
          { ssid: 'Corp', security: 'wpa2-enterprise', eap: { methods: ['tls'], trustedCertificates: ['radius-root'], serverNames: ['radius.example.com'], clientCertificate: 'me' } },
          { ssid: 'Corp-PEAP', security: 'wpa3-enterprise', eap: { methods: ['peap', 'ttls'], identity: 'alice', outerIdentity: 'anonymous@example.com', password: '${secret:ALICE}' } },
        ],
      }),
    );
    const root = only(p, 'com.apple.security.root');
    const identity = only(p, 'com.apple.security.pkcs12');
    const [tls, peap] = payloads(p, 'com.apple.wifi.managed');
    expect(own(tls!)).toEqual({
      SSID_STR: 'Corp',
      HIDDEN_NETWORK: false,
      AutoJoin: true,
      EncryptionType: 'WPA2',
      EAPClientConfiguration: { AcceptEAPTypes: [13], PayloadCertificateAnchorUUID: [root.PayloadUUID], TLSTrustedServerNames: ['radius.example.com'] },
      PayloadCertificateUUID: identity.PayloadUUID,
    });
    expect(own(peap!)).toEqual({
      SSID_STR: 'Corp-PEAP',
      HIDDEN_NETWORK: false,
      AutoJoin: true,
      EncryptionType: 'WPA3',
      EAPClientConfiguration: { AcceptEAPTypes: [25, 21], UserName: 'alice', UserPassword: '${secret:ALICE}', OuterIdentity: 'anonymous@example.com' },
    });
    // Certificates come first, so the payloads they are referred to from follow them.
    expect(p.PayloadContent.indexOf(root)).toBeLessThan(p.PayloadContent.indexOf(tls!));
  });
});

describe('VPN → com.apple.vpn.managed', () => {
  const certs: Settings['certificates'] = [{ name: 'vpn-id', type: 'pkcs12', pkcs12: '${secret:VPN_P12}', passphrase: '${secret:VPN_PASS}' }];

  it('IKEv2 with a certificate, on demand, all traffic, DNS', () => {
    const p = profileFor(
      withSettings({
        certificates: certs,
        vpn: [
          {
            name: 'Corp VPN',
            type: 'ikev2',
            server: 'vpn.example.com',
            localIdentifier: 'client.example.com',
            authentication: { method: 'certificate', certificate: 'vpn-id' },
            onDemand: true,
            splitTunnel: false,
            dnsServers: ['10.0.0.53'],
          },
        ],
      }),
      'macos',
    );
    const identity = only(p, 'com.apple.security.pkcs12');
    expect(own(only(p, 'com.apple.vpn.managed'))).toEqual({
      VPNType: 'IKEv2',
      UserDefinedName: 'Corp VPN',
      IKEv2: {
        RemoteAddress: 'vpn.example.com',
        RemoteIdentifier: 'vpn.example.com',
        LocalIdentifier: 'client.example.com',
        AuthenticationMethod: 'Certificate',
        PayloadCertificateUUID: identity.PayloadUUID,
        OnDemandEnabled: 1,
        OnDemandRules: [{ Action: 'Connect' }],
        IncludeAllNetworks: 1,
      },
      DNS: { DNSProtocol: 'Cleartext', ServerAddresses: ['10.0.0.53'] },
    });
  });

  it('IKEv2 with a shared secret, split tunnel', () => {
    const p = profileFor(withSettings({ vpn: [{ name: 'S', type: 'ikev2', server: 'gw', remoteIdentifier: 'gw.example.com', authentication: { method: 'sharedSecret', sharedSecret: '${secret:PSK}' }, splitTunnel: true }] }));
    expect(only(p, 'com.apple.vpn.managed').IKEv2).toEqual({ RemoteAddress: 'gw', RemoteIdentifier: 'gw.example.com', AuthenticationMethod: 'SharedSecret', SharedSecret: '${secret:PSK}', IncludeAllNetworks: 0 });
  });

  it('IKEv2 with EAP only', () => {
    const p = profileFor(withSettings({ vpn: [{ name: 'E', type: 'ikev2', server: 'gw', authentication: { method: 'eap', username: 'alice', password: '${secret:ALICE}' }, onDemand: false }] }));
    expect(only(p, 'com.apple.vpn.managed').IKEv2).toEqual({
      RemoteAddress: 'gw',
      RemoteIdentifier: 'gw',
      AuthenticationMethod: 'None',
      ExtendedAuthEnabled: 1,
      AuthName: 'alice',
      AuthPassword: '${secret:ALICE}',
      OnDemandEnabled: 0,
    });
  });

  it('Always On on iPhone and iPad, an on-demand IKEv2 VPN on the Mac', () => {
    const b = withSettings({ certificates: certs, vpn: [{ name: 'A', type: 'ikev2', server: 'gw', authentication: { method: 'certificate', certificate: 'vpn-id' }, alwaysOn: true, onDemand: true }] });
    for (const family of ['ios', 'ipados'] as const) {
      const p = profileFor(b, family);
      const vpn = only(p, 'com.apple.vpn.managed');
      expect(vpn.VPNType).toBe('AlwaysOn');
      expect(vpn.AlwaysOn).toEqual({
        UIToggleEnabled: 0,
        TunnelConfigurations: [
          {
            ProtocolType: 'IKEv2',
            Interfaces: ['Cellular', 'WiFi'],
            RemoteAddress: 'gw',
            RemoteIdentifier: 'gw',
            AuthenticationMethod: 'Certificate',
            PayloadCertificateUUID: only(p, 'com.apple.security.pkcs12').PayloadUUID,
          },
        ],
      });
    }
    const mac = only(profileFor(b, 'macos'), 'com.apple.vpn.managed');
    expect(mac.VPNType).toBe('IKEv2');
    expect((mac.IKEv2 as Record<string, unknown>).OnDemandEnabled).toBe(1);
  });

  it('L2TP: PPP user, IPSec shared secret, all traffic', () => {
    const p = profileFor(withSettings({ vpn: [{ name: 'L', type: 'l2tp', server: 'l2tp.example.com', authentication: { method: 'sharedSecret', sharedSecret: '${secret:L2TP_PSK}', username: 'bob', password: '${secret:BOB}' }, splitTunnel: false }] }));
    expect(own(only(p, 'com.apple.vpn.managed'))).toEqual({
      VPNType: 'L2TP',
      UserDefinedName: 'L',
      PPP: { CommRemoteAddress: 'l2tp.example.com', AuthName: 'bob', AuthPassword: '${secret:BOB}' },
      IPSec: { AuthenticationMethod: 'SharedSecret', SharedSecret: '${secret:L2TP_PSK}' },
      IPv4: { OverridePrimary: 1 },
    });
  });

  it('WireGuard does not reach Apple devices (no built-in type)', () => {
    expect(compileAppleProfiles([withSettings({ vpn: [{ name: 'W', type: 'wireguard', server: 'wg', authentication: { method: 'sharedSecret', sharedSecret: '${secret:WG}' } }] })], device(null)).items).toEqual([]);
  });
});

describe('OS updates', () => {
  it.each<[AppleFamily, Record<string, unknown>]>([
    ['ios', { forceDelayedSoftwareUpdates: true, enforcedSoftwareUpdateDelay: 14 }],
    ['tvos', { forceDelayedSoftwareUpdates: true, enforcedSoftwareUpdateDelay: 14 }],
    [
      'macos',
      {
        forceDelayedSoftwareUpdates: true,
        enforcedSoftwareUpdateDelay: 14,
        forceDelayedMajorSoftwareUpdates: true,
        enforcedSoftwareUpdateMajorOSDeferredInstallDelay: 14,
        enforcedSoftwareUpdateMinorOSDeferredInstallDelay: 14,
      },
    ],
  ])('deferral on %s is a restriction', (family, keys) => {
    expect(own(only(profileFor(withSettings({ osUpdates: { deferralDays: 14 } }), family), 'com.apple.applicationaccess'))).toEqual(keys);
  });

  it('no deferral turns delays off', () => {
    expect(own(only(profileFor(withSettings({ osUpdates: { deferralDays: 0 } }), 'macos'), 'com.apple.applicationaccess'))).toEqual({ forceDelayedSoftwareUpdates: false, forceDelayedMajorSoftwareUpdates: false });
  });

  it('shares one restrictions payload with the restrictions settings', () => {
    const p = profileFor(withSettings({ restrictions: { allowCamera: false }, osUpdates: { deferralDays: 7 } }), 'ios');
    expect(own(only(p, 'com.apple.applicationaccess'))).toEqual({ allowCamera: false, forceDelayedSoftwareUpdates: true, enforcedSoftwareUpdateDelay: 7 });
  });

  it.each([
    [true, { AutomaticCheckEnabled: true, AutomaticDownload: true, AutomaticallyInstallMacOSUpdates: true, CriticalUpdateInstall: true, ConfigDataInstall: true }],
    [false, { AutomaticDownload: false, AutomaticallyInstallMacOSUpdates: false }],
  ])('automaticInstall %s → com.apple.SoftwareUpdate on macOS only', (automaticInstall, keys) => {
    expect(own(only(profileFor(withSettings({ osUpdates: { automaticInstall } }), 'macos'), 'com.apple.SoftwareUpdate'))).toEqual(keys);
    expect(compileAppleProfiles([withSettings({ osUpdates: { automaticInstall } })], device('ios')).items).toEqual([]);
  });

  it('a minimum version and deadline alone make no profile (that is declarative management)', () => {
    expect(compileAppleProfiles([withSettings({ osUpdates: { minimumVersion: { macos: '15.5', ios: '18.5' }, deadline: '2026-12-15T17:00:00Z' } })], device(null)).items).toEqual([]);
  });
});

describe('raw apple.payloads', () => {
  it('are appended verbatim after the vocabulary payloads, with the common keys they lack filled in', () => {
    const b = bundle('mac-extras', {
      settings: { passcode: { minLength: 8 } },
      apple: {
        payloads: [
          { PayloadType: 'com.apple.dock', PayloadIdentifier: 'com.example.dock', PayloadDisplayName: 'Dock', orientation: 'bottom', tilesize: 48, 'show-recents': false },
          { PayloadType: 'com.apple.screensaver', idleTime: 600, nested: { list: [1, 'two'] } },
          { PayloadType: 'com.example.custom', PayloadIdentifier: 'com.example.custom', PayloadUUID: '11111111-2222-3333-4444-555555555555', PayloadVersion: 2, key: 'value' },
        ],
      },
    });
    const p = profileFor(b);
    expect(p.PayloadContent.map((x) => x.PayloadType)).toEqual(['com.apple.mobiledevice.passwordpolicy', 'com.apple.dock', 'com.apple.screensaver', 'com.example.custom']);
    expect(p.PayloadContent[1]).toEqual({
      PayloadType: 'com.apple.dock',
      PayloadIdentifier: 'com.example.dock',
      PayloadDisplayName: 'Dock',
      orientation: 'bottom',
      tilesize: 48,
      'show-recents': false,
      PayloadVersion: 1,
      PayloadUUID: payloadUuid(b.hash, 1),
    });
    expect(p.PayloadContent[2]).toEqual({ PayloadType: 'com.apple.screensaver', PayloadIdentifier: 'com.apple.screensaver', PayloadVersion: 1, PayloadUUID: payloadUuid(b.hash, 2), idleTime: 600, nested: { list: [1, 'two'] } });
    expect(p.PayloadContent[3]).toEqual({ PayloadType: 'com.example.custom', PayloadIdentifier: 'com.example.custom', PayloadUUID: '11111111-2222-3333-4444-555555555555', PayloadVersion: 2, key: 'value' });
  });

  it('are copies: changing the profile does not change the bundle', () => {
    const b = bundle('x', { apple: { payloads: [{ PayloadType: 'com.apple.dock', nested: { a: 1 } }] } });
    const p = profileFor(b);
    (p.PayloadContent[0]!.nested as Record<string, number>).a = 2;
    expect((b.spec.apple!.payloads![0]!.nested as Record<string, number>).a).toBe(1);
  });
});

describe('the profile and its items', () => {
  const b = bundle('corp-baseline', {
    version: '1.3.0',
    description: 'Corporate baseline',
    settings: { passcode: { minLength: 8 }, restrictions: { allowCamera: false }, wifi: [{ ssid: 'Corp', security: 'wpa2-personal', password: '${secret:PSK}' }] },
  });

  it('is one Configuration profile per bundle, named for the bundle, with UUIDs from its hash', () => {
    const p = profileFor(b, 'ios');
    expect({ ...p, PayloadContent: undefined }).toEqual({
      PayloadType: 'Configuration',
      PayloadVersion: 1,
      PayloadIdentifier: 'dev.muster.bundle.corp-baseline',
      PayloadUUID: profileUuid(b.hash),
      PayloadDisplayName: 'corp-baseline 1.3.0',
      PayloadDescription: 'Corporate baseline',
      PayloadScope: 'System',
      PayloadContent: undefined,
    });
    expect(p.PayloadContent.map((x) => x.PayloadUUID)).toEqual([0, 1, 2].map((i) => payloadUuid(b.hash, i)));
    expect(p.PayloadContent.map((x) => x.PayloadIdentifier)).toEqual(['dev.muster.bundle.corp-baseline.passcode', 'dev.muster.bundle.corp-baseline.restrictions', 'dev.muster.bundle.corp-baseline.wifi.0']);
    expect(new Set([p.PayloadUUID, ...p.PayloadContent.map((x) => x.PayloadUUID)]).size).toBe(4);
  });

  it('UUIDs are RFC 9562 version 8 (SHA-256), deterministic, and follow the content', () => {
    const u = profileUuid(b.hash);
    expect(u).toMatch(/^[0-9A-F]{8}-[0-9A-F]{4}-8[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
    expect(hashUuid('x')).toBe(hashUuid('x'));
    expect(profileFor(b).PayloadUUID).toBe(u);
    const changed = bundle('corp-baseline', { ...b.spec, version: '1.3.1', settings: { ...b.spec.settings, passcode: { minLength: 10 } } });
    expect(profileFor(changed).PayloadUUID).not.toBe(u);
    expect(profileFor(changed).PayloadIdentifier).toBe('dev.muster.bundle.corp-baseline');
  });

  it('becomes a NativeItem named by the PayloadIdentifier and carrying the bundle hash', () => {
    const other = bundle('alpha', { settings: { restrictions: { allowCamera: true } } });
    const state = compileAppleProfiles([b, other], device('ios'));
    expect(state.platform).toBe('apple');
    expect(state.items.map((i) => i.id)).toEqual(['dev.muster.bundle.alpha', 'dev.muster.bundle.corp-baseline']);
    const item = state.items[1]!;
    expect(item).toMatchObject({ id: 'dev.muster.bundle.corp-baseline', hash: b.hash, sources: [b.hash], summary: 'profile dev.muster.bundle.corp-baseline (3 payloads)' });
    expect(state.items[0]!.summary).toBe('profile dev.muster.bundle.alpha (1 payload)');
    // Pure: the same input gives the same output.
    expect(compileAppleProfiles([other, b], device('ios'))).toEqual(state);
  });

  it('keeps secret references in the payload, and so in everything hashed or planned', () => {
    const item = compileAppleProfiles([b], device('ios')).items[0]!;
    expect(JSON.stringify(item.payload)).toContain('${secret:PSK}');
  });

  it('a bundle for other platforms, or with nothing for Apple, compiles to nothing', () => {
    const windowsOnly = bundle('win', { platforms: ['windows', 'android'], settings: { passcode: { minLength: 8 } } });
    const appsOnly = bundle('apps', {
      settings: { apps: [{ name: 'outlook', installType: 'required', apple: { bundleId: 'com.microsoft.Outlook' } }], kiosk: { app: 'outlook' } },
      compliance: [{ name: 'enc', encryptionRequired: true }],
    });
    expect(compileAppleProfiles([windowsOnly, appsOnly], device('ios'))).toEqual({ platform: 'apple', items: [] });
    expect(buildAppleProfile(windowsOnly, undefined)).toBeUndefined();
    expect(renderApple(windowsOnly)).toBeUndefined();
    expect(compileAppleProfiles([bundle('apple', { platforms: ['apple'], settings: { passcode: { minLength: 8 } } })], device('ios')).items).toHaveLength(1);
  });

  it('is diffed as whole profiles (the common item diff)', () => {
    expect(appleProfileDiff).toBe(diffItems);
    const desired = compileAppleProfiles([b], device('ios'));
    expect(appleProfileDiff(desired, undefined)).toEqual([{ kind: 'install', item: desired.items[0], replaces: false }]);
    expect(appleProfileDiff(desired, { items: { 'dev.muster.bundle.corp-baseline': { hash: b.hash, status: 'installed' } } })).toEqual([]);
    expect(appleProfileDiff(desired, { items: { 'dev.muster.bundle.corp-baseline': { hash: 'sha256:old', status: 'installed' }, 'dev.muster.bundle.gone': { hash: 'sha256:x', status: 'installed' } } })).toEqual([
      { kind: 'install', item: desired.items[0], replaces: true },
      { kind: 'remove', id: 'dev.muster.bundle.gone' },
    ]);
  });

  it('encodes to a plist that reads back to the same profile', () => {
    const p = profileFor(
      withSettings({ certificates: [{ name: 'root', type: 'root', pem: ROOT_PEM }], passcode: { minLength: 6 }, wifi: [{ ssid: 'S', security: 'none' }] }),
      'macos',
    );
    expect(decodePlist(encodePlist(p))).toEqual(p);
  });
});

describe('resolveProfileSecrets', () => {
  it('replaces references at delivery: pkcs12 contents and IPSec shared secrets become data', () => {
    const b = withSettings({
      certificates: [{ name: 'id', type: 'pkcs12', pkcs12: '${secret:P12}', passphrase: '${secret:P12_PASS}' }],
      wifi: [{ ssid: 'S', security: 'wpa2-personal', password: '${secret:PSK}' }],
      vpn: [{ name: 'L', type: 'l2tp', server: 's', authentication: { method: 'sharedSecret', sharedSecret: '${secret:L2TP}' } }],
    });
    const profile = profileFor(b);
    const secrets: Record<string, string> = { P12: Buffer.from([1, 2, 3]).toString('base64'), P12_PASS: 'pass', PSK: 'wifi-key', L2TP: 'ipsec-key' };
    const { profile: resolved, missing } = resolveProfileSecrets(profile, (n) => secrets[n]);
    expect(missing).toEqual([]);
    expect(only(resolved, 'com.apple.security.pkcs12')).toMatchObject({ PayloadContent: Buffer.from([1, 2, 3]), Password: 'pass' });
    expect(only(resolved, 'com.apple.wifi.managed').Password).toBe('wifi-key');
    expect((only(resolved, 'com.apple.vpn.managed').IPSec as Record<string, unknown>).SharedSecret).toEqual(Buffer.from('ipsec-key'));
    // The compiled profile itself is untouched.
    expect(only(profile, 'com.apple.wifi.managed').Password).toBe('${secret:PSK}');
    expect(() => encodePlist(resolved)).not.toThrow();
  });

  it('reports missing secrets and leaves their references', () => {
    const profile = profileFor(withSettings({ wifi: [{ ssid: 'S', security: 'wpa2-personal', password: '${secret:NOPE}' }] }));
    const { profile: resolved, missing } = resolveProfileSecrets(profile, () => undefined);
    expect(missing).toEqual(['NOPE']);
    expect(only(resolved, 'com.apple.wifi.managed').Password).toBe('${secret:NOPE}');
  });
});

describe('the example bundles', () => {
  const dir = join(import.meta.dirname, '..', '..', 'policies-example', 'bundles');
  const load = (file: string): PolicyBundle => parseYaml(readFileSync(join(dir, file), 'utf8')) as PolicyBundle;

  it('finance-strict renders to a plist with every setting Apple has', () => {
    const text = renderApple(load('finance-strict.yaml'), { family: 'macos' })!;
    expect(text.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC')).toBe(true);
    const p = decodePlist(text) as unknown as AppleProfile;
    expect(p.PayloadIdentifier).toBe('dev.muster.bundle.finance-strict');
    expect(p.PayloadContent.map((x) => x.PayloadType)).toEqual([
      'com.apple.security.root',
      'com.apple.security.pkcs12',
      'com.apple.security.pkcs12',
      'com.apple.mobiledevice.passwordpolicy',
      'com.apple.applicationaccess',
      'com.apple.MCX.FileVault2',
      'com.apple.systempolicy.control',
      'com.apple.SoftwareUpdate',
      'com.apple.wifi.managed',
      'com.apple.vpn.managed',
    ]);
    expect(text).toContain('${secret:FINANCE_VPN_PKCS12}');
    expect(isPlistDict(p.PayloadContent[0])).toBe(true);
  });

  it.each(['corp-baseline.yaml', 'finance-strict.yaml', 'macos-extras.yaml'])('%s renders for every Apple family', (file) => {
    for (const family of [undefined, 'macos', 'ios', 'ipados', 'tvos'] as const) {
      const text = renderApple(load(file), { family });
      expect(text).toBeDefined();
      const p = decodePlist(text!) as unknown as AppleProfile;
      expect(p.PayloadUUID).toBe(profileUuid(bundleHash(load(file).metadata.name, load(file).spec)));
    }
  });

  it.each(['windows-hardening.yaml', 'android-kiosk.yaml'])('%s has nothing for Apple', (file) => {
    expect(renderApple(load(file))).toBeUndefined();
  });
});
