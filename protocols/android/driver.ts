// The Android PlatformDriver. A device holds one item, its AMAPI policy
// (`id` 'policy', hash = the policy id derived from its bundle hashes, so the
// appliedPolicyName a device reports is directly its reported state).
// Delivery only queues an `amapi.applyPolicy` command in the reconciler's
// transaction: the worker (worker.ts) makes the API calls, at the pace the
// quota allows, and nothing is lost if the process stops in between. Admin
// actions queue `amapi.issueCommand` (LOCK, REBOOT, RESET_PASSWORD),
// `amapi.deleteDevice` (wipe) or `amapi.getDevice` (refresh) the same way.
import { diffItems, type Action, type AdminAction, type AdminActionContext, type AdminActionResult, type DeliverContext, type DriverDevice, type NativeState, type PlatformDriver, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { commandUuid } from '../../controller/reconcile/reconciler.js';
import type { NewCommand } from '../../controller/store/index.js';
import { compileAndroidPolicy, forAndroid, policyIdFor, type AmapiPolicy } from './compile.js';

export const POLICY_ITEM = 'policy';
export const APPLY_POLICY = 'amapi.applyPolicy';
export const ISSUE_COMMAND = 'amapi.issueCommand';
export const DELETE_DEVICE = 'amapi.deleteDevice';
/** Reads the Device again (devices.get) and stores it as a status report. */
export const GET_DEVICE = 'amapi.getDevice';
export const AMAPI_COMMANDS = [APPLY_POLICY, ISSUE_COMMAND, DELETE_DEVICE, GET_DEVICE] as const;

/**
 * What an applyPolicy command carries: the policy id and the bundle hashes it
 * is compiled from (the worker compiles it again from the stored bundles, so
 * 50,000 queued commands do not hold 50,000 copies of the policy). `policy`
 * may be given instead (tools, tests).
 */
export interface ApplyPolicyPayload {
  policyId: string;
  bundles?: string[];
  policy?: AmapiPolicy;
}

export interface IssueCommandPayload {
  /** AMAPI Command type: LOCK, REBOOT, RESET_PASSWORD. */
  type: 'LOCK' | 'REBOOT' | 'RESET_PASSWORD';
  newPassword?: string;
}

export interface DeleteDevicePayload {
  /** devices.delete wipeDataFlags (WIPE_ESIMS …). */
  wipeDataFlags: string[];
}

export function createAndroidDriver(o: { wake?: (ids: readonly string[]) => Promise<void> } = {}): PlatformDriver {
  return {
    platform: 'android',
    compile(bundles: readonly ResolvedBundle[], _device: DriverDevice): NativeState {
      const mine = bundles.filter((b) => forAndroid(b.spec));
      const policyId = policyIdFor(mine.map((b) => b.hash));
      const policy = compileAndroidPolicy(mine);
      return {
        platform: 'android',
        // The item's payload is the whole policy (plans and render show it); the queued command carries only the hashes.
        items: [{ id: POLICY_ITEM, hash: policyId, sources: mine.map((b) => b.hash), summary: `AMAPI policy ${policyId} (${mine.map((b) => b.name).join(', ') || 'no bundles'})`, payload: { policyId, bundles: mine.map((b) => b.hash).sort(), policy } }],
      };
    },
    // A device always has exactly one policy: "remove" never applies (the empty set is a policy too).
    diff: (desired, reported) => diffItems(desired, reported).filter((a) => a.kind === 'install'),
    async deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void> {
      const commands: NewCommand[] = [];
      for (const { device, actions } of work) {
        for (const a of actions) {
          if (a.kind !== 'install') continue;
          const { policyId, bundles } = a.item.payload as Required<Pick<ApplyPolicyPayload, 'policyId' | 'bundles'>>;
          commands.push({ uuid: commandUuid(device.id, APPLY_POLICY, a.item.hash, ctx.nonce(device.id)), deviceId: device.id, type: APPLY_POLICY, payload: { policyId, bundles } satisfies ApplyPolicyPayload, maxAttempts: 20 });
        }
      }
      if (commands.length) await ctx.store.commands.enqueue(commands, ctx.tx);
    },
    ...(o.wake ? { wake: o.wake } : {}),
    adminActions: ['lock', 'wipe', 'restart', 'reset-passcode', 'refresh'],
    adminAction: androidAdminAction,
  };
}

async function androidAdminAction(ctx: AdminActionContext, device: DriverDevice, action: AdminAction): Promise<AdminActionResult> {
  const uuid = commandUuid(device.id, 'admin', action.kind, ctx.requestId);
  let cmd: NewCommand;
  if (action.kind === 'refresh') {
    cmd = { uuid, deviceId: device.id, type: GET_DEVICE, payload: {}, priority: 50 };
  } else if (action.kind === 'wipe') {
    // AMAPI wipes a company-owned device (and removes the work profile of a personal one) by deleting it.
    // eSIMs survive a wipe unless WIPE_ESIMS is given: only an explicit "do not preserve the data plan" removes them.
    const payload: DeleteDevicePayload = { wipeDataFlags: action.preserveDataPlan === false ? ['WIPE_ESIMS'] : [] };
    cmd = { uuid, deviceId: device.id, type: DELETE_DEVICE, payload, priority: 50 };
  } else {
    const type = action.kind === 'lock' ? 'LOCK' : action.kind === 'restart' ? 'REBOOT' : 'RESET_PASSWORD';
    // The new passcode rides in the queued command sealed (as Apple's PINs do), leaves it once the command is final, and is never written to the audit log.
    const payload: IssueCommandPayload = { type, ...(action.kind === 'reset-passcode' && action.newPasscode ? { newPassword: action.newPasscode } : {}) };
    cmd = { uuid, deviceId: device.id, type: ISSUE_COMMAND, payload, priority: 50, ...(payload.newPassword ? { sealed: [['newPassword']] } : {}) };
  }
  await ctx.store.commands.enqueue(cmd, ctx.tx);
  const amapi = cmd.type === DELETE_DEVICE ? 'devices.delete' : cmd.type === GET_DEVICE ? 'devices.get' : `issueCommand ${(cmd.payload as IssueCommandPayload).type}`;
  return { commands: [uuid], details: { amapi } };
}
