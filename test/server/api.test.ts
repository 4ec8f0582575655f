// The admin API and operations routes over a real store and reconciler,
// through fastify's inject (no socket needed).
import { createHmac } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDrivers } from '../../controller/drivers.js';
import type { Reconciler } from '../../controller/reconcile/reconciler.js';
import { EnrollRequestError, buildApp, ttlHoursOf } from '../../controller/server/app.js';
import { createPino, logOf } from '../../controller/server/log.js';
import { Controller } from '../../controller/serve/controller.js';
import { createDirSource } from '../../controller/sources/dir-source.js';
import type { Store } from '../../controller/store/index.js';
import { SimulatedFleet } from '../../protocols/simulated/fleet.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { Clock, bundle, group, policyOf, reconcilerFor, rollout } from '../reconcile/helpers.js';

const SECRET = 'hook-secret';

describe('admin API', () => {
  let tdb: TestDatabase;
  let store: Store;
  let rec: Reconciler;
  let app: FastifyInstance;
  let syncs = 0;
  let fleet: SimulatedFleet;
  const tokens: Record<string, string> = {};
  const clock = new Clock();

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    rec = reconcilerFor(store, clock);
    fleet = new SimulatedFleet({ store, now: clock.now, onReport: (id) => rec.deviceReported(id) });
    await fleet.enroll(50);
    await rec.load();
    await rec.applyPolicy(policyOf({ 'b.yaml': bundle('base', '1.0.0'), 'g.yaml': group('all', '{}'), 'r.yaml': rollout('base', 'base', ['all'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') }), 'c1');
    await rec.tick();
    await fleet.settle();
    await rec.tick(); // the ring is assigned: on to pause {}
    const pino = createPino({ level: 'silent' });
    const controller = new Controller({ store, source: createDirSource('/nonexistent'), reconciler: rec, log: logOf(pino) });
    controller.syncNow = async () => void syncs++;
    app = await buildApp({
      store,
      reconciler: rec,
      controller,
      drivers: createDrivers(),
      logger: pino,
      enrollers: new Map([
        [
          'windows',
          async ({ body, actor }) => {
            const ttlHours = ttlHoursOf(body);
            if (body.group === 'Not A Label') throw new EnrollRequestError('group "Not A Label" is not a label value');
            return { json: { actor, ttlHours, group: body.group ?? null } };
          },
        ],
      ]),
      verifyWebhook: (body, headers) => headers['x-hub-signature-256'] === 'sha256=' + createHmac('sha256', SECRET).update(body).digest('hex'),
    });
    for (const scope of ['read', 'operate', 'admin'] as const) tokens[scope] = (await store.tokens.create(`t-${scope}`, scope)).token;
  });
  afterAll(async () => {
    await app?.close();
    await tdb.cleanup();
  });

  const call = (method: 'GET' | 'POST', url: string, token?: string, payload?: unknown) =>
    app.inject({ method, url, headers: token ? { authorization: `Bearer ${token}` } : {}, ...(payload !== undefined ? { payload: payload as object } : {}) });

  it('refuses requests without a valid token (401) and with too small a scope (403)', async () => {
    expect((await call('GET', '/api/v1/rollouts')).statusCode).toBe(401);
    expect((await call('GET', '/api/v1/rollouts', 'mst_000000000000_' + 'x'.repeat(43))).statusCode).toBe(401);
    const r = await call('POST', '/api/v1/rollouts/base/promote', tokens.read);
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatch(/operate/);
  });

  it('hands enrollment to the platform that has it, and says how to enable one that is not', async () => {
    expect((await call('POST', '/api/v1/enroll/windows', tokens.read, {})).statusCode).toBe(403);
    const ok = await call('POST', '/api/v1/enroll/windows', tokens.operate, { group: 'pilot', ttlHours: 2 });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ actor: 't-operate', ttlHours: 2, group: 'pilot' });
    const bad = await call('POST', '/api/v1/enroll/windows', tokens.operate, { group: 'Not A Label' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatch(/not a label value/);
    expect((await call('POST', '/api/v1/enroll/windows', tokens.operate, { ttlHours: 0 })).json().error).toMatch(/ttlHours/);
    // A credential for an existing device replaces its identity: an admin's decision, as retire is.
    const forDevice = await call('POST', '/api/v1/enroll/windows', tokens.operate, { device: 'PC-1' });
    expect(forDevice.statusCode).toBe(403);
    expect(forDevice.json().error).toMatch(/scope admin/);
    expect((await call('POST', '/api/v1/enroll/windows', tokens.admin, { device: 'PC-1' })).statusCode).toBe(200);
    const apple = await call('POST', '/api/v1/enroll/apple', tokens.operate, {});
    expect(apple.statusCode).toBe(404);
    expect(apple.json().error).toMatch(/--apple-topic/);
    expect((await call('POST', '/api/v1/enroll/palm', tokens.operate, {})).json().error).toMatch(/no platform "palm"/);
  });

  it('lists rollouts and shows one with its steps', async () => {
    const list = (await call('GET', '/api/v1/rollouts', tokens.read)).json();
    expect(list).toEqual([expect.objectContaining({ name: 'base', phase: 'Paused', weight: 50 })]);
    const one = (await call('GET', '/api/v1/rollouts/base', tokens.read)).json();
    expect(one.steps).toHaveLength(3);
    expect((await call('GET', '/api/v1/rollouts/nope', tokens.read)).statusCode).toBe(404);
  });

  it('promotes with an operate token, records who did it, and refuses what makes no sense with 409', async () => {
    const r = await call('POST', '/api/v1/rollouts/base/promote', tokens.operate, { full: false });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ currentStep: 2, weight: 100 });
    const audit = await store.db.query<{ actor: string }>(`SELECT actor FROM audit_log WHERE action = 'rollout.promote'`);
    expect(audit.rows).toEqual([{ actor: 'token:t-operate' }]);
    const again = await call('POST', '/api/v1/rollouts/base/resume', tokens.operate, {});
    expect(again.statusCode).toBe(409);
    expect((await call('POST', '/api/v1/rollouts/base/explode', tokens.operate, {})).statusCode).toBe(404);
  });

  it('lists devices, filters by sync state, and shows one with its assignments and commands', async () => {
    const all = (await call('GET', '/api/v1/devices?limit=1000', tokens.read)).json();
    expect(all).toHaveLength(50);
    const synced = (await call('GET', '/api/v1/devices?sync=Synced&limit=1000', tokens.read)).json();
    expect(synced.length).toBeGreaterThan(0);
    expect(synced[0]).toMatchObject({ rollouts: ['base'] });
    expect((await call('GET', '/api/v1/devices?sync=Bogus', tokens.read)).statusCode).toBe(400);
    const one = (await call('GET', `/api/v1/devices/${synced[0].deviceId}`, tokens.read)).json();
    expect(one).toMatchObject({ sync: 'Synced', assignments: [expect.objectContaining({ rollout: 'base', sync: 'Synced' })], commands: [expect.objectContaining({ type: 'sim.InstallItem', state: 'completed' })] });
    expect((await call('GET', '/api/v1/devices/nope', tokens.read)).statusCode).toBe(404);
  });

  it('carries out admin actions with an operate token, audited, and refuses unsafe or unknown ones', async () => {
    const id = (await store.devices.list({ limit: 1 }))[0]!.id;
    expect((await call('POST', `/api/v1/devices/${id}/actions/lock`, tokens.read, {})).statusCode).toBe(403);
    const lock = await call('POST', `/api/v1/devices/${id}/actions/lock`, tokens.operate, { message: 'Return to IT' });
    expect(lock.statusCode).toBe(202);
    expect(lock.json()).toMatchObject({ deviceId: id, action: 'lock', commands: [expect.any(String)] });
    const wipe = await call('POST', `/api/v1/devices/${id}/actions/wipe`, tokens.operate, {});
    expect(wipe.statusCode).toBe(400);
    expect(wipe.json().error).toMatch(/cannot be undone/);
    expect((await call('POST', `/api/v1/devices/${id}/actions/explode`, tokens.operate, {})).statusCode).toBe(400);
    expect((await call('POST', `/api/v1/devices/${id}/actions/lock`, tokens.operate, { pin: '12ab' })).statusCode).toBe(400);
    expect((await call('POST', '/api/v1/devices/nope/actions/restart', tokens.operate, {})).statusCode).toBe(404);
    expect((await call('POST', `/api/v1/devices/${id}/actions/wipe`, tokens.operate, { confirm: id })).statusCode).toBe(202);
    await fleet.settle();
    expect(fleet.adminLog.filter((a) => a.deviceId === id).map((a) => a.kind)).toEqual(['lock', 'wipe']);
    const audit = await store.audit.list({ subject: `device/${id}` });
    expect(audit.map((a) => [a.action, a.actor])).toEqual([['device.lock', 'token:t-operate'], ['device.wipe', 'token:t-operate']]);
  });

  it('plans a posted tree against the running controller', async () => {
    const files = [
      { path: 'b.yaml', text: bundle('base', '2.0.0') },
      { path: 'g.yaml', text: group('all', '{}') },
      { path: 'r.yaml', text: rollout('base', 'base', ['all'], '    - setWeight: 10\n    - setWeight: 100') },
    ];
    const r = await call('POST', '/api/v1/plan', tokens.read, { files });
    expect(r.statusCode).toBe(200);
    expect(r.json().restarting).toEqual([expect.objectContaining({ rollout: 'base', firstStep: 'setWeight 10' })]);
    const bad = await call('POST', '/api/v1/plan', tokens.read, { files: [{ path: 'x.yaml', text: 'kind: Rollout\nspec: {}' }] });
    expect(bad.statusCode).toBe(422);
  });

  it('verifies the webhook signature: 401 and nothing happens on a bad one', async () => {
    const body = JSON.stringify({ ref: 'refs/heads/main', after: 'abc' });
    const bad = await app.inject({ method: 'POST', url: '/hooks/git', payload: body, headers: { 'content-type': 'application/json', 'x-hub-signature-256': 'sha256=' + '0'.repeat(64) } });
    expect(bad.statusCode).toBe(401);
    expect(syncs).toBe(0);
    const sig = 'sha256=' + createHmac('sha256', SECRET).update(body).digest('hex');
    const good = await app.inject({ method: 'POST', url: '/hooks/git', payload: body, headers: { 'content-type': 'application/json', 'x-hub-signature-256': sig } });
    expect(good.statusCode).toBe(202);
    expect(syncs).toBe(1);
  });

  it('serves health, readiness and Prometheus metrics', async () => {
    await rec.tick();
    await rec.tick(); // after the promotion: 100 % assigned, Healthy
    expect((await call('GET', '/healthz')).json()).toEqual({ status: 'ok' });
    expect((await call('GET', '/readyz')).statusCode).toBe(503); // the controller was never started here
    const m = (await call('GET', '/metrics')).body;
    expect(m).toMatch(/muster_rollout_phase\{rollout="base",phase="Healthy"\} 1/);
    expect(m).toMatch(/muster_devices 50/);
    expect(m).toMatch(/muster_commands\{state="completed"\} \d+/);
  });
});
