// Kubernetes label-selector semantics over a device's labels and muster.dev/
// attributes, plus a static question the validator asks: can two groups ever
// hold the same device? Answered conservatively ("yes" unless provably not).
import type { DeviceGroupSpec, LabelSelector } from './types.js';

/** A device's labels and its attributes under the muster.dev/ prefix, in one map. */
export type DeviceFacts = Readonly<Record<string, string>>;

export interface DeviceRef {
  id: string;
  serial?: string;
  facts: DeviceFacts;
}

export function selectorMatches(sel: LabelSelector, facts: DeviceFacts): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (facts[k] !== v) return false;
  for (const req of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(facts, req.key);
    const val = facts[req.key];
    switch (req.operator) {
      case 'In':
        if (!has || !req.values?.includes(val!)) return false;
        break;
      case 'NotIn':
        if (has && req.values?.includes(val!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/**
 * Membership: exclude wins, then include, then the selector. A group without a
 * selector holds only its includes; `selector: {}` holds every device.
 */
export function groupContains(spec: DeviceGroupSpec, device: DeviceRef): boolean {
  const ids = [device.id, device.serial].filter((x): x is string => !!x);
  if (spec.exclude?.some((x) => ids.includes(x))) return false;
  if (spec.include?.some((x) => ids.includes(x))) return true;
  return spec.selector ? selectorMatches(spec.selector, device.facts) : false;
}

// ---------------------------------------------------------------- static overlap

interface KeyConstraint {
  /** The value must be one of these (implies the key exists). */
  in?: Set<string>;
  notIn: Set<string>;
  mustExist: boolean;
  mustNotExist: boolean;
}
export type Constraints = Map<string, KeyConstraint>;

const keyConstraint = (m: Constraints, k: string): KeyConstraint => {
  let c = m.get(k);
  if (!c) m.set(k, (c = { notIn: new Set(), mustExist: false, mustNotExist: false }));
  return c;
};

function restrictIn(c: KeyConstraint, values: Iterable<string>): void {
  const vs = new Set(values);
  c.in = c.in ? new Set([...c.in].filter((v) => vs.has(v))) : vs;
}

/** The selector as a conjunction of per-key constraints. */
export function constraintsOf(sel: LabelSelector, into: Constraints = new Map()): Constraints {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) restrictIn(keyConstraint(into, k), [v]);
  for (const req of sel.matchExpressions ?? []) {
    const c = keyConstraint(into, req.key);
    if (req.operator === 'In') restrictIn(c, req.values ?? []);
    else if (req.operator === 'NotIn') for (const v of req.values ?? []) c.notIn.add(v);
    else if (req.operator === 'Exists') c.mustExist = true;
    else c.mustNotExist = true;
  }
  return into;
}

/** Can one value satisfy all these constraints on a key at once? */
function keySatisfiable(cs: readonly KeyConstraint[]): boolean {
  let mustExist = false;
  let mustNotExist = false;
  let candidates: Set<string> | undefined;
  for (const c of cs) {
    mustExist ||= c.mustExist;
    mustNotExist ||= c.mustNotExist;
    if (c.in) candidates = candidates ? new Set([...c.in].filter((v) => candidates!.has(v))) : c.in;
  }
  if (mustNotExist && (mustExist || candidates !== undefined)) return false;
  if (candidates) {
    for (const v of candidates) if (!cs.some((c) => c.notIn.has(v))) return true;
    return false;
  }
  return true;
}

export function satisfiable(m: Constraints): boolean {
  for (const c of m.values()) if (!keySatisfiable([c])) return false;
  return true;
}

/** A group prepared once for many overlap questions. */
export interface CompiledGroup {
  include: readonly string[];
  exclude: ReadonlySet<string>;
  /** Undefined when the group has no selector (it holds only its includes). */
  constraints?: Constraints;
  selectorSatisfiable: boolean;
}

export function compileGroup(spec: DeviceGroupSpec): CompiledGroup {
  const constraints = spec.selector ? constraintsOf(spec.selector) : undefined;
  return {
    include: spec.include ?? [],
    exclude: new Set(spec.exclude ?? []),
    ...(constraints ? { constraints } : {}),
    selectorSatisfiable: constraints ? satisfiable(constraints) : false,
  };
}

/** Can some device be in both groups and satisfy `extra` (e.g. a platform)? Conservative: "yes" unless provably not. */
export function compiledGroupsCanOverlap(a: CompiledGroup, b: CompiledGroup, extra?: Constraints): boolean {
  if (a.include.some((id) => !b.exclude.has(id)) || b.include.some((id) => !a.exclude.has(id))) return true;
  if (!a.constraints || !b.constraints || !a.selectorSatisfiable || !b.selectorSatisfiable) return false;
  const keys = new Set([...a.constraints.keys(), ...b.constraints.keys(), ...(extra?.keys() ?? [])]);
  for (const k of keys) {
    const cs = [a.constraints.get(k), b.constraints.get(k), extra?.get(k)].filter((c): c is KeyConstraint => !!c);
    if (cs.length > 1 && !keySatisfiable(cs)) return false;
  }
  return true;
}

/** Can some device be in both groups (and satisfy `extra`, e.g. a platform)? */
export function groupsCanOverlap(a: DeviceGroupSpec, b: DeviceGroupSpec, extra?: LabelSelector): boolean {
  return compiledGroupsCanOverlap(compileGroup(a), compileGroup(b), extra ? constraintsOf(extra) : undefined);
}

/** Does the group's selector (ignoring includes) leave any device at all? */
export function selectorSatisfiable(sel: LabelSelector): boolean {
  return satisfiable(constraintsOf(sel));
}

/**
 * The group an enrollment credential or token is made for (`muster enroll
 * windows|android --group`) becomes this device attribute, which selectors
 * match as `muster.dev/enrollment-group`. Group names are DNS labels.
 */
export const ENROLLMENT_GROUP_ATTRIBUTE = 'enrollment-group';
export const isEnrollmentGroup = (v: unknown): v is string => typeof v === 'string' && /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v);
