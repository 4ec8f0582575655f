// `muster validate` on a large repository (2,000 bundles, 500 groups, 500
// rollouts), beside the floor any YAML validator pays on the same files:
// reading them and parsing them with the yaml library alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { createSchemaValidator } from '../controller/policy/schema-check.js';
import { validatePolicyFiles } from '../controller/policy/validate.js';
import { readPolicyDir } from '../controller/sources/dir.js';
import { heapUsedMB, timeMs, type Benchmark, type BenchRow } from './harness.js';
import { writePolicyTree } from './policy-tree.js';

export const validateBenchmark: Benchmark = {
  name: 'validate',
  description: 'muster validate on 2,000 bundles, 500 groups, 500 rollouts',
  async run(): Promise<BenchRow[]> {
    const dir = mkdtempSync(join(tmpdir(), 'muster-bench-'));
    try {
      writePolicyTree(dir, { bundles: 2000, groups: 500, rollouts: 500 });
      // Warm the file cache and the JIT once, then measure.
      await readPolicyDir(dir);
      const floorMs = await timeMs(async () => {
        const { files } = await readPolicyDir(dir);
        for (const f of files) for (const d of parseAllDocuments(f.text) as unknown as Array<{ toJS(): unknown }>) d.toJS();
      });
      let compileMs = 0;
      const validator = createSchemaValidator();
      compileMs = await timeMs(() => createSchemaValidator());
      let ok = false;
      let diagnostics = 0;
      const before = heapUsedMB();
      const totalMs = await timeMs(async () => {
        const { files, diagnostics: readDiags } = await readPolicyDir(dir);
        const r = validatePolicyFiles(files, readDiags, { schemaValidator: validator });
        ok = r.ok;
        diagnostics = r.diagnostics.length;
      });
      const after = heapUsedMB();
      return [
        {
          name: 'validate 3,000 documents (read+parse+schema+semantics)',
          value: Math.round(totalMs),
          unit: 'ms',
          baseline: { name: 'read + yaml parse only', value: Math.round(floorMs), unit: 'ms' },
          extra: { valid: String(ok), diagnostics, heapDeltaMB: Math.round((after - before) * 10) / 10, schemaCompileMs: Math.round(compileMs) },
        },
      ];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
