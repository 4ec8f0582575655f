// Crash safety: SIGKILL `muster serve` in the middle of a paced rollout,
// start it again on the same database, and check that no step was skipped or
// repeated, every device ended with its assignment, and no command was lost
// or queued twice.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../../controller/store/index.js';
import { secretKeysFrom } from '../../controller/cli/secret-key.js';
import type { CliIO } from '../../controller/cli/io.js';
import { silentLogger } from '../../controller/store/db.js';
import { bundle, group, rollout } from '../reconcile/helpers.js';
import { PolicyRepo, api, childEnv, createToken, serve, until } from './support.js';

const DEVICES = 300;
const STEPS = ['setWeight: 10', 'pause: { duration: 1s }', 'setWeight: 30', 'pause: { duration: 1s }', 'setWeight: 60', 'pause: { duration: 1s }', 'setWeight: 100'];

describe('crash safety', { timeout: 360_000 }, () => {
  const repo = new PolicyRepo();
  const data = mkdtempSync(join(tmpdir(), 'muster-crash-'));
  const db = join(data, 'db');
  afterAll(() => {
    repo.cleanup();
    rmSync(data, { recursive: true, force: true });
  });

  it('survives SIGKILL mid-rollout: no step skipped or repeated, nothing lost or duplicated', async () => {
    repo.commit(
      {
        'b.yaml': bundle('base', '1.0.0'),
        'g.yaml': group('all', '{}'),
        'r.yaml': rollout('base', 'base', ['all'], STEPS.map((s) => `    - ${s}`).join('\n'), 'maxDevicesPerTick: 15'),
      },
      'paced rollout',
    );
    const token = createToken(db, 'read');
    const args = ['--source', `file://${repo.bare}`, '--data-dir', db, '--git-cache', join(data, 'git'), '--simulate', String(DEVICES), '--tick', '150ms', '--git-interval', '1h'];
    const env = childEnv({ MUSTER_DATA_DIR: db });

    const first = await serve(args, env);
    // Kill it while the 30 % step is still fanning out (15 devices per tick).
    await first.waitLog((l) => String(l.msg).includes('weight 10 % → 30 %'), 60_000, 'the 30 % step');
    await new Promise((r) => setTimeout(r, 100));
    await first.kill();
    const killedMidStep = !first.logs.some((l) => String(l.msg).includes('step 3/7 setWeight 30 done'));

    const second = await serve(args, env);
    await until(async () => {
      const r = (await api<Array<{ name: string; phase: string; counts: Record<string, number> }>>(second.url, token, 'GET', '/rollouts')).data.find((x) => x.name === 'base');
      return r?.phase === 'Healthy' && r.counts['canary.Synced'] === DEVICES;
    }, 300_000, 'Healthy on every device after the restart');
    await second.stop();
    // The kill landed inside the 30 % fan-out, so the second process finished that step.
    expect(killedMidStep).toBe(true);
    expect(second.logs.some((l) => String(l.msg).includes('step 3/7 setWeight 30 done'))).toBe(true);

    // The embedded database's own key (beside its data), found the way every muster command finds it.
    const keys = secretKeysFrom({ env: {} } as unknown as CliIO, { dataDir: db, create: false })?.keys;
    const store = await openStore({ dataDir: db, logger: silentLogger, ...(keys ? { keys } : {}) });
    try {
      const transitions = (await store.db.query<{ details: { transitions: string[] } }>(`SELECT details FROM audit_log WHERE subject = 'rollout/base' ORDER BY id`)).rows.flatMap(
        (r) => r.details.transitions,
      );
      STEPS.forEach((s, i) => {
        const done = transitions.filter((t) => t.startsWith(`step ${i + 1}/${STEPS.length} `) && t.includes(' done'));
        expect(done, `step ${i + 1} (${s}) done exactly once`).toHaveLength(1);
      });
      const assigned = await store.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM assignments WHERE rollout = 'base'`);
      expect(assigned.rows[0]!.n).toBe(DEVICES);
      // One install per device, completed; none lost, none twice.
      const installs = await store.db.query<{ device_id: string; n: number; done: number }>(
        `SELECT device_id, count(*)::int AS n, count(*) FILTER (WHERE state = 'completed')::int AS done FROM commands GROUP BY device_id`,
      );
      expect(installs.rows).toHaveLength(DEVICES);
      expect(installs.rows.every((r) => r.n === 1 && r.done === 1)).toBe(true);
      expect((await store.audit.verify()).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});
