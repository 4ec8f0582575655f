// The Apple PlatformDriver: bundles → one configuration profile each
// (profiles.ts), diffed against what the device reported, delivered as
// InstallProfile / RemoveProfile commands with a ProfileList after them so the
// result is read back. Secrets are resolved only when a command is about to
// be sent (renderAppleCommand), so plans, hashes and the queue never hold them.
import { randomInt } from 'node:crypto';
import { POSTURE } from '../../controller/compliance/evaluate.js';
import { diffItems, type Action, type AdminAction, type AdminActionContext, type AdminActionResult, type DeliverContext, type DriverDevice, type NativeState, type PlatformDriver, type ReportedItems, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { REPORTED_ITEMS, commandUuid } from '../../controller/reconcile/reconciler.js';
import { deviceLifecycle } from '../../controller/devices/lifecycle.js';
import type { Command, NewCommand, Store } from '../../controller/store/index.js';
import { encodePlist } from './plist.js';
import { DDM_ITEM_PREFIX, compileDeclarations, configurationStatuses, declarationSet, type Declaration } from './declarations.js';
import { applicationsOf, inventoryCommands, postureOf } from './inventory.js';
import { PROFILE_ID_PREFIX, appleFamily, compileAppleProfiles, resolveProfileSecrets } from './profiles.js';
import type { CommandReport } from './wire.js';
import { commandDict, profileListOf, queryResponsesOf } from './wire.js';

/** Profiles Muster manages carry this identifier prefix; others on the device are left alone. */
export const MANAGED_PREFIX = 'dev.muster.';

interface InstallPayload {
  RequestType: 'InstallProfile';
  identifier: string;
  /** The PayloadUUID the device will list once installed. */
  uuid: string;
  profile: Record<string, unknown>;
}

export interface AppleDriverOptions {
  /** Signs profile bytes (attached CMS); unsigned when absent. */
  signProfile?(plist: Buffer): Buffer;
  wake?(deviceIds: readonly string[]): Promise<void>;
}

export function createAppleDriver(o: AppleDriverOptions = {}): PlatformDriver {
  return {
    platform: 'apple',
    compile(bundles: readonly ResolvedBundle[], device: DriverDevice): NativeState {
      // What the device lists back is the profile's PayloadUUID, derived from the bundle hash: that is the item hash.
      const state = compileAppleProfiles([...bundles], device);
      const profiles = state.items.map((i) => ({ ...i, hash: String((i.payload as { PayloadUUID: string }).PayloadUUID) }));
      const declarations = compileDeclarations(bundles, appleFamily(device.model), device.osVersion);
      return { platform: 'apple', items: [...profiles, ...declarations].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) };
    },
    diff: diffItems,
    async deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void> {
      const commands: NewCommand[] = [];
      for (const { device, actions } of work) {
        const nonce = ctx.nonce(device.id);
        const isDdm = (a: Action) => (a.kind === 'install' ? a.item.id : a.id).startsWith(DDM_ITEM_PREFIX);
        const profileActions = actions.filter((a) => !isDdm(a));
        const ddmActions = actions.filter(isDdm);
        for (const a of profileActions) {
          commands.push(
            a.kind === 'install'
              ? {
                  uuid: commandUuid(device.id, 'InstallProfile', a.item.id, a.item.hash, nonce),
                  deviceId: device.id,
                  type: 'InstallProfile',
                  payload: { RequestType: 'InstallProfile', identifier: a.item.id, uuid: a.item.hash, profile: a.item.payload as Record<string, unknown> } satisfies InstallPayload,
                }
              : { uuid: commandUuid(device.id, 'RemoveProfile', a.id, nonce), deviceId: device.id, type: 'RemoveProfile', payload: { RequestType: 'RemoveProfile', fields: { Identifier: a.id } } },
          );
        }
        if (profileActions.length) {
          // Read back what the device now holds, after the changes (lower priority: it runs last).
          commands.push({ uuid: commandUuid(device.id, 'ProfileList', nonce, String(profileActions.length), profileActions.map((a) => (a.kind === 'install' ? a.item.hash : a.id)).join(',')), deviceId: device.id, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } } });
        }
        if (ddmActions.length) {
          // Declarations are served from the enrollment state at the device's next
          // DeclarativeManagement check-in; the command only tells it to sync now.
          const e = await ctx.store.devices.getEnrollment(device.id, ctx.tx);
          const held: Record<string, Declaration> = { ...((e?.state.declarations as Record<string, Declaration> | undefined) ?? {}) };
          for (const a of ddmActions) {
            if (a.kind === 'install') held[a.item.id.slice(DDM_ITEM_PREFIX.length)] = a.item.payload as Declaration;
            else delete held[a.id.slice(DDM_ITEM_PREFIX.length)];
          }
          await ctx.store.devices.patchEnrollmentState(device.id, { declarations: held, declarationsAt: new Date().toISOString() }, ctx.tx);
          const token = declarationSet(Object.values(held)).token;
          commands.push({ uuid: commandUuid(device.id, 'DeclarativeManagement', token, nonce), deviceId: device.id, type: 'DeclarativeManagement', payload: { RequestType: 'DeclarativeManagement', fields: {} } });
        }
      }
      if (commands.length) await ctx.store.commands.enqueue(commands, ctx.tx);
    },
    ...(o.wake ? { wake: o.wake } : {}),
    adminActions: ['lock', 'wipe', 'restart', 'refresh'],
    adminAction: appleAdminAction,
  };
}

/** A six-digit PIN a person will type on the Mac's screen. */
const makePin = () => String(randomInt(0, 1_000_000)).padStart(6, '0');

async function appleAdminAction(ctx: AdminActionContext, device: DriverDevice, action: AdminAction): Promise<AdminActionResult> {
  const mac = appleFamily(device.model) === 'macos';
  // The PIN is sealed in the queue (store/commands.ts) and gone from it once the command is final.
  const one = (type: string, fields: Record<string, unknown>): NewCommand => ({ uuid: commandUuid(device.id, 'admin', type, ctx.requestId), deviceId: device.id, type, payload: { RequestType: type, fields }, priority: 50, ...('PIN' in fields ? { sealed: [['fields', 'PIN']] } : {}) });
  let commands: NewCommand[];
  let secrets: Record<string, string> | undefined;
  switch (action.kind) {
    case 'lock': {
      // A Mac is locked with a firmware PIN it asks for to unlock; iOS ignores PIN.
      const pin = mac ? (action.pin ?? makePin()) : undefined;
      if (pin) secrets = { pin };
      commands = [one('DeviceLock', { ...(pin ? { PIN: pin } : {}), ...(action.message ? { Message: action.message } : {}), ...(action.phoneNumber ? { PhoneNumber: action.phoneNumber } : {}) })];
      break;
    }
    case 'wipe': {
      const pin = mac ? (action.pin ?? makePin()) : undefined;
      if (pin) secrets = { pin };
      commands = [one('EraseDevice', { ...(pin ? { PIN: pin } : {}), ...(!mac && action.preserveDataPlan !== undefined ? { PreserveDataPlan: action.preserveDataPlan } : {}) })];
      break;
    }
    case 'restart':
      commands = [one('RestartDevice', {})];
      break;
    default:
      // refresh (reset-passcode is not offered: ClearPasscode needs an UnlockToken Muster does not keep).
      commands = [...inventoryCommands(device.id, ctx.requestId), { uuid: commandUuid(device.id, 'admin', 'ProfileList', ctx.requestId), deviceId: device.id, type: 'ProfileList', payload: { RequestType: 'ProfileList', fields: { ManagedOnly: true } }, priority: -10 }];
  }
  await ctx.store.commands.enqueue(commands, ctx.tx);
  return { commands: commands.map((c) => c.uuid), ...(secrets ? { secrets } : {}) };
}

/** A queued Apple command → the dictionary sent to the device; secrets resolved and the profile signed only now. */
export function renderAppleCommand(cmd: Command, o: { secret(name: string): string | undefined; signProfile?(plist: Buffer): Buffer }): Record<string, unknown> {
  const p = cmd.payload as { RequestType: string; fields?: Record<string, unknown> } & Partial<InstallPayload>;
  if (p.RequestType === 'InstallProfile' && p.profile) {
    const { profile, missing } = resolveProfileSecrets(p.profile, o.secret);
    if (missing.length) throw new Error(`secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set`);
    const bytes = encodePlist(profile);
    return commandDict(cmd.uuid, 'InstallProfile', { Payload: o.signProfile ? o.signProfile(bytes) : bytes });
  }
  return commandDict(cmd.uuid, p.RequestType, p.fields ?? {});
}

/**
 * What a finished command tells us about the device, as reported state:
 * InstallProfile / RemoveProfile outcomes at once, ProfileList as the truth,
 * DeviceInformation as device attributes. Publishes device.reported so the
 * reconciler recomputes sync state (and repairs drift).
 */
/** SecurityInfo as stored: plain values only (it holds no secrets, but can hold large binary blobs). */
function storableInfo(info: Record<string, unknown>, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(info)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else if (v instanceof Date) out[k] = v.toISOString();
    else if (typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && !Array.isArray(v) && depth < 3) out[k] = storableInfo(v as Record<string, unknown>, depth + 1);
  }
  return out;
}

export async function recordAppleResult(store: Store, cmd: Command, report: CommandReport): Promise<void> {
  const udid = cmd.deviceId;
  const ok = report.status === 'Acknowledged';
  if (report.status === 'NotNow') return;
  const lifecycle = deviceLifecycle(store);
  const p = cmd.payload as { identifier?: string; uuid?: string; fields?: { Identifier?: string } };
  // What the result says about the managed items (undefined: nothing).
  const nextItems = (prev: ReportedItems | undefined): ReportedItems | undefined => {
    const items: ReportedItems['items'] = { ...(prev?.items ?? {}) };
    let changed = false;
    if (cmd.type === 'InstallProfile' && p.identifier && p.uuid) {
      items[p.identifier] = ok ? { hash: p.uuid, status: 'installed' } : { hash: p.uuid, status: 'failed', error: report.errorChain.map((e) => e.description ?? e.code).join('; ') || report.status };
      changed = true;
    } else if (cmd.type === 'RemoveProfile' && ok && p.fields?.Identifier) {
      delete items[p.fields.Identifier];
      changed = true;
    } else if (cmd.type === 'ProfileList' && ok) {
      const listed = profileListOf(report.result);
      if (listed) {
        // The list is the truth for managed profiles; a failed install stays recorded until it changes.
        for (const id of Object.keys(items)) if (items[id]!.status === 'installed' && !id.startsWith(DDM_ITEM_PREFIX) && !listed.has(id)) delete items[id];
        for (const [id, uuid] of listed) if (id.startsWith(MANAGED_PREFIX)) items[id] = { hash: uuid, status: 'installed' };
        changed = true;
      }
    }
    return changed ? { items } : undefined;
  };
  await store.transaction(async (tx) => {
    await lifecycle.updateReported(udid, REPORTED_ITEMS, nextItems, tx);
    if (cmd.type === 'EraseDevice' && ok) {
      // The device confirmed it is erasing itself: it comes back, if at all, as a new enrollment.
      await lifecycle.unenroll(udid, { platform: 'apple', by: 'wipe', reason: 'the device confirmed the erase (EraseDevice acknowledged)', actor: `device:${udid}`, action: 'device.wiped', details: { command: cmd.uuid } }, tx);
    } else if (cmd.type === 'DeviceInformation' && ok) {
      const q = queryResponsesOf(report.result);
      if (q) {
        await store.devices.upsert({ id: udid, platform: 'apple', ...(q.OSVersion ? { osVersion: q.OSVersion } : {}), ...(q.SerialNumber ? { serialNumber: q.SerialNumber } : {}), ...(q.ModelName ? { model: q.ModelName } : {}) }, tx);
        await store.devices.report(udid, 'apple.deviceInformation', q, new Date(), tx);
      }
    } else if (cmd.type === 'SecurityInfo' && ok) {
      const info = (report.result.SecurityInfo ?? {}) as Record<string, unknown>;
      await store.devices.report(udid, 'apple.securityInfo', storableInfo(info), new Date(), tx);
      const device = await store.devices.get(udid, tx);
      const family = appleFamily(device?.model) ?? (device?.attributes.os as ReturnType<typeof appleFamily>);
      await store.devices.report(udid, POSTURE, { ...(family ? { osFamily: family } : {}), ...postureOf(info, family) }, new Date(), tx);
    } else if (cmd.type === 'InstalledApplicationList' && ok) {
      const apps = applicationsOf(report.result);
      if (apps) await store.devices.report(udid, 'apple.installedApplications', apps, new Date(), tx);
    }
  });
}

/**
 * A DeclarativeManagement status report: the configurations' statuses become
 * the `ddm:` items of reported state (valid and active = installed), software
 * update progress and the OS version are kept too.
 */
export async function recordDeclarationStatus(store: Store, udid: string, report: unknown): Promise<void> {
  const statuses = configurationStatuses(report);
  const items0 = (report as { StatusItems?: Record<string, unknown> } | null)?.StatusItems ?? {};
  const os = (items0.device as { 'operating-system'?: { version?: unknown } } | undefined)?.['operating-system']?.version;
  const su = items0.softwareupdate;
  await store.transaction(async (tx) => {
    if (typeof os === 'string' && /^\d+(\.\d+){0,3}$/.test(os)) await store.devices.upsert({ id: udid, platform: 'apple', osVersion: os }, tx);
    const suText = su && typeof su === 'object' ? JSON.stringify(su) : undefined;
    if (suText && suText.length <= 65_536) await store.devices.report(udid, 'apple.softwareUpdate', JSON.parse(suText), new Date(), tx);
    if (!statuses) return;
    await deviceLifecycle(store).updateReported<ReportedItems>(udid, REPORTED_ITEMS, (prev) => {
      const items: ReportedItems['items'] = { ...(prev?.items ?? {}) };
      // management.declarations, when present, lists every declaration the device holds.
      for (const id of Object.keys(items)) if (id.startsWith(DDM_ITEM_PREFIX)) delete items[id];
      for (const st of statuses) {
        // Only declarations compiled from bundles are items (not the status subscription or the activation).
        if (!st.identifier.startsWith(PROFILE_ID_PREFIX)) continue;
        const ok = st.valid === 'valid' && st.active;
        items[`${DDM_ITEM_PREFIX}${st.identifier}`] = ok ? { hash: st.serverToken, status: 'installed' } : { hash: st.serverToken, status: 'failed', error: st.reasons.join('; ') || `declaration ${st.valid}${st.active ? '' : ', not active'}` };
      }
      return { items };
    }, tx);
  });
}
