#!/usr/bin/env node
import { processIO } from './io.js';
import { runCli } from './program.js';

// `muster … | head` closes the pipe early: that is the reader being done, not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

process.exitCode = await runCli(process.argv.slice(2), processIO());
