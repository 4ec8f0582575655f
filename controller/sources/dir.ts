// Reads a policy folder: every .yaml/.yml file below it, any layout. Hidden
// folders (.git, .github …) and node_modules are not read. Size and encoding
// are checked before YAML sees a byte.
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { Diagnostic } from '../policy/diagnostics.js';
import { checkText, formatBytes, LIMITS } from '../policy/parse.js';
import type { SourceFile } from '../policy/validate.js';

export interface ReadResult {
  files: SourceFile[];
  diagnostics: Diagnostic[];
}

export const isPolicyFileName = (name: string): boolean => /\.ya?ml$/i.test(name);

function toSource(path: string, bytes: Uint8Array): SourceFile | Diagnostic {
  const checked = checkText(path, bytes);
  return typeof checked === 'string' ? { path, text: checked } : checked;
}

export async function readPolicyDir(root: string): Promise<ReadResult> {
  const files: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  const rel = (p: string) => relative(root, p).split(sep).join('/');

  const paths: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        if (!e.name.startsWith('.') && e.name !== 'node_modules') await walk(full);
      } else if (e.isFile() && isPolicyFileName(e.name)) paths.push(full);
    }
  };
  await walk(root);
  paths.sort();

  // Read many files at once (a large repository has thousands), keeping results in path order.
  const results: Array<SourceFile | Diagnostic> = new Array(paths.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < paths.length; i = next++) {
      const full = paths[i]!;
      const { size } = await lstat(full);
      results[i] =
        size > LIMITS.maxFileBytes
          ? { file: rel(full), line: 0, column: 0, severity: 'error', code: 'file-too-large', message: `file is ${formatBytes(size)}, over the ${formatBytes(LIMITS.maxFileBytes)} limit for a policy file` }
          : toSource(rel(full), await readFile(full));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  for (const r of results) {
    if ('text' in r) files.push(r);
    else diagnostics.push(r);
  }
  return { files, diagnostics };
}
