// One diagnostic type for everything the loader and validator find, and its
// three renderings: human text, JSON for machines, GitHub workflow annotations.

export type Severity = 'error' | 'warning';

export interface SourcePosition {
  /** Path relative to the policy root, with forward slashes. */
  file: string;
  /** 1-based line and column; 0 when the problem concerns the whole file. */
  line: number;
  column: number;
}

export interface Diagnostic extends SourcePosition {
  severity: Severity;
  /** Stable machine-readable code, e.g. "schema", "unknown-reference", "conflict". */
  code: string;
  message: string;
  /** Other places the message refers to (the first definition of a duplicate, the other side of a conflict). */
  related?: SourcePosition[];
}

export function formatPosition(p: SourcePosition): string {
  return p.line > 0 ? `${p.file}:${p.line}:${p.column}` : p.file;
}

export function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.column - b.column || (a.message < b.message ? -1 : 1);
}

export const countErrors = (ds: readonly Diagnostic[]): number => ds.filter((d) => d.severity === 'error').length;

export interface Paint {
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  bold(s: string): string;
  dim(s: string): string;
}

export const noPaint: Paint = { red: (s) => s, green: (s) => s, yellow: (s) => s, bold: (s) => s, dim: (s) => s };

export function ansiPaint(): Paint {
  const wrap = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
  return { red: wrap(31, 39), green: wrap(32, 39), yellow: wrap(33, 39), bold: wrap(1, 22), dim: wrap(2, 22) };
}

export function formatText(d: Diagnostic, paint: Paint = noPaint): string {
  const sev = d.severity === 'error' ? paint.red('error') : paint.yellow('warning');
  let out = `${paint.bold(formatPosition(d))}: ${sev}: ${d.message} ${paint.dim(`[${d.code}]`)}`;
  for (const r of d.related ?? []) out += `\n    ${paint.dim('see')} ${formatPosition(r)}`;
  return out;
}

// GitHub workflow commands need %, CR and LF escaped in the message, and also
// ':' and ',' in properties (https://github.com/actions/toolkit core/command.ts).
const escapeData = (s: string) => s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
const escapeProperty = (s: string) => escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');

export function formatGithub(d: Diagnostic, root = ''): string {
  const file = root ? `${root.replace(/\/+$/, '')}/${d.file}` : d.file;
  const props = [`file=${escapeProperty(file)}`];
  if (d.line > 0) props.push(`line=${d.line}`, `col=${d.column}`);
  const related = (d.related ?? []).map((r) => ` (see ${formatPosition(r)})`).join('');
  return `::${d.severity} ${props.join(',')}::${escapeData(`${d.message}${related} [${d.code}]`)}`;
}
