// An AMAPI Device resource (from a Pub/Sub notification or devices.list) as
// Muster's view of the device: the device record, its enrollment state, its
// reported policy item, its status and posture. A report older than the one
// stored is ignored, so redelivered or reordered notifications never roll the
// state back.
import { POSTURE } from '../../controller/compliance/evaluate.js';
import type { ReportedItems } from '../../controller/reconcile/driver.js';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import type { Device } from './client.js';
import { POLICY_ITEM } from './driver.js';

/** What Muster keeps in the enrollment state of an Android device. */
export interface AndroidEnrollmentState {
  /** enterprises/E/devices/D */
  name: string;
  lastStatusReportTime?: string;
  appliedPolicyName?: string;
  appliedPolicyVersion?: string;
  /** The policy the worker last set on the device, and that policy's version then. */
  expected?: { policyId: string; version: string; at: string };
}

/** Muster's device id for an AMAPI device name: its last segment. */
export const deviceIdOf = (name: string): string => name.slice(name.lastIndexOf('/') + 1);
const policyIdOf = (name: string | null | undefined): string | undefined => (name ? name.slice(name.lastIndexOf('/') + 1) : undefined);

const reportTime = (d: Device): string | undefined => d.lastStatusReportTime ?? d.lastPolicySyncTime ?? d.enrollmentTime ?? undefined;

export type StatusOutcome = 'stored' | 'stale' | 'ignored';

export async function recordDeviceStatus(store: Store, d: Device, o: { enterprise: string }): Promise<StatusOutcome> {
  const name = d.name;
  if (!name || !name.startsWith(`${o.enterprise}/devices/`)) return 'ignored';
  const id = deviceIdOf(name);
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) return 'ignored';
  return store.transaction(async (tx) => {
    const prev = await store.devices.getEnrollment(id, tx);
    const prevState = (prev?.state ?? {}) as Partial<AndroidEnrollmentState>;
    const at = reportTime(d);
    if (at && prevState.lastStatusReportTime && Date.parse(at) < Date.parse(prevState.lastStatusReportTime)) return 'stale';
    const hw = d.hardwareInfo ?? {};
    const sw = d.softwareInfo ?? {};
    const group = groupOf(d.enrollmentTokenData);
    await store.devices.upsert(
      {
        id,
        platform: 'android',
        identifiers: { amapi: name, ...(hw.serialNumber ? { serial: hw.serialNumber } : {}) },
        ...(hw.serialNumber ? { serialNumber: hw.serialNumber } : {}),
        ...(hw.model ? { model: hw.model } : {}),
        ...(sw.androidVersion ? { osVersion: sw.androidVersion } : {}),
        attributes: { os: 'android', 'enrollment-source': 'amapi', ...(d.managementMode ? { ownership: d.managementMode === 'DEVICE_OWNER' ? 'company' : 'personal' } : {}) },
        ...(group ? { labels: { 'muster.dev/enrollment-group': group } } : {}),
      },
      tx,
    );
    const state: AndroidEnrollmentState = {
      ...prevState,
      name,
      ...(at ? { lastStatusReportTime: at } : {}),
      ...(d.appliedPolicyName ? { appliedPolicyName: d.appliedPolicyName } : {}),
      ...(d.appliedPolicyVersion ? { appliedPolicyVersion: String(d.appliedPolicyVersion) } : {}),
    };
    const gone = d.state === 'DELETED';
    await store.devices.setEnrollment({ deviceId: id, platform: 'android', status: gone ? 'unenrolled' : 'enrolled', state: state as unknown as Record<string, unknown> }, tx);
    await store.devices.report(id, REPORTED_ITEMS, { items: itemsOf(d, state) } satisfies ReportedItems, new Date(), tx);
    await store.devices.report(id, 'android.status', statusOf(d), new Date(), tx);
    await store.devices.report(id, POSTURE, { osFamily: 'android', ...(typeof d.deviceSettings?.isEncrypted === 'boolean' ? { encrypted: d.deviceSettings.isEncrypted } : {}), ...(typeof d.deviceSettings?.isDeviceSecure === 'boolean' ? { passcodePresent: d.deviceSettings.isDeviceSecure } : {}) }, new Date(), tx);
    await store.events.publish({ topic: prev?.status === 'enrolled' && !gone ? 'device.reported' : 'device.changed', payload: { deviceId: id } }, tx);
    return 'stored';
  });
}

/**
 * The policy item as reported: converged only when the device applied the
 * very policy (and version) Muster set; applied but noncompliant counts as a
 * failure, with the reasons; a policy Muster did not set is reported as held,
 * so the reconciler moves the device.
 */
function itemsOf(d: Device, s: AndroidEnrollmentState): ReportedItems['items'] {
  const applied = policyIdOf(d.appliedPolicyName ?? s.appliedPolicyName);
  if (!applied) return {};
  const version = Number(d.appliedPolicyVersion ?? s.appliedPolicyVersion ?? 0);
  if (s.expected && applied === s.expected.policyId && version < Number(s.expected.version)) return {};
  const details = (d.nonComplianceDetails ?? []).slice(0, 20);
  if (d.policyCompliant === false || details.length) {
    const error = details.map((n) => [n.settingName, n.nonComplianceReason, n.packageName].filter(Boolean).join(' ')).join('; ') || 'the device reports it is not compliant with its policy';
    return { [POLICY_ITEM]: { hash: applied, status: 'failed', error } };
  }
  return { [POLICY_ITEM]: { hash: applied, status: 'installed' } };
}

function statusOf(d: Device): Record<string, unknown> {
  return {
    state: d.state ?? null,
    appliedState: d.appliedState ?? null,
    appliedPolicyName: d.appliedPolicyName ?? null,
    appliedPolicyVersion: d.appliedPolicyVersion ?? null,
    policyCompliant: d.policyCompliant ?? null,
    nonComplianceDetails: (d.nonComplianceDetails ?? []).slice(0, 50),
    lastStatusReportTime: d.lastStatusReportTime ?? null,
    hardwareInfo: pick(d.hardwareInfo, ['brand', 'manufacturer', 'model', 'serialNumber', 'hardware']),
    softwareInfo: pick(d.softwareInfo, ['androidVersion', 'androidBuildNumber', 'securityPatchLevel', 'deviceKernelVersion', 'primaryLanguageCode']),
    securityPosture: d.securityPosture ?? null,
    managementMode: d.managementMode ?? null,
  };
}

function pick(o: object | null | undefined, keys: string[]): Record<string, unknown> | null {
  if (!o) return null;
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, (o as Record<string, unknown>)[k]]));
}

/** The group an enrollment token was made for, from its additionalData. */
function groupOf(data: string | null | undefined): string | undefined {
  if (!data) return undefined;
  try {
    const g = (JSON.parse(data) as { group?: unknown }).group;
    return typeof g === 'string' && /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(g) ? g : undefined;
  } catch {
    return undefined;
  }
}
