// `muster plan [DIR]`: exactly what applying this tree would change, computed
// by the reconciler's own pure functions against a database, a running
// controller, or an empty fleet; optionally posted to the pull request.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { createDrivers } from '../../drivers.js';
import { formatText } from '../../policy/diagnostics.js';
import { planAgainstStore } from '../../reconcile/plan-input.js';
import { planMarkdown, planText } from '../../reconcile/plan-format.js';
import type { Plan } from '../../reconcile/plan.js';
import { createGithubReporter, parseRepo } from '../../report/github.js';
import { CliError, EXIT, paintFor, println, type CliIO } from '../io.js';
import { openTarget, targetOf } from './db.js';
import { callApi } from './rollout.js';
import { loadTree } from './validate.js';

interface PlanOpts {
  databaseUrl?: string;
  dataDir?: string;
  schema?: string;
  server?: string;
  token?: string;
  format: 'text' | 'json' | 'markdown';
  previous?: string;
  comment?: boolean;
  repo?: string;
  pr?: string;
  githubUrl?: string;
}

export function registerPlan(program: Command, io: CliIO, setExit: (code: number) => void): void {
  program
    .command('plan')
    .description('Show what applying a policy folder would change: per rollout, group and platform')
    .argument('[dir]', 'policy folder', '.')
    .option('--database-url <url>', "plan against this controller database (default: $DATABASE_URL; without any, an empty fleet)")
    .option('--data-dir <dir>', 'plan against this embedded (PGlite) database')
    .option('--schema <name>', 'PostgreSQL schema holding the tables')
    .option('--server <url>', 'plan against a running controller (needs a read token: --token or $MUSTER_TOKEN)')
    .option('--token <token>', 'admin API token for --server')
    .option('--previous <rev>', 'also check bundle versions against this Git revision, as validate does')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json', 'markdown']).default('text'))
    .option('--comment', 'create or update the plan comment on a pull request (needs $GITHUB_TOKEN)')
    .option('--repo <owner/name>', 'the GitHub repository for --comment (default: $GITHUB_REPOSITORY)')
    .option('--pr <number>', 'the pull request for --comment')
    .option('--github-url <url>', 'GitHub API URL (default: $GITHUB_API_URL or https://api.github.com)')
    .addHelpText(
      'after',
      `
The plan runs the reconciler's own code: new rollout revisions and deletions
first, then per rollout how many devices gain, change or lose a bundle, by
group and by platform with what each platform receives.

Exit status: 0 planned, 1 the policy is invalid or the plan could not be made, 2 bad usage.

Examples:
  $ muster plan policies/                                   # against an empty fleet
  $ muster plan . --database-url postgres://muster@db/muster --format markdown
  $ muster plan . --server https://muster.example.com --token $MUSTER_TOKEN
  $ muster plan . --format markdown --comment --repo acme/device-policy --pr 42`,
    )
    .action(async (dir: string, o: PlanOpts) => {
      const sources = [o.server ? 1 : 0, o.databaseUrl || o.dataDir ? 1 : 0].reduce((a, b) => a + b);
      if (sources > 1) throw new CliError('use either --server or a database (--database-url / --data-dir), not both', EXIT.usage);
      const { root, result } = await loadTree(io, dir, o.previous);
      if (!result.ok) {
        const paint = paintFor(io.stderr, io.env);
        for (const d of result.diagnostics.filter((x) => x.severity === 'error')) println(io.stderr, formatText(d, paint));
        println(io.stderr, 'the policy is invalid: nothing to plan (run muster validate for details)');
        setExit(EXIT.failed);
        return;
      }
      let plan: Plan;
      if (o.server) {
        const files = [...new Set([...result.policySet.bundles.values(), ...result.policySet.groups.values(), ...result.policySet.rollouts.values()].map((l) => l.doc.file))];
        plan = (await callApi(io, o, 'POST', '/plan', { files: await Promise.all(files.map(async (path) => ({ path, text: await readFile(join(root, path), 'utf8') }))) })) as Plan;
      } else if (o.databaseUrl || o.dataDir || io.env.DATABASE_URL) {
        const t = targetOf(io, { ...o, output: 'text' });
        const store = await openTarget(t, false);
        try {
          plan = await planAgainstStore(store, result.policySet, createDrivers(), t.label);
        } finally {
          await store.close();
        }
      } else {
        plan = await planAgainstStore(undefined, result.policySet, createDrivers(), 'an empty fleet');
      }
      const markdown = planMarkdown(plan);
      if (o.format === 'json') println(io.stdout, JSON.stringify(plan, null, 2));
      else if (o.format === 'markdown') println(io.stdout, markdown);
      else println(io.stdout, planText(plan));
      if (o.comment) {
        const token = io.env.GITHUB_TOKEN;
        if (!token) throw new CliError('--comment needs $GITHUB_TOKEN', EXIT.usage);
        const repo = o.repo ?? io.env.GITHUB_REPOSITORY;
        if (!repo || !o.pr || !/^\d+$/.test(o.pr)) throw new CliError('--comment needs --repo OWNER/NAME (or $GITHUB_REPOSITORY) and --pr NUMBER', EXIT.usage);
        const { owner, repo: name } = parseRepo(repo);
        const baseUrl = o.githubUrl ?? io.env.GITHUB_API_URL;
        const reporter = createGithubReporter({ token, owner, repo: name, ...(baseUrl ? { baseUrl } : {}), log: { info: () => {}, warn: (m: string) => println(io.stderr, m) } });
        const r = await reporter.upsertPlanComment(Number(o.pr), markdown);
        println(io.stderr, `${r.created ? 'posted' : 'updated'} the plan comment on ${repo}#${o.pr}`);
      }
    });
}
