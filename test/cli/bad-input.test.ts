// Hostile or broken files get a clear diagnostic each, within a bounded heap,
// and never a stack trace. The real binary runs under a 200 MB V8 heap limit,
// so a parser that blew up on any of these would crash the run instead.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { validatePolicyFiles } from '../../controller/policy/validate.js';
import { readPolicyDir } from '../../controller/sources/dir.js';

const root = join(import.meta.dirname, '../..');
const bin = join(root, 'dist/controller/cli/main.js');

function aliasBomb(): string {
  let s = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
  let prev = 'a';
  for (const n of 'bcdefghi') {
    s += `${n}: &${n} [${Array(9).fill('*' + prev).join(',')}]\n`;
    prev = n;
  }
  return s;
}

const cases: Record<string, string | Buffer> = {
  'binary.yaml': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52]),
  'latin1.yaml': Buffer.from('name: caf\xe9\n', 'latin1'),
  'bomb.yaml': aliasBomb(),
  'deep-flow.yaml': '['.repeat(10_000) + ']'.repeat(10_000) + '\n',
  // Compact block sequences: 10,000 levels on one line (indenting a mapping that deep would be a 48 MiB file).
  'deep-block.yaml': '- '.repeat(10_000) + 'x\n',
  'dupkeys.yaml': 'apiVersion: muster.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: g\nmetadata:\n  name: h\nspec: {}\n',
  'nokind.yaml': 'apiVersion: muster.dev/v1alpha1\nmetadata:\n  name: x\nspec: {}\n',
  'infinity.yaml': 'apiVersion: muster.dev/v1alpha1\nkind: PolicyBundle\nmetadata:\n  name: inf\nspec:\n  version: 1.0.0\n  android:\n    policy:\n      maximumTimeToLock: .inf\n',
};

const expected: Record<string, RegExp> = {
  'binary.yaml': /^binary\.yaml: error: file is binary \(contains NUL bytes\), not YAML text \[not-text\]$/m,
  'latin1.yaml': /^latin1\.yaml: error: file is not valid UTF-8 text \[not-text\]$/m,
  'bomb.yaml': /^bomb\.yaml:1:1: error: too many alias expansions \(over 100\).*\[yaml\]$/m,
  'deep-flow.yaml': /^deep-flow\.yaml:1:\d+: error: (nesting deeper than 64 levels \[too-deep\]|document too deeply nested .*\[yaml\])$/m,
  'deep-block.yaml': /^deep-block\.yaml:\d+:\d+: error: (nesting deeper than 64 levels \[too-deep\]|document too deeply nested .*\[yaml\])$/m,
  'dupkeys.yaml': /^dupkeys\.yaml:5:1: error: duplicate key: each key may appear only once in a mapping \[yaml\]$/m,
  'nokind.yaml': /^nokind\.yaml:1:1: error: document has no kind: set kind to one of PolicyBundle, DeviceGroup, Rollout \[no-kind\]$/m,
  'infinity.yaml': /^infinity\.yaml:9:26: error: \.inf is not a finite number; policy values must be expressible in JSON \[yaml\]$/m,
};

describe('bad input', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'muster-bad-'));
    for (const [name, content] of Object.entries(cases)) writeFileSync(join(dir, name), content);
    // 50 MB of valid-looking YAML: refused from its size, never read into memory.
    writeFileSync(join(dir, 'huge.yaml'), Buffer.alloc(50 * 1024 * 1024, 'a: b\n'));
  });

  it('refuses a 50 MB file from its size alone', async () => {
    const r = await readPolicyDir(dir);
    const d = r.diagnostics.find((x) => x.file === 'huge.yaml');
    expect(d).toMatchObject({ code: 'file-too-large', message: 'file is 50 MiB, over the 4 MiB limit for a policy file' });
    expect(r.files.map((f) => f.path)).not.toContain('huge.yaml');
  });

  // Validated once for all the cases below: the deep files are costly to parse.
  let validated: ReturnType<typeof validatePolicyFiles> | undefined;
  it.each(Object.keys(cases))('%s gets one clear error and loses the rest of nothing', async (name) => {
    if (!validated) {
      const r = await readPolicyDir(dir);
      validated = validatePolicyFiles(r.files, r.diagnostics);
    }
    const result = validated;
    const mine = result.diagnostics.filter((d) => d.file === name);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.severity).toBe('error');
  });

  it('the real binary reports every file under a 200 MB heap, exit 1, no stack trace', () => {
    if (!existsSync(bin)) execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' });
    const r = spawnSync(process.execPath, ['--max-old-space-size=200', '--stack-size=984', bin, 'validate', dir], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('');
    for (const [name, re] of Object.entries(expected)) expect(r.stdout, name).toMatch(re);
    expect(r.stdout).toMatch(/^huge\.yaml: error: file is 50 MiB/m);
    expect(r.stdout).not.toMatch(/^\s+at /m);
    expect(r.stdout).toMatch(/^invalid: 9 errors/m);
  });
});
