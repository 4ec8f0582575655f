// Enrolling Android devices, and binding Muster to an enterprise.
//
// An enrollment token names the policy a device starts on. By default that is
// Muster's base policy (status reporting only), and the reconciler moves the
// device to its own policy at its first report. Given the policy set and the
// rollouts, policyForNewDevice() picks what a device with the token's labels
// would hold once every rollout's ring is settled — the stable bundles (or the
// canary, at 100 %) — so most devices start where they belong and need no
// devices.patch at all; canary devices are moved at their first report.
//
// The token's qrCode (from AMAPI) is the JSON the setup wizard reads: it is
// encoded as is. The link is the one personal devices open to enroll.
import { writeFile } from 'node:fs/promises';
import QRCode from 'qrcode';
import type { PolicySet } from '../../controller/policy/resources.js';
import { ENROLLMENT_GROUP_ATTRIBUTE } from '../../controller/policy/selector.js';
import { rolloutView, memberGroup, toFleetDevice } from '../../controller/reconcile/desired.js';
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { toStatus } from '../../controller/reconcile/reconciler.js';
import { bundleFor } from '../../controller/rollout/engine.js';
import type { RolloutRevision } from '../../controller/store/index.js';
import type { Amapi } from './client.js';
import { BASE_POLICY_ID, compileAndroidPolicy, forAndroid, policyIdFor, resolveSecrets, type AmapiPolicy } from './compile.js';
import type { EnrollmentTokenData } from './status.js';

export interface EnrollmentTokenResult {
  name: string;
  value: string;
  /** The JSON a device's setup wizard reads from the QR code (AMAPI's qrCode, as is). */
  qrCode: string;
  /** What a personal device opens to enroll (work profile). */
  link: string;
  expires: string | null;
  oneTime: boolean;
  /** The policy the device starts on. */
  policyId: string;
}

export interface EnrollmentTokenRequest {
  enterprise: string;
  /** Labels the enrolled device gets (so DeviceGroups select it from its first report). */
  labels?: Record<string, string>;
  /** The group it is for: the device's attribute enrollment-group, as Windows credentials give it. */
  group?: string;
  oneTime?: boolean;
  /** Default one hour (AMAPI's default); at least a minute. */
  durationMs?: number;
  /** AMAPI allowPersonalUsage (PERSONAL_USAGE_ALLOWED, PERSONAL_USAGE_DISALLOWED, …). */
  allowPersonalUsage?: string;
  /** The policy to start on (from policyForNewDevice); default the base policy. */
  policy?: { policyId: string; policy: AmapiPolicy };
  secret?: (name: string) => string | undefined;
}

/** The enrollment link for a token value. */
export const enrollmentLink = (value: string): string => `https://enterprise.google.com/android/enroll?et=${encodeURIComponent(value)}`;

export async function createEnrollmentToken(amapi: Amapi, o: EnrollmentTokenRequest): Promise<EnrollmentTokenResult> {
  const durationMs = o.durationMs ?? 3_600_000;
  if (!(Number.isFinite(durationMs) && durationMs >= 60_000)) throw new Error('an enrollment token lasts at least one minute');
  const additional: EnrollmentTokenData = { ...(o.labels && Object.keys(o.labels).length ? { labels: o.labels } : {}), ...(o.group ? { group: o.group } : {}) };
  const additionalData = Object.keys(additional).length ? JSON.stringify(additional) : undefined;
  if (additionalData && additionalData.length > 1024) throw new Error('the labels of an enrollment token must fit in 1,024 characters of JSON');
  const start = o.policy ?? { policyId: BASE_POLICY_ID, policy: compileAndroidPolicy([]) };
  const { policy, missing } = resolveSecrets(start.policy, o.secret ?? (() => undefined));
  if (missing.length) throw new Error(`secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set (needed by the enrollment policy)`);
  const policyName = `${o.enterprise}/policies/${start.policyId}`;
  // The policy must exist before a device can enroll into it.
  await amapi.patchPolicy(policyName, policy);
  const t = await amapi.createEnrollmentToken(o.enterprise, {
    policyName,
    duration: `${Math.round(durationMs / 1000)}s`,
    oneTimeOnly: !!o.oneTime,
    ...(additionalData ? { additionalData } : {}),
    ...(o.allowPersonalUsage ? { allowPersonalUsage: o.allowPersonalUsage } : {}),
  });
  if (!t.value || !t.name) throw new Error('AMAPI returned an enrollment token without a name or value');
  if (!t.qrCode) throw new Error('AMAPI returned an enrollment token without its QR code content');
  return { name: t.name, value: t.value, qrCode: t.qrCode, link: enrollmentLink(t.value), expires: t.expirationTimestamp ?? null, oneTime: !!o.oneTime, policyId: start.policyId };
}

/** The QR code for a terminal (UTF-8 half blocks). */
export function qrForTerminal(text: string): Promise<string> {
  return QRCode.toString(text, { type: 'terminal', small: true, errorCorrectionLevel: 'M' });
}

/** The QR code as PNG bytes (or written to `file`). */
export async function qrToPng(text: string, file?: string): Promise<Buffer> {
  const png = await QRCode.toBuffer(text, { type: 'png', errorCorrectionLevel: 'M', margin: 2, width: 512 });
  if (file) await writeFile(file, png);
  return png;
}

/**
 * The policy a new Android device with these labels would hold once settled:
 * for every rollout whose groups select it, the stable bundle (the canary once
 * it is at 100 %). Pure.
 */
export function policyForNewDevice(set: PolicySet, rollouts: readonly RolloutRevision[], labels: Record<string, string> = {}, group?: string): { policyId: string; policy: AmapiPolicy; bundles: string[] } {
  const groups = new Map([...set.groups].map(([n, l]) => [n, l.resource.spec]));
  const device = toFleetDevice({ id: '', platform: 'android', serialNumber: null, osVersion: null, model: null, labels, attributes: { os: 'android', 'enrollment-source': 'amapi', ...(group ? { [ENROLLMENT_GROUP_ATTRIBUTE]: group } : {}) } });
  const bundles: ResolvedBundle[] = [];
  for (const row of rollouts) {
    if (row.deleted) continue;
    const spec = set.rollouts.get(row.name)?.resource.spec;
    if (!spec) continue;
    const bundleSpec = set.bundles.get(spec.bundle)?.resource.spec;
    const view = rolloutView(row.name, spec, toStatus(row), groups, bundleSpec?.platforms ? { platforms: bundleSpec.platforms } : {});
    if (!memberGroup(view, device)) continue;
    const hash = bundleFor(view.status, (w) => w >= 100);
    if (!hash) continue;
    const [name, loaded] = [...set.bundles].find(([n]) => set.hashes.get(n) === hash) ?? [];
    if (!name || !loaded || !forAndroid(loaded.resource.spec)) continue;
    bundles.push({ name, version: loaded.resource.spec.version, hash, spec: loaded.resource.spec, rollout: row.name });
  }
  return { policyId: policyIdFor(bundles.map((b) => b.hash)), policy: compileAndroidPolicy(bundles), bundles: bundles.map((b) => b.name).sort() };
}

/** Step one of binding to a new enterprise: the URL an admin opens to sign up. */
export async function startSignup(amapi: Amapi, o: { projectId: string; callbackUrl: string }): Promise<{ name: string; url: string }> {
  const s = await amapi.createSignupUrl(o.projectId, o.callbackUrl);
  if (!s.name || !s.url) throw new Error('AMAPI returned a signup URL without a name or url');
  return { name: s.name, url: s.url };
}

/**
 * Step two: the enterpriseToken the callback URL received (?enterpriseToken=…)
 * makes the enterprise. Optionally wires its notifications to a Pub/Sub topic.
 */
export async function finishSignup(
  amapi: Amapi,
  o: { projectId: string; signupUrlName: string; enterpriseToken: string; displayName?: string; pubsubTopic?: string },
): Promise<{ name: string; displayName: string | null }> {
  const e = await amapi.createEnterprise(o.projectId, o.signupUrlName, o.enterpriseToken, {
    ...(o.displayName ? { enterpriseDisplayName: o.displayName } : {}),
    ...(o.pubsubTopic ? { pubsubTopic: o.pubsubTopic, enabledNotificationTypes: [...NOTIFICATION_TYPES] } : {}),
  });
  if (!e.name) throw new Error('AMAPI returned an enterprise without a name');
  return { name: e.name, displayName: e.enterpriseDisplayName ?? null };
}

/** The notifications Muster reads. */
export const NOTIFICATION_TYPES = ['ENROLLMENT', 'STATUS_REPORT', 'COMMAND', 'USAGE_LOGS'] as const;

/** Points an existing enterprise's notifications at a Pub/Sub topic (projects/P/topics/T), touching nothing else. */
export async function configureNotifications(amapi: Amapi, o: { enterprise: string; pubsubTopic: string }): Promise<void> {
  if (!/^projects\/[^/]+\/topics\/[^/]+$/.test(o.pubsubTopic)) throw new Error(`a Pub/Sub topic looks like projects/PROJECT/topics/TOPIC, not "${o.pubsubTopic}"`);
  await amapi.patchEnterprise(o.enterprise, { pubsubTopic: o.pubsubTopic, enabledNotificationTypes: [...NOTIFICATION_TYPES] }, ['pubsubTopic', 'enabledNotificationTypes']);
}
