// What a bundle becomes on Android devices: the AMAPI policy JSON that
// `muster render BUNDLE --platform android` prints. Secret references stay.
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { compileAndroidPolicy, fragmentOverrides, policyIdFor } from './compile.js';

export function renderAndroid(bundle: Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>): { policyId: string; policy: Record<string, unknown>; overridden: string[] } | undefined {
  if (bundle.spec.platforms && !bundle.spec.platforms.includes('android')) return undefined;
  return { policyId: policyIdFor([bundle.hash]), policy: compileAndroidPolicy([bundle]), overridden: fragmentOverrides(bundle.spec) };
}
