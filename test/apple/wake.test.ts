// The driver's wake-up: enrollment state → APNs targets, and a 410 recorded.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import type { PushTarget } from '../../protocols/apple/apns.js';
import { appleWake } from '../../protocols/apple/wake.js';
import { testDatabase, type TestDatabase } from '../support/db.js';

describe('Apple wake-up', () => {
  let tdb: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    for (const [id, status, token] of [
      ['A', 'enrolled', randomBytes(32).toString('hex')],
      ['B', 'enrolled', randomBytes(32).toString('hex')],
      ['C', 'pending', undefined],
      ['D', 'unenrolled', randomBytes(32).toString('hex')],
    ] as const) {
      await store.devices.upsert({ id, platform: 'apple' });
      await store.devices.setEnrollment({ deviceId: id, platform: 'apple', status, state: token ? { token, pushMagic: `magic-${id}` } : {} });
    }
  });
  afterAll(async () => tdb.cleanup());

  it('pushes only enrolled devices with a token, and stops pushing a token APNs calls unregistered', async () => {
    const pushed: PushTarget[][] = [];
    const warnings: string[] = [];
    const wake = appleWake(
      store,
      { push: async (t) => (pushed.push([...t]), t.map((x) => ({ deviceId: x.deviceId, status: x.deviceId === 'B' ? ('unregistered' as const) : ('sent' as const) }))) },
      { info: () => {}, warn: (m) => void warnings.push(m) },
    );
    await wake(['A', 'B', 'C', 'D', 'nope']);
    expect(pushed[0]!.map((t) => [t.deviceId, t.pushMagic])).toEqual([
      ['A', 'magic-A'],
      ['B', 'magic-B'],
    ]);
    expect((await store.devices.getEnrollment('B'))!.state.tokenUnregisteredAt).toEqual(expect.any(String));
    expect(warnings.some((w) => /no longer valid/.test(w))).toBe(true);
    await wake(['A', 'B']);
    expect(pushed[1]!.map((t) => t.deviceId)).toEqual(['A']);
  });
});
