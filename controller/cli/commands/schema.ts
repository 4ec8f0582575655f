// `muster schema`: the JSON Schemas, for editors and other tools.
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { loadSchemas, schemaFileName } from '../../policy/schema-check.js';
import { KINDS, type Kind } from '../../policy/types.js';
import { CliError, EXIT, println, type CliIO } from '../io.js';

export function registerSchema(program: Command, io: CliIO): void {
  program
    .command('schema')
    .description('Print the JSON Schemas of the resource kinds, or write them to a folder')
    .argument('[kind]', `one kind: ${KINDS.join(', ')} (case-insensitive)`)
    .option('--out <dir>', 'write <kind>.schema.json files into this folder instead of printing')
    .addHelpText(
      'after',
      `
Examples:
  $ muster schema rollout
  $ muster schema --out .schemas     # then in a YAML file:
      # yaml-language-server: $schema=.schemas/policybundle.schema.json`,
    )
    .action(async (kindArg: string | undefined, opts: { out?: string }) => {
      const schemas = loadSchemas();
      let kinds: Kind[] = [...KINDS];
      if (kindArg) {
        const k = KINDS.find((x) => x.toLowerCase() === kindArg.toLowerCase());
        if (!k) throw new CliError(`unknown kind "${kindArg}"; expected one of ${KINDS.join(', ')}`, EXIT.usage);
        kinds = [k];
      }
      if (opts.out) {
        const dir = resolve(io.cwd, opts.out);
        await mkdir(dir, { recursive: true });
        for (const k of kinds) {
          await writeFile(join(dir, schemaFileName(k)), JSON.stringify(schemas[k], null, 2) + '\n');
          println(io.stdout, `wrote ${join(opts.out, schemaFileName(k))}`);
        }
        return;
      }
      const out = kinds.length === 1 ? schemas[kinds[0]!] : Object.fromEntries(kinds.map((k) => [k, schemas[k]]));
      println(io.stdout, JSON.stringify(out, null, 2));
    });
}
