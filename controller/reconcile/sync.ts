// Sync state per assignment, pure: does the device hold what this rollout's
// bundle compiles to? Synced (every item reported with the desired hash),
// Failed (the device reported failure for an item of this bundle), Pending
// (actions are queued and the device has not answered), OutOfSync (it differs
// and nothing is queued, e.g. paced, or no driver for the platform).
import type { SyncState } from '../store/index.js';
import type { Action, NativeState, ReportedItems } from './driver.js';

export interface SyncResult {
  sync: SyncState;
  detail: string;
}

export function syncOf(bundleHash: string, desired: NativeState, reported: ReportedItems | undefined, queued: readonly Action[]): SyncResult {
  const items = desired.items.filter((i) => i.sources.includes(bundleHash));
  const have = reported?.items ?? {};
  for (const i of items) {
    const r = have[i.id];
    if (r && r.hash === i.hash && r.status === 'failed') return { sync: 'Failed', detail: `${i.id}: ${r.error ?? 'failed'}` };
  }
  const missing = items.filter((i) => have[i.id]?.hash !== i.hash || have[i.id]?.status !== 'installed');
  if (missing.length === 0) return { sync: 'Synced', detail: '' };
  const queuedIds = new Set(queued.flatMap((a) => (a.kind === 'install' ? [a.item.id] : [])));
  const detail = `${missing.length} of ${items.length} item(s) not yet reported: ${missing
    .slice(0, 3)
    .map((i) => i.id)
    .join(', ')}`;
  return { sync: missing.every((i) => queuedIds.has(i.id)) ? 'Pending' : 'OutOfSync', detail };
}

/** The worst of a device's assignments, for the per-device view. */
export function worstSync(states: readonly SyncState[]): SyncState {
  for (const s of ['Failed', 'OutOfSync', 'Pending'] as const) if (states.includes(s)) return s;
  return 'Synced';
}
