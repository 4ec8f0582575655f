// The periodic repair: every device AMAPI knows, page by page, stored as if
// its last status report had arrived by Pub/Sub (older reports never win), so
// a lost notification is made good at the next sync. The same pass collects
// the policies devices use and deletes Muster's policies none uses any more.
import type { Store } from '../../controller/store/index.js';
import type { Amapi } from './client.js';
import { recordDeviceStatus } from './status.js';

export interface SyncResult {
  devices: number;
  stored: number;
  deletedPolicies: string[];
}

export async function syncAndroid(store: Store, amapi: Amapi, o: { enterprise: string; keepPolicies?: () => readonly string[]; pageSize?: number }): Promise<SyncResult> {
  const used = new Set<string>();
  let devices = 0;
  let stored = 0;
  let pageToken: string | undefined;
  do {
    const page = await amapi.listDevices(o.enterprise, pageToken, o.pageSize ?? 100);
    for (const d of page.devices ?? []) {
      devices++;
      for (const p of [d.policyName, d.appliedPolicyName]) if (p) used.add(p.slice(p.lastIndexOf('/') + 1));
      if ((await recordDeviceStatus(store, d, { enterprise: o.enterprise })) === 'stored') stored++;
    }
    pageToken = page.nextPageToken ?? undefined;
  } while (pageToken);

  // Only Muster's own policies (m-…), and never one this process has just made for devices not yet moved.
  for (const keep of o.keepPolicies?.() ?? []) used.add(keep);
  const deletedPolicies: string[] = [];
  pageToken = undefined;
  do {
    const page = await amapi.listPolicies(o.enterprise, pageToken);
    for (const p of page.policies ?? []) {
      const id = p.name?.slice(p.name.lastIndexOf('/') + 1);
      if (!p.name || !id?.startsWith('m-') || used.has(id)) continue;
      await amapi.deletePolicy(p.name);
      deletedPolicies.push(id);
    }
    pageToken = page.nextPageToken ?? undefined;
  } while (pageToken);
  return { devices, stored, deletedPolicies };
}
