// The Apple MDM service: check-in messages and the command channel, on typed
// values (wire.ts decodes; routes.ts does HTTP and device authentication).
// Rules that devices enforce on us, from Apple's reference and peers' bugs:
// never answer 401 (the device unenrolls: use 403); Authenticate clears the
// queue; TokenUpdate may come at any time and overwrites push data; a report
// is answered even when it cannot be matched, so nothing blocks the queue.
import { IdentityRefused, deviceLifecycle, type IdentityRefusal } from '../../controller/devices/lifecycle.js';
import { commandUuid } from '../../controller/reconcile/reconciler.js';
import { type Command, type Store, isSealed } from '../../controller/store/index.js';
import { declarationSet, type Declaration } from './declarations.js';
import { inventoryCommands } from './inventory.js';
import { commandDict, describeErrorChain, type CheckinMessage, type CommandReport } from './wire.js';

type Dict = Record<string, unknown>;

export interface AppleLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/** The device certificate the request was authenticated with (mTLS, proxy header or Mdm-Signature). */
export interface PresentedIdentity {
  certSha256: string;
}

export interface AppleServiceOptions {
  store: Store;
  log: AppleLog;
  /** The push topic of this server's APNs certificate: Authenticate and TokenUpdate must name it (a device under another topic could never be woken). */
  topic?: string;
  /** The queued command → the dictionary sent to the device (resolve secrets, sign profiles). Throwing fails that command. */
  renderCommand?(command: Command): Dict | Promise<Dict>;
  /** A command finished on the device: update reported state (ProfileList, DeviceInformation …). */
  onResult?(command: Command, report: CommandReport): Promise<void>;
  /** Ask a newly enrolled device for its inventory (DeviceInformation, SecurityInfo, InstalledApplicationList). Default true. */
  inventoryOnEnroll?: boolean;
  /** A Declarative Device Management status report arrived (parsed JSON). */
  onDeclarativeStatus?(udid: string, report: unknown): Promise<void>;
  /** Whether a device that says AwaitingConfiguration is ready for DeviceConfigured (default: at once). */
  readyToConfigure?(udid: string): Promise<boolean>;
}

export type CheckinAnswer = { status: 200; body?: Dict } | { status: 200; json: unknown } | { status: 403 | 404 | 410 | 400; error: string };
export type ConnectAnswer = { status: 200; command?: Dict; uuid?: string } | { status: 403 | 400; error: string };

const DEVICE_CONFIGURED = 'DeviceConfigured';
const bootstrapBinding = (udid: string) => ({ deviceId: udid, purpose: 'apple.bootstrap-token' });

export function createAppleService(o: AppleServiceOptions) {
  const { store, log } = o;
  const lifecycle = deviceLifecycle(store, { log });
  const render = o.renderCommand ?? ((c: Command) => commandDict(c.uuid, (c.payload as { RequestType: string }).RequestType, (c.payload as { fields?: Dict }).fields ?? {}));

  /**
   * Refusals that say someone tried another device's identity are audited; the
   * rest (a checked-out device still polling) only logged. An unbound
   * certificate is refused only outside Authenticate, where no device sends one.
   */
  const TAKEOVER: readonly IdentityRefusal[] = ['other-device', 'other-platform', 'device-has-live-identity', 'credential-for-other-device', 'unbound'];

  /** The certificate must be an Apple identity of ours, current and (once bound) bound to this device. */
  async function identityFor(udid: string, id: PresentedIdentity | undefined, binding: boolean, what: string): Promise<string | undefined> {
    const c = await lifecycle.check(id?.certSha256, { platform: 'apple', deviceId: udid, binding });
    if (c.ok) return undefined;
    if (TAKEOVER.includes(c.reason)) await lifecycle.refused({ reason: c.reason, deviceId: udid, platform: 'apple', ...(id ? { certSha256: id.certSha256 } : {}), actor: 'apple-mdm', details: { message: what } });
    return c.message;
  }

  async function checkin(msg: CheckinMessage, id: PresentedIdentity | undefined): Promise<CheckinAnswer> {
    const refused = await identityFor(msg.udid, id, msg.type === 'Authenticate', msg.type);
    if (refused) {
      log.warn('check-in refused', { udid: msg.udid, type: msg.type, reason: refused });
      return { status: 403, error: refused };
    }
    if ((msg.type === 'Authenticate' || (msg.type === 'TokenUpdate' && !msg.userId)) && o.topic !== undefined && msg.topic !== o.topic) {
      log.warn('check-in refused: another push topic', { udid: msg.udid, type: msg.type, topic: msg.topic.slice(0, 200) });
      return { status: 403, error: `this server pushes under topic ${o.topic}, not ${msg.topic.slice(0, 200)}` };
    }
    const udid = msg.udid;
    switch (msg.type) {
      case 'Authenticate': {
        const os = /ipad/i.test(msg.productName ?? msg.model ?? '') ? 'ipados' : /iphone|ipod/i.test(msg.productName ?? msg.model ?? '') ? 'ios' : /appletv/i.test(msg.productName ?? '') ? 'tvos' : 'macos';
        let kind: string;
        try {
          kind = await store.transaction(async (tx) => {
            const r = await lifecycle.enroll(
              {
                device: {
                  id: udid,
                  platform: 'apple',
                  identifiers: { udid, ...(msg.imei ? { imei: msg.imei } : {}), ...(msg.meid ? { meid: msg.meid } : {}) },
                  ...(msg.serialNumber ? { serialNumber: msg.serialNumber } : {}),
                  ...(msg.productName || msg.model ? { model: msg.productName ?? msg.model! } : {}),
                  ...(msg.osVersion ? { osVersion: msg.osVersion } : {}),
                  attributes: { os, 'enrollment-source': 'apple-mdm', ...(msg.deviceName ? { 'device-name': msg.deviceName } : {}) },
                },
                identity: { certSha256: id!.certSha256 },
                // A (re-)enrolling device starts from an empty queue, as the device itself does.
                enrollment: { status: 'pending', state: { topic: msg.topic, authenticatedAt: new Date().toISOString() } },
                actor: `device:${udid}`,
                details: { serial: msg.serialNumber, model: msg.productName ?? msg.model },
              },
              tx,
            );
            return r.kind;
          });
        } catch (e) {
          if (!(e instanceof IdentityRefused)) throw e;
          await lifecycle.refused({ reason: e.reason, deviceId: udid, platform: 'apple', certSha256: id!.certSha256, actor: 'apple-mdm', details: { message: 'Authenticate', serial: msg.serialNumber ?? null } });
          log.warn('check-in refused', { udid, type: msg.type, reason: e.message });
          return { status: 403, error: e.message };
        }
        log.info('apple device authenticated', { udid, serial: msg.serialNumber, kind });
        return { status: 200 };
      }
      case 'TokenUpdate': {
        if (msg.userId) return { status: 200 }; // user-channel tokens: no user channel yet; acknowledged
        const prev = await store.devices.getEnrollment(udid);
        if (!prev || prev.status === 'unenrolled') return { status: 400, error: 'TokenUpdate before Authenticate' };
        await store.transaction(async (tx) => {
          await store.devices.setEnrollment(
            {
              deviceId: udid,
              platform: 'apple',
              status: 'enrolled',
              state: {
                ...prev.state,
                tokenUnregisteredAt: null,
                topic: msg.topic,
                token: msg.token.toString('hex'),
                pushMagic: msg.pushMagic,
                ...(msg.unlockToken ? { hasUnlockToken: true } : {}),
                awaitingConfiguration: msg.awaitingConfiguration,
              },
            },
            tx,
          );
          if (msg.awaitingConfiguration && (await (o.readyToConfigure?.(udid) ?? Promise.resolve(true)))) {
            // Once per enrollment: a repeated TokenUpdate does not queue it twice.
            const uuid = commandUuid(udid, DEVICE_CONFIGURED, String(prev.state.authenticatedAt ?? ''));
            await store.commands.enqueue({ uuid, deviceId: udid, type: DEVICE_CONFIGURED, payload: { RequestType: DEVICE_CONFIGURED }, priority: 100 }, tx);
          }
          if (prev.status !== 'enrolled') {
            // First token of this enrollment: ask what the device is (attributes, posture, apps).
            if (o.inventoryOnEnroll !== false) await store.commands.enqueue(inventoryCommands(udid, String(prev.state.authenticatedAt ?? '')), tx);
            await store.events.publish({ topic: 'device.changed', payload: { deviceId: udid } }, tx);
          }
        });
        return { status: 200 };
      }
      case 'CheckOut': {
        await store.transaction((tx) => lifecycle.unenroll(udid, { platform: 'apple', by: 'device', reason: 'the device checked out', actor: `device:${udid}`, action: 'device.checkout' }, tx));
        log.info('apple device checked out', { udid });
        return { status: 200 };
      }
      case 'UserAuthenticate':
        // Muster has no per-user channel: 410 tells the device not to ask again.
        return { status: 410, error: 'user channel not supported' };
      case 'SetBootstrapToken': {
        // The token unlocks the Mac's Secure Token accounts: it is kept sealed, bound to this device (never in clear).
        const sealed = msg.bootstrapToken ? store.secrets.seal(msg.bootstrapToken.toString('base64'), bootstrapBinding(udid)) : null;
        await store.devices.patchEnrollmentState(udid, { bootstrapToken: sealed });
        return { status: 200 };
      }
      case 'GetBootstrapToken': {
        const e = await store.devices.getEnrollment(udid);
        const kept = e?.state.bootstrapToken;
        if (typeof kept !== 'string') return { status: 200, body: {} };
        const token = isSealed(kept) ? store.secrets.open(kept, bootstrapBinding(udid)) : kept;
        // Escrowed in clear before tokens were sealed (migration 006), or under a key since rotated: sealed (again) under the current key now.
        if (!isSealed(kept) || store.secrets.isStale(kept)) await store.devices.patchEnrollmentState(udid, { bootstrapToken: store.secrets.seal(token, bootstrapBinding(udid)) });
        return { status: 200, body: { BootstrapToken: Buffer.from(token, 'base64') } };
      }
      case 'DeclarativeManagement':
        return declarative(udid, msg.endpoint, msg.data);
    }
  }

  /** The DDM endpoints, from the declarations the driver put in the enrollment state. */
  async function declarative(udid: string, endpoint: string, data: Buffer | undefined): Promise<CheckinAnswer> {
    const e = await store.devices.getEnrollment(udid);
    const held = Object.values((e?.state.declarations as Record<string, Declaration> | undefined) ?? {});
    const set = declarationSet(held);
    if (endpoint === 'tokens') {
      const at = typeof e?.state.declarationsAt === 'string' ? new Date(e.state.declarationsAt) : new Date(0);
      return { status: 200, json: { SyncTokens: { DeclarationsToken: set.token, Timestamp: at.toISOString().replace(/\.\d{3}Z$/, 'Z') } } };
    }
    if (endpoint === 'declaration-items') return { status: 200, json: set.items };
    if (endpoint.startsWith('declaration/')) {
      const d = set.byPath.get(endpoint.slice('declaration/'.length));
      return d ? { status: 200, json: d } : { status: 404, error: `no declaration ${endpoint.slice(0, 200)}` };
    }
    if (endpoint === 'status') {
      let report: unknown;
      try {
        report = JSON.parse((data ?? Buffer.alloc(0)).toString('utf8'));
      } catch {
        log.warn('unreadable declarative status report', { udid });
        return { status: 400, error: 'the status report is not JSON' };
      }
      await o.onDeclarativeStatus?.(udid, report);
      return { status: 200 };
    }
    return { status: 404, error: `unknown declarative endpoint ${endpoint.slice(0, 100)}` };
  }

  /** Records the report, then answers with the next command, or nothing. */
  async function connect(report: CommandReport, id: PresentedIdentity | undefined): Promise<ConnectAnswer> {
    const refused = await identityFor(report.udid, id, false, 'command report');
    if (refused) {
      log.warn('command report refused', { udid: report.udid, status: report.status, reason: refused });
      return { status: 403, error: refused };
    }
    const udid = report.udid;
    if (report.status !== 'Idle' && report.commandUuid) await record(udid, report);
    await store.devices.touch(udid);
    // Commands that cannot be rendered fail on their own and never block the ones behind them.
    for (let i = 0; i < 20; i++) {
      const [next] = await store.commands.nextForDevice(udid, { limit: 1 });
      if (!next) return { status: 200 };
      try {
        return { status: 200, command: await render(next), uuid: next.uuid };
      } catch (e) {
        log.warn('command could not be prepared; failing it', { udid, command: next.uuid, type: next.type, error: (e as Error).message });
        await store.commands.report(next.uuid, { status: 'failed', error: `not sent: ${(e as Error).message}` });
      }
    }
    return { status: 200 };
  }

  async function record(udid: string, report: CommandReport): Promise<void> {
    const uuid = report.commandUuid!;
    const cmd = await store.commands.get(uuid);
    if (!cmd || cmd.deviceId !== udid) {
      // Answered and logged, never an error: the device would resend it forever.
      log.warn('report for a command this device was not sent', { udid, command: uuid, status: report.status });
      return;
    }
    const outcome =
      report.status === 'Acknowledged'
        ? await store.commands.report(uuid, { status: 'completed', result: storable(report.result) })
        : report.status === 'NotNow'
          ? await store.commands.report(uuid, { status: 'not_now' })
          : await store.commands.report(uuid, { status: 'failed', error: describeErrorChain(report.errorChain), result: { status: report.status, errorChain: report.errorChain } });
    if (!outcome.changed) return; // a repeated report changes nothing
    if (report.status === 'Error' || report.status === 'CommandFormatError') log.warn('command failed on the device', { udid, command: uuid, type: cmd.type, error: describeErrorChain(report.errorChain) });
    if (cmd.type === DEVICE_CONFIGURED && report.status === 'Acknowledged') await store.devices.patchEnrollmentState(udid, { awaitingConfiguration: false });
    await o.onResult?.(cmd, report);
  }

  return { checkin, connect };
}

export type AppleService = ReturnType<typeof createAppleService>;

/** Device-reported results go into JSON: binary data is kept as base64, bounded. */
function storable(v: unknown, depth = 0): unknown {
  if (depth > 32) return '[too deep]';
  if (Buffer.isBuffer(v)) return { base64: v.subarray(0, 4096).toString('base64'), bytes: v.length };
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.slice(0, 10_000).map((x) => storable(x, depth + 1));
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, storable(x, depth + 1)]));
  return v;
}
