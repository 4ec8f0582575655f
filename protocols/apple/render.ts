// What a bundle becomes on Apple devices, as the XML plist of its profile:
// the text `muster render BUNDLE --platform apple` prints. Secret references
// stay references; certificates appear as base64 <data>.
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { bundleHash } from '../../controller/policy/hash.js';
import type { PolicyBundle } from '../../controller/policy/types.js';
import { encodePlist } from './plist.js';
import { buildAppleProfile, type AppleCompileOptions } from './profiles.js';

/**
 * The profile of `bundle` as XML plist text, or undefined when the bundle has
 * nothing for Apple devices (another platform, or only apps, kiosk and
 * compliance rules). Without `family`, every payload of every Apple OS is
 * shown; with it, what a device of that family receives.
 */
export function renderApple(bundle: PolicyBundle | Pick<ResolvedBundle, 'name' | 'version' | 'hash' | 'spec'>, opts: AppleCompileOptions = {}): string | undefined {
  const b =
    'metadata' in bundle
      ? { name: bundle.metadata.name, version: bundle.spec.version, hash: bundleHash(bundle.metadata.name, bundle.spec), spec: bundle.spec }
      : bundle;
  const profile = buildAppleProfile(b, opts.family, opts);
  return profile ? encodePlist(profile).toString('utf8') : undefined;
}
