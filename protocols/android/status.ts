// An AMAPI Device resource (from a Pub/Sub notification or devices.list) as
// Muster's view of the device: the device record, its enrollment state, its
// reported policy item, its status and posture — in one transaction, so a
// notification is acknowledged only once all of it is stored.
//
// Idempotent without remembering message ids: the same Device (same digest)
// changes nothing, and a report older than the stored one is ignored, so a
// redelivery to another replica, a restart, or reordered notifications never
// roll the state back or queue work twice.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { POSTURE, type Posture } from '../../controller/compliance/evaluate.js';
import { ENROLLMENT_GROUP_ATTRIBUTE, isEnrollmentGroup } from '../../controller/policy/selector.js';
import type { ReportedItems } from '../../controller/reconcile/driver.js';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import { deviceLifecycle, type LifecycleStore } from '../../controller/devices/lifecycle.js';
import type { Queryable, Store } from '../../controller/store/index.js';
import type { Device, Operation } from './client.js';
import { POLICY_ITEM } from './driver.js';
import { deviceOfOperation, int64, lastSegment, parseDeviceName, type BatchUsageLogEvents } from './wire.js';

/** What Muster keeps in the enrollment state of an Android device. */
export interface AndroidEnrollmentState {
  /** enterprises/E/devices/D */
  name: string;
  /** The AMAPI device state (ACTIVE, DISABLED, DELETED, PROVISIONING, LOST …). */
  state?: string;
  lastStatusReportTime?: string;
  /** The policy AMAPI has the device assigned to (what devices.patch set). */
  policyName?: string;
  appliedPolicyName?: string;
  /** int64 as a decimal string. */
  appliedPolicyVersion?: string;
  /** The policy the worker last set on the device, and that policy's version then. */
  expected?: { policyId: string; version: string; at: string };
  /** Issued commands still running: operation name → command UUID (for COMMAND notifications). */
  operations?: Record<string, string>;
  /** Digest of the last Device stored (a redelivery of the same one changes nothing). */
  digest?: string;
  /** When Muster learnt the device is gone (wiped, 404, missing from devices.list): older reports cannot bring it back. */
  goneAt?: string;
}

/** Reported-state kinds written here. */
export const ANDROID_STATUS = 'android.status';
export const ANDROID_USAGE_LOGS = 'android.usageLogs';

const reportTime = (d: Device): string | undefined => d.lastStatusReportTime ?? d.lastPolicySyncTime ?? d.enrollmentTime ?? undefined;
const digestOf = (v: unknown): string => createHash('sha256').update(canonicalize(v) ?? '').digest('hex').slice(0, 32);
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export type StatusOutcome = 'stored' | 'duplicate' | 'stale' | 'ignored';

/** What Muster puts in an enrollment token's additionalData (and AMAPI hands back as enrollmentTokenData). */
export interface EnrollmentTokenData {
  /** Labels the device gets at enrollment (so DeviceGroups select it at once). */
  labels?: Record<string, string>;
  /** The group the token was made for: the attribute enrollment-group (muster.dev/enrollment-group in selectors). */
  group?: string;
}

/** The group an enrollment token was made for, if it names a valid one. */
export function groupOf(data: string | null | undefined): string | undefined {
  if (!data) return undefined;
  try {
    const g = (JSON.parse(data) as EnrollmentTokenData | null)?.group;
    return isEnrollmentGroup(g) ? g : undefined;
  } catch {
    return undefined;
  }
}

/** The labels an enrollment token asked for; anything malformed is dropped (the data is only as good as the token's creator). */
export function labelsOf(data: string | null | undefined): Record<string, string> {
  if (!data) return {};
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return {};
  }
  const labels = (v as EnrollmentTokenData | null)?.labels;
  if (!labels || typeof labels !== 'object') return {};
  return Object.fromEntries(Object.entries(labels).filter(([k, x]) => typeof x === 'string' && LABEL_KEY.test(k) && !k.startsWith('muster.dev/') && LABEL_VALUE.test(x)));
}

function ownershipOf(d: Device): string | undefined {
  if (d.ownership === 'COMPANY_OWNED') return 'company';
  if (d.ownership === 'PERSONALLY_OWNED') return 'personal';
  if (d.managementMode === 'DEVICE_OWNER') return 'company';
  return undefined;
}

export async function recordDeviceStatus(store: LifecycleStore, d: Device, o: { enterprise: string; now?: () => Date }): Promise<StatusOutcome> {
  const parsed = d.name ? parseDeviceName(d.name) : undefined;
  if (!parsed || parsed.enterprise !== o.enterprise) return 'ignored';
  const id = parsed.deviceId;
  const name = d.name!;
  const digest = digestOf(d);
  return store.transaction(async (tx) => {
    // Reports of one device are judged one at a time (stale, duplicate), whichever replica gets them.
    await store.devices.lockDevice(id, tx);
    const prev = await store.devices.getEnrollment(id, tx);
    if (prev && prev.platform !== 'android') return 'ignored';
    const prevState = (prev?.state ?? {}) as Partial<AndroidEnrollmentState>;
    if (prevState.digest === digest) return 'duplicate';
    const at = reportTime(d);
    if (at && prevState.lastStatusReportTime && Date.parse(at) < Date.parse(prevState.lastStatusReportTime)) return 'stale';
    // A report sent before the device was wiped or deleted, delivered late.
    if (prev?.status === 'unenrolled' && prevState.goneAt && (!at || Date.parse(at) <= Date.parse(prevState.goneAt))) return 'stale';
    const reportedAt = at && !Number.isNaN(Date.parse(at)) ? new Date(at) : (o.now?.() ?? new Date());
    const hw = d.hardwareInfo ?? {};
    const sw = d.softwareInfo ?? {};
    const ownership = ownershipOf(d);
    const before = await store.devices.get(id, tx);
    // A device id is one platform's for good (docs/security.md): an AMAPI report never rewrites another platform's device.
    if (before && before.platform !== 'android') return 'ignored';
    const group = groupOf(d.enrollmentTokenData);
    const attributes: Record<string, string> = { os: 'android', 'enrollment-source': 'amapi', ...(ownership ? { ownership } : {}), ...(d.managementMode ? { 'management-mode': d.managementMode } : {}), ...(group ? { [ENROLLMENT_GROUP_ATTRIBUTE]: group } : {}) };
    const saved = await store.devices.upsert(
      {
        id,
        platform: 'android',
        identifiers: { amapi: name, ...(hw.serialNumber ? { serial: hw.serialNumber } : {}), ...(d.enrollmentTokenName ? { enrollmentToken: d.enrollmentTokenName } : {}) },
        ...(hw.serialNumber ? { serialNumber: hw.serialNumber } : {}),
        ...(hw.model ? { model: hw.model } : {}),
        ...(sw.androidVersion ? { osVersion: sw.androidVersion } : {}),
        attributes,
        // Labels come from the enrollment token once; later an admin owns them.
        ...(before ? {} : { labels: labelsOf(d.enrollmentTokenData) }),
        ...(d.enrollmentTime && !before ? { enrolledAt: new Date(d.enrollmentTime) } : {}),
      },
      tx,
    );
    await store.devices.touch(id, reportedAt, tx);
    const state: AndroidEnrollmentState = {
      ...prevState,
      name,
      digest,
      ...(d.state ? { state: d.state } : {}),
      ...(at ? { lastStatusReportTime: at } : {}),
      ...(d.policyName ? { policyName: d.policyName } : {}),
      ...(d.appliedPolicyName ? { appliedPolicyName: d.appliedPolicyName } : {}),
      ...(d.appliedPolicyVersion !== undefined && d.appliedPolicyVersion !== null ? { appliedPolicyVersion: String(d.appliedPolicyVersion) } : {}),
    };
    const gone = d.state === 'DELETED';
    if (gone) state.goneAt ??= reportedAt.toISOString();
    const status = gone ? 'unenrolled' : 'enrolled';
    if (gone && prev?.status !== 'unenrolled') {
      await deviceLifecycle(store).unenroll(id, { platform: 'android', by: 'service', reason: 'the device was deleted from the Android enterprise', actor: 'amapi', action: 'device.unenroll', state: state as unknown as Record<string, unknown>, removesItems: false }, tx);
    } else await store.devices.setEnrollment({ deviceId: id, platform: 'android', status, state: state as unknown as Record<string, unknown> }, tx);
    await store.devices.report(id, REPORTED_ITEMS, { items: itemsOf(d, state) } satisfies ReportedItems, reportedAt, tx);
    await store.devices.report(id, ANDROID_STATUS, statusOf(d), reportedAt, tx);
    await store.devices.report(id, POSTURE, postureOf(d, reportedAt), reportedAt, tx);
    const changed =
      !before || prev?.status !== status || before.osVersion !== saved.osVersion || before.model !== saved.model || before.serialNumber !== saved.serialNumber || canonicalize(before.attributes) !== canonicalize(saved.attributes);
    // A change of what selectors see re-derives assignments; every report recomputes sync state.
    await store.events.publish([...(changed ? [{ topic: 'device.changed', payload: { deviceId: id } }] : []), { topic: 'device.reported', payload: { deviceId: id } }], tx);
    return 'stored';
  });
}

/** AMAPI says the device no longer exists (404, or gone from devices.list): nothing can reach it. */
export async function markDeviceGone(store: LifecycleStore, deviceId: string, why: string, q?: Queryable): Promise<boolean> {
  const run = async (tx: Queryable) => {
    await store.devices.lockDevice(deviceId, tx);
    const e = await store.devices.getEnrollment(deviceId, tx);
    if (!e || e.platform !== 'android' || e.status === 'unenrolled') return false;
    await deviceLifecycle(store).unenroll(deviceId, { platform: 'android', by: 'service', reason: why, actor: 'amapi', action: 'device.unenroll', state: { ...e.state, state: 'DELETED', goneAt: new Date().toISOString() }, removesItems: false }, tx);
    return true;
  };
  return q ? run(q) : store.transaction(run);
}

/** Non-compliance that only says "not applied yet", not "cannot be applied". */
const isPending = (n: NonNullable<Device['nonComplianceDetails']>[number]) => n.nonComplianceReason === 'PENDING' || n.installationFailureReason === 'IN_PROGRESS';

/**
 * The policy item as reported. Converged only when the device applied the
 * very policy Muster set, at a version at least the one policies.patch
 * returned (int64, compared as integers); applied but noncompliant is a
 * failure with the reasons (which rollout analysis counts); not yet applied
 * is no item at all. A policy Muster did not set (the enrollment policy, an
 * older one) is reported as held, so the reconciler moves the device.
 */
export function itemsOf(d: Device, s: Pick<AndroidEnrollmentState, 'expected' | 'appliedPolicyName' | 'appliedPolicyVersion'>): ReportedItems['items'] {
  const applied = lastSegment(d.appliedPolicyName ?? s.appliedPolicyName);
  if (!applied) return {};
  if (s.expected && applied === s.expected.policyId) {
    const have = int64(d.appliedPolicyVersion ?? s.appliedPolicyVersion);
    const want = int64(s.expected.version);
    if (have === undefined || (want !== undefined && have < want)) return {};
  }
  const details = d.nonComplianceDetails ?? [];
  const failing = details.filter((n) => !isPending(n));
  if (failing.length || (d.policyCompliant === false && details.length === 0)) {
    const error =
      failing
        .slice(0, 10)
        .map((n) => [n.settingName ?? n.fieldPath, n.nonComplianceReason, n.packageName, n.installationFailureReason, n.specificNonComplianceReason].filter(Boolean).join(' '))
        .join('; ')
        .slice(0, 1000) || 'the device reports it is not compliant with its policy';
    return { [POLICY_ITEM]: { hash: applied, status: 'failed', error } };
  }
  if (details.length) return {};
  return { [POLICY_ITEM]: { hash: applied, status: 'installed' } };
}

function statusOf(d: Device): Record<string, unknown> {
  return {
    state: d.state ?? null,
    appliedState: d.appliedState ?? null,
    managementMode: d.managementMode ?? null,
    ownership: d.ownership ?? null,
    policyName: d.policyName ?? null,
    appliedPolicyName: d.appliedPolicyName ?? null,
    appliedPolicyVersion: d.appliedPolicyVersion ?? null,
    policyCompliant: d.policyCompliant ?? null,
    nonComplianceDetails: (d.nonComplianceDetails ?? []).slice(0, 50).map((n) => pick(n, ['settingName', 'nonComplianceReason', 'packageName', 'fieldPath', 'installationFailureReason', 'specificNonComplianceReason'])),
    lastStatusReportTime: d.lastStatusReportTime ?? null,
    lastPolicySyncTime: d.lastPolicySyncTime ?? null,
    enrollmentTime: d.enrollmentTime ?? null,
    apiLevel: d.apiLevel ?? null,
    hardwareInfo: pick(d.hardwareInfo, ['brand', 'manufacturer', 'model', 'serialNumber', 'hardware', 'deviceBasebandVersion']),
    softwareInfo: pick(d.softwareInfo, ['androidVersion', 'androidBuildNumber', 'securityPatchLevel', 'deviceKernelVersion', 'primaryLanguageCode', 'androidDevicePolicyVersionName']),
    deviceSettings: pick(d.deviceSettings, ['isDeviceSecure', 'isEncrypted', 'encryptionStatus', 'unknownSourcesEnabled', 'developmentSettingsEnabled', 'adbEnabled', 'verifyAppsEnabled']),
    securityPosture: d.securityPosture ? { devicePosture: d.securityPosture.devicePosture ?? null, postureDetails: (d.securityPosture.postureDetails ?? []).slice(0, 20).map((p) => pick(p, ['securityRisk'])) } : null,
  };
}

function postureOf(d: Device, at: Date): Posture {
  const s = d.deviceSettings ?? {};
  return {
    osFamily: 'android',
    ...(d.softwareInfo?.androidVersion ? { osVersion: d.softwareInfo.androidVersion } : {}),
    ...(typeof s.isEncrypted === 'boolean' ? { encrypted: s.isEncrypted } : {}),
    ...(typeof s.isDeviceSecure === 'boolean' ? { passcodePresent: s.isDeviceSecure } : {}),
    lastSeenAt: at,
    reportedAt: at,
  };
}

function pick(o: object | null | undefined, keys: string[]): Record<string, unknown> | null {
  if (!o) return null;
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, (o as Record<string, unknown>)[k]]));
}

/** How long after a command was issued its COMMAND notification may outrun the worker's record of it. */
const OPERATION_RACE_MS = 10 * 60_000;

/**
 * A COMMAND notification: the Operation of an issued command finished; its
 * queue entry says so. 'retry' when the operation is Muster's but not on
 * record yet — the notification outran the worker's transaction — so Pub/Sub
 * should deliver it again shortly.
 */
export async function recordOperation(store: Pick<Store, 'devices' | 'commands' | 'transaction'>, op: Operation, o: { enterprise: string; now?: () => Date }): Promise<'stored' | 'ignored' | 'retry'> {
  const name = op.name ?? '';
  const deviceName = deviceOfOperation(name);
  const parsed = deviceName ? parseDeviceName(deviceName) : undefined;
  if (!parsed || parsed.enterprise !== o.enterprise || !op.done) return 'ignored';
  return store.transaction(async (tx) => {
    await store.devices.lockDevice(parsed.deviceId, tx);
    const e = await store.devices.getEnrollment(parsed.deviceId, tx);
    const ops = ((e?.state ?? {}) as Partial<AndroidEnrollmentState>).operations ?? {};
    const uuid = ops[name];
    if (!uuid) {
      const created = Date.parse(String((op.metadata as { createTime?: unknown } | undefined)?.createTime ?? ''));
      const recent = !Number.isNaN(created) && (o.now?.() ?? new Date()).getTime() - created < OPERATION_RACE_MS;
      return e?.platform === 'android' && e.status === 'enrolled' && recent ? 'retry' : 'ignored';
    }
    await store.commands.report(uuid, op.error ? { status: 'failed', error: op.error.message ?? `the command failed (code ${op.error.code ?? '?'})`, result: { operation: name } } : { status: 'completed', result: { operation: name } }, tx);
    const { [name]: _done, ...rest } = ops;
    await store.devices.patchEnrollmentState(parsed.deviceId, { operations: rest }, tx);
    return 'stored';
  });
}

/** A USAGE_LOGS batch: the latest events per device, for people to read (never used to decide anything). */
export async function recordUsageLogs(store: Store, b: BatchUsageLogEvents, o: { enterprise: string }): Promise<'stored' | 'stale' | 'ignored'> {
  const parsed = b.device ? parseDeviceName(b.device) : undefined;
  if (!parsed || parsed.enterprise !== o.enterprise) return 'ignored';
  return store.transaction(async (tx) => {
    await store.devices.lockDevice(parsed.deviceId, tx);
    const e = await store.devices.getEnrollment(parsed.deviceId, tx);
    if (!e || e.platform !== 'android') return 'ignored';
    const events = (b.usageLogEvents ?? []).slice(-100).map((x) => ({ eventId: x.eventId ?? null, eventTime: x.eventTime ?? null, eventType: x.eventType ?? null }));
    const stored = await deviceLifecycle(store).updateReported<{ retrievalTime?: string | null }>(
      parsed.deviceId,
      ANDROID_USAGE_LOGS,
      (prev) => (b.retrievalTime && prev?.retrievalTime && Date.parse(b.retrievalTime) < Date.parse(prev.retrievalTime) ? undefined : { retrievalTime: b.retrievalTime ?? null, count: b.usageLogEvents?.length ?? 0, events }),
      tx,
      b.retrievalTime ? { at: new Date(b.retrievalTime) } : {},
    );
    return stored ? 'stored' : 'stale';
  });
}
