// Semantic checks on documents that passed their schema: names, references,
// rollout steps, secrets, and references inside a bundle. Pure functions over
// a PolicySet; each returns diagnostics at the YAML position concerned.
import type { Diagnostic } from './diagnostics.js';
import type { PathSegment } from './parse.js';
import type { Loaded, PolicySet } from './resources.js';
import { closest } from './schema-check.js';
import { selectorSatisfiable } from './selector.js';
import { SECRET_REF_PATTERN, type PolicyBundle, type Resource, type Rollout } from './types.js';
import { deprecatedFragmentFields, fragmentConflicts } from '../../protocols/android/compile.js';

const at = (l: Loaded, path: PathSegment[], severity: 'error' | 'warning', code: string, message: string, key = false): Diagnostic => ({
  ...l.doc.locate(path, { key }),
  severity,
  code,
  message,
});

/** Names that exist per kind, including documents that failed their schema (so one mistake does not cascade). */
export interface KnownNames {
  bundles: Set<string>;
  groups: Set<string>;
}

export function checkReferences(set: PolicySet, known: KnownNames): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const r of set.rollouts.values()) {
    const { spec, metadata } = r.resource;
    if (!known.bundles.has(spec.bundle)) {
      const hint = closest(spec.bundle, [...known.bundles]);
      out.push(at(r, ['spec', 'bundle'], 'error', 'unknown-reference', `Rollout "${metadata.name}" refers to PolicyBundle "${spec.bundle}", which is not defined${hint ? ` (did you mean "${hint}"?)` : ''}`));
    }
    spec.groups.forEach((g, i) => {
      if (known.groups.has(g)) return;
      const hint = closest(g, [...known.groups]);
      out.push(at(r, ['spec', 'groups', i], 'error', 'unknown-reference', `Rollout "${metadata.name}" refers to DeviceGroup "${g}", which is not defined${hint ? ` (did you mean "${hint}"?)` : ''}`));
    });
  }
  return out;
}

/** Duplicate names per kind: reported at the second definition, pointing at the first. */
export function checkDuplicates(all: Loaded[]): Diagnostic[] {
  const first = new Map<string, Loaded>();
  const out: Diagnostic[] = [];
  for (const l of all) {
    const key = `${l.resource.kind}/${l.resource.metadata.name}`;
    const prev = first.get(key);
    if (!prev) {
      first.set(key, l);
      continue;
    }
    out.push({
      ...at(l, ['metadata', 'name'], 'error', 'duplicate-name', `${l.resource.kind} "${l.resource.metadata.name}" is defined more than once; names must be unique per kind`),
      related: [prev.doc.locate(['metadata', 'name'])],
    });
  }
  return out;
}

export function checkSteps(r: Loaded<Rollout>): Diagnostic[] {
  const out: Diagnostic[] = [];
  const steps = r.resource.spec.steps;
  const name = r.resource.metadata.name;
  if (steps.length === 0) {
    return [at(r, ['spec', 'steps'], 'error', 'steps', `Rollout "${name}" has no steps; end with {setWeight: 100}`)];
  }
  let weight = 0;
  let lastWeightIndex = -1;
  steps.forEach((step, i) => {
    if ('setWeight' in step) {
      const w = step.setWeight;
      if (w < 0 || w > 100) {
        out.push(at(r, ['spec', 'steps', i, 'setWeight'], 'error', 'steps', `setWeight ${w} is outside 0–100`));
      } else if (lastWeightIndex >= 0 && w <= weight) {
        out.push(at(r, ['spec', 'steps', i, 'setWeight'], 'error', 'steps', `weights must increase: setWeight ${w} follows setWeight ${weight}`));
      }
      weight = Math.max(weight, w);
      lastWeightIndex = i;
    } else if ('analysis' in step && weight === 0) {
      out.push(at(r, ['spec', 'steps', i], 'warning', 'steps', 'analysis before any setWeight above 0 has no canary devices to judge'));
    }
  });
  if (lastWeightIndex < 0 || weight !== 100) {
    out.push(
      at(r, ['spec', 'steps', Math.max(lastWeightIndex, 0)], 'error', 'steps', `Rollout "${name}" never reaches 100%: end the steps with {setWeight: 100}${weight ? ` (the highest weight is ${weight})` : ''}`),
    );
  } else {
    const after = steps.slice(lastWeightIndex + 1);
    after.forEach((s, j) => {
      if ('pause' in s) out.push(at(r, ['spec', 'steps', lastWeightIndex + 1 + j], 'warning', 'steps', 'a pause after setWeight 100 holds nothing back; remove it'));
    });
  }
  return out;
}

/** Where the vocabulary requires a ${secret:NAME} reference. */
function secretFields(b: PolicyBundle): Array<[PathSegment[], unknown]> {
  const s = b.spec.settings ?? {};
  const out: Array<[PathSegment[], unknown]> = [];
  s.wifi?.forEach((w, i) => {
    out.push([['spec', 'settings', 'wifi', i, 'password'], w.password]);
    out.push([['spec', 'settings', 'wifi', i, 'eap', 'password'], w.eap?.password]);
  });
  s.vpn?.forEach((v, i) => {
    out.push([['spec', 'settings', 'vpn', i, 'authentication', 'sharedSecret'], v.authentication.sharedSecret]);
    out.push([['spec', 'settings', 'vpn', i, 'authentication', 'password'], v.authentication.password]);
  });
  s.certificates?.forEach((c, i) => {
    out.push([['spec', 'settings', 'certificates', i, 'pkcs12'], c.pkcs12]);
    out.push([['spec', 'settings', 'certificates', i, 'passphrase'], c.passphrase]);
  });
  return out.filter(([, v]) => v !== undefined);
}

// Keys in native payloads that hold secrets on some platform (Apple Password,
// AMAPI ONC Passphrase, WPA PSK ...).
const SECRET_KEY = /^(password|passphrase|sharedsecret|psk|presharedkey|secret|keymaterial|pin)$/i;

const dottedPath = (p: PathSegment[]) => p.reduce<string>((a, s) => (typeof s === 'number' ? `${a}[${s}]` : a ? `${a}.${s}` : s), '');

export function checkSecrets(b: Loaded<PolicyBundle>): Diagnostic[] {
  const out: Diagnostic[] = [];
  const report = (path: PathSegment[]) =>
    out.push(
      at(b, path, 'error', 'plain-secret', `${dottedPath(path)} holds a plain-text secret; write \${secret:NAME} here and give NAME to the controller (secrets never go in Git)`),
    );
  for (const [path, value] of secretFields(b.resource)) {
    if (typeof value !== 'string' || !SECRET_REF_PATTERN.test(value)) report(path);
  }
  // Native escape hatches: any secret-named key with a literal value.
  const walk = (v: unknown, path: PathSegment[], depth: number) => {
    if (depth > 64 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, [...path, i], depth + 1));
    for (const [k, x] of Object.entries(v)) {
      if (SECRET_KEY.test(k) && typeof x === 'string' && x !== '' && !SECRET_REF_PATTERN.test(x)) report([...path, k]);
      else walk(x, [...path, k], depth + 1);
    }
  };
  walk(b.resource.spec.apple?.payloads, ['spec', 'apple', 'payloads'], 0);
  walk(b.resource.spec.android?.policy, ['spec', 'android', 'policy'], 0);
  b.resource.spec.windows?.settings?.forEach((w, i) => {
    if (/(password|passphrase|sharedsecret|keymaterial)$/i.test(w.omaUri) && typeof w.value === 'string' && !SECRET_REF_PATTERN.test(w.value)) {
      report(['spec', 'windows', 'settings', i, 'value']);
    }
    if (w.format === 'xml' && typeof w.value === 'string' && /<keyMaterial>(?!\$\{secret:)[^<]+<\/keyMaterial>/i.test(w.value)) {
      report(['spec', 'windows', 'settings', i, 'value']);
    }
  });
  return out;
}

/** References between parts of one bundle: certificates, apps, platforms. */
export function checkBundleInternals(b: Loaded<PolicyBundle>): Diagnostic[] {
  const out: Diagnostic[] = [];
  const s = b.resource.spec.settings ?? {};
  const certs = new Map((s.certificates ?? []).map((c) => [c.name, c]));
  const apps = new Set((s.apps ?? []).map((a) => a.name));
  const needCert = (path: PathSegment[], name: string, type?: 'pkcs12') => {
    const c = certs.get(name);
    if (!c) {
      const hint = closest(name, [...certs.keys()]);
      out.push(at(b, path, 'error', 'unknown-reference', `certificate "${name}" is not in spec.settings.certificates${hint ? ` (did you mean "${hint}"?)` : ''}`));
    } else if (type && c.type !== type) {
      out.push(at(b, path, 'error', 'certificate-type', `certificate "${name}" is a ${c.type} certificate; a client identity needs type pkcs12`));
    }
  };
  s.wifi?.forEach((w, i) => {
    w.eap?.trustedCertificates?.forEach((n, j) => needCert(['spec', 'settings', 'wifi', i, 'eap', 'trustedCertificates', j], n));
    if (w.eap?.clientCertificate) needCert(['spec', 'settings', 'wifi', i, 'eap', 'clientCertificate'], w.eap.clientCertificate, 'pkcs12');
    const enterprise = w.security.endsWith('-enterprise');
    if (enterprise && !w.eap) out.push(at(b, ['spec', 'settings', 'wifi', i, 'security'], 'error', 'wifi', `${w.security} needs an eap block`));
    if (!enterprise && w.eap) out.push(at(b, ['spec', 'settings', 'wifi', i, 'eap'], 'error', 'wifi', `eap applies only to wpa2-enterprise or wpa3-enterprise, not ${w.security}`));
    if ((w.security.endsWith('-personal') || w.security === 'wep') && w.password === undefined) {
      out.push(at(b, ['spec', 'settings', 'wifi', i], 'error', 'wifi', `${w.security} network "${w.ssid}" needs a password (\${secret:NAME})`));
    }
  });
  const ssids = new Map<string, number>();
  s.wifi?.forEach((w, i) => {
    if (ssids.has(w.ssid)) out.push(at(b, ['spec', 'settings', 'wifi', i, 'ssid'], 'error', 'duplicate-name', `Wi-Fi network "${w.ssid}" is listed twice`));
    ssids.set(w.ssid, i);
  });
  s.vpn?.forEach((v, i) => {
    const a = v.authentication;
    if (a.method === 'certificate') {
      if (a.certificate) needCert(['spec', 'settings', 'vpn', i, 'authentication', 'certificate'], a.certificate, 'pkcs12');
      else out.push(at(b, ['spec', 'settings', 'vpn', i, 'authentication'], 'error', 'vpn', 'certificate authentication needs authentication.certificate'));
    }
    if (a.method === 'sharedSecret' && !a.sharedSecret) out.push(at(b, ['spec', 'settings', 'vpn', i, 'authentication'], 'error', 'vpn', 'sharedSecret authentication needs authentication.sharedSecret'));
  });
  s.certificates?.forEach((c, i) => {
    const p: PathSegment[] = ['spec', 'settings', 'certificates', i];
    if (c.type === 'pkcs12' && !c.pkcs12) out.push(at(b, p, 'error', 'certificate', `pkcs12 certificate "${c.name}" needs pkcs12: \${secret:NAME}`));
    if (c.type !== 'pkcs12' && !c.pem) out.push(at(b, p, 'error', 'certificate', `${c.type} certificate "${c.name}" needs pem`));
    if (c.pem && !/^-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\s*$/.test(c.pem.trim())) {
      out.push(at(b, [...p, 'pem'], 'error', 'certificate', `certificate "${c.name}": pem is not a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)`));
    }
  });
  if (s.kiosk && !apps.has(s.kiosk.app)) {
    const hint = closest(s.kiosk.app, [...apps]);
    out.push(at(b, ['spec', 'settings', 'kiosk', 'app'], 'error', 'unknown-reference', `kiosk app "${s.kiosk.app}" is not in spec.settings.apps${hint ? ` (did you mean "${hint}"?)` : ''}`));
  }
  const names = new Set<string>();
  s.apps?.forEach((a, i) => {
    if (names.has(a.name)) out.push(at(b, ['spec', 'settings', 'apps', i, 'name'], 'error', 'duplicate-name', `app "${a.name}" is listed twice`));
    names.add(a.name);
  });
  out.push(...checkAndroidFragment(b));
  return out;
}

/**
 * The raw AMAPI fragment against the bundle's own settings: the fragment wins
 * when both set a Policy field (a warning says so, at the fragment's value),
 * and deprecated fields are named with their replacement. The mapping is the
 * Android driver's own pure compiler, so what is reported is what is sent.
 */
export function checkAndroidFragment(b: Loaded<PolicyBundle>): Diagnostic[] {
  const out: Diagnostic[] = [];
  const base: PathSegment[] = ['spec', 'android', 'policy'];
  for (const c of fragmentConflicts(b.resource.spec)) {
    const secret = SECRET_KEY.test(c.field.slice(c.field.lastIndexOf('.') + 1));
    const show = (v: string) => (secret ? '(hidden)' : v.length > 60 ? v.slice(0, 57) + '...' : v);
    out.push(
      at(
        b,
        [...base, ...c.path],
        'warning',
        'android-override',
        c.muster
          ? `android.policy.${c.field} overrides Muster's ${show(c.produced)}: Muster turns this status report on because convergence and compliance read it`
          : `android.policy.${c.field} is ${show(c.fragment)} but spec.settings of this bundle makes it ${show(c.produced)}; the fragment wins (remove one of the two)`,
      ),
    );
  }
  for (const d of deprecatedFragmentFields(b.resource.spec)) {
    out.push(at(b, [...base, d.field], 'warning', 'android-deprecated', `android.policy.${d.field} is deprecated in the Android Management API: use ${d.use}`, true));
  }
  return out;
}

export function checkGroup(g: Loaded): Diagnostic[] {
  const r = g.resource as Resource & { kind: 'DeviceGroup' };
  const { selector, include } = r.spec;
  if (!selector && !include?.length) {
    return [at(g, ['spec'], 'warning', 'empty-group', `DeviceGroup "${r.metadata.name}" has neither a selector nor include, so it holds no devices (use selector: {} for every device)`)];
  }
  if (selector && !selectorSatisfiable(selector)) {
    return [at(g, ['spec', 'selector'], 'warning', 'empty-group', `the selector of DeviceGroup "${r.metadata.name}" contradicts itself and matches no device`)];
  }
  return [];
}
