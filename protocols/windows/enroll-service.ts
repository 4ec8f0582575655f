// Windows enrollment as a service: who may enroll (the credentials an admin
// issues, stored as enrollment challenges), what the discovery and policy
// services answer, and an enrollment — CSR checked, certificate issued by
// Muster's CA, and every store write (credential used up, device, identity,
// enrollment state, audit) in one transaction. Pure of HTTP: the routes
// (enroll-routes.ts) decode and encode around it.
import { X509Certificate, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import forge from 'node-forge';
import { ENROLLMENT_GROUP_ATTRIBUTE, isEnrollmentGroup } from '../../controller/policy/selector.js';
import { challengeDigest } from '../../controller/store/challenges.js';
import type { Store } from '../../controller/store/index.js';
import { IdentityRefused, deviceLifecycle } from '../../controller/devices/lifecycle.js';
import { CertificateAuthority, sha256Fingerprint } from '../pki/ca.js';
import { CsrError, attributeText, readCsr, readRenewalRequest, type WindowsCsr } from './csr.js';
import { enrollmentVersionFor, type AuthPolicy, type DiscoverRequest, type DiscoverResult } from './discovery.js';
import { DEFAULT_POLL, checkPollSchedule, renewalDoc, thumbprint, writeProvisioningDoc, type PollSchedule } from './provisioning.js';
import { SoapFault, USER_TOKEN_TYPE, type SecurityToken } from './soap.js';
import type { EnrollmentPolicy } from './xcep.js';
import type { EnrollmentContext, RstRequest } from './wstep.js';

/** store.challenges purpose of the credentials an admin issues. */
export const CREDENTIAL_PURPOSE = 'windows-enroll';
/** store.challenges purpose of the tokens the federated page hands out. */
export const TOKEN_PURPOSE = 'windows-enroll-token';
/** Prefixes a federated token; '_' is outside base64, so a token sent raw is told from one sent encoded. */
export const TOKEN_PREFIX = 'muster_wab_';
/** The attribute the credential's group becomes; selectors match it as muster.dev/enrollment-group. */
export const GROUP_ATTRIBUTE = ENROLLMENT_GROUP_ATTRIBUTE;

export const PATHS = {
  discovery: '/EnrollmentServer/Discovery.svc',
  policy: '/EnrollmentServer/Policy.svc',
  enrollment: '/EnrollmentServer/Enrollment.svc',
  auth: '/EnrollmentServer/Auth',
  management: '/ManagementServer/MDM.svc',
} as const;

export interface WindowsEnrollLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface WindowsEnrollConfig {
  /** The https base URL devices reach this server at (https://mdm.example.com); every URL they are given is built on it. */
  publicUrl: string;
  /** Which authentication discovery advertises. Default OnPremise (user name and password). */
  authPolicy?: 'OnPremise' | 'Federated';
  /** PROVIDER-ID and DMClient provider. Default "Muster". */
  providerId?: string;
  /** The name Settings shows for the management account. Default "Muster". */
  providerName?: string;
  /** Days an issued certificate is valid. Default 365. */
  validityDays?: number;
  /** Automatic certificate renewal (CertificateStore/My/WSTEP/Renew). Default on, 42 days before expiry, retried every 4 days. */
  renewal?: { robo?: boolean; periodDays?: number; retryIntervalDays?: number } | false;
  /** The DMClient poll schedule given at enrollment. Default DEFAULT_POLL. */
  poll?: PollSchedule;
  /** Smallest RSA key accepted (and the policy's minimalKeyLength). Default 2048. */
  minKeyBits?: number;
  /** How long a federated page's token stays usable. Default 1 hour. */
  tokenTtlMs?: number;
  /** The domain of credential user names when an issue does not give one. Default: publicUrl's host without "enterpriseenrollment.". */
  credentialDomain?: string;
}

/** Who a request was authenticated as. */
export interface EnrollmentCredential {
  username: string;
  group?: string;
  note?: string;
  oneTime: boolean;
  /** The device an admin issued it for: it enrolls only that DeviceID, and may replace that device's identity. */
  forDevice?: string;
  /** SHA-256 of the credential (its store key). */
  credentialSha256: string;
  /** SHA-256 of the federated token it came with, if any. */
  tokenSha256?: string;
  via: 'username' | 'token';
}

export interface EnrollmentResult {
  deviceId: string;
  certSha256: string;
  /** The wap-provisioningdoc XML. */
  provisioningDoc: string;
  /** RequestID of the RSTR. */
  requestId: string;
}

export interface WindowsEnrollService {
  readonly urls: { discovery: string; policy: string; enrollment: string; auth: string; management: string };
  readonly providerId: string;
  discover(req: DiscoverRequest): DiscoverResult;
  /** The XCEP policy, once the credential checks out (uses nothing up). */
  policy(security: SecurityToken | undefined): Promise<EnrollmentPolicy>;
  /**
   * An enrollment: the credential (used up when one-time), the CSR, the
   * device's context. A renewal (RequestType Renew) is authenticated by the
   * certificate being renewed, which the device presents on the TLS
   * connection (`clientCertDer`).
   */
  enroll(security: SecurityToken | undefined, rst: RstRequest, o?: { clientCertDer?: Buffer | undefined }): Promise<EnrollmentResult>;
  /** The federated page's check of an enrollment code; the token it hands to the device. */
  federatedLogin(code: string, loginHint?: string): Promise<string | undefined>;
  /** Issues a credential with this service's domain and discovery URL. */
  issueCredential(o?: Omit<IssueCredentialOptions, 'domain' | 'discoveryUrl'>): Promise<WindowsCredential>;
}

export interface WindowsEnrollServiceOptions {
  store: Store;
  ca: CertificateAuthority;
  config: WindowsEnrollConfig;
  log: WindowsEnrollLog;
  now?: () => Date;
}

// ------------------------------------------------------------------ credentials

interface CredentialDetails {
  username: string;
  group: string | null;
  note: string | null;
  oneTime: boolean;
  /** Absent in credentials issued before device-bound ones existed. */
  forDevice?: string | null;
}

interface TokenDetails {
  credential: string;
  username: string;
}

export interface IssueCredentialOptions {
  /** The domain part of the user name; Windows discovers enterpriseenrollment.<domain>. */
  domain: string;
  /** The local part; default "enroll-<random>". */
  user?: string;
  /** Devices enrolled with it get the attribute enrollment-group (muster.dev/enrollment-group in selectors). */
  group?: string;
  note?: string;
  /** Default 7 days. */
  ttlMs?: number;
  /** One device (default), or any number until it expires. */
  oneTime?: boolean;
  /**
   * For one existing device (its DeviceID): the credential enrolls only that
   * device and may replace its current identity (a reinstalled PC). One-time.
   */
  device?: string;
  /** Handed back for the person enrolling (the Discovery.svc URL, when enterpriseenrollment.<domain> does not point here). */
  discoveryUrl?: string;
}

export interface WindowsCredential {
  /** The "email address" Settings asks for, and the user name of the sign-in. */
  username: string;
  /** The secret: the password of the sign-in, or the code the federated page asks for. */
  password: string;
  discoveryUrl?: string;
  expiresAt: Date;
  oneTime: boolean;
}

/** A DNS domain name: the part of enrollment email addresses Windows discovers the server from. */
export const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
const LOCAL_PART = /^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$/;

/**
 * Issues an enrollment credential: an email-like user name (its domain is
 * what Windows discovers the server by) and a random password, valid for
 * `ttlMs`. Only the password's SHA-256 is stored.
 */
export async function issueWindowsCredential(store: Store, o: IssueCredentialOptions): Promise<WindowsCredential> {
  const domain = o.domain.toLowerCase();
  if (!DOMAIN.test(domain)) throw new Error(`"${o.domain}" is not a domain name`);
  const user = (o.user ?? `enroll-${randomBytes(4).toString('hex')}`).toLowerCase();
  if (!LOCAL_PART.test(user)) throw new Error(`"${o.user}" cannot be the user part of an email address`);
  if (o.group !== undefined && !isEnrollmentGroup(o.group)) throw new Error(`group "${o.group}" is not a label value (lower-case letters, digits and -)`);
  const ttlMs = o.ttlMs ?? 7 * 86_400_000;
  if (!(ttlMs > 0)) throw new Error('ttlMs must be positive');
  if (o.device !== undefined && !ID.test(o.device)) throw new Error(`"${o.device}" is not a Windows DeviceID`);
  if (o.device !== undefined && o.oneTime === false) throw new Error('a credential for one device is one-time');
  const oneTime = o.oneTime ?? true;
  const username = `${user}@${domain}`;
  const details: CredentialDetails = { username, group: o.group ?? null, note: o.note ?? null, oneTime, forDevice: o.device ?? null };
  const password = await store.challenges.issue(CREDENTIAL_PURPOSE, ttlMs, details);
  await store.audit.append({ actor: 'controller', action: 'enrollment.credential', subject: 'windows', details: { username, group: details.group, note: details.note, oneTime, forDevice: details.forDevice, credentialSha256: challengeDigest(password), ttlMs } });
  return { username, password, expiresAt: new Date(Date.now() + ttlMs), oneTime, ...(o.discoveryUrl ? { discoveryUrl: o.discoveryUrl } : {}) };
}

/** Constant-time equality of two user names, case-insensitively (an email's case carries no meaning here). */
function sameUser(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s.trim().toLowerCase(), 'utf8').digest();
  return timingSafeEqual(h(a), h(b));
}

const detailsOf = (d: unknown): CredentialDetails | undefined => {
  const x = d as Partial<CredentialDetails> | null;
  return x && typeof x.username === 'string' && typeof x.oneTime === 'boolean' ? (x as CredentialDetails) : undefined;
};

// ------------------------------------------------------------------ the service

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** The protocol recorded on identities this service issues. */
const WSTEP = 'windows-wstep';
const DAY_S = 86_400;
// Microsoft's RequestID is the CA's request number; Muster's CA has none to give.
const REQUEST_ID = '0';

export function createWindowsEnrollService(o: WindowsEnrollServiceOptions): WindowsEnrollService {
  const { store, ca, log } = o;
  const c = o.config;
  const lifecycle = deviceLifecycle(store, { now: () => now(), log });
  const now = o.now ?? (() => new Date());
  const base = c.publicUrl.replace(/\/+$/, '');

  /** Reads a request (a refused one is a CertificateRequest fault) and issues its client certificate from the CA. */
  const issueFor = (read: () => WindowsCsr) => {
    let csr: WindowsCsr;
    try {
      csr = read();
    } catch (e) {
      if (e instanceof CsrError) throw new SoapFault('CertificateRequest', e.message);
      throw e;
    }
    const cert = ca.issue({ csr: csr.request, validityDays, ekus: ['clientAuth'] });
    const certDer = CertificateAuthority.toDer(cert);
    return { csr, cert, certDer, certSha256: sha256Fingerprint(certDer) };
  };
  if (!/^https?:\/\//.test(base)) throw new Error(`publicUrl "${c.publicUrl}" is not an http(s) URL`);
  const urls = {
    discovery: base + PATHS.discovery,
    policy: base + PATHS.policy,
    enrollment: base + PATHS.enrollment,
    auth: base + PATHS.auth,
    management: base + PATHS.management,
  };
  const providerId = c.providerId ?? 'Muster';
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/.test(providerId)) throw new Error(`providerId "${providerId}" must be letters, digits, space, . _ -`);
  const authPolicy: AuthPolicy = c.authPolicy ?? 'OnPremise';
  const validityDays = c.validityDays ?? 365;
  const renewal = c.renewal === false ? undefined : { robo: c.renewal?.robo ?? true, periodDays: c.renewal?.periodDays ?? 42, retryIntervalDays: c.renewal?.retryIntervalDays ?? 4 };
  if (!(validityDays >= 1)) throw new Error('validityDays must be at least 1');
  if (renewal && !(renewal.periodDays >= 1 && renewal.periodDays < validityDays && renewal.retryIntervalDays >= 1)) throw new Error('renewal: periodDays must be from 1 to less than validityDays, retryIntervalDays at least 1');
  const poll = checkPollSchedule(c.poll ?? DEFAULT_POLL);
  const minKeyBits = c.minKeyBits ?? 2048;
  const domain = c.credentialDomain ?? new URL(base).hostname.replace(/^enterpriseenrollment\./i, '');
  const caFingerprint = sha256Fingerprint(ca.certDer);

  const policy: EnrollmentPolicy = {
    // Stable for this CA, opaque as XCEP wants it.
    policyId: `{${caFingerprint.slice(0, 8)}-${caFingerprint.slice(8, 12)}-${caFingerprint.slice(12, 16)}-${caFingerprint.slice(16, 20)}-${caFingerprint.slice(20, 32)}}`.toUpperCase(),
    policyFriendlyName: `${c.providerName ?? providerId} device enrollment`,
    templateName: 'MusterDevice',
    // A UUID-derived OID (ITU-T X.667, arc 2.25): needs no registration.
    templateOid: '2.25.173017914722066519958209530512935003237',
    validitySeconds: validityDays * DAY_S,
    renewalSeconds: (renewal?.periodDays ?? 42) * DAY_S,
    minimalKeyLength: minKeyBits,
    keySpec: 1,
    majorRevision: 1,
    minorRevision: 0,
  };

  const refused = (why: string): SoapFault => new SoapFault('Authentication', why);

  /** The credential behind a request's security header; uses nothing up. */
  async function authenticate(security: SecurityToken | undefined): Promise<EnrollmentCredential> {
    if (!security) throw new SoapFault('InvalidSecurity', 'the request carries no credential (wsse:Security)');
    if (security.kind === 'username') {
      const rec = await store.challenges.peek(security.password, CREDENTIAL_PURPOSE);
      const d = detailsOf(rec?.details);
      // One answer for every way it can be wrong: nothing to learn from the fault.
      if (!d || !sameUser(d.username, security.username)) throw refused('the user name or password is not valid, or has expired or been used');
      return { username: d.username, oneTime: d.oneTime, credentialSha256: challengeDigest(security.password), via: 'username', ...(d.group ? { group: d.group } : {}), ...(d.note ? { note: d.note } : {}), ...(d.forDevice ? { forDevice: d.forDevice } : {}) };
    }
    if (security.valueType !== USER_TOKEN_TYPE) throw new SoapFault('InvalidSecurity', `a BinarySecurityToken of type ${security.valueType || '(none)'} is not an enrollment user token`);
    const token = security.token.startsWith(TOKEN_PREFIX) ? security.token.slice(TOKEN_PREFIX.length) : '';
    const t = token ? await store.challenges.peek(token, TOKEN_PURPOSE) : undefined;
    const td = t?.details as Partial<TokenDetails> | undefined;
    const rec = typeof td?.credential === 'string' ? await store.challenges.peek({ sha256: td.credential }, CREDENTIAL_PURPOSE) : undefined;
    const d = detailsOf(rec?.details);
    if (!d || !td?.credential) throw refused('the sign-in token is not valid, or has expired or been used');
    return { username: d.username, oneTime: d.oneTime, credentialSha256: td.credential, tokenSha256: challengeDigest(token), via: 'token', ...(d.group ? { group: d.group } : {}), ...(d.note ? { note: d.note } : {}), ...(d.forDevice ? { forDevice: d.forDevice } : {}) };
  }

  /** Automatic renewal (ROBO): the current certificate vouches for the new one. */
  async function renew(rst: RstRequest, presented: Buffer | undefined): Promise<EnrollmentResult> {
    const notEligible = (why: string, subcode: 'Authentication' | 'Authorization' = 'Authentication') => new SoapFault(subcode, why, 'NotEligibleToRenew');
    if (!renewal) throw notEligible('this server does not renew certificates: enroll the device again', 'Authorization');
    if (!presented) throw notEligible('a renewal must come with the current device certificate (TLS client authentication)');
    let current: X509Certificate;
    try {
      current = new X509Certificate(presented);
    } catch {
      throw notEligible('the presented device certificate cannot be read');
    }
    const problem = ca.checkIssued(current);
    if (problem) throw notEligible(`the presented device certificate is ${problem}`);
    const currentSha256 = sha256Fingerprint(presented);
    const held = await lifecycle.check(currentSha256, { platform: 'windows' });
    if (!held.ok) {
      if (held.reason === 'other-platform') {
        const other = await store.identities.get(currentSha256);
        await lifecycle.refused({ ...(other?.deviceId ? { deviceId: other.deviceId } : {}), reason: 'other-platform', platform: other?.platform ?? 'windows', certSha256: currentSha256, actor: 'wstep', details: { message: 'WSTEP renewal signed with another platform\'s identity' } });
      }
      throw notEligible(`the presented certificate is not a current Windows device identity: ${held.message}`);
    }
    const deviceId = held.deviceId;
    // DeviceIDs are GUIDs whose case can differ between clients.
    if (rst.context.deviceId && rst.context.deviceId.toLowerCase() !== deviceId.toLowerCase()) {
      // One PC's certificate renewing for another's DeviceID is a claim on that PC: audited as every takeover attempt is.
      await lifecycle.refused({ reason: 'other-device', deviceId: rst.context.deviceId.slice(0, 128), platform: 'windows', certSha256: currentSha256, actor: 'wstep', details: { message: 'renewal', boundTo: deviceId } });
      throw notEligible(`the certificate belongs to device ${deviceId}, not ${rst.context.deviceId}`, 'Authorization');
    }
    const enrollment = await store.devices.getEnrollment(deviceId);
    if (enrollment?.platform !== 'windows' || enrollment.status !== 'enrolled') throw notEligible(`device ${deviceId} is not an enrolled Windows device`, 'Authorization');
    if (rst.tokenType !== 'pkcs7') throw new SoapFault('MessageFormat', 'a Renew request carries a PKCS#7 signed with the current certificate');
    const { csr, cert, certDer, certSha256 } = issueFor(() => readRenewalRequest(rst.token, presented, { minKeyBits }));
    const certStore = enrollment.state.certStore === 'System' ? 'System' : 'User';
    await store.transaction(async (tx) => {
      // The current certificate stays valid until it expires: if this answer is lost, the device can renew again with it.
      await lifecycle.renew(currentSha256, { certSha256, platform: 'windows', protocol: WSTEP, serialNumber: cert.serialNumber, subject: csr.subject, notAfter: cert.validity.notAfter }, `device:${deviceId}`, tx);
      await store.devices.patchEnrollmentState(deviceId, { certSha256, certThumbprint: thumbprint(certDer), renewedAt: now().toISOString() }, tx);
    });
    log.info('windows device certificate renewed', { deviceId, certSha256, renewalOf: currentSha256 });
    return { deviceId, certSha256, provisioningDoc: renewalDoc({ caDer: ca.certDer, certDer, certStore, providerId }), requestId: REQUEST_ID };
  }

  return {
    urls,
    providerId,

    discover(req) {
      if (!req.authPolicies.includes(authPolicy)) {
        throw new SoapFault('Authorization', `this server enrolls with ${authPolicy} authentication, which this device does not offer (${req.authPolicies.join(', ') || 'none'})`, 'NotSupported');
      }
      return {
        authPolicy,
        enrollmentVersion: enrollmentVersionFor(req.requestVersion),
        enrollmentPolicyServiceUrl: urls.policy,
        enrollmentServiceUrl: urls.enrollment,
        ...(authPolicy === 'Federated' ? { authenticationServiceUrl: urls.auth } : {}),
      };
    },

    async policy(security) {
      await authenticate(security);
      return policy;
    },

    async federatedLogin(code, loginHint) {
      const rec = await store.challenges.peek(code.trim(), CREDENTIAL_PURPOSE);
      const d = detailsOf(rec?.details);
      if (!d) {
        log.warn('windows federated sign-in refused', { loginHint: loginHint?.slice(0, 320) });
        return undefined;
      }
      // Never outlives the credential it stands for.
      const ttl = Math.max(1000, Math.min(c.tokenTtlMs ?? 3_600_000, rec!.expiresAt.getTime() - Date.now()));
      const token = await store.challenges.issue(TOKEN_PURPOSE, ttl, { credential: challengeDigest(code.trim()), username: d.username } satisfies TokenDetails);
      log.info('windows federated sign-in', { username: d.username });
      return TOKEN_PREFIX + token;
    },

    issueCredential(opts = {}) {
      return issueWindowsCredential(store, { ...opts, domain, discoveryUrl: urls.discovery });
    },

    async enroll(security, rst, opts = {}) {
      if (rst.requestType === 'renew') return renew(rst, opts.clientCertDer);
      const who = await authenticate(security);
      if (rst.tokenType !== 'pkcs10') throw new SoapFault('MessageFormat', 'an Issue request carries a PKCS#10');
      const ctx = rst.context;
      const sent = ctx.deviceId?.trim();
      if (!sent || !ID.test(sent)) throw new SoapFault('MessageFormat', 'the request has no usable DeviceID in its AdditionalContext', 'InvalidEnrollmentData');
      // DeviceIDs are GUIDs whose case can differ between clients: the id a PC first enrolled with stays its id, so
      // another spelling of it is the same device (and the same claim), never a second record.
      const deviceId = (await store.devices.canonicalId(sent, 'windows')) ?? sent;
      const hwDevId = ctx.hwDevId?.trim();
      if (hwDevId !== undefined && !ID.test(hwDevId)) throw new SoapFault('MessageFormat', 'HWDevID is not an identifier', 'InvalidEnrollmentData');
      // Decided before anything is issued: a refused takeover leaves the live PC, and the credential, as they were.
      const takeover = (reason: Parameters<typeof lifecycle.refused>[0]['reason'], message: string) =>
        lifecycle.refused({ reason, deviceId, platform: 'windows', actor: 'wstep', details: { user: who.username, via: who.via, credentialSha256: who.credentialSha256 } }).then(() => new SoapFault('Authorization', `device ${deviceId} cannot be enrolled with this credential: ${message}`));
      const claimant = { platform: 'windows' as const, ...(who.forDevice ? { forDevice: who.forDevice } : {}) };
      const decision = await lifecycle.decide(claimant, deviceId, 'windows');
      if (!decision.ok) throw await takeover(decision.reason, decision.message);
      const { csr, cert, certDer, certSha256 } = issueFor(() => readCsr(rst.token, { minKeyBits }));
      const enrolledAt = now();
      const certStore = /^device$/i.test(ctx.enrollmentType ?? '') ? 'System' : 'User';
      const enrollmentType = (ctx.enrollmentType ?? 'Full').toLowerCase();

      try {
        await store.transaction(async (tx) => {
          // Used up only by an enrollment that succeeds: this is the transaction that makes it.
          if (who.oneTime && !(await store.challenges.consume({ sha256: who.credentialSha256 }, CREDENTIAL_PURPOSE, tx))) throw refused('this enrollment credential has just been used');
          if (who.tokenSha256 && !(await store.challenges.consume({ sha256: who.tokenSha256 }, TOKEN_PURPOSE, tx))) throw refused('this sign-in token has just been used');
          const r = await lifecycle.enroll(
            {
              device: {
                id: deviceId,
                platform: 'windows',
                identifiers: { 'windows-device-id': deviceId, ...(hwDevId ? { hwdevid: hwDevId } : {}) },
                ...(ctx.osVersion ? { osVersion: ctx.osVersion.slice(0, 64) } : {}),
                // The group is what this enrollment was for: a re-enrollment replaces it (or drops it).
                attributes: { ...attributesOf(ctx, who), 'enrollment-type': enrollmentType, ...(who.group ? { [GROUP_ATTRIBUTE]: who.group } : {}) },
                enrolledAt,
              },
              identity: { certSha256, platform: 'windows', protocol: WSTEP, credential: who.credentialSha256, forDevice: who.forDevice ?? null, serialNumber: cert.serialNumber, subject: csr.subject, notAfter: cert.validity.notAfter },
              enrollment: {
                status: 'enrolled',
                state: { hwDevId: hwDevId ?? null, enrollmentType, certSha256, certThumbprint: thumbprint(certDer), certStore, providerId, user: who.username, enrolledAt: enrolledAt.toISOString() },
              },
              actor: `device:${deviceId}`,
              details: { user: who.username, via: who.via, group: who.group ?? null, oneTime: who.oneTime, enrollmentType, hwDevId: hwDevId ?? null },
            },
            tx,
          );
          await store.audit.append({ actor: 'wstep', action: 'certificate.issue', subject: `certificate/${certSha256}`, details: { serial: cert.serialNumber, subject: csr.subject, device: deviceId, notAfter: cert.validity.notAfter.toISOString(), revokedPrevious: r.revoked, kind: r.kind } }, tx);
        });
      } catch (e) {
        // Another enrollment of this DeviceID won the race between the decision and the transaction.
        if (e instanceof IdentityRefused) throw await takeover(e.reason, e.message);
        throw e;
      }
      log.info('windows device enrolled', { deviceId, user: who.username, subject: csr.subject, certSha256, group: who.group });

      const secret = () => randomBytes(16).toString('base64');
      const provisioningDoc = writeProvisioningDoc({
        caDer: ca.certDer,
        certDer,
        certStore,
        certSubject: searchSubject(cert),
        providerId,
        providerName: c.providerName ?? providerId,
        managementUrl: urls.management,
        entDmid: deviceId,
        ...(ctx.deviceName ? { entDeviceName: ctx.deviceName.slice(0, 255) } : {}),
        upn: who.username,
        poll,
        ...(renewal ? { renewal: { ...renewal, serverUrl: urls.enrollment } } : {}),
        appAuth: { clientSecret: secret(), clientNonce: secret(), serverName: deviceId, serverSecret: secret(), serverNonce: secret() },
      });
      return { deviceId, certSha256, provisioningDoc, requestId: REQUEST_ID };
    },
  };
}

/** Device attributes from the enrollment context (short values only: they are selector material, not storage). */
function attributesOf(ctx: EnrollmentContext, who: EnrollmentCredential): Record<string, string> {
  const short = (v: string | undefined, max = 128): string | undefined => (v && v.length <= max ? v : undefined);
  const a: Record<string, string | undefined> = {
    os: 'windows',
    'enrollment-source': 'mde2',
    'enrollment-user': who.username,
    'device-name': short(ctx.deviceName),
    'os-edition': short(ctx.osEdition?.trim(), 16),
    'windows-device-type': short(ctx.deviceType, 64),
    'application-version': short(ctx.applicationVersion, 64),
    'ux-initiated': short(ctx.uxInitiated?.toLowerCase(), 8),
    locale: short(ctx.locale, 32),
    'enrollment-data': short(ctx.enrollmentData, 256),
  };
  return Object.fromEntries(Object.entries(a).filter((x): x is [string, string] => x[1] !== undefined));
}

/** The issued certificate's subject as Windows names it for SSLCLIENTCERTSEARCHCRITERIA: most specific first ("CN=…,O=…"). */
function searchSubject(cert: forge.pki.Certificate): string {
  return [...cert.subject.attributes]
    .reverse()
    .map((a) => `${a.shortName ?? a.type}=${attributeText(a)}`)
    .join(',');
}
