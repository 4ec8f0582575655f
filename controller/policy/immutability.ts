// A bundle's content under one version never changes: devices and the audit
// trail identify what they run by (name, version, hash). Compared against the
// bundles of a previous revision (or every version the controller has seen).
import semver from 'semver';
import type { Diagnostic } from './diagnostics.js';
import { shortHash } from './hash.js';
import type { PolicySet } from './resources.js';

export interface KnownBundleVersion {
  name: string;
  version: string;
  hash: string;
  /** Where it was seen, for the message: "revision main~1", "commit 3f2a9c1". */
  seenAt: string;
}

export function checkImmutability(set: PolicySet, known: readonly KnownBundleVersion[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  const byName = new Map<string, KnownBundleVersion[]>();
  for (const k of known) byName.set(k.name, [...(byName.get(k.name) ?? []), k]);
  for (const [name, b] of set.bundles) {
    const hash = set.hashes.get(name)!;
    const version = b.resource.spec.version;
    const earlier = byName.get(name) ?? [];
    const same = earlier.find((k) => k.version === version && k.hash !== hash);
    if (same) {
      const highest = earlier.map((k) => k.version).filter((v) => semver.valid(v)).sort(semver.rcompare)[0] ?? version;
      const next = semver.inc(semver.gt(version, highest) ? version : highest, 'patch') ?? 'a new version';
      out.push({
        ...b.doc.locate(['spec', 'version']),
        severity: 'error',
        code: 'immutable-version',
        message: `PolicyBundle "${name}" changed but spec.version is still ${version} (content ${shortHash(hash)} now, ${shortHash(same.hash)} at ${same.seenAt}); bump spec.version, e.g. to ${next}`,
      });
      continue;
    }
    const newest = earlier.filter((k) => semver.valid(k.version)).sort((x, y) => semver.rcompare(x.version, y.version))[0];
    if (newest && semver.valid(version) && semver.lt(version, newest.version) && !earlier.some((k) => k.version === version)) {
      out.push({
        ...b.doc.locate(['spec', 'version']),
        severity: 'warning',
        code: 'version-decreased',
        message: `PolicyBundle "${name}" spec.version ${version} is lower than ${newest.version} at ${newest.seenAt}`,
      });
    }
  }
  return out;
}
