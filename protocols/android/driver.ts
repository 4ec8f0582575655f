// The Android PlatformDriver. A device holds one item, its AMAPI policy
// (`id` 'policy', hash = the policy id derived from its bundle hashes).
// Delivery only queues an `amapi.applyPolicy` command in the reconciler's
// transaction: the worker (worker.ts) makes the API calls, at the pace the
// quota allows, and nothing is lost if the process stops in between.
import { diffItems, type Action, type AdminAction, type AdminActionContext, type AdminActionResult, type DeliverContext, type DriverDevice, type NativeState, type PlatformDriver, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { commandUuid } from '../../controller/reconcile/reconciler.js';
import type { NewCommand } from '../../controller/store/index.js';
import { compileAndroidPolicy, policyIdFor, type AmapiPolicy } from './compile.js';

export const POLICY_ITEM = 'policy';
export const APPLY_POLICY = 'amapi.applyPolicy';
export const ISSUE_COMMAND = 'amapi.issueCommand';
export const DELETE_DEVICE = 'amapi.deleteDevice';
export const AMAPI_COMMANDS = [APPLY_POLICY, ISSUE_COMMAND, DELETE_DEVICE] as const;

export interface ApplyPolicyPayload {
  policyId: string;
  policy: AmapiPolicy;
}

export interface IssueCommandPayload {
  /** AMAPI Command type: LOCK, REBOOT, RESET_PASSWORD … */
  type: string;
  newPassword?: string;
}

export function createAndroidDriver(o: { wake?: (ids: readonly string[]) => Promise<void> } = {}): PlatformDriver {
  return {
    platform: 'android',
    compile(bundles: readonly ResolvedBundle[], _device: DriverDevice): NativeState {
      const mine = bundles.filter((b) => !b.spec.platforms || b.spec.platforms.includes('android'));
      const policyId = policyIdFor(mine.map((b) => b.hash));
      const policy = compileAndroidPolicy(mine);
      return {
        platform: 'android',
        items: [{ id: POLICY_ITEM, hash: policyId, sources: mine.map((b) => b.hash), summary: `AMAPI policy ${policyId} (${mine.map((b) => b.name).join(', ') || 'no bundles'})`, payload: { policyId, policy } satisfies ApplyPolicyPayload }],
      };
    },
    // A device always has exactly one policy: "remove" never applies (the empty set is a policy too).
    diff: (desired, reported) => diffItems(desired, reported).filter((a) => a.kind === 'install'),
    async deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void> {
      const commands: NewCommand[] = [];
      for (const { device, actions } of work) {
        for (const a of actions) {
          if (a.kind !== 'install') continue;
          commands.push({ uuid: commandUuid(device.id, APPLY_POLICY, a.item.hash, ctx.nonce(device.id)), deviceId: device.id, type: APPLY_POLICY, payload: a.item.payload as ApplyPolicyPayload, maxAttempts: 20 });
        }
      }
      if (commands.length) await ctx.store.commands.enqueue(commands, ctx.tx);
    },
    ...(o.wake ? { wake: o.wake } : {}),
    adminActions: ['lock', 'wipe', 'restart', 'reset-passcode'],
    adminAction: androidAdminAction,
  };
}

async function androidAdminAction(ctx: AdminActionContext, device: DriverDevice, action: AdminAction): Promise<AdminActionResult> {
  const uuid = commandUuid(device.id, 'admin', action.kind, ctx.requestId);
  let cmd: NewCommand;
  if (action.kind === 'wipe') {
    // AMAPI wipes a company-owned device by deleting it (and its work profile on a personal one).
    cmd = { uuid, deviceId: device.id, type: DELETE_DEVICE, payload: { wipeDataFlags: action.preserveDataPlan ? ['PRESERVE_RESET_PROTECTION_DATA'] : [] }, priority: 50 };
  } else {
    const type = action.kind === 'lock' ? 'LOCK' : action.kind === 'restart' ? 'REBOOT' : 'RESET_PASSWORD';
    const payload: IssueCommandPayload = { type, ...(action.kind === 'reset-passcode' && action.newPasscode ? { newPassword: action.newPasscode } : {}) };
    cmd = { uuid, deviceId: device.id, type: ISSUE_COMMAND, payload, priority: 50 };
  }
  await ctx.store.commands.enqueue(cmd, ctx.tx);
  return { commands: [uuid] };
}
