// A bundle's identity: sha256 over the RFC 8785 canonical JSON of its name and
// spec. YAML style, key order, comments and anchors never reach the hash;
// any change of content does.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { PolicyBundleSpec } from './types.js';

export const HASH_PREFIX = 'sha256:';

export function canonicalJson(value: unknown): string {
  const out = canonicalize(value);
  if (out === undefined) throw new Error('value has no JSON form');
  return out;
}

export function bundleHash(name: string, spec: PolicyBundleSpec | unknown): string {
  return HASH_PREFIX + createHash('sha256').update(canonicalJson({ name, spec })).digest('hex');
}

/** The first 12 hex digits, for tables and logs. */
export const shortHash = (hash: string): string => hash.slice(HASH_PREFIX.length, HASH_PREFIX.length + 12);
