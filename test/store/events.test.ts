import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store, StoredEvent } from '../../controller/store/index.js';
import { NOTIFY_PAYLOAD_LIMIT, encodeWakeup, wakeupMaxId } from '../../controller/store/events.js';
import { type TestDatabase, backends, testDatabase, waitFor } from '../support/db.js';

describe('wake-up payload', () => {
  it('lists ids, or a range when the list would not fit', () => {
    expect(encodeWakeup([3, 4, 9])).toBe('3,4,9');
    expect(wakeupMaxId('3,4,9')).toBe(9);
    const many = Array.from({ length: 5000 }, (_, i) => 1_000_000 + i);
    const p = encodeWakeup(many);
    expect(Buffer.byteLength(p)).toBeLessThan(NOTIFY_PAYLOAD_LIMIT);
    expect(p).toBe('1000000-1004999');
    expect(wakeupMaxId(p)).toBe(1_004_999);
    expect(wakeupMaxId('garbage')).toBeUndefined();
  });
});

describe.each(backends)('event bus on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(async () => tdb?.cleanup());

  const collect = () => {
    const seen: StoredEvent[] = [];
    return { seen, handler: async (evs: StoredEvent[]) => void seen.push(...evs) };
  };

  it('delivers published events in order, woken by NOTIFY rather than the poll', async () => {
    const c = collect();
    const consumer = await store.events.consume({ name: 'order', handler: c.handler, pollMs: 600_000, from: 'latest' });
    const ids = await store.events.publish([
      { topic: 'device.enrolled', payload: { id: 'd1' } },
      { topic: 'device.enrolled', payload: { id: 'd2' } },
    ]);
    await waitFor(() => c.seen.length === 2, 5_000, 'notify-driven delivery');
    expect(c.seen.map((e) => e.id)).toEqual(ids);
    expect(c.seen[1]!.payload).toEqual({ id: 'd2' });
    await consumer.stop();
    expect(await store.events.position('order')).toBe(ids[1]);
  });

  it('filters by topic', async () => {
    const c = collect();
    const consumer = await store.events.consume({ name: 'topics', handler: c.handler, topics: ['b'], from: 'latest' });
    await store.events.publish([{ topic: 'a' }, { topic: 'b', payload: { n: 1 } }, { topic: 'a' }]);
    await consumer.catchUp();
    expect(c.seen.map((e) => e.topic)).toEqual(['b']);
    await consumer.stop();
  });

  it('resumes from its saved position after a restart', async () => {
    const first = collect();
    let consumer = await store.events.consume({ name: 'resume', handler: first.handler, from: 'latest' });
    const a = await store.events.publish([{ topic: 't', payload: { n: 1 } }, { topic: 't', payload: { n: 2 } }]);
    await consumer.catchUp();
    await consumer.stop();
    await store.close();

    // Published while nothing runs.
    store = await tdb.open();
    const b = await store.events.publish([{ topic: 't', payload: { n: 3 } }]);
    await store.close();

    store = await tdb.open();
    const second = collect();
    consumer = await store.events.consume({ name: 'resume', handler: second.handler, from: 'latest' });
    await consumer.catchUp();
    expect(first.seen.map((e) => e.id)).toEqual(a);
    expect(second.seen.map((e) => e.id)).toEqual(b);
    await consumer.stop();
  });

  it('delivers at least once: a failed handler sees the batch again', async () => {
    const seen: number[] = [];
    let fail = true;
    const consumer = await store.events.consume({
      name: 'retry',
      from: 'latest',
      pollMs: 50,
      handler: async (evs) => {
        seen.push(...evs.map((e) => e.id));
        if (fail) {
          fail = false;
          throw new Error('transient');
        }
      },
    });
    const ids = await store.events.publish([{ topic: 'x' }, { topic: 'x' }]);
    await waitFor(() => consumer.position() === ids[1], 10_000, 'redelivery');
    expect(seen).toEqual([...ids, ...ids]);
    await consumer.stop();
  });

  it('sends one NOTIFY per batch, under 8,000 bytes, for 5,000 events', async () => {
    const payloads: string[] = [];
    const listener = await store.db.listen(store.events.channel, { onNotify: (p) => payloads.push(p) });
    const c = collect();
    const consumer = await store.events.consume({ name: 'big', handler: c.handler, batchSize: 1000, from: 'latest' });
    const ids = await store.events.publish(Array.from({ length: 5000 }, (_, i) => ({ topic: 'bulk', payload: { i } })));
    expect(ids).toHaveLength(5000);
    await waitFor(() => payloads.length >= 1, 5_000, 'the notification');
    await waitFor(() => c.seen.length === 5000, 20_000, 'all 5,000 events');
    await new Promise((r) => setTimeout(r, 100));
    expect(payloads).toHaveLength(1);
    expect(Buffer.byteLength(payloads[0]!)).toBeLessThan(8000);
    expect(wakeupMaxId(payloads[0]!)).toBe(ids[4999]);
    expect(c.seen.map((e) => e.id)).toEqual(ids);
    await consumer.stop();
    await listener.close();
  });

  it('publishes inside a caller transaction, and nothing when it rolls back', async () => {
    const c = collect();
    const consumer = await store.events.consume({ name: 'tx', handler: c.handler, from: 'latest' });
    await expect(
      store.transaction(async (tx) => {
        await store.events.publish({ topic: 'rolled-back' }, tx);
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    const [id] = await store.transaction((tx) => store.events.publish({ topic: 'kept' }, tx));
    await consumer.catchUp();
    expect(c.seen.map((e) => e.id)).toEqual([id]);
    await consumer.stop();
  });

  it('prunes only what every consumer has passed', async () => {
    const c = collect();
    const consumer = await store.events.consume({ name: 'prune', handler: c.handler, from: 'latest' });
    await store.events.publish([{ topic: 'p' }]);
    await consumer.catchUp();
    await consumer.stop();
    const before = await store.events.read(0, { limit: 100_000 });
    const pruned = await store.events.prune(0);
    const after = await store.events.read(0, { limit: 100_000 });
    expect(before.length - after.length).toBe(pruned);
    const slowest = Math.min(
      ...(await Promise.all(['order', 'topics', 'resume', 'retry', 'big', 'tx', 'prune'].map((n) => store.events.position(n)))),
    );
    expect(after.every((e) => e.id > slowest)).toBe(true);
  });

  // PGlite has no connection to lose: this one is PostgreSQL's alone.
  const onPostgres = backend === 'postgres' ? it : undefined;
  onPostgres?.('reconnects its listener after pg_terminate_backend and catches up', async () => {
    const s = await tdb.open({ migrate: false, reconnect: { baseMs: 20, capMs: 200 } });
    const c = collect();
    const consumer = await s.events.consume({ name: 'reconnect', handler: c.handler, pollMs: 600_000, from: 'latest' });
    const pid = s.events.listener!.pid!;
    expect(pid).toBeGreaterThan(0);
    await tdb.admin('SELECT pg_terminate_backend($1)', [pid]);
    // Published while the listener may be down: caught up from the table on reconnect.
    const lost = await s.events.publish({ topic: 'during-outage' });
    await waitFor(() => (s.events.listener?.reconnects ?? 0) >= 1 && s.events.listener?.pid !== undefined, 10_000, 'reconnect');
    expect(s.events.listener!.pid).not.toBe(pid);
    await waitFor(() => c.seen.length === 1, 5_000, 'catch-up after reconnect');
    // And NOTIFY works again on the new connection (the poll is ten minutes away).
    const after = await s.events.publish({ topic: 'after' });
    await waitFor(() => c.seen.length === 2, 5_000, 'notify on the new connection');
    expect(c.seen.map((e) => e.id)).toEqual([...lost, ...after]);
    await consumer.stop();
    await s.close();
  });
});
