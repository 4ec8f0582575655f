// Builds policy sets from YAML text and a reconciler over a fresh store with
// the simulated driver on every platform.
import { validatePolicyFiles } from '../../controller/policy/validate.js';
import type { PolicySet } from '../../controller/policy/resources.js';
import { PLATFORMS } from '../../controller/policy/types.js';
import { Reconciler, type Log } from '../../controller/reconcile/reconciler.js';
import type { Store } from '../../controller/store/index.js';
import { createSimulatedDriver } from '../../protocols/simulated/driver.js';

export const quietLog: Log = { info: () => {}, warn: () => {}, error: () => {} };

export function policyOf(files: Record<string, string>): PolicySet {
  const r = validatePolicyFiles(Object.entries(files).map(([path, text]) => ({ path, text })));
  if (!r.ok) throw new Error(r.diagnostics.map((d) => `${d.file}:${d.line}:${d.column}: ${d.message}`).join('\n'));
  return r.policySet;
}

export const bundle = (name: string, version: string, extra = ''): string => `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: ${name} }
spec:
  version: "${version}"
  settings:
    passcode: { required: true, minLength: ${6 + Number(version.split('.')[0])} }
${extra}`;

export const group = (name: string, selector: string): string => `apiVersion: muster.dev/v1alpha1
kind: DeviceGroup
metadata: { name: ${name} }
spec:
  selector: ${selector}
`;

export const rollout = (name: string, bundleName: string, groups: string[], steps: string, extra = ''): string => `apiVersion: muster.dev/v1alpha1
kind: Rollout
metadata: { name: ${name} }
spec:
  bundle: ${bundleName}
  groups: [${groups.join(', ')}]
  steps:
${steps}
  ${extra}`;

export class Clock {
  constructor(public t = new Date('2026-01-05T09:00:00Z')) {}
  now = (): Date => new Date(this.t);
  advance(ms: number): void {
    this.t = new Date(this.t.getTime() + ms);
  }
}

export function reconcilerFor(store: Store, clock: Clock, log: Log = quietLog): Reconciler {
  return new Reconciler({ store, drivers: new Map(PLATFORMS.map((p) => [p, createSimulatedDriver(p)])), log, now: clock.now, batchSize: 200 });
}
