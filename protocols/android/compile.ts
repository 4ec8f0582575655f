// Bundles → one Android Management API Policy. Pure.
//
// A device's set of bundles becomes one AMAPI policy, named from the sorted
// bundle hashes (`m-<hex>`), so every device with the same bundles shares one
// policy and a staged rollout moves devices between policies by patching
// `device.policyName`. Each bundle's vocabulary settings are translated, the
// bundles merged (lists joined by their key), then each bundle's raw
// `spec.android.policy` fragment laid over the result: the fragment wins, and
// `fragmentOverrides` names what it overrode so `muster validate` can say so.
//
// Secret references (`${secret:NAME}`) stay as they are; resolveSecrets() fills
// them in when the policy is sent.
import { createHash, X509Certificate } from 'node:crypto';
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { SECRET_REF_PATTERN, type PolicyBundleSpec, type WifiNetwork } from '../../controller/policy/types.js';

export type AmapiPolicy = Record<string, unknown>;
type Bundle = Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>;

/** Android releases → API level, for osUpdates.minimumVersion (AMAPI speaks API levels). */
const API_LEVELS: Record<string, number> = { '8': 26, '8.1': 27, '9': 28, '10': 29, '11': 30, '12': 31, '12.1': 32, '13': 33, '14': 34, '15': 35, '16': 36 };

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
};

/** The short policy id for a set of bundle hashes: the same set, the same policy. */
export function policyIdFor(bundleHashes: readonly string[]): string {
  return `m-${createHash('sha256').update([...bundleHashes].sort().join('\n')).digest('hex').slice(0, 20)}`;
}

const QUALITY = { none: 'SOMETHING', numeric: 'NUMERIC', alphanumeric: 'ALPHANUMERIC', complex: 'COMPLEX' } as const;

function passwordPolicies(p: NonNullable<NonNullable<PolicyBundleSpec['settings']>['passcode']>): AmapiPolicy[] {
  if (p.required === false) return [{ passwordScope: 'SCOPE_DEVICE', passwordQuality: 'PASSWORD_QUALITY_UNSPECIFIED' }];
  const quality = p.complexity === 'numeric' && p.allowSimple === false ? 'NUMERIC_COMPLEX' : QUALITY[p.complexity ?? 'none'];
  return [
    compact({
      passwordScope: 'SCOPE_DEVICE',
      passwordQuality: quality,
      passwordMinimumLength: p.minLength,
      passwordMinimumNonLetter: p.complexity === 'complex' ? p.minComplexCharacters : undefined,
      maximumFailedPasswordsForWipe: p.maxFailedAttempts,
      passwordExpirationTimeout: p.maxAgeDays !== undefined ? `${p.maxAgeDays * 86_400}s` : undefined,
      passwordHistoryLength: p.historyCount,
    }),
  ];
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
    const Security = w.security === 'none' ? 'None' : w.security === 'wep' ? 'WEP-PSK' : enterprise ? 'WPA-EAP' : 'WPA-PSK';
    const eap = w.eap;
    return {
      GUID: guid('wifi', w.ssid),
      Name: w.ssid,
      Type: 'WiFi',
      WiFi: compact({
        SSID: w.ssid,
        Security,
        Passphrase: enterprise ? undefined : w.password,
        AutoConnect: w.autoJoin ?? true,
        HiddenSSID: w.hidden ?? false,
        EAP:
          enterprise && eap
            ? compact({
                Outer: eap.methods.includes('tls') ? 'EAP-TLS' : eap.methods.includes('peap') ? 'PEAP' : 'EAP-TTLS',
                Identity: eap.identity,
                AnonymousIdentity: eap.outerIdentity,
                Password: eap.password,
                ServerCARefs: eap.trustedCertificates?.map((n) => certGuid.get(n)).filter((x): x is string => !!x),
                DomainSuffixMatch: eap.serverNames,
              })
            : undefined,
      }),
    };
  });
  if (!NetworkConfigurations.length && !Certificates.length) return undefined;
  return { Type: 'UnencryptedConfiguration', NetworkConfigurations, Certificates };
}

/** One bundle's vocabulary as Policy fields (no fragment, no reporting). */
export function vocabularyPolicy(spec: PolicyBundleSpec): AmapiPolicy {
  const s = spec.settings ?? {};
  const r = s.restrictions ?? {};
  const p: AmapiPolicy = {};
  if (s.passcode) {
    p.passwordPolicies = passwordPolicies(s.passcode);
    if (s.passcode.maxInactivityMinutes !== undefined) p.maximumTimeToLock = String(s.passcode.maxInactivityMinutes * 60_000);
  }
  // Modern Android encrypts by default; the policy makes it required (no boot password).
  if (s.encryption?.required) p.encryptionPolicy = 'ENABLED_WITHOUT_PASSWORD';
  if (r.allowCamera !== undefined) p.cameraAccess = r.allowCamera ? 'CAMERA_ACCESS_USER_CHOICE' : 'CAMERA_ACCESS_DISABLED';
  if (r.allowScreenCapture !== undefined) p.screenCaptureDisabled = !r.allowScreenCapture;
  if (r.allowRemovableStorage !== undefined) p.usbDataAccess = r.allowRemovableStorage ? 'ALLOW_USB_DATA_TRANSFER' : 'DISALLOW_USB_FILE_TRANSFER';
  if (r.allowUnknownSources !== undefined) p.advancedSecurityOverrides = { untrustedAppsPolicy: r.allowUnknownSources ? 'ALLOW_INSTALL_DEVICE_WIDE' : 'DISALLOW_INSTALL' };
  if (r.allowBluetooth === false) p.bluetoothDisabled = true;
  if (r.allowFactoryReset === false) p.factoryResetDisabled = true;
  if (r.allowAppInstallation === false) p.installAppsDisabled = true;
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
    p.kioskCustomization = {
      statusBar: s.kiosk.showStatusBar ? 'NOTIFICATIONS_AND_SYSTEM_INFO_ENABLED' : 'SYSTEM_INFO_ONLY',
      systemNavigation: s.kiosk.allowSystemNavigation ? 'NAVIGATION_ENABLED' : 'NAVIGATION_DISABLED',
    };
  }
  const u = s.osUpdates;
  if (u) {
    if (u.automaticInstall) p.systemUpdate = { type: 'AUTOMATIC' };
    else if ((u.deferralDays ?? 0) > 0) p.systemUpdate = { type: 'POSTPONE' };
    const min = u.minimumVersion?.android;
    if (min !== undefined) {
      const level = API_LEVELS[min] ?? API_LEVELS[min.split('.')[0]!];
      if (level) p.minimumApiLevel = level;
    }
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
      out.set(id ?? Symbol(), out.has(id) ? merge(out.get(id), x) : x);
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
  const mine = [...bundles].filter((b) => !b.spec.platforms || b.spec.platforms.includes('android')).sort((x, y) => x.name.localeCompare(y.name));
  let p: AmapiPolicy = {};
  for (const b of mine) p = merge(p, vocabularyPolicy(b.spec)) as AmapiPolicy;
  // Fragments last, so they win over every bundle's vocabulary.
  for (const b of mine) if (b.spec.android?.policy) p = merge(p, b.spec.android.policy) as AmapiPolicy;
  p.statusReportingSettings = merge(STATUS_REPORTING, p.statusReportingSettings ?? {});
  return p;
}

/** Top-level Policy fields a bundle sets both through its vocabulary and its fragment (the fragment wins). */
export function fragmentOverrides(spec: PolicyBundleSpec): string[] {
  const frag = spec.android?.policy ?? {};
  const vocab = vocabularyPolicy(spec);
  return Object.keys(frag).filter((k) => k in vocab).sort();
}

/** Fills `${secret:NAME}` in; names of missing secrets are returned instead of being sent empty. */
export function resolveSecrets(policy: AmapiPolicy, secret: (name: string) => string | undefined): { policy: AmapiPolicy; missing: string[] } {
  const missing = new Set<string>();
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string')
      return v.replace(new RegExp(SECRET_REF_PATTERN.source, 'g'), (m: string, name: string) => {
        const x = secret(name);
        if (x === undefined) missing.add(name);
        return x ?? m;
      });
    if (Array.isArray(v)) return v.map(walk);
    if (isObj(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return { policy: walk(policy) as AmapiPolicy, missing: [...missing].sort() };
}
