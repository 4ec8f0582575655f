import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Document, stringify } from 'yaml';
import { bundleHash, canonicalJson } from '../../controller/policy/hash.js';
import { parseYamlFile } from '../../controller/policy/parse.js';

const parseOne = (text: string): unknown => {
  const r = parseYamlFile('t.yaml', text);
  expect(r.diagnostics).toEqual([]);
  return r.documents[0]!.value;
};

// JSON-like values YAML can carry exactly (no -0, which JSON cannot tell from 0).
const leaf = fc.oneof(fc.string(), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)), fc.boolean(), fc.constant(null));
const specArb = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 8 }),
  fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), tie('value'), { maxKeys: 4 })),
  })).value,
  { maxKeys: 6 },
);

function shuffleKeys(v: unknown, rnd: () => number): unknown {
  if (Array.isArray(v)) return v.map((x) => shuffleKeys(x, rnd));
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).sort(() => rnd() - 0.5);
    return Object.fromEntries(entries.map(([k, x]) => [k, shuffleKeys(x, rnd)]));
  }
  return v;
}

const styles = [
  (v: unknown) => stringify(v),
  (v: unknown) => stringify(v, { collectionStyle: 'flow' }),
  (v: unknown) => stringify(v, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN' }),
  (v: unknown) => stringify(v, { defaultStringType: 'QUOTE_SINGLE' }),
  (v: unknown) => {
    const doc = new Document(v);
    doc.commentBefore = ' a comment above the document';
    doc.comment = ' and one below';
    return doc.toString();
  },
];

describe('bundle content hash', () => {
  it('is sha256: followed by 64 hex digits', () => {
    expect(bundleHash('x', { version: '1.0.0' })).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('ignores key order, YAML style, quoting and comments', () => {
    fc.assert(
      fc.property(specArb, fc.integer({ min: 0, max: styles.length - 1 }), fc.integer({ min: 0, max: styles.length - 1 }), fc.integer(), (spec, a, b, seed) => {
        let s = seed;
        const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
        const one = parseOne(styles[a]!(spec));
        const two = parseOne(styles[b]!(shuffleKeys(spec, rnd)));
        expect(bundleHash('b', two)).toBe(bundleHash('b', one));
        expect(bundleHash('b', one)).toBe(bundleHash('b', spec));
      }),
      { numRuns: 300 },
    );
  });

  it('ignores anchors and aliases (and merge keys) that expand to the same content', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), leaf, { minKeys: 1, maxKeys: 5 }), (shared) => {
        const spec = { first: shared, second: shared };
        const withAnchors = new Document(spec, { aliasDuplicateObjects: true }).toString();
        expect(withAnchors).toContain('&');
        const expanded = stringify(JSON.parse(JSON.stringify(spec)));
        expect(bundleHash('b', parseOne(withAnchors))).toBe(bundleHash('b', parseOne(expanded)));
      }),
      { numRuns: 100 },
    );
    const merged = parseOne('base: &b {minLength: 8}\nstrict:\n  <<: *b\n  maxAgeDays: 30\n');
    expect(bundleHash('b', merged)).toBe(bundleHash('b', { base: { minLength: 8 }, strict: { minLength: 8, maxAgeDays: 30 } }));
  });

  it('changes when any value changes', () => {
    fc.assert(
      fc.property(specArb.filter((s) => leafPaths(s).length > 0), fc.nat(), (spec, pick) => {
        const paths = leafPaths(spec);
        const path = paths[pick % paths.length]!;
        const changed = structuredClone(spec);
        mutateAt(changed, path);
        expect(bundleHash('b', changed)).not.toBe(bundleHash('b', spec));
      }),
      { numRuns: 300 },
    );
  });

  it('changes with the name, and with an added or removed key', () => {
    const spec = { version: '1.0.0', settings: { passcode: { minLength: 8 } } };
    const h = bundleHash('a', spec);
    expect(bundleHash('b', spec)).not.toBe(h);
    expect(bundleHash('a', { ...spec, description: 'x' })).not.toBe(h);
    expect(bundleHash('a', { version: '1.0.0' })).not.toBe(h);
  });

  it('uses RFC 8785 canonical JSON (sorted keys, ES number form)', () => {
    expect(canonicalJson({ b: 1, a: [1e21, 0.1, 'é'] })).toBe('{"a":[1e+21,0.1,"é"],"b":1}');
  });
});

type P = Array<string | number>;
function leafPaths(v: unknown, path: P = []): P[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => leafPaths(x, [...path, i]));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => leafPaths(x, [...path, k]));
  return path.length ? [path] : [];
}
function mutateAt(root: unknown, path: P): void {
  let node = root as Record<string | number, unknown>;
  for (const seg of path.slice(0, -1)) node = node[seg] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  const v = node[last];
  node[last] = typeof v === 'string' ? v + 'x' : typeof v === 'number' ? (v === 0 ? 1 : -v) : typeof v === 'boolean' ? !v : 0;
}
