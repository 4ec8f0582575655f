// The command queue's hot paths (enqueue in batches, claim per device, report)
// beside the same run's floor: a bare multi-row INSERT into an unindexed table
// and a bare primary-key SELECT on the same database. PostgreSQL when
// DATABASE_URL is set (in a throwaway schema), PGlite in memory otherwise.
import { randomBytes, randomUUID } from 'node:crypto';
import { openStore } from '../controller/store/index.js';
import { silentLogger } from '../controller/store/db.js';
import { randomKeyring } from '../controller/secrets/keys.js';
import { percentile, timeMs, type Benchmark, type BenchRow } from './harness.js';

const DEVICES = 2_000;
const PER_DEVICE = 5;

export const storeBenchmark: Benchmark = {
  name: 'store',
  description: `command queue: enqueue/claim/report ${DEVICES * PER_DEVICE} commands for ${DEVICES} devices`,
  async run(): Promise<BenchRow[]> {
    const url = process.env.DATABASE_URL;
    const schema = `muster_bench_${randomBytes(4).toString('hex')}`;
    const store = await openStore({
      ...(url ? { databaseUrl: url, poolSize: 16 } : { dataDir: 'memory' }),
      schema,
      logger: silentLogger, keys: randomKeyring(),
    });
    const backend = store.backend;
    try {
      const devices = Array.from({ length: DEVICES }, (_, i) => `bench-${i}`);
      const commands = devices.flatMap((deviceId) =>
        Array.from({ length: PER_DEVICE }, () => ({ uuid: randomUUID(), deviceId, type: 'InstallProfile', payload: { p: 'x'.repeat(200) } })),
      );
      const n = commands.length;
      for (let i = 0; i < DEVICES; i += 50) {
        await Promise.all(devices.slice(i, i + 50).map((id) => store.devices.upsert({ id, platform: 'apple' })));
      }

      // Baseline: the same rows into a plain table, in the same batch size.
      await store.db.query('CREATE TABLE bench_floor (uuid uuid PRIMARY KEY, device_id text, payload jsonb)');
      const floorInsertMs = await timeMs(async () => {
        for (let i = 0; i < n; i += 500) {
          const batch = commands.slice(i, i + 500);
          await store.db.query('INSERT INTO bench_floor SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])', [
            batch.map((c) => c.uuid),
            batch.map((c) => c.deviceId),
            batch.map((c) => JSON.stringify(c.payload)),
          ]);
        }
      });
      const enqueueMs = await timeMs(async () => {
        for (let i = 0; i < n; i += 500) await store.commands.enqueue(commands.slice(i, i + 500));
      });

      // A device checking in: claim its next command. Baseline: a primary-key read.
      const floorLat: number[] = [];
      for (const c of commands.slice(0, 1000)) floorLat.push(await timeMs(() => store.db.query('SELECT * FROM bench_floor WHERE uuid = $1', [c.uuid])));
      const claimLat: number[] = [];
      const reportLat: number[] = [];
      for (const d of devices.slice(0, 1000)) {
        let claimed: Awaited<ReturnType<typeof store.commands.nextForDevice>> = [];
        claimLat.push(await timeMs(async () => (claimed = await store.commands.nextForDevice(d, { limit: 1 }))));
        const c = claimed[0];
        if (c) reportLat.push(await timeMs(() => store.commands.report(c.uuid, { status: 'completed' })));
      }
      const sorted = (a: number[]) => [...a].sort((x, y) => x - y);
      const [fl, cl, rl] = [sorted(floorLat), sorted(claimLat), sorted(reportLat)];
      const sum = (a: number[]) => a.reduce((s, x) => s + x, 0);
      const extra = { backend };
      return [
        {
          name: `enqueue ${n} commands (batches of 500)`,
          value: Math.round(n / (enqueueMs / 1000)),
          unit: 'cmd/s',
          baseline: { name: 'bare INSERT', value: Math.round(n / (floorInsertMs / 1000)), unit: 'rows/s' },
          extra,
        },
        {
          name: 'claim next command for a device',
          value: Math.round(claimLat.length / (sum(claimLat) / 1000)),
          unit: 'ops/s',
          p50: percentile(cl, 50),
          p99: percentile(cl, 99),
          baseline: { name: 'PK SELECT p50 ms', value: percentile(fl, 50), unit: 'ms' },
          extra,
        },
        {
          name: 'report a result',
          value: Math.round(reportLat.length / (sum(reportLat) / 1000)),
          unit: 'ops/s',
          p50: percentile(rl, 50),
          p99: percentile(rl, 99),
          extra,
        },
      ];
    } finally {
      if (backend === 'postgres') await store.db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
      await store.close();
    }
  },
};
