// Android as `muster serve` mounts it: the AMAPI client (quota-limited), the
// driver, the worker that makes the API calls, the Pub/Sub endpoint and the
// periodic devices.list repair — built from one configuration.
import type { FastifyInstance } from 'fastify';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import type { Store } from '../../controller/store/index.js';
import { Amapi, type AmapiOptions } from './client.js';
import { createAndroidDriver } from './driver.js';
import { createEnrollmentToken, type EnrollmentTokenResult } from './enroll.js';
import { pubsubRoutes } from './pubsub.js';
import { syncAndroid, type SyncResult } from './sync.js';
import { AmapiWorker, type WorkerLog } from './worker.js';

export interface AndroidConfig extends AmapiOptions {
  /** enterprises/LC0… (from `muster enroll android --signup`). */
  enterprise: string;
  pubsub: { audience: string; jwksUrl?: string; serviceAccountEmail?: string };
  secret(name: string): string | undefined;
  log: WorkerLog;
  /** How often the worker looks for queued work when idle. Default 1 s. */
  workerIntervalMs?: number;
}

export interface AndroidMdm {
  driver: PlatformDriver;
  amapi: Amapi;
  worker: AmapiWorker;
  register(app: FastifyInstance): Promise<void>;
  start(): void;
  sync(): Promise<SyncResult>;
  enrollmentToken(o: { group?: string; oneTime?: boolean; durationMs?: number }): Promise<EnrollmentTokenResult>;
  close(): Promise<void>;
}

export function createAndroidMdm(store: Store, c: AndroidConfig): AndroidMdm {
  if (!/^enterprises\/[A-Za-z0-9_-]+$/.test(c.enterprise)) throw new Error(`the Android enterprise must look like enterprises/LC0…, not "${c.enterprise}"`);
  const amapi = new Amapi(c);
  const worker = new AmapiWorker({ store, amapi, enterprise: c.enterprise, secret: c.secret, log: c.log });
  // Work is picked up by the worker's own loop; waking it just saves the wait.
  const driver = createAndroidDriver({ wake: async () => void worker.runOnce().catch(() => {}) });
  return {
    driver,
    amapi,
    worker,
    register: async (app) => void (await app.register(pubsubRoutes, { store, enterprise: c.enterprise, audience: c.pubsub.audience, ...(c.pubsub.jwksUrl ? { jwksUrl: c.pubsub.jwksUrl } : {}), ...(c.pubsub.serviceAccountEmail ? { serviceAccountEmail: c.pubsub.serviceAccountEmail } : {}), log: c.log })),
    start: () => worker.start(c.workerIntervalMs ?? 1000),
    sync: () => syncAndroid(store, amapi, { enterprise: c.enterprise, keepPolicies: () => worker.ensuredPolicies }),
    enrollmentToken: (o) => createEnrollmentToken(amapi, { enterprise: c.enterprise, ...o }),
    close: () => worker.stop(),
  };
}
