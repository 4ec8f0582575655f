// The simulated platform driver: what the reconciler needs from a driver,
// with the simplest native form there is — one item per bundle, named for the
// bundle and carrying its hash. It stands in for every platform whose real
// driver is not loaded, and proves the seam with a fleet that behaves like
// devices (simulated/fleet.ts).
import { diffItems, type Action, type DeliverContext, type DriverDevice, type NativeState, type PlatformDriver, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { commandUuid } from '../../controller/reconcile/reconciler.js';
import type { Platform } from '../../controller/policy/types.js';

export const INSTALL = 'sim.InstallItem';
export const REMOVE = 'sim.RemoveItem';
/** An admin action (lock, wipe …): the simulated device records that it happened. */
export const ADMIN = 'sim.AdminAction';

export interface InstallPayload {
  id: string;
  hash: string;
  bundle: string;
  version: string;
}

export function createSimulatedDriver(platform: Platform, opts: { wake?: (ids: readonly string[]) => Promise<void> } = {}): PlatformDriver {
  return {
    platform,
    compile(bundles: readonly ResolvedBundle[], _device: DriverDevice): NativeState {
      const items = bundles
        .filter((b) => !b.spec.platforms || b.spec.platforms.includes(platform))
        .map((b) => ({
          id: `bundle/${b.name}`,
          hash: b.hash,
          sources: [b.hash],
          summary: `${b.name} ${b.version}`,
          payload: { id: `bundle/${b.name}`, hash: b.hash, bundle: b.name, version: b.version } satisfies InstallPayload,
        }))
        .sort((a, b) => a.id.localeCompare(b.id));
      return { platform, items };
    },
    diff: diffItems,
    async deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void> {
      const commands = work.flatMap(({ device, actions }) => {
        const nonce = ctx.nonce(device.id);
        return actions.map((a: Action) =>
          a.kind === 'install'
            ? { uuid: commandUuid(device.id, 'install', a.item.id, a.item.hash, nonce), deviceId: device.id, type: INSTALL, payload: a.item.payload }
            : { uuid: commandUuid(device.id, 'remove', a.id, nonce), deviceId: device.id, type: REMOVE, payload: { id: a.id } },
        );
      });
      if (commands.length) await ctx.store.commands.enqueue(commands, ctx.tx);
    },
    ...(opts.wake ? { wake: opts.wake } : {}),
    adminActions: ['lock', 'wipe', 'restart', 'reset-passcode', 'refresh'],
    async adminAction(ctx, device, action) {
      const uuid = commandUuid(device.id, ADMIN, action.kind, ctx.requestId);
      await ctx.store.commands.enqueue({ uuid, deviceId: device.id, type: ADMIN, payload: { kind: action.kind }, priority: 50 }, ctx.tx);
      return { commands: [uuid] };
    },
  };
}
