import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { muster } from '../support/cli.js';

const example = join(import.meta.dirname, '../../policies-example');

const bundle = (version: string, minLength: number) => `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: base
spec:
  version: ${version}
  settings:
    passcode:
      minLength: ${minLength}
`;

describe('muster validate', () => {
  it('accepts the example repository', async () => {
    const r = await muster(['validate', example]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^valid: \d+ bundles, \d+ groups, \d+ rollouts in \d+ files/m);
    expect(r.code).toBe(0);
  });

  it('exits 1 on policy errors and prints file:line:col', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(dir, 'b.yaml'), bundle('1.0', 8));
    const r = await muster(['validate', dir]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^b\.yaml:6:12: error: spec\.version: must be a string/m);
    expect(r.stdout).toMatch(/^invalid: 1 error/m);
  });

  it('exits 2 on bad usage', async () => {
    expect((await muster(['validate', '/nonexistent/dir'])).code).toBe(2);
    expect((await muster(['validate', example, '--format', 'yaml'])).code).toBe(2);
    expect((await muster(['validate', '--bogus'])).code).toBe(2);
    expect((await muster(['frobnicate'])).code).toBe(2);
    const r = await muster(['validate', '/nonexistent/dir']);
    expect(r.stderr).toBe('muster: /nonexistent/dir: no such directory\n');
  });

  it('prints JSON with --format json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(dir, 'b.yaml'), bundle('1.0.0', 8));
    const r = await muster(['validate', dir, '--format', 'json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.valid).toBe(true);
    expect(out.bundles).toEqual([{ name: 'base', version: '1.0.0', hash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) }]);
    expect(out.stats).toMatchObject({ files: 1, bundles: 1, groups: 0, rollouts: 0 });
  });

  it('prints GitHub annotations with --format github', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    mkdirSync(join(dir, 'bundles'));
    writeFileSync(join(dir, 'bundles', 'b.yaml'), bundle('1.0', 8));
    const r = await muster(['validate', 'bundles/..', '--format', 'github'], { cwd: dir });
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^::error file=bundles\/\.\.\/bundles\/b\.yaml,line=6,col=12::spec\.version: /);
    const plain = await muster(['validate', '.', '--format', 'github'], { cwd: dir });
    expect(plain.stdout.split('\n')[0]).toMatch(/^::error file=bundles\/b\.yaml,line=6,col=12::.* \[schema\]$/);
  });

  it('colours only on a terminal, and not with NO_COLOR', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(dir, 'b.yaml'), bundle('1.0', 8));
    expect((await muster(['validate', dir])).stdout).not.toContain('\u001b[');
    expect((await muster(['validate', dir], { tty: true })).stdout).toContain('\u001b[31m');
    expect((await muster(['validate', dir], { tty: true, env: { NO_COLOR: '1' } })).stdout).not.toContain('\u001b[');
  });

  it('--strict turns warnings into a failure', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(dir, 'g.yaml'), 'apiVersion: muster.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: nobody\nspec:\n  description: no selector, no include\n');
    const loose = await muster(['validate', dir]);
    expect(loose.code).toBe(0);
    expect(loose.stdout).toMatch(/warning: DeviceGroup "nobody" has neither a selector nor include/);
    expect((await muster(['validate', dir, '--strict'])).code).toBe(1);
  });

  describe('--previous REV (immutability)', () => {
    const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, stdio: 'pipe' }).toString();
    const repo = () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-git-'));
      git(dir, 'init', '-q', '-b', 'main');
      git(dir, 'config', 'user.email', 't@example.com');
      git(dir, 'config', 'user.name', 'T');
      mkdirSync(join(dir, 'policies'));
      writeFileSync(join(dir, 'policies', 'b.yaml'), bundle('1.2.0', 8));
      git(dir, 'add', '.');
      git(dir, 'commit', '-q', '-m', 'first');
      return dir;
    };

    it('refuses a changed bundle whose version was not bumped, naming the next version', async () => {
      const dir = repo();
      writeFileSync(join(dir, 'policies', 'b.yaml'), bundle('1.2.0', 10));
      const r = await muster(['validate', 'policies', '--previous', 'HEAD'], { cwd: dir });
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^b\.yaml:6:12: error: PolicyBundle "base" changed but spec\.version is still 1\.2\.0 .* at HEAD \([0-9a-f]{7}\)\); bump spec\.version, e\.g\. to 1\.2\.1/m);
    });

    it('accepts the change once the version is bumped, and an unchanged bundle', async () => {
      const dir = repo();
      expect((await muster(['validate', 'policies', '--previous', 'HEAD'], { cwd: dir })).code).toBe(0);
      writeFileSync(join(dir, 'policies', 'b.yaml'), '# a comment changes nothing\n' + bundle('1.2.0', 8));
      expect((await muster(['validate', 'policies', '--previous', 'HEAD'], { cwd: dir })).code).toBe(0);
      writeFileSync(join(dir, 'policies', 'b.yaml'), bundle('1.3.0', 10));
      expect((await muster(['validate', 'policies', '--previous', 'HEAD'], { cwd: dir })).code).toBe(0);
    });

    it('compares against the committed tree, not the work tree', async () => {
      const dir = repo();
      writeFileSync(join(dir, 'policies', 'b.yaml'), bundle('1.2.0', 12));
      git(dir, 'commit', '-qam', 'sneaky change without a bump');
      const r = await muster(['validate', 'policies', '--previous', 'HEAD~1'], { cwd: dir });
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('at HEAD~1');
    });

    it('exits 2 for an unknown revision or a folder outside Git', async () => {
      const dir = repo();
      const r = await muster(['validate', 'policies', '--previous', 'no-such-branch'], { cwd: dir });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^muster: --previous: no-such-branch is not a commit/);
      const loose = mkdtempSync(join(tmpdir(), 'muster-'));
      expect((await muster(['validate', loose, '--previous', 'HEAD'])).code).toBe(2);
    });
  });
});

describe('muster hash', () => {
  it('lists bundles with version and hash, as a table or JSON', async () => {
    const table = await muster(['hash', example]);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME\s+VERSION\s+HASH$/);
    const json = JSON.parse((await muster(['hash', example, '--output', 'json'])).stdout) as Array<{ name: string; version: string; hash: string; file: string }>;
    expect(json.length).toBeGreaterThanOrEqual(4);
    for (const b of json) expect(b.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(table.stdout).toContain(json[0]!.hash);
  });

  it('gives the same hash whatever the YAML style', async () => {
    const a = mkdtempSync(join(tmpdir(), 'muster-'));
    const b = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(a, 'x.yaml'), bundle('1.0.0', 8));
    writeFileSync(join(b, 'x.yaml'), '# flow style, other order\n{kind: PolicyBundle, spec: {settings: {passcode: {minLength: 8}}, version: "1.0.0"}, metadata: {name: base}, apiVersion: muster.dev/v1alpha1}\n');
    const ha = JSON.parse((await muster(['hash', a, '--output', 'json'])).stdout);
    const hb = JSON.parse((await muster(['hash', b, '--output', 'json'])).stdout);
    expect(hb[0].hash).toBe(ha[0].hash);
  });

  it('exits 1 and explains when the folder has errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    writeFileSync(join(dir, 'b.yaml'), bundle('1.0', 8));
    const r = await muster(['hash', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('b.yaml:6:12');
  });
});

describe('muster schema', () => {
  it('prints all schemas, or one', async () => {
    const all = JSON.parse((await muster(['schema'])).stdout);
    expect(Object.keys(all)).toEqual(['PolicyBundle', 'DeviceGroup', 'Rollout']);
    const one = JSON.parse((await muster(['schema', 'rollout'])).stdout);
    expect(one.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(one.properties.kind.const).toBe('Rollout');
  });

  it('writes files with --out, and refuses an unknown kind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-'));
    const r = await muster(['schema', '--out', dir]);
    expect(r.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['devicegroup.schema.json', 'policybundle.schema.json', 'rollout.schema.json']);
    expect(JSON.parse(readFileSync(join(dir, 'rollout.schema.json'), 'utf8')).title).toBeTruthy();
    const bad = await muster(['schema', 'Widget']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown kind "Widget"');
  });
});

describe('--help', () => {
  it.each([[[]], [['validate']], [['hash']], [['schema']]])('%j has usage and examples', async (cmd) => {
    const r = await muster([...cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: muster/);
    expect(r.stdout).toContain('Examples:');
  });

  it('prints the version', async () => {
    const r = await muster(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
