// Schema validation with ajv (draft 2020-12, all errors), with ajv's raw
// errors turned into one plain message each at the YAML position they concern.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { packageRoot } from '../package-root.js';
import type { Diagnostic } from './diagnostics.js';
import type { ParsedDocument, PathSegment } from './parse.js';
import { KINDS, type Kind } from './types.js';

// ajv-formats is CommonJS; under NodeNext its default export arrives wrapped.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => void;

export type SchemaSet = Record<Kind, object>;

export function schemaFileName(kind: Kind): string {
  return `${kind.toLowerCase()}.schema.json`;
}

export function loadSchemas(dir = join(packageRoot(), 'schemas')): SchemaSet {
  const out = {} as SchemaSet;
  for (const kind of KINDS) out[kind] = JSON.parse(readFileSync(join(dir, schemaFileName(kind)), 'utf8')) as object;
  return out;
}

export type SchemaValidator = (kind: Kind, doc: ParsedDocument) => Diagnostic[];

export function createSchemaValidator(schemas: SchemaSet = loadSchemas()): SchemaValidator {
  const ajv = new Ajv2020({ allErrors: true, strict: true, verbose: true });
  addFormats(ajv);
  const compiled = new Map<Kind, ValidateFunction>();
  for (const kind of KINDS) compiled.set(kind, ajv.compile(schemas[kind]));
  return (kind, doc) => {
    const validate = compiled.get(kind)!;
    if (validate(doc.value)) return [];
    return explain(validate.errors ?? [], doc);
  };
}

const pathOf = (pointer: string): PathSegment[] =>
  pointer === ''
    ? []
    : pointer
        .slice(1)
        .split('/')
        .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
        .map((s) => (/^\d+$/.test(s) ? Number(s) : s));

const dotted = (path: readonly PathSegment[]): string =>
  path.reduce<string>((acc, s) => (typeof s === 'number' ? `${acc}[${s}]` : acc ? `${acc}.${s}` : s), '') || '(document)';

/**
 * Turns ajv's errors into diagnostics. For oneOf/anyOf, ajv reports every
 * branch; we keep the branch that got furthest (errors below the failing
 * object) and otherwise say which forms are allowed, so one mistake gives one
 * message.
 */
function explain(errors: ErrorObject[], doc: ParsedDocument): Diagnostic[] {
  const out: Diagnostic[] = [];
  const seen = new Set<string>();
  const alternatives = errors.filter((e) => e.keyword === 'oneOf' || e.keyword === 'anyOf');
  const suppressed = new Set<ErrorObject>();

  for (const alt of alternatives) {
    const prefix = alt.schemaPath + '/';
    const branches = new Map<number, ErrorObject[]>();
    for (const e of errors) {
      if (e === alt || !e.schemaPath.startsWith(prefix)) continue;
      const idx = Number(e.schemaPath.slice(prefix.length).split('/')[0]);
      branches.set(idx, [...(branches.get(idx) ?? []), e]);
      suppressed.add(e);
    }
    // A branch "fits" when all its errors sit below the object itself: right shape, wrong detail.
    const fitting = [...branches.values()].filter((errs) => errs.every((e) => e.instancePath.length > alt.instancePath.length && e.keyword !== 'additionalProperties'));
    const best = fitting.length > 0 ? fitting.reduce((a, b) => (a.length <= b.length ? a : b)) : undefined;
    if (best) {
      for (const e of best) suppressed.delete(e);
      suppressed.add(alt);
    }
  }

  // An unknown field at the same place already says what is wrong (with a "did you mean").
  const unknownFieldAt = new Set(errors.filter((e) => e.keyword === 'additionalProperties' && !suppressed.has(e)).map((e) => e.instancePath));
  for (const alt of alternatives) if (unknownFieldAt.has(alt.instancePath)) suppressed.add(alt);

  for (const e of errors) {
    if (suppressed.has(e) || e.keyword === 'if' || e.keyword === 'not') continue;
    const path = pathOf(e.instancePath);
    const { message, at, key } = describe(e, path);
    const pos = doc.locate(at, { key });
    const id = `${pos.line}:${pos.column}:${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ ...pos, severity: 'error', code: 'schema', message });
  }
  return out;
}

function describe(e: ErrorObject, path: PathSegment[]): { message: string; at: PathSegment[]; key?: boolean } {
  const where = dotted(path);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(p.additionalProperty);
      const allowed = Object.keys(((e.parentSchema as { properties?: object })?.properties ?? {}) as object);
      const hint = closest(name, allowed);
      return {
        message: `${where}: unknown field "${name}"${hint ? ` (did you mean "${hint}"?)` : allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`,
        at: [...path, name],
        key: true,
      };
    }
    case 'required':
      return { message: `${where}: missing required field "${String(p.missingProperty)}"`, at: path };
    case 'enum':
      return { message: `${where}: must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${JSON.stringify(e.data)})`, at: path };
    case 'const':
      return { message: `${where}: must be ${JSON.stringify(p.allowedValue)} (got ${JSON.stringify(e.data)})`, at: path };
    case 'type':
      return { message: `${where}: must be ${article(String(p.type))} (got ${typeName(e.data)})`, at: path };
    case 'pattern': {
      const desc = (e.parentSchema as { description?: string })?.description;
      return { message: `${where}: ${JSON.stringify(e.data)} is not valid${desc ? ` — ${lowerFirst(desc)}` : ` (must match ${String(p.pattern)})`}`, at: path };
    }
    case 'oneOf':
    case 'anyOf': {
      const keys = singleKeyBranches(e.schema);
      if (keys) return { message: `${where}: must set ${e.keyword === 'oneOf' ? 'exactly' : 'at least'} one of ${keys.join(', ')}`, at: path };
      const forms = branchForms(e.schema);
      return { message: `${where}: must be ${forms ? `one of: ${forms}` : 'one of the allowed forms'}`, at: path };
    }
    case 'maximum':
    case 'minimum':
    case 'exclusiveMaximum':
    case 'exclusiveMinimum':
      return { message: `${where}: must be ${String(p.comparison)} ${String(p.limit)} (got ${JSON.stringify(e.data)})`, at: path };
    case 'maxLength':
    case 'minLength':
      return { message: `${where}: must be at ${e.keyword === 'maxLength' ? 'most' : 'least'} ${String(p.limit)} characters (got ${String((e.data as string).length)})`, at: path };
    case 'minItems':
      return { message: p.limit === 1 ? `${where}: must not be empty` : `${where}: needs at least ${String(p.limit)} items`, at: path };
    case 'uniqueItems':
      return { message: `${where}: items ${String(p.j)} and ${String(p.i)} are the same; list each once`, at: path };
    case 'format':
      return { message: `${where}: ${JSON.stringify(e.data)} is not a valid ${String(p.format)}`, at: path };
    default:
      return { message: `${where}: ${e.message ?? 'is invalid'}`, at: path };
  }
}

/** ["setWeight", "pause", "analysis"] when every branch only requires one key. */
function singleKeyBranches(schema: unknown): string[] | undefined {
  if (!Array.isArray(schema)) return undefined;
  const keys = schema.map((b: { required?: string[] }) => (b.required?.length === 1 && Object.keys(b).every((k) => ['required', 'properties', 'title', 'description'].includes(k)) ? b.required[0] : undefined));
  return keys.every((k): k is string => !!k) ? keys : undefined;
}

/** "{setWeight}, {pause}, {analysis}" from the branches' required keys. */
function branchForms(schema: unknown): string | undefined {
  if (!Array.isArray(schema)) return undefined;
  const forms = schema.map((b: { required?: string[]; type?: string; const?: unknown; title?: string }) =>
    b.title ? b.title : b.required?.length ? `{${b.required.join(', ')}}` : b.const !== undefined ? JSON.stringify(b.const) : b.type,
  );
  return forms.every(Boolean) ? forms.join(', ') : undefined;
}

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1).replace(/\.$/, '');
const article = (t: string) => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);
export const typeName = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`);

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
