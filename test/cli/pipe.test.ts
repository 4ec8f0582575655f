// `muster … | head`: a reader that stops early ends the command quietly, with no stack trace.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN } from '../e2e/support.js';

describe('muster writing into a closed pipe', () => {
  it('exits 0 without a stack trace when the reader has hung up', async () => {
    const child = spawn(process.execPath, [BIN, 'schema'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Hang up before reading anything, as `head` does once it has had enough: every write meets a closed pipe.
    child.stdout.destroy();
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(stderr).not.toMatch(/EPIPE|at .*\.js:\d+/);
    expect(code).toBe(0);
  });
});
