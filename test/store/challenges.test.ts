import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';

describe.each(backends)('enrollment challenges on %s', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(async () => tdb?.cleanup());

  it('issues a challenge that is accepted once, for its purpose only, and never stored in the clear', async () => {
    const c = await store.challenges.issue('apple-scep', 60_000, { group: 'lobby-ipads' });
    expect(c).toMatch(/^[0-9a-f]{40}$/);
    expect(await store.challenges.verify(c, 'apple-scep')).toBe(true);
    expect(await store.challenges.consume(c, 'windows-enroll')).toBeUndefined();
    expect(await store.challenges.consume(c, 'apple-scep')).toMatchObject({ purpose: 'apple-scep', details: { group: 'lobby-ipads' } });
    expect(await store.challenges.consume(c, 'apple-scep')).toBeUndefined();
    expect(await store.challenges.verify(c, 'apple-scep')).toBe(false);
    const raw = await store.db.query('SELECT * FROM enrollment_challenges');
    expect(JSON.stringify(raw.rows)).not.toContain(c);
  });

  it('lets exactly one of many concurrent consumers win', async () => {
    const c = await store.challenges.issue('apple-scep', 60_000);
    const wins = (await Promise.all(Array.from({ length: 20 }, () => store.challenges.consume(c, 'apple-scep')))).filter(Boolean);
    expect(wins).toHaveLength(1);
  });

  it('refuses an expired challenge and prunes old ones', async () => {
    const c = await store.challenges.issue('apple-scep', -1000);
    expect(await store.challenges.consume(c, 'apple-scep')).toBeUndefined();
    expect(await store.challenges.prune(new Date(Date.now() + 1000))).toBeGreaterThanOrEqual(1);
  });
});
