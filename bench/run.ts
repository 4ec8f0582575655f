// `npm run bench [-- NAME ...]`: runs the benchmarks, prints a table, writes
// bench/results/<timestamp>.json and bench/results/latest.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../controller/package-root.js';
import type { Benchmark, BenchRow } from './harness.js';
import { androidBenchmark } from './android.js';
import { appleBenchmark } from './apple.js';
import { hostileBenchmark } from './hostile.js';
import { reconcileBenchmark } from './reconcile.js';
import { storeBenchmark } from './store.js';
import { validateBenchmark } from './validate.js';
import { windowsBenchmark } from './windows.js';

const all: Benchmark[] = [validateBenchmark, storeBenchmark, reconcileBenchmark, appleBenchmark, windowsBenchmark, androidBenchmark, hostileBenchmark];

const fmt = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? '' : n >= 100 ? String(Math.round(n)) : String(Math.round(n * 100) / 100));

async function main(): Promise<void> {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  if (process.argv.includes('--help')) {
    console.log(`usage: npm run bench [-- NAME ...]\n\nbenchmarks:\n${all.map((b) => `  ${b.name.padEnd(12)} ${b.description}`).join('\n')}`);
    return;
  }
  const chosen = wanted.length ? all.filter((b) => wanted.includes(b.name)) : all;
  const unknown = wanted.filter((w) => !all.some((b) => b.name === w));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${all.map((b) => b.name).join(', ')}`);
    process.exitCode = 2;
    return;
  }
  const results: Array<{ benchmark: string; rows: BenchRow[] }> = [];
  for (const b of chosen) {
    process.stderr.write(`running ${b.name}: ${b.description} …\n`);
    results.push({ benchmark: b.name, rows: await b.run() });
  }
  const header = ['benchmark', 'measure', 'value', 'unit', 'p50 ms', 'p99 ms', 'baseline (same run)', 'extra'];
  const rows = results.flatMap(({ benchmark, rows }) =>
    rows.map((r) => [
      benchmark,
      r.name,
      fmt(r.value),
      r.unit,
      fmt(r.p50),
      fmt(r.p99),
      r.baseline ? `${r.baseline.name}: ${fmt(r.baseline.value)} ${r.baseline.unit}` : '',
      Object.entries(r.extra ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
    ]),
  );
  const widths = header.map((_, i) => Math.max(header[i]!.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
  const dir = join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const doc = JSON.stringify({ at: new Date().toISOString(), node: process.version, results }, null, 2);
  writeFileSync(join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`), doc);
  writeFileSync(join(dir, 'latest.json'), doc);
  console.log(`\nwrote bench/results/latest.json`);
}

await main();
