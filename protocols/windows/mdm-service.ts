// The Windows OMA-DM service: one device message in, the server's answer out,
// on typed values (syncml/wire.ts decodes; mdm-routes.ts does HTTP and the
// certificate). Each message is one transaction: the session row is locked,
// the message folded into it (syncml/session.ts), its outcomes reported to
// the command queue, the answer filled from the queue, the session written
// back — so a crash or a second replica never sees half a message.
//
// What devices expect of us (MS-MDM, the Windows OMA DM protocol page):
// - a session begins with Alert 1201 (client-initiated) or 1200 and MsgID 1;
//   a new one ends whatever the device had open (its unanswered commands go
//   back to the queue), Alert 1223 aborts (the same), and it ends cleanly
//   with our message that holds only statuses and Final;
// - every message of ours ends our package (Final) and holds only what fits
//   the device's MaxMsgSize; the rest goes in the next package, once the
//   device has answered (OMA DM: no new commands before the statuses of the
//   previous ones). A device message without Final gets the Next Message
//   answer: statuses and Alert 1222, no commands, no Final;
// - 1226 with com.microsoft:mdm.unenrollment.userrequest: the user removed
//   the work account; the device deletes what we installed right after;
// - 1224 events (LoginStatus …) and the ./DevInfo Replace of package 1 say
//   what the device is: they become device attributes.
import type { Command, Queryable, Store } from '../../controller/store/index.js';
import { POSTURE, type Posture } from '../../controller/compliance/evaluate.js';
import { REFUSAL_TEXT, deviceLifecycle } from '../../controller/devices/lifecycle.js';
import { ALERT, Composer, dropWork, newSession, receive, unfinishedWork, type CommandOutcome, type ReceivedAlert, type RenderedCommand, type SessionState } from './syncml/session.js';
import type { ClientMessage } from './syncml/wire.js';

export interface WindowsMdmLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error?(msg: string, fields?: Record<string, unknown>): void;
}

export interface WindowsMdmServiceOptions {
  store: Store;
  log: WindowsMdmLog;
  /** The URL devices post to, the Source of our SyncHdr (https://host/ManagementServer/MDM.svc). */
  serverUrl: string;
  /** A queued command → the SyncML command sent (secrets resolved here). Throwing fails that command alone. */
  renderCommand(command: Command): RenderedCommand;
  /** Commands finished on the device, in order, inside the message's transaction (reported state). */
  onResults?(deviceId: string, done: ReadonlyArray<{ command: Command; outcome: CommandOutcome }>, tx: Queryable): Promise<void>;
  /** A session began (inside its transaction): queue what should run in it (inventory …). */
  onSessionStart?(deviceId: string, tx: Queryable): Promise<void>;
  /** Largest message sent, whatever the device allows. Default 512 KiB. */
  maxMessageBytes?: number;
  /** Server messages per session; then the session ends and the rest waits for the next poll. Default 40. */
  maxMessagesPerSession?: number;
  /** Commands per server message. Default 100. */
  maxCommandsPerMessage?: number;
  now?: () => Date;
}

export type MdmRefusal = { status: 403; error: string };
export type MdmAnswer = { status: 200; body: string; ended: boolean } | MdmRefusal;

/** A device whose certificate identify() accepted. */
export interface IdentifiedDevice {
  deviceId: string;
  /** The certificate that identified it (for the audit of a message naming another device). */
  certSha256: string;
}

/** The presented certificate (already checked to chain to Muster's CA and be current: auth.ts). */
export interface PresentedCertificate {
  certSha256: string;
}

const UNENROLL = 'com.microsoft:mdm.unenrollment.userrequest';
const LOGIN_STATUS = 'com.microsoft/MDM/LoginStatus';
const DEFAULT_MAX_MSG = 512 * 1024;

/** Device nodes → what they mean in the store. */
const FACTS: Record<string, { attr?: string; field?: 'model' | 'osVersion' | 'serialNumber'; identifier?: string }> = {
  './devinfo/devid': { identifier: 'windows-device-id' },
  './devinfo/man': { attr: 'manufacturer' },
  './devinfo/mod': { field: 'model' },
  './devinfo/dmv': { attr: 'dm-version' },
  './devinfo/lang': { attr: 'language' },
  './devdetail/swv': { field: 'osVersion' },
  './devdetail/hwv': { attr: 'hardware-version' },
  './devdetail/fwv': { attr: 'firmware-version' },
  './devdetail/oem': { attr: 'oem' },
  './devdetail/devtyp': { attr: 'device-type' },
  './devdetail/ext/microsoft/devicename': { attr: 'device-name' },
  './devdetail/ext/microsoft/dnscomputername': { attr: 'dns-name' },
  './devdetail/ext/microsoft/osplatform': { attr: 'os-edition' },
  './devdetail/ext/microsoft/smbiosserialnumber': { field: 'serialNumber' },
  './vendor/msft/dmclient/hwdevid': { identifier: 'hwdevid' },
};
const ENCRYPTION_COMPLIANCE = './vendor/msft/devicestatus/compliance/encryptioncompliance';

/** Device-sent text made safe to store: bounded, no control characters. */
// eslint-disable-next-line no-control-regex
const clean = (v: string | undefined) => (v ?? '').replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 256);
const normUri = (u: string) => u.replace(/^\.\/Device\/Vendor\//i, './Vendor/').toLowerCase();

export function createWindowsMdmService(o: WindowsMdmServiceOptions) {
  const { store, log } = o;
  const now = o.now ?? (() => new Date());
  const lifecycle = deviceLifecycle(store, { now, log });
  const maxMsg = o.maxMessageBytes ?? DEFAULT_MAX_MSG;

  /** Puts commands a session will not finish back in the queue (deliverable again at once). */
  async function requeue(deviceId: string, uuids: readonly string[], tx: Queryable): Promise<void> {
    for (const uuid of uuids) {
      const r = await store.commands.report(uuid, { status: 'not_now', retryAfterMs: 0 }, tx);
      if (r.changed) log.info('windows command back in the queue (session ended before its status)', { device: deviceId, command: uuid });
    }
  }

  function refuse(reason: string, msg?: ClientMessage, remote?: string): MdmRefusal {
    log.warn('windows OMA-DM message refused', { ...(msg ? { device: clean(msg.hdr.source.locUri), session: clean(msg.hdr.sessionId) } : {}), ...(remote ? { remote } : {}), reason });
    return { status: 403, error: 'device certificate not accepted' };
  }

  /**
   * The device a certificate stands for: a Windows identity of ours, current,
   * unrevoked and bound to a device (the device lifecycle's check). Needs
   * nothing of the message, so the route asks it before reading the body: an
   * unknown client never gets the SyncML parser to work for it.
   */
  async function identify(cert: PresentedCertificate | undefined, o: { remote?: string } = {}): Promise<IdentifiedDevice | MdmRefusal> {
    const c = await lifecycle.check(cert?.certSha256, { platform: 'windows' });
    if (c.ok) return { deviceId: c.deviceId, certSha256: c.identity.certSha256 };
    if (c.reason === 'other-platform') {
      const other = await store.identities.get(cert!.certSha256);
      // Refused before the body is read: the device the message would name is not known, the certificate is.
      await lifecycle.refused({ ...(other?.deviceId ? { deviceId: other.deviceId } : {}), reason: c.reason, platform: other?.platform ?? 'windows', certSha256: cert!.certSha256, actor: 'omadm', details: { message: 'OMA-DM session with another platform\'s identity' } });
    }
    return refuse(c.message, undefined, o.remote);
  }

  /** The message must come from the device its certificate is bound to. */
  async function deviceFor(msg: ClientMessage, who: IdentifiedDevice): Promise<string | MdmRefusal> {
    // DevIDs are GUIDs whose case can differ between enrollment and the DM client.
    if (who.deviceId.toLowerCase() === msg.hdr.source.locUri.toLowerCase()) return who.deviceId;
    await lifecycle.refused({ reason: 'other-device', deviceId: clean(msg.hdr.source.locUri).slice(0, 128), platform: 'windows', certSha256: who.certSha256, actor: 'omadm', details: { message: 'OMA-DM session', boundTo: who.deviceId } });
    return refuse(REFUSAL_TEXT['other-device'], msg);
  }

  /** What the device said about itself becomes its attributes, identifiers and posture. */
  async function recordFacts(deviceId: string, facts: ReadonlyArray<{ locUri: string; data?: string }>, alerts: readonly ReceivedAlert[], tx: Queryable): Promise<void> {
    const attrs: Record<string, string> = {};
    const identifiers: Record<string, string> = {};
    const fields: { model?: string; osVersion?: string; serialNumber?: string } = {};
    let encrypted: boolean | undefined;
    for (const f of facts) {
      const key = normUri(f.locUri);
      const v = clean(f.data);
      if (key === ENCRYPTION_COMPLIANCE && /^[01]$/.test(v)) encrypted = v === '1';
      const m = FACTS[key];
      if (!m || !v) continue;
      if (m.attr) attrs[m.attr] = v;
      if (m.identifier) identifiers[m.identifier] = v;
      if (m.field === 'osVersion' && !/^\d+(\.\d+){0,3}$/.test(v)) attrs['os-version-text'] = v;
      else if (m.field) fields[m.field] = v;
    }
    for (const a of alerts) {
      if (a.code !== ALERT.clientEvent) continue;
      for (const it of a.items) if (it.meta?.type === LOGIN_STATUS && it.data) attrs['login-status'] = clean(it.data).toLowerCase();
    }
    if (!Object.keys(attrs).length && !Object.keys(identifiers).length && !Object.keys(fields).length && encrypted === undefined) return;
    const device = await store.devices.get(deviceId, tx);
    const changed =
      !device ||
      Object.entries(attrs).some(([k, v]) => device.attributes[k] !== v) ||
      Object.entries(identifiers).some(([k, v]) => device.identifiers[k] !== v) ||
      (fields.model !== undefined && fields.model !== device.model) ||
      (fields.osVersion !== undefined && fields.osVersion !== device.osVersion) ||
      (fields.serialNumber !== undefined && fields.serialNumber !== device.serialNumber);
    if (changed) {
      await store.devices.upsert({ id: deviceId, platform: 'windows', identifiers: { ...device?.identifiers, ...identifiers }, attributes: { os: 'windows', ...device?.attributes, ...attrs }, ...fields }, tx);
      // Group selectors read attributes: let the reconciler re-derive this device.
      await store.events.publish({ topic: 'device.changed', payload: { deviceId } }, tx);
    }
    if (fields.osVersion || encrypted !== undefined) {
      await lifecycle.updateReported<Posture>(deviceId, POSTURE, (prev) => ({ ...prev, osFamily: 'windows', ...(fields.osVersion ? { osVersion: fields.osVersion } : {}), ...(encrypted !== undefined ? { encrypted } : {}) }), tx);
    }
  }

  /** The user removed the work account (1226 unenrollment): the device is no longer managed; Windows removes what MDM installed. */
  async function unenroll(deviceId: string, tx: Queryable): Promise<void> {
    await lifecycle.unenroll(deviceId, { platform: 'windows', by: 'device', reason: 'the user unenrolled the device (OMA-DM 1226 com.microsoft:mdm.unenrollment.userrequest)', actor: `device:${deviceId}`, action: 'device.unenroll' }, tx);
  }

  /** What a finished command leaves in the queue's history: codes, and read values only when not sensitive. */
  function storable(outcome: CommandOutcome, sensitive: boolean) {
    return {
      statuses: outcome.statuses.map((s) => ({ verb: s.verb, targets: s.targets.slice(0, 50), code: s.code, ...(s.targetRefs ? { targetRefs: s.targetRefs.slice(0, 50) } : {}) })),
      results: outcome.results.slice(0, 200).map((r) => ({ source: r.source, ...(r.format ? { format: r.format } : {}), ...(r.data !== undefined ? (sensitive || r.data.length > 1024 ? { bytes: Buffer.byteLength(r.data) } : { data: r.data }) : {}) })),
      ...(outcome.replacedAfter418 ? { replacedAfter418: outcome.replacedAfter418 } : {}),
    };
  }

  /** Handles one device message, its certificate checked first (identify). */
  async function handle(msg: ClientMessage, cert: PresentedCertificate | undefined): Promise<MdmAnswer> {
    const who = await identify(cert);
    return 'status' in who ? who : handleFrom(who, msg);
  }

  /** Handles one message from a device identify() accepted. */
  async function handleFrom(who: IdentifiedDevice, msg: ClientMessage): Promise<MdmAnswer> {
    const deviceId = await deviceFor(msg, who);
    if (typeof deviceId !== 'string') return deviceId;
    const sessionId = msg.hdr.sessionId;
    return store.transaction(async (tx) => {
      const row = await store.windowsSessions.get(deviceId, sessionId, tx, { lock: true });
      const starting = msg.body.some((c) => c.kind === 'Alert' && (c.data === ALERT.clientInitiated || c.data === ALERT.serverInitiated));
      let state = row && !row.ended && (row.state as SessionState | undefined)?.v === 1 ? (row.state as SessionState) : undefined;
      let fresh = false;
      if (!state || (starting && msg.hdr.msgId === '1')) {
        if (!starting) log.warn('windows OMA-DM message outside a session; starting one', { device: deviceId, session: clean(sessionId), msgId: clean(msg.hdr.msgId) });
        // Whatever the device had open is over: what it never answered goes back to the queue.
        for (const open of await store.windowsSessions.open(deviceId, tx)) {
          const s = open.state as SessionState;
          if (s?.v === 1) await requeue(deviceId, unfinishedWork(s), tx);
          await store.windowsSessions.put(deviceId, open.sessionId, s, true, tx);
        }
        state = newSession({ sessionId, version: msg.version, device: msg.hdr.source.locUri, maxMsgSize: Math.min(maxMsg, msg.hdr.meta?.maxMsgSize ?? maxMsg) });
        fresh = true;
      }
      const r = receive(state, msg, { credentialsAccepted: true });
      if (r.unmatched) log.warn('windows device answered commands this session did not send', { device: deviceId, session: clean(sessionId), count: r.unmatched });
      await store.devices.touch(deviceId, now(), tx);

      // Outcomes to the queue (idempotent on the UUID), then to the driver for reported state.
      const done: Array<{ command: Command; outcome: CommandOutcome }> = [];
      for (const outcome of r.completed) {
        const command = await store.commands.get(outcome.uuid, tx);
        if (!command || command.deviceId !== deviceId) continue;
        if (outcome.notExecuted) {
          // 215: not executed on the device (the user cancelled): back off and send it again later.
          const nn = await store.commands.report(outcome.uuid, { status: 'not_now' }, tx);
          if (nn.changed) log.info('windows command not executed by the device; trying again later', { device: deviceId, command: outcome.uuid, type: command.type });
          continue;
        }
        const sensitive = !!(command.payload as { sensitive?: boolean } | null)?.sensitive;
        const rep = await store.commands.report(outcome.uuid, outcome.ok ? { status: 'completed', result: storable(outcome, sensitive) } : { status: 'failed', error: outcome.error ?? 'failed', result: storable(outcome, sensitive) }, tx);
        if (!rep.changed) continue;
        if (!outcome.ok) log.warn('windows command failed on the device', { device: deviceId, command: outcome.uuid, type: command.type, error: outcome.error });
        done.push({ command, outcome });
      }
      if (r.lost.length) await requeue(deviceId, r.lost, tx);
      // What the device told us goes to its record and reported state last: both publish events, and
      // publishing holds the event bus's commit-order lock until this transaction commits, so
      // doing it last keeps concurrent devices' messages from queueing behind one another.
      const record = async () => {
        await recordFacts(deviceId, r.facts, r.alerts, tx);
        if (done.length) await o.onResults?.(deviceId, done, tx);
      };

      const unenrolled = r.alerts.some((a) => a.code === ALERT.genericAlert && a.items.some((it) => it.meta?.type === UNENROLL));
      if (unenrolled) {
        // Before the unenrollment, which empties reported state: it must have the last word.
        await record();
        await unenroll(deviceId, tx);
        log.info('windows device unenrolled by its user', { device: deviceId });
      }
      let s = r.state;
      if (r.aborted || unenrolled) {
        if (r.aborted) await requeue(deviceId, unfinishedWork(s), tx);
        s = dropWork(s, unfinishedWork(s));
        const c = new Composer(s, r.statuses, o.serverUrl);
        const out = c.finish({ end: true });
        await store.windowsSessions.put(deviceId, sessionId, out.state, true, tx);
        if (!unenrolled) await record();
        return { status: 200 as const, body: out.xml, ended: true };
      }
      if (fresh) await o.onSessionStart?.(deviceId, tx);

      const limitReached = s.messages >= (o.maxMessagesPerSession ?? 40);
      if (limitReached) {
        log.warn('windows session reached its message limit; the rest waits for the next poll', { device: deviceId, session: clean(sessionId) });
        await requeue(deviceId, s.carry, tx);
        s = dropWork(s, s.carry);
      }
      const c = new Composer(s, r.statuses, o.serverUrl, { maxCommands: o.maxCommandsPerMessage ?? 100 });
      if (!r.clientFinal) c.askForNextMessage();
      else if (!limitReached) await fill(c, s, deviceId, tx);
      const out = c.finish(limitReached ? { end: true } : {});
      const left = out.ended ? unfinishedWork(out.state) : [];
      if (left.length) {
        // The session ends with this message (no command fitted beside its statuses): what waits goes back to the queue.
        await requeue(deviceId, left, tx);
        out.state = dropWork(out.state, left);
      }
      await store.windowsSessions.put(deviceId, sessionId, out.state, out.ended, tx);
      if (fresh) await store.windowsSessions.prune(new Date(now().getTime() - 7 * 86_400_000), tx);
      await record();
      return { status: 200 as const, body: out.xml, ended: out.ended };
    });
  }

  /** Offers carried commands (418 retries, what did not fit), then the queue, until the message is full. */
  async function fill(c: Composer, s: SessionState, deviceId: string, tx: Queryable): Promise<void> {
    const offer = async (command: Command): Promise<void> => {
      let rendered: RenderedCommand;
      try {
        rendered = o.renderCommand(command);
      } catch (e) {
        log.warn('windows command could not be prepared; failing it', { device: deviceId, command: command.uuid, type: command.type, error: (e as Error).message });
        await store.commands.report(command.uuid, { status: 'failed', error: `not sent: ${(e as Error).message}` }, tx);
        c.drop(command.uuid);
        return;
      }
      const res = c.add(command.uuid, rendered);
      if (res === 'too-large' || res === 'invalid') {
        const error = res === 'too-large' ? "not sent: larger than the device's MaxMsgSize" : 'not sent: it breaks a SyncML rule (a Get or an Atomic inside an Atomic, or no items)';
        log.warn('windows command cannot be sent; failing it', { device: deviceId, command: command.uuid, type: command.type, error });
        await store.commands.report(command.uuid, { status: 'failed', error }, tx);
        c.drop(command.uuid);
      }
    };
    for (const uuid of [...s.carry]) {
      if (c.full) return;
      const command = await store.commands.get(uuid, tx);
      if (!command || command.deviceId !== deviceId || ['completed', 'failed', 'expired'].includes(command.state)) {
        c.drop(uuid);
        continue;
      }
      await offer(command);
    }
    // Bounded: commands that fail to render are skipped, never looped on.
    for (let i = 0; i < 500 && !c.full; i++) {
      const [next] = await store.commands.nextForDevice(deviceId, { limit: 1 }, tx);
      if (!next) return;
      await offer(next);
    }
  }

  return { identify, handle, handleFrom };
}

export type WindowsMdmService = ReturnType<typeof createWindowsMdmService>;
