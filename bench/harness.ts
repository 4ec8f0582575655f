// A tiny benchmark harness: each benchmark returns rows, run.ts prints them as
// a table beside their same-run baseline and writes JSON. No timing is ever
// asserted; numbers are only comparable within one run on this noisy machine.
import { performance } from 'node:perf_hooks';

export interface BenchRow {
  /** What was measured, e.g. "validate 2000 bundles". */
  name: string;
  /** The main figure and its unit (ops/s, ms, MB ...). */
  value: number;
  unit: string;
  /** Latency percentiles in milliseconds, when the benchmark measured them. */
  p50?: number;
  p99?: number;
  /** The same-run ceiling or reference this row should be read against. */
  baseline?: { name: string; value: number; unit: string };
  /** Anything else worth recording (memory, counts). */
  extra?: Record<string, number | string>;
}

export interface Benchmark {
  name: string;
  description: string;
  run(): Promise<BenchRow[]>;
}

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i] as number;
}

/** Times `fn` once, returning milliseconds. */
export async function timeMs(fn: () => unknown | Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export function heapUsedMB(): number {
  return Math.round((process.memoryUsage().heapUsed / 1048576) * 10) / 10;
}

/** Runs `fn` over `items` with at most `n` in flight; returns each call's latency in ms (sorted) and the wall time. */
export async function pool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<unknown>): Promise<{ lat: number[]; wallMs: number }> {
  const lat: number[] = [];
  let next = 0;
  const wallMs = await timeMs(() =>
    Promise.all(
      Array.from({ length: Math.min(n, items.length) }, async () => {
        while (next < items.length) {
          const x = items[next++]!;
          lat.push(await timeMs(() => fn(x)));
        }
      }),
    ),
  );
  return { lat: lat.sort((a, b) => a - b), wallMs };
}
