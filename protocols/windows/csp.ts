// Bundles → Windows CSP nodes, one driver item per OMA-URI. Pure.
//
// Each node is an item whose id is its LocURI and whose hash is a digest of
// its format and value, so what a device reads back (the same format and
// value) is directly its reported state. Node paths and values follow the
// Windows CSP reference:
// - passcode → Policy CSP DeviceLock/* (DevicePasswordEnabled 0 means
//   ENABLED; the DeviceLock policies must travel in one Atomic, as Replace);
// - encryption → BitLocker CSP RequireDeviceEncryption (Replace);
// - restrictions → Camera/AllowCamera, Storage/RemovableDiskDenyWriteAccess
//   (Windows has no plain policy that stops removable disks mounting: writing
//   is denied), Connectivity/AllowBluetooth (0 off, 2 on),
//   ApplicationManagement/AllowAllTrustedApps (sideloading);
// - wifi → WiFi CSP Profile/<SSID>/WlanXml, a WLANProfile document;
// - certificates → RootCATrustedCertificates Root/ or CA/<SHA-1>/EncodedCertificate;
// - osUpdates → Policy CSP Update/* (deferrals, automatic install, the
//   feature release for a minimum Windows build);
// - spec.windows.settings → the raw OMA-URI as written;
// - spec.windows.poll → DMClient Provider/<ProviderID>/Poll/*.
// Raw settings win over the vocabulary for the same node: they are what a
// person wrote for exactly this platform. Gaps (no CSP, or not on desktop
// Windows): screen capture, cloud backup, factory reset, app installation
// by users, the recovery-key escrow, an absolute update deadline (Windows
// deadlines are days after an update is offered), PKCS#12 identities, VPN,
// apps and kiosk; they compile to nothing here.
//
// Secret references (`${secret:NAME}`) stay in the values; the driver
// resolves them only when a command is rendered for a device.
import { createHash, X509Certificate } from 'node:crypto';
import type { NativeItem, ResolvedBundle } from '../../controller/reconcile/driver.js';
import type { PolicyBundleSpec, WifiNetwork, WindowsPoll, WindowsSetting } from '../../controller/policy/types.js';
import { parseDuration } from '../../controller/rollout/duration.js';
import { el, writeXml, type XmlNode } from './xml.js';

type Bundle = Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>;

/** One CSP node as the driver delivers it. */
export interface CspNode {
  locUri: string;
  /** The SyncML Meta Format: int, chr, bool, b64, xml, float, date, time, node, null. */
  format: string;
  /** Meta Type, when the CSP wants one. */
  type?: string;
  /** The value as sent (text; may hold `${secret:NAME}`). Empty for node/null. */
  value: string;
  /** replace: always Replace (Policy CSP, DMClient); add: Add when new, Replace when it changes (418 → Replace). */
  method: 'replace' | 'add';
  /** Where its applied value is read back from (Policy/Result for Policy/Config), or undefined for no read-back. */
  read?: string;
  /** value: what is read back must equal what was set; exists: the node only has to be there (Wi-Fi profiles and certificates read back reformatted, secrets never). */
  verify: 'value' | 'exists';
  /** Nodes with the same group travel in one Atomic. */
  atomic?: string;
  /** The value is an XML document: secrets put into it are XML-escaped. */
  xml?: boolean;
  /** Holds a secret reference: never logged or stored once resolved. */
  secret?: boolean;
}

export interface WindowsCompileOptions {
  /** The DMClient provider the device enrolled with (PROVIDER-ID of the provisioning document). Default Muster. */
  providerId?: string;
}

export const DEFAULT_PROVIDER_ID = 'Muster';

const POLICY = './Device/Vendor/MSFT/Policy/Config';
const SECRET_REF = /\$\{secret:[A-Za-z_][A-Za-z0-9_.-]*\}/;

/** sha256 hex of format and value: the item hash, and what a read-back value is hashed to. */
export function cspHash(format: string, value: string): string {
  return createHash('sha256').update(`${format}\u0000${value}`).digest('hex');
}

/** A read value in the form compile writes it (Windows answers ints and bools as text). */
export function normalizeValue(format: string, value: string): string {
  const v = value.trim();
  if (format === 'int' && /^[+-]?\d+$/.test(v)) return String(Number.parseInt(v, 10));
  if (format === 'bool') return /^(true|1)$/i.test(v) ? 'true' : /^(false|0)$/i.test(v) ? 'false' : v;
  if (format === 'float' && v !== '' && Number.isFinite(Number(v))) return String(Number(v));
  return format === 'chr' || format === 'xml' || format === 'b64' ? value : v;
}

/** ./Device/Vendor/MSFT/Policy/Config/<Area>/<Policy> → the Policy/Result node that holds its applied value. */
export function policyResultUri(locUri: string): string | undefined {
  const m = /^\.\/(Device\/|User\/)?Vendor\/MSFT\/Policy\/Config\/(.+)$/i.exec(locUri);
  if (!m) return undefined;
  const scope = m[1]?.toLowerCase() === 'user/' ? './User' : './Device';
  return `${scope}/Vendor/MSFT/Policy/Result/${m[2]}`;
}

const isDeviceLock = (locUri: string) => /^\.\/(Device\/)?Vendor\/MSFT\/Policy\/Config\/DeviceLock\//i.test(locUri);
const isPolicy = (locUri: string) => /^\.\/(Device\/|User\/)?Vendor\/MSFT\/Policy\/Config\//i.test(locUri);

/** A Policy CSP node: Replace, read back from Policy/Result, DeviceLock in one Atomic. */
function policy(area: string, name: string, value: number | string, format = 'int'): CspNode {
  const locUri = `${POLICY}/${area}/${name}`;
  return { locUri, format, value: String(value), method: 'replace', read: policyResultUri(locUri)!, verify: 'value', ...(area === 'DeviceLock' ? { atomic: 'DeviceLock' } : {}) };
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.round(v)));

function passcodeNodes(p: NonNullable<NonNullable<PolicyBundleSpec['settings']>['passcode']>): CspNode[] {
  // Turning the password off must be the only DeviceLock policy sent.
  if (p.required === false) return [policy('DeviceLock', 'DevicePasswordEnabled', 1)];
  const out: CspNode[] = [];
  if (p.required) out.push(policy('DeviceLock', 'DevicePasswordEnabled', 0));
  // Desktop Windows accepts 4 to 16 characters; 0 means no minimum.
  if (p.minLength) out.push(policy('DeviceLock', 'MinDevicePasswordLength', clamp(p.minLength, 4, 16)));
  let complexTypes: number | undefined;
  if (p.complexity) {
    // 0: alphanumeric required, 1: numeric allowed, 2: anything.
    out.push(policy('DeviceLock', 'AlphanumericDevicePasswordRequired', { none: 2, numeric: 1, alphanumeric: 0, complex: 0 }[p.complexity]));
    // Complex element types: 1 digits, 2 + lowercase, 3 + uppercase (4, + symbols, is not supported on desktop).
    complexTypes = { none: undefined, numeric: 1, alphanumeric: 2, complex: 3 }[p.complexity];
  }
  if (p.minComplexCharacters) complexTypes = 3;
  if (complexTypes !== undefined) out.push(policy('DeviceLock', 'MinDevicePasswordComplexCharacters', complexTypes));
  // Desktop: 4 to 16 failures before BitLocker recovery (0 would turn it off).
  if (p.maxFailedAttempts !== undefined) out.push(policy('DeviceLock', 'MaxDevicePasswordFailedAttempts', clamp(p.maxFailedAttempts, 4, 16)));
  if (p.maxInactivityMinutes !== undefined) out.push(policy('DeviceLock', 'MaxInactivityTimeDeviceLock', clamp(p.maxInactivityMinutes, 1, 999)));
  if (p.maxAgeDays !== undefined) out.push(policy('DeviceLock', 'DevicePasswordExpiration', clamp(p.maxAgeDays, 1, 730)));
  if (p.historyCount !== undefined) out.push(policy('DeviceLock', 'DevicePasswordHistory', clamp(p.historyCount, 0, 50)));
  if (p.allowSimple !== undefined) out.push(policy('DeviceLock', 'AllowSimpleDevicePassword', p.allowSimple ? 1 : 0));
  return out;
}

/** Windows builds → the feature release Update/TargetReleaseVersion names. */
const RELEASES: Array<{ build: number; product: string; release: string }> = [
  { build: 19044, product: 'Windows 10', release: '21H2' },
  { build: 19045, product: 'Windows 10', release: '22H2' },
  { build: 22000, product: 'Windows 11', release: '21H2' },
  { build: 22621, product: 'Windows 11', release: '22H2' },
  { build: 22631, product: 'Windows 11', release: '23H2' },
  { build: 26100, product: 'Windows 11', release: '24H2' },
  { build: 26200, product: 'Windows 11', release: '25H2' },
];

/** The feature release a minimum version like 10.0.22631(.x) asks for, when Windows can be pinned to it. */
export function releaseFor(version: string): { product: string; release: string } | undefined {
  const m = /^10\.0\.(\d+)/.exec(version);
  if (!m) return undefined;
  const r = RELEASES.find((x) => x.build === Number(m[1]));
  return r && { product: r.product, release: r.release };
}

function updateNodes(u: NonNullable<NonNullable<PolicyBundleSpec['settings']>['osUpdates']>): CspNode[] {
  const out: CspNode[] = [];
  if (u.deferralDays !== undefined) {
    out.push(policy('Update', 'DeferQualityUpdatesPeriodInDays', clamp(u.deferralDays, 0, 30)));
    out.push(policy('Update', 'DeferFeatureUpdatesPeriodInDays', clamp(u.deferralDays, 0, 365)));
  }
  // 2: install and restart in the maintenance window (the Windows default); 0: notify before downloading.
  if (u.automaticInstall !== undefined) out.push(policy('Update', 'AllowAutoUpdate', u.automaticInstall ? 2 : 0));
  const min = u.minimumVersion?.windows;
  const rel = min ? releaseFor(min) : undefined;
  if (rel) {
    out.push(policy('Update', 'ProductVersion', rel.product, 'chr'));
    out.push(policy('Update', 'TargetReleaseVersion', rel.release, 'chr'));
  }
  return out;
}

/** SHA-1 thumbprint (upper-case hex) and base64 DER of a PEM certificate. */
function certOf(pem: string): { thumbprint: string; der: string } | undefined {
  try {
    const c = new X509Certificate(pem);
    return { thumbprint: createHash('sha1').update(c.raw).digest('hex').toUpperCase(), der: c.raw.toString('base64') };
  } catch {
    return undefined;
  }
}

const WLAN_NS = 'http://www.microsoft.com/networking/WLAN/profile/v1';
const EAP_COMMON = 'http://www.microsoft.com/provisioning/EapCommon';
const BASE_EAP = 'http://www.microsoft.com/provisioning/BaseEapConnectionPropertiesV1';

/** SHA-1 thumbprints as EAP server validation wants them: hex pairs separated by spaces. */
const spaced = (thumb: string) => thumb.match(/../g)!.join(' ').toLowerCase();

function eapConfig(w: WifiNetwork, certs: Map<string, string>): XmlNode {
  const eap = w.eap!;
  const method = (['tls', 'peap', 'ttls'] as const).find((m) => eap.methods.includes(m))!;
  const type = { tls: 13, peap: 25, ttls: 21 }[method];
  const roots = (eap.trustedCertificates ?? []).map((n) => certs.get(n)).filter((t): t is string => !!t);
  const names = (eap.serverNames ?? []).join(';');
  const serverValidation = el(
    'ServerValidation',
    undefined,
    el('DisableUserPromptForServerValidation', undefined, roots.length || names ? 'true' : 'false'),
    el('ServerNames', undefined, names),
    ...roots.map((t) => el('TrustedRootCA', undefined, spaced(t))),
  );
  let config: XmlNode;
  if (method === 'tls') {
    config = el(
      'Eap',
      { xmlns: BASE_EAP },
      el('Type', undefined, '13'),
      el('EapType', { xmlns: 'http://www.microsoft.com/provisioning/EapTlsConnectionPropertiesV1' }, el('CredentialsSource', undefined, el('CertificateStore', undefined, el('SimpleCertSelection', undefined, 'true'))), serverValidation, el('DifferentUsername', undefined, 'false')),
    );
  } else if (method === 'peap') {
    config = el(
      'Eap',
      { xmlns: BASE_EAP },
      el('Type', undefined, '25'),
      el(
        'EapType',
        { xmlns: 'http://www.microsoft.com/provisioning/MsPeapConnectionPropertiesV1' },
        serverValidation,
        el('FastReconnect', undefined, 'true'),
        el('InnerEapOptional', undefined, 'false'),
        el('Eap', { xmlns: BASE_EAP }, el('Type', undefined, '26'), el('EapType', { xmlns: 'http://www.microsoft.com/provisioning/MsChapV2ConnectionPropertiesV1' }, el('UseWinLogonCredentials', undefined, 'false'))),
        el('EnableQuarantineChecks', undefined, 'false'),
        el('RequireCryptoBinding', undefined, 'false'),
      ),
    );
  } else {
    config = el(
      'EapTtls',
      { xmlns: 'http://www.microsoft.com/provisioning/EapTtlsConnectionPropertiesV1' },
      el('ServerValidation', undefined, el('ServerNames', undefined, names), ...roots.map((t) => el('TrustedRootCAHash', undefined, spaced(t))), el('DisablePrompt', undefined, roots.length || names ? 'true' : 'false')),
      el('Phase2Authentication', undefined, el('MSCHAPv2Authentication', undefined, el('UseWinlogonCredentials', undefined, 'false'))),
      el('Phase1Identity', undefined, el('IdentityPrivacy', undefined, eap.outerIdentity ? 'true' : 'false'), eap.outerIdentity ? el('AnonymousIdentity', undefined, eap.outerIdentity) : undefined),
    );
  }
  return el(
    'OneX',
    { xmlns: 'http://www.microsoft.com/networking/OneX/v1' },
    el('authMode', undefined, 'machineOrUser'),
    el(
      'EAPConfig',
      undefined,
      el(
        'EapHostConfig',
        { xmlns: 'http://www.microsoft.com/provisioning/EapHostConfig' },
        el('EapMethod', undefined, el('Type', { xmlns: EAP_COMMON }, String(type)), el('VendorId', { xmlns: EAP_COMMON }, '0'), el('VendorType', { xmlns: EAP_COMMON }, '0'), el('AuthorId', { xmlns: EAP_COMMON }, method === 'ttls' ? '311' : '0')),
        el('Config', { xmlns: 'http://www.microsoft.com/provisioning/EapHostConfig' }, config),
      ),
    ),
  );
}

/** The WLANProfile document for one network (the password stays a secret reference). */
export function wlanProfile(w: WifiNetwork, certs: Map<string, string> = new Map()): string {
  const auth: Record<WifiNetwork['security'], [string, string]> = {
    none: ['open', 'none'],
    wep: ['open', 'WEP'],
    'wpa2-personal': ['WPA2PSK', 'AES'],
    'wpa3-personal': ['WPA3SAE', 'AES'],
    'wpa2-enterprise': ['WPA2', 'AES'],
    'wpa3-enterprise': ['WPA3ENT', 'AES'],
  };
  const [authentication, encryption] = auth[w.security];
  const enterprise = w.security.endsWith('enterprise') && !!w.eap;
  const personal = w.security === 'wep' || w.security.endsWith('personal');
  const doc = el(
    'WLANProfile',
    { xmlns: WLAN_NS },
    el('name', undefined, w.ssid),
    el('SSIDConfig', undefined, el('SSID', undefined, el('hex', undefined, Buffer.from(w.ssid, 'utf8').toString('hex').toUpperCase()), el('name', undefined, w.ssid)), el('nonBroadcast', undefined, w.hidden ? 'true' : 'false')),
    el('connectionType', undefined, 'ESS'),
    el('connectionMode', undefined, w.autoJoin === false ? 'manual' : 'auto'),
    el(
      'MSM',
      undefined,
      el(
        'security',
        undefined,
        el('authEncryption', undefined, el('authentication', undefined, authentication), el('encryption', undefined, encryption), el('useOneX', undefined, enterprise ? 'true' : 'false')),
        personal && w.password ? el('sharedKey', undefined, el('keyType', undefined, w.security === 'wep' ? 'networkKey' : 'passPhrase'), el('protected', undefined, 'false'), el('keyMaterial', undefined, w.password)) : undefined,
        enterprise ? eapConfig(w, certs) : undefined,
      ),
    ),
  );
  return writeXml(doc, { declaration: true });
}

/** The WiFi CSP names a profile by its SSID, URI-escaped. */
export const wifiProfileUri = (ssid: string) => `./Vendor/MSFT/WiFi/Profile/${encodeURIComponent(ssid)}/WlanXml`;

function pollNodes(poll: WindowsPoll, providerId: string): CspNode[] {
  const base = `./Vendor/MSFT/DMClient/Provider/${encodeURIComponent(providerId)}/Poll`;
  const minutes = (d: string) => Math.max(1, Math.round(parseDuration(d) / 60_000));
  const node = (name: string, value: string, format = 'int'): CspNode => ({ locUri: `${base}/${name}`, format, value, method: 'replace', read: `${base}/${name}`, verify: 'value' });
  const out: CspNode[] = [];
  if (poll.first) out.push(node('IntervalForFirstSetOfRetries', String(minutes(poll.first.every))), node('NumberOfFirstRetries', String(poll.first.times)));
  if (poll.second) out.push(node('IntervalForSecondSetOfRetries', String(minutes(poll.second.every))), node('NumberOfSecondRetries', String(poll.second.times)));
  // 0 remaining retries: the steady interval goes on for ever.
  if (poll.then) out.push(node('IntervalForRemainingScheduledRetries', String(minutes(poll.then))), node('NumberOfRemainingScheduledRetries', '0'));
  if (poll.onLogin !== undefined) out.push(node('PollOnLogin', poll.onLogin ? 'true' : 'false', 'bool'));
  return out;
}

function rawNode(s: WindowsSetting): CspNode {
  const value = s.value === undefined ? '' : typeof s.value === 'boolean' ? (s.value ? 'true' : 'false') : String(s.value);
  const secret = SECRET_REF.test(value);
  const policyNode = isPolicy(s.omaUri);
  const interior = s.format === 'node' || s.format === 'null';
  // An ADMX-backed policy (<enabled/><data id=… value=…/>) reads back in another form, or not at all.
  const admx = policyNode && s.format === 'chr' && /^\s*<(enabled|disabled)\s*\/>/.test(value);
  return {
    locUri: s.omaUri,
    format: s.format,
    value,
    method: policyNode ? 'replace' : 'add',
    read: policyNode ? policyResultUri(s.omaUri)! : s.omaUri,
    // A secret is never read back in clear, an interior node has no value to compare, nor an ADMX policy a comparable one.
    verify: secret || interior || admx ? 'exists' : 'value',
    ...(isDeviceLock(s.omaUri) ? { atomic: 'DeviceLock' } : {}),
    ...(s.format === 'xml' ? { xml: true } : {}),
    ...(secret ? { secret: true } : {}),
  };
}

/** The nodes one bundle's vocabulary compiles to (no raw settings). */
export function vocabularyNodes(spec: PolicyBundleSpec, o: WindowsCompileOptions = {}): CspNode[] {
  const s = spec.settings ?? {};
  const out: CspNode[] = [];
  if (s.passcode) out.push(...passcodeNodes(s.passcode));
  if (s.encryption) {
    const locUri = './Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption';
    // Replace, as the BitLocker CSP reference writes it (the node exists on every PC, so an Add would only earn a 418).
    out.push({ locUri, format: 'int', value: s.encryption.required ? '1' : '0', method: 'replace', read: locUri, verify: 'value' });
  }
  const r = s.restrictions ?? {};
  if (r.allowCamera !== undefined) out.push(policy('Camera', 'AllowCamera', r.allowCamera ? 1 : 0));
  if (r.allowRemovableStorage !== undefined) out.push(policy('Storage', 'RemovableDiskDenyWriteAccess', r.allowRemovableStorage ? 0 : 1));
  if (r.allowBluetooth !== undefined) out.push(policy('Connectivity', 'AllowBluetooth', r.allowBluetooth ? 2 : 0));
  if (r.allowUnknownSources !== undefined) out.push(policy('ApplicationManagement', 'AllowAllTrustedApps', r.allowUnknownSources ? 1 : 0));
  const certs = new Map<string, string>();
  for (const c of s.certificates ?? []) {
    if (c.type === 'pkcs12' || !c.pem) continue;
    const cert = certOf(c.pem);
    if (!cert) continue;
    certs.set(c.name, cert.thumbprint);
    const store = c.type === 'root' ? 'Root' : 'CA';
    const locUri = `./Device/Vendor/MSFT/RootCATrustedCertificates/${store}/${cert.thumbprint}/EncodedCertificate`;
    out.push({ locUri, format: 'b64', value: cert.der, method: 'add', read: locUri, verify: 'exists' });
  }
  for (const w of s.wifi ?? []) {
    if (w.security.endsWith('enterprise') && !w.eap) continue;
    const locUri = wifiProfileUri(w.ssid);
    const value = wlanProfile(w, certs);
    out.push({ locUri, format: 'chr', value, method: 'add', read: locUri, verify: 'exists', xml: true, ...(SECRET_REF.test(value) ? { secret: true } : {}) });
  }
  if (s.osUpdates) out.push(...updateNodes(s.osUpdates));
  if (spec.windows?.poll) out.push(...pollNodes(spec.windows.poll, o.providerId ?? DEFAULT_PROVIDER_ID));
  return out;
}

export interface CompiledNodes {
  items: NativeItem[];
  /** Vocabulary nodes a raw setting replaced (LocURIs), for `muster render`. */
  overridden: string[];
}

/** Bundles → one item per node, sorted by LocURI. Raw settings win over vocabulary; among bundles, the first by name wins. */
export function compileWindowsNodes(bundles: readonly Bundle[], o: WindowsCompileOptions = {}): CompiledNodes {
  const applicable = bundles.filter((b) => !b.spec.platforms || b.spec.platforms.includes('windows')).sort((a, b) => a.name.localeCompare(b.name));
  const chosen = new Map<string, { node: CspNode; raw: boolean; sources: Set<string> }>();
  const overridden = new Set<string>();
  const offer = (node: CspNode, raw: boolean, source: string) => {
    const key = node.locUri.toLowerCase();
    const cur = chosen.get(key);
    if (!cur || (raw && !cur.raw)) {
      if (cur && raw && !cur.raw) overridden.add(node.locUri);
      chosen.set(key, { node, raw, sources: new Set([...(cur && cur.node.value === node.value && cur.node.format === node.format ? cur.sources : []), source]) });
    } else if (cur.raw === raw && cur.node.value === node.value && cur.node.format === node.format) cur.sources.add(source);
    else if (!raw && cur.raw) overridden.add(node.locUri);
  };
  for (const b of applicable) for (const n of vocabularyNodes(b.spec, o)) offer(n, false, b.hash);
  for (const b of applicable) for (const s of b.spec.windows?.settings ?? []) offer(rawNode(s), true, b.hash);
  const items: NativeItem[] = [...chosen.values()].map(({ node, sources }) => ({
    id: node.locUri,
    hash: cspHash(node.format, node.value),
    sources: [...sources].sort(),
    summary: `${node.format} ${node.locUri}${node.secret ? ' (secret)' : node.xml || node.value.length > 40 ? ` (${Buffer.byteLength(node.value)} bytes)` : node.value !== '' ? ` = ${node.value}` : ''}`,
    payload: node,
  }));
  items.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { items, overridden: [...overridden].sort() };
}
