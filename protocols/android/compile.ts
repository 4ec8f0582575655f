// Bundles → one Android Management API Policy. Pure (no I/O), so `muster
// validate`, `muster plan` and `muster render` run exactly what the driver runs.
//
// A device's set of bundles becomes one AMAPI policy, named from the sorted
// bundle hashes (`m-<hex>`), so every device with the same bundles shares one
// policy and a staged rollout moves devices between policies by patching
// `device.policyName`. Each bundle's vocabulary settings are translated, the
// bundles merged (lists joined by their key), then each bundle's raw
// `spec.android.policy` fragment laid over the result: the fragment wins, and
// `fragmentConflicts` says where, so `muster validate` can warn.
//
// Secret references (`${secret:NAME}`) stay as they are; resolveSecrets() fills
// them in when the policy is sent, and never before.
//
// Field names and enum values follow the AMAPI v1 reference: passwordPolicies
// (not the deprecated passwordRequirements), cameraAccess (cameraDisabled is
// ignored once cameraAccess is set), deviceConnectivityManagement.usbDataAccess
// (not usbFileTransferDisabled), advancedSecurityOverrides.untrustedAppsPolicy
// (installUnknownSourcesAllowed has no effect).
import { createHash, X509Certificate } from 'node:crypto';
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { SECRET_REF_PATTERN, type PasscodeSettings, type PolicyBundleSpec, type WifiNetwork } from '../../controller/policy/types.js';

export type AmapiPolicy = Record<string, unknown>;
type Bundle = Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>;

/** Android releases → API level, for minimumApiLevel (AMAPI speaks API levels). */
const API_LEVELS: Record<string, number> = { '8': 26, '8.0': 26, '8.1': 27, '9': 28, '10': 29, '11': 30, '12': 31, '12.1': 32, '13': 33, '14': 34, '15': 35, '16': 36 };

/** Reporting Muster relies on for convergence and compliance: always on. */
export const STATUS_REPORTING = {
  applicationReportsEnabled: true,
  deviceSettingsEnabled: true,
  softwareInfoEnabled: true,
  memoryInfoEnabled: true,
  networkInfoEnabled: true,
  displayInfoEnabled: true,
  powerManagementEventsEnabled: true,
  hardwareStatusEnabled: true,
  systemPropertiesEnabled: true,
  commonCriteriaModeEnabled: true,
} as const;

/** Policy fields the AMAPI reference marks deprecated or without effect, with what to use instead. */
export const DEPRECATED_POLICY_FIELDS: Record<string, string> = {
  passwordRequirements: 'passwordPolicies',
  complianceRules: 'policyEnforcementRules',
  cameraDisabled: 'cameraAccess',
  installUnknownSourcesAllowed: 'advancedSecurityOverrides.untrustedAppsPolicy',
  usbFileTransferDisabled: 'deviceConnectivityManagement.usbDataAccess',
  usbMassStorageEnabled: 'deviceConnectivityManagement.usbDataAccess',
  ensureVerifyAppsEnabled: 'advancedSecurityOverrides.googlePlayProtectVerifyApps',
  debuggingFeaturesAllowed: 'advancedSecurityOverrides.developerSettings',
};

/** The short policy id for a set of bundle hashes: the same set, the same policy. */
export function policyIdFor(bundleHashes: readonly string[]): string {
  return `m-${createHash('sha256').update([...new Set(bundleHashes)].sort().join('\n')).digest('hex').slice(0, 20)}`;
}

/** The policy of a device with no Android bundles (and of enrollment tokens not bound to one): status reporting only. */
export const BASE_POLICY_ID = policyIdFor([]);

/** Whether a bundle reaches Android devices at all. */
export const forAndroid = (spec: Pick<PolicyBundleSpec, 'platforms'>): boolean => !spec.platforms || spec.platforms.includes('android');

function passwordPolicy(p: PasscodeSettings): AmapiPolicy {
  if (p.required === false) return { passwordScope: 'SCOPE_DEVICE', passwordQuality: 'PASSWORD_QUALITY_UNSPECIFIED' };
  // SOMETHING enforces no length, so "any password, at least N long" needs NUMERIC (a PIN or anything stronger).
  const quality =
    p.complexity === 'complex'
      ? 'COMPLEX'
      : p.complexity === 'alphanumeric'
        ? 'ALPHANUMERIC'
        : p.complexity === 'numeric'
          ? p.allowSimple === false
            ? 'NUMERIC_COMPLEX'
            : 'NUMERIC'
          : p.minLength !== undefined
            ? 'NUMERIC'
            : 'SOMETHING';
  return compact({
    passwordScope: 'SCOPE_DEVICE',
    passwordQuality: quality,
    passwordMinimumLength: p.minLength,
    // Apple's "complex characters" are the non-alphanumeric ones: AMAPI's symbols (enforced for COMPLEX only).
    passwordMinimumSymbols: quality === 'COMPLEX' ? p.minComplexCharacters : undefined,
    maximumFailedPasswordsForWipe: p.maxFailedAttempts,
    passwordExpirationTimeout: p.maxAgeDays !== undefined ? `${p.maxAgeDays * 86_400}s` : undefined,
    passwordHistoryLength: p.historyCount,
  });
}

/** Deterministic GUIDs for ONC entries, so the same bundle gives the same policy. */
const guid = (kind: string, key: string) => `muster-${kind}-${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;

function pemToBase64Der(pem: string): string | undefined {
  try {
    return new X509Certificate(pem).raw.toString('base64');
  } catch {
    return undefined;
  }
}

const ONC_SECURITY: Record<WifiNetwork['security'], string> = {
  none: 'None',
  wep: 'WEP-PSK',
  'wpa2-personal': 'WPA-PSK',
  'wpa3-personal': 'WPA-PSK',
  'wpa2-enterprise': 'WPA-EAP',
  'wpa3-enterprise': 'WPA-EAP',
};
const ONC_OUTER = { tls: 'EAP-TLS', peap: 'PEAP', ttls: 'EAP-TTLS' } as const;

function oncProxy(p: WifiNetwork['proxy']): AmapiPolicy | undefined {
  // AMAPI supports only Manual and PAC proxy settings.
  if (p?.type === 'manual' && p.server && p.port) return { Type: 'Manual', Manual: { HTTPProxy: { Host: p.server, Port: p.port } } };
  if (p?.type === 'auto' && p.url) return { Type: 'PAC', PAC: p.url };
  return undefined;
}

function onc(spec: PolicyBundleSpec): AmapiPolicy | undefined {
  const s = spec.settings ?? {};
  const certs = (s.certificates ?? []).filter((c) => c.type !== 'pkcs12' && c.pem);
  const certGuid = new Map(certs.map((c) => [c.name, guid('cert', c.name)]));
  const Certificates = certs.flatMap((c) => {
    const X509 = pemToBase64Der(c.pem!);
    return X509 ? [{ GUID: certGuid.get(c.name)!, Type: 'Authority', X509 }] : [];
  });
  const NetworkConfigurations = (s.wifi ?? []).map((w: WifiNetwork) => {
    const enterprise = w.security === 'wpa2-enterprise' || w.security === 'wpa3-enterprise';
    const eap = w.eap;
    const proxy = oncProxy(w.proxy);
    return compact({
      GUID: guid('wifi', w.ssid),
      Name: w.ssid,
      Type: 'WiFi',
      WiFi: compact({
        SSID: w.ssid,
        Security: ONC_SECURITY[w.security],
        Passphrase: enterprise ? undefined : w.password,
        AutoConnect: w.autoJoin ?? true,
        HiddenSSID: w.hidden ?? false,
        EAP:
          enterprise && eap
            ? compact({
                // ONC takes one outer method: the first the bundle lists.
                Outer: ONC_OUTER[eap.methods[0] ?? 'peap'],
                Identity: eap.identity,
                AnonymousIdentity: eap.outerIdentity,
                Password: eap.password,
                ServerCARefs: eap.trustedCertificates?.map((n) => certGuid.get(n)).filter((x): x is string => !!x),
                DomainSuffixMatch: eap.serverNames,
              })
            : undefined,
      }),
      ProxySettings: proxy,
    });
  });
  if (!NetworkConfigurations.length && !Certificates.length) return undefined;
  return { Type: 'UnencryptedConfiguration', NetworkConfigurations, Certificates };
}

/** Vocabulary settings Android has no equivalent for (so `render` can say what is left out). */
export function unsupportedOnAndroid(spec: PolicyBundleSpec): string[] {
  const s = spec.settings ?? {};
  const out: string[] = [];
  if (s.vpn?.length) out.push('settings.vpn (AMAPI configures VPN through a VPN app: use android.policy.alwaysOnVpnPackage)');
  if (s.restrictions?.allowCloudBackup !== undefined) out.push('settings.restrictions.allowCloudBackup');
  if (s.encryption?.escrowRecoveryKey) out.push('settings.encryption.escrowRecoveryKey');
  if (s.osUpdates?.deadline) out.push('settings.osUpdates.deadline');
  if (s.osUpdates?.deferralDays) out.push('settings.osUpdates.deferralDays (Android postpones by up to 30 days, not a chosen number)');
  s.wifi?.forEach((w) => {
    if (w.eap?.clientCertificate) out.push(`settings.wifi[${w.ssid}].eap.clientCertificate (install the identity with android.policy: ONC has no PKCS#12 passphrase)`);
    if (w.proxy && w.proxy.type !== 'none' && !oncProxy(w.proxy)) out.push(`settings.wifi[${w.ssid}].proxy`);
  });
  if (s.certificates?.some((c) => c.type === 'pkcs12')) out.push('settings.certificates of type pkcs12');
  const min = s.osUpdates?.minimumVersion?.android;
  if (min !== undefined && apiLevelOf(min) === undefined) out.push(`settings.osUpdates.minimumVersion.android ${min} (not a known Android release)`);
  return out;
}

const apiLevelOf = (release: string): number | undefined => API_LEVELS[release] ?? API_LEVELS[release.split('.')[0]!];

/** One bundle's vocabulary as Policy fields (no fragment, no reporting). */
export function vocabularyPolicy(spec: PolicyBundleSpec): AmapiPolicy {
  const s = spec.settings ?? {};
  const r = s.restrictions ?? {};
  const p: AmapiPolicy = {};
  if (s.passcode) {
    p.passwordPolicies = [passwordPolicy(s.passcode)];
    // int64 in milliseconds, sent as a string.
    if (s.passcode.maxInactivityMinutes !== undefined) p.maximumTimeToLock = String(s.passcode.maxInactivityMinutes * 60_000);
  }
  // Modern Android encrypts by default; the policy makes it required (no boot password).
  if (s.encryption?.required) p.encryptionPolicy = 'ENABLED_WITHOUT_PASSWORD';
  if (r.allowCamera !== undefined) p.cameraAccess = r.allowCamera ? 'CAMERA_ACCESS_USER_CHOICE' : 'CAMERA_ACCESS_DISABLED';
  if (r.allowScreenCapture !== undefined) p.screenCaptureDisabled = !r.allowScreenCapture;
  if (r.allowRemovableStorage !== undefined) {
    p.deviceConnectivityManagement = { usbDataAccess: r.allowRemovableStorage ? 'ALLOW_USB_DATA_TRANSFER' : 'DISALLOW_USB_FILE_TRANSFER' };
    p.mountPhysicalMediaDisabled = !r.allowRemovableStorage;
  }
  if (r.allowUnknownSources !== undefined) p.advancedSecurityOverrides = { untrustedAppsPolicy: r.allowUnknownSources ? 'ALLOW_INSTALL_DEVICE_WIDE' : 'DISALLOW_INSTALL' };
  if (r.allowBluetooth !== undefined) p.bluetoothDisabled = !r.allowBluetooth;
  if (r.allowFactoryReset !== undefined) p.factoryResetDisabled = !r.allowFactoryReset;
  if (r.allowAppInstallation !== undefined) p.installAppsDisabled = !r.allowAppInstallation;
  const net = onc(spec);
  if (net) p.openNetworkConfiguration = net;
  const apps = (s.apps ?? []).filter((a) => a.android);
  if (apps.length) {
    p.applications = apps.map((a) =>
      compact({
        packageName: a.android!.packageName,
        installType: s.kiosk?.app === a.name ? 'KIOSK' : a.installType === 'required' ? 'FORCE_INSTALLED' : a.installType === 'available' ? 'AVAILABLE' : 'BLOCKED',
        minimumVersionCode: a.android!.minimumVersionCode,
        managedConfiguration: a.configuration,
      }),
    );
  }
  if (s.kiosk) {
    const k = compact({
      statusBar: s.kiosk.showStatusBar === undefined ? undefined : s.kiosk.showStatusBar ? 'NOTIFICATIONS_AND_SYSTEM_INFO_ENABLED' : 'NOTIFICATIONS_AND_SYSTEM_INFO_DISABLED',
      systemNavigation: s.kiosk.allowSystemNavigation === undefined ? undefined : s.kiosk.allowSystemNavigation ? 'NAVIGATION_ENABLED' : 'NAVIGATION_DISABLED',
    });
    if (Object.keys(k).length) p.kioskCustomization = k;
  }
  const u = s.osUpdates;
  if (u) {
    if (u.automaticInstall) p.systemUpdate = { type: 'AUTOMATIC' };
    else if ((u.deferralDays ?? 0) > 0) p.systemUpdate = { type: 'POSTPONE' };
    const min = u.minimumVersion?.android;
    const level = min !== undefined ? apiLevelOf(min) : undefined;
    if (level) p.minimumApiLevel = level;
  }
  return p;
}

// Lists are joined by the key that identifies an entry; anything else: the later value wins.
const LIST_KEYS: Record<string, string> = { applications: 'packageName', passwordPolicies: 'passwordScope', NetworkConfigurations: 'GUID', Certificates: 'GUID' };

function merge(a: unknown, b: unknown, key?: string): unknown {
  if (Array.isArray(a) && Array.isArray(b) && key && LIST_KEYS[key]) {
    const k = LIST_KEYS[key]!;
    const out = new Map<unknown, unknown>();
    for (const x of [...a, ...b]) {
      const id = (x as Record<string, unknown>)?.[k];
      const slot = id ?? Symbol();
      out.set(slot, out.has(slot) ? merge(out.get(slot), x) : x);
    }
    return [...out.values()];
  }
  if (isObj(a) && isObj(b)) {
    const out: Record<string, unknown> = { ...a };
    for (const [k, v] of Object.entries(b)) out[k] = k in out ? merge(out[k], v, k) : v;
    return out;
  }
  return b;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function compact<T extends Record<string, unknown>>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0))) as T;
}

/** The policy for a device holding these bundles (the Android ones among them), without its name. */
export function compileAndroidPolicy(bundles: readonly Bundle[]): AmapiPolicy {
  const mine = bundles.filter((b) => forAndroid(b.spec)).sort((x, y) => x.name.localeCompare(y.name));
  let p: AmapiPolicy = {};
  for (const b of mine) p = merge(p, vocabularyPolicy(b.spec)) as AmapiPolicy;
  // Fragments last, so they win over every bundle's vocabulary.
  for (const b of mine) if (b.spec.android?.policy) p = merge(p, stripReadOnly(b.spec.android.policy)) as AmapiPolicy;
  p.statusReportingSettings = merge(STATUS_REPORTING, p.statusReportingSettings ?? {});
  return p;
}

/** `name` and `version` belong to AMAPI, not to a fragment. */
function stripReadOnly(fragment: Record<string, unknown>): Record<string, unknown> {
  const { name: _n, version: _v, ...rest } = fragment;
  return rest;
}

// ----------------------------------------------------------------- validation

/** A Policy field a bundle's fragment sets to something else than the bundle's own settings produce. */
export interface FragmentConflict {
  /** Dotted, with list entries by key: `passwordPolicies[SCOPE_DEVICE].passwordMinimumLength`. */
  field: string;
  /** Data path inside spec.android.policy (for YAML positions). */
  path: Array<string | number>;
  /** Canonical JSON of what the settings produce and what the fragment sets. */
  produced: string;
  fragment: string;
  /** Muster itself sets it (status reporting), not the bundle's settings. */
  muster: boolean;
}

interface Leaf {
  value: string;
  path: Array<string | number>;
}

function leaves(v: unknown): Map<string, Leaf> {
  const out = new Map<string, Leaf>();
  const walk = (x: unknown, key: string, path: Array<string | number>, depth: number) => {
    if (depth > 64) return;
    if (Array.isArray(x)) {
      const field = LIST_KEYS[key.slice(key.lastIndexOf('.') + 1).replace(/\[.*$/, '')];
      const keyed = field && x.every((e) => isObj(e) && typeof e[field] === 'string');
      if (!keyed) return void out.set(key, { value: stableJson(x), path });
      return x.forEach((e, i) => walk(e, `${key}[${(e as Record<string, string>)[field!]}]`, [...path, i], depth + 1));
    }
    if (isObj(x) && Object.keys(x).length) {
      for (const [k, e] of Object.entries(x)) walk(e, key ? `${key}.${k}` : k, [...path, k], depth + 1);
      return;
    }
    out.set(key, { value: stableJson(x), path });
  };
  walk(v, '', [], 0);
  return out;
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (isObj(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v ?? null);
}

/**
 * Where a bundle's own `spec.android.policy` fragment overrides what its
 * cross-platform settings (or Muster's status reporting) produce. The
 * fragment wins at compile time; validate reports each of these.
 */
export function fragmentConflicts(spec: PolicyBundleSpec): FragmentConflict[] {
  const frag = spec.android?.policy;
  if (!frag || !forAndroid(spec)) return [];
  const produced = leaves(vocabularyPolicy(spec));
  const reporting = leaves({ statusReportingSettings: STATUS_REPORTING });
  const out: FragmentConflict[] = [];
  for (const [field, f] of leaves(stripReadOnly(frag))) {
    for (const [src, muster] of [
      [produced, false],
      [reporting, true],
    ] as const) {
      const exact = src.get(field);
      if (exact) {
        if (exact.value !== f.value) out.push({ field, path: f.path, produced: exact.value, fragment: f.value, muster });
        continue;
      }
      // The fragment replaces a whole subtree the settings fill in (a list without keys, a scalar over an object).
      const under = [...src.entries()].filter(([k]) => k.startsWith(`${field}.`) || k.startsWith(`${field}[`));
      if (under.length && f.value !== '{}') out.push({ field, path: f.path, produced: stableJson(Object.fromEntries(under.map(([k, l]) => [k.slice(field.length), JSON.parse(l.value) as unknown]))), fragment: f.value, muster });
    }
  }
  return out;
}

/** Deprecated Policy fields a fragment uses, with their replacement. */
export function deprecatedFragmentFields(spec: PolicyBundleSpec): Array<{ field: string; use: string }> {
  return Object.keys(spec.android?.policy ?? {})
    .filter((k) => k in DEPRECATED_POLICY_FIELDS)
    .map((field) => ({ field, use: DEPRECATED_POLICY_FIELDS[field]! }));
}

// --------------------------------------------------------------------- secrets

/**
 * Fills `${secret:NAME}` in; names of missing secrets are returned instead of
 * being sent empty, and the values used, so that an error echoing one can be
 * scrubbed before it is logged or stored.
 */
export function resolveSecrets(policy: AmapiPolicy, secret: (name: string) => string | undefined): { policy: AmapiPolicy; missing: string[]; values: string[] } {
  const missing = new Set<string>();
  const values = new Set<string>();
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      const m = SECRET_REF_PATTERN.exec(v);
      if (!m) return v;
      const x = secret(m[1]!);
      if (x === undefined) missing.add(m[1]!);
      else if (x !== '') values.add(x);
      return x ?? v;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (isObj(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return { policy: walk(policy) as AmapiPolicy, missing: [...missing].sort(), values: [...values] };
}

/** `text` with every secret value replaced (for error messages about a policy that carried them). */
export function scrubSecrets(text: string, values: readonly string[]): string {
  let out = text;
  // Longest first, so a secret containing another is hidden whole.
  for (const v of [...values].sort((a, b) => b.length - a.length)) if (v.length >= 3) out = out.split(v).join('(secret)');
  return out;
}
