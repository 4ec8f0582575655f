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

export async function readPolicyDir(root: string): Promise<ReadResult> {
  const files: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  const rel = (p: string) => relative(root, p).split(sep).join('/');

  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name.startsWith('.') || e.name === 'node_modules') continue;
        await walk(full);
      } else if (e.isFile() && isPolicyFileName(e.name)) {
        const { size } = await lstat(full);
        if (size > LIMITS.maxFileBytes) {
          diagnostics.push({ file: rel(full), line: 0, column: 0, severity: 'error', code: 'file-too-large', message: `file is ${formatBytes(size)}, over the ${formatBytes(LIMITS.maxFileBytes)} limit for a policy file` });
          continue;
        }
        const checked = checkText(rel(full), await readFile(full));
        if (typeof checked === 'string') files.push({ path: rel(full), text: checked });
        else diagnostics.push(checked);
      }
    }
  };
  await walk(root);
  return { files, diagnostics };
}
