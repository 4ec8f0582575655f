// What a command needs from the outside world, passed in so tests can run the
// CLI in-process and read exactly what it printed and how it exited.
import { ansiPaint, noPaint, type Paint } from '../policy/diagnostics.js';

export interface CliIO {
  stdout: { write(s: string): unknown; isTTY?: boolean };
  stderr: { write(s: string): unknown; isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  cwd: string;
}

export const processIO = (): CliIO => ({ stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() });

/** Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function paintFor(stream: CliIO['stdout'], env: NodeJS.ProcessEnv): Paint {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return noPaint;
  if (env.FORCE_COLOR && env.FORCE_COLOR !== '0') return ansiPaint();
  return stream.isTTY ? ansiPaint() : noPaint;
}

/** Exit codes shared by every command. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** An expected failure: printed as one line, no stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

export const println = (s: { write(x: string): unknown }, line = '') => s.write(line + '\n');

/** Left-aligned columns for human tables. */
export function table(rows: string[][], paint: Paint = noPaint): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r, n) => {
      const line = r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
      return n === 0 ? paint.bold(line) : line;
    })
    .join('\n');
}
