// A local Android Management API, and the simulated Android fleet behind it.
//
// The server speaks the REST paths and JSON shapes Muster's googleapis client
// uses (v1/enterprises, policies, enrollmentTokens, devices with paging and
// updateMask, issueCommand, operations, signupUrls) and Google's OAuth token
// endpoint (a JWT-bearer grant whose assertion's signature, issuer, audience
// and scope are checked). Errors come as {error: {code, message, status}}:
// 400, 401, 404, 409, 429 with Retry-After, 500 — on demand (fail()) or from
// an optional quota.
//
// The fleet: fleet.enroll(tokenValue, {...}) creates the Device the way an
// enrollment does (on the token's policy, with its additionalData) and
// publishes ENROLLMENT; each device applies its policy after applyDelayMs
// (some report nonComplianceDetails) and publishes STATUS_REPORT; issued
// commands finish after commandDelayMs and publish COMMAND — all through the
// Pub/Sub push stand-in (pubsub-push.ts), to the endpoint over real HTTP.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { importSPKI, jwtVerify } from 'jose';
import { PubsubPusher, type PusherOptions, type PushSubscription } from './pubsub-push.js';

type Json = Record<string, unknown>;
const AMAPI_SCOPE = 'https://www.googleapis.com/auth/androidmanagement';

/** Policy fields the simulator knows (Google answers an unknown one with 400 "Unknown name"). */
const POLICY_FIELDS = new Set(
  (
    'accountTypesWithManagementDisabled addUserDisabled adjustVolumeDisabled advancedSecurityOverrides alwaysOnVpnPackage androidDevicePolicyTracks appAutoUpdatePolicy applications ' +
    'autoDateAndTimeZone autoTimeRequired blockApplicationsEnabled bluetoothConfigDisabled bluetoothContactSharingDisabled bluetoothDisabled cameraAccess cameraDisabled ' +
    'cellBroadcastsConfigDisabled choosePrivateKeyRules complianceRules createWindowsDisabled credentialsConfigDisabled crossProfilePolicies dataRoamingDisabled ' +
    'debuggingFeaturesAllowed defaultPermissionPolicy deviceOwnerLockScreenInfo encryptionPolicy ensureVerifyAppsEnabled factoryResetDisabled frpAdminEmails funDisabled ' +
    'installAppsDisabled installUnknownSourcesAllowed keyguardDisabled keyguardDisabledFeatures kioskCustomization kioskCustomLauncherEnabled locationMode longSupportMessage ' +
    'maximumTimeToLock microphoneAccess minimumApiLevel mobileNetworksConfigDisabled modifyAccountsDisabled mountPhysicalMediaDisabled name networkEscapeHatchEnabled ' +
    'networkResetDisabled oncCertificateProviders openNetworkConfiguration outgoingBeamDisabled outgoingCallsDisabled passwordPolicies passwordRequirements permissionGrants ' +
    'permittedAccessibilityServices permittedInputMethods persistentPreferredActivities personalUsagePolicies playStoreMode policyEnforcementRules preferentialNetworkService ' +
    'privateKeySelectionEnabled recommendedGlobalProxy removeUserDisabled safeBootDisabled screenCaptureDisabled setupActions setUserIconDisabled setWallpaperDisabled ' +
    'shareLocationDisabled shortSupportMessage skipFirstUseHintsEnabled smsDisabled statusBarDisabled statusReportingSettings stayOnPluggedModes systemUpdate ' +
    'tetheringConfigDisabled uninstallAppsDisabled unmuteMicrophoneDisabled usageLog usbFileTransferDisabled usbMassStorageEnabled version vpnConfigDisabled wifiConfigDisabled ' +
    'wifiConfigsLockdownEnabled deviceConnectivityManagement deviceRadioState credentialProviderPolicyDefault printingPolicy displaySettings assistContentPolicy ' +
    'workAccountSetupConfig enterpriseDisplayNameVisibility appFunctions defaultApplicationSettings'
  ).split(' '),
);

/** Enum values of the fields Muster compiles (from the AMAPI v1 reference): anything else is a 400. */
const ENUMS: Array<[path: string, values: string[]]> = [
  ['passwordPolicies[].passwordQuality', ['PASSWORD_QUALITY_UNSPECIFIED', 'BIOMETRIC_WEAK', 'SOMETHING', 'NUMERIC', 'NUMERIC_COMPLEX', 'ALPHABETIC', 'ALPHANUMERIC', 'COMPLEX', 'COMPLEXITY_LOW', 'COMPLEXITY_MEDIUM', 'COMPLEXITY_HIGH']],
  ['passwordPolicies[].passwordScope', ['SCOPE_UNSPECIFIED', 'SCOPE_DEVICE', 'SCOPE_PROFILE']],
  ['cameraAccess', ['CAMERA_ACCESS_UNSPECIFIED', 'CAMERA_ACCESS_USER_CHOICE', 'CAMERA_ACCESS_DISABLED', 'CAMERA_ACCESS_ENFORCED']],
  ['encryptionPolicy', ['ENCRYPTION_POLICY_UNSPECIFIED', 'ENABLED_WITHOUT_PASSWORD', 'ENABLED_WITH_PASSWORD']],
  ['deviceConnectivityManagement.usbDataAccess', ['USB_DATA_ACCESS_UNSPECIFIED', 'ALLOW_USB_DATA_TRANSFER', 'DISALLOW_USB_FILE_TRANSFER', 'DISALLOW_USB_DATA_TRANSFER']],
  ['advancedSecurityOverrides.untrustedAppsPolicy', ['UNTRUSTED_APPS_POLICY_UNSPECIFIED', 'DISALLOW_INSTALL', 'ALLOW_INSTALL_IN_PERSONAL_PROFILE_ONLY', 'ALLOW_INSTALL_DEVICE_WIDE']],
  ['applications[].installType', ['INSTALL_TYPE_UNSPECIFIED', 'PREINSTALLED', 'FORCE_INSTALLED', 'BLOCKED', 'AVAILABLE', 'REQUIRED_FOR_SETUP', 'KIOSK', 'CUSTOM']],
  ['kioskCustomization.statusBar', ['STATUS_BAR_UNSPECIFIED', 'NOTIFICATIONS_AND_SYSTEM_INFO_ENABLED', 'NOTIFICATIONS_AND_SYSTEM_INFO_DISABLED', 'SYSTEM_INFO_ONLY']],
  ['kioskCustomization.systemNavigation', ['SYSTEM_NAVIGATION_UNSPECIFIED', 'NAVIGATION_ENABLED', 'NAVIGATION_DISABLED', 'HOME_BUTTON_ONLY']],
  ['systemUpdate.type', ['SYSTEM_UPDATE_TYPE_UNSPECIFIED', 'AUTOMATIC', 'WINDOWED', 'POSTPONE']],
  ['openNetworkConfiguration.NetworkConfigurations[].WiFi.Security', ['None', 'WEP-PSK', 'WPA-PSK', 'WPA-EAP', 'WEP-8021X', 'WPA3-Enterprise_192']],
  ['openNetworkConfiguration.NetworkConfigurations[].WiFi.EAP.Outer', ['EAP-AKA', 'EAP-TLS', 'EAP-TTLS', 'EAP-SIM', 'PEAP']],
];

function valuesAt(v: unknown, path: string): unknown[] {
  let cur: unknown[] = [v];
  for (const part of path.split('.')) {
    const list = part.endsWith('[]');
    const key = list ? part.slice(0, -2) : part;
    cur = cur.flatMap((x) => {
      const y = x && typeof x === 'object' ? (x as Json)[key] : undefined;
      if (y === undefined) return [];
      return list ? (Array.isArray(y) ? y : [y]) : [y];
    });
  }
  return cur;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly status: string,
    message: string,
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}

const notFound = (what: string) => new ApiError(404, 'NOT_FOUND', `Requested entity was not found. (${what})`);
const invalid = (message: string) => new ApiError(400, 'INVALID_ARGUMENT', message);

export interface Fault {
  method?: string;
  /** Matched against the path (/v1/…). */
  path?: RegExp;
  status: number;
  /** Seconds, sent as Retry-After. */
  retryAfter?: number;
  /** How many matching requests fail. Default 1. */
  times?: number;
  message?: string;
}

/** How a simulated device behaves. */
export interface SimDeviceOptions {
  /** The device id AMAPI assigns (default random hex). */
  id?: string;
  serial?: string;
  model?: string;
  brand?: string;
  androidVersion?: string;
  apiLevel?: number;
  securityPatchLevel?: string;
  ownership?: 'COMPANY_OWNED' | 'PERSONALLY_OWNED';
  encrypted?: boolean;
  /** The user has set a screen lock. */
  secure?: boolean;
  /** Policy fields this device cannot apply: each becomes a nonComplianceDetail when the policy sets it. */
  rejects?: string[];
  /** Apply the policy and report after this long (default the fleet's applyDelayMs). */
  applyDelayMs?: number;
  /** An offline device applies nothing and reports nothing until brought back. */
  offline?: boolean;
}

interface SimDevice {
  resource: Json;
  o: SimDeviceOptions;
  locked: boolean;
  reboots: number;
  passwordResets: number;
  wipeDataFlags?: string[];
}

export interface AmapiSimulatorOptions {
  /** Default applyDelayMs for devices (ms). Default 5. */
  applyDelayMs?: number;
  commandDelayMs?: number;
  /** Enforce Google's quota (requests per window) with 429s. */
  quota?: { requests: number; windowMs: number };
  push?: PusherOptions;
  /** The service account the server issues access tokens to. */
  serviceAccountEmail?: string;
}

export class AmapiSimulator {
  private server?: Server;
  url = '';
  readonly projectId = 'muster-sim';
  readonly serviceAccountEmail: string;
  private readonly keyPair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  private readonly accessTokens = new Map<string, number>();
  private readonly faults: Array<Fault & { left: number }> = [];
  private readonly quotaStarts: number[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly work = new Set<Promise<unknown>>();
  readonly enterprises = new Map<string, Json>();
  readonly policies = new Map<string, { policy: Json; version: bigint; digest: string }>();
  readonly devices = new Map<string, SimDevice>();
  /** Devices deleted (wiped), by name, with the flags they were deleted with. */
  readonly deleted = new Map<string, string[]>();
  readonly tokens = new Map<string, Json>();
  readonly operations = new Map<string, Json>();
  private readonly signups = new Map<string, { projectId: string; callbackUrl: string; enterpriseToken: string }>();
  /** Every API request, in order (method, path, query, body). */
  readonly requests: Array<{ method: string; path: string; query: Record<string, string>; body: unknown; status: number }> = [];
  readonly tokenRequests: Array<{ status: number; error?: string }> = [];
  readonly pusher: PubsubPusher;

  constructor(private readonly o: AmapiSimulatorOptions = {}) {
    this.serviceAccountEmail = o.serviceAccountEmail ?? 'muster@muster-sim.iam.gserviceaccount.com';
    this.pusher = new PubsubPusher(o.push);
  }

  async start(): Promise<this> {
    await this.pusher.init();
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.pusher.subscription = undefined;
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  get tokenUrl(): string {
    return `${this.url}/token`;
  }
  get jwksUrl(): string {
    return `${this.url}/oauth2/v3/certs`;
  }

  /** A service-account key file's JSON, as the Cloud console gives it, pointing at this server's token endpoint. */
  serviceAccountKey(o: { email?: string; privateKeyPem?: string } = {}): string {
    return JSON.stringify({
      type: 'service_account',
      project_id: this.projectId,
      private_key_id: createHash('sha256').update(this.keyPair.publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 40),
      private_key: o.privateKeyPem ?? this.keyPair.privateKey.export({ type: 'pkcs8', format: 'pem' }),
      client_email: o.email ?? this.serviceAccountEmail,
      client_id: '1234567890',
      token_uri: this.tokenUrl,
    });
  }

  /** An enterprise ready to use, with its notifications going to `topic` (as `muster enroll android --signup` leaves it). */
  createEnterprise(o: { displayName?: string; pubsubTopic?: string } = {}): string {
    const name = `enterprises/LC${randomBytes(4).toString('hex')}`;
    this.enterprises.set(name, { name, enterpriseDisplayName: o.displayName ?? 'Simulated', ...(o.pubsubTopic ? { pubsubTopic: o.pubsubTopic, enabledNotificationTypes: ['ENROLLMENT', 'STATUS_REPORT', 'COMMAND'] } : {}) });
    return name;
  }

  /** Where notifications go (a Pub/Sub push subscription on `topic`). */
  subscribe(sub: PushSubscription & { topic: string }): void {
    this.pushTopic = sub.topic;
    this.pusher.subscription = sub;
  }
  private pushTopic?: string;

  fail(f: Fault): void {
    this.faults.push({ ...f, left: f.times ?? 1 });
  }

  /** Resolves once no device work, timer or delivery is pending. */
  async settle(): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      if (!this.timers.size && !this.work.size) {
        await this.pusher.idle();
        if (!this.timers.size && !this.work.size) return;
      }
      await Promise.all([...this.work, this.pusher.idle(), new Promise((r) => setTimeout(r, 2))]);
    }
    throw new Error('the simulated fleet did not settle');
  }

  // ---------------------------------------------------------------- fleet

  /** Enrolls a device with an enrollment token value, as the setup wizard does with the QR code. */
  enroll(tokenValue: string, o: SimDeviceOptions = {}): string {
    const token = [...this.tokens.values()].find((t) => t.value === tokenValue);
    if (!token) throw new Error('no such enrollment token');
    if (Date.parse(token.expirationTimestamp as string) < Date.now()) throw new Error('the enrollment token has expired');
    if (token.oneTimeOnly && token.used) throw new Error('the one-time enrollment token was used already');
    token.used = true;
    const enterprise = (token.name as string).split('/enrollmentTokens/')[0]!;
    const name = `${enterprise}/devices/${o.id ?? randomBytes(8).toString('hex')}`;
    if (this.devices.has(name)) throw new Error(`device ${name} exists`);
    const now = new Date().toISOString();
    const resource: Json = {
      name,
      managementMode: o.ownership === 'PERSONALLY_OWNED' ? 'PROFILE_OWNER' : 'DEVICE_OWNER',
      ownership: o.ownership ?? 'COMPANY_OWNED',
      state: 'ACTIVE',
      appliedState: 'ACTIVE',
      policyName: token.policyName,
      enrollmentTime: now,
      lastStatusReportTime: now,
      enrollmentTokenName: token.name,
      ...(token.additionalData ? { enrollmentTokenData: token.additionalData } : {}),
      apiLevel: o.apiLevel ?? 34,
      hardwareInfo: { brand: o.brand ?? 'google', manufacturer: 'Google', model: o.model ?? 'Pixel 8', hardware: 'shiba', ...(o.serial ? { serialNumber: o.serial } : {}) },
      softwareInfo: { androidVersion: o.androidVersion ?? '14', androidBuildNumber: 'AP2A.240805.005', securityPatchLevel: o.securityPatchLevel ?? '2024-08-05', primaryLanguageCode: 'en-US' },
      deviceSettings: { isDeviceSecure: o.secure ?? true, isEncrypted: o.encrypted ?? true, encryptionStatus: o.encrypted === false ? 'INACTIVE' : 'ACTIVE_PER_USER', unknownSourcesEnabled: false, developmentSettingsEnabled: false, adbEnabled: false, verifyAppsEnabled: true },
      securityPosture: { devicePosture: 'SECURE', postureDetails: [] },
    };
    this.devices.set(name, { resource, o, locked: false, reboots: 0, passwordResets: 0 });
    this.notify('ENROLLMENT', resource);
    this.scheduleApply(name);
    return name;
  }

  device(name: string): SimDevice | undefined {
    return this.devices.get(name);
  }

  /** Brings an offline device back (it applies its policy and reports). */
  setOnline(name: string, online = true): void {
    const d = this.devices.get(name);
    if (!d) throw new Error(`no device ${name}`);
    d.o.offline = !online;
    if (online) this.scheduleApply(name);
  }

  /** Every device reports its status again now (the benchmark's burst of notifications). */
  reportAll(names: readonly string[] = [...this.devices.keys()]): number {
    let n = 0;
    for (const name of names) {
      const d = this.devices.get(name);
      if (!d || d.o.offline) continue;
      d.resource.lastStatusReportTime = new Date().toISOString();
      this.notify('STATUS_REPORT', d.resource);
      n++;
    }
    return n;
  }

  private scheduleApply(name: string): void {
    const d = this.devices.get(name);
    if (!d || d.o.offline) return;
    this.later(d.o.applyDelayMs ?? this.o.applyDelayMs ?? 5, () => this.apply(name));
  }

  private apply(name: string): void {
    const d = this.devices.get(name);
    if (!d || d.o.offline) return;
    const policyName = d.resource.policyName as string;
    const p = this.policies.get(policyName);
    const now = new Date().toISOString();
    if (!p) {
      d.resource.policyCompliant = false;
      d.resource.nonComplianceDetails = [{ settingName: 'policy', nonComplianceReason: 'INVALID_VALUE' }];
    } else {
      const rejected = (d.o.rejects ?? []).filter((f) => f in p.policy);
      d.resource.appliedPolicyName = policyName;
      d.resource.appliedPolicyVersion = String(p.version);
      d.resource.policyCompliant = rejected.length === 0;
      d.resource.nonComplianceDetails = rejected.map((settingName) => ({ settingName, nonComplianceReason: 'API_LEVEL' }));
      if (!rejected.length) delete d.resource.nonComplianceDetails;
    }
    d.resource.lastPolicySyncTime = now;
    d.resource.lastStatusReportTime = now;
    this.notify('STATUS_REPORT', d.resource);
  }

  private notify(type: string, resource: unknown): void {
    const e = [...this.enterprises.values()].find((x) => typeof resource === 'object' && String((resource as Json).name ?? (resource as Json).device ?? '').startsWith(`${x.name as string}/`));
    if (!e || !this.pushTopic || e.pubsubTopic !== this.pushTopic) return;
    const enabled = (e.enabledNotificationTypes as string[] | undefined) ?? [];
    if (!enabled.includes(type)) return;
    this.pusher.publish(type, structuredClone(resource));
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  // ---------------------------------------------------------------- HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const query = Object.fromEntries(url.searchParams);
    // Repeated parameters (wipeDataFlags=A&wipeDataFlags=B), as googleapis sends arrays.
    if (url.searchParams.getAll('wipeDataFlags').length) query.wipeDataFlags = url.searchParams.getAll('wipeDataFlags').join(',');
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', ...headers });
      res.end(body === undefined ? '' : JSON.stringify(body));
    };
    const p = this.route(req.method ?? 'GET', url.pathname, query, raw, req.headers.authorization);
    this.work.add(p);
    try {
      const out = await p;
      if (url.pathname.startsWith('/v1/')) this.requests.push({ method: req.method!, path: url.pathname, query, body: raw ? safeJson(raw) : undefined, status: 200 });
      send(200, out);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, 'INTERNAL', (e as Error).message);
      if (url.pathname.startsWith('/v1/')) this.requests.push({ method: req.method!, path: url.pathname, query, body: raw ? safeJson(raw) : undefined, status: err.code });
      if (url.pathname === '/token') return send(err.code, { error: err.status, error_description: err.message });
      send(err.code, { error: { code: err.code, message: err.message, status: err.status } }, err.retryAfterS !== undefined ? { 'retry-after': String(err.retryAfterS) } : {});
    } finally {
      this.work.delete(p);
    }
  }

  private async route(method: string, path: string, q: Record<string, string>, raw: string, authz: string | undefined): Promise<unknown> {
    if (method === 'GET' && path === '/oauth2/v3/certs') return this.pusher.jwks();
    if (method === 'POST' && path === '/token') return this.token(raw);
    if (!path.startsWith('/v1/')) throw notFound(path);
    this.authorize(authz);
    this.quota();
    const fault = this.faults.find((f) => f.left > 0 && (!f.method || f.method === method) && (!f.path || f.path.test(path)));
    if (fault) {
      fault.left--;
      const status = fault.status === 429 ? 'RESOURCE_EXHAUSTED' : fault.status === 404 ? 'NOT_FOUND' : fault.status === 400 ? 'INVALID_ARGUMENT' : fault.status === 503 ? 'UNAVAILABLE' : 'INTERNAL';
      throw new ApiError(fault.status, status, fault.message ?? `simulated ${fault.status}`, fault.retryAfter);
    }
    const body = raw ? (safeJson(raw) as Json) : {};
    if (raw && body === undefined) throw invalid('Invalid JSON payload received.');
    const rest = path.slice(4);
    let m: RegExpExecArray | null;
    if (method === 'POST' && rest === 'signupUrls') return this.signupUrl(q);
    if (method === 'POST' && rest === 'enterprises') return this.createEnterpriseFromSignup(q, body);
    if ((m = /^(enterprises\/[^/]+)$/.exec(rest))) return this.enterprise(method, m[1]!, q, body);
    if ((m = /^(enterprises\/[^/]+)\/policies$/.exec(rest)) && method === 'GET') return this.listPolicies(m[1]!, q);
    if ((m = /^(enterprises\/[^/]+\/policies\/[^/]+)$/.exec(rest))) return this.policy(method, m[1]!, q, body);
    if ((m = /^(enterprises\/[^/]+)\/enrollmentTokens$/.exec(rest))) return method === 'POST' ? this.createToken(m[1]!, body) : this.listTokens(m[1]!);
    if ((m = /^(enterprises\/[^/]+\/enrollmentTokens\/[^/]+)$/.exec(rest)) && method === 'DELETE') return this.deleteToken(m[1]!);
    if ((m = /^(enterprises\/[^/]+)\/devices$/.exec(rest)) && method === 'GET') return this.listDevices(m[1]!, q);
    if ((m = /^(enterprises\/[^/]+\/devices\/[^/:]+):issueCommand$/.exec(rest)) && method === 'POST') return this.issueCommand(m[1]!, body);
    if ((m = /^(enterprises\/[^/]+\/devices\/[^/]+\/operations\/[^/]+)$/.exec(rest)) && method === 'GET') return this.getOperation(m[1]!);
    if ((m = /^(enterprises\/[^/]+\/devices\/[^/]+)$/.exec(rest))) return this.deviceCall(method, m[1]!, q, body);
    throw notFound(`${method} ${path}`);
  }

  private async token(raw: string): Promise<unknown> {
    const form = new URLSearchParams(raw);
    const fail = (why: string) => {
      this.tokenRequests.push({ status: 400, error: why });
      return new ApiError(400, 'invalid_grant', why);
    };
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') throw fail('unsupported grant_type');
    const assertion = form.get('assertion');
    if (!assertion) throw fail('no assertion');
    try {
      const key = await importSPKI(this.keyPair.publicKey.export({ type: 'spki', format: 'pem' }) as string, 'RS256');
      const { payload } = await jwtVerify(assertion, key, { issuer: this.serviceAccountEmail, audience: this.tokenUrl, algorithms: ['RS256'], maxTokenAge: '1h' });
      if (!String(payload.scope ?? '').split(' ').includes(AMAPI_SCOPE)) throw new Error(`scope ${String(payload.scope)} does not include ${AMAPI_SCOPE}`);
    } catch (e) {
      throw fail(`Invalid JWT: ${(e as Error).message}`);
    }
    const access = `ya29.sim-${randomBytes(16).toString('hex')}`;
    this.accessTokens.set(access, Date.now() + 3_600_000);
    this.tokenRequests.push({ status: 200 });
    return { access_token: access, expires_in: 3599, token_type: 'Bearer' };
  }

  private authorize(authz: string | undefined): void {
    const t = /^Bearer (.+)$/.exec(authz ?? '')?.[1];
    const exp = t ? this.accessTokens.get(t) : undefined;
    if (!exp || exp < Date.now()) throw new ApiError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
  }

  private quota(): void {
    const q = this.o.quota;
    if (!q) return;
    const now = Date.now();
    while (this.quotaStarts.length && this.quotaStarts[0]! <= now - q.windowMs) this.quotaStarts.shift();
    if (this.quotaStarts.length >= q.requests) {
      const wait = Math.ceil((this.quotaStarts[0]! + q.windowMs - now) / 1000);
      throw new ApiError(429, 'RESOURCE_EXHAUSTED', "Quota exceeded for quota metric 'Queries' and limit 'Queries per 100 seconds' of service 'androidmanagement.googleapis.com'.", Math.max(1, wait));
    }
    this.quotaStarts.push(now);
  }

  private signupUrl(q: Record<string, string>): unknown {
    if (!q.projectId || !q.callbackUrl) throw invalid('projectId and callbackUrl are required');
    const name = `signupUrls/C${randomBytes(6).toString('hex')}`;
    this.signups.set(name, { projectId: q.projectId, callbackUrl: q.callbackUrl, enterpriseToken: `EAH${randomBytes(12).toString('hex')}` });
    return { name, url: `https://play.google.com/work/adminsignup?token=${name.slice(11)}` };
  }

  /** What the admin's browser is sent to after signing up: the callback URL with its enterpriseToken. */
  completeSignup(signupUrlName: string): string {
    const s = this.signups.get(signupUrlName);
    if (!s) throw new Error('no such signup URL');
    const u = new URL(s.callbackUrl);
    u.searchParams.set('enterpriseToken', s.enterpriseToken);
    return u.toString();
  }

  private createEnterpriseFromSignup(q: Record<string, string>, body: Json): unknown {
    const s = this.signups.get(q.signupUrlName ?? '');
    if (!s || s.projectId !== q.projectId || s.enterpriseToken !== q.enterpriseToken) throw invalid('The enterprise token is invalid or was issued for another signup URL.');
    this.signups.delete(q.signupUrlName!);
    const name = `enterprises/LC${randomBytes(4).toString('hex')}`;
    const e = { ...body, name };
    this.enterprises.set(name, e);
    return e;
  }

  private enterprise(method: string, name: string, q: Record<string, string>, body: Json): unknown {
    const e = this.enterprises.get(name);
    if (!e) throw notFound(name);
    if (method === 'GET') return e;
    if (method !== 'PATCH') throw notFound(`${method} ${name}`);
    const fields = q.updateMask ? q.updateMask.split(',') : Object.keys(body);
    const topicBefore = e.pubsubTopic;
    for (const f of fields) {
      if (f in body) e[f] = body[f];
      else delete e[f];
    }
    // Google sends a test notification when the topic is set.
    if (e.pubsubTopic && e.pubsubTopic !== topicBefore && e.pubsubTopic === this.pushTopic) this.pusher.publish('test', undefined);
    return e;
  }

  private checkPolicy(policy: Json): void {
    for (const k of Object.keys(policy)) if (!POLICY_FIELDS.has(k)) throw invalid(`Invalid JSON payload received. Unknown name "${k}" at 'policy': Cannot find field.`);
    for (const [path, values] of ENUMS) {
      for (const v of valuesAt(policy, path)) if (typeof v !== 'string' || !values.includes(v)) throw invalid(`Invalid value at 'policy.${path.replace(/\[\]/g, '[0]')}' (${JSON.stringify(v)})`);
    }
    for (const a of valuesAt(policy, 'applications[]')) if (!a || typeof (a as Json).packageName !== 'string') throw invalid('applications[].packageName is required');
    for (const n of valuesAt(policy, 'openNetworkConfiguration.NetworkConfigurations[]')) {
      const x = n as Json;
      if (!x.GUID || !x.Name || x.Type !== 'WiFi' || !x.WiFi) throw invalid('NetworkConfiguration needs GUID, Name, Type WiFi and WiFi');
    }
  }

  private listPolicies(parent: string, q: Record<string, string>): unknown {
    if (!this.enterprises.has(parent)) throw notFound(parent);
    const all = [...this.policies.entries()].filter(([n]) => n.startsWith(`${parent}/policies/`)).map(([name, p]) => ({ ...p.policy, name, version: String(p.version) }));
    return page(all, q, 'policies', 100);
  }

  private policy(method: string, name: string, q: Record<string, string>, body: Json): unknown {
    const enterprise = name.split('/policies/')[0]!;
    if (!this.enterprises.has(enterprise)) throw notFound(enterprise);
    const cur = this.policies.get(name);
    if (method === 'GET') {
      if (!cur) throw notFound(name);
      return { ...cur.policy, name, version: String(cur.version) };
    }
    if (method === 'DELETE') {
      if (!cur) throw notFound(name);
      if ([...this.devices.values()].some((d) => d.resource.policyName === name)) throw new ApiError(400, 'FAILED_PRECONDITION', `Policy ${name} is in use by one or more devices.`);
      this.policies.delete(name);
      return {};
    }
    if (method !== 'PATCH') throw notFound(`${method} ${name}`);
    const { name: _n, version: _v, ...fields } = body;
    let next: Json;
    if (q.updateMask) {
      next = { ...(cur?.policy ?? {}) };
      for (const f of q.updateMask.split(',')) {
        if (f in fields) next[f] = fields[f];
        else delete next[f];
      }
    } else next = fields;
    this.checkPolicy(next);
    const digest = createHash('sha256').update(stableJson(next)).digest('hex');
    // The version moves only when the content does: a patch can answer 200 with the same version.
    const version = !cur ? 1n : cur.digest === digest ? cur.version : cur.version + 1n;
    this.policies.set(name, { policy: next, version, digest });
    if (cur && version !== cur.version) for (const [dn, d] of this.devices) if (d.resource.policyName === name) this.scheduleApply(dn);
    return { ...next, name, version: String(version) };
  }

  private createToken(parent: string, body: Json): unknown {
    if (!this.enterprises.has(parent)) throw notFound(parent);
    const policyName = (body.policyName as string | undefined) ?? `${parent}/policies/default`;
    const full = policyName.includes('/') ? policyName : `${parent}/policies/${policyName}`;
    if (!this.policies.has(full)) throw invalid(`Policy ${full} does not exist.`);
    if (typeof body.additionalData === 'string' && body.additionalData.length > 1024) throw invalid('additionalData must be 1024 characters or less.');
    const m = /^(\d+(?:\.\d+)?)s$/.exec(String(body.duration ?? '3600s'));
    if (!m || Number(m[1]) < 60) throw invalid('duration must be at least 1 minute.');
    const name = `${parent}/enrollmentTokens/${randomBytes(10).toString('hex')}`;
    const value = randomBytes(10).toString('hex').toUpperCase();
    const t: Json = {
      name,
      value,
      duration: `${m[1]}s`,
      expirationTimestamp: new Date(Date.now() + Number(m[1]) * 1000).toISOString(),
      policyName: full,
      ...(body.additionalData ? { additionalData: body.additionalData } : {}),
      oneTimeOnly: !!body.oneTimeOnly,
      ...(body.allowPersonalUsage ? { allowPersonalUsage: body.allowPersonalUsage } : {}),
      // What the setup wizard reads: the Android Device Policy admin component, its signature
      // checksum and download location, and the token in the admin extras bundle.
      qrCode: JSON.stringify({
        'android.app.extra.PROVISIONING_DEVICE_ADMIN_COMPONENT_NAME': 'com.google.android.apps.work.clouddpc/.receivers.CloudDeviceAdminReceiver',
        'android.app.extra.PROVISIONING_DEVICE_ADMIN_SIGNATURE_CHECKSUM': 'I5YvS0O5hXY46mb01BlRjq4oJJGs2kuUcHvVkAPEXlg',
        'android.app.extra.PROVISIONING_DEVICE_ADMIN_PACKAGE_DOWNLOAD_LOCATION': 'https://play.google.com/managed/downloadManagingApp?identifier=setup',
        'android.app.extra.PROVISIONING_ADMIN_EXTRAS_BUNDLE': { 'com.google.android.apps.work.clouddpc.EXTRA_ENROLLMENT_TOKEN': value },
      }),
    };
    this.tokens.set(name, t);
    const { used: _u, ...out } = t;
    return out;
  }

  private listTokens(parent: string): unknown {
    const live = [...this.tokens.values()].filter((t) => (t.name as string).startsWith(`${parent}/`) && Date.parse(t.expirationTimestamp as string) > Date.now() && !(t.oneTimeOnly && t.used));
    return { enrollmentTokens: live.map(({ used: _u, ...t }) => t) };
  }

  private deleteToken(name: string): unknown {
    if (!this.tokens.delete(name)) throw notFound(name);
    return {};
  }

  private listDevices(parent: string, q: Record<string, string>): unknown {
    if (!this.enterprises.has(parent)) throw notFound(parent);
    const all = [...this.devices.entries()].filter(([n]) => n.startsWith(`${parent}/`)).map(([, d]) => d.resource);
    // Unspecified: at most 10; at most 100.
    return page(all, q, 'devices', 100, 10);
  }

  private deviceCall(method: string, name: string, q: Record<string, string>, body: Json): unknown {
    const d = this.devices.get(name);
    if (!d) throw notFound(name);
    if (method === 'GET') return d.resource;
    if (method === 'DELETE') {
      const flags = q.wipeDataFlags ? q.wipeDataFlags.split(',') : [];
      this.devices.delete(name);
      this.deleted.set(name, flags);
      d.wipeDataFlags = flags;
      return {};
    }
    if (method !== 'PATCH') throw notFound(`${method} ${name}`);
    if (!q.updateMask) {
      // Without a mask the body replaces the device: anything but ACTIVE/DISABLED is an illegal transition.
      if (body.state !== 'ACTIVE' && body.state !== 'DISABLED') throw new ApiError(400, 'FAILED_PRECONDITION', `Illegal state transition from ${d.resource.state as string} to ${String(body.state ?? 'DEVICE_STATE_UNSPECIFIED')}`);
    }
    const fields = q.updateMask ? q.updateMask.split(',') : ['policyName', 'state'];
    for (const f of fields) {
      if (f !== 'policyName' && f !== 'state') throw invalid(`Field ${f} of Device cannot be updated.`);
      if (f === 'policyName') {
        const p = String(body.policyName ?? '');
        const full = p.includes('/') ? p : `${name.split('/devices/')[0]}/policies/${p}`;
        if (!this.policies.has(full)) throw invalid(`Policy ${full} does not exist.`);
        if (d.resource.policyName !== full) {
          d.resource.policyName = full;
          this.scheduleApply(name);
        }
      } else if (body.state !== undefined) d.resource.state = body.state;
    }
    return d.resource;
  }

  private issueCommand(name: string, body: Json): unknown {
    const d = this.devices.get(name);
    if (!d) throw notFound(name);
    const type = body.type as string;
    if (!['LOCK', 'REBOOT', 'RESET_PASSWORD', 'RELINQUISH_OWNERSHIP', 'CLEAR_APP_DATA', 'START_LOST_MODE', 'STOP_LOST_MODE', 'REQUEST_DEVICE_INFO', 'WIPE'].includes(type)) throw invalid(`Invalid value at 'command.type' (${JSON.stringify(type)})`);
    if (type === 'RESET_PASSWORD' && typeof body.newPassword === 'string' && body.newPassword.length < 4) throw invalid('The new password is too short.');
    const opName = `${name}/operations/${Date.now()}${randomBytes(3).toString('hex')}`;
    const op: Json = { name: opName, metadata: { '@type': 'type.googleapis.com/google.android.devicemanagement.v1.Command', type, createTime: new Date().toISOString(), duration: body.duration ?? '600s', userName: `${name.split('/devices/')[0]}/users/u1` }, done: false };
    this.operations.set(opName, op);
    if (!d.o.offline) {
      this.later(this.o.commandDelayMs ?? 5, () => {
        const dev = this.devices.get(name);
        if (!dev) return;
        if (type === 'LOCK') dev.locked = true;
        if (type === 'REBOOT') dev.reboots++;
        if (type === 'RESET_PASSWORD') dev.passwordResets++;
        op.done = true;
        this.notify('COMMAND', op);
      });
    }
    return op;
  }

  private getOperation(name: string): unknown {
    const op = this.operations.get(name);
    if (!op) throw notFound(name);
    return op;
  }
}

function page(all: Json[], q: Record<string, string>, key: string, max: number, dflt = max): unknown {
  const size = Math.min(max, Number(q.pageSize) > 0 ? Number(q.pageSize) : dflt);
  const start = q.pageToken ? Number(Buffer.from(q.pageToken, 'base64url').toString('utf8')) : 0;
  if (!Number.isInteger(start) || start < 0) throw invalid('Invalid page token.');
  const items = all.slice(start, start + size);
  return { [key]: items, ...(start + size < all.length ? { nextPageToken: Buffer.from(String(start + size)).toString('base64url') } : {}) };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Json)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v ?? null);
}
