// What a new policy set does to the rollouts in force, pure: which rollouts
// start a new revision (their bundle changed; the last completed bundle
// becomes stable), which only changed spec or groups, and which are gone.
// The reconciler writes these decisions; `muster plan` prints them.
import canonicalize from 'canonicalize';
import type { PolicySet } from '../policy/resources.js';
import type { RolloutSpec } from '../policy/types.js';
import { newRevision, type RolloutStatus } from '../rollout/engine.js';

/** The part of a stored rollout revision these decisions read. */
export interface RolloutInForce {
  name: string;
  revision: number;
  stableHash: string | null;
  canaryHash: string;
  phase: RolloutStatus['phase'];
  aborted: boolean;
  observedGeneration: number;
  spec: unknown;
  deleted: boolean;
}

export type RevisionDecision =
  | { kind: 'start'; rollout: string; spec: RolloutSpec; status: RolloutStatus; previous: RolloutInForce | undefined }
  | { kind: 'spec'; rollout: string; spec: RolloutSpec; generation: number }
  | { kind: 'groups'; rollout: string }
  | { kind: 'delete'; rollout: string };

export function decideRevisions(next: PolicySet, inForce: ReadonlyMap<string, RolloutInForce>, previous: PolicySet | undefined, now: Date): RevisionDecision[] {
  const out: RevisionDecision[] = [];
  const touched = new Set<string>();
  for (const [name, { resource }] of next.rollouts) {
    const spec = resource.spec;
    const hash = next.hashes.get(spec.bundle)!;
    const cur = inForce.get(name);
    if (!cur || cur.canaryHash !== hash) {
      // Only a bundle that finished rolling out (and was not aborted) becomes stable.
      const stable = !cur ? null : cur.phase === 'Healthy' && !cur.aborted ? cur.canaryHash : cur.stableHash;
      const status = newRevision({ revision: (cur?.revision ?? 0) + 1, stableHash: stable, canaryHash: hash, generation: (cur?.observedGeneration ?? 0) + 1, steps: spec.steps.length }, now);
      out.push({ kind: 'start', rollout: name, spec, status, previous: cur });
      touched.add(name);
    } else if (canonicalize(cur.spec) !== canonicalize(spec) || cur.deleted) {
      out.push({ kind: 'spec', rollout: name, spec, generation: cur.observedGeneration + 1 });
      touched.add(name);
    }
  }
  for (const [name, cur] of inForce) {
    if (!next.rollouts.has(name) && !cur.deleted) {
      out.push({ kind: 'delete', rollout: name });
      touched.add(name);
    }
  }
  // A group can change without any rollout spec changing: its rollouts are rescanned.
  const groupsChanged = new Set<string>();
  for (const [g, { resource }] of next.groups) {
    const before = previous?.groups.get(g)?.resource.spec;
    if (!before || canonicalize(before) !== canonicalize(resource.spec)) groupsChanged.add(g);
  }
  for (const g of previous?.groups.keys() ?? []) if (!next.groups.has(g)) groupsChanged.add(g);
  for (const [name, { resource }] of next.rollouts) {
    if (!touched.has(name) && resource.spec.groups.some((g) => groupsChanged.has(g))) out.push({ kind: 'groups', rollout: name });
  }
  return out;
}
