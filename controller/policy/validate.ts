// The whole validation: YAML → documents → schema → semantic checks. Pure over
// its inputs (file texts and previously seen bundle versions), so `muster
// validate`, `muster plan` and the controller's source all run this same code.
import { checkBundleInternals, checkDuplicates, checkGroup, checkReferences, checkSecrets, checkSteps, type KnownNames } from './checks.js';
import { checkConflicts } from './conflicts.js';
import { compareDiagnostics, countErrors, type Diagnostic } from './diagnostics.js';
import { bundleHash } from './hash.js';
import { checkImmutability, type KnownBundleVersion } from './immutability.js';
import { parseYamlFile } from './parse.js';
import { classify, emptyPolicySet, type Loaded, type PolicySet } from './resources.js';
import { createSchemaValidator, type SchemaValidator } from './schema-check.js';
import type { DeviceGroup, PolicyBundle, Resource, Rollout } from './types.js';

export interface SourceFile {
  /** Path relative to the policy root, forward slashes. */
  path: string;
  text: string;
}

export interface ValidateOptions {
  /** Bundle versions seen before (a previous revision, or the controller's history). */
  previous?: readonly KnownBundleVersion[];
  /** Reuse one compiled validator across calls (compiling costs ~100 ms). */
  schemaValidator?: SchemaValidator;
}

export interface ValidationResult {
  ok: boolean;
  policySet: PolicySet;
  diagnostics: Diagnostic[];
  stats: { files: number; documents: number; ignored: number; bundles: number; groups: number; rollouts: number };
}

export function validatePolicyFiles(files: readonly SourceFile[], readDiagnostics: readonly Diagnostic[] = [], opts: ValidateOptions = {}): ValidationResult {
  const schemaValidator = opts.schemaValidator ?? createSchemaValidator();
  const diagnostics: Diagnostic[] = [...readDiagnostics];
  const loaded: Loaded[] = [];
  const known: KnownNames = { bundles: new Set(), groups: new Set() };
  let documents = 0;
  let ignored = 0;

  for (const file of files) {
    const parsed = parseYamlFile(file.path, file.text);
    diagnostics.push(...parsed.diagnostics);
    for (const doc of parsed.documents) {
      documents++;
      const c = classify(doc);
      if ('ignored' in c) {
        ignored++;
        continue;
      }
      if ('diagnostic' in c) {
        diagnostics.push(c.diagnostic);
        continue;
      }
      const name = (doc.value as { metadata?: { name?: unknown } }).metadata?.name;
      if (typeof name === 'string') {
        if (c.kind === 'PolicyBundle') known.bundles.add(name);
        if (c.kind === 'DeviceGroup') known.groups.add(name);
      }
      const errors = schemaValidator(c.kind, doc);
      if (errors.length > 0) diagnostics.push(...errors);
      else loaded.push({ resource: doc.value as Resource, doc });
    }
  }

  diagnostics.push(...checkDuplicates(loaded));
  const set = emptyPolicySet();
  for (const l of loaded) {
    const name = l.resource.metadata.name;
    if (l.resource.kind === 'PolicyBundle' && !set.bundles.has(name)) {
      set.bundles.set(name, l as Loaded<PolicyBundle>);
      set.hashes.set(name, bundleHash(name, l.resource.spec));
    } else if (l.resource.kind === 'DeviceGroup' && !set.groups.has(name)) set.groups.set(name, l as Loaded<DeviceGroup>);
    else if (l.resource.kind === 'Rollout' && !set.rollouts.has(name)) set.rollouts.set(name, l as Loaded<Rollout>);
  }

  diagnostics.push(...checkReferences(set, known));
  for (const r of set.rollouts.values()) diagnostics.push(...checkSteps(r));
  for (const b of set.bundles.values()) diagnostics.push(...checkSecrets(b), ...checkBundleInternals(b));
  for (const g of set.groups.values()) diagnostics.push(...checkGroup(g));
  diagnostics.push(...checkConflicts(set));
  if (opts.previous) diagnostics.push(...checkImmutability(set, opts.previous));

  diagnostics.sort(compareDiagnostics);
  return {
    ok: countErrors(diagnostics) === 0,
    policySet: set,
    diagnostics,
    stats: { files: files.length, documents, ignored, bundles: set.bundles.size, groups: set.groups.size, rollouts: set.rollouts.size },
  };
}

/** The bundle versions of a tree, quietly, for immutability checks against it. */
export function bundleVersionsOf(files: readonly SourceFile[], seenAt: string, schemaValidator?: SchemaValidator): KnownBundleVersion[] {
  const { policySet } = validatePolicyFiles(files, [], schemaValidator ? { schemaValidator } : {});
  return [...policySet.bundles].map(([name, b]) => ({ name, version: b.resource.spec.version, hash: policySet.hashes.get(name)!, seenAt }));
}
