// `muster validate [DIR]`: what CI runs on every pull request.
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { readPolicyDir } from '../../sources/dir.js';
import { readPolicyRevision, RevisionError } from '../../sources/git-tree.js';
import { countErrors, formatGithub, formatText, type Diagnostic } from '../../policy/diagnostics.js';
import { bundleVersionsOf, validatePolicyFiles, type ValidationResult } from '../../policy/validate.js';
import { createSchemaValidator } from '../../policy/schema-check.js';
import { CliError, EXIT, paintFor, println, type CliIO } from '../io.js';
import { stat } from 'node:fs/promises';

export interface LoadedTree {
  root: string;
  result: ValidationResult;
}

/** Reads and validates DIR (with --previous when given). Shared by validate, hash and plan. */
export async function loadTree(io: CliIO, dir: string, previous?: string): Promise<LoadedTree> {
  const root = resolve(io.cwd, dir);
  const st = await stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw new CliError(`${dir}: no such directory`, EXIT.usage);
  const schemaValidator = createSchemaValidator();
  const read = await readPolicyDir(root);
  let known;
  if (previous) {
    try {
      const prev = await readPolicyRevision(root, previous);
      known = bundleVersionsOf(prev.files, `${previous} (${prev.commit.slice(0, 7)})`, schemaValidator);
    } catch (e) {
      if (e instanceof RevisionError) throw new CliError(`--previous: ${e.message}`, EXIT.usage);
      throw e;
    }
  }
  const result = validatePolicyFiles(read.files, read.diagnostics, { schemaValidator, ...(known ? { previous: known } : {}) });
  return { root, result };
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function registerValidate(program: Command, io: CliIO, setExit: (code: number) => void): void {
  program
    .command('validate')
    .description('Check a policy folder: YAML, schemas, references, rollout steps, conflicts, secrets, immutability')
    .argument('[dir]', 'policy folder (any layout of .yaml/.yml files)', '.')
    .option('--previous <rev>', 'Git revision to compare bundle versions against (e.g. origin/main)')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json', 'github']).default('text'))
    .option('--strict', 'treat warnings as errors')
    .addHelpText(
      'after',
      `
Exit status: 0 valid, 1 policy errors found, 2 bad usage.

Examples:
  $ muster validate policies/
  $ muster validate . --previous origin/main          # also checks that changed bundles bumped spec.version
  $ muster validate . --format github                 # annotations on the pull request's files
  $ muster validate . --format json | jq '.diagnostics[] | .message'`,
    )
    .action(async (dir: string, opts: { previous?: string; format: 'text' | 'json' | 'github'; strict?: boolean }) => {
      const { result } = await loadTree(io, dir, opts.previous);
      const failing = countErrors(result.diagnostics) + (opts.strict ? result.diagnostics.length - countErrors(result.diagnostics) : 0);
      setExit(failing > 0 ? EXIT.failed : EXIT.ok);
      if (opts.format === 'json') {
        const bundles = [...result.policySet.bundles].map(([name, b]) => ({ name, version: b.resource.spec.version, hash: result.policySet.hashes.get(name) }));
        println(io.stdout, JSON.stringify({ valid: failing === 0, stats: result.stats, diagnostics: result.diagnostics, bundles }, null, 2));
        return;
      }
      if (opts.format === 'github') {
        const prefix = dir === '.' ? '' : dir.replace(/^\.\//, '');
        for (const d of result.diagnostics) println(io.stdout, formatGithub(d, prefix));
        println(io.stdout, summary(result, failing === 0));
        return;
      }
      const paint = paintFor(io.stdout, io.env);
      for (const d of result.diagnostics) println(io.stdout, formatText(d, paint));
      if (result.diagnostics.length) println(io.stdout);
      const line = summary(result, failing === 0);
      println(io.stdout, failing === 0 ? paint.bold(line) : paint.red(line));
    });
}

function summary(r: ValidationResult, ok: boolean): string {
  const s = r.stats;
  const what = `${plural(s.bundles, 'bundle')}, ${plural(s.groups, 'group')}, ${plural(s.rollouts, 'rollout')} in ${plural(s.files, 'file')}`;
  const errors = countErrors(r.diagnostics);
  const warnings = r.diagnostics.length - errors;
  const counted = [errors ? plural(errors, 'error') : '', warnings ? plural(warnings, 'warning') : ''].filter(Boolean).join(', ');
  return ok ? `valid: ${what}${counted ? ` (${counted})` : ''}` : `invalid: ${counted} — ${what}`;
}

export const filesWithErrors = (ds: Diagnostic[]) => new Set(ds.filter((d) => d.severity === 'error').map((d) => d.file)).size;
