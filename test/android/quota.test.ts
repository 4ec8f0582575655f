// The AMAPI quota on a rollout over 50,000 devices, on a virtual clock: the
// driver queues one applyPolicy per device per step, the worker carries them
// out through the real Amapi client code and limiter against an in-process
// AMAPI that enforces Google's quota (and now and then answers 429 or 503).
// No sliding window ever sees more than the limit, every device ends on its
// policy, the policy is patched once (not per device) and each device once
// per step.
import { randomUUID } from 'node:crypto';
import type { androidmanagement_v1 } from '@googleapis/androidmanagement';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeliverContext, DriverDevice, ResolvedBundle } from '../../controller/reconcile/driver.js';
import type { Command, CommandReport, Enrollment, NewCommand, Store } from '../../controller/store/index.js';
import { Amapi } from '../../protocols/android/client.js';
import { BASE_POLICY_ID, policyIdFor } from '../../protocols/android/compile.js';
import { createAndroidDriver } from '../../protocols/android/driver.js';
import { AmapiWorker, type WorkerStore } from '../../protocols/android/worker.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';
import { bundleHash } from '../../controller/policy/hash.js';
import type { PolicyBundleSpec } from '../../controller/policy/types.js';

const ENTERPRISE = 'enterprises/LCquota';
const GOOGLE_QUOTA = { requests: 1000, windowMs: 100_000 };

/** The most calls in any half-open window [s, s + w). */
function maxInWindow(sorted: number[], w: number): number {
  let best = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[j]! <= sorted[i]! - w) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

const googleError = (status: number, message: string, retryAfter?: number) =>
  Object.assign(new Error(message), { config: {}, response: { status, headers: retryAfter ? { 'retry-after': String(retryAfter) } : {}, data: { error: { code: status, message, status: status === 429 ? 'RESOURCE_EXHAUSTED' : 'UNAVAILABLE' } } } });

/** An in-process AMAPI on the virtual clock: policies.patch and devices.patch, Google's quota, injected faults. */
function fakeAmapi(clock: { t: number }, o: { faultEvery?: number } = {}) {
  const calls: number[] = [];
  const policies = new Map<string, { version: number; body: string }>();
  const devices = new Map<string, string>();
  const successes = { policies: 0, devices: new Map<string, number>() };
  let overQuota = 0;
  let n = 0;
  const admit = () => {
    calls.push(clock.t);
    n++;
    // Google's own count, independent of Muster's limiter.
    let inWindow = 0;
    for (let i = calls.length - 1; i >= 0 && calls[i]! > clock.t - GOOGLE_QUOTA.windowMs; i--) inWindow++;
    if (inWindow > GOOGLE_QUOTA.requests) {
      overQuota++;
      throw googleError(429, 'Quota exceeded', 10);
    }
  };
  const api = {
    enterprises: {
      policies: {
        patch: async ({ name, requestBody }: { name: string; requestBody: object }) => {
          admit();
          const body = JSON.stringify(requestBody);
          const cur = policies.get(name);
          const version = !cur ? 1 : cur.body === body ? cur.version : cur.version + 1;
          policies.set(name, { version, body });
          successes.policies++;
          return { data: { ...requestBody, name, version: String(version) } };
        },
      },
      devices: {
        patch: async ({ name, updateMask, requestBody }: { name: string; updateMask?: string; requestBody: { policyName: string } }) => {
          admit();
          if (o.faultEvery && n % o.faultEvery === 0) throw googleError(503, 'The service is currently unavailable.');
          if (o.faultEvery && n % (o.faultEvery * 3 + 1) === 0) throw googleError(429, 'Quota exceeded', 5);
          if (updateMask !== 'policyName') throw googleError(400, 'Illegal state transition');
          if (!policies.has(requestBody.policyName)) throw googleError(400, 'Policy does not exist');
          devices.set(name, requestBody.policyName);
          successes.devices.set(name, (successes.devices.get(name) ?? 0) + 1);
          return { data: { name, policyName: requestBody.policyName, state: 'ACTIVE' } };
        },
      },
    },
  };
  return { api: api as unknown as androidmanagement_v1.Androidmanagement, calls, devices, successes, policies, overQuota: () => overQuota };
}

/** The worker's part of the store, in memory (the real queue is exercised below on PGlite and PostgreSQL). */
function memoryStore() {
  const commands = new Map<string, Command>();
  const pending: string[] = [];
  let head = 0;
  const enrollments = new Map<string, Enrollment>();
  let seq = 0;
  const store = {
    commands: {
      async enqueue(list: NewCommand | readonly NewCommand[]) {
        const inserted: Array<{ uuid: string; seq: number }> = [];
        const duplicates: string[] = [];
        for (const c of Array.isArray(list) ? list : [list as NewCommand]) {
          if (commands.has(c.uuid)) {
            duplicates.push(c.uuid);
            continue;
          }
          const now = new Date();
          commands.set(c.uuid, { seq: ++seq, uuid: c.uuid, deviceId: c.deviceId, type: c.type, payload: c.payload, priority: c.priority ?? 0, state: 'pending', attempts: 0, maxAttempts: c.maxAttempts ?? 10, notBefore: now, expiresAt: null, lastError: null, createdAt: now, sentAt: null, acknowledgedAt: null, finishedAt: null });
          pending.push(c.uuid);
          inserted.push({ uuid: c.uuid, seq });
        }
        return { inserted, duplicates };
      },
      async claim(o: { types?: readonly string[]; limit?: number }) {
        const out: Command[] = [];
        while (out.length < (o.limit ?? 100) && head < pending.length) {
          const c = commands.get(pending[head++]!)!;
          if (c.state !== 'pending' || (o.types && !o.types.includes(c.type))) continue;
          c.state = 'sent';
          c.attempts++;
          out.push({ ...c });
        }
        return out;
      },
      async report(uuid: string, r: CommandReport) {
        const c = commands.get(uuid)!;
        if (r.status === 'completed' || r.status === 'failed') c.state = r.status;
        else if (r.status === 'not_now') {
          c.state = 'pending';
          pending.push(uuid);
        } else c.state = 'acknowledged';
        c.lastError = r.error ?? null;
        return { changed: true };
      },
      async clearForDevice() {
        return 0;
      },
    },
    devices: {
      async getEnrollment(id: string) {
        return enrollments.get(id);
      },
      async lockDevice() {},
      async patchEnrollmentState(id: string, patch: Record<string, unknown>) {
        const e = enrollments.get(id)!;
        e.state = { ...e.state, ...patch };
        return e;
      },
    },
    events: { async publish() {} },
    bundles: { get: async (hash: string) => (hash === bundle.hash ? { hash, name: bundle.name, version: bundle.version, content: { name: bundle.name, spec: bundle.spec } } : undefined) },
    transaction: <T>(fn: (tx: never) => Promise<T>) => fn(undefined as never),
  };
  return { store: store as unknown as WorkerStore & Pick<Store, 'commands'>, commands, enrollments };
}

const spec: PolicyBundleSpec = { version: '1.0.0', platforms: ['android'], settings: { restrictions: { allowCamera: false } } };
const bundle: ResolvedBundle = { name: 'android-base', version: '1.0.0', hash: bundleHash('android-base', spec), rollout: 'android', spec };

describe('a rollout over 50,000 Android devices within the AMAPI quota', () => {
  const N = 50_000;
  const clock = { t: 0 };
  const fake = fakeAmapi(clock, { faultEvery: 997 });
  const mem = memoryStore();
  const admitted: number[] = [];
  const amapi = new Amapi({ api: fake.api, rateLimit: { now: () => clock.t, sleep: async (ms) => void (clock.t += ms), onStart: (t) => void admitted.push(t) } });
  const worker = new AmapiWorker({ store: mem.store, amapi, enterprise: ENTERPRISE, secret: () => undefined, log: { info() {}, warn() {} }, now: () => new Date(clock.t) });
  const driver = createAndroidDriver();
  const ids = Array.from({ length: N }, (_, i) => `dev${String(i).padStart(6, '0')}`);
  const target = policyIdFor([bundle.hash]);
  const deliver = async (step: string, devs: string[]) => {
    const ctx = { store: mem.store, tx: undefined, secret: () => undefined, nonce: () => step } as unknown as DeliverContext;
    const work = devs.map((id) => {
      const device: DriverDevice = { id, platform: 'android', osVersion: '14', model: null };
      return { device, actions: driver.diff(driver.compile([bundle], device), { items: { policy: { hash: BASE_POLICY_ID, status: 'installed' } } }) };
    });
    for (let i = 0; i < work.length; i += 1000) await driver.deliver(ctx, work.slice(i, i + 1000));
  };

  beforeAll(() => {
    // Enrolled on the base policy, as an enrollment token leaves them.
    for (const id of ids) mem.enrollments.set(id, { deviceId: id, platform: 'android', status: 'enrolled', state: { name: `${ENTERPRISE}/devices/${id}`, policyName: `${ENTERPRISE}/policies/${BASE_POLICY_ID}` }, updatedAt: new Date() });
  });

  it('moves 1 %, then 10 %, then everyone; never over the limit in any window; one patch per policy, one per device', { timeout: 300_000 }, async () => {
    const steps = [ids.slice(0, N / 100), ids.slice(N / 100, N / 10), ids.slice(N / 10)];
    for (const [i, devs] of steps.entries()) {
      await deliver(`step${i}`, devs);
      await worker.drain();
      // Every device of the step is on the policy; the rest are not yet.
      expect(devs.every((id) => fake.devices.get(`${ENTERPRISE}/devices/${id}`) === `${ENTERPRISE}/policies/${target}`)).toBe(true);
    }
    expect(fake.devices.size).toBe(N);
    // Google never refused a call for quota, nor saw more than its limit in any window;
    // the limiter never let more than its own (lower) limit start in any window.
    expect(fake.overQuota()).toBe(0);
    expect(maxInWindow([...fake.calls].sort((a, b) => a - b), GOOGLE_QUOTA.windowMs)).toBeLessThanOrEqual(GOOGLE_QUOTA.requests);
    expect(maxInWindow(admitted, GOOGLE_QUOTA.windowMs)).toBeLessThanOrEqual(amapi.limiter.requests);
    expect(amapi.limiter.requests).toBe(900);
    expect(admitted.length).toBe(fake.calls.length);
    // Faults were met and retried, and still every attempt was counted against the quota.
    expect(amapi.limiter.retries).toBeGreaterThan(40);
    expect(fake.calls.length).toBe(N + 1 + amapi.limiter.retries);
    expect(fake.successes.policies).toBe(1);
    expect([...fake.successes.devices.values()].every((n) => n === 1)).toBe(true);
    expect(worker.stats).toMatchObject({ policiesPatched: 1, devicesPatched: N, failed: 0 });
    // It really was paced: 50,001 calls at 900 per 100 s take at least 55 full windows of virtual time.
    expect(clock.t).toBeGreaterThanOrEqual(Math.floor((N + 1) / amapi.limiter.requests) * GOOGLE_QUOTA.windowMs);
    expect([...mem.commands.values()].every((c) => c.state === 'completed')).toBe(true);
  });

  it('queues nothing twice for the same decision, and spends no call on a device already on its policy', async () => {
    const before = fake.calls.length;
    await deliver('step2', ids.slice(N / 10));
    expect(await worker.drain()).toBe(0);
    await deliver('again', ids.slice(0, 100));
    expect(await worker.drain()).toBe(100);
    expect(fake.calls.length).toBe(before);
    expect(worker.stats.skipped).toBe(100);
  });
});

describe.each(backends)('the worker on the real command queue within the quota (%s)', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
  });
  afterAll(() => tdb?.cleanup());

  it('carries out 600 applyPolicy commands at 50 per 10 s, retrying 429s and 503s, each device patched once', { timeout: 120_000 }, async () => {
    const clock = { t: 0 };
    const fake = fakeAmapi(clock, { faultEvery: 37 });
    const admitted: number[] = [];
    const amapi = new Amapi({ api: fake.api, rateLimit: { requests: 50, windowMs: 10_000, now: () => clock.t, sleep: async (ms) => void (clock.t += ms), onStart: (t) => void admitted.push(t) } });
    const worker = new AmapiWorker({ store, amapi, enterprise: ENTERPRISE, secret: () => undefined, log: { info() {}, warn() {} } });
    const driver = createAndroidDriver();
    const ids = Array.from({ length: 600 }, () => randomUUID().replace(/-/g, '').slice(0, 16));
    await store.bundles.put({ hash: bundle.hash, name: bundle.name, version: bundle.version, content: { name: bundle.name, spec: bundle.spec }, commit: 'c1' });
    for (const id of ids) {
      await store.devices.upsert({ id, platform: 'android' });
      await store.devices.setEnrollment({ deviceId: id, platform: 'android', status: 'enrolled', state: { name: `${ENTERPRISE}/devices/${id}`, policyName: `${ENTERPRISE}/policies/${BASE_POLICY_ID}` } });
    }
    await store.transaction(async (tx) => {
      const work = ids.map((id) => {
        const device: DriverDevice = { id, platform: 'android', osVersion: null, model: null };
        return { device, actions: driver.diff(driver.compile([bundle], device), undefined) };
      });
      await driver.deliver({ store, tx, secret: () => undefined, nonce: () => '' }, work);
    });
    await worker.drain();
    expect(fake.overQuota()).toBe(0);
    expect(maxInWindow(admitted, 10_000)).toBeLessThanOrEqual(50);
    expect(admitted.length).toBe(fake.calls.length);
    expect(amapi.limiter.retries).toBeGreaterThan(5);
    expect(fake.successes.policies).toBe(1);
    expect(fake.devices.size).toBe(600);
    expect([...fake.successes.devices.values()].every((n) => n === 1)).toBe(true);
    expect(await store.commands.countByState()).toMatchObject({ completed: 600, failed: 0, pending: 0 });
    const e = await store.devices.getEnrollment(ids[0]!);
    expect(e?.state).toMatchObject({ policyName: `${ENTERPRISE}/policies/${policyIdFor([bundle.hash])}`, expected: { policyId: policyIdFor([bundle.hash]), version: '1' } });
  });
});
