// Simulated Apple devices that speak the real wire protocol over HTTP: they
// get their identity through SCEP, send check-in and report plists signed
// with it (Mdm-Signature, detached CMS as devices make it), keep their own
// profile list, answer ProfileList, DeviceInformation and SecurityInfo, and
// answer NotNow or Error at configurable rates. A push (the APNs seam) makes
// a device connect.
import { createHash, generateKeyPairSync, randomBytes, randomUUID, sign, type KeyObject } from 'node:crypto';
import { algorithm, ctx, int, oid, octets, parseDer, seq, set, toBin, toBuffer, toDer } from '../pki/asn1.js';
import { OID, readSignedData } from './scep/cms.js';
import { buildCsr, buildPkiRequest, readCertRep, selfSignedCert } from './scep/client.js';
import type { Pushable } from './apns-simulator.js';
import { decodePlist, encodePlist } from './plist.js';

export interface SimulatedAppleOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8080 */
  server: string;
  udid: string;
  serialNumber: string;
  productName?: string;
  osVersion?: string;
  topic: string;
  challenge: string;
  /** Share of commands answered NotNow (0..1), and Error. */
  notNowRate?: number;
  errorRate?: number;
  random?: () => number;
}

interface Installed {
  identifier: string;
  uuid: string;
  /** The profile as installed (what the device would apply). */
  content: Record<string, unknown>;
}

const SHA256 = '2.16.840.1.101.3.4.2.1';
const RSA = '1.2.840.113549.1.1.1';

export class SimulatedAppleDevice implements Pushable {
  readonly udid: string;
  private key!: KeyObject;
  private certDer!: Buffer;
  readonly profiles = new Map<string, Installed>();
  readonly seen: string[] = [];
  /** What SecurityInfo reports as FileVault; tests turn it off to see compliance fail. */
  encrypted = true;
  apps = [{ identifier: 'com.apple.Safari', name: 'Safari', version: '18.1' }, { identifier: 'com.microsoft.Word', name: 'Microsoft Word', version: '16.90' }];
  locked?: { pin: string | undefined; message: string | undefined };
  /** Declarations it holds (DDM), by identifier, and the token of the last sync. */
  readonly declarations = new Map<string, { Type: string; Identifier: string; ServerToken: string; Payload: Record<string, unknown> }>();
  private declarationsToken = '';
  /** What its TokenUpdate tells the server; a push service (apns-simulator.ts) finds it by the token. */
  readonly pushToken = randomBytes(32).toString('hex');
  readonly pushMagic = randomUUID().toUpperCase();
  /** Its OS version; a software-update enforcement declaration "installs" its target at once. */
  osVersion: string;
  erased = false;
  private readonly random: () => number;

  constructor(private o: SimulatedAppleOptions) {
    this.udid = o.udid;
    this.random = o.random ?? Math.random;
    this.osVersion = o.osVersion ?? '15.1';
  }

  /** SCEP enrollment with the challenge, then Authenticate and TokenUpdate. */
  async enroll(): Promise<void> {
    const caCertDer = Buffer.from(await (await this.fetch(`/mdm/apple/scep?operation=GetCACert`, { method: 'GET' })).arrayBuffer());
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const self = selfSignedCert(privateKey, this.udid);
    const csr = buildCsr(privateKey, [{ shortName: 'CN', value: this.udid }], this.o.challenge);
    const req = buildPkiRequest({ messageType: 'PKCSReq', csrDer: csr, signerCertDer: self, signerKey: privateKey, caCertDer });
    const res = await this.fetch(`/mdm/apple/scep?operation=PKIOperation`, { method: 'POST', headers: { 'content-type': 'application/x-pki-message' }, body: req.der });
    const rep = readCertRep(Buffer.from(await res.arrayBuffer()), { caCertDer, recipientCertDer: self, recipientKey: privateKey });
    if (rep.status !== 'SUCCESS' || !rep.certificates[0]) throw new Error(`SCEP enrollment failed: ${rep.status} failInfo ${rep.failInfo}`);
    this.key = privateKey;
    this.certDer = rep.certificates[0];
    await this.checkin({ MessageType: 'Authenticate', Topic: this.o.topic, SerialNumber: this.o.serialNumber, ProductName: this.o.productName ?? 'Mac15,3', OSVersion: this.osVersion });
    await this.checkin({ MessageType: 'TokenUpdate', Topic: this.o.topic, Token: Buffer.from(this.pushToken, 'hex'), PushMagic: this.pushMagic, AwaitingConfiguration: false });
    // A device connects right after enrolling, as a real one does (and from then on when pushed).
    await this.connect();
  }

  /**
   * Enrolls with an identity issued some other way (benchmarks issue a
   * thousand certificates directly instead of a thousand SCEP round trips):
   * Authenticate and TokenUpdate, no initial connection.
   */
  async enrollWithIdentity(key: KeyObject, certDer: Buffer): Promise<void> {
    this.key = key;
    this.certDer = certDer;
    await this.checkin({ MessageType: 'Authenticate', Topic: this.o.topic, SerialNumber: this.o.serialNumber, ProductName: this.o.productName ?? 'Mac15,3', OSVersion: this.osVersion });
    await this.checkin({ MessageType: 'TokenUpdate', Topic: this.o.topic, Token: Buffer.from(this.pushToken, 'hex'), PushMagic: this.pushMagic, AwaitingConfiguration: false });
  }

  /** SCEP renewal: a new key and certificate, requested with the current identity (RenewalReq, no challenge). */
  async renew(): Promise<void> {
    const caCertDer = Buffer.from(await (await this.fetch(`/mdm/apple/scep?operation=GetCACert`, { method: 'GET' })).arrayBuffer());
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const csr = buildCsr(privateKey, [{ shortName: 'CN', value: this.udid }]);
    const req = buildPkiRequest({ messageType: 'RenewalReq', csrDer: csr, signerCertDer: this.certDer, signerKey: this.key, caCertDer });
    const res = await this.fetch(`/mdm/apple/scep?operation=PKIOperation`, { method: 'POST', headers: { 'content-type': 'application/x-pki-message' }, body: req.der });
    const rep = readCertRep(Buffer.from(await res.arrayBuffer()), { caCertDer, recipientCertDer: this.certDer, recipientKey: this.key });
    if (rep.status !== 'SUCCESS' || !rep.certificates[0]) throw new Error(`SCEP renewal failed: ${rep.status} failInfo ${rep.failInfo}`);
    this.key = privateKey;
    this.certDer = rep.certificates[0];
  }

  /** Talks to another server from now on (benchmarks run the same devices against a baseline). */
  useServer(url: string): void {
    this.o = { ...this.o, server: url };
  }

  get certSha256(): string {
    return createHash('sha256').update(this.certDer).digest('hex');
  }

  async checkin(dict: Record<string, unknown>): Promise<Response> {
    const res = await this.put('/mdm/apple/checkin', { UDID: this.udid, ...dict }, 'application/x-apple-aspen-mdm-checkin');
    if (res.status !== 200 && res.status !== 410) throw new Error(`check-in ${String(dict.MessageType)}: ${res.status} ${await res.text()}`);
    return res;
  }

  /** One connection: Idle, then answer every command until the server has nothing more. Returns how many it answered. */
  async connect(): Promise<number> {
    let answered = 0;
    let res = await this.put('/mdm/apple/connect', { UDID: this.udid, Status: 'Idle' });
    for (let i = 0; i < 500; i++) {
      if (res.status !== 200) throw new Error(`connect: ${res.status} ${await res.text()}`);
      const body = Buffer.from(await res.arrayBuffer());
      if (body.length === 0) return answered;
      const cmd = decodePlist(body) as { CommandUUID: string; Command: Record<string, unknown> & { RequestType: string } };
      this.seen.push(cmd.Command.RequestType);
      const answer = this.answer(cmd.Command);
      // DeclarativeManagement: acknowledge, then sync over the check-in channel as devices do.
      if (cmd.Command.RequestType === 'DeclarativeManagement' && answer.Status === 'Acknowledged') await this.syncDeclarations();
      res = await this.put('/mdm/apple/connect', { UDID: this.udid, CommandUUID: cmd.CommandUUID, ...answer });
      answered++;
    }
    return answered;
  }

  private answer(c: Record<string, unknown> & { RequestType: string }): Record<string, unknown> {
    const r = this.random();
    if (r < (this.o.notNowRate ?? 0)) return { Status: 'NotNow' };
    if (r < (this.o.notNowRate ?? 0) + (this.o.errorRate ?? 0)) {
      return { Status: 'Error', ErrorChain: [{ ErrorCode: 4001, ErrorDomain: 'MCInstallationErrorDomain', LocalizedDescription: 'Simulated failure', USEnglishDescription: 'Simulated failure' }] };
    }
    switch (c.RequestType) {
      case 'InstallProfile': {
        const bytes = c.Payload as Buffer;
        // A signed profile is attached CMS: its content is the plist.
        const plistBytes = bytes[0] === 0x30 ? readSignedData(bytes, 1 << 20, 'profile').content : bytes;
        const p = decodePlist(plistBytes) as { PayloadIdentifier: string; PayloadUUID: string };
        this.profiles.set(p.PayloadIdentifier, { identifier: p.PayloadIdentifier, uuid: p.PayloadUUID, content: p as unknown as Record<string, unknown> });
        return { Status: 'Acknowledged' };
      }
      case 'RemoveProfile':
        this.profiles.delete(String(c.Identifier));
        return { Status: 'Acknowledged' };
      case 'ProfileList':
        return { Status: 'Acknowledged', ProfileList: [...this.profiles.values()].map((p) => ({ PayloadIdentifier: p.identifier, PayloadUUID: p.uuid, PayloadVersion: 1, IsManaged: true })) };
      case 'DeviceInformation':
        return { Status: 'Acknowledged', QueryResponses: { UDID: this.udid, SerialNumber: this.o.serialNumber, OSVersion: this.osVersion, ModelName: 'MacBook Pro', IsSupervised: true } };
      case 'SecurityInfo':
        return { Status: 'Acknowledged', SecurityInfo: { FDE_Enabled: this.encrypted, PasscodePresent: true, PasscodeCompliant: true, PasscodeCompliantWithProfiles: true, SystemIntegrityProtectionEnabled: true } };
      case 'InstalledApplicationList':
        return { Status: 'Acknowledged', InstalledApplicationList: this.apps.map((a) => ({ Identifier: a.identifier, Name: a.name, ShortVersion: a.version, Version: a.version, BundleSize: 1_000_000, Installing: false })) };
      case 'DeviceLock':
        this.locked = { pin: typeof c.PIN === 'string' ? c.PIN : undefined, message: typeof c.Message === 'string' ? c.Message : undefined };
        return { Status: 'Acknowledged' };
      case 'EraseDevice':
        this.erased = true;
        return { Status: 'Acknowledged' };
      default:
        return { Status: 'Acknowledged' };
    }
  }

  /** A DDM sync: tokens, then declaration-items if they changed, each changed declaration, then a status report. */
  async syncDeclarations(): Promise<void> {
    const ddm = async (endpoint: string, data?: unknown) => {
      const res = await this.checkin({ MessageType: 'DeclarativeManagement', Endpoint: endpoint, ...(data !== undefined ? { Data: Buffer.from(JSON.stringify(data)) } : {}) });
      const text = await res.text();
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    };
    const tokens = (await ddm('tokens')) as { SyncTokens: { DeclarationsToken: string } };
    if (tokens.SyncTokens.DeclarationsToken === this.declarationsToken) return;
    const items = (await ddm('declaration-items')) as { Declarations: Record<'Activations' | 'Configurations', Array<{ Identifier: string; ServerToken: string }>> };
    const wanted = new Set<string>();
    for (const [kind, list] of [['activation', items.Declarations.Activations], ['configuration', items.Declarations.Configurations]] as const) {
      for (const ref of list) {
        wanted.add(ref.Identifier);
        if (this.declarations.get(ref.Identifier)?.ServerToken === ref.ServerToken) continue;
        const d = (await ddm(`declaration/${kind}/${ref.Identifier}`)) as { Type: string; Identifier: string; ServerToken: string; Payload: Record<string, unknown> };
        this.declarations.set(d.Identifier, d);
        const target = d.Type === 'com.apple.configuration.softwareupdate.enforcement.specific' ? String(d.Payload.TargetOSVersion) : undefined;
        if (target && target.localeCompare(this.osVersion, undefined, { numeric: true }) > 0) this.osVersion = target;
      }
    }
    for (const id of [...this.declarations.keys()]) if (!wanted.has(id)) this.declarations.delete(id);
    this.declarationsToken = tokens.SyncTokens.DeclarationsToken;
    const status = (d: { Identifier: string; ServerToken: string }) => ({ identifier: d.Identifier, active: true, valid: 'valid', 'server-token': d.ServerToken });
    const all = [...this.declarations.values()];
    await ddm('status', {
      StatusItems: {
        device: { 'operating-system': { version: this.osVersion } },
        management: { declarations: { activations: all.filter((d) => d.Type.startsWith('com.apple.activation.')).map(status), configurations: all.filter((d) => d.Type.startsWith('com.apple.configuration.')).map(status), assets: [], management: [] } },
        softwareupdate: { 'install-state': 'none' },
      },
      Errors: [],
    });
  }

  private async put(path: string, dict: Record<string, unknown>, type = 'application/x-apple-aspen-mdm'): Promise<Response> {
    const body = encodePlist(dict);
    return this.fetch(path, { method: 'PUT', headers: { 'content-type': type, 'mdm-signature': this.signDetached(body).toString('base64') }, body });
  }

  private fetch(path: string, init: RequestInit): Promise<Response> {
    return fetch(`${this.o.server}${path}`, init);
  }

  /** Detached CMS SignedData over `body`, no signed attributes: what devices send as Mdm-Signature. */
  private signDetached(body: Buffer): Buffer {
    const cert = parseDer(this.certDer, 'device certificate');
    const tbs = cert.value[0] as unknown as { value: Array<{ tagClass: number; type: number }> };
    // TBSCertificate: [0] version, serialNumber, signature, issuer … (issuer is index 3 with a version)
    const hasVersion = tbs.value[0]!.tagClass === 0x80;
    const serial = tbs.value[hasVersion ? 1 : 0] as never;
    const issuer = tbs.value[hasVersion ? 3 : 2] as never;
    const signature = sign('sha256', body, this.key);
    const signerInfo = seq([int(1), seq([issuer, serial]), algorithm(SHA256), algorithm(RSA), octets(toBin(signature))]);
    const signedData = seq([int(1), set([algorithm(SHA256)]), seq([oid(OID.data)]), ctx(0, [cert]), set([signerInfo])]);
    return toBuffer(toDer(seq([oid(OID.signedData), ctx(0, [signedData])])));
  }
}
