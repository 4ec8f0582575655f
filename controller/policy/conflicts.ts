// "Two bundles that can reach the same devices set one setting to different
// values." Each bundle is flattened to leaf settings keyed by a stable name
// (list entries by their own key: a Wi-Fi network by SSID, an OMA-URI by its
// path), and every pair of rollouts whose groups can overlap on some platform
// compares the leaves their bundles share.
import type { Diagnostic } from './diagnostics.js';
import { formatPosition } from './diagnostics.js';
import { canonicalJson } from './hash.js';
import type { PathSegment } from './parse.js';
import type { Loaded, PolicySet } from './resources.js';
import { groupsCanOverlap } from './selector.js';
import { PLATFORMS, type Platform, type PolicyBundle, type Rollout } from './types.js';

export interface Leaf {
  /** Canonical JSON of the value, for comparison. */
  value: string;
  /** Data path inside the document, for positions. */
  path: PathSegment[];
  /** Set only for native settings, which reach one platform. */
  platform?: Platform;
}

/** List fields whose entries have an identity of their own. */
const LIST_KEYS: Record<string, string> = { wifi: 'ssid', vpn: 'name', certificates: 'name', apps: 'name' };

export function flattenBundle(b: PolicyBundle): Map<string, Leaf> {
  const leaves = new Map<string, Leaf>();
  const put = (key: string, value: unknown, path: PathSegment[], platform?: Platform) =>
    leaves.set(key, { value: canonicalJson(value), path, ...(platform ? { platform } : {}) });

  const walk = (v: unknown, key: string, path: PathSegment[], platform: Platform | undefined, depth: number) => {
    if (depth > 64 || v === null || typeof v !== 'object') return put(key, v, path, platform);
    if (Array.isArray(v)) {
      const idField = key.endsWith('applications') ? 'packageName' : LIST_KEYS[key.split('.').pop()!];
      const keyed = idField && v.every((x) => x && typeof x === 'object' && typeof (x as Record<string, unknown>)[idField] === 'string');
      if (!keyed) return put(key, v, path, platform);
      return v.forEach((x, i) => walk(x, `${key}[${(x as Record<string, string>)[idField!]}]`, [...path, i], platform, depth + 1));
    }
    for (const [k, x] of Object.entries(v)) walk(x, `${key}.${k}`, [...path, k], platform, depth + 1);
  };

  for (const [k, v] of Object.entries(b.spec.settings ?? {})) walk(v, k, ['spec', 'settings', k], undefined, 0);
  b.spec.apple?.payloads?.forEach((p, i) => {
    const id = p.PayloadIdentifier ?? p.PayloadType;
    for (const [k, v] of Object.entries(p)) {
      if (k === 'PayloadUUID' || k === 'PayloadDisplayName' || k === 'PayloadDescription') continue;
      walk(v, `apple.payloads[${id}].${k}`, ['spec', 'apple', 'payloads', i, k], 'apple', 1);
    }
  });
  b.spec.windows?.settings?.forEach((s, i) => put(`windows[${s.omaUri}]`, { format: s.format, value: s.value ?? null }, ['spec', 'windows', 'settings', i, 'value'], 'windows'));
  for (const [k, v] of Object.entries(b.spec.android?.policy ?? {})) walk(v, `android.policy.${k}`, ['spec', 'android', 'policy', k], 'android', 1);
  return leaves;
}

const platformSelector = (p: Platform) => ({ matchLabels: { 'muster.dev/platform': p } });

export function checkConflicts(set: PolicySet): Diagnostic[] {
  const rollouts = [...set.rollouts.values()].filter((r) => set.bundles.has(r.resource.spec.bundle));
  const flat = new Map<string, Map<string, Leaf>>();
  const leavesOf = (name: string) => {
    let f = flat.get(name);
    if (!f) flat.set(name, (f = flattenBundle(set.bundles.get(name)!.resource)));
    return f;
  };
  const overlapCache = new Map<string, boolean>();
  const groupsOverlap = (a: string, b: string, p: Platform): boolean => {
    const key = a < b ? `${a}\0${b}\0${p}` : `${b}\0${a}\0${p}`;
    let v = overlapCache.get(key);
    if (v === undefined) {
      const ga = set.groups.get(a)?.resource.spec;
      const gb = set.groups.get(b)?.resource.spec;
      v = !!ga && !!gb && groupsCanOverlap(ga, gb, platformSelector(p));
      overlapCache.set(key, v);
    }
    return v;
  };
  const platformsOf = (b: PolicyBundle) => new Set(b.spec.platforms ?? PLATFORMS);

  const out: Diagnostic[] = [];
  const reported = new Set<string>();
  for (let i = 0; i < rollouts.length; i++) {
    for (let j = i + 1; j < rollouts.length; j++) {
      const [ra, rb] = [rollouts[i]!, rollouts[j]!];
      const [na, nb] = [ra.resource.spec.bundle, rb.resource.spec.bundle];
      if (na === nb) continue;
      const [ba, bb] = [set.bundles.get(na)!, set.bundles.get(nb)!];
      const pa = platformsOf(ba.resource);
      const pb = platformsOf(bb.resource);
      const shared: Platform[] = [];
      let via: [string, string] | undefined;
      for (const p of PLATFORMS) {
        if (!pa.has(p) || !pb.has(p)) continue;
        const pair = firstOverlap(ra.resource, rb.resource, (x, y) => groupsOverlap(x, y, p));
        if (pair) {
          shared.push(p);
          via ??= pair;
        }
      }
      if (!via) continue;
      const [la, lb] = [leavesOf(na), leavesOf(nb)];
      for (const [key, a] of la) {
        const b = lb.get(key);
        if (!b || a.value === b.value || (a.platform && !shared.includes(a.platform))) continue;
        const id = [na, nb].sort().join('\0') + '\0' + key;
        if (reported.has(id)) continue;
        reported.add(id);
        out.push(conflict(key, [ba, a, ra], [bb, b, rb], via));
      }
    }
  }
  return out;
}

function firstOverlap(a: Rollout, b: Rollout, overlap: (x: string, y: string) => boolean): [string, string] | undefined {
  for (const x of a.spec.groups) for (const y of b.spec.groups) if (overlap(x, y)) return [x, y];
  return undefined;
}

function conflict(
  key: string,
  [ba, la, ra]: [Loaded<PolicyBundle>, Leaf, Loaded<Rollout>],
  [bb, lb, rb]: [Loaded<PolicyBundle>, Leaf, Loaded<Rollout>],
  [ga, gb]: [string, string],
): Diagnostic {
  // Report at the later of the two places, naming the earlier, so the order is stable.
  const pa = ba.doc.locate(la.path);
  const pb = bb.doc.locate(lb.path);
  const aFirst = formatPosition(pa) <= formatPosition(pb);
  const [here, there] = aFirst ? [[bb, lb, pb, rb, gb], [ba, la, pa, ra, ga]] as const : [[ba, la, pa, ra, ga], [bb, lb, pb, rb, gb]] as const;
  // Never echo anything that may be a secret, even a misplaced plain one.
  const secret = /(password|passphrase|sharedsecret|pkcs12|psk|keymaterial)/i.test(key);
  const show = (v: string) => (secret ? '(hidden)' : v.length > 60 ? v.slice(0, 57) + '...' : v);
  return {
    ...here[2],
    severity: 'error',
    code: 'conflict',
    message:
      `${key} is ${show(here[1].value)} in PolicyBundle "${here[0].resource.metadata.name}" but ${show(there[1].value)} in PolicyBundle "${there[0].resource.metadata.name}" (${formatPosition(there[2])}), ` +
      `and both can reach the same devices: Rollout "${here[3].resource.metadata.name}" via DeviceGroup "${here[4]}" and Rollout "${there[3].resource.metadata.name}" via DeviceGroup "${there[4]}"`,
    related: [there[2]],
  };
}
