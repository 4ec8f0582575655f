// Android throughput, beside same-run baselines:
//  - Pub/Sub notifications: STATUS_REPORT pushes for 1,000 enrolled devices,
//    in Pub/Sub's real envelope with a signed OIDC token (reused, as Pub/Sub
//    reuses one), posted 50 at once to Muster's endpoint on the store
//    (PostgreSQL when DATABASE_URL is set): token verified, device, reported
//    items, posture and event stored before the 204. The baseline is the same
//    client against a bare node:http server that answers 204 unread.
//  - AMAPI calls per device per rollout step: a bundle rolled out to 2,000
//    devices at 10 %, 50 %, 100 % through the real reconciler and worker
//    against the local AMAPI server, counting every API call by method.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { PLATFORMS, type Platform } from '../controller/policy/types.js';
import { validatePolicyFiles } from '../controller/policy/validate.js';
import type { PlatformDriver } from '../controller/reconcile/driver.js';
import { Reconciler } from '../controller/reconcile/reconciler.js';
import { silentLogger } from '../controller/store/db.js';
import { randomKeyring } from '../controller/secrets/keys.js';
import { openStore, type Store } from '../controller/store/index.js';
import { PUBSUB_PATH } from '../protocols/android/pubsub.js';
import { androidRig, type AndroidRig } from '../protocols/android/simulator/rig.js';
import { createSimulatedDriver } from '../protocols/simulated/driver.js';
import { percentile, pool, type Benchmark, type BenchRow } from './harness.js';

const DEVICES = Number(process.env.BENCH_ANDROID_DEVICES ?? 1000);
const ROLLOUT_DEVICES = Number(process.env.BENCH_ANDROID_ROLLOUT_DEVICES ?? 2000);
const CONCURRENCY = 50;
const quiet = { info: () => {}, warn: () => {}, error: () => {} };


/** The test rig (simulated AMAPI and fleet, Muster's Android side on a socket) on a throwaway store, with no quota in the way. */
async function rig(): Promise<AndroidRig & { store: Store }> {
  const url = process.env.DATABASE_URL;
  const store = await openStore({ ...(url ? { databaseUrl: url, poolSize: 16 } : { dataDir: 'memory' }), schema: `muster_bench_${randomBytes(4).toString('hex')}`, logger: silentLogger, keys: randomKeyring() });
  const r = await androidRig(store, { sim: { applyDelayMs: 0 }, rate: { requests: 1_000_000, windowMs: 100_000 } });
  return {
    ...r,
    store,
    async close() {
      await r.close();
      await store.close();
    },
  };
}

async function notifications(): Promise<BenchRow[]> {
  const r = await rig();
  let bare: Server | undefined;
  try {
    const token = await r.mdm.enrollmentToken({ durationMs: 3_600_000 });
    const names = Array.from({ length: DEVICES }, (_, i) => r.sim.enroll(token.value, { id: `bench${String(i).padStart(8, '0')}`, serial: `B${i}`, model: 'Pixel 8' }));
    await r.sim.settle();
    const bearer = await r.sim.pusher.sign();
    const envelopes = names.map((n) => {
      const d = r.sim.device(n)!.resource;
      return r.sim.pusher.envelope('STATUS_REPORT', { ...d, lastStatusReportTime: new Date(Date.now() + 1000).toISOString() }).body;
    });
    const post = (url: string) => async (body: string) => {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` }, body });
      await res.arrayBuffer();
      if (res.status !== 204) throw new Error(`push answered ${res.status}`);
    };
    const storedBefore = r.mdm.pubsubStats.stored;
    const muster = await pool(envelopes, CONCURRENCY, post(r.endpoint));
    const stored = r.mdm.pubsubStats.stored - storedBefore;

    bare = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(204).end());
    });
    bare.listen(0, '127.0.0.1');
    await once(bare, 'listening');
    const floor = await pool(envelopes, CONCURRENCY, post(`http://127.0.0.1:${(bare.address() as AddressInfo).port}${PUBSUB_PATH}`));
    const rate = (ms: number) => DEVICES / (ms / 1000);
    return [
      {
        name: `Pub/Sub STATUS_REPORT pushes, ${DEVICES} devices, ${CONCURRENCY} at once (${r.store.backend})`,
        value: rate(muster.wallMs),
        unit: 'notifications/s',
        p50: percentile(muster.lat, 50),
        p99: percentile(muster.lat, 99),
        baseline: { name: 'bare node:http answering 204, same client', value: rate(floor.wallMs), unit: 'notifications/s' },
        extra: { stored, floorP50Ms: Math.round(percentile(floor.lat, 50) * 100) / 100, floorP99Ms: Math.round(percentile(floor.lat, 99) * 100) / 100 },
      },
    ];
  } finally {
    bare?.close();
    await r.close();
  }
}

const yaml = {
  bundle: `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: bench-android }
spec:
  version: "1.0.0"
  platforms: [android]
  settings:
    passcode: { required: true, minLength: 8, complexity: alphanumeric }
    restrictions: { allowCamera: false }
`,
  group: `apiVersion: muster.dev/v1alpha1
kind: DeviceGroup
metadata: { name: phones }
spec:
  selector: { matchLabels: { muster.dev/platform: android } }
`,
  rollout: `apiVersion: muster.dev/v1alpha1
kind: Rollout
metadata: { name: bench-android }
spec:
  bundle: bench-android
  groups: [phones]
  maxDevicesPerTick: 100000
  steps:
    - setWeight: 10
    - setWeight: 50
    - setWeight: 100
`,
};

async function rolloutCalls(): Promise<BenchRow[]> {
  const r = await rig();
  try {
    const drivers = new Map<Platform, PlatformDriver>(PLATFORMS.map((p) => [p, p === 'android' ? r.mdm.driver : createSimulatedDriver(p)]));
    const rec = new Reconciler({ store: r.store, drivers, log: quiet });
    await rec.load();
    const token = await r.mdm.enrollmentToken({ durationMs: 3_600_000 });
    for (let i = 0; i < ROLLOUT_DEVICES; i++) r.sim.enroll(token.value, { id: `roll${String(i).padStart(8, '0')}`, serial: `R${i}` });
    let cursor = 0;
    const converge = async () => {
      for (let round = 0; round < 50; round++) {
        await r.sim.settle();
        const events = await r.store.events.read(cursor, { topics: ['device.changed', 'device.reported'], limit: 100_000 });
        for (const e of events) {
          cursor = Math.max(cursor, e.id);
          const id = (e.payload as { deviceId: string }).deviceId;
          if (e.topic === 'device.changed') await rec.deviceChanged(id);
          else await rec.deviceReported(id);
        }
        const worked = await r.mdm.worker.drain();
        if (events.length === 0 && worked === 0) return;
      }
    };
    await converge();
    const v = validatePolicyFiles(Object.entries(yaml).map(([k, text]) => ({ path: `${k}.yaml`, text })));
    if (!v.ok) throw new Error(v.diagnostics.map((d) => d.message).join('; '));
    await rec.applyPolicy(v.policySet, 'bench');
    const before = r.sim.requests.length;
    const rows: BenchRow[] = [];
    let lastWeight = 0;
    let moved = 0;
    for (let t = 0; t < 40; t++) {
      const start = r.sim.requests.length;
      await rec.tick();
      await converge();
      const s = rec.rolloutStatuses().find((x) => x.name === 'bench-android')!;
      const calls = r.sim.requests.slice(start);
      const patches = calls.filter((q) => q.method === 'PATCH' && q.path.includes('/devices/')).length;
      if (patches > 0 || s.weight !== lastWeight) {
        moved += patches;
        const per = (n: number) => Math.round((n / Math.max(1, patches)) * 1000) / 1000;
        const policyPatches = calls.filter((q) => q.method === 'PATCH' && q.path.includes('/policies/')).length;
        rows.push({
          name: `AMAPI calls per device moved, step to ${s.weight} % of ${ROLLOUT_DEVICES}`,
          value: per(calls.length),
          unit: 'calls/device',
          baseline: { name: 'the floor: one devices.patch per device moved', value: 1, unit: 'calls/device' },
          extra: { devicesMoved: patches, calls: calls.length, policiesPatch: policyPatches, other: calls.length - patches - policyPatches },
        });
        lastWeight = s.weight;
      }
      if (s.phase === 'Healthy') break;
    }
    const all = r.sim.requests.slice(before);
    rows.push({ name: `AMAPI calls for the whole rollout to ${ROLLOUT_DEVICES} devices`, value: all.length, unit: 'calls', baseline: { name: 'devices', value: ROLLOUT_DEVICES, unit: 'devices' }, extra: { devicesPatch: moved, limiterCalls: r.mdm.amapi.limiter.calls, retries: r.mdm.amapi.limiter.retries } });
    return rows;
  } finally {
    await r.close();
  }
}

export const androidBenchmark: Benchmark = {
  name: 'android',
  description: `Pub/Sub notifications from ${DEVICES} devices vs a bare node:http server; AMAPI calls per device per rollout step over ${ROLLOUT_DEVICES} devices`,
  async run() {
    return [...(await notifications()), ...(await rolloutCalls())];
  },
};
