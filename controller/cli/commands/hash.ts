// `muster hash [DIR]`: every bundle's version and content hash.
import { Command, Option } from 'commander';
import { countErrors, formatText } from '../../policy/diagnostics.js';
import { EXIT, paintFor, println, table, type CliIO } from '../io.js';
import { loadTree } from './validate.js';

export function registerHash(program: Command, io: CliIO, setExit: (code: number) => void): void {
  program
    .command('hash')
    .description("List each PolicyBundle's version and content hash (sha256 of its canonical name + spec)")
    .argument('[dir]', 'policy folder', '.')
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText(
      'after',
      `
The hash is what devices and the controller use to tell bundle contents apart:
comments, key order and YAML style do not change it; any change of content does.

Examples:
  $ muster hash policies/
  $ muster hash . --output json`,
    )
    .action(async (dir: string, opts: { output: 'text' | 'json' }) => {
      const { result } = await loadTree(io, dir);
      const errors = countErrors(result.diagnostics);
      const rows = [...result.policySet.bundles].map(([name, b]) => ({ name, version: b.resource.spec.version, hash: result.policySet.hashes.get(name)!, file: b.doc.file }));
      rows.sort((a, b) => (a.name < b.name ? -1 : 1));
      if (errors > 0) {
        const paint = paintFor(io.stderr, io.env);
        for (const d of result.diagnostics.filter((x) => x.severity === 'error')) println(io.stderr, formatText(d, paint));
        println(io.stderr, `the policy folder has ${errors} error(s); hashes below cover only the bundles that are valid`);
        setExit(EXIT.failed);
      }
      if (opts.output === 'json') println(io.stdout, JSON.stringify(rows, null, 2));
      else if (rows.length) println(io.stdout, table([['NAME', 'VERSION', 'HASH'], ...rows.map((r) => [r.name, r.version, r.hash])], paintFor(io.stdout, io.env)));
      else println(io.stderr, 'no PolicyBundle found');
    });
}
