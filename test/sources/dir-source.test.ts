// The folder source: onChange once per new content, never swallowed by a
// sync() made elsewhere, and tried again when it failed.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDirSource } from '../../controller/sources/dir-source.js';
import { group } from '../reconcile/helpers.js';
import { until } from '../e2e/support.js';

describe('folder source', () => {
  const dirs: string[] = [];
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), 'muster-dir-source-'));
    dirs.push(d);
    writeFileSync(join(d, 'g.yaml'), group('all', '{}'));
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('hands each new content to onChange once, even when a sync() elsewhere saw it first', async () => {
    const d = folder();
    const src = createDirSource(d, { intervalMs: 20 });
    const seen: string[] = [];
    src.start((c) => void seen.push(c));
    await until(async () => seen.length === 1, 5_000, 'the first commit');
    writeFileSync(join(d, 'h.yaml'), group('more', '{}'));
    // The controller reading the folder itself must not make the poll think nothing changed.
    const { commit } = await src.sync();
    await until(async () => seen.length === 2, 5_000, 'the second commit');
    expect(seen[1]).toBe(commit);
    await new Promise((r) => setTimeout(r, 150));
    expect(seen).toHaveLength(2);
    await src.stop();
  });

  it('tries a failed onChange again at the next poll', async () => {
    let calls = 0;
    const errors: Error[] = [];
    const accepted: string[] = [];
    const s2 = createDirSource(folder(), { intervalMs: 20, onError: (e) => errors.push(e) });
    s2.start(async (c) => {
      if (++calls === 1) throw new Error('database unavailable');
      accepted.push(c);
    });
    await until(async () => accepted.length === 1, 5_000, 'the retried commit');
    expect(errors.map((e) => e.message)).toEqual(['database unavailable']);
    await s2.stop();
  });
});
