// Which YAML documents are Muster resources, and the PolicySet built from them.
// A policy repository may hold other YAML (CI workflows, Helm values): those
// are recognised by having neither a muster.dev apiVersion nor a Muster kind,
// and are skipped.
import type { Diagnostic } from './diagnostics.js';
import type { ParsedDocument } from './parse.js';
import { closest } from './schema-check.js';
import { API_VERSION, KINDS, type DeviceGroup, type Kind, type PolicyBundle, type Resource, type Rollout } from './types.js';

export interface Loaded<R extends Resource = Resource> {
  resource: R;
  doc: ParsedDocument;
}

export interface PolicySet {
  bundles: Map<string, Loaded<PolicyBundle>>;
  groups: Map<string, Loaded<DeviceGroup>>;
  rollouts: Map<string, Loaded<Rollout>>;
  /** Bundle name → content hash. */
  hashes: Map<string, string>;
}

export const emptyPolicySet = (): PolicySet => ({ bundles: new Map(), groups: new Map(), rollouts: new Map(), hashes: new Map() });

export type Classification = { kind: Kind } | { ignored: true } | { diagnostic: Diagnostic };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function classify(doc: ParsedDocument): Classification {
  const v = doc.value;
  if (!isObject(v)) return { ignored: true };
  const apiVersion = v.apiVersion;
  const kind = v.kind;
  const ours = typeof apiVersion === 'string' && apiVersion.startsWith('muster.dev/');
  const ourKind = typeof kind === 'string' && (KINDS as readonly string[]).includes(kind);
  const err = (path: string[], code: string, message: string, key = false): Classification => ({
    diagnostic: { ...doc.locate(path, { key }), severity: 'error', code, message },
  });

  if (!ours && !ourKind) {
    // Looks like a resource (metadata + spec) but says nothing of what it is: most likely a
    // Muster document whose kind was forgotten, so say so rather than skip it silently.
    if (kind === undefined && apiVersion === undefined && 'spec' in v && 'metadata' in v) {
      return err([], 'no-kind', `document has metadata and spec but no apiVersion or kind; add apiVersion: ${API_VERSION} and kind: one of ${KINDS.join(', ')}`);
    }
    return { ignored: true };
  }
  if (apiVersion === undefined) return err([], 'no-api-version', `missing apiVersion: set apiVersion: ${API_VERSION}`);
  if (apiVersion !== API_VERSION) {
    return err(['apiVersion'], 'api-version', `unsupported apiVersion ${JSON.stringify(apiVersion)}: this Muster reads ${API_VERSION}`);
  }
  if (kind === undefined) return err([], 'no-kind', `document has no kind: set kind to one of ${KINDS.join(', ')}`);
  if (!ourKind) {
    const hint = typeof kind === 'string' ? closest(kind, KINDS) : undefined;
    return err(['kind'], 'unknown-kind', `unknown kind ${JSON.stringify(kind)}${hint ? ` (did you mean ${hint}?)` : ''}; expected one of ${KINDS.join(', ')}`);
  }
  return { kind: kind as Kind };
}

/** "PolicyBundle corp-baseline" */
export const describeResource = (r: Resource): string => `${r.kind} "${r.metadata.name}"`;
