// The Apple compiler: one configuration profile per bundle, pure.
//
// A bundle's cross-platform settings and its raw `apple.payloads` become the
// payloads of one profile, identified by `dev.muster.bundle.<name>` so a new
// version replaces the old one in place. The profile's PayloadUUID is derived
// from the bundle's content hash, so the ProfileList a device reports says
// which version it holds (profileUuid(hash) is the whole mapping); each
// payload's PayloadUUID is derived from the hash and its position.
//
// Key names follow Apple's device-management schemas (mdm/profiles/*.yaml in
// github.com/apple/device-management). What is compiled depends on the
// device's OS family (from its model: the Authenticate check-in reports it
// before any command is sent); an unknown family gets every payload, which is
// also what `muster render` shows by default.
//
// Secret references (`${secret:NAME}`) stay as they are, here and in every
// hash and plan: resolveProfileSecrets turns them into values at delivery.
//
// Not profiles, and so not compiled here:
//  - settings.apps: InstallApplication / RemoveApplication commands and
//    managed app configuration (the apps driver), not payloads.
//  - settings.kiosk: Single App Mode is the com.apple.app.lock payload, but it
//    needs the app installed and a supervised device; it is left to the apps
//    work, which knows both.
//  - osUpdates.minimumVersion / deadline: a profile cannot require an OS
//    version. Declarative Device Management does
//    (com.apple.configuration.softwareupdate.enforcement.specific,
//    TargetOSVersion + TargetLocalDateTime): that belongs to a DDM channel.
//    Deferral (restrictions) and automatic installation (macOS
//    com.apple.SoftwareUpdate) are profiles and are compiled.
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import forge from 'node-forge';
import { diffItems, type DriverDevice, type NativeItem, type NativeState, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { SECRET_REF_PATTERN, type ApplePayload, type CertificateSettings, type PolicyBundleSpec, type VpnSettings, type WifiNetwork } from '../../controller/policy/types.js';
import { certParts, children, parseDer, toBuffer, toDer, type Asn1 } from '../pki/asn1.js';

export const PROFILE_ID_PREFIX = 'dev.muster.bundle.';

/** Apple OS families whose payload support differs. */
export type AppleFamily = 'macos' | 'ios' | 'ipados' | 'tvos' | 'watchos' | 'visionos';

/** One payload of a profile: the common keys, then the payload type's own. */
export interface ProfilePayload {
  PayloadType: string;
  PayloadVersion: number;
  PayloadIdentifier: string;
  PayloadUUID: string;
  PayloadDisplayName?: string;
  [key: string]: unknown;
}

/** A configuration profile as a plain object, ready for encodePlist. */
export interface AppleProfile {
  PayloadType: 'Configuration';
  PayloadVersion: 1;
  PayloadIdentifier: string;
  PayloadUUID: string;
  PayloadDisplayName: string;
  PayloadDescription?: string;
  PayloadOrganization?: string;
  PayloadScope: 'System';
  PayloadContent: ProfilePayload[];
}

export interface AppleCompileOptions {
  /** Overrides the family read from the device's model (render uses it). */
  family?: AppleFamily;
  /** PayloadOrganization of every profile (shown in Settings › Profiles). */
  organization?: string;
  /**
   * Where FileVault personal recovery keys are escrowed when a bundle asks for
   * it: a certificate whose key the controller holds (the device encrypts the
   * key to it, the controller reads it back with SecurityInfo). Without it,
   * `escrowRecoveryKey` cannot be honoured and the key is only shown to the user.
   */
  fileVaultEscrow?: { certificateDer: Buffer; location: string };
}

type BundleInput = Pick<ResolvedBundle, 'name' | 'version' | 'hash' | 'spec'>;
type Keys = Record<string, unknown>;

// ------------------------------------------------------------- identifiers

/** A UUID from SHA-256 of `input`: RFC 9562 version 8 (name-based, SHA-256), upper case as Apple writes them. */
export function hashUuid(input: string): string {
  const h = createHash('sha256').update(input).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex').toUpperCase();
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The PayloadIdentifier of a bundle's profile: stable across versions, so a new version replaces the old. */
export const profileIdentifier = (bundleName: string): string => PROFILE_ID_PREFIX + bundleName;

/** The profile's PayloadUUID for a bundle hash: a device listing this UUID holds exactly that content. */
export const profileUuid = (bundleHash: string): string => hashUuid(`dev.muster.profile\0${bundleHash}`);

/** The PayloadUUID of the payload at `index` in the profile of this bundle hash. */
export const payloadUuid = (bundleHash: string, index: number): string => hashUuid(`dev.muster.payload\0${bundleHash}\0${index}`);

/** The OS family from a model or product name (MacBookPro18,3, iPhone15,2, iPad13,4, AppleTV6,2 …); undefined when unknown. */
export function appleFamily(model: string | null | undefined): AppleFamily | undefined {
  const m = (model ?? '').trim();
  if (/^(iPhone|iPod)/i.test(m)) return 'ios';
  if (/^iPad/i.test(m)) return 'ipados';
  if (/^(i?Mac|VirtualMac)/i.test(m)) return 'macos';
  if (/^Apple\s?TV/i.test(m)) return 'tvos';
  if (/^Watch/i.test(m)) return 'watchos';
  if (/^RealityDevice/i.test(m)) return 'visionos';
  return undefined;
}

// ------------------------------------------------------------------ helpers

/** Leaves out keys whose value is undefined (they mean "not managed"). */
function compact(o: Keys): Keys {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** The DER of the first CERTIFICATE block of a PEM text. */
export function pemToDer(pem: string, what: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error(`${what}: not a PEM certificate`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

const bit = (v: boolean | undefined): 0 | 1 | undefined => (v === undefined ? undefined : v ? 1 : 0);

class ProfileBuilder {
  readonly payloads: ProfilePayload[] = [];
  constructor(
    private readonly hash: string,
    private readonly prefix: string,
  ) {}

  /** Appends a payload and returns its PayloadUUID (known at once, so later payloads can refer to it). */
  add(type: string, idSuffix: string, displayName: string, keys: Keys): string {
    const uuid = payloadUuid(this.hash, this.payloads.length);
    this.payloads.push({ PayloadType: type, PayloadVersion: 1, PayloadIdentifier: `${this.prefix}.${idSuffix}`, PayloadUUID: uuid, PayloadDisplayName: displayName, ...compact(keys) });
    return uuid;
  }

  /** A raw payload from `apple.payloads`, verbatim; only the common keys it lacks are filled in. */
  raw(p: ApplePayload): void {
    const copy = structuredClone(p) as Keys;
    const uuid = payloadUuid(this.hash, this.payloads.length);
    this.payloads.push({
      ...copy,
      PayloadType: p.PayloadType,
      PayloadVersion: typeof copy.PayloadVersion === 'number' ? copy.PayloadVersion : 1,
      // The documented default, and the key `muster validate` compares payloads by.
      PayloadIdentifier: typeof copy.PayloadIdentifier === 'string' ? copy.PayloadIdentifier : p.PayloadType,
      PayloadUUID: typeof copy.PayloadUUID === 'string' ? copy.PayloadUUID : uuid,
    });
  }
}

// ----------------------------------------------------------------- settings

function passcode(b: ProfileBuilder, spec: PolicyBundleSpec, family: AppleFamily | undefined): void {
  const p = spec.settings?.passcode;
  if (!p || family === 'tvos') return;
  const c = p.complexity;
  const keys = compact({
    forcePIN: p.required,
    minLength: p.minLength,
    // none and numeric allow digits only; alphanumeric and complex need letters too.
    requireAlphanumeric: c === undefined ? undefined : c === 'alphanumeric' || c === 'complex',
    // complex means at least one symbol, whatever minComplexCharacters says.
    minComplexChars: c === 'complex' ? Math.max(1, p.minComplexCharacters ?? 1) : p.minComplexCharacters,
    maxFailedAttempts: p.maxFailedAttempts,
    maxInactivity: p.maxInactivityMinutes,
    maxPINAgeInDays: p.maxAgeDays,
    // Apple's range is 1–50; 0 ("no history") is the device default, so it is left out.
    pinHistory: p.historyCount ? p.historyCount : undefined,
    allowSimple: p.allowSimple,
  });
  if (Object.keys(keys).length) b.add('com.apple.mobiledevice.passwordpolicy', 'passcode', 'Passcode', keys);
}

function restrictions(b: ProfileBuilder, spec: PolicyBundleSpec, family: AppleFamily | undefined): void {
  const r = spec.settings?.restrictions ?? {};
  const on = (...families: AppleFamily[]): boolean => family === undefined || families.includes(family);
  const keys: Keys = {};
  if (on('ios', 'ipados', 'macos', 'tvos', 'visionos')) keys.allowCamera = r.allowCamera;
  if (on('ios', 'ipados', 'macos', 'visionos')) keys.allowScreenShot = r.allowScreenCapture;
  if (on('ios', 'ipados', 'visionos')) keys.allowCloudBackup = r.allowCloudBackup;
  // Supervised only; MDM's own InstallApplication still works.
  if (on('ios', 'ipados', 'visionos', 'watchos')) keys.allowAppInstallation = r.allowAppInstallation;
  // Supervised only on iOS/iPadOS; macOS 12 and later.
  if (on('ios', 'ipados', 'macos', 'visionos')) keys.allowEraseContentAndSettings = r.allowFactoryReset;
  // iOS's "unknown sources" are alternative marketplaces (EU, 17.4+, supervised);
  // macOS's are unidentified developers: Gatekeeper, below.
  if (on('ios', 'ipados')) keys.allowMarketplaceAppInstallation = r.allowUnknownSources;
  // allowBluetooth: Apple has no switch that turns Bluetooth off (supervised
  // iOS can only lock the setting, allowBluetoothModification), so it does not
  // reach Apple devices.
  // allowRemovableStorage: macOS's profile key for it (com.apple.systemuiserver
  // mount-controls) is deprecated since macOS 11; the current control is the
  // declarative disk-management configuration, not a profile.

  const days = spec.settings?.osUpdates?.deferralDays;
  if (days !== undefined && on('ios', 'ipados', 'macos', 'tvos')) {
    keys.forceDelayedSoftwareUpdates = days > 0;
    if (days > 0) keys.enforcedSoftwareUpdateDelay = days;
    if (on('macos')) {
      // macOS 11.3+ delays minor and major updates separately.
      keys.forceDelayedMajorSoftwareUpdates = days > 0;
      if (days > 0) {
        keys.enforcedSoftwareUpdateMajorOSDeferredInstallDelay = days;
        keys.enforcedSoftwareUpdateMinorOSDeferredInstallDelay = days;
      }
    }
  }
  const set = compact(keys);
  if (Object.keys(set).length) b.add('com.apple.applicationaccess', 'restrictions', 'Restrictions', set);
}

function macosOnly(b: ProfileBuilder, spec: PolicyBundleSpec, family: AppleFamily | undefined, opts: AppleCompileOptions): void {
  if (family !== undefined && family !== 'macos') return;
  const s = spec.settings ?? {};
  // iOS and iPadOS encrypt whenever a passcode is set; required: false leaves
  // FileVault alone (turning it off is never what a policy wants).
  if (s.encryption?.required) {
    const escrow = s.encryption.escrowRecoveryKey ? opts.fileVaultEscrow : undefined;
    b.add('com.apple.MCX.FileVault2', 'filevault', 'FileVault', {
      Enable: 'On',
      // Turned on at the next login of the user, who may not bypass it.
      Defer: true,
      DeferForceAtUserLoginMaxBypassAttempts: 0,
      UseRecoveryKey: true,
      // Escrowed keys are not shown; without an escrow certificate the user must see (and keep) it.
      ShowRecoveryKey: escrow ? false : undefined,
    });
    if (escrow) {
      const cert = b.add('com.apple.security.pkcs1', 'filevault.escrow-certificate', 'FileVault escrow certificate', {
        PayloadCertificateFileName: 'filevault-escrow.cer',
        PayloadContent: escrow.certificateDer,
      });
      b.add('com.apple.security.FDERecoveryKeyEscrow', 'filevault.escrow', 'FileVault recovery key escrow', { Location: escrow.location, EncryptCertPayloadUUID: cert });
    }
  }
  if (s.restrictions?.allowUnknownSources === false) {
    // Gatekeeper on, App Store and identified developers. `true` sends
    // nothing: turning Gatekeeper off is not "allow unknown sources".
    b.add('com.apple.systempolicy.control', 'gatekeeper', 'Gatekeeper', { EnableAssessment: true, AllowIdentifiedDevelopers: true });
  }
  const auto = s.osUpdates?.automaticInstall;
  if (auto !== undefined) {
    b.add(
      'com.apple.SoftwareUpdate',
      'softwareupdate',
      'Software Update',
      auto
        ? { AutomaticCheckEnabled: true, AutomaticDownload: true, AutomaticallyInstallMacOSUpdates: true, CriticalUpdateInstall: true, ConfigDataInstall: true }
        : // Security responses and data files keep installing (not managed).
          { AutomaticDownload: false, AutomaticallyInstallMacOSUpdates: false },
    );
  }
}

/** Certificate payloads first, so Wi-Fi and VPN payloads can refer to them; returns name → PayloadUUID. */
function certificates(b: ProfileBuilder, spec: PolicyBundleSpec): Map<string, string> {
  const uuids = new Map<string, string>();
  for (const c of spec.settings?.certificates ?? []) uuids.set(c.name, certificate(b, c));
  return uuids;
}

function certificate(b: ProfileBuilder, c: CertificateSettings): string {
  if (c.type === 'pkcs12') {
    // PayloadContent is <data>: the base64 secret is decoded at delivery (resolveProfileSecrets).
    return b.add('com.apple.security.pkcs12', `certificate.${c.name}`, c.name, { PayloadCertificateFileName: `${c.name}.p12`, PayloadContent: c.pkcs12, Password: c.passphrase });
  }
  const der = pemToDer(c.pem ?? '', `certificate "${c.name}"`);
  const type = c.type === 'root' ? 'com.apple.security.root' : 'com.apple.security.pkcs1';
  return b.add(type, `certificate.${c.name}`, c.name, { PayloadCertificateFileName: `${c.name}.cer`, PayloadContent: der });
}

const ENCRYPTION: Record<WifiNetwork['security'], string> = {
  none: 'None',
  wep: 'WEP',
  // Since iOS 16 / macOS 13, WPA2 also joins WPA3 networks and WPA3 joins only WPA3.
  'wpa2-personal': 'WPA2',
  'wpa3-personal': 'WPA3',
  'wpa2-enterprise': 'WPA2',
  'wpa3-enterprise': 'WPA3',
};
const EAP_TYPES = { tls: 13, ttls: 21, peap: 25 } as const;

function wifi(b: ProfileBuilder, spec: PolicyBundleSpec, certs: Map<string, string>): void {
  (spec.settings?.wifi ?? []).forEach((w, i) => {
    const enterprise = w.security.endsWith('-enterprise');
    const eap = enterprise && w.eap ? w.eap : undefined;
    const anchors = (eap?.trustedCertificates ?? []).map((n) => certs.get(n)).filter((u): u is string => u !== undefined);
    const proxy = w.proxy;
    b.add('com.apple.wifi.managed', `wifi.${i}`, `Wi-Fi ${w.ssid}`, {
      SSID_STR: w.ssid,
      HIDDEN_NETWORK: w.hidden ?? false,
      AutoJoin: w.autoJoin ?? true,
      EncryptionType: ENCRYPTION[w.security],
      Password: !enterprise && w.security !== 'none' ? w.password : undefined,
      EAPClientConfiguration: eap
        ? compact({
            AcceptEAPTypes: eap.methods.map((m) => EAP_TYPES[m]),
            UserName: eap.identity,
            UserPassword: eap.password,
            OuterIdentity: eap.outerIdentity,
            PayloadCertificateAnchorUUID: anchors.length ? anchors : undefined,
            TLSTrustedServerNames: eap.serverNames?.length ? eap.serverNames : undefined,
          })
        : undefined,
      // The identity presented for EAP-TLS.
      PayloadCertificateUUID: eap?.clientCertificate ? certs.get(eap.clientCertificate) : undefined,
      ProxyType: proxy ? { none: 'None', auto: 'Auto', manual: 'Manual' }[proxy.type] : undefined,
      ProxyPACURL: proxy?.type === 'auto' ? proxy.url : undefined,
      ProxyServer: proxy?.type === 'manual' ? proxy.server : undefined,
      ProxyServerPort: proxy?.type === 'manual' ? proxy.port : undefined,
    });
  });
}

function vpn(b: ProfileBuilder, spec: PolicyBundleSpec, family: AppleFamily | undefined, certs: Map<string, string>): void {
  (spec.settings?.vpn ?? []).forEach((v, i) => {
    const dns = v.dnsServers?.length ? { DNSProtocol: 'Cleartext', ServerAddresses: v.dnsServers } : undefined;
    const a = v.authentication;
    const cert = a.method === 'certificate' && a.certificate ? certs.get(a.certificate) : undefined;
    const suffix = `vpn.${i}`;
    const name = `VPN ${v.name}`;
    switch (v.type) {
      case 'ikev2': {
        const tunnel = ikev2(v, cert);
        if (v.alwaysOn && (family === 'ios' || family === 'ipados')) {
          // Always On exists only on (supervised) iPhone and iPad. Its tunnels
          // are always up, so on-demand and include-all keys do not apply.
          b.add('com.apple.vpn.managed', suffix, name, {
            VPNType: 'AlwaysOn',
            UserDefinedName: v.name,
            AlwaysOn: { UIToggleEnabled: 0, TunnelConfigurations: [{ ProtocolType: 'IKEv2', Interfaces: ['Cellular', 'WiFi'], ...tunnel }] },
            DNS: dns,
          });
          return;
        }
        // macOS has no Always On type: onDemand is what keeps a Mac connected.
        b.add('com.apple.vpn.managed', suffix, name, {
          VPNType: 'IKEv2',
          UserDefinedName: v.name,
          IKEv2: compact({
            ...tunnel,
            OnDemandEnabled: bit(v.onDemand),
            OnDemandRules: v.onDemand ? [{ Action: 'Connect' }] : undefined,
            // Without it, the server's traffic selectors decide what is routed.
            IncludeAllNetworks: v.splitTunnel === undefined ? undefined : bit(!v.splitTunnel),
          }),
          DNS: dns,
        });
        return;
      }
      case 'l2tp':
        // L2TP has no on-demand mode.
        b.add('com.apple.vpn.managed', suffix, name, {
          VPNType: 'L2TP',
          UserDefinedName: v.name,
          PPP: compact({ CommRemoteAddress: v.server, AuthName: a.username, AuthPassword: a.password }),
          // SharedSecret is <data>: the secret is encoded at delivery (resolveProfileSecrets).
          IPSec: compact({ AuthenticationMethod: cert ? 'Certificate' : 'SharedSecret', SharedSecret: cert ? undefined : a.sharedSecret, PayloadCertificateUUID: cert }),
          IPv4: v.splitTunnel === undefined ? undefined : { OverridePrimary: bit(!v.splitTunnel) },
          DNS: dns,
        });
        return;
      case 'wireguard':
        // Apple has no built-in WireGuard: it is a VPN app's network
        // extension, configured through the app (settings.apps configuration).
        return;
    }
  });
}

function ikev2(v: VpnSettings, cert: string | undefined): Keys {
  const a = v.authentication;
  return compact({
    RemoteAddress: v.server,
    // Required by Apple; the server name is what almost every gateway presents.
    RemoteIdentifier: v.remoteIdentifier ?? v.server,
    LocalIdentifier: v.localIdentifier,
    AuthenticationMethod: a.method === 'certificate' ? 'Certificate' : a.method === 'sharedSecret' ? 'SharedSecret' : 'None',
    PayloadCertificateUUID: cert,
    SharedSecret: a.method === 'sharedSecret' ? a.sharedSecret : undefined,
    // EAP-only authentication: AuthenticationMethod None with extended authentication.
    ExtendedAuthEnabled: a.method === 'eap' ? 1 : undefined,
    AuthName: a.method === 'eap' ? a.username : undefined,
    AuthPassword: a.method === 'eap' ? a.password : undefined,
  });
}

// ----------------------------------------------------------------- compiler

/** Whether a bundle reaches Apple devices at all. */
export const forApple = (spec: PolicyBundleSpec): boolean => !spec.platforms || spec.platforms.includes('apple');

/**
 * The profile of one bundle for a device of `family` (every payload when
 * undefined), or undefined when the bundle holds nothing for Apple devices.
 */
export function buildAppleProfile(bundle: BundleInput, family: AppleFamily | undefined, opts: AppleCompileOptions = {}): AppleProfile | undefined {
  if (!forApple(bundle.spec)) return undefined;
  const id = profileIdentifier(bundle.name);
  const b = new ProfileBuilder(bundle.hash, id);
  const certs = certificates(b, bundle.spec);
  passcode(b, bundle.spec, family);
  restrictions(b, bundle.spec, family);
  macosOnly(b, bundle.spec, family, opts);
  wifi(b, bundle.spec, certs);
  vpn(b, bundle.spec, family, certs);
  for (const p of bundle.spec.apple?.payloads ?? []) b.raw(p);
  if (b.payloads.length === 0) return undefined;
  return {
    PayloadType: 'Configuration',
    PayloadVersion: 1,
    PayloadIdentifier: id,
    PayloadUUID: profileUuid(bundle.hash),
    PayloadDisplayName: `${bundle.name} ${bundle.version}`,
    ...(bundle.spec.description ? { PayloadDescription: bundle.spec.description } : {}),
    ...(opts.organization ? { PayloadOrganization: opts.organization } : {}),
    PayloadScope: 'System',
    PayloadContent: b.payloads,
  };
}

/** PlatformDriver.compile for Apple: one item per bundle, named by the profile's PayloadIdentifier. */
export function compileAppleProfiles(bundles: readonly ResolvedBundle[], device: DriverDevice, opts: AppleCompileOptions = {}): NativeState {
  const family = opts.family ?? appleFamily(device.model);
  const items: NativeItem[] = [];
  for (const bundle of bundles) {
    const profile = buildAppleProfile(bundle, family, opts);
    if (!profile) continue;
    const n = profile.PayloadContent.length;
    items.push({
      id: profile.PayloadIdentifier,
      hash: bundle.hash,
      sources: [bundle.hash],
      summary: `profile ${profile.PayloadIdentifier} (${n} payload${n === 1 ? '' : 's'})`,
      payload: profile,
    });
  }
  items.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  return { platform: 'apple', items };
}

/** PlatformDriver.diff for Apple: profiles are whole items, so the common diff is the right one. */
export const appleProfileDiff = diffItems;

// ------------------------------------------------------------------ secrets

/**
 * The profile with every `${secret:NAME}` string replaced by the secret, for
 * delivery. Two places hold <data>, not strings: a pkcs12 payload's
 * PayloadContent (the secret is base64) and an IPSec SharedSecret (its UTF-8
 * bytes). `missing` names the secrets the lookup did not have (their
 * references are left in place; do not send such a profile).
 */
export function resolveProfileSecrets<T>(profile: T, secret: (name: string) => string | undefined): { profile: T; missing: string[] } {
  const missing = new Set<string>();
  const walk = (v: unknown, key: string | undefined, parent: Keys | undefined, parentKey: string | undefined): unknown => {
    if (typeof v === 'string') {
      const m = SECRET_REF_PATTERN.exec(v);
      if (!m) return v;
      const value = secret(m[1]!);
      if (value === undefined) {
        missing.add(m[1]!);
        return v;
      }
      if (key === 'PayloadContent' && parent?.PayloadType === 'com.apple.security.pkcs12') return Buffer.from(value, 'base64');
      if (key === 'SharedSecret' && parentKey === 'IPSec') return Buffer.from(value, 'utf8');
      return value;
    }
    if (Array.isArray(v)) return v.map((x) => walk(x, undefined, undefined, key));
    if (v && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Date)) {
      const o = v as Keys;
      return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, walk(x, k, o, key)]));
    }
    return v;
  };
  return { profile: walk(profile, undefined, undefined, undefined) as T, missing: [...missing].sort() };
}

// ------------------------------------------------------------------ signing

export interface ProfileSigner {
  /** The signing certificate (RSA key). */
  certPem: string;
  /** Its private key: PKCS#1 or PKCS#8 PEM, encrypted when `passphrase` is given. */
  keyPem: string;
  passphrase?: string;
  /** Intermediates (and the root, if devices should see it) included in the signature. */
  chainPems?: string[];
}

/**
 * An attached CMS SignedData over `content` (a profile's plist bytes), as
 * DER: SHA-256 with RSA, signed attributes contentType, signingTime and
 * messageDigest (in DER order), the signer and `chainPems` certificates as
 * they were issued (byte for byte). Serve it as is: nothing may precede the
 * SEQUENCE.
 */
export function signProfile(content: Buffer, signer: ProfileSigner, now: Date = new Date()): Buffer {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(signer.certPem);
  } catch (e) {
    throw new Error(`profile signer: certPem is not a PEM certificate (${(e as Error).message})`, { cause: e });
  }
  let key;
  try {
    key = createPrivateKey(signer.passphrase !== undefined ? { key: signer.keyPem, format: 'pem', passphrase: signer.passphrase } : { key: signer.keyPem, format: 'pem' });
  } catch (e) {
    throw new Error(`profile signer: keyPem cannot be read (${(e as Error).message})`, { cause: e });
  }
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`profile signer: the key must be RSA, not ${key.asymmetricKeyType}`);
  if (!x509.checkPrivateKey(key)) throw new Error('profile signer: the key does not belong to the certificate');

  const certDer = Buffer.from(x509.raw);
  const certNode = parseDer(certDer, 'signer certificate');
  const chain = (signer.chainPems ?? []).map((pem, i) => {
    try {
      return parseDer(Buffer.from(new X509Certificate(pem).raw), `chain certificate ${i}`);
    } catch (e) {
      throw new Error(`profile signer: chainPems[${i}] is not a PEM certificate (${(e as Error).message})`, { cause: e });
    }
  });
  const p7 = forge.pkcs7.createSignedData();
  p7.content = forge.util.createBuffer(content.toString('binary'));
  p7.addSigner({
    key: forge.pki.privateKeyFromPem(key.export({ type: 'pkcs8', format: 'pem' }) as string),
    certificate: forge.pki.certificateFromAsn1(certNode),
    digestAlgorithm: forge.pki.oids.sha256!,
    // Listed in DER SET OF order (by encoding: contentType, signingTime, messageDigest),
    // which forge keeps: verifiers that re-encode the set then hash the same bytes.
    authenticatedAttributes: [
      { type: forge.pki.oids.contentType!, value: forge.pki.oids.data },
      { type: forge.pki.oids.signingTime!, value: now.toISOString() },
      { type: forge.pki.oids.messageDigest! },
    ],
  });
  p7.sign();
  const root = p7.toAsn1();
  // ContentInfo { signedData OID, [0] { SignedData { version, digestAlgorithms, encapContentInfo, [0] certificates, signerInfos } } }
  const signedData = children(children(root, 'ContentInfo')[1], 'ContentInfo content', 0, forge.asn1.Class.CONTEXT_SPECIFIC)[0];
  const fields = children(signedData, 'SignedData');
  const signerInfos = children(fields[fields.length - 1], 'SignerInfos', forge.asn1.Type.SET);
  const signerInfo = children(signerInfos[0], 'SignerInfo');
  // forge re-encodes the signer's issuer name from parsed attributes (string
  // types, multi-valued RDNs may change); the certificate's own bytes are what
  // verifiers match against.
  const { issuer, serial } = certParts(certNode, 'signer certificate');
  signerInfo[1] = forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.SEQUENCE, true, [issuer, serial]);
  // Certificates as issued, not as forge would re-encode them (forge also
  // cannot parse a chain certificate with an EC key).
  const certs: Asn1 = forge.asn1.create(forge.asn1.Class.CONTEXT_SPECIFIC, 0, true, [certNode, ...chain]);
  fields.splice(fields.length - 1, 0, certs);
  return toBuffer(toDer(root));
}
