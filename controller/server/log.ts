// One logger: pino, JSON lines by default, a short human line on a terminal.
// The reconciler and sources take the small Log interface; this adapts pino.
import pino from 'pino';
import type { Log } from '../reconcile/reconciler.js';

export type Pino = pino.Logger;

export function createPino(opts: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Pino {
  const dest = opts.destination ?? process.stdout;
  if (!opts.pretty) return pino({ level: opts.level ?? 'info', base: undefined }, dest as pino.DestinationStream);
  // A compact human format without a transport thread: "12:00:01 INFO rollout corp-baseline: step 1/6 … {fields}".
  const write = (line: string) => {
    const o = JSON.parse(line) as Record<string, unknown>;
    const { level, time, msg, ...rest } = o;
    const name = pino.levels.labels[level as number]?.toUpperCase() ?? String(level);
    const fields = Object.keys(rest).length ? ' ' + Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ') : '';
    dest.write(`${new Date(time as number).toISOString().slice(11, 19)} ${name.padEnd(5)} ${String(msg)}${fields}\n`);
  };
  return pino({ level: opts.level ?? 'info', base: undefined }, { write } as pino.DestinationStream);
}

export function logOf(p: Pino): Log {
  return {
    info: (msg, fields) => p.info(fields ?? {}, msg),
    warn: (msg, fields) => p.warn(fields ?? {}, msg),
    error: (msg, fields) => p.error(fields ?? {}, msg),
  };
}
