// One device's compliance, from the store: the rules of the bundles it is
// assigned, judged against the posture its protocol reported.
import type { OsFamily, PolicyBundleSpec } from '../policy/types.js';
import type { Store } from '../store/index.js';
import { POSTURE, evaluateCompliance, type ComplianceResult, type Posture } from './evaluate.js';

const FAMILIES: readonly OsFamily[] = ['macos', 'ios', 'ipados', 'tvos', 'windows', 'android'];

export async function deviceCompliance(store: Store, deviceId: string, now = new Date()): Promise<ComplianceResult | undefined> {
  const device = await store.devices.get(deviceId);
  if (!device) return undefined;
  const assignments = await store.assignments.forDevice(deviceId);
  const rules = [];
  for (const hash of new Set(assignments.map((a) => a.bundleHash))) {
    const b = await store.bundles.get(hash);
    const spec = (b?.content as { spec?: PolicyBundleSpec } | undefined)?.spec;
    for (const rule of spec?.compliance ?? []) rules.push({ bundle: b!.name, rule });
  }
  const reported = (await store.devices.reported(deviceId)).find((r) => r.kind === POSTURE);
  const p = (reported?.state ?? {}) as Omit<Posture, 'lastSeenAt' | 'reportedAt'>;
  // The family: what the protocol said, else what the platform implies.
  const family = p.osFamily ?? (FAMILIES as readonly string[]).find((f) => f === device.attributes.os || f === device.platform);
  return evaluateCompliance(
    rules,
    {
      ...p,
      ...(family ? { osFamily: family as OsFamily } : {}),
      osVersion: device.osVersion,
      lastSeenAt: device.lastSeenAt,
      ...(reported ? { reportedAt: reported.reportedAt } : {}),
    },
    now,
  );
}
