// What a bundle becomes on Android devices: the AMAPI Policy JSON that
// `muster render BUNDLE --platform android` prints — exactly what the driver
// compiles for a device holding only this bundle, under the policy name the
// driver would use. Secret references stay references.
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { compileAndroidPolicy, deprecatedFragmentFields, forAndroid, fragmentConflicts, policyIdFor, unsupportedOnAndroid, type AmapiPolicy } from './compile.js';

export interface AndroidRendering {
  /** The policy id (enterprises/E/policies/<policyId>) a device with only this bundle is given. */
  policyId: string;
  policy: AmapiPolicy;
  /** Fields the bundle's android.policy fragment overrides (it wins). */
  overridden: string[];
  /** Settings with no Android equivalent, left out. */
  unsupported: string[];
  /** Deprecated fields the fragment uses. */
  deprecated: string[];
}

/** undefined when the bundle does not reach Android devices. */
export function renderAndroid(bundle: Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>): AndroidRendering | undefined {
  if (!forAndroid(bundle.spec)) return undefined;
  return {
    policyId: policyIdFor([bundle.hash]),
    policy: compileAndroidPolicy([bundle]),
    overridden: [...new Set(fragmentConflicts(bundle.spec).map((c) => c.field))].sort(),
    unsupported: unsupportedOnAndroid(bundle.spec),
    deprecated: deprecatedFragmentFields(bundle.spec).map((d) => `${d.field} (use ${d.use})`),
  };
}

/** The text render prints on stdout: the policy JSON, two-space indented, newline-terminated. */
export function renderAndroidJson(bundle: Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>): string | undefined {
  const r = renderAndroid(bundle);
  return r ? JSON.stringify(r.policy, null, 2) + '\n' : undefined;
}

/** Notes for stderr: the policy name and whatever was overridden or left out. */
export function renderAndroidNotes(r: AndroidRendering): string[] {
  return [
    `AMAPI policy ${r.policyId}`,
    ...(r.overridden.length ? [`android.policy overrides: ${r.overridden.join(', ')}`] : []),
    ...r.unsupported.map((u) => `not on Android: ${u}`),
    ...r.deprecated.map((d) => `deprecated in android.policy: ${d}`),
  ];
}
