// A simulated Windows PC enrolling, on the real wire: the discovery probe,
// Discover, (federated: the authentication page) GetPolicies, a fresh RSA key
// and PKCS#10, RequestSecurityToken, and the provisioning document read back
// into what the OMA-DM side needs. Its SOAP is built the way the Windows
// enrollment client builds it (namespaces s/a/u/wsse/wst/ac declared on the
// envelope, urn:uuid MessageIDs, ReplyTo anonymous, To with mustUnderstand,
// the AdditionalContext items Windows 11 sends).
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import forge from 'node-forge';
import { toBuffer, toDer } from '../../pki/asn1.js';
import { DISCOVER_ACTION, DISCOVER_NS, readDiscoverResponse, type AuthPolicy, type DiscoverResult } from '../discovery.js';
import { readProvisioningDoc, readRenewalDoc, thumbprint, type PollSchedule, type ProvisionedSettings } from '../provisioning.js';
import { BASE64_BINARY, NS, PASSWORD_TEXT, USER_TOKEN_TYPE, readFault, requestHeader, type ReadFault } from '../soap.js';
import { ENROLLMENT_TOKEN_TYPE, ISSUE, PKCS10_TYPE, PKCS7_TYPE, RENEW, RST_ACTION, readRstr } from '../wstep.js';
import { GET_POLICIES_ACTION, XCEP_NS, readGetPoliciesResponse, type PolicyChoice } from '../xcep.js';
import { el, parseXml, writeXml, type XmlNode } from '../xml.js';

export interface WindowsEnrollClientOptions {
  /** Where discovery starts: a base URL (https://enterpriseenrollment.example.com) or the Discovery.svc URL itself. */
  discoveryUrl: string;
  /** What the user types into Settings. */
  email: string;
  /** OnPremise: the sign-in's user name (default: the email) and password. */
  username?: string;
  password?: string;
  /** Federated: the code typed into the authentication page. */
  enrollmentCode?: string;
  /** Default a random GUID, upper-case, as Windows sends it. */
  deviceId?: string;
  /** Default 64 hex characters derived from the device id. */
  hwDevId?: string;
  deviceName?: string;
  osVersion?: string;
  /** The product type ([MS-MDE2] 2.2.9.6): 48 is Windows Pro. */
  osEdition?: number;
  /** Full (a user's enrollment, the default) or Device. */
  enrollmentType?: 'Full' | 'Device';
  /** The CSR's common name; Windows' can carry '!' in a PrintableString. */
  commonName?: string;
  requestVersion?: string;
  /** Trusted CA certificates (PEM) for an https server with a private CA. */
  ca?: string | Buffer;
  /** Sees every HTTP answer (tests assert on headers). */
  onResponse?: (step: EnrollStep, res: HttpAnswer) => void;
}

export type EnrollStep = 'probe' | 'discover' | 'auth-page' | 'auth-submit' | 'policy' | 'enroll' | 'renew';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** What the OMA-DM side of the simulated device needs after enrollment. */
export interface EnrolledWindowsDevice {
  deviceId: string;
  hwDevId: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  /** ADDR of the w7 APPLICATION: …/ManagementServer/MDM.svc. */
  managementUrl: string;
  providerId: string;
  poll: PollSchedule;
  /** Everything the provisioning document said. */
  provisioned: ProvisionedSettings;
  discovery: DiscoverResult;
  policy: PolicyChoice;
}

/** The enrollment was refused: by a SOAP fault (`fault`), or an HTTP answer that is not one. */
export class WindowsEnrollError extends Error {
  override name = 'WindowsEnrollError';
  constructor(
    readonly step: EnrollStep,
    message: string,
    readonly status?: number,
    readonly fault?: ReadFault,
  ) {
    super(message);
  }
}

const ENVELOPE_NS = { 'xmlns:s': NS.s, 'xmlns:a': NS.a, 'xmlns:u': NS.u, 'xmlns:wsse': NS.wsse, 'xmlns:wst': NS.wst, 'xmlns:ac': NS.ac };
const APP_RETURN_URL = 'ms-app://windows.immersivecontrolpanel';

function request(url: string, o: { method: 'GET' | 'POST'; body?: string; contentType?: string; ca?: string | Buffer; cert?: string; key?: string }): Promise<HttpAnswer> {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  const body = o.body === undefined ? undefined : Buffer.from(o.body, 'utf8');
  return new Promise((resolve, reject) => {
    const req = lib.request(
      u,
      {
        method: o.method,
        headers: {
          'user-agent': 'ENROLLClient',
          'cache-control': 'no-cache',
          ...(body ? { 'content-type': o.contentType ?? 'application/soap+xml; charset=utf-8', 'content-length': String(body.length) } : {}),
        },
        ...(o.ca ? { ca: o.ca } : {}),
        ...(o.cert && o.key ? { cert: o.cert, key: o.key } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A SOAP exchange: the envelope posted, the response body element (or the fault) read back. */
async function soap(step: EnrollStep, url: string, envelope: XmlNode, o: Pick<WindowsEnrollClientOptions, 'ca' | 'onResponse'> & { cert?: string; key?: string }) {
  const res = await request(url, { method: 'POST', body: writeXml(envelope, { declaration: true }), ...(o.ca ? { ca: o.ca } : {}), ...(o.cert && o.key ? { cert: o.cert, key: o.key } : {}) });
  o.onResponse?.(step, res);
  let root;
  try {
    root = parseXml(res.body);
  } catch (e) {
    throw new WindowsEnrollError(step, `${step}: HTTP ${res.status}, not a SOAP answer (${(e as Error).message})`, res.status);
  }
  const fault = readFault(root);
  if (fault) throw new WindowsEnrollError(step, `${step}: fault ${fault.subcode}: ${fault.reason}`, res.status, fault);
  const body = root.children.find((c) => c.name === 'Body')?.children[0];
  if (res.status !== 200 || !body) throw new WindowsEnrollError(step, `${step}: HTTP ${res.status} without a response body`, res.status);
  return { body, root };
}

function securityHeader(credential: { kind: 'username'; username: string; password: string } | { kind: 'token'; token: string }): XmlNode {
  if (credential.kind === 'username') {
    return el(
      'wsse:Security',
      { 's:mustUnderstand': '1' },
      el('wsse:UsernameToken', { 'u:Id': `uuid-${randomUUID()}-4` }, el('wsse:Username', undefined, credential.username), el('wsse:Password', { 'wsse:Type': PASSWORD_TEXT }, credential.password)),
    );
  }
  return el(
    'wsse:Security',
    { 's:mustUnderstand': '1' },
    el('wsse:BinarySecurityToken', { ValueType: USER_TOKEN_TYPE, EncodingType: BASE64_BINARY }, Buffer.from(credential.token, 'utf8').toString('base64')),
  );
}

/** The Discover request Windows sends (MS-MDE2 4.1.1). */
export function discoverEnvelope(o: { to: string; email: string; requestVersion?: string; osEdition?: number; applicationVersion?: string; authPolicies?: AuthPolicy[]; messageId?: string }): XmlNode {
  return el(
    's:Envelope',
    { 'xmlns:a': NS.a, 'xmlns:s': NS.s },
    requestHeader({ action: DISCOVER_ACTION, to: o.to, ...(o.messageId ? { messageId: o.messageId } : {}) }),
    el(
      's:Body',
      undefined,
      el(
        'Discover',
        { xmlns: DISCOVER_NS },
        el(
          'request',
          { 'xmlns:i': NS.xsi },
          el('EmailAddress', undefined, o.email),
          el('RequestVersion', undefined, o.requestVersion ?? '5.0'),
          el('DeviceType', undefined, 'CIMClient_Windows'),
          el('ApplicationVersion', undefined, o.applicationVersion ?? '10.0.22631.2861'),
          el('OSEdition', undefined, String(o.osEdition ?? 48)),
          el('AuthPolicies', undefined, ...(o.authPolicies ?? ['OnPremise', 'Federated']).map((p) => el('AuthPolicy', undefined, p))),
        ),
      ),
    ),
  );
}

/** The GetPolicies request. */
export function getPoliciesEnvelope(o: { to: string; security: XmlNode; messageId?: string }): XmlNode {
  return el(
    's:Envelope',
    ENVELOPE_NS,
    requestHeader({ action: GET_POLICIES_ACTION, to: o.to, security: o.security, ...(o.messageId ? { messageId: o.messageId } : {}) }),
    el(
      's:Body',
      { 'xmlns:xsi': NS.xsi, 'xmlns:xsd': NS.xsd },
      el('GetPolicies', { xmlns: XCEP_NS }, el('client', undefined, el('lastUpdate', { 'xsi:nil': 'true' }), el('preferredLanguage', { 'xsi:nil': 'true' })), el('requestFilter', { 'xsi:nil': 'true' })),
    ),
  );
}

/** The RequestSecurityToken, with the AdditionalContext items Windows 11 sends. */
export function rstEnvelope(o: { to: string; security?: XmlNode; csrDer: Buffer; context: Array<[string, string]>; messageId?: string; renew?: boolean }): XmlNode {
  return el(
    's:Envelope',
    ENVELOPE_NS,
    requestHeader({ action: RST_ACTION, to: o.to, ...(o.security ? { security: o.security } : {}), ...(o.messageId ? { messageId: o.messageId } : {}) }),
    el(
      's:Body',
      undefined,
      el(
        'wst:RequestSecurityToken',
        undefined,
        el('wst:TokenType', undefined, ENROLLMENT_TOKEN_TYPE),
        el('wst:RequestType', undefined, o.renew ? RENEW : ISSUE),
        el('wsse:BinarySecurityToken', { ValueType: o.renew ? PKCS7_TYPE : PKCS10_TYPE, EncodingType: BASE64_BINARY }, o.csrDer.toString('base64')),
        el('ac:AdditionalContext', { xmlns: NS.ac }, ...o.context.map(([name, value]) => el('ac:ContextItem', { Name: name }, el('ac:Value', undefined, value)))),
      ),
    ),
  );
}

/** A PKCS#10 the way Windows makes one: RSA, the policy's hash, a PrintableString CN (which may hold '!'), the OS version attribute. */
export function windowsCsr(o: { commonName: string; keyBits?: number; hash?: 'sha1' | 'sha256'; osVersion?: string }): { csrDer: Buffer; keyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: o.keyBits ?? 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.rsa.setPublicKey(key.n, key.e);
  // PrintableString whatever the characters: forge does not check them, and neither does Windows.
  csr.setSubject([{ shortName: 'CN', value: o.commonName, valueTagClass: forge.asn1.Type.PRINTABLESTRING as unknown as forge.asn1.Class }]);
  // szOID_OS_VERSION (1.3.6.1.4.1.311.13.2.3), an IA5String, as certenroll adds it.
  csr.setAttributes([{ type: '1.3.6.1.4.1.311.13.2.3', value: o.osVersion ?? '10.0.22631.2', valueTagClass: forge.asn1.Type.IA5STRING } as unknown as forge.pki.CertificateField]);
  csr.sign(key, (o.hash === 'sha1' ? forge.md.sha1 : forge.md.sha256).create());
  return { csrDer: toBuffer(toDer(forge.pki.certificationRequestToAsn1(csr))), keyPem };
}

/** Decodes the numeric character references our auth page writes in attribute values. */
const unescapeAttr = (s: string): string => s.replace(/&#(\d+);/g, (_m, n: string) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&');

/**
 * The web authentication broker's part: open the page, submit the code, read
 * the token the end page posts to appru. A browser would run the page's
 * script; the simulator reads the one hidden field instead.
 */
async function federatedToken(authUrl: string, o: WindowsEnrollClientOptions): Promise<string> {
  if (!o.enrollmentCode) throw new WindowsEnrollError('auth-page', 'the server wants federated sign-in and no enrollmentCode was given');
  const u = new URL(authUrl);
  u.searchParams.set('appru', APP_RETURN_URL);
  u.searchParams.set('login_hint', o.email);
  const pageRes = await request(u.toString(), { method: 'GET', ...(o.ca ? { ca: o.ca } : {}) });
  o.onResponse?.('auth-page', pageRes);
  if (pageRes.status !== 200) throw new WindowsEnrollError('auth-page', `auth page: HTTP ${pageRes.status}`, pageRes.status);
  const form = new URLSearchParams({ appru: APP_RETURN_URL, login_hint: o.email, code: o.enrollmentCode });
  const submit = await request(new URL(new URL(authUrl).pathname, authUrl).toString(), { method: 'POST', body: form.toString(), contentType: 'application/x-www-form-urlencoded', ...(o.ca ? { ca: o.ca } : {}) });
  o.onResponse?.('auth-submit', submit);
  const html = submit.body.toString('utf8');
  const action = /<form method="post" action="([^"]*)"/.exec(html)?.[1];
  const token = /name="wresult" value="([^"]*)"/.exec(html)?.[1];
  if (submit.status !== 200 || !token) throw new WindowsEnrollError('auth-submit', 'the authentication page did not hand back a token (wrong code?)', submit.status);
  if (unescapeAttr(action ?? '') !== APP_RETURN_URL) throw new WindowsEnrollError('auth-submit', 'the token was not posted back to appru', submit.status);
  return unescapeAttr(token);
}

/** A Windows PC's enrollment, end to end. */
export async function enrollWindowsDevice(o: WindowsEnrollClientOptions): Promise<EnrolledWindowsDevice> {
  const discoveryUrl = /\/EnrollmentServer\/Discovery\.svc$/i.test(o.discoveryUrl) ? o.discoveryUrl : `${o.discoveryUrl.replace(/\/+$/, '')}/EnrollmentServer/Discovery.svc`;
  const deviceId = o.deviceId ?? randomUUID().toUpperCase();
  const hwDevId = o.hwDevId ?? createHash('sha256').update(`hw:${deviceId}`).digest('hex').toUpperCase();
  const osVersion = o.osVersion ?? '10.0.22631.2861';

  const probe = await request(discoveryUrl, { method: 'GET', ...(o.ca ? { ca: o.ca } : {}) });
  o.onResponse?.('probe', probe);
  if (probe.status !== 200) throw new WindowsEnrollError('probe', `discovery probe: HTTP ${probe.status}`, probe.status);

  const d = await soap('discover', discoveryUrl, discoverEnvelope({ to: discoveryUrl, email: o.email, ...(o.requestVersion ? { requestVersion: o.requestVersion } : {}), ...(o.osEdition ? { osEdition: o.osEdition } : {}), applicationVersion: osVersion }), o);
  const discovery = readDiscoverResponse(d.body);

  let security: XmlNode;
  if (discovery.authPolicy === 'Federated') {
    if (!discovery.authenticationServiceUrl) throw new WindowsEnrollError('discover', 'Federated discovery without an AuthenticationServiceUrl');
    security = securityHeader({ kind: 'token', token: await federatedToken(discovery.authenticationServiceUrl, o) });
  } else if (discovery.authPolicy === 'OnPremise') {
    if (o.password === undefined) throw new WindowsEnrollError('discover', 'the server wants a user name and password and no password was given');
    security = securityHeader({ kind: 'username', username: o.username ?? o.email, password: o.password });
  } else throw new WindowsEnrollError('discover', `auth policy ${discovery.authPolicy} is not simulated`);

  const p = await soap('policy', discovery.enrollmentPolicyServiceUrl, getPoliciesEnvelope({ to: discovery.enrollmentPolicyServiceUrl, security }), o);
  const policy = readGetPoliciesResponse(p.body);

  const { csrDer, keyPem } = windowsCsr({
    commonName: o.commonName ?? `${deviceId}!${o.email}`,
    keyBits: Math.max(2048, policy.minimalKeyLength),
    hash: policy.hashOid === '1.3.14.3.2.26' ? 'sha1' : 'sha256',
    osVersion,
  });
  const deviceName = o.deviceName ?? `DESKTOP-${deviceId.slice(0, 7)}`;
  const context: Array<[string, string]> = [
    ['UXInitiated', 'true'],
    ['HWDevID', hwDevId],
    ['Locale', 'en-US'],
    ['TargetedUserLoggedIn', 'true'],
    ['OSEdition', String(o.osEdition ?? 48)],
    ['DeviceName', deviceName],
    ['MAC', '00-15-5D-01-02-03'],
    ['MAC', '00-15-5D-01-02-04'],
    ['DeviceID', deviceId],
    ['EnrollmentType', o.enrollmentType ?? 'Full'],
    ['DeviceType', 'CIMClient_Windows'],
    ['OSVersion', osVersion],
    ['ApplicationVersion', osVersion],
    ['NotInOobe', 'true'],
  ];
  const e = await soap('enroll', discovery.enrollmentServiceUrl, rstEnvelope({ to: discovery.enrollmentServiceUrl, security, csrDer, context }), o);
  const provisioned = readProvisioningDoc(readRstr(e.body));

  // What Windows installs, checked as Windows would: the names are the certificates' thumbprints.
  const certDer = Buffer.from(provisioned.client.der, 'base64');
  const [rootThumb, rootB64] = Object.entries(provisioned.roots)[0] ?? [];
  if (!rootB64 || thumbprint(Buffer.from(rootB64, 'base64')) !== rootThumb) throw new WindowsEnrollError('enroll', 'the root certificate is not named by its thumbprint');
  if (thumbprint(certDer) !== provisioned.client.thumbprint) throw new WindowsEnrollError('enroll', 'the client certificate is not named by its thumbprint');
  const cert = new X509Certificate(certDer);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new WindowsEnrollError('enroll', 'the issued certificate is not for the key the CSR carried');
  const dmProvider = provisioned.providerId;
  const managementUrl = provisioned.application.ADDR ?? '';
  if (!managementUrl) throw new WindowsEnrollError('enroll', 'the provisioning document names no management server');
  return {
    deviceId,
    hwDevId,
    certPem: cert.toString(),
    keyPem,
    caPem: new X509Certificate(Buffer.from(rootB64, 'base64')).toString(),
    managementUrl,
    providerId: dmProvider,
    poll: provisioned.poll,
    provisioned,
    discovery,
    policy,
  };
}

export interface RenewOptions {
  /** The Enrollment.svc URL (the ServerURL of CertificateStore/My/WSTEP/Renew). */
  enrollmentUrl: string;
  /** The current certificate and its key: they sign the request and authenticate the TLS connection. */
  certPem: string;
  keyPem: string;
  deviceId?: string;
  ca?: string | Buffer;
  onResponse?: (step: EnrollStep, res: HttpAnswer) => void;
}

/**
 * Automatic renewal (ROBO) as Windows does it: a new key and PKCS#10, wrapped
 * in a PKCS#7 signed with the current certificate, sent over a TLS
 * connection authenticated by that same certificate.
 */
export async function renewWindowsCertificate(o: RenewOptions): Promise<{ certPem: string; keyPem: string; store: string }> {
  const current = forge.pki.certificateFromPem(o.certPem);
  const cn = current.subject.getField('CN') as { value?: string } | null;
  const { csrDer, keyPem } = windowsCsr({ commonName: cn?.value ?? 'renewal' });
  const p7 = forge.pkcs7.createSignedData();
  p7.content = forge.util.createBuffer(csrDer.toString('binary'));
  p7.addCertificate(current);
  p7.addSigner({
    key: forge.pki.privateKeyFromPem(o.keyPem),
    certificate: current,
    digestAlgorithm: forge.pki.oids.sha256!,
    authenticatedAttributes: [{ type: forge.pki.oids.contentType!, value: forge.pki.oids.data! }, { type: forge.pki.oids.messageDigest! }, { type: forge.pki.oids.signingTime!, value: new Date() as unknown as string }],
  });
  p7.sign();
  const p7Der = toBuffer(toDer(p7.toAsn1()));
  const context: Array<[string, string]> = [['DeviceType', 'CIMClient_Windows'], ['ApplicationVersion', '10.0.22631.2861'], ...(o.deviceId ? [['DeviceID', o.deviceId] as [string, string]] : [])];
  const e = await soap('renew', o.enrollmentUrl, rstEnvelope({ to: o.enrollmentUrl, csrDer: p7Der, context, renew: true }), { ...(o.ca ? { ca: o.ca } : {}), ...(o.onResponse ? { onResponse: o.onResponse } : {}), cert: o.certPem, key: o.keyPem });
  const doc = readRenewalDoc(readRstr(e.body));
  const der = Buffer.from(doc.der, 'base64');
  if (thumbprint(der) !== doc.thumbprint) throw new WindowsEnrollError('renew', 'the renewed certificate is not named by its thumbprint');
  const cert = new X509Certificate(der);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new WindowsEnrollError('renew', 'the renewed certificate is not for the new key');
  return { certPem: cert.toString(), keyPem, store: doc.store };
}
