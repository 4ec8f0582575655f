// The `muster` command line: one commander program, every command registered
// with the same IO, run in-process by tests and by main.ts alike.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { packageRoot } from '../package-root.js';
import { registerDbCommands } from './commands/db.js';
import { registerDevices } from './commands/devices.js';
import { registerEnroll } from './commands/enroll.js';
import { registerHash } from './commands/hash.js';
import { registerPlan } from './commands/plan.js';
import { registerRender } from './commands/render.js';
import { registerRollout } from './commands/rollout.js';
import { registerServe } from './commands/serve.js';
import { registerToken } from './commands/token.js';
import { registerSchema } from './commands/schema.js';
import { registerValidate } from './commands/validate.js';
import { CliError, EXIT, println, type CliIO } from './io.js';

const version = (): string => (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export function buildProgram(io: CliIO, setExit: (code: number) => void): Command {
  const program = new Command('muster')
    .description('Muster: device policy as code. Validate, plan and roll out MDM policy for Apple, Windows and Android fleets from Git.')
    .version(version(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .addHelpText(
      'after',
      `
Exit status: 0 success, 1 the checked thing is wrong (invalid policy, failed check), 2 bad usage.

Examples:
  $ muster validate policies/ --previous origin/main
  $ muster hash policies/ --output json
  $ muster schema --out .schemas
  $ muster plan policies/ --database-url $DATABASE_URL
  $ muster serve --source policies-example --simulate 500
  $ muster rollout status
  $ muster token create --name alice --scope operate
  $ muster db migrate
  $ muster audit verify`,
    );
  registerValidate(program, io, setExit);
  registerHash(program, io, setExit);
  registerPlan(program, io, setExit);
  registerRender(program, io, setExit);
  registerServe(program, io);
  registerRollout(program, io);
  registerToken(program, io);
  registerDevices(program, io);
  registerEnroll(program, io);
  registerSchema(program, io);
  registerDbCommands(program, io, setExit);
  // Every subcommand reports usage errors the same way.
  const all = (c: Command): Command[] => c.commands.flatMap((x) => [x, ...all(x)]);
  for (const c of all(program)) c.exitOverride().showHelpAfterError('(run with --help for usage)').configureOutput(program.configureOutput());
  return program;
}

/** Runs the CLI and returns the exit status; never throws for expected failures. */
export async function runCli(argv: readonly string[], io: CliIO): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; every other commander error is a usage error.
      return e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? EXIT.ok : EXIT.usage;
    }
    if (e instanceof CliError) {
      println(io.stderr, `muster: ${e.message}`);
      return e.exitCode;
    }
    println(io.stderr, `muster: ${(e as Error).message ?? String(e)}`);
    if (io.env.MUSTER_DEBUG) println(io.stderr, (e as Error).stack ?? '');
    return EXIT.failed;
  }
}
