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

export function satisfiable(m: Constraints): boolean {
  for (const c of m.values()) {
    if (c.mustNotExist && (c.mustExist || c.in !== undefined)) return false;
    if (c.in && ![...c.in].some((v) => !c.notIn.has(v))) return false;
  }
  return true;
}

/** Can some device be in both groups (and satisfy `extra`, e.g. a platform)? */
export function groupsCanOverlap(a: DeviceGroupSpec, b: DeviceGroupSpec, extra?: LabelSelector): boolean {
  const includedInto = (x: DeviceGroupSpec, y: DeviceGroupSpec) => (x.include ?? []).some((id) => !(y.exclude ?? []).includes(id));
  if (includedInto(a, b) || includedInto(b, a)) return true;
  if (!a.selector || !b.selector) return false;
  const m = constraintsOf(a.selector);
  constraintsOf(b.selector, m);
  if (extra) constraintsOf(extra, m);
  return satisfiable(m);
}

/** Does the group's selector (ignoring includes) leave any device at all? */
export function selectorSatisfiable(sel: LabelSelector): boolean {
  return satisfiable(constraintsOf(sel));
}
