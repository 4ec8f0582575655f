// `muster rollout status|promote|pause|resume|abort`: through the admin API of
// a running controller, so a person's action takes the same path as any other
// and lands in the audit log under the token's name.
import { Command, Option } from 'commander';
import { CliError, EXIT, paintFor, println, table, type CliIO } from '../io.js';

interface ServerOpts {
  server?: string;
  token?: string;
  output: 'text' | 'json';
}

export function withServerOptions(cmd: Command): Command {
  return cmd
    .option('--server <url>', 'the controller (default: $MUSTER_SERVER or http://127.0.0.1:8080)')
    .option('--token <token>', 'admin API bearer token (default: $MUSTER_TOKEN; create one with muster token create)')
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
}

/** Calls the admin API; every failure becomes one clear line. */
export async function callApi(io: CliIO, o: { server?: string; token?: string }, method: string, path: string, body?: unknown): Promise<unknown> {
  const base = (o.server ?? io.env.MUSTER_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  const token = o.token ?? io.env.MUSTER_TOKEN;
  if (!token) throw new CliError('no token: pass --token or set MUSTER_TOKEN (muster token create --scope operate)', EXIT.usage);
  let res: Response;
  try {
    res = await fetch(`${base}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (e) {
    throw new CliError(`cannot reach ${base}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`);
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  if (!res.ok) throw new CliError(`${method} ${path}: ${res.status} ${(data as { error?: string })?.error ?? text.slice(0, 200)}`);
  return data;
}

interface RolloutJson {
  name: string;
  revision: number;
  phase: string;
  currentStep: number;
  weight: number;
  message: string;
  counts: Record<string, number>;
  steps?: unknown[];
  conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
}

function printTable(io: CliIO, list: RolloutJson[]): void {
  println(
    io.stdout,
    table(
      [['NAME', 'REV', 'PHASE', 'WEIGHT', 'STEP', 'CANARY', 'FAILED', 'MESSAGE'], ...list.map((r) => [r.name, String(r.revision), r.phase, `${r.weight}%`, String(r.currentStep + 1), String(r.counts.canary ?? 0), String(r.counts['canary.Failed'] ?? 0), r.message])],
      paintFor(io.stdout, io.env),
    ),
  );
}

function printRollout(io: CliIO, r: RolloutJson): void {
  const paint = paintFor(io.stdout, io.env);
  const colour = r.phase === 'Healthy' ? paint.green : r.phase === 'Degraded' ? paint.red : paint.yellow;
  println(io.stdout, `${paint.bold(r.name)}  revision ${r.revision}  ${colour(r.phase)}  ${r.weight} %  step ${r.currentStep + 1}${r.steps ? `/${r.steps.length}` : ''}`);
  println(io.stdout, `  ${r.message}`);
  const c = r.counts;
  println(io.stdout, `  devices: ${c.targeted ?? 0} targeted, canary ${c.canary ?? 0} (${c['canary.Synced'] ?? 0} synced, ${c['canary.Failed'] ?? 0} failed), stable ${c.stable ?? 0}`);
  for (const k of r.conditions ?? []) println(io.stdout, `  ${k.type}=${k.status} ${k.reason}${k.message ? `: ${k.message}` : ''}`);
}

export function registerRollout(program: Command, io: CliIO): void {
  const rollout = program.command('rollout').description('Watch and steer rollouts on a running controller');
  withServerOptions(rollout.command('status'))
    .description('Show every rollout, or one in detail')
    .argument('[name]', 'a rollout')
    .addHelpText('after', '\nExamples:\n  $ muster rollout status\n  $ muster rollout status corp-baseline --output json')
    .action(async (name: string | undefined, o: ServerOpts) => {
      const data = await callApi(io, o, 'GET', name ? `/rollouts/${encodeURIComponent(name)}` : '/rollouts');
      if (o.output === 'json') println(io.stdout, JSON.stringify(data, null, 2));
      else if (name) printRollout(io, data as RolloutJson);
      else if ((data as RolloutJson[]).length === 0) println(io.stderr, 'no rollouts in force');
      else printTable(io, data as RolloutJson[]);
    });
  const verbs: Array<[string, string, string]> = [
    ['promote', 'Finish the step in force (a pause or an analysis); --full skips every remaining step', 'muster rollout promote corp-baseline --full'],
    ['pause', 'Hold the rollout where it is until resumed', 'muster rollout pause corp-baseline'],
    ['resume', 'Continue a paused rollout (also re-runs an inconclusive analysis)', 'muster rollout resume corp-baseline'],
    ['abort', 'Send every device back to the stable bundle; the rollout stays Degraded until Git changes', 'muster rollout abort corp-baseline'],
  ];
  for (const [verb, description, example] of verbs) {
    const cmd = withServerOptions(rollout.command(verb)).description(description).argument('<name>', 'the rollout');
    if (verb === 'promote') cmd.option('--full', 'skip every remaining step: go to 100 % now');
    cmd.addHelpText('after', `\nNeeds a token with scope operate.\n\nExample:\n  $ ${example}`).action(async (name: string, o: ServerOpts & { full?: boolean }) => {
      const r = (await callApi(io, o, 'POST', `/rollouts/${encodeURIComponent(name)}/${verb}`, { full: !!o.full })) as RolloutJson;
      if (o.output === 'json') println(io.stdout, JSON.stringify(r, null, 2));
      else printRollout(io, r);
    });
  }
}
