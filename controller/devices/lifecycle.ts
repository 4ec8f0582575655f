// The device lifecycle, one for every protocol: who a presented identity is
// (check), whether it may take a device id (claim), enrolling, unenrolling,
// retiring, and recording what a device reports. Apple, Windows, Android and
// the agent call these instead of sequencing store calls themselves, so the
// identity rules of docs/security.md hold in one place:
//
// - an identity records the platform and protocol that issued it and the
//   credential it was issued under, and is bound once, to one device id of its
//   own platform;
// - a second identity may claim a device id only when the device has no live
//   identity, when its credential was issued by an admin for that device, or
//   when it is a renewal signed with the device's current identity;
// - anything else is refused, audited as a takeover attempt, and changes
//   nothing: the live device keeps working.
import { ENROLLMENT_GROUP_ATTRIBUTE } from '../policy/selector.js';
import type { Platform } from '../policy/types.js';
import type { Device, DeviceInput, EnrollmentStatus, Identity, IdentityInput, Queryable, Store } from '../store/index.js';

/** Why a presented identity is not accepted for a device. */
export type IdentityRefusal =
  /** Nothing was presented. */
  | 'missing'
  /** Not issued by this server. */
  | 'unknown'
  | 'revoked'
  | 'expired'
  /** Issued but not bound to a device yet (Apple: Authenticate first). */
  | 'unbound'
  /** Bound to another device id. */
  | 'other-device'
  /** Issued for another platform, or the device id belongs to another platform. */
  | 'other-platform'
  /** The enrollment credential was issued by an admin for another device. */
  | 'credential-for-other-device'
  /** The device is enrolled with another identity that is still live: a takeover attempt. */
  | 'device-has-live-identity';

export const REFUSAL_TEXT: Record<IdentityRefusal, string> = {
  missing: 'no device identity was presented',
  unknown: 'the identity was not issued by this server',
  revoked: 'the identity is revoked',
  expired: 'the identity has expired',
  unbound: 'the identity is not bound to a device yet',
  'other-device': 'the identity belongs to another device',
  'other-platform': 'the identity or the device belongs to another platform',
  'credential-for-other-device': 'the enrollment credential was issued for another device',
  'device-has-live-identity': 'the device is enrolled with another identity that is still valid (an admin must retire it or issue a credential for this device)',
};

export type IdentityCheck = { ok: true; identity: Identity; deviceId: string } | { ok: false; reason: IdentityRefusal; message: string };

/** How a claim on a device id is allowed. */
export type ClaimKind =
  /** No device had this id. */
  | 'new'
  /** The identity is already bound to this device (a repeated Authenticate). */
  | 'same'
  /** The device exists but has no live identity (checked out, unenrolled, retired, wiped, expired). */
  | 're-enrollment'
  /** An admin issued the credential for this device. */
  | 'approved'
  /** Signed with the device's current identity. */
  | 'renewal';

export type ClaimDecision = { ok: true; kind: ClaimKind } | { ok: false; reason: IdentityRefusal; message: string };

/** What the claim is decided on: the claiming identity (stored or about to be issued). */
export interface Claimant {
  certSha256?: string;
  platform: Platform;
  deviceId?: string | null;
  forDevice?: string | null;
  renewalOf?: string | null;
}

/**
 * Pure: may `claimant` take device `deviceId` of `platform`, given the device
 * as stored (if any) and its live identities?
 */
export function decideClaim(claimant: Claimant, deviceId: string, platform: Platform, device: Pick<Device, 'platform'> | undefined, live: readonly Pick<Identity, 'certSha256'>[]): ClaimDecision {
  const no = (reason: IdentityRefusal): ClaimDecision => ({ ok: false, reason, message: REFUSAL_TEXT[reason] });
  if (claimant.platform !== platform || (device && device.platform !== platform)) return no('other-platform');
  if (claimant.deviceId && claimant.deviceId !== deviceId) return no('other-device');
  if (claimant.forDevice && claimant.forDevice !== deviceId) return no('credential-for-other-device');
  if (claimant.deviceId === deviceId) return { ok: true, kind: 'same' };
  if (!device) return { ok: true, kind: 'new' };
  const others = live.filter((l) => l.certSha256 !== claimant.certSha256);
  if (claimant.renewalOf && others.some((l) => l.certSha256 === claimant.renewalOf)) return { ok: true, kind: 'renewal' };
  if (claimant.forDevice === deviceId) return { ok: true, kind: 'approved' };
  if (others.length === 0) return { ok: true, kind: 're-enrollment' };
  return no('device-has-live-identity');
}

/** A claim refused: the caller answers with its protocol's refusal (403 for Apple and Windows, a SOAP fault for enrollment). */
export class IdentityRefused extends Error {
  override name = 'IdentityRefused';
  constructor(
    readonly reason: IdentityRefusal,
    message: string,
  ) {
    super(message);
  }
}

export interface EnrollInput {
  /** The device as the protocol describes it; platform must match the identity's. */
  device: DeviceInput;
  /** The identity taking the device: an issued one (by SHA-256), or one issued in this enrollment. */
  identity: { certSha256: string } | IdentityInput;
  enrollment: { status: EnrollmentStatus; state: Record<string, unknown> };
  /** Audit actor ("device:ID", "wstep" …) and what to record besides the decision. */
  actor: string;
  details?: Record<string, unknown>;
  /** Keep the device's queue and reported items (an enrollment that is not a fresh management client). Default false. */
  keepState?: boolean;
}

export interface UnenrollInput {
  platform: Platform;
  /** Who ended it: the device itself, an admin (retire), or a confirmed wipe. */
  by: 'device' | 'admin' | 'wipe' | 'service';
  reason: string;
  actor: string;
  /** Audit action, e.g. device.checkout, device.unenroll, device.retire, device.wiped. */
  action: string;
  /** Enrollment state to keep besides who and when (e.g. Android's device name). */
  state?: Record<string, unknown>;
  details?: Record<string, unknown>;
  /** The device removed what Muster installed (default true): its reported items become empty. */
  removesItems?: boolean;
}

export interface LifecycleLog {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface DeviceLifecycle {
  /**
   * Is `certSha256` a current identity of `platform`, bound to `deviceId` (or,
   * with `binding`, not yet bound)? `sameId` compares device ids (Windows
   * DeviceIDs are case-insensitive GUIDs).
   */
  check(certSha256: string | undefined, expect: { platform: Platform; deviceId?: string; binding?: boolean; sameId?: (a: string, b: string) => boolean }, q?: Queryable): Promise<IdentityCheck>;
  /** Whether the claimant may take the device id (reads the device and its live identities). */
  decide(claimant: Claimant, deviceId: string, platform: Platform, q?: Queryable): Promise<ClaimDecision>;
  /**
   * Binds the identity and (re-)enrolls the device in `tx`: a fresh management
   * client starts with an empty queue and nothing installed; an unapproved
   * re-enrollment carries over no labels or assignments; another live identity
   * is revoked when an admin approved the replacement. Throws IdentityRefused
   * (after recording the attempt in its own transaction) when the claim is not allowed.
   */
  enroll(e: EnrollInput, tx: Queryable): Promise<{ kind: ClaimKind; device: Device; revoked: number; cleared: number }>;
  /**
   * A renewal signed with `current`: records the new identity bound to the same
   * device and platform. The current one stays valid until it expires (if the
   * answer is lost, the device renews again with it). Throws IdentityRefused
   * when `current` is not a live identity of that platform.
   */
  renew(current: string, next: Omit<IdentityInput, 'deviceId' | 'renewalOf' | 'credential' | 'forDevice'>, actor: string, tx: Queryable, details?: Record<string, unknown>): Promise<Identity>;
  /** Records a refused claim or check as a takeover attempt (own transaction: it outlives the refused one). */
  refused(r: { reason: IdentityRefusal; /** The device the attempt was on; without one (an unbound identity, a message not read), the certificate is the subject. */ deviceId?: string; platform: Platform; certSha256?: string; actor: string; details?: Record<string, unknown> }): Promise<void>;
  /** The device is no longer managed: identities revoked, queue cleared, audited, event published. */
  unenroll(deviceId: string, u: UnenrollInput, tx: Queryable): Promise<{ cleared: number; revoked: number }>;
  /** An admin takes a device out of management (it may enroll again as a new device). */
  retire(deviceId: string, actor: string, note?: string): Promise<{ cleared: number; revoked: number } | undefined>;
  /**
   * Read-modify-write of one kind of reported state under the device's lock:
   * `update` gets the previous state and returns the next, or undefined for
   * no change. Publishes device.reported when asked (default: for the items kind).
   */
  updateReported<T>(deviceId: string, kind: string, update: (prev: T | undefined) => T | undefined, tx: Queryable, o?: { publish?: boolean; at?: Date }): Promise<boolean>;
  /** Replaces one kind of reported state (no read), publishing device.reported when asked. */
  report(deviceId: string, kind: string, state: unknown, tx: Queryable, o?: { publish?: boolean; at?: Date }): Promise<void>;
}

/** The reported-state kind holding ReportedItems (what the reconciler diffs against). */
export const ITEMS_KIND = 'items';

/** What the lifecycle touches in the store. */
export type LifecycleStore = Pick<Store, 'devices' | 'identities' | 'commands' | 'audit' | 'events' | 'assignments' | 'transaction'>;

export function deviceLifecycle(store: LifecycleStore, o: { now?: () => Date; log?: LifecycleLog } = {}): DeviceLifecycle {
  const now = o.now ?? (() => new Date());
  const exact = (a: string, b: string) => a === b;

  async function decide(claimant: Claimant, deviceId: string, platform: Platform, q?: Queryable): Promise<ClaimDecision> {
    const device = await store.devices.get(deviceId, q);
    const live = device ? await store.identities.liveForDevice(deviceId, now(), q) : [];
    return decideClaim(claimant, deviceId, platform, device, live);
  }

  const lifecycle: DeviceLifecycle = {
    async check(certSha256, expect, q) {
      const no = (reason: IdentityRefusal): IdentityCheck => ({ ok: false, reason, message: REFUSAL_TEXT[reason] });
      if (!certSha256) return no('missing');
      const id = await store.identities.get(certSha256, q);
      if (!id) return no('unknown');
      if (id.platform !== expect.platform) return no('other-platform');
      if (id.revokedAt) return no('revoked');
      if (id.notAfter.getTime() <= now().getTime()) return no('expired');
      if (!id.deviceId) return expect.binding && expect.deviceId ? { ok: true, identity: id, deviceId: expect.deviceId } : no('unbound');
      if (expect.deviceId !== undefined && !(expect.sameId ?? exact)(id.deviceId, expect.deviceId)) return no('other-device');
      return { ok: true, identity: id, deviceId: id.deviceId };
    },

    decide,

    async enroll(e, tx) {
      const deviceId = e.device.id;
      const platform = e.device.platform;
      await store.devices.lockDevice(deviceId, tx);
      const issued = 'protocol' in e.identity ? undefined : await store.identities.get(e.identity.certSha256, tx);
      const claimant: Claimant = 'protocol' in e.identity ? e.identity : issued ? issued : { platform, certSha256: e.identity.certSha256 };
      if (!('protocol' in e.identity) && !issued) throw new IdentityRefused('unknown', REFUSAL_TEXT.unknown);
      const decision = await decide(claimant, deviceId, platform, tx);
      if (!decision.ok) throw new IdentityRefused(decision.reason, decision.message);
      const existing = await store.devices.get(deviceId, tx);
      // A device that comes back without an admin's word is a new device that happens to reuse the id.
      const fresh = decision.kind === 're-enrollment';
      // The enrollment group is what this enrollment was for: never inherited from the previous one.
      const { [ENROLLMENT_GROUP_ATTRIBUTE]: _previousGroup, ...kept } = existing?.attributes ?? {};
      const attributes = fresh || !existing ? e.device.attributes : { ...kept, ...e.device.attributes };
      const device = await store.devices.upsert({ ...e.device, ...(attributes ? { attributes } : {}), ...(fresh ? { labels: {} } : {}) }, tx);
      if (fresh) await store.assignments.removeDevice(deviceId, tx);
      const certSha256 = e.identity.certSha256.toLowerCase();
      // The old identity stops working once an admin approved its replacement; a renewal keeps it until it expires.
      let revoked = 0;
      if (decision.kind === 'approved') {
        for (const l of await store.identities.liveForDevice(deviceId, now(), tx)) if (l.certSha256 !== certSha256 && (await store.identities.revoke(l.certSha256, now(), tx))) revoked++;
      }
      if ('protocol' in e.identity) await store.identities.add({ ...e.identity, deviceId }, tx);
      else if (!(await store.identities.bind(certSha256, deviceId, tx))) throw new IdentityRefused('other-device', REFUSAL_TEXT['other-device']);
      let cleared = 0;
      if (!e.keepState) {
        // A fresh management client: nothing queued or installed carries over.
        cleared = await store.commands.clearForDevice(deviceId, `cleared by a new ${platform} enrollment`, tx);
        await store.devices.report(deviceId, ITEMS_KIND, { items: {} }, now(), tx);
      }
      await store.devices.setEnrollment({ deviceId, platform, status: e.enrollment.status, state: e.enrollment.state }, tx);
      await store.audit.append({ actor: e.actor, action: 'device.enroll', subject: `device/${deviceId}`, details: { platform, kind: decision.kind, certSha256, cleared, revoked, ...e.details } }, tx);
      // The reconciler re-derives the device and sends everything it should hold again.
      await store.events.publish({ topic: 'device.changed', payload: { deviceId, enrolled: true } }, tx);
      return { kind: decision.kind, device, revoked, cleared };
    },

    async renew(current, next, actor, tx, details) {
      // Under the device's lock, as enroll and unenroll: a renewal can never slip past a retire, CheckOut or approved replacement.
      const bound = (await store.identities.get(current, tx))?.deviceId;
      if (bound) await store.devices.lockDevice(bound, tx);
      const c = await lifecycle.check(current, { platform: next.platform }, tx);
      if (!c.ok) throw new IdentityRefused(c.reason, c.message);
      const added = await store.identities.add({ ...next, deviceId: c.deviceId, renewalOf: current }, tx);
      if (added.deviceId !== c.deviceId) throw new IdentityRefused('other-device', REFUSAL_TEXT['other-device']);
      await store.audit.append({ actor, action: 'certificate.renew', subject: `certificate/${added.certSha256}`, details: { device: c.deviceId, platform: next.platform, protocol: next.protocol, renewalOf: current, serial: next.serialNumber, subject: next.subject ?? null, notAfter: next.notAfter.toISOString(), ...details } }, tx);
      return added;
    },

    async refused(r) {
      o.log?.warn('device identity refused', { device: r.deviceId, platform: r.platform, reason: r.reason, certSha256: r.certSha256 });
      // An unbound identity used for anything but binding is a probe of the device it names.
      const takeover = r.reason === 'device-has-live-identity' || r.reason === 'other-device' || r.reason === 'other-platform' || r.reason === 'credential-for-other-device' || r.reason === 'unbound';
      await store.audit.append({
        actor: r.actor,
        action: takeover ? 'device.takeover-refused' : 'device.identity-refused',
        subject: r.deviceId ? `device/${r.deviceId}` : `certificate/${r.certSha256 ?? 'unknown'}`,
        details: { platform: r.platform, reason: r.reason, ...(r.certSha256 ? { certSha256: r.certSha256 } : {}), ...r.details },
      });
    },

    async unenroll(deviceId, u, tx) {
      await store.devices.lockDevice(deviceId, tx);
      const at = now();
      const prev = await store.devices.getEnrollment(deviceId, tx);
      await store.devices.setEnrollment({ deviceId, platform: prev?.platform ?? u.platform, status: 'unenrolled', state: { ...u.state, unenrolledAt: at.toISOString(), unenrolledBy: u.by, reason: u.reason } }, tx);
      const cleared = await store.commands.clearForDevice(deviceId, u.reason, tx);
      const revoked = await store.identities.revokeDevice(deviceId, at, tx);
      if (u.removesItems !== false) await store.devices.report(deviceId, ITEMS_KIND, { items: {} }, at, tx);
      await store.audit.append({ actor: u.actor, action: u.action, subject: `device/${deviceId}`, details: { reason: u.reason, cleared, revoked, ...u.details } }, tx);
      await store.events.publish({ topic: 'device.changed', payload: { deviceId } }, tx);
      return { cleared, revoked };
    },

    async retire(deviceId, actor, note) {
      const device = await store.devices.get(deviceId);
      if (!device) return undefined;
      return store.transaction((tx) =>
        lifecycle.unenroll(deviceId, { platform: device.platform, by: 'admin', reason: note ? `retired by ${actor}: ${note}` : `retired by ${actor}`, actor, action: 'device.retire', removesItems: false, details: note ? { note } : {} }, tx),
      );
    },

    async updateReported<T>(deviceId: string, kind: string, update: (prev: T | undefined) => T | undefined, tx: Queryable, ro: { publish?: boolean; at?: Date } = {}) {
      await store.devices.lockDevice(deviceId, tx);
      const prev = (await store.devices.reportedMany([deviceId], kind, tx)).get(deviceId)?.state as T | undefined;
      const next = update(prev);
      if (next === undefined) return false;
      await store.devices.report(deviceId, kind, next, ro.at ?? now(), tx);
      if (ro.publish ?? kind === ITEMS_KIND) await store.events.publish({ topic: 'device.reported', payload: { deviceId } }, tx);
      return true;
    },

    async report(deviceId, kind, state, tx, ro = {}) {
      await store.devices.report(deviceId, kind, state, ro.at ?? now(), tx);
      if (ro.publish ?? kind === ITEMS_KIND) await store.events.publish({ topic: 'device.reported', payload: { deviceId } }, tx);
    },
  };
  return lifecycle;
}
