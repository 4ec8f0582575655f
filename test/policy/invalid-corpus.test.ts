// Every file in test/fixtures/invalid/ is a small policy tree that must fail.
// Its expected diagnostics are written in the file itself, one per line:
//   # expect: LINE:COL CODE MESSAGE-FRAGMENT
//   # warn: LINE:COL CODE MESSAGE-FRAGMENT
// and the errors and warnings found must be exactly those (no more, no fewer).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createSchemaValidator } from '../../controller/policy/schema-check.js';
import type { Diagnostic } from '../../controller/policy/diagnostics.js';
import { validatePolicyFiles } from '../../controller/policy/validate.js';

const dir = join(import.meta.dirname, '../fixtures/invalid');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
const schemaValidator = createSchemaValidator();

interface Expectation {
  line: number;
  column: number;
  code: string;
  fragment: string;
}

function expectations(text: string, tag = 'expect'): Expectation[] {
  return [...text.matchAll(new RegExp(`^# ${tag}: (\\d+):(\\d+) (\\S+) (.+)$`, 'gm'))].map((m) => ({ line: Number(m[1]), column: Number(m[2]), code: m[3]!, fragment: m[4]!.trim() }));
}

function matchExactly(got: Diagnostic[], want: Expectation[]): void {
  const describeAll = got.map((d) => `${d.line}:${d.column} ${d.code} ${d.message}`).join('\n');
  expect(got.length, `found:\n${describeAll}`).toBe(want.length);
  for (const w of want) {
    const match = got.find((d) => d.line === w.line && d.column === w.column && d.code === w.code && d.message.includes(w.fragment));
    expect(match, `expected ${w.line}:${w.column} ${w.code} "${w.fragment}"; found:\n${describeAll}`).toBeDefined();
  }
}

describe('invalid corpus', () => {
  it('has at least 30 documents, each with an expectation', () => {
    expect(files.length).toBeGreaterThanOrEqual(30);
    const invalid = files.filter((f) => expectations(readFileSync(join(dir, f), 'utf8')).length > 0);
    expect(invalid.length).toBeGreaterThanOrEqual(30);
    for (const f of files) expect([...expectations(readFileSync(join(dir, f), 'utf8')), ...expectations(readFileSync(join(dir, f), 'utf8'), 'warn')], f).not.toEqual([]);
  });

  it.each(files)('%s fails as expected', (file) => {
    const text = readFileSync(join(dir, file), 'utf8');
    const result = validatePolicyFiles([{ path: file, text }], [], { schemaValidator });
    const errors = expectations(text);
    expect(result.ok).toBe(errors.length === 0);
    matchExactly(result.diagnostics.filter((d) => d.severity === 'error'), errors);
    matchExactly(result.diagnostics.filter((d) => d.severity === 'warning'), expectations(text, 'warn'));
  });
});
