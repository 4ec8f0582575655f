// Admin actions on one device (lock, wipe, restart, reset passcode, refresh
// inventory): checked here, queued by the device's platform driver, and
// written to the audit log in the same transaction, so an action that was
// queued is always on record and one that is on record was queued.
import { randomUUID } from 'node:crypto';
import type { Platform } from '../policy/types.js';
import { ADMIN_ACTIONS, type AdminAction, type AdminActionKind, type PlatformDriver } from '../reconcile/driver.js';
import { type Store, AuditKeyMissingError, SecretKeyMissingError } from '../store/index.js';

/** A request that cannot be carried out; `status` is the HTTP status the API answers with. */
export class AdminActionError extends Error {
  override name = 'AdminActionError';
  constructor(
    message: string,
    readonly status: 400 | 404 | 409 | 503,
  ) {
    super(message);
  }
}

export interface AdminActionRequest {
  message?: unknown;
  phoneNumber?: unknown;
  pin?: unknown;
  preserveDataPlan?: unknown;
  newPasscode?: unknown;
  /** For wipe: the device id again, so a wrong id or a slip never erases a device. */
  confirm?: unknown;
}

export interface AdminActionOutcome {
  deviceId: string;
  platform: Platform;
  action: AdminActionKind;
  commands: string[];
  secrets?: Record<string, string>;
}

const str = (v: unknown, name: string, max: number): string | undefined => {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || v.length > max || [...v].some((c) => c.charCodeAt(0) < 0x20)) throw new AdminActionError(`${name} must be a string of at most ${max} characters without control characters`, 400);
  return v;
};

/** The action as the driver gets it, from the kind and the request body; rejects what no protocol would accept. */
export function parseAdminAction(kind: string, deviceId: string, body: AdminActionRequest = {}): AdminAction {
  if (!(ADMIN_ACTIONS as readonly string[]).includes(kind)) throw new AdminActionError(`unknown action "${kind}" (one of: ${ADMIN_ACTIONS.join(', ')})`, 400);
  const pin = str(body.pin, 'pin', 6);
  if (pin !== undefined && !/^\d{6}$/.test(pin)) throw new AdminActionError('pin must be six digits', 400);
  switch (kind as AdminActionKind) {
    case 'lock': {
      const message = str(body.message, 'message', 200);
      const phoneNumber = str(body.phoneNumber, 'phoneNumber', 32);
      return { kind: 'lock', ...(message ? { message } : {}), ...(phoneNumber ? { phoneNumber } : {}), ...(pin ? { pin } : {}) };
    }
    case 'wipe':
      if (body.confirm !== deviceId) throw new AdminActionError(`erasing a device cannot be undone: repeat its id as "confirm" (muster devices wipe ${deviceId} --yes)`, 400);
      if (body.preserveDataPlan !== undefined && typeof body.preserveDataPlan !== 'boolean') throw new AdminActionError('preserveDataPlan must be true or false', 400);
      return { kind: 'wipe', ...(pin ? { pin } : {}), ...(body.preserveDataPlan !== undefined ? { preserveDataPlan: body.preserveDataPlan as boolean } : {}) };
    case 'reset-passcode': {
      const newPasscode = str(body.newPasscode, 'newPasscode', 64);
      return { kind: 'reset-passcode', ...(newPasscode ? { newPasscode } : {}) };
    }
    case 'restart':
      return { kind: 'restart' };
    case 'refresh':
      return { kind: 'refresh' };
  }
}

export async function runAdminAction(
  store: Store,
  drivers: ReadonlyMap<Platform, PlatformDriver>,
  deviceId: string,
  action: AdminAction,
  actor: string,
): Promise<AdminActionOutcome> {
  const device = await store.devices.get(deviceId);
  if (!device) throw new AdminActionError(`no device "${deviceId}"`, 404);
  const driver = drivers.get(device.platform);
  if (!driver?.adminAction || !driver.adminActions?.includes(action.kind)) {
    const can = driver?.adminActions ?? [];
    throw new AdminActionError(`${device.platform} devices cannot ${action.kind} here${can.length ? ` (they can: ${can.join(', ')})` : ''}`, 400);
  }
  const enrollment = await store.devices.getEnrollment(deviceId);
  if (enrollment && enrollment.status === 'unenrolled') throw new AdminActionError(`device "${deviceId}" is unenrolled: nothing can reach it`, 409);
  const result = await store.transaction(async (tx) => {
    const r = await driver.adminAction!({ store, tx, actor, requestId: randomUUID() }, { id: device.id, platform: device.platform, osVersion: device.osVersion, model: device.model }, action);
    await store.audit.append(
      {
        actor,
        action: `device.${action.kind}`,
        subject: `device/${deviceId}`,
        // Parameters that are secrets (PIN, passcode) are recorded as present, never as values.
        details: { commands: r.commands, ...(action.kind === 'lock' && action.message ? { message: action.message } : {}), ...(r.secrets ? { secrets: Object.keys(r.secrets) } : {}), ...r.details },
      },
      tx,
    );
    return r;
  }).catch((e: unknown) => {
    // A PIN or password is never stored in clear, and every action is audited under the key: without it nothing is queued.
    if (e instanceof SecretKeyMissingError || e instanceof AuditKeyMissingError) throw new AdminActionError(e.message, 503);
    throw e;
  });
  await driver.wake?.([deviceId]).catch(() => undefined);
  return { deviceId, platform: device.platform, action: action.kind, commands: result.commands, ...(result.secrets ? { secrets: result.secrets } : {}) };
}
