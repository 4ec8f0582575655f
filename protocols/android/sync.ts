// The periodic repair: every device AMAPI knows, page by page, stored as if
// its last status report had arrived by Pub/Sub (the same Device changes
// nothing, older reports never win), so a lost notification is made good at
// the next sync. AMAPI sends no notification when a device is deleted: a
// device Muster holds as enrolled that the complete list no longer has is
// marked unenrolled. The same pass deletes Muster's policies (m-…) that no
// device uses, none should use, and no live enrollment token names.
import type { Store } from '../../controller/store/index.js';
import { AmapiError, type Amapi } from './client.js';
import { BASE_POLICY_ID, forAndroid, policyIdFor } from './compile.js';
import { markDeviceGone, recordDeviceStatus, recordOperation, type AndroidEnrollmentState, type StatusOutcome } from './status.js';
import type { PolicyBundleSpec } from '../../controller/policy/types.js';
import { lastSegment } from './wire.js';

export interface SyncResult {
  devices: number;
  outcomes: Record<StatusOutcome, number>;
  /** Muster devices AMAPI no longer lists, now unenrolled. */
  gone: string[];
  /** Issued commands found finished by operations.get (their notification was lost). */
  operations: number;
  deletedPolicies: string[];
  /** Policies AMAPI would not delete (still in use on its side). */
  keptPolicies: string[];
}

export interface SyncOptions {
  enterprise: string;
  /** More policy ids never to delete. */
  keepPolicies?: () => Iterable<string> | Promise<Iterable<string>>;
  /** Told of each policy deleted (the worker forgets it made sure of it, and makes it again if asked). */
  onPolicyDeleted?: (policyId: string) => void;
  pageSize?: number;
  /** Default true. */
  deletePolicies?: boolean;
  log?: { warn(msg: string, f?: Record<string, unknown>): void };
  now?: () => Date;
}

export async function syncAndroid(store: Store, amapi: Amapi, o: SyncOptions): Promise<SyncResult> {
  const started = o.now?.() ?? new Date();
  const used = new Set<string>();
  const seen = new Set<string>();
  const outcomes: Record<StatusOutcome, number> = { stored: 0, duplicate: 0, stale: 0, ignored: 0 };
  let devices = 0;
  let pageToken: string | undefined;
  do {
    const page = await amapi.listDevices(o.enterprise, pageToken, o.pageSize ?? 100);
    for (const d of page.devices ?? []) {
      devices++;
      for (const p of [d.policyName, d.appliedPolicyName]) if (p) used.add(lastSegment(p)!);
      if (d.name) seen.add(lastSegment(d.name)!);
      outcomes[await recordDeviceStatus(store, d, { enterprise: o.enterprise })]++;
    }
    pageToken = page.nextPageToken ?? undefined;
  } while (pageToken);

  // The list was complete: enrolled devices it lacks were deleted (unless they enrolled while it ran).
  // Commands still running are looked up, in case their COMMAND notification was lost.
  const gone: string[] = [];
  let operations = 0;
  for (let after: string | undefined; ; ) {
    const page = await store.devices.list({ platform: 'android', limit: 1000, ...(after !== undefined ? { afterId: after } : {}) });
    for (const d of page) {
      const e = await store.devices.getEnrollment(d.id);
      if (!seen.has(d.id)) {
        if (e?.status === 'enrolled' && e.updatedAt < started && (await markDeviceGone(store, d.id, 'the device is no longer in the Android enterprise'))) gone.push(d.id);
        continue;
      }
      for (const name of Object.keys(((e?.state ?? {}) as Partial<AndroidEnrollmentState>).operations ?? {})) {
        const op = await amapi.getOperation(name).catch((err: unknown) => {
          if (err instanceof AmapiError && err.status === 404) return { name, done: true, error: { code: 5, message: 'the operation is gone' } };
          throw err;
        });
        if (op.done && (await recordOperation(store, op, { enterprise: o.enterprise })) === 'stored') operations++;
      }
    }
    if (page.length < 1000) break;
    after = page[page.length - 1]!.id;
  }

  const deletedPolicies: string[] = [];
  const keptPolicies: string[] = [];
  if (o.deletePolicies !== false) {
    const keep = new Set([...used, BASE_POLICY_ID, ...(await desiredPolicies(store)), ...(await tokenPolicies(amapi, o.enterprise)), ...((await o.keepPolicies?.()) ?? [])]);
    pageToken = undefined;
    do {
      const page = await amapi.listPolicies(o.enterprise, pageToken);
      for (const p of page.policies ?? []) {
        const id = lastSegment(p.name);
        if (!p.name || !id?.startsWith('m-') || keep.has(id)) continue;
        try {
          await amapi.deletePolicy(p.name);
          deletedPolicies.push(id);
          o.onPolicyDeleted?.(id);
        } catch (e) {
          // AMAPI refuses to delete a policy a device references: it is in use after all.
          if (!(e instanceof AmapiError && e.status !== undefined && e.status >= 400 && e.status < 500 && e.status !== 429)) throw e;
          keptPolicies.push(id);
          o.log?.warn('AMAPI kept a policy Muster found unused', { policy: id, error: e.message });
        }
      }
      pageToken = page.nextPageToken ?? undefined;
    } while (pageToken);
  }
  return { devices, outcomes, gone, operations, deletedPolicies, keptPolicies };
}

/** The policy every device should have now, from the assignments (so a policy about to be used is never deleted). */
export async function desiredPolicies(store: Store): Promise<Set<string>> {
  const byDevice = new Map<string, Set<string>>();
  for await (const page of store.assignments.all()) {
    for (const a of page) {
      let s = byDevice.get(a.deviceId);
      if (!s) byDevice.set(a.deviceId, (s = new Set()));
      s.add(a.bundleHash);
    }
  }
  const android = new Map<string, boolean>();
  const reaches = async (hash: string) => {
    let v = android.get(hash);
    if (v === undefined) {
      const b = await store.bundles.get(hash);
      v = !!b && forAndroid((b.content as { spec: PolicyBundleSpec }).spec);
      android.set(hash, v);
    }
    return v;
  };
  const out = new Set<string>();
  for (const hashes of byDevice.values()) {
    const mine: string[] = [];
    for (const h of hashes) if (await reaches(h)) mine.push(h);
    out.add(policyIdFor(mine));
  }
  return out;
}

/** Policies that live enrollment tokens will give the devices enrolling with them. */
async function tokenPolicies(amapi: Amapi, enterprise: string): Promise<string[]> {
  const out: string[] = [];
  let pageToken: string | undefined;
  do {
    const page = await amapi.listEnrollmentTokens(enterprise, pageToken);
    for (const t of page.enrollmentTokens ?? []) if (t.policyName) out.push(lastSegment(t.policyName)!);
    pageToken = page.nextPageToken ?? undefined;
  } while (pageToken);
  return out;
}
