// Android as `muster serve` mounts it: the AMAPI client (quota-limited), the
// driver, the worker that makes the API calls, the Pub/Sub endpoint and the
// periodic devices.list repair — built from one configuration. Everything
// Android-specific stays behind this function.
import type { FastifyInstance } from 'fastify';
import type { PolicySet } from '../../controller/policy/resources.js';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import type { RolloutRevision, Store } from '../../controller/store/index.js';
import { Amapi, type AmapiOptions } from './client.js';
import { createAndroidDriver } from './driver.js';
import { configureNotifications, createEnrollmentToken, finishSignup, policyForNewDevice, startSignup, type EnrollmentTokenResult } from './enroll.js';
import { newPubsubStats, pubsubRoutes, type PubsubStats } from './pubsub.js';
import { syncAndroid, type SyncResult } from './sync.js';
import { AmapiWorker, type WorkerLog } from './worker.js';

export interface AndroidConfig extends AmapiOptions {
  /** enterprises/LC0… (from `muster enroll android --signup`). */
  enterprise: string;
  pubsub: {
    /** The audience of the push subscription's token: usually `${publicUrl}/android/pubsub`. */
    audience: string;
    /** The service account the push subscription authenticates as. */
    serviceAccountEmail: string;
    /** Default Google's JWKS. */
    jwksUrl?: string;
  };
  secret(name: string): string | undefined;
  log: WorkerLog & { error?(msg: string, f?: Record<string, unknown>): void };
  /** How often the worker looks for queued work when idle. Default 1 s. */
  workerIntervalMs?: number;
  /** How often devices.list repairs what notifications missed. Default 1 h; 0 turns it off. */
  syncIntervalMs?: number;
}

export interface AndroidMdm {
  driver: PlatformDriver;
  amapi: Amapi;
  worker: AmapiWorker;
  /** Counters of the Pub/Sub endpoint. */
  pubsubStats: PubsubStats;
  /** Mounts POST /android/pubsub. */
  register(app: FastifyInstance): Promise<void>;
  /** Starts the worker and the periodic sync (run them on the leader only: the quota limiter is per process). */
  start(): void;
  sync(): Promise<SyncResult>;
  /** An enrollment token; with `policySet` and `rollouts` the device starts on the policy its labels lead to. */
  enrollmentToken(o: { labels?: Record<string, string>; group?: string; oneTime?: boolean; durationMs?: number; allowPersonalUsage?: string; policySet?: PolicySet; rollouts?: readonly RolloutRevision[] }): Promise<EnrollmentTokenResult>;
  startSignup(o: { projectId: string; callbackUrl: string }): Promise<{ name: string; url: string }>;
  finishSignup(o: { projectId: string; signupUrlName: string; enterpriseToken: string; displayName?: string; pubsubTopic?: string }): Promise<{ name: string; displayName: string | null }>;
  configureNotifications(pubsubTopic: string): Promise<void>;
  close(): Promise<void>;
}

export const ENTERPRISE_NAME = /^enterprises\/[A-Za-z0-9_-]+$/;

export function createAndroidMdm(store: Store, c: AndroidConfig): AndroidMdm {
  if (!ENTERPRISE_NAME.test(c.enterprise)) throw new Error(`the Android enterprise must look like enterprises/LC0…, not "${c.enterprise}"`);
  if (!c.pubsub.serviceAccountEmail) throw new Error('Android needs the Pub/Sub push service account (--android-service-account)');
  if (!c.pubsub.audience) throw new Error('Android needs the Pub/Sub token audience (--android-pubsub-audience, usually the push URL)');
  const amapi = new Amapi(c);
  const worker = new AmapiWorker({ store, amapi, enterprise: c.enterprise, secret: c.secret, log: c.log });
  // Work is picked up by the worker's own loop; waking it just saves the wait.
  const driver = createAndroidDriver({ wake: async () => void worker.runOnce().catch(() => {}) });
  const pubsubStats = newPubsubStats();
  let syncTimer: NodeJS.Timeout | undefined;
  const sync = () => syncAndroid(store, amapi, { enterprise: c.enterprise, onPolicyDeleted: (id) => worker.forgetPolicy(id), log: c.log });
  return {
    driver,
    amapi,
    worker,
    pubsubStats,
    register: async (app) =>
      void (await app.register(pubsubRoutes, {
        store,
        enterprise: c.enterprise,
        audience: c.pubsub.audience,
        serviceAccountEmail: c.pubsub.serviceAccountEmail,
        ...(c.pubsub.jwksUrl ? { jwksUrl: c.pubsub.jwksUrl } : {}),
        log: c.log,
        stats: pubsubStats,
      })),
    start() {
      worker.start(c.workerIntervalMs ?? 1000);
      const every = c.syncIntervalMs ?? 3_600_000;
      if (every > 0) {
        syncTimer = setInterval(() => {
          sync().then(
            (r) => c.log.info('Android sync', { devices: r.devices, repaired: r.outcomes.stored, gone: r.gone.length, deletedPolicies: r.deletedPolicies.length }),
            (e: Error) => c.log.warn('Android sync failed', { error: e.message }),
          );
        }, every);
        syncTimer.unref();
      }
    },
    sync,
    enrollmentToken: (o) =>
      createEnrollmentToken(amapi, {
        enterprise: c.enterprise,
        secret: c.secret,
        ...(o.labels ? { labels: o.labels } : {}),
        ...(o.group ? { group: o.group } : {}),
        ...(o.oneTime !== undefined ? { oneTime: o.oneTime } : {}),
        ...(o.durationMs !== undefined ? { durationMs: o.durationMs } : {}),
        ...(o.allowPersonalUsage ? { allowPersonalUsage: o.allowPersonalUsage } : {}),
        ...(o.policySet && o.rollouts ? { policy: policyForNewDevice(o.policySet, o.rollouts, o.labels, o.group) } : {}),
      }),
    startSignup: (o) => startSignup(amapi, o),
    finishSignup: (o) => finishSignup(amapi, o),
    configureNotifications: (pubsubTopic) => configureNotifications(amapi, { enterprise: c.enterprise, pubsubTopic }),
    async close() {
      if (syncTimer) clearInterval(syncTimer);
      await worker.stop();
    },
  };
}

export { renderAndroid, renderAndroidJson, renderAndroidNotes } from './render.js';
export { qrForTerminal, qrToPng } from './enroll.js';
