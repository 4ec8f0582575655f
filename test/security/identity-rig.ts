// One Muster server as `muster serve --apple-topic … --windows --device-auth
// signature --windows-device-auth header --trusted-proxy 127.0.0.1` runs it:
// Apple and Windows mounted on one listener, sharing one device CA, with the
// admin API, the reconciler and the real drivers. Windows devices reach it as
// they would through a TLS-terminating proxy (the proxy checks the TLS client
// certificate and forwards it in a header; here the simulated PC is its own
// proxy, from 127.0.0.1): the plain-HTTP listener lets the Apple simulator's
// fetch and the Windows simulator's node:http share it.
//
// Besides the honest simulators (SimulatedAppleDevice, enrollWindowsDevice,
// SimulatedWindowsDevice), attackers get the same wire pieces with the freedom
// to lie: a SCEP client that keeps its key and certificate, check-ins signed
// with any key, and a Windows renewal signed with any certificate.
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import { PLATFORMS, type Platform } from '../../controller/policy/types.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { buildApp } from '../../controller/server/app.js';
import { createPino, logOf } from '../../controller/server/log.js';
import { trustedProxies } from '../../controller/server/trusted-proxy.js';
import { Controller } from '../../controller/serve/controller.js';
import { createDirSource } from '../../controller/sources/dir-source.js';
import { verifyGithubSignature } from '../../controller/sources/webhook.js';
import type { Store } from '../../controller/store/index.js';
import { createAppleMdm, type AppleMdm } from '../../protocols/apple/index.js';
import { decodePlist, encodePlist } from '../../protocols/apple/plist.js';
import { buildCsr, buildPkiRequest, readCertRep, selfSignedCert } from '../../protocols/apple/scep/client.js';
import { SimulatedAppleDevice } from '../../protocols/apple/simulator.js';
import { OID, readSignedData } from '../../protocols/apple/scep/cms.js';
import { algorithm, ctx, int, oid, octets, parseDer, seq, set, toBin, toBuffer, toDer } from '../../protocols/pki/asn1.js';
import { generateCa, type CertificateAuthority } from '../../protocols/pki/ca.js';
import { createSimulatedDriver } from '../../protocols/simulated/driver.js';
import { createWindowsMdm, type WindowsMdm } from '../../protocols/windows/index.js';
import { enrollWindowsDevice, getPoliciesEnvelope, rstEnvelope, windowsCsr, type EnrolledWindowsDevice } from '../../protocols/windows/simulator/enroll-client.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { readRenewalDoc } from '../../protocols/windows/provisioning.js';
import { BASE64_BINARY, PASSWORD_TEXT, USER_TOKEN_TYPE, readFault } from '../../protocols/windows/soap.js';
import { readRstr } from '../../protocols/windows/wstep.js';
import { el, parseXml, writeXml, type XmlNode } from '../../protocols/windows/xml.js';
import { freePort } from '../e2e/support.js';
import { group, policyOf, quietLog, rollout } from '../reconcile/helpers.js';
import { testDatabase, type Backend, type TestDatabase } from '../support/db.js';
import { recordingLog } from '../windows/session-support.js';

export const TOPIC = 'com.apple.mgmt.External.5e1d0c3a-7777-4a4a-9b9b-000000000013';
export const CORP_PSK = 'the-corp-psk-value';
export const CAMERA = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera';
export const MAC_BUNDLE = 'dev.muster.bundle.mac-wifi';
export const SIM_HEADER = 'client-cert';
export const WEBHOOK_SECRET = 'matrix-webhook-secret';

/**
 * The policy: Macs labelled team=design get a Wi-Fi profile whose password is a
 * secret resolved only when the command is sent; PCs labelled team=qa get a
 * camera restriction. Labels are an admin's, so a device that loses them
 * loses the bundle.
 */
const POLICY = {
  'mac.yaml': `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: mac-wifi }
spec:
  version: "1.0.0"
  platforms: [apple]
  settings:
    wifi:
      - { ssid: Corp, security: wpa2-personal, password: "\${secret:CORP_PSK}" }
`,
  'win.yaml': `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: win-qa }
spec:
  version: "1.0.0"
  platforms: [windows]
  settings:
    restrictions: { allowCamera: false }
`,
  'g-design.yaml': group('design', '{ matchLabels: { team: design } }'),
  'g-qa.yaml': group('qa', '{ matchLabels: { team: qa } }'),
  'r-mac.yaml': rollout('mac', 'mac-wifi', ['design'], '    - setWeight: 100'),
  'r-win.yaml': rollout('win', 'win-qa', ['qa'], '    - setWeight: 100'),
};

/** A key and the certificate the CA issued for it (what a device holds). */
export interface Held {
  key: KeyObject;
  certDer: Buffer;
}

export interface Rig {
  tdb: TestDatabase;
  store: Store;
  ca: CertificateAuthority;
  url: string;
  app: FastifyInstance;
  apple: AppleMdm;
  windows: WindowsMdm;
  rec: Reconciler;
  log: ReturnType<typeof recordingLog>;
  tokens: { read: string; operate: string; admin: string };
  /** How often a valid webhook asked for a sync. */
  syncs: { count: number };
  /** A certificate from the rig's CA (or `ca`) for a fresh key; `agedMs` issues it that long ago. */
  issue(o?: { agedMs?: number; validityDays?: number; cn?: string; ca?: CertificateAuthority }): Held;
  /** Records a certificate as an identity, as the issuing endpoint would (bound when `deviceId` is given). */
  record(held: Held, platform: Platform, deviceId: string | null): Promise<void>;
  close(): Promise<void>;
}

export async function identityRig(backend: Backend): Promise<Rig> {
  const tdb = await testDatabase(backend);
  const store = await tdb.open();
  // A clock the tests set back to issue a certificate that has since expired.
  let skewMs = 0;
  const ca = generateCa({ keyBits: 2048, now: () => new Date(Date.now() + skewMs) });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = recordingLog();
  const plog = { ...log, error: log.warn };
  const proxy = trustedProxies(['127.0.0.1/32']);
  const secret = (n: string) => (n === 'CORP_PSK' ? CORP_PSK : undefined);
  // Profiles name the public https URL (devices refuse anything else); the simulators are pointed at the listener itself.
  const apple = await createAppleMdm(store, { ca, topic: TOPIC, publicUrl: 'https://mdm.example.com', deviceAuth: ['signature'], trustedProxy: (a) => proxy.has(a), secret, log: plog });
  const windows = createWindowsMdm(store, { ca, publicUrl: url, credentialDomain: 'example.com', deviceAuth: ['header'], certHeader: SIM_HEADER, trustedProxy: (a) => proxy.has(a), secret, log: plog });
  const drivers = new Map<Platform, PlatformDriver>(PLATFORMS.map((p) => [p, p === 'apple' ? apple.driver : p === 'windows' ? windows.driver : createSimulatedDriver(p)]));
  const rec = new Reconciler({ store, drivers, log: quietLog });
  await rec.load();
  await rec.applyPolicy(policyOf(POLICY), 'c1');
  const pino = createPino({ level: 'silent' });
  const controller = new Controller({ store, source: createDirSource('/nonexistent'), reconciler: rec, log: logOf(pino) });
  const syncs = { count: 0 };
  controller.syncNow = async () => void syncs.count++;
  const app = await buildApp({
    store,
    reconciler: rec,
    controller,
    drivers,
    logger: pino,
    protocols: [(s) => apple.register(s), (s) => windows.register(s)],
    verifyWebhook: (body, headers) => verifyGithubSignature(WEBHOOK_SECRET, body, headers['x-hub-signature-256'] as string | undefined),
  });
  await app.listen({ port, host: '127.0.0.1' });
  const tokens = {
    read: (await store.tokens.create('reader', 'read')).token,
    operate: (await store.tokens.create('operator', 'operate')).token,
    admin: (await store.tokens.create('admin', 'admin')).token,
  };
  return {
    tdb,
    store,
    ca,
    url,
    app,
    apple,
    windows,
    rec,
    log,
    tokens,
    syncs,
    issue(o = {}) {
      const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const forgeKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string) as forge.pki.rsa.PublicKey;
      skewMs = -(o.agedMs ?? 0);
      try {
        const cert = (o.ca ?? ca).issue({ publicKey: forgeKey, subject: [{ shortName: 'CN', value: o.cn ?? 'device' }], ...(o.validityDays ? { validityDays: o.validityDays } : {}) });
        return { key: privateKey, certDer: Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary') };
      } finally {
        skewMs = 0;
      }
    },
    async record(held, platform, deviceId) {
      const x = new X509Certificate(held.certDer);
      await store.identities.add({ certSha256: sha256Of(held.certDer), deviceId, platform, protocol: platform === 'apple' ? 'apple-scep' : 'windows-wstep', serialNumber: x.serialNumber.toLowerCase(), notAfter: new Date(x.validTo) });
    },
    async close() {
      await app.close();
      await apple.close();
      await tdb.cleanup();
    },
  };
}

// ------------------------------------------------------------------ Apple

/** The one-time SCEP challenge inside a signed enrollment profile (what its holder can read). */
export function challengeOf(profile: Buffer): string {
  const p = decodePlist(readSignedData(profile, 1 << 20, 'profile').content) as { PayloadContent: Array<{ PayloadType: string; PayloadContent?: { Challenge?: string } }> };
  return p.PayloadContent.find((x) => x.PayloadType === 'com.apple.security.scep')!.PayloadContent!.Challenge!;
}

/** A fresh enrollment profile's challenge; with `device`, one an admin issued for that device. */
export async function profileChallenge(rig: Rig, device?: string): Promise<string> {
  return challengeOf((await rig.apple.enrollmentProfile(device ? { device } : {})).bytes);
}

export type ScepAnswer = { status: 'SUCCESS'; held: Held } | { status: 'FAILURE' | 'PENDING'; failInfo: number | undefined };

/** PKCSReq with a challenge (signed with a throwaway self-signed certificate), or RenewalReq signed with `renewing`. */
export async function scep(url: string, o: { challenge?: string; renewing?: Held; cn?: string }): Promise<ScepAnswer> {
  const caCertDer = Buffer.from(await (await fetch(`${url}/mdm/apple/scep?operation=GetCACert`)).arrayBuffer());
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signer: Held = o.renewing ?? { key: privateKey, certDer: selfSignedCert(privateKey, o.cn ?? 'device') };
  const csr = buildCsr(privateKey, [{ shortName: 'CN', value: o.cn ?? 'device' }], o.renewing ? undefined : o.challenge);
  const req = buildPkiRequest({ messageType: o.renewing ? 'RenewalReq' : 'PKCSReq', csrDer: csr, signerCertDer: signer.certDer, signerKey: signer.key, caCertDer });
  const res = await fetch(`${url}/mdm/apple/scep?operation=PKIOperation`, { method: 'POST', headers: { 'content-type': 'application/x-pki-message' }, body: req.der });
  if (res.status !== 200) throw new Error(`SCEP: HTTP ${res.status} ${await res.text()}`);
  const rep = readCertRep(Buffer.from(await res.arrayBuffer()), { caCertDer, recipientCertDer: signer.certDer, recipientKey: signer.key });
  if (rep.status === 'SUCCESS') return { status: 'SUCCESS', held: { key: privateKey, certDer: rep.certificates[0]! } };
  return { status: rep.status, failInfo: rep.failInfo };
}

/** A Mac enrolled with a profile of its own, through the simulator: SCEP, Authenticate, TokenUpdate, a first connection. */
export async function enrolledMac(rig: Rig, udid: string): Promise<SimulatedAppleDevice> {
  const mac = new SimulatedAppleDevice({ server: rig.url, udid, serialNumber: `C02${udid.slice(-6)}`, topic: TOPIC, challenge: await profileChallenge(rig) });
  await mac.enroll();
  return mac;
}

/** An admin labels a device; the reconciler assigns what its groups get. */
export async function labelled(rig: Rig, id: string, platform: Platform, labels: Record<string, string>): Promise<void> {
  await rig.store.devices.upsert({ id, platform, labels });
  await rig.rec.deviceChanged(id);
}

/** An identity from a challenge, or the test fails. */
export async function scepIdentity(url: string, challenge: string): Promise<Held> {
  const r = await scep(url, { challenge });
  if (r.status !== 'SUCCESS') throw new Error(`SCEP enrollment failed: ${r.status}`);
  return r.held;
}

/** Detached CMS over the body, no signed attributes, as devices send Mdm-Signature. */
export function mdmSignature(body: Buffer, held: Held): string {
  const cert = parseDer(held.certDer, 'device certificate');
  const tbs = cert.value[0] as unknown as { value: Array<{ tagClass: number }> };
  const hasVersion = tbs.value[0]!.tagClass === 0x80;
  const serial = tbs.value[hasVersion ? 1 : 0] as never;
  const issuer = tbs.value[hasVersion ? 3 : 2] as never;
  const signature = sign('sha256', body, held.key);
  const SHA256 = '2.16.840.1.101.3.4.2.1';
  const RSA = '1.2.840.113549.1.1.1';
  const signerInfo = seq([int(1), seq([issuer, serial]), algorithm(SHA256), algorithm(RSA), octets(toBin(signature))]);
  const signedData = seq([int(1), set([algorithm(SHA256)]), seq([oid(OID.data)]), ctx(0, [cert]), set([signerInfo])]);
  return toBuffer(toDer(seq([oid(OID.signedData), ctx(0, [signedData])]))).toString('base64');
}

export interface AppleAnswer {
  status: number;
  body: Buffer;
  text: string;
}

/**
 * A check-in or command report as a device sends it, signed with `held` (or
 * with `signature` as given, or unsigned when null): whatever UDID the sender claims.
 */
export async function applePut(url: string, path: 'checkin' | 'connect', dict: Record<string, unknown>, held: Held | null, o: { signature?: string; headers?: Record<string, string> } = {}): Promise<AppleAnswer> {
  const body = encodePlist(dict);
  const sig = o.signature ?? (held ? mdmSignature(body, held) : undefined);
  const type = path === 'checkin' ? 'application/x-apple-aspen-mdm-checkin' : 'application/x-apple-aspen-mdm';
  const res = await fetch(`${url}/mdm/apple/${path}`, { method: 'PUT', headers: { 'content-type': type, ...(sig ? { 'mdm-signature': sig } : {}), ...o.headers }, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, body: bytes, text: bytes.toString('utf8') };
}

export const authenticate = (udid: string, topic = TOPIC) => ({ MessageType: 'Authenticate', UDID: udid, Topic: topic, SerialNumber: `C02${udid.slice(-6)}`, ProductName: 'Mac15,3', OSVersion: '15.1' });
export const tokenUpdate = (udid: string, token: Buffer, topic = TOPIC) => ({ MessageType: 'TokenUpdate', UDID: udid, Topic: topic, Token: token, PushMagic: 'ATTACKER-MAGIC', AwaitingConfiguration: false });

// ------------------------------------------------------------------ Windows

/** A PC enrolled over the wire with an admin-issued credential, and its OMA-DM client. */
export async function enrollPc(rig: Rig, o: { username: string; password: string; deviceId?: string }): Promise<{ enrolled: EnrolledWindowsDevice; pc: SimulatedWindowsDevice }> {
  const enrolled = await enrollWindowsDevice({ discoveryUrl: rig.url, email: o.username, password: o.password, ...(o.deviceId ? { deviceId: o.deviceId } : {}) });
  return { enrolled, pc: omaDm(enrolled) };
}

/** An OMA-DM client for a DeviceID, presenting `certPem` through the (simulated) TLS proxy. */
export function omaDm(o: { managementUrl: string; deviceId: string; certPem: string; hwDevId?: string; provisioned?: EnrolledWindowsDevice['provisioned'] }): SimulatedWindowsDevice {
  return new SimulatedWindowsDevice({ managementUrl: o.managementUrl, deviceId: o.deviceId, certPem: o.certPem, keyPem: '', caPem: '', certHeader: SIM_HEADER, ...(o.hwDevId ? { hwDevId: o.hwDevId } : {}), ...(o.provisioned ? { provisioned: o.provisioned } : {}) });
}

export const heldOfPc = (e: { certPem: string; keyPem: string }): Held => ({ key: createPrivateKey(e.keyPem), certDer: new X509Certificate(e.certPem).raw });
export const pemOf = (der: Buffer): string => new X509Certificate(der).toString();

export interface SoapAnswer {
  status: number;
  /** The fault's subcode (s:Authorization …), when the answer is a fault. */
  subcode?: string;
  reason?: string;
  body: string;
}

/**
 * A certificate renewal (MS-WSTEP Renew) as Windows sends it: a new PKCS#10 in
 * a PKCS#7 signed with `signer`, the current certificate `presented` through
 * the proxy's header (by default the signer's).
 */
export async function windowsRenew(rig: Rig, signer: Held, o: { deviceId?: string; presented?: Buffer | null } = {}): Promise<SoapAnswer & { certDer?: Buffer }> {
  const current = forge.pki.certificateFromAsn1(forge.asn1.fromDer(signer.certDer.toString('binary')));
  const { csrDer } = windowsCsr({ commonName: 'renewal' });
  const p7 = forge.pkcs7.createSignedData();
  p7.content = forge.util.createBuffer(csrDer.toString('binary'));
  p7.addCertificate(current);
  p7.addSigner({
    key: forge.pki.privateKeyFromPem(signer.key.export({ type: 'pkcs8', format: 'pem' }) as string),
    certificate: current,
    digestAlgorithm: forge.pki.oids.sha256!,
    authenticatedAttributes: [{ type: forge.pki.oids.contentType!, value: forge.pki.oids.data! }, { type: forge.pki.oids.messageDigest! }, { type: forge.pki.oids.signingTime!, value: new Date() as unknown as string }],
  });
  p7.sign();
  const p7Der = toBuffer(toDer(p7.toAsn1()));
  const to = `${rig.url}/EnrollmentServer/Enrollment.svc`;
  const body = writeXml(rstEnvelope({ to, csrDer: p7Der, context: [['DeviceType', 'CIMClient_Windows'], ...(o.deviceId ? [['DeviceID', o.deviceId] as [string, string]] : [])], renew: true }), { declaration: true });
  const presented = o.presented === undefined ? signer.certDer : o.presented;
  const res = await fetch(to, { method: 'POST', headers: { 'content-type': 'application/soap+xml; charset=utf-8', ...(presented ? { [SIM_HEADER]: `:${presented.toString('base64')}:` } : {}) }, body });
  return soapAnswer(res);
}

/** The wsse:Security header of an on-premise sign-in (user name and password). */
export const usernameSecurity = (username: string, password: string): XmlNode =>
  el('wsse:Security', { 's:mustUnderstand': '1' }, el('wsse:UsernameToken', { 'u:Id': 'uuid-1' }, el('wsse:Username', undefined, username), el('wsse:Password', { 'wsse:Type': PASSWORD_TEXT }, password)));

/** The wsse:Security header of a federated sign-in (the token the Auth page handed back). */
export const tokenSecurity = (token: string): XmlNode =>
  el('wsse:Security', { 's:mustUnderstand': '1' }, el('wsse:BinarySecurityToken', { ValueType: USER_TOKEN_TYPE, EncodingType: BASE64_BINARY }, Buffer.from(token, 'utf8').toString('base64')));

/** MS-XCEP GetPolicies with this security header (none when undefined). */
export async function policyRequest(rig: Rig, security: XmlNode | undefined): Promise<SoapAnswer> {
  const to = `${rig.url}/EnrollmentServer/Policy.svc`;
  // Without a credential the security header is left out (requestHeader skips an undefined child).
  return soapPost(to, getPoliciesEnvelope({ to, security: security as XmlNode }));
}

/** MS-WSTEP Issue for `deviceId` with this security header (none when undefined). */
export async function issueRequest(rig: Rig, security: XmlNode | undefined, deviceId: string): Promise<SoapAnswer> {
  const to = `${rig.url}/EnrollmentServer/Enrollment.svc`;
  const { csrDer } = windowsCsr({ commonName: deviceId });
  return soapPost(to, rstEnvelope({ to, ...(security ? { security } : {}), csrDer, context: [['DeviceID', deviceId], ['EnrollmentType', 'Full'], ['DeviceType', 'CIMClient_Windows']] }));
}

/** The federated page: the code typed in; the token it posts back to Windows, if any. */
export async function federatedSignIn(rig: Rig, code: string): Promise<{ status: number; token?: string; body: string }> {
  const res = await fetch(`${rig.url}/EnrollmentServer/Auth`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ appru: 'ms-app://windows.immersivecontrolpanel', login_hint: 'someone@example.com', code }).toString() });
  const body = await res.text();
  const token = /name="wresult" value="([^"]+)"/.exec(body)?.[1];
  return { status: res.status, body, ...(token ? { token } : {}) };
}

/** Posts a SOAP envelope to an enrollment endpoint, reads the fault if any. */
export async function soapPost(url: string, envelope: Parameters<typeof writeXml>[0], headers: Record<string, string> = {}): Promise<SoapAnswer> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/soap+xml; charset=utf-8', ...headers }, body: writeXml(envelope, { declaration: true }) });
  return soapAnswer(res);
}

async function soapAnswer(res: Response): Promise<SoapAnswer & { certDer?: Buffer }> {
  const body = await res.text();
  let root;
  try {
    root = parseXml(Buffer.from(body));
  } catch {
    return { status: res.status, body };
  }
  const fault = readFault(root);
  if (fault) return { status: res.status, body, subcode: fault.subcode, reason: fault.reason };
  const answer = root.children.find((c) => c.name === 'Body')?.children[0];
  // A renewal's answer carries the new certificate in its provisioning document.
  const der = answer?.name === 'RequestSecurityTokenResponseCollection' ? readRenewalDoc(readRstr(answer)).der : undefined;
  return { status: res.status, body, ...(der ? { certDer: Buffer.from(der, 'base64') } : {}) };
}

// ------------------------------------------------------------------ admin API

export async function api(rig: Rig, method: 'GET' | 'POST', path: string, token: string | undefined, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await rig.app.inject({ method, url: `/api/v1${path}`, headers: token ? { authorization: `Bearer ${token}` } : {}, ...(body !== undefined ? { payload: body as object } : {}) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {} };
}

/** Audit actions recorded for a device, oldest first. */
export async function auditOf(rig: Rig, deviceId: string): Promise<Array<{ action: string; actor: string; details: Record<string, unknown> }>> {
  return (await rig.store.audit.list({ subject: `device/${deviceId}`, limit: 1000 })).map((a) => ({ action: a.action, actor: a.actor, details: (a.details ?? {}) as Record<string, unknown> }));
}

export const sha256Of = (der: Buffer): string => createHash('sha256').update(der).digest('hex');
