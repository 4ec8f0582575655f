// The one seam between the controller and a device-management protocol.
//
// A driver turns the bundles a device should have into the platform's native
// items (compile), compares them with what the device last reported (diff),
// and hands the resulting actions to the protocol (deliver). compile and diff
// are pure, so `muster plan` runs exactly what the reconciler runs; deliver is
// the only I/O, and it only enqueues work in the store inside the caller's
// transaction — the protocol's own endpoints send it when the device connects.
import type { Platform, PolicyBundleSpec } from '../policy/types.js';
import type { Queryable, Store } from '../store/index.js';

/** A bundle as the controller resolved it for one device. */
export interface ResolvedBundle {
  name: string;
  version: string;
  /** sha256:… of the canonical name + spec. */
  hash: string;
  spec: PolicyBundleSpec;
  /** The rollout that assigns it (for labels and audit). */
  rollout: string;
}

/** What a driver may know about a device when it compiles (OS version decides some payloads). */
export interface DriverDevice {
  id: string;
  platform: Platform;
  osVersion: string | null;
  model: string | null;
}

/**
 * One thing a device should hold: an Apple configuration profile, a Windows
 * CSP node value, an AMAPI policy. `id` is how the device names it back to us;
 * `hash` is the content the device must report to count as converged.
 * Secret references (`${secret:NAME}`) stay unresolved in `payload`: they are
 * resolved at delivery, so plans, hashes and the database never hold secrets.
 */
export interface NativeItem {
  id: string;
  hash: string;
  /** Bundle hashes this item came from (a failure reported for it fails them). */
  sources: string[];
  /** A short human description for plans: "profile dev.muster.corp-baseline (5 payloads)". */
  summary: string;
  payload: unknown;
}

export interface NativeState {
  platform: Platform;
  /** Sorted by id. */
  items: NativeItem[];
}

/** What a device last reported about the items Muster manages on it. */
export interface ReportedItems {
  items: Record<string, { hash: string; status: 'installed' | 'failed'; error?: string }>;
}

export type Action =
  | { kind: 'install'; item: NativeItem; /** true when the device holds an older hash of this item */ replaces: boolean }
  | { kind: 'remove'; id: string };

export interface DeliverContext {
  store: Store;
  /** The reconciler's transaction: enqueue through it so actions and assignments commit together. */
  tx: Queryable;
  /** Secret lookup for `${secret:NAME}`; undefined when the secret is missing. */
  secret(name: string): string | undefined;
  /**
   * Mix into command ids: a token of the device's last report (time and
   * content digest; '' before any). The same work decided from the same
   * report gets the same id (a no-op when repeated); once the device has
   * reported again, the same item can be sent again (after a removal, or to
   * repair drift).
   */
  nonce(deviceId: string): string;
}

/**
 * Something a person asks of one device, outside policy: lock it, erase it,
 * restart it, reset its passcode, or refresh what it reports. Each platform
 * supports the ones its protocol has (PlatformDriver.adminActions).
 */
export type AdminAction =
  | { kind: 'lock'; message?: string; phoneNumber?: string; /** macOS needs a six-digit PIN to unlock; made up when absent. */ pin?: string }
  | { kind: 'wipe'; pin?: string; preserveDataPlan?: boolean }
  | { kind: 'restart' }
  | { kind: 'reset-passcode'; newPasscode?: string }
  | { kind: 'refresh' };
export type AdminActionKind = AdminAction['kind'];
export const ADMIN_ACTIONS: readonly AdminActionKind[] = ['lock', 'wipe', 'restart', 'reset-passcode', 'refresh'];

export interface AdminActionContext {
  store: Store;
  /** Enqueue through it: the action and its audit entry commit together. */
  tx: Queryable;
  /** Who asked (a token name), for command ids and audit. */
  actor: string;
  /** A fresh id per request, so asking twice locks twice. */
  requestId: string;
}

export interface AdminActionResult {
  /** Queued command UUIDs. */
  commands: string[];
  /** Anything the person must keep (the PIN that unlocks a Mac). Not written to the audit log. */
  secrets?: Record<string, string>;
  /** What to record in the audit log besides the action. */
  details?: Record<string, unknown>;
}

export interface PlatformDriver {
  readonly platform: Platform;
  /** Pure: the native items a device should hold for these bundles. */
  compile(bundles: readonly ResolvedBundle[], device: DriverDevice): NativeState;
  /** Pure: what to do to move a device from `reported` to `desired`. */
  diff(desired: NativeState, reported: ReportedItems | undefined): Action[];
  /**
   * Queue the actions for these devices (commands, a policy patch …) through
   * ctx.tx, in as few statements as the protocol allows: the reconciler calls
   * this once per batch of devices. Idempotent: the same actions decided from
   * the same report must not queue twice (derive command UUIDs from device,
   * item, hash and ctx.nonce(device)).
   */
  deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void>;
  /** Optional: ask devices with queued work to connect now (APNs push, MQTT …). Called after commit. */
  wake?(deviceIds: readonly string[]): Promise<void>;
  /** The admin actions this platform can carry out. */
  readonly adminActions?: readonly AdminActionKind[];
  /** Queue an admin action for one device through ctx.tx (only kinds listed in adminActions are passed). */
  adminAction?(ctx: AdminActionContext, device: DriverDevice, action: AdminAction): Promise<AdminActionResult>;
}

/** The diff every item-based driver can use: install what is missing or different, remove what is no longer wanted. */
export function diffItems(desired: NativeState, reported: ReportedItems | undefined): Action[] {
  const have = reported?.items ?? {};
  const actions: Action[] = [];
  const wanted = new Set<string>();
  for (const item of desired.items) {
    wanted.add(item.id);
    const r = have[item.id];
    // A failure reported for this very hash is not retried here (the command
    // queue already retried it); the device shows as Failed until the content changes.
    if (!r || r.hash !== item.hash) actions.push({ kind: 'install', item, replaces: !!r });
  }
  for (const id of Object.keys(have).sort()) if (!wanted.has(id)) actions.push({ kind: 'remove', id });
  return actions;
}
