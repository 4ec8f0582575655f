// `muster serve`'s HTTP side: one fastify instance, each feature a plugin that
// receives what it needs. Protocol plugins (Apple, Windows, Android) mount
// here as they land.
//
// Input before authentication is bounded here and in each plugin: every
// route reads at most its own body limit (protocols set theirs per endpoint),
// a whole request must arrive within requestTimeout, an idle connection is
// closed, the unauthenticated enrollment endpoints and failed admin logins are
// rate limited per client (rate-limit.ts), and the admin API checks its token
// before the body is read. No device protocol long-polls today, so no route
// needs a longer timeout; a streaming route (server-sent events) would.
import { AdminActionError, parseAdminAction, runAdminAction, type AdminActionRequest } from '../actions/admin.js';
import { deviceCompliance } from '../compliance/device.js';
import { deviceLifecycle } from '../devices/lifecycle.js';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Registry, Gauge, collectDefaultMetrics } from 'prom-client';
import { validatePolicyFiles } from '../policy/validate.js';
import type { Platform } from '../policy/types.js';
import { RolloutActionError, type OperatorAction } from '../rollout/engine.js';
import type { PlatformDriver } from '../reconcile/driver.js';
import { planAgainstStore } from '../reconcile/plan-input.js';
import { UnknownRolloutError, type Reconciler } from '../reconcile/reconciler.js';
import type { Controller } from '../serve/controller.js';
import { scopeAllows, type ApiToken, type Store, type SyncState, type TokenScope } from '../store/index.js';
import { worstSync } from '../reconcile/sync.js';
import type { Pino } from './log.js';
import { DEFAULT_AUTH_FAILURES_PER_MINUTE, DEFAULT_ENROLL_RATE_PER_MINUTE, installRateLimits } from './rate-limit.js';

export interface AppOptions {
  store: Store;
  reconciler: Reconciler;
  controller: Controller;
  drivers: ReadonlyMap<Platform, PlatformDriver>;
  logger: Pino;
  /** Verifies a Git host webhook; undefined disables /hooks/git. */
  verifyWebhook?: (body: Buffer, headers: FastifyRequest['headers']) => boolean;
  /** Largest request body where a route sets no limit of its own, bytes. Default 1 MiB. */
  bodyLimit?: number;
  /** Largest POST /api/v1/plan body (a whole policy tree as JSON), bytes. Default 8 MiB. */
  planBodyLimit?: number;
  /** A whole request (headers and body) must arrive within this, ms; then 408 and the connection closes. Default 60 s. */
  requestTimeoutMs?: number;
  /** A connection with nothing sent or received for this long is closed, ms. Default 120 s. */
  connectionTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this, ms. Default 72 s (longer than the 60 s idle timeout of common load balancers). */
  keepAliveTimeoutMs?: number;
  /** Unauthenticated enrollment requests per minute from one client address (0: no limit). Default 600. */
  enrollRatePerMinute?: number;
  /** Failed admin API authentications per minute from one client address before the answer is 429 (0: no limit). Default 30. */
  authFailuresPerMinute?: number;
  /** Protocol endpoint plugins (Apple, Windows, Android), each registered in its own scope. */
  protocols?: ReadonlyArray<(app: FastifyInstance) => Promise<void>>;
  /**
   * Serve HTTPS with this certificate. Clients are asked for a certificate
   * but not required to give one, and it is not judged here: the protocols
   * that authenticate devices by it check it against their own CA.
   */
  https?: { cert: string; key: string };
  /** Enrollment per platform (`POST /api/v1/enroll/PLATFORM`): profiles, credentials, tokens. */
  enrollers?: ReadonlyMap<Platform, Enroller>;
  /** TCP peers whose X-Forwarded-For is believed for req.ip (`--trusted-proxy`); none by default. */
  trustProxy?: (address: string) => boolean;
}

/** What `POST /api/v1/enroll/PLATFORM` hands a protocol: the JSON body, the query, and who asked. */
export interface EnrollRequest {
  body: Record<string, unknown>;
  query: Record<string, string | undefined>;
  /** The token's name, for notes and audit. */
  actor: string;
}
/** JSON for the caller, or a file to download (an enrollment profile). */
export type EnrollAnswer = { json: unknown } | { file: { bytes: Buffer; contentType: string; filename: string } };
export type Enroller = (r: EnrollRequest) => Promise<EnrollAnswer>;

/** A request an enroller refuses (answered 400 with the message). */
export class EnrollRequestError extends Error {
  override name = 'EnrollRequestError';
}

/** `ttlHours` from an enrollment request: hours, more than 0 and at most maxHours (default 24). */
export function ttlHoursOf(body: Record<string, unknown>, maxHours = 24 * 30, defaultHours = 24): number {
  const v = body.ttlHours ?? defaultHours;
  if (typeof v !== 'number' || !(v > 0 && v <= maxHours)) throw new EnrollRequestError(`ttlHours must be a number of hours above 0 and at most ${maxHours}`);
  return v;
}

declare module 'fastify' {
  interface FastifyRequest {
    token?: ApiToken;
  }
}

/** Body limits of the routes defined here, bytes. */
const ADMIN_BODY_LIMIT = 64 * 1024;
// GitHub push payloads are tens of KiB; a larger one is refused (413) and the periodic fetch still applies the commit.
const WEBHOOK_BODY_LIMIT = 1024 * 1024;

type AuthFailed = (req: FastifyRequest, reply: FastifyReply) => Promise<boolean>;

export async function buildApp(o: AppOptions): Promise<FastifyInstance> {
  const https = o.https ? { https: { ...o.https, requestCert: true, rejectUnauthorized: false } } : {};
  const trustProxy = o.trustProxy ? { trustProxy: o.trustProxy } : {};
  const app = Fastify({
    ...https,
    ...trustProxy,
    loggerInstance: o.logger as unknown as FastifyBaseLogger,
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    requestTimeout: o.requestTimeoutMs ?? 60_000,
    connectionTimeout: o.connectionTimeoutMs ?? 120_000,
    keepAliveTimeout: o.keepAliveTimeoutMs ?? 72_000,
    logController: new LogController({ disableRequestLogging: true }),
  }) as unknown as FastifyInstance;
  // Plugins without an error handler of their own answer {error} with a short reason; a 500 never carries the cause.
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) {
      req.log.error({ url: req.url, error: err.message }, 'request failed');
      return reply.code(500).send({ error: 'internal error' });
    }
    return reply.code(status).send({ error: err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `the request body is larger than ${req.routeOptions.bodyLimit} bytes` : err.message });
  });
  // Once the server is closing, an answer still in flight ends its connection. Left open, that keep-alive
  // connection holds close() until its idle timeout (seen with the connection timeout set: Pub/Sub pushes
  // answered during shutdown kept `muster serve` from exiting for over a minute).
  let closing = false;
  app.addHook('preClose', async () => void (closing = true));
  app.addHook('onSend', async (_req, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });
  const limits = await installRateLimits(app, { enrollPerMinute: o.enrollRatePerMinute ?? DEFAULT_ENROLL_RATE_PER_MINUTE, authFailuresPerMinute: o.authFailuresPerMinute ?? DEFAULT_AUTH_FAILURES_PER_MINUTE });
  await app.register(operationsRoutes, o);
  await app.register(webhookRoutes, o);
  await app.register(adminRoutes, { ...o, authFailed: limits.authFailed, prefix: '/api/v1' } as AppOptions & { authFailed: AuthFailed; prefix: string });
  for (const register of o.protocols ?? []) await app.register(async (scope) => register(scope));
  return app;
}

/** The last value of `load` for `ms`, one call in flight at a time: an endpoint anyone may call costs one query per period. */
function cached<T>(load: () => Promise<T>, ms: number): () => Promise<T> {
  let at = -Infinity;
  let value: Promise<T> | undefined;
  return () => {
    if (!value || performance.now() - at > ms) {
      at = performance.now();
      const p = load();
      value = p;
      // A failed read is not kept: the next scrape tries again.
      p.catch(() => {
        if (value === p) value = undefined;
      });
    }
    return value;
  };
}

async function operationsRoutes(app: FastifyInstance, o: AppOptions): Promise<void> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'muster_process_' });
  const phases = ['Progressing', 'Paused', 'Healthy', 'Degraded'] as const;
  new Gauge({
    name: 'muster_rollout_phase',
    help: 'Rollout phase (1 for the phase it is in)',
    labelNames: ['rollout', 'phase'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of o.reconciler.rolloutStatuses()) if (!r.deleted) for (const p of phases) this.set({ rollout: r.name, phase: p }, r.phase === p ? 1 : 0);
    },
  });
  new Gauge({
    name: 'muster_rollout_weight_percent',
    help: 'Canary weight in force',
    labelNames: ['rollout'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of o.reconciler.rolloutStatuses()) if (!r.deleted) this.set({ rollout: r.name }, r.aborted ? 0 : r.weight);
    },
  });
  new Gauge({
    name: 'muster_rollout_devices',
    help: 'Devices per rollout by bundle role and sync state',
    labelNames: ['rollout', 'role', 'sync'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of o.reconciler.rolloutStatuses()) {
        for (const [k, n] of Object.entries(r.counts)) {
          const [role, sync] = k.split('.');
          if (sync) this.set({ rollout: r.name, role: role!, sync }, n);
        }
      }
    },
  });
  new Gauge({ name: 'muster_devices', help: 'Enrolled devices', registers: [registry], collect() { this.set(o.reconciler.deviceCount()); } });
  // /metrics answers anyone: the command counts (a scan of the queue) are read at most every few seconds.
  const commandCounts = cached(() => o.store.commands.countByState(), 5_000);
  new Gauge({
    name: 'muster_commands',
    help: 'Commands by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      for (const [state, n] of Object.entries(await commandCounts())) this.set({ state }, n);
    },
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (!o.controller.ready) return reply.code(503).send({ status: 'starting' });
    await o.store.db.query('SELECT 1');
    return { status: 'ready' };
  });
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
}

async function webhookRoutes(app: FastifyInstance, o: AppOptions): Promise<void> {
  // The signature is over the exact bytes: keep the body raw in this plugin.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/hooks/git', { bodyLimit: WEBHOOK_BODY_LIMIT }, async (req, reply) => {
    if (!o.verifyWebhook) return reply.code(404).send({ error: 'webhooks are not configured (set MUSTER_WEBHOOK_SECRET)' });
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (!o.verifyWebhook(body, req.headers)) {
      req.log.warn({ remote: req.ip }, 'webhook refused: bad signature');
      return reply.code(401).send({ error: 'bad signature' });
    }
    // Answer at once; the fetch runs behind it and its outcome is logged and reported.
    void o.controller.syncNow().catch((e: Error) => req.log.error({ error: e.message }, 'sync after webhook failed'));
    return reply.code(202).send({ status: 'sync started' });
  });
}

// An onRequest hook: the token is checked before the body is read.
const auth =
  (o: AppOptions & { authFailed: AuthFailed }, need: TokenScope) =>
  async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    const token = m ? await o.store.tokens.authenticate(m[1]!) : undefined;
    if (!token) {
      if (await o.authFailed(req, reply)) {
        req.log.warn({ remote: req.ip }, 'admin API: too many failed authentications');
        await reply.code(429).send({ error: 'too many failed authentications from this address; try again later' });
        return;
      }
      await reply.code(401).header('www-authenticate', 'Bearer realm="muster"').send({ error: 'a valid bearer token is required (muster token create)' });
      return;
    }
    if (!scopeAllows(token.scope, need)) {
      await reply.code(403).send({ error: `this needs a token with scope ${need} or higher; this one has ${token.scope}` });
      return;
    }
    req.token = token;
  };

async function adminRoutes(app: FastifyInstance, o: AppOptions & { authFailed: AuthFailed }): Promise<void> {
  const read = { onRequest: auth(o, 'read'), bodyLimit: ADMIN_BODY_LIMIT };
  const operate = { onRequest: auth(o, 'operate'), bodyLimit: ADMIN_BODY_LIMIT };
  const admin = { onRequest: auth(o, 'admin'), bodyLimit: ADMIN_BODY_LIMIT };

  app.get('/status', read, async () => ({ ...(await o.controller.status()), devices: o.reconciler.deviceCount(), rollouts: o.reconciler.rolloutStatuses().map(rolloutJson) }));
  app.get('/rollouts', read, async () => o.reconciler.rolloutStatuses().filter((r) => !r.deleted).map(rolloutJson));
  app.get<{ Params: { name: string } }>('/rollouts/:name', read, async (req, reply) => {
    const r = o.reconciler.rolloutStatuses().find((x) => x.name === req.params.name);
    if (!r) return reply.code(404).send({ error: `no rollout named "${req.params.name}"` });
    const spec = o.reconciler.policySet?.rollouts.get(r.name)?.resource.spec;
    return { ...rolloutJson(r), steps: spec?.steps ?? [] };
  });
  app.post<{ Params: { name: string; action: string }; Body: { full?: boolean } | undefined }>('/rollouts/:name/:action', operate, async (req, reply) => {
    const verb = req.params.action;
    if (!['promote', 'pause', 'resume', 'abort'].includes(verb)) return reply.code(404).send({ error: `unknown action "${verb}" (promote, pause, resume, abort)` });
    const action = (verb === 'promote' && req.body?.full ? 'promote-full' : verb) as OperatorAction;
    try {
      const r = await o.reconciler.act(req.params.name, action, `token:${req.token!.name}`);
      req.log.info({ rollout: r.name, action, actor: req.token!.name }, `rollout ${r.name}: ${action} by ${req.token!.name}`);
      return rolloutJson(r);
    } catch (e) {
      if (e instanceof UnknownRolloutError) return reply.code(404).send({ error: e.message });
      if (e instanceof RolloutActionError) return reply.code(409).send({ error: e.message });
      throw e;
    }
  });
  app.get<{ Querystring: { sync?: string; platform?: string; after?: string; limit?: string } }>('/devices', read, async (req, reply) => {
    const limit = Math.min(Math.max(Number(req.query.limit ?? 100) || 100, 1), 1000);
    const after = req.query.after;
    if (req.query.sync) {
      if (!['Synced', 'OutOfSync', 'Pending', 'Failed'].includes(req.query.sync)) return reply.code(400).send({ error: 'sync must be Synced, OutOfSync, Pending or Failed' });
      return o.store.assignments.devicesInState(req.query.sync as SyncState, { limit, ...(after ? { afterDeviceId: after } : {}) });
    }
    const platform = req.query.platform as Platform | undefined;
    const list = await o.store.devices.list({ limit, ...(after ? { afterId: after } : {}), ...(platform ? { platform } : {}) });
    return list.map((d) => ({ id: d.id, platform: d.platform, serialNumber: d.serialNumber, model: d.model, osVersion: d.osVersion, labels: d.labels, lastSeenAt: d.lastSeenAt }));
  });
  app.get<{ Params: { id: string } }>('/devices/:id', read, async (req, reply) => {
    const d = await o.store.devices.get(req.params.id);
    if (!d) return reply.code(404).send({ error: `no device "${req.params.id}"` });
    const assignments = await o.store.assignments.forDevice(d.id);
    const commands = await o.store.commands.listForDevice(d.id, { limit: 20 });
    return {
      device: d,
      sync: worstSync(assignments.map((a) => a.sync)),
      assignments: assignments.map((a) => ({ rollout: a.rollout, revision: a.revision, bundleHash: a.bundleHash, bucket: a.bucket, sync: a.sync, detail: a.syncDetail, assignedAt: a.assignedAt })),
      compliance: await deviceCompliance(o.store, d.id),
      reported: await o.store.devices.reported(d.id),
      commands: commands.map((c) => ({ uuid: c.uuid, type: c.type, state: c.state, attempts: c.attempts, lastError: c.lastError, createdAt: c.createdAt, finishedAt: c.finishedAt })),
    };
  });
  app.post<{ Params: { id: string; action: string }; Body: AdminActionRequest | undefined }>('/devices/:id/actions/:action', operate, async (req, reply) => {
    try {
      const action = parseAdminAction(req.params.action, req.params.id, req.body ?? {});
      const r = await runAdminAction(o.store, o.drivers, req.params.id, action, `token:${req.token!.name}`);
      return reply.code(202).send(r);
    } catch (e) {
      if (e instanceof AdminActionError) return reply.code(e.status).send({ error: e.message });
      throw e;
    }
  });
  // Retiring ends management and frees the device id for a new enrollment: an admin's decision, repeated as confirm.
  app.post<{ Params: { id: string }; Body: { confirm?: unknown; note?: unknown } | undefined }>('/devices/:id/retire', admin, async (req, reply) => {
    const id = req.params.id;
    if (req.body?.confirm !== id) return reply.code(400).send({ error: `retiring a device ends its management: repeat its id as "confirm" (muster devices retire ${id} --yes)` });
    const note = req.body?.note;
    if (note !== undefined && (typeof note !== 'string' || note.length > 200)) return reply.code(400).send({ error: 'note must be text of at most 200 characters' });
    const r = await deviceLifecycle(o.store).retire(id, `token:${req.token!.name}`, note as string | undefined);
    if (!r) return reply.code(404).send({ error: `no device "${id}"` });
    req.log.info({ device: id, actor: req.token!.name }, `device ${id} retired by ${req.token!.name}`);
    return { deviceId: id, retired: true, revokedIdentities: r.revoked, clearedCommands: r.cleared };
  });
  app.post<{ Params: { platform: string }; Body: Record<string, unknown> | undefined; Querystring: Record<string, string | undefined> }>('/enroll/:platform', operate, async (req, reply) => {
    const platform = req.params.platform as Platform;
    const enroller = o.enrollers?.get(platform);
    if (!enroller) {
      const flag = { apple: '--apple-topic', windows: '--windows', android: '--android-enterprise' }[platform as string];
      return reply.code(404).send({ error: flag ? `${platform} enrollment is not enabled on this server (muster serve ${flag} …)` : `no platform "${platform}" (apple, windows, android)` });
    }
    const body = req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? req.body : {};
    // A credential for one device replaces its identity and hands its bundles to whoever holds it: as strong as retire.
    if (body.device !== undefined && !scopeAllows(req.token!.scope, 'admin')) return reply.code(403).send({ error: 'a credential for an existing device (device) needs a token of scope admin' });
    try {
      const answer = await enroller({ body, query: req.query ?? {}, actor: req.token!.name });
      if ('json' in answer) return answer.json;
      return reply.type(answer.file.contentType).header('content-disposition', `attachment; filename="${answer.file.filename}"`).send(answer.file.bytes);
    } catch (e) {
      if (e instanceof EnrollRequestError) return reply.code(400).send({ error: e.message });
      throw e;
    }
  });
  app.post<{ Body: { files?: Array<{ path: string; text: string }> } }>('/plan', { ...read, bodyLimit: o.planBodyLimit ?? 8 * 1024 * 1024 }, async (req, reply) => {
    const files = req.body?.files;
    if (!Array.isArray(files) || files.some((f) => typeof f?.path !== 'string' || typeof f?.text !== 'string')) {
      return reply.code(400).send({ error: 'body must be {"files": [{"path", "text"}]}' });
    }
    const v = validatePolicyFiles(files);
    if (!v.ok) return reply.code(422).send({ error: 'the policy is invalid', diagnostics: v.diagnostics });
    return planAgainstStore(o.store, v.policySet, o.drivers, 'the running controller');
  });
}

function rolloutJson(r: ReturnType<Reconciler['rolloutStatuses']>[number]) {
  return {
    name: r.name,
    revision: r.revision,
    phase: r.phase,
    currentStep: r.currentStep,
    weight: r.aborted ? 0 : r.weight,
    paused: r.paused,
    aborted: r.aborted,
    message: r.message,
    stableHash: r.stableHash,
    canaryHash: r.canaryHash,
    counts: r.counts,
    conditions: r.conditions,
    observedGeneration: r.observedGeneration,
    stepStartedAt: r.stepStartedAt.toISOString(),
    deleted: r.deleted,
  };
}
