// `muster serve` end to end: the real binary following a real bare Git
// repository the test pushes to, a simulated fleet, the admin API and CLI, a
// signed webhook, and commit statuses sent to a local GitHub API.
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundle, group, rollout } from '../reconcile/helpers.js';
import { BIN, PolicyRepo, api, childEnv, createToken, serve, until, type Served } from './support.js';

interface RolloutJson {
  name: string;
  revision: number;
  phase: string;
  weight: number;
  currentStep: number;
  aborted: boolean;
  deleted: boolean;
  counts: Record<string, number>;
  message: string;
}
interface StatusJson {
  applied?: { commit: string };
  refused?: { commit: string; messages: string[] };
  rollouts: RolloutJson[];
}

const SECRET = 'e2e-webhook-secret';
const DEVICES = 200;
const all = group('all', '{}');
const staged = '    - setWeight: 1\n    - pause: { duration: 1s }\n    - setWeight: 10\n    - pause: { duration: 1s }\n    - setWeight: 100';

describe('muster serve, end to end', { timeout: 120_000 }, () => {
  const repo = new PolicyRepo();
  const data = mkdtempSync(join(tmpdir(), 'muster-e2e-data-'));
  const statuses: Array<{ sha: string; context: string; state: string; description: string }> = [];
  let github: FastifyInstance;
  let server: Served;
  let read: string;
  let operate: string;

  const status = async () => (await api<StatusJson>(server.url, read, 'GET', '/status')).data;
  const one = async (name: string) => (await status()).rollouts.find((r) => r.name === name);
  const push = (files: Record<string, string>, message: string) => repo.commit(files, message);
  /** Pushes and tells the server through a signed webhook (the poll is an hour away). */
  const pushAndNotify = async (files: Record<string, string>, message: string) => {
    const sha = push(files, message);
    const body = JSON.stringify({ ref: 'refs/heads/main', after: sha });
    const res = await fetch(`${server.url}/hooks/git`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': 'sha256=' + createHmac('sha256', SECRET).update(body).digest('hex') },
      body,
    });
    expect(res.status).toBe(202);
    return sha;
  };

  beforeAll(async () => {
    github = Fastify();
    github.post<{ Params: { owner: string; repo: string; sha: string }; Body: { context: string; state: string; description: string } }>('/repos/:owner/:repo/statuses/:sha', async (req) => {
      expect(req.headers.authorization).toBe('token gh-test-token');
      statuses.push({ sha: req.params.sha, context: req.body.context, state: req.body.state, description: req.body.description });
      return { id: statuses.length };
    });
    const githubUrl = await github.listen({ port: 0, host: '127.0.0.1' });
    push({ 'bundles/base.yaml': bundle('base', '1.0.0'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'base', ['all'], staged), '.github/workflows/ci.yaml': 'on: push\njobs: {}\n' }, 'first policy');
    read = createToken(join(data, 'db'), 'read');
    operate = createToken(join(data, 'db'), 'operate');
    server = await serve(
      ['--source', `file://${repo.bare}`, '--data-dir', join(data, 'db'), '--git-cache', join(data, 'git'), '--simulate', String(DEVICES), '--tick', '250ms', '--git-interval', '1h', '--github-repo', 'acme/policy', '--github-url', githubUrl],
      childEnv({ MUSTER_DATA_DIR: join(data, 'db'), MUSTER_WEBHOOK_SECRET: SECRET, GITHUB_TOKEN: 'gh-test-token' }),
    );
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    await github?.close();
    repo.cleanup();
    rmSync(data, { recursive: true, force: true });
  });

  it('rolls out 1 % → 10 % → 100 % across the fleet, reporting to GitHub', async () => {
    const seen = new Set<number>();
    const done = await until(async () => {
      const r = await one('base');
      if (r) seen.add(r.weight);
      return r?.phase === 'Healthy' && r.counts['canary.Synced'] === DEVICES ? r : undefined;
    }, 60_000, 'base to reach Healthy on every device');
    expect(done.weight).toBe(100);
    expect([...seen].filter((w) => w > 0 && w < 100).length).toBeGreaterThan(0); // it went through the stages
    for (const step of ['step 1/5 setWeight 1 done', 'step 3/5 setWeight 10 done', 'step 5/5 setWeight 100 done']) {
      expect(server.logs.filter((l) => String(l.msg).includes(step))).toHaveLength(1);
    }
    const applied = (await status()).applied!.commit;
    await until(async () => statuses.some((s) => s.sha === applied && s.context === 'muster/rollout' && s.state === 'success'), 10_000, 'a success muster/rollout status');
    expect(statuses).toContainEqual(expect.objectContaining({ sha: applied, context: 'muster/validate', state: 'success' }));
  });

  it('refuses an invalid commit, says why, and keeps the last good one in force', async () => {
    const good = (await status()).applied!.commit;
    const bad = await pushAndNotify({ 'bundles/base.yaml': bundle('base', '1.0.0'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'missing-bundle', ['all'], staged) }, 'broken reference');
    const s = await until(async () => {
      const x = await status();
      return x.refused?.commit === bad ? x : undefined;
    }, 20_000, 'the refusal');
    expect(s.applied!.commit).toBe(good);
    expect(s.refused!.messages.join('\n')).toMatch(/rollouts\/base\.yaml:\d+:\d+: .*missing-bundle/);
    await until(async () => statuses.some((x) => x.sha === bad && x.context === 'muster/validate' && x.state === 'failure'), 10_000, 'a failure status');
    expect((await one('base'))!.phase).toBe('Healthy');
  });

  it('refuses a changed bundle whose version was not bumped (immutability against what was applied)', async () => {
    const sneaky = await pushAndNotify({ 'bundles/base.yaml': bundle('base', '1.0.0', '    restrictions: { allowCamera: false }'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'base', ['all'], staged) }, 'same version, new content');
    const s = await until(async () => {
      const x = await status();
      return x.refused?.commit === sneaky ? x : undefined;
    }, 20_000, 'the refusal');
    expect(s.refused!.messages.join('\n')).toMatch(/1\.0\.1|bump/);
  });

  it('waits at pause {} until promoted with the CLI', async () => {
    await pushAndNotify({ 'bundles/base.yaml': bundle('base', '2.0.0'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'base', ['all'], '    - setWeight: 20\n    - pause: {}\n    - setWeight: 100') }, 'v2 with a human gate');
    const paused = await until(async () => {
      const r = await one('base');
      return r?.revision === 2 && r.phase === 'Paused' ? r : undefined;
    }, 30_000, 'the pause');
    expect(paused.weight).toBe(20);
    const cli = (args: string[], token: string) => execFileSync(process.execPath, [BIN, 'rollout', ...args, '--server', server.url], { env: childEnv({ MUSTER_TOKEN: token }), encoding: 'utf8' });
    expect(cli(['status'], read)).toMatch(/base\s+2\s+Paused\s+20%/);
    expect(() => cli(['promote', 'base'], read)).toThrow(/403/);
    cli(['promote', 'base'], operate);
    await until(async () => {
      const r = await one('base');
      return r?.phase === 'Healthy' && r.counts['canary.Synced'] === DEVICES;
    }, 30_000, 'Healthy after promotion');
  });

  it('aborts on a failed analysis and puts every device back on the stable bundle', async () => {
    // The fleet rejects base 3.0.0 (see --simulate-fail below): restart with it.
    await server.stop();
    server = await serve(
      ['--source', `file://${repo.bare}`, '--data-dir', join(data, 'db'), '--git-cache', join(data, 'git'), '--simulate', String(DEVICES), '--simulate-fail', 'base@3.0.0', '--tick', '250ms', '--git-interval', '1h'],
      childEnv({ MUSTER_DATA_DIR: join(data, 'db'), MUSTER_WEBHOOK_SECRET: SECRET }),
    );
    await pushAndNotify({ 'bundles/base.yaml': bundle('base', '3.0.0'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'base', ['all'], '    - setWeight: 20\n    - analysis: { maxFailureRate: 0.1, minReports: 10 }\n    - setWeight: 100', 'autoRollback: true') }, 'v3 is bad');
    const r = await until(async () => {
      const x = await one('base');
      return x?.revision === 3 && x.aborted && x.counts['stable.Synced'] === DEVICES ? x : undefined;
    }, 60_000, 'the abort and the return to stable').catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await one('base'))} ${JSON.stringify(server.logs.slice(-15).map((l) => l.msg))}`);
    });
    expect(r.phase).toBe('Degraded');
    expect(r.message).toMatch(/analysis failed/);
  });

  it('moves devices when a group changes, and prunes a rollout removed from the repository', async () => {
    const finance = group('fin', '{ matchLabels: { department: finance } }');
    const sales = group('fin', '{ matchLabels: { department: sales } }');
    const finBundle = 'apiVersion: muster.dev/v1alpha1\nkind: PolicyBundle\nmetadata: { name: fin }\nspec:\n  version: "1.0.0"\n  settings:\n    restrictions: { allowBluetooth: false }\n';
    const base = { 'bundles/base.yaml': bundle('base', '2.0.0'), 'groups/all.yaml': all, 'rollouts/base.yaml': rollout('base', 'base', ['all'], '    - setWeight: 100') };
    await pushAndNotify({ ...base, 'bundles/fin.yaml': finBundle, 'groups/fin.yaml': finance, 'rollouts/fin.yaml': rollout('fin', 'fin', ['fin'], '    - setWeight: 100') }, 'finance bundle');
    const first = await until(async () => {
      const x = await one('fin');
      return x?.phase === 'Healthy' && x.counts['canary.Synced'] === x.counts.targeted && (x.counts.targeted ?? 0) > 0 ? x : undefined;
    }, 30_000, 'fin Healthy');
    await pushAndNotify({ ...base, 'bundles/fin.yaml': finBundle, 'groups/fin.yaml': sales, 'rollouts/fin.yaml': rollout('fin', 'fin', ['fin'], '    - setWeight: 100') }, 'finance bundle to sales instead');
    const moved = await until(async () => {
      const x = await one('fin');
      return x && x.counts.targeted !== first.counts.targeted && x.counts['canary.Synced'] === x.counts.targeted && x.counts.canary === x.counts.targeted ? x : undefined;
    }, 30_000, 'the group change to land');
    expect(moved.counts.targeted).toBeGreaterThan(0);
    await pushAndNotify(base, 'finance bundle removed');
    await until(async () => {
      const x = await one('fin');
      return x?.deleted && (x.counts.canary ?? 0) === 0 ? x : undefined;
    }, 30_000, 'the prune');
  });
});
