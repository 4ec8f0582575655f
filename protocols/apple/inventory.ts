// What Muster asks an Apple device about itself: at enrollment and when an
// admin asks for a refresh. The answers become device attributes, posture
// (for compliance) and the installed-application inventory (driver.ts).
import { commandUuid } from '../../controller/reconcile/reconciler.js';
import type { NewCommand, Store } from '../../controller/store/index.js';
import type { AppleFamily } from './profiles.js';

/** DeviceInformation queries: identity, OS and the few facts compliance and selectors use. */
export const DEVICE_INFORMATION_QUERIES = [
  'UDID', 'DeviceName', 'OSVersion', 'BuildVersion', 'ProductName', 'ModelName', 'Model', 'SerialNumber',
  'IsSupervised', 'IsActivationLockEnabled', 'DeviceCapacity', 'AvailableDeviceCapacity', 'WiFiMAC',
] as const;

/** Inventory commands, behind policy work (lower priority); `key` makes the UUIDs (same key, same commands). */
export function inventoryCommands(udid: string, key: string): NewCommand[] {
  const cmd = (type: string, fields: Record<string, unknown> = {}): NewCommand => ({ uuid: commandUuid(udid, 'inventory', type, key), deviceId: udid, type, payload: { RequestType: type, fields }, priority: -10 });
  return [
    cmd('DeviceInformation', { Queries: [...DEVICE_INFORMATION_QUERIES] }),
    cmd('SecurityInfo'),
    // Managed and unmanaged apps alike: inventory, not enforcement.
    cmd('InstalledApplicationList', { ManagedAppsOnly: false }),
  ];
}

/** Whether a SecurityInfo answer shows the device encrypted and with a passcode (what compliance judges). */
export function postureOf(info: Record<string, unknown>, family: AppleFamily | undefined): { encrypted?: boolean; passcodePresent?: boolean } {
  const out: { encrypted?: boolean; passcodePresent?: boolean } = {};
  if (typeof info.PasscodePresent === 'boolean') out.passcodePresent = info.PasscodePresent;
  if (typeof info.FDE_Enabled === 'boolean') out.encrypted = info.FDE_Enabled;
  else if (family !== 'macos' && typeof info.HardwareEncryptionCaps === 'number' && typeof info.PasscodePresent === 'boolean') {
    // iOS and iPadOS: data protection is on when the hardware has it (block- or file-level) and a passcode is set.
    out.encrypted = (info.HardwareEncryptionCaps & 3) !== 0 && info.PasscodePresent;
  }
  return out;
}

/** An InstalledApplicationList answer, bounded, as stored inventory. */
export function applicationsOf(result: Record<string, unknown>, limit = 5000): { count: number; apps: Array<{ identifier: string; name?: string; version?: string; shortVersion?: string }> } | undefined {
  const list = result.InstalledApplicationList;
  if (!Array.isArray(list)) return undefined;
  const apps = [];
  for (const a of list.slice(0, limit)) {
    if (typeof a !== 'object' || a === null) continue;
    const x = a as Record<string, unknown>;
    const s = (k: string) => (typeof x[k] === 'string' ? (x[k] as string).slice(0, 200) : undefined);
    const identifier = s('Identifier');
    if (!identifier) continue;
    apps.push({ identifier, ...(s('Name') ? { name: s('Name') } : {}), ...(s('Version') ? { version: s('Version') } : {}), ...(s('ShortVersion') ? { shortVersion: s('ShortVersion') } : {}) });
  }
  return { count: list.length, apps };
}

/**
 * Asks every enrolled Apple device whose security state is older than
 * `maxAgeMs` (or was never reported) for its inventory again, so compliance
 * is judged on current facts. The command ids are keyed by the age window,
 * so running this often queues each device's refresh once per window.
 * Returns the devices asked (to push them).
 */
export async function queueStaleInventory(store: Store, o: { maxAgeMs: number; now?: Date; pageSize?: number }): Promise<string[]> {
  const now = o.now ?? new Date();
  const window = String(Math.floor(now.getTime() / o.maxAgeMs));
  const asked: string[] = [];
  let afterId: string | undefined;
  for (;;) {
    const page = await store.devices.list({ platform: 'apple', limit: o.pageSize ?? 1000, ...(afterId ? { afterId } : {}) });
    if (page.length === 0) return asked;
    afterId = page[page.length - 1]!.id;
    const seen = await store.devices.reportedMany(page.map((d) => d.id), 'apple.securityInfo');
    for (const d of page) {
      const at = seen.get(d.id)?.reportedAt;
      if (at && now.getTime() - at.getTime() < o.maxAgeMs) continue;
      if ((await store.devices.getEnrollment(d.id))?.status !== 'enrolled') continue;
      const r = await store.commands.enqueue(inventoryCommands(d.id, `refresh:${window}`));
      if (r.inserted.length) asked.push(d.id);
    }
  }
}
