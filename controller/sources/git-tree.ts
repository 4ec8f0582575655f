// Reads the policy files of a folder as they were at a Git revision, without
// touching the work tree: `git ls-tree` (through simple-git) lists the blobs,
// one `git cat-file --batch` process streams their contents — one process for
// the whole tree instead of one `git show` per file, which matters at 3,000 files.
import { spawn } from 'node:child_process';
import { simpleGit } from 'simple-git';
import type { Diagnostic } from '../policy/diagnostics.js';
import { checkText, formatBytes, LIMITS } from '../policy/parse.js';
import type { SourceFile } from '../policy/validate.js';
import { isPolicyFileName, type ReadResult } from './dir.js';

export class RevisionError extends Error {}

/** Resolves REV in the repository that holds `dir`; returns the full commit id. */
export async function resolveRevision(dir: string, rev: string): Promise<string> {
  const git = simpleGit({ baseDir: dir });
  try {
    return (await git.raw(['rev-parse', '--verify', '--quiet', `${rev}^{commit}`])).trim();
  } catch {
    throw new RevisionError(`${rev} is not a commit in the Git repository at ${dir}`);
  }
}

export async function readPolicyRevision(dir: string, rev: string): Promise<ReadResult & { commit: string }> {
  const git = simpleGit({ baseDir: dir });
  let prefix: string;
  try {
    prefix = (await git.raw(['rev-parse', '--show-prefix'])).trim();
  } catch {
    throw new RevisionError(`${dir} is not inside a Git repository, so --previous cannot be read`);
  }
  const commit = await resolveRevision(dir, rev);
  if (!commit) throw new RevisionError(`${rev} is not a commit in the Git repository at ${dir}`);
  const listing = await git.raw(['ls-tree', '-r', '-l', '-z', '--full-tree', commit, '--', prefix || '.']);
  const blobs: Array<{ oid: string; size: number; path: string }> = [];
  for (const entry of listing.split('\0')) {
    const m = /^\d+ blob ([0-9a-f]+)\s+(\d+|-)\t(.*)$/s.exec(entry);
    if (!m) continue;
    const path = m[3]!.slice(prefix.length);
    if (!isPolicyFileName(path) || path.split('/').some((s) => s.startsWith('.') || s === 'node_modules')) continue;
    blobs.push({ oid: m[1]!, size: Number(m[2]), path });
  }
  const files: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  const small = blobs.filter((b) => {
    if (b.size <= LIMITS.maxFileBytes) return true;
    diagnostics.push({ file: b.path, line: 0, column: 0, severity: 'error', code: 'file-too-large', message: `file is ${formatBytes(b.size)}, over the ${formatBytes(LIMITS.maxFileBytes)} limit for a policy file` });
    return false;
  });
  const contents = await catFiles(dir, small.map((b) => b.oid));
  small.forEach((b, i) => {
    const checked = checkText(b.path, contents[i]!);
    if (typeof checked === 'string') files.push({ path: b.path, text: checked });
    else diagnostics.push(checked);
  });
  return { files, diagnostics, commit };
}

/** Contents of blobs by id, in order, through one `git cat-file --batch`. */
function catFiles(dir: string, oids: string[]): Promise<Buffer[]> {
  if (oids.length === 0) return Promise.resolve([]);
  return new Promise((resolve, reject) => {
    const proc = spawn('git', ['cat-file', '--batch'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => chunks.push(c));
    proc.on('error', reject);
    proc.on('close', (code) => {
      if (code !== 0) return reject(new RevisionError(`git cat-file exited with ${code}`));
      const all = Buffer.concat(chunks);
      const out: Buffer[] = [];
      let pos = 0;
      for (let i = 0; i < oids.length; i++) {
        const nl = all.indexOf(10, pos);
        const header = all.subarray(pos, nl).toString();
        const size = Number(header.split(' ')[2]);
        if (!Number.isFinite(size)) return reject(new RevisionError(`git cat-file: unexpected reply "${header}"`));
        out.push(all.subarray(nl + 1, nl + 1 + size));
        pos = nl + 1 + size + 1; // contents are followed by a newline
      }
      resolve(out);
    });
    proc.stdin.end(oids.join('\n') + '\n');
  });
}
