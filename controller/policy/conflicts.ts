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
import { compileGroup, compiledGroupsCanOverlap, constraintsOf } from './selector.js';
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
  const flat = new Map<string, Map<string, Leaf>>();
  const leavesOf = (name: string) => {
    let f = flat.get(name);
    if (!f) flat.set(name, (f = flattenBundle(set.bundles.get(name)!.resource)));
    return f;
  };

  // A large repository has ~125,000 rollout pairs: prepare everything per group
  // and per rollout once, and cache group-pair answers in a typed array per platform.
  const groupNames = [...set.groups.keys()];
  const compiled = groupNames.map((g) => compileGroup(set.groups.get(g)!.resource.spec));
  const groupIndex = new Map(groupNames.map((g, i) => [g, i]));
  const n = groupNames.length;
  const platformConstraints = PLATFORMS.map((p) => constraintsOf(platformSelector(p)));
  const cache = PLATFORMS.map(() => new Uint8Array(n * n)); // 0 unknown, 1 disjoint, 2 can overlap
  const overlap = (ia: number, ib: number, p: number): boolean => {
    const slot = ia < ib ? ia * n + ib : ib * n + ia;
    const m = cache[p]!;
    if (m[slot] === 0) m[slot] = compiledGroupsCanOverlap(compiled[ia]!, compiled[ib]!, platformConstraints[p]) ? 2 : 1;
    return m[slot] === 2;
  };
  const rollouts = [...set.rollouts.values()]
    .filter((r) => set.bundles.has(r.resource.spec.bundle))
    .map((r) => {
      const bundle = set.bundles.get(r.resource.spec.bundle)!;
      const platforms = bundle.resource.spec.platforms ?? PLATFORMS;
      return {
        r,
        bundle,
        mask: PLATFORMS.reduce((m, p, i) => (platforms.includes(p) ? m | (1 << i) : m), 0),
        groups: r.resource.spec.groups.map((g) => groupIndex.get(g)).filter((x): x is number => x !== undefined),
      };
    });

  const out: Diagnostic[] = [];
  const reported = new Set<string>();
  for (let i = 0; i < rollouts.length; i++) {
    const a = rollouts[i]!;
    for (let j = i + 1; j < rollouts.length; j++) {
      const b = rollouts[j]!;
      const mask = a.mask & b.mask;
      if (mask === 0 || a.bundle === b.bundle) continue;
      const shared: Platform[] = [];
      let via: [string, string] | undefined;
      for (let p = 0; p < PLATFORMS.length; p++) {
        if (!(mask & (1 << p))) continue;
        const pair = firstOverlap(a.groups, b.groups, (x, y) => overlap(x, y, p));
        if (pair) {
          shared.push(PLATFORMS[p]!);
          via ??= [groupNames[pair[0]]!, groupNames[pair[1]]!];
        }
      }
      if (!via) continue;
      const [na, nb] = [a.bundle.resource.metadata.name, b.bundle.resource.metadata.name];
      const [la, lb] = [leavesOf(na), leavesOf(nb)];
      for (const [key, x] of la) {
        const y = lb.get(key);
        if (!y || x.value === y.value || (x.platform && !shared.includes(x.platform))) continue;
        const id = (na < nb ? `${na}\0${nb}` : `${nb}\0${na}`) + '\0' + key;
        if (reported.has(id)) continue;
        reported.add(id);
        out.push(conflict(key, [a.bundle, x, a.r], [b.bundle, y, b.r], via));
      }
    }
  }
  return out;
}

function firstOverlap(a: readonly number[], b: readonly number[], overlap: (x: number, y: number) => boolean): [number, number] | undefined {
  for (const x of a) for (const y of b) if (overlap(x, y)) return [x, y];
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
