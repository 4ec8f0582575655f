// The local AMAPI server with its simulated fleet, and Muster's side —
// createAndroidMdm (the client, worker, driver and Pub/Sub endpoint as `muster
// serve` builds them) on a real socket, with the simulator's push
// subscription pointed at it: what the Android tests and benchmark run on.
import Fastify, { type FastifyInstance } from 'fastify';
import type { Store } from '../../../controller/store/index.js';
import { createAndroidMdm, type AndroidMdm } from '../index.js';
import { PUBSUB_PATH } from '../pubsub.js';
import { AmapiSimulator, type AmapiSimulatorOptions } from './amapi-server.js';

export const PUSH_ACCOUNT = 'amapi-push@muster-sim.iam.gserviceaccount.com';
export const TOPIC = 'projects/muster-sim/topics/amapi';
export const AUDIENCE = `https://muster.test${PUBSUB_PATH}`;

export interface AndroidRig {
  sim: AmapiSimulator;
  app: FastifyInstance;
  mdm: AndroidMdm;
  enterprise: string;
  endpoint: string;
  logs: Array<{ level: string; msg: string; fields?: Record<string, unknown> }>;
  close(): Promise<void>;
}

export async function androidRig(store: Store, o: { sim?: AmapiSimulatorOptions; secrets?: Record<string, string>; rate?: { requests: number; windowMs: number } } = {}): Promise<AndroidRig> {
  const sim = await new AmapiSimulator(o.sim).start();
  const enterprise = sim.createEnterprise();
  const logs: AndroidRig['logs'] = [];
  const log = {
    info: (msg: string, fields?: Record<string, unknown>) => void logs.push({ level: 'info', msg, ...(fields ? { fields } : {}) }),
    warn: (msg: string, fields?: Record<string, unknown>) => void logs.push({ level: 'warn', msg, ...(fields ? { fields } : {}) }),
    error: (msg: string, fields?: Record<string, unknown>) => void logs.push({ level: 'error', msg, ...(fields ? { fields } : {}) }),
  };
  const app = Fastify();
  // In production the audience is the public push URL, not the address the server listens on.
  const mdm = createAndroidMdm(store, {
    enterprise,
    keyJson: sim.serviceAccountKey(),
    rootUrl: sim.url,
    pubsub: { audience: AUDIENCE, serviceAccountEmail: PUSH_ACCOUNT, jwksUrl: sim.jwksUrl },
    secret: (n) => o.secrets?.[n],
    log,
    ...(o.rate ? { rateLimit: o.rate } : {}),
    syncIntervalMs: 0,
  });
  await mdm.register(app);
  const endpoint = `${await app.listen({ port: 0, host: '127.0.0.1' })}${PUBSUB_PATH}`;
  sim.subscribe({ endpoint, audience: AUDIENCE, serviceAccountEmail: PUSH_ACCOUNT, topic: TOPIC, name: 'projects/muster-sim/subscriptions/muster' });
  await mdm.configureNotifications(TOPIC);
  return {
    sim,
    app,
    mdm,
    enterprise,
    endpoint,
    logs,
    async close() {
      await mdm.close();
      await sim.stop();
      await app.close();
    },
  };
}
