// POST /android/pubsub: Google Pub/Sub push deliveries of AMAPI notifications.
//
// Pub/Sub treats 102/200/201/202/204 as an acknowledgement and redelivers on
// anything else, at least once. So:
//   - the OIDC token Google signs is verified before the body is even read
//     (RS256, issuer accounts.google.com, the configured audience, the push
//     service account's email, verified); a bad one gets 401/403 — redelivery
//     is right there, the subscription is what has to change;
//   - a body that cannot be read is acknowledged (204) and logged: sending it
//     again would never help;
//   - 204 comes only once the update is stored; a store failure answers 503,
//     and Pub/Sub delivers the message again.
// Redeliveries change nothing: status.ts ignores a Device already stored and
// older reports, and command results are idempotent on the command UUID. The
// message-id set kept here only saves work; no replica depends on it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Store } from '../../controller/store/index.js';
import { recordDeviceStatus, recordOperation, recordUsageLogs } from './status.js';
import { decodeNotification, decodePush } from './wire.js';

export const PUBSUB_PATH = '/android/pubsub';
export const GOOGLE_JWKS_URL = 'https://www.googleapis.com/oauth2/v3/certs';
const ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];

export interface PubsubLog {
  info(msg: string, f?: Record<string, unknown>): void;
  warn(msg: string, f?: Record<string, unknown>): void;
  error?(msg: string, f?: Record<string, unknown>): void;
}

/** Counts per outcome, for metrics and benchmarks. */
export interface PubsubStats {
  received: number;
  stored: number;
  duplicate: number;
  stale: number;
  ignored: number;
  unreadable: number;
  refused: number;
  failed: number;
  /** COMMAND notifications that outran the worker (answered 503, delivered again). */
  retried: number;
}

export const newPubsubStats = (): PubsubStats => ({ received: 0, stored: 0, duplicate: 0, stale: 0, ignored: 0, unreadable: 0, refused: 0, failed: 0, retried: 0 });

export interface PubsubOptions {
  store: Store;
  /** enterprises/E: notifications about other enterprises are acknowledged and dropped. */
  enterprise: string;
  /** The audience the push subscription puts in its token (by default the push endpoint URL). */
  audience: string;
  /** The service account the push subscription signs as; tokens for any other account are refused. */
  serviceAccountEmail: string;
  /** Google's JWKS (default GOOGLE_JWKS_URL); tests point it at a local one. */
  jwksUrl?: string;
  /** Or the key set itself. */
  jwks?: JWTVerifyGetKey;
  log: PubsubLog;
  /** Push bodies larger than this are refused (413). Pub/Sub messages are at most 10 MB; default 16 MiB. */
  bodyLimit?: number;
  /** Message ids remembered in this process (an optimization only). Default 10,000. */
  rememberIds?: number;
  stats?: PubsubStats;
}

export async function pubsubRoutes(app: FastifyInstance, o: PubsubOptions): Promise<void> {
  if (!o.serviceAccountEmail) throw new Error('the Pub/Sub endpoint needs the push service account email: without it any Google-signed token for this audience would do');
  if (!o.audience) throw new Error('the Pub/Sub endpoint needs its token audience (usually the push URL)');
  const jwks = o.jwks ?? createRemoteJWKSet(new URL(o.jwksUrl ?? GOOGLE_JWKS_URL));
  const stats = o.stats ?? newPubsubStats();
  const limit = o.rememberIds ?? 10_000;
  const seen = new Set<string>();
  const remember = (id: string) => {
    seen.add(id);
    if (seen.size > limit) seen.delete(seen.values().next().value!);
  };
  const bodyLimit = o.bodyLimit ?? 16 * 1024 * 1024;

  // Bytes in, whatever the content type: a body that fails to parse must still be acknowledged, not 400'd.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));

  const authenticate = async (req: FastifyRequest, reply: FastifyReply) => {
    const token = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token) {
      stats.refused++;
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'a Pub/Sub OIDC token is required' });
    }
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer: ISSUERS, audience: o.audience, algorithms: ['RS256'], clockTolerance: 60 });
      if (payload.email !== o.serviceAccountEmail) throw new Error(`token for ${String(payload.email)}, not the push service account`);
      if (payload.email_verified !== true) throw new Error('the token email is not verified');
    } catch (e) {
      stats.refused++;
      o.log.warn('Pub/Sub push refused: bad token', { error: (e as Error).message });
      return reply.code(403).send({ error: 'the token is not valid for this endpoint' });
    }
  };

  app.post(PUBSUB_PATH, { bodyLimit, onRequest: authenticate }, async (req, reply) => {
    stats.received++;
    const env = decodePush(req.body as Buffer | undefined);
    if (!env.ok) {
      stats.unreadable++;
      o.log.warn('Pub/Sub push with an unreadable body: acknowledged and dropped', { reason: env.reason });
      return reply.code(204).send();
    }
    const { messageId, notificationType } = env.value;
    if (seen.has(messageId)) {
      stats.duplicate++;
      return reply.code(204).send();
    }
    const n = decodeNotification(env.value);
    if (!n.ok) {
      stats.unreadable++;
      o.log.warn('AMAPI notification that cannot be read: acknowledged and dropped', { messageId, type: notificationType, reason: n.reason });
      remember(messageId);
      return reply.code(204).send();
    }
    let outcome: string;
    try {
      const v = n.value;
      switch (v.type) {
        case 'ENROLLMENT':
        case 'STATUS_REPORT':
          outcome = await recordDeviceStatus(o.store, v.device, { enterprise: o.enterprise });
          break;
        case 'COMMAND':
          outcome = await recordOperation(o.store, v.operation, { enterprise: o.enterprise });
          if (outcome === 'retry') {
            // Ours, but the worker has not recorded it yet: come back in a moment.
            stats.retried++;
            return reply.code(503).send({ error: 'operation not on record yet; deliver again' });
          }
          break;
        case 'USAGE_LOGS':
          outcome = await recordUsageLogs(o.store, v.batch, { enterprise: o.enterprise });
          break;
        case 'test':
          o.log.info('Pub/Sub test notification received', { messageId });
          outcome = 'stored';
          break;
        default:
          // ENTERPRISE_UPGRADE and anything newer: acknowledged, not used.
          o.log.info('AMAPI notification of a kind Muster does not use', { messageId, type: v.notificationType });
          outcome = 'ignored';
      }
    } catch (e) {
      stats.failed++;
      (o.log.error ?? o.log.warn)('could not store an AMAPI notification; Pub/Sub will deliver it again', { messageId, type: notificationType, error: (e as Error).message });
      return reply.code(503).send({ error: 'not stored; deliver again' });
    }
    if (outcome === 'ignored') o.log.warn('AMAPI notification for nothing Muster manages (another enterprise, or an unknown device or operation)', { messageId, type: notificationType });
    stats[outcome as 'stored' | 'duplicate' | 'stale' | 'ignored']++;
    remember(messageId);
    return reply.code(204).send();
  });
}
