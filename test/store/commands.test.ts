import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { type TestDatabase, backends, testDatabase } from '../support/db.js';

describe.each(backends)('command queue on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let n = 0;

  /** A fresh device per test, so tests share one database without sharing rows. */
  async function device(): Promise<string> {
    const id = `dev-${++n}-${randomUUID().slice(0, 8)}`;
    await store.devices.upsert({ id, platform: 'apple' });
    return id;
  }

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open({ queue: { notNowBackoff: { baseMs: 60_000 } } });
  });
  afterAll(async () => tdb?.cleanup());

  it('delivers by priority, then by sequence, never by time', async () => {
    const d = await device();
    const later = new Date(Date.now() - 60_000); // created "earlier" by clock, enqueued last
    const cmds = [
      { uuid: randomUUID(), deviceId: d, type: 'A', priority: 0 },
      { uuid: randomUUID(), deviceId: d, type: 'B', priority: 5 },
      { uuid: randomUUID(), deviceId: d, type: 'C', priority: 0 },
      { uuid: randomUUID(), deviceId: d, type: 'D', priority: 5, notBefore: later },
    ];
    const { inserted } = await store.commands.enqueue(cmds);
    expect(inserted.map((x) => x.uuid)).toEqual(cmds.map((c) => c.uuid));
    expect(inserted[1]!.seq).toBeGreaterThan(inserted[0]!.seq);
    const order: string[] = [];
    for (;;) {
      const [c] = await store.commands.nextForDevice(d);
      if (!c) break;
      order.push(c.type);
      await store.commands.report(c.uuid, { status: 'completed' });
    }
    expect(order).toEqual(['B', 'D', 'A', 'C']);
  });

  it('claims a batch in delivery order and marks it sent', async () => {
    const d = await device();
    const cmds = Array.from({ length: 5 }, (_, i) => ({ uuid: randomUUID(), deviceId: d, type: `T${i}`, priority: i % 2 }));
    await store.commands.enqueue(cmds);
    const got = await store.commands.nextForDevice(d, { limit: 10 });
    expect(got.map((c) => c.type)).toEqual(['T1', 'T3', 'T0', 'T2', 'T4']);
    expect(got.every((c) => c.state === 'sent' && c.attempts === 1 && c.sentAt)).toBe(true);
    expect(await store.commands.nextForDevice(d)).toEqual([]);
  });

  it('is idempotent on the command UUID', async () => {
    const d = await device();
    const c = { uuid: randomUUID(), deviceId: d, type: 'InstallProfile', payload: { a: 1 } };
    const first = await store.commands.enqueue(c);
    expect(first.inserted).toHaveLength(1);
    const again = await store.commands.enqueue({ ...c, payload: { a: 2 } });
    expect(again).toEqual({ inserted: [], duplicates: [c.uuid] });
    const both = await store.commands.enqueue([c, c, { ...c, uuid: c.uuid.toUpperCase() }]);
    expect(both.inserted).toEqual([]);
    expect((await store.commands.get(c.uuid))!.payload).toEqual({ a: 1 });
    expect(await store.commands.listForDevice(d)).toHaveLength(1);
  });

  it('walks pending → sent → acknowledged → completed, and a repeated result changes nothing', async () => {
    const d = await device();
    const uuid = randomUUID();
    await store.commands.enqueue({ uuid, deviceId: d, type: 'DeviceInformation' });
    expect((await store.commands.get(uuid))!.state).toBe('pending');
    const [sent] = await store.commands.nextForDevice(d);
    expect(sent!.state).toBe('sent');
    const ack = await store.commands.report(uuid, { status: 'acknowledged' });
    expect(ack.changed).toBe(true);
    expect(ack.command!.state).toBe('acknowledged');
    const done = await store.commands.report(uuid, { status: 'completed', result: { OSVersion: '17.4' } });
    expect(done.changed).toBe(true);
    expect(done.command!.state).toBe('completed');
    expect(done.command!.finishedAt).toBeInstanceOf(Date);
    const dup = await store.commands.report(uuid, { status: 'completed', result: { OSVersion: '17.4' } });
    expect(dup).toMatchObject({ changed: false, reason: 'duplicate' });
    const late = await store.commands.report(uuid, { status: 'failed', error: 'late' });
    expect(late).toMatchObject({ changed: false, reason: 'finished' });
    expect((await store.commands.get(uuid))!.state).toBe('completed');
    const results = await store.commands.results(uuid);
    expect(results.map((r) => r.status)).toEqual(['acknowledged', 'completed', 'failed']);
    expect(results[1]!.result).toEqual({ OSVersion: '17.4' });
    expect(await store.commands.report(randomUUID(), { status: 'completed' })).toMatchObject({ reason: 'unknown' });
    expect(await store.commands.report('not-a-uuid', { status: 'completed' })).toMatchObject({ reason: 'unknown' });
  });

  it('records a failure with its error', async () => {
    const d = await device();
    const uuid = randomUUID();
    await store.commands.enqueue({ uuid, deviceId: d, type: 'X' });
    await store.commands.nextForDevice(d);
    const out = await store.commands.report(uuid, { status: 'failed', error: 'MCProfileErrorDomain 1009' });
    expect(out.command).toMatchObject({ state: 'failed', lastError: 'MCProfileErrorDomain 1009' });
    expect(await store.commands.nextForDevice(d)).toEqual([]);
  });

  it('retries NotNow after a backoff, and a repeated NotNow changes nothing', async () => {
    const d = await device();
    const uuid = randomUUID();
    await store.commands.enqueue({ uuid, deviceId: d, type: 'InstallApplication' });
    await store.commands.nextForDevice(d);
    const nn = await store.commands.report(uuid, { status: 'not_now' });
    expect(nn.command!.state).toBe('not_now');
    // Default backoff (60 s base in this store) keeps it away for now.
    expect(nn.command!.notBefore.getTime()).toBeGreaterThan(Date.now() + 30_000);
    expect(await store.commands.nextForDevice(d)).toEqual([]);
    expect(await store.commands.report(uuid, { status: 'not_now' })).toMatchObject({ changed: false, reason: 'duplicate' });

    // An explicit short retry: deliverable again after it.
    const d2 = await device();
    const u2 = randomUUID();
    await store.commands.enqueue({ uuid: u2, deviceId: d2, type: 'InstallApplication' });
    await store.commands.nextForDevice(d2);
    await store.commands.report(u2, { status: 'not_now', retryAfterMs: 50 });
    await new Promise((r) => setTimeout(r, 80));
    const [again] = await store.commands.nextForDevice(d2);
    expect(again).toMatchObject({ uuid: u2, state: 'sent', attempts: 2 });
    // The second delivery's NotNow is a new report, not a duplicate.
    expect((await store.commands.report(u2, { status: 'not_now', retryAfterMs: 50 })).changed).toBe(true);
  });

  it('redelivers an unanswered command after its lease, up to max attempts, then fails it', async () => {
    const d = await device();
    const uuid = randomUUID();
    await store.commands.enqueue({ uuid, deviceId: d, type: 'X', maxAttempts: 2 });
    expect(await store.commands.nextForDevice(d, { leaseMs: 30 })).toHaveLength(1);
    expect(await store.commands.nextForDevice(d, { leaseMs: 30 })).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 60));
    const [second] = await store.commands.nextForDevice(d, { leaseMs: 30 });
    expect(second!.attempts).toBe(2);
    await new Promise((r) => setTimeout(r, 60));
    expect(await store.commands.nextForDevice(d, { leaseMs: 30 })).toHaveLength(0);
    const swept = await store.commands.sweep();
    expect(swept.exhausted).toBeGreaterThanOrEqual(1);
    expect(await store.commands.get(uuid)).toMatchObject({ state: 'failed', lastError: 'no attempts left' });
  });

  it('puts lapsed leases and backoffs back to pending for workers, on sweep', async () => {
    const d = await device();
    const uuids = [randomUUID(), randomUUID()];
    await store.commands.enqueue(uuids.map((uuid, i) => ({ uuid, deviceId: d, type: `W${i}`, priority: 1_000_000 })));
    const claimed = await store.commands.claim({ limit: 2, leaseMs: 30 });
    expect(claimed.map((c) => c.uuid)).toEqual(uuids);
    await store.commands.report(uuids[1]!, { status: 'not_now', retryAfterMs: 30 });
    await new Promise((r) => setTimeout(r, 60));
    // Workers read only pending rows: nothing until the sweep.
    expect((await store.commands.claim({ limit: 100 })).filter((c) => c.deviceId === d)).toEqual([]);
    expect((await store.commands.sweep()).requeued).toBeGreaterThanOrEqual(2);
    expect(await store.commands.get(uuids[0]!)).toMatchObject({ state: 'pending', attempts: 1 });
    const again = (await store.commands.claim({ limit: 100 })).filter((c) => c.deviceId === d);
    expect(again.map((c) => [c.uuid, c.attempts])).toEqual([
      [uuids[0], 2],
      [uuids[1], 2],
    ]);
  });

  it('lets a worker claim only its own command types', async () => {
    const d = await device();
    const mine = randomUUID();
    const theirs = randomUUID();
    await store.commands.enqueue([
      { uuid: theirs, deviceId: d, type: 'InstallProfile', priority: 2_000_000 },
      { uuid: mine, deviceId: d, type: 'amapi.applyPolicy', priority: 2_000_000 },
    ]);
    const got = (await store.commands.claim({ limit: 100, types: ['amapi.applyPolicy', 'amapi.issueCommand'] })).filter((c) => c.deviceId === d);
    expect(got.map((c) => c.uuid)).toEqual([mine]);
    expect((await store.commands.get(theirs))!.state).toBe('pending');
  });

  it('expires commands past expires_at and never delivers them', async () => {
    const d = await device();
    const uuid = randomUUID();
    await store.commands.enqueue({ uuid, deviceId: d, type: 'X', expiresAt: new Date(Date.now() + 40) });
    await new Promise((r) => setTimeout(r, 80));
    expect(await store.commands.nextForDevice(d)).toEqual([]);
    expect((await store.commands.sweep()).expired).toBeGreaterThanOrEqual(1);
    expect(await store.commands.get(uuid)).toMatchObject({ state: 'expired', lastError: 'expired' });
  });

  it('keeps finished commands as history but out of the hot index', async () => {
    const d = await device();
    const uuids = [randomUUID(), randomUUID()];
    await store.commands.enqueue(uuids.map((uuid) => ({ uuid, deviceId: d, type: 'X' })));
    const [c] = await store.commands.nextForDevice(d);
    await store.commands.report(c!.uuid, { status: 'completed' });
    const history = await store.commands.listForDevice(d);
    expect(history.map((h) => h.state)).toEqual(['pending', 'completed']);
    const inIndex = await store.db.query<{ n: number }>(
      `SELECT count(*) AS n FROM commands WHERE device_id = $1 AND state IN ('pending', 'sent', 'not_now')`,
      [d],
    );
    expect(Number(inIndex.rows[0]!.n)).toBe(1);
    // The next-command query is answered from the partial index.
    const plan = await store.transaction(async (tx) => {
      await tx.query('SET LOCAL enable_seqscan = off');
      const r = await tx.query<{ 'QUERY PLAN': string }>(
        `EXPLAIN SELECT seq FROM commands WHERE device_id = $1 AND state IN ('pending', 'sent', 'not_now')
           AND not_before <= now() ORDER BY priority DESC, seq LIMIT 1`,
        [d],
      );
      return r.rows.map((x) => x['QUERY PLAN']).join('\n');
    });
    expect(plan).toContain('commands_next_idx');
  });

  it('lists devices with due commands', async () => {
    const d = await device();
    await store.commands.enqueue({ uuid: randomUUID(), deviceId: d, type: 'X' });
    expect(await store.commands.devicesWithDueCommands(100_000)).toContain(d);
  });

  it('loses nothing under a thousand concurrent enqueues', async () => {
    const d = await device();
    const uuids = Array.from({ length: 1000 }, () => randomUUID());
    const outs = await Promise.all(uuids.map((uuid) => store.commands.enqueue({ uuid, deviceId: d, type: 'X' })));
    expect(outs.every((o) => o.inserted.length === 1)).toBe(true);
    const seqs = outs.map((o) => o.inserted[0]!.seq);
    expect(new Set(seqs).size).toBe(1000);
    const r = await store.db.query<{ n: number }>('SELECT count(*) AS n FROM commands WHERE device_id = $1', [d]);
    expect(Number(r.rows[0]!.n)).toBe(1000);
  });

  it('never gives two workers the same command', async () => {
    const devices = await Promise.all(Array.from({ length: 20 }, () => device()));
    const all = devices.flatMap((d) => Array.from({ length: 25 }, () => ({ uuid: randomUUID(), deviceId: d, type: 'X' })));
    await store.commands.enqueue(all);
    const want = new Set<string>(all.map((c) => c.uuid));
    // On PostgreSQL the second worker is a second store: its own pool, its own connections.
    const other = backend === 'postgres' ? await tdb.open({ migrate: false }) : store;
    const claimed: string[][] = [[], [], [], []];
    const worker = async (s: Store, into: string[]) => {
      for (;;) {
        const got = await s.commands.claim({ limit: 7 });
        const mine = got.filter((c) => want.has(c.uuid));
        into.push(...mine.map((c) => c.uuid));
        if (got.length === 0) return;
      }
    };
    await Promise.all([worker(store, claimed[0]!), worker(other, claimed[1]!), worker(store, claimed[2]!), worker(other, claimed[3]!)]);
    const flat = claimed.flat();
    expect(flat.length).toBe(want.size);
    expect(new Set(flat).size).toBe(want.size);
    if (backend === 'postgres') expect(claimed[1]!.length + claimed[3]!.length).toBeGreaterThan(0);
    if (other !== store) await other.close();
  });
});
