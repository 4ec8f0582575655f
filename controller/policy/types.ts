// The resource model: the TypeScript shape of what schemas/*.schema.json accepts.
// The schemas are the source of truth for validation; these types describe the
// data after it has passed them, so the pure core can rely on the shape.

export const API_VERSION = 'muster.dev/v1alpha1';
export const KINDS = ['PolicyBundle', 'DeviceGroup', 'Rollout'] as const;
export type Kind = (typeof KINDS)[number];

export type Platform = 'apple' | 'windows' | 'android' | 'agent';
export const PLATFORMS: readonly Platform[] = ['apple', 'windows', 'android', 'agent'];

/** OS families a minimum version can be stated for. */
export type OsFamily = 'macos' | 'ios' | 'ipados' | 'tvos' | 'windows' | 'android';

export interface Metadata {
  name: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface ResourceBase<K extends Kind, S> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: Metadata;
  spec: S;
}

// ---------------------------------------------------------------- PolicyBundle

export interface PasscodeSettings {
  required?: boolean;
  minLength?: number;
  /** none: any; numeric: digits allowed; alphanumeric: letters and digits; complex: plus symbols. */
  complexity?: 'none' | 'numeric' | 'alphanumeric' | 'complex';
  minComplexCharacters?: number;
  maxFailedAttempts?: number;
  maxInactivityMinutes?: number;
  maxAgeDays?: number;
  historyCount?: number;
  allowSimple?: boolean;
}

export interface EncryptionSettings {
  required: boolean;
  /** Escrow the recovery key to Muster (FileVault personal key, BitLocker recovery password). */
  escrowRecoveryKey?: boolean;
}

export interface RestrictionSettings {
  allowCamera?: boolean;
  allowScreenCapture?: boolean;
  allowRemovableStorage?: boolean;
  allowBluetooth?: boolean;
  allowUnknownSources?: boolean;
  allowCloudBackup?: boolean;
  allowAppInstallation?: boolean;
  allowFactoryReset?: boolean;
}

export type WifiSecurity = 'none' | 'wep' | 'wpa2-personal' | 'wpa3-personal' | 'wpa2-enterprise' | 'wpa3-enterprise';

export interface WifiEap {
  methods: Array<'tls' | 'peap' | 'ttls'>;
  identity?: string;
  outerIdentity?: string;
  password?: string; // must be ${secret:NAME}
  /** Names of entries in settings.certificates trusted for the RADIUS server. */
  trustedCertificates?: string[];
  serverNames?: string[];
  /** Name of a pkcs12 entry in settings.certificates used for EAP-TLS. */
  clientCertificate?: string;
}

export interface WifiNetwork {
  ssid: string;
  security: WifiSecurity;
  password?: string; // must be ${secret:NAME}
  hidden?: boolean;
  autoJoin?: boolean;
  eap?: WifiEap;
  proxy?: { type: 'none' | 'auto' | 'manual'; url?: string; server?: string; port?: number };
}

export interface OsUpdateSettings {
  minimumVersion?: Partial<Record<OsFamily, string>>;
  /** When the minimum version must be installed (RFC 3339). */
  deadline?: string;
  deferralDays?: number;
  automaticInstall?: boolean;
}

export interface VpnSettings {
  name: string;
  type: 'ikev2' | 'l2tp' | 'wireguard';
  server: string;
  remoteIdentifier?: string;
  localIdentifier?: string;
  authentication: {
    method: 'certificate' | 'sharedSecret' | 'eap';
    certificate?: string; // name of a pkcs12 entry in settings.certificates
    sharedSecret?: string; // must be ${secret:NAME}
    username?: string;
    password?: string; // must be ${secret:NAME}
  };
  alwaysOn?: boolean;
  onDemand?: boolean;
  splitTunnel?: boolean;
  dnsServers?: string[];
}

export interface CertificateSettings {
  name: string;
  type: 'root' | 'intermediate' | 'pkcs12';
  /** PEM text of a root or intermediate certificate (public, so it may live in Git). */
  pem?: string;
  /** Base64 PKCS#12 for type pkcs12: must be ${secret:NAME}. */
  pkcs12?: string;
  passphrase?: string; // must be ${secret:NAME}
}

export interface AppSettings {
  name: string;
  installType: 'required' | 'available' | 'blocked';
  apple?: { bundleId: string; storeId?: number; manifestUrl?: string };
  windows?: { packageFamilyName?: string; storeProductId?: string; msiUrl?: string; productCode?: string };
  android?: { packageName: string; minimumVersionCode?: number };
  /** Managed app configuration, passed through to each platform's native form. */
  configuration?: Record<string, unknown>;
}

export interface KioskSettings {
  /** Name of an entry in settings.apps that the device is locked to. */
  app: string;
  showStatusBar?: boolean;
  allowSystemNavigation?: boolean;
}

export interface Settings {
  passcode?: PasscodeSettings;
  encryption?: EncryptionSettings;
  restrictions?: RestrictionSettings;
  wifi?: WifiNetwork[];
  osUpdates?: OsUpdateSettings;
  vpn?: VpnSettings[];
  certificates?: CertificateSettings[];
  apps?: AppSettings[];
  kiosk?: KioskSettings;
}

export interface ApplePayload {
  PayloadType: string;
  PayloadIdentifier?: string;
  PayloadDisplayName?: string;
  [key: string]: unknown;
}

export interface WindowsSetting {
  /** OMA-URI of the CSP node, e.g. ./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera */
  omaUri: string;
  format: 'int' | 'chr' | 'bool' | 'b64' | 'xml' | 'float' | 'date' | 'time' | 'node' | 'null';
  value?: string | number | boolean;
}

export type ComplianceRule = {
  name: string;
  description?: string;
  severity?: 'warning' | 'critical';
} & (
  | { minimumOsVersion: Partial<Record<OsFamily, string>> }
  | { encryptionRequired: true }
  | { passcodeRequired: true }
  | { maxDaysSinceLastSeen: number }
);

export interface PolicyBundleSpec {
  version: string;
  description?: string;
  /** Platforms this bundle applies to; all when omitted. */
  platforms?: Platform[];
  settings?: Settings;
  apple?: { payloads?: ApplePayload[] };
  windows?: { settings?: WindowsSetting[]; poll?: WindowsPoll };
  android?: { policy?: Record<string, unknown> };
  compliance?: ComplianceRule[];
}

/** The DMClient poll schedule: two finite sets of polls after enrollment, then a steady interval. */
export interface WindowsPoll {
  first?: { every: string; times: number };
  second?: { every: string; times: number };
  then?: string;
  onLogin?: boolean;
}

export type PolicyBundle = ResourceBase<'PolicyBundle', PolicyBundleSpec>;

// ---------------------------------------------------------------- DeviceGroup

export interface SelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: SelectorRequirement[];
}

/**
 * Device attributes are matched under the reserved `muster.dev/` prefix
 * (muster.dev/platform, muster.dev/os, muster.dev/model, muster.dev/os-version,
 * muster.dev/ownership, muster.dev/serial, muster.dev/enrollment-source);
 * every other key is a device label.
 */
export const DEVICE_ATTRIBUTE_KEYS = [
  'muster.dev/platform',
  'muster.dev/os',
  'muster.dev/model',
  'muster.dev/os-version',
  'muster.dev/ownership',
  'muster.dev/serial',
  'muster.dev/enrollment-source',
] as const;

export interface DeviceGroupSpec {
  description?: string;
  selector?: LabelSelector;
  /** Device ids or serial numbers always in the group. */
  include?: string[];
  /** Device ids or serial numbers never in the group (wins over include and selector). */
  exclude?: string[];
}

export type DeviceGroup = ResourceBase<'DeviceGroup', DeviceGroupSpec>;

// ---------------------------------------------------------------- Rollout

export type RolloutStep =
  | { setWeight: number }
  | { pause: { duration?: string } }
  | { analysis: { maxFailureRate: number; minReports: number; window?: string } };

export interface RolloutSpec {
  description?: string;
  /** Name of the PolicyBundle this rollout delivers. */
  bundle: string;
  /** Names of the DeviceGroups it targets (their union). */
  groups: string[];
  /** Bucket salt; defaults to the rollout name so buckets stay put across revisions. */
  salt?: string;
  steps: RolloutStep[];
  /** A step that has not completed within this duration marks the rollout Degraded. */
  progressDeadline?: string;
  /** Return devices to the stable bundle when an analysis fails or the deadline passes. */
  autoRollback?: boolean;
  /** Remove the bundle from devices that leave the rollout's groups (default true). */
  prune?: boolean;
  /** At most this many devices newly targeted per reconcile tick. */
  maxDevicesPerTick?: number;
}

export type Rollout = ResourceBase<'Rollout', RolloutSpec>;

export type Resource = PolicyBundle | DeviceGroup | Rollout;

/** Durations are Go-style: 90s, 15m, 1h30m, 7d. */
export const DURATION_PATTERN = '^([0-9]+(ms|s|m|h|d))+$';
/** A value that refers to a secret instead of holding it. */
export const SECRET_REF_PATTERN = /^\$\{secret:([A-Za-z_][A-Za-z0-9_.-]*)\}$/;
