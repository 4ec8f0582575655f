// A simulated Windows PC's OMA-DM client, speaking the real wire format to
// POST /ManagementServer/MDM.svc over TLS with its enrollment certificate
// (node:https with key and cert), the way the Windows DM client does:
// - package 1: SyncHdr with SessionID, MsgID 1, Source = its DeviceID (with
//   LocName and Cred syncml:auth-md5 when it has MD5 credentials from the
//   provisioning document), Target = the server URL, MaxMsgSize in Meta;
//   Alert 1201, Alert 1224 (com.microsoft/MDM/LoginStatus), a Replace of its
//   ./DevInfo nodes and DMClient HWDevID, Final;
// - then it answers every server command with a Status (Results for a Get,
//   with Meta Format), runs Atomic all-or-nothing (507 and 216), refuses a
//   server message larger than its MaxMsgSize, follows OMA DM's package
//   rules (its own package over several messages without Final when asked
//   to, Alert 1222 and no Final while the server's package goes on), and ends
//   the session when the server closes a package with nothing but statuses;
// - it polls on a schedule (its DMClient Poll interval; tests scale minutes).
import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import { decodeServerMessage, encodeDeviceMessage, type ClientCommand, type DeviceBodyElement, type ServerItem, type SyncmlVersion } from '../syncml/wire.js';
import { ManagementTree, keyOf, type ExecAction } from './tree.js';

export interface SimulatedWindowsOptions {
  /** https://host/ManagementServer/MDM.svc (what enrollment's provisioning document names). */
  managementUrl: string;
  deviceId: string;
  /** The enrollment certificate and key (PEM) and the CA that issued the server's TLS certificate. */
  certPem: string;
  keyPem: string;
  caPem: string;
  /** For a plain-http server behind a simulated TLS proxy: send the certificate in this header (RFC 9440). */
  certHeader?: string;
  /** MD5 credentials for the Cred of package 1; by default the CLIENT APPAUTH of the provisioning document. */
  credentials?: { name: string; secret: string; nonce?: string };
  /** What enrollment returned (simulator/enroll-client.ts): its HWDevID, poll schedule and provisioning document. */
  hwDevId?: string;
  poll?: { first?: { everyMinutes: number; times: number }; second?: { everyMinutes: number; times: number }; thenMinutes: number; onLogin?: boolean };
  provisioned?: { appAuth?: Array<Record<string, string>> };
  manufacturer?: string;
  model?: string;
  osVersion?: string;
  deviceName?: string;
  serialNumber?: string;
  language?: string;
  /** The largest message it accepts (MaxMsgSize). Default 524288. */
  maxMsgSize?: number;
  /** Sends its package over several messages, this many body elements each (as a PC does with results too large for one). Default: one message. */
  maxElementsPerMessage?: number;
  /** Nodes that refuse writes (405). */
  readOnly?: string[];
  /** Nodes whose write fails (500) inside an Atomic. */
  failInAtomic?: string[];
  /** The DMClient provider it enrolled with. Default Muster. */
  providerId?: string;
  /** CmdIDs as Windows builds number them, or as UUIDs (both are seen from real devices). */
  cmdIds?: 'numeric' | 'uuid';
  version?: SyncmlVersion;
  encrypted?: boolean;
}

export interface SessionSummary {
  sessionId: string;
  /** Server messages received. */
  messages: number;
  /** Server messages without Final (Next Message answers, Alert 1222). */
  nextMessages: number;
  /** Commands the server sent, as "Verb target". */
  commands: string[];
}

export class SimulatedWindowsDevice {
  readonly deviceId: string;
  readonly tree: ManagementTree;
  locked = false;
  wiped = false;
  reboots = 0;
  readonly sessions: SessionSummary[] = [];
  /** Every server message received, as text (tests inspect the wire). */
  readonly received: string[] = [];
  /** Every message sent, as text. */
  readonly sent: string[] = [];
  lastError: Error | undefined;
  private sessionCounter = 0;
  private cmdCounter = 0;
  private readonly readOnly: Set<string>;
  private readonly failInAtomic: Set<string>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();
  private readonly url: URL;
  private readonly maxMsgSize: number;
  private readonly credentials: { name: string; secret: string; nonce?: string } | undefined;

  constructor(private readonly o: SimulatedWindowsOptions) {
    this.deviceId = o.deviceId;
    this.url = new URL(o.managementUrl);
    this.maxMsgSize = o.maxMsgSize ?? 524_288;
    const provider = `./Vendor/MSFT/DMClient/Provider/${encodeURIComponent(o.providerId ?? 'Muster')}`;
    const ro = (value: string, format = 'chr') => ({ format, value, readOnly: true });
    this.tree = new ManagementTree({
      './DevInfo/DevId': ro(o.deviceId),
      './DevInfo/Man': ro(o.manufacturer ?? 'Contoso'),
      './DevInfo/Mod': ro(o.model ?? 'Surface Laptop 5'),
      './DevInfo/DmV': ro('1.3'),
      './DevInfo/Lang': ro(o.language ?? 'en-US'),
      './DevDetail/SwV': ro(o.osVersion ?? '10.0.22631.4317'),
      './DevDetail/HwV': ro('1.0'),
      './DevDetail/OEM': ro(o.manufacturer ?? 'Contoso'),
      './DevDetail/DevTyp': ro('Desktop'),
      './DevDetail/Ext/Microsoft/DeviceName': ro(o.deviceName ?? `PC-${o.deviceId.slice(0, 6).toUpperCase()}`),
      './DevDetail/Ext/Microsoft/OSPlatform': ro('Windows 11 Enterprise'),
      './DevDetail/Ext/Microsoft/SMBIOSSerialNumber': ro(o.serialNumber ?? `SN${createHash('sha256').update(o.deviceId).digest('hex').slice(0, 10).toUpperCase()}`),
      './Vendor/MSFT/DMClient/HWDevID': ro(o.hwDevId ?? createHash('sha256').update(`hw:${o.deviceId}`).digest('hex').toUpperCase()),
      './Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance': ro(o.encrypted ? '1' : '0', 'int'),
      // What enrollment's provisioning document set up.
      [`${provider}/EntDMID`]: ro(o.deviceId),
      [`${provider}/Poll/IntervalForFirstSetOfRetries`]: { format: 'int', value: String(o.poll?.first?.everyMinutes ?? 3) },
      [`${provider}/Poll/NumberOfFirstRetries`]: { format: 'int', value: String(o.poll?.first?.times ?? 15) },
      [`${provider}/Poll/IntervalForSecondSetOfRetries`]: { format: 'int', value: String(o.poll?.second?.everyMinutes ?? 15) },
      [`${provider}/Poll/NumberOfSecondRetries`]: { format: 'int', value: String(o.poll?.second?.times ?? 12) },
      [`${provider}/Poll/IntervalForRemainingScheduledRetries`]: { format: 'int', value: String(o.poll?.thenMinutes ?? 480) },
      [`${provider}/Poll/NumberOfRemainingScheduledRetries`]: { format: 'int', value: '0' },
      [`${provider}/Poll/PollOnLogin`]: { format: 'bool', value: o.poll?.onLogin ? 'true' : 'false' },
    });
    const client = o.provisioned?.appAuth?.find((a) => a.AAUTHLEVEL === 'CLIENT' && a.AAUTHSECRET);
    this.credentials = o.credentials ?? (client ? { name: client.AAUTHNAME ?? 'dummy', secret: client.AAUTHSECRET!, ...(client.AAUTHDATA ? { nonce: client.AAUTHDATA } : {}) } : undefined);
    this.readOnly = new Set((o.readOnly ?? []).map(keyOf));
    this.failInAtomic = new Set((o.failInAtomic ?? []).map(keyOf));
  }

  private cmdId(): string {
    return this.o.cmdIds === 'uuid' ? randomUUID() : String(++this.cmdCounter);
  }

  /** OMA DM MD5 digest: b64(md5(b64(md5("name:secret")) + ":" + nonce)). */
  private credential(): { format: string; type: string; data: string; locName: string } | undefined {
    const c = this.credentials;
    if (!c) return undefined;
    const inner = createHash('md5').update(`${c.name}:${c.secret}`).digest('base64');
    const data = createHash('md5').update(`${inner}:${Buffer.from(c.nonce ?? '', 'base64').toString('binary')}`, 'binary').digest('base64');
    return { format: 'b64', type: 'syncml:auth-md5', data, locName: c.name };
  }

  /** Runs one whole OMA-DM session (client-initiated, as a scheduled poll does). */
  sync(): Promise<SessionSummary> {
    const run = this.running.then(() => this.session());
    this.running = run.catch(() => undefined);
    return run;
  }

  /**
   * The user removes the work account: the PC tells the server (generic
   * alert 1226, com.microsoft:mdm.unenrollment.userrequest) in a session of
   * its own, then drops what management set and stops polling.
   */
  async unenroll(): Promise<SessionSummary> {
    this.stopPolling();
    const run = this.running.then(() => this.session([{ kind: 'Alert', cmdId: '', data: '1226', items: [{ type: 'com.microsoft:mdm.unenrollment.userrequest', format: 'int', data: '1' }] }]));
    this.running = run.catch(() => undefined);
    const s = await run;
    for (const root of ['./Vendor/MSFT/Policy/Config', './Vendor/MSFT/WiFi/Profile', './Vendor/MSFT/RootCATrustedCertificates', './Vendor/MSFT/BitLocker']) this.tree.delete(root);
    this.unenrolled = true;
    return s;
  }

  unenrolled = false;

  private async session(extra: DeviceBodyElement[] = []): Promise<SessionSummary> {
    const sessionId = (++this.sessionCounter).toString(16).toUpperCase();
    const version = this.o.version ?? '1.2';
    this.cmdCounter = 0;
    const summary: SessionSummary = { sessionId, messages: 0, nextMessages: 0, commands: [] };
    const cred = this.credential();
    const devInfo = ['./DevInfo/DevId', './DevInfo/Man', './DevInfo/Mod', './DevInfo/DmV', './DevInfo/Lang', './Vendor/MSFT/DMClient/HWDevID'];
    let msgId = 1;
    // What this device still has to send of its current package (it may take several messages).
    let queue: DeviceBodyElement[] = [
      { kind: 'Alert', cmdId: this.cmdId(), data: '1201' },
      { kind: 'Alert', cmdId: this.cmdId(), data: '1224', items: [{ type: 'com.microsoft/MDM/LoginStatus', format: 'chr', data: 'user' }] },
      { kind: 'Replace', cmdId: this.cmdId(), items: devInfo.map((uri) => ({ source: uri, data: this.tree.get(uri)!.value })) },
      ...extra.map((e) => ({ ...e, cmdId: this.cmdId() })),
    ];
    let serverFinal = true;
    // The answers to the server's last message go in the next message whatever its size.
    let answers: DeviceBodyElement[] = [];
    const perMessage = this.o.maxElementsPerMessage ?? Number.POSITIVE_INFINITY;
    for (let round = 0; round < 100; round++) {
      // OMA DM: Final closes this device's package only once it is all sent and the server has closed its own;
      // while the server's package goes on, the device asks for the rest with Alert 1222.
      const body = [...answers, ...queue.splice(0, Math.max(1, perMessage))];
      const more = queue.length > 0;
      if (!more && !serverFinal) body.push({ kind: 'Alert', cmdId: this.cmdId(), data: '1222' });
      const final = !more && serverFinal;
      const text = encodeDeviceMessage({ version, sessionId, msgId: String(msgId), source: this.deviceId, target: this.o.managementUrl, ...(round === 0 && cred ? { cred } : {}), ...(round === 0 ? { maxMsgSize: this.maxMsgSize } : {}), body, final });
      this.sent.push(text);
      const reply = await this.post(text);
      this.received.push(reply);
      summary.messages++;
      if (Buffer.byteLength(reply, 'utf8') > this.maxMsgSize) throw new Error(`the server sent ${Buffer.byteLength(reply, 'utf8')} bytes, over this device's MaxMsgSize of ${this.maxMsgSize}`);
      const m = decodeServerMessage(reply);
      if (m.sessionId !== sessionId) throw new Error(`the server answered session ${m.sessionId}, not ${sessionId}`);
      const hdrStatus = m.body.find((c) => c.kind === 'Status' && c.cmdRef === '0');
      if (!hdrStatus || hdrStatus.kind !== 'Status' || hdrStatus.msgRef !== String(msgId)) throw new Error('the server did not answer this message\'s SyncHdr (Status with CmdRef 0 and our MsgID)');
      const commands = m.body.filter((c) => c.kind !== 'Status');
      const out: DeviceBodyElement[] = [{ kind: 'Status', cmdId: this.cmdId(), msgRef: m.msgId, cmdRef: '0', cmd: 'SyncHdr', targetRefs: [this.deviceId], sourceRefs: [m.source], data: '200' }];
      for (const c of commands) out.push(...this.run(c, m.msgId, summary, false));
      // The Next Message answer (the server's Alert 1222) asks for the rest of this device's package; it opens no package of the server's.
      if (!commands.some((c) => c.kind === 'Alert' && c.data === '1222')) serverFinal = m.final;
      // A closed server package without commands ends the session (unless this device's own package is not all sent).
      if (m.final && commands.length === 0 && !more) break;
      if (!m.final) summary.nextMessages++;
      if (queue.length) answers = out;
      else {
        answers = [];
        queue = out;
      }
      msgId++;
    }
    this.sessions.push(summary);
    return summary;
  }

  /** Executes one server command; returns its Status (and Results), children's statuses after an Atomic's. */
  private run(c: ClientCommand, msgRef: string, summary: SessionSummary, inAtomic: boolean): DeviceBodyElement[] {
    const status = (code: number, extra: { targetRefs?: string[] } = {}): DeviceBodyElement => ({ kind: 'Status', cmdId: this.cmdId(), msgRef, cmdRef: c.cmdId, cmd: c.kind === 'Unknown' ? c.name : c.kind, ...extra, data: String(code) });
    switch (c.kind) {
      case 'Alert':
        return [status(200)];
      case 'Atomic':
      case 'Sequence': {
        if (c.kind === 'Atomic' && inAtomic) return [status(500)];
        summary.commands.push(c.kind);
        const snapshot = this.tree.snapshot();
        const own = status(200);
        const kids = c.commands.flatMap((x) => this.run(x, msgRef, summary, inAtomic || c.kind === 'Atomic'));
        const failed = kids.some((k) => k.kind === 'Status' && Number(k.data) >= 300);
        if (c.kind === 'Atomic' && failed) {
          this.tree.restore(snapshot);
          (own as { data: string }).data = '507';
          for (const k of kids) if (k.kind === 'Status' && Number(k.data) < 300) (k as { data: string }).data = '216';
        }
        return [own, ...kids.filter((k) => k.kind === 'Status')];
      }
      case 'Add':
      case 'Replace':
      case 'Delete':
      case 'Exec':
      case 'Get': {
        if (c.kind === 'Get' && inAtomic) return [status(500)];
        const codes: Array<{ target: string; code: number; result?: ServerItem }> = [];
        for (const it of c.items) {
          const target = it.target ?? '';
          summary.commands.push(`${c.kind} ${target}`);
          codes.push({ target, ...this.apply(c.kind, target, it.meta?.format ?? c.meta?.format ?? 'chr', it.data ?? '', inAtomic) });
        }
        const out: DeviceBodyElement[] = [];
        if (new Set(codes.map((x) => x.code)).size <= 1) out.push(status(codes[0]?.code ?? 200));
        else for (const x of codes) out.push(status(x.code, { targetRefs: [x.target] }));
        const results = codes.filter((x) => x.result).map((x) => x.result!);
        if (results.length) out.push({ kind: 'Results', cmdId: this.cmdId(), msgRef, cmdRef: c.cmdId, items: results });
        return out;
      }
      default:
        return [status(c.kind === 'Unknown' ? 400 : 406)];
    }
  }

  private apply(verb: 'Add' | 'Replace' | 'Delete' | 'Exec' | 'Get', target: string, format: string, data: string, inAtomic: boolean): { code: number; result?: ServerItem } {
    const k = keyOf(target);
    if (verb !== 'Get' && this.readOnly.has(k)) return { code: 405 };
    if (verb !== 'Get' && inAtomic && this.failInAtomic.has(k)) return { code: 500 };
    switch (verb) {
      case 'Add':
        return { code: this.write(() => this.tree.add(target, format, data), target, data) };
      case 'Replace':
        return { code: this.write(() => this.tree.replace(target, format, data), target, data) };
      case 'Delete':
        return { code: this.tree.delete(target) };
      case 'Exec': {
        const r = this.tree.exec(target);
        if (r.action) this.perform(r.action);
        return { code: r.code };
      }
      case 'Get': {
        const r = this.tree.read(target);
        return r.code === 200 ? { code: 200, result: { source: target, format: r.format!, data: r.value! } } : { code: r.code };
      }
    }
  }

  /** A write, with the side effects a real PC shows (BitLocker encrypts, then reports compliance). */
  private write(fn: () => number, target: string, data: string): number {
    const code = fn();
    if (code === 200 && /\/BitLocker\/RequireDeviceEncryption$/i.test(target) && data === '1') {
      this.tree.set('./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance', { format: 'int', value: '1', readOnly: true });
    }
    return code;
  }

  private perform(a: ExecAction): void {
    if (a === 'lock') this.locked = true;
    else if (a === 'wipe') this.wiped = true;
    else this.reboots++;
  }

  /** Polls on a schedule: its DMClient steady interval in minutes × minuteMs (tests use milliseconds), or everyMs. */
  startPolling(o: { minuteMs?: number; everyMs?: number } = {}): void {
    this.stopPolling();
    const next = () => {
      const minutes = Number(this.tree.get(`./Vendor/MSFT/DMClient/Provider/${encodeURIComponent(this.o.providerId ?? 'Muster')}/Poll/IntervalForRemainingScheduledRetries`)?.value ?? '480');
      const ms = o.everyMs ?? Math.max(1, minutes) * (o.minuteMs ?? 60_000);
      this.timer = setTimeout(() => {
        this.sync()
          .then(() => (this.lastError = undefined))
          .catch((e: Error) => (this.lastError = e))
          .finally(() => {
            if (this.timer) next();
          });
      }, ms);
      this.timer.unref?.();
    };
    next();
  }

  stopPolling(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Waits until the session in progress (if any) is over. */
  async idle(): Promise<void> {
    await this.running;
  }

  private post(body: string): Promise<string> {
    const tls = this.url.protocol === 'https:';
    const headers: Record<string, string> = { 'content-type': 'application/vnd.syncml.dm+xml', 'content-length': String(Buffer.byteLength(body, 'utf8')), 'user-agent': 'MSFT OMA DM Client/1.2.0.1' };
    if (!tls && this.o.certHeader) headers[this.o.certHeader] = `:${new X509Certificate(this.o.certPem).raw.toString('base64')}:`;
    return new Promise((resolve, reject) => {
      const req = (tls ? https : http).request(
        this.url,
        { method: 'POST', headers, ...(tls ? { key: this.o.keyPem, cert: this.o.certPem, ca: this.o.caPem, agent: false } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) reject(Object.assign(new Error(`MDM.svc answered ${res.statusCode}: ${text.slice(0, 200)}`), { status: res.statusCode }));
            else resolve(text);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}
