// muster plan's exits and formats, and --help on every command.
import { describe, expect, it } from 'vitest';
import { muster } from '../support/cli.js';

describe('muster plan', () => {
  it('plans the example against an empty fleet', async () => {
    const r = await muster(['plan', 'policies-example']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Plan against an empty fleet \(0 devices\)/);
    expect(r.stdout).toMatch(/Rollouts starting a new revision:\n {2}android-kiosk revision 1: nothing → android-kiosk/);
  });
  it('prints JSON and Markdown', async () => {
    const j = await muster(['plan', 'policies-example', '--format', 'json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ against: 'an empty fleet', devices: 0, restarting: expect.any(Array) });
    const m = await muster(['plan', 'policies-example', '--format', 'markdown']);
    expect(m.stdout).toMatch(/^<!-- muster-plan -->\n### Muster plan/);
  });
  it('exits 1 on an invalid tree and 2 on bad usage', async () => {
    const bad = await muster(['plan', 'test/fixtures/invalid']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/nothing to plan/);
    expect((await muster(['plan', 'policies-example', '--format', 'yaml'])).code).toBe(2);
    expect((await muster(['plan', 'policies-example', '--server', 'http://x', '--database-url', 'postgres://x/y'])).code).toBe(2);
    const c = await muster(['plan', 'policies-example', '--comment', '--pr', '1', '--repo', 'a/b']);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/GITHUB_TOKEN/);
  });
});

describe('--help', () => {
  const commands = [
    ['validate'],
    ['hash'],
    ['schema'],
    ['plan'],
    ['render'],
    ['serve'],
    ['db', 'migrate'],
    ['audit', 'verify'],
    ['token', 'create'],
    ['rollout', 'status'],
    ['rollout', 'promote'],
    ['rollout', 'pause'],
    ['rollout', 'resume'],
    ['rollout', 'abort'],
    ['devices', 'list'],
    ['devices', 'show'],
    ['enroll', 'apple'],
  ];
  it.each(commands)('%s %s documents itself with an example', async (...cmd) => {
    const r = await muster([...cmd.filter(Boolean), '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: muster /);
    expect(r.stdout).toMatch(/Examples?:\n\s+\$ muster /);
  });
  it('rollout commands need a token and say so', async () => {
    const r = await muster(['rollout', 'status'], { env: {} });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/MUSTER_TOKEN/);
  });
});
