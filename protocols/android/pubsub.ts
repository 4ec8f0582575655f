// POST /android/pubsub: Google Pub/Sub push deliveries of AMAPI notifications.
// The push carries an OIDC token Google signs: it is verified (issuer,
// audience, and the push service account when configured) before anything is
// read. The answer is 2xx only once the update is stored, so Pub/Sub
// redelivers whatever was not; a redelivered message (same messageId) or an
// older status report changes nothing.
import type { FastifyInstance } from 'fastify';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Store } from '../../controller/store/index.js';
import type { Device, Operation } from './client.js';
import { deviceIdOf, recordDeviceStatus } from './status.js';

export interface PubsubOptions {
  store: Store;
  enterprise: string;
  /** The audience the push subscription puts in its token (usually the endpoint URL). */
  audience: string;
  /** Google's JWKS (default https://www.googleapis.com/oauth2/v3/certs); tests point it at a local one. */
  jwksUrl?: string;
  /** When set, only tokens for this service account are accepted. */
  serviceAccountEmail?: string;
  log: { info(msg: string, f?: Record<string, unknown>): void; warn(msg: string, f?: Record<string, unknown>): void };
  /** Most recent message ids remembered for idempotency. Default 100,000. */
  rememberIds?: number;
}

const ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];

interface PushBody {
  message?: { data?: string; attributes?: Record<string, string>; messageId?: string; message_id?: string; publishTime?: string };
  subscription?: string;
}

export async function pubsubRoutes(app: FastifyInstance, o: PubsubOptions): Promise<void> {
  const jwks: JWTVerifyGetKey = createRemoteJWKSet(new URL(o.jwksUrl ?? 'https://www.googleapis.com/oauth2/v3/certs'));
  const seen = new Set<string>();
  const remember = (id: string) => {
    seen.add(id);
    if (seen.size > (o.rememberIds ?? 100_000)) seen.delete(seen.values().next().value!);
  };

  app.post<{ Body: PushBody }>('/android/pubsub', { bodyLimit: 4 * 1024 * 1024 }, async (req, reply) => {
    const token = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token) return reply.code(401).send({ error: 'a Pub/Sub OIDC token is required' });
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer: ISSUERS, audience: o.audience });
      if (o.serviceAccountEmail && (payload.email !== o.serviceAccountEmail || payload.email_verified !== true)) throw new Error(`token for ${String(payload.email)}, not ${o.serviceAccountEmail}`);
    } catch (e) {
      o.log.warn('Pub/Sub push refused: bad token', { error: (e as Error).message });
      return reply.code(403).send({ error: 'the token is not valid for this endpoint' });
    }
    const m = req.body?.message;
    const id = m?.messageId ?? m?.message_id;
    // Unreadable pushes are answered 2xx and logged: redelivering them would never help.
    if (!m || !id) return reply.code(204).send();
    if (seen.has(id)) return reply.code(204).send();
    const type = m.attributes?.notificationType ?? 'unknown';
    let data: unknown;
    try {
      data = m.data ? JSON.parse(Buffer.from(m.data, 'base64').toString('utf8')) : {};
    } catch {
      o.log.warn('Pub/Sub push with unreadable data', { messageId: id, type });
      remember(id);
      return reply.code(204).send();
    }
    // Store errors propagate (500): Pub/Sub will deliver the message again.
    switch (type) {
      case 'ENROLLMENT':
      case 'STATUS_REPORT': {
        const r = await recordDeviceStatus(o.store, data as Device, { enterprise: o.enterprise });
        if (r === 'ignored') o.log.warn('AMAPI notification for a device of another enterprise, or without a name', { messageId: id, type });
        break;
      }
      case 'COMMAND':
        await recordOperation(o.store, data as Operation);
        break;
      case 'test':
        o.log.info('Pub/Sub test notification received', { messageId: id });
        break;
      default:
        // USAGE_LOGS and anything new: acknowledged, not (yet) used.
        break;
    }
    remember(id);
    return reply.code(204).send();
  });
}

/** A COMMAND notification: the Operation of an issued command finished; its queue entry says so. */
export async function recordOperation(store: Store, op: Operation): Promise<void> {
  const name = op.name ?? '';
  const m = /^(enterprises\/[^/]+\/devices\/[^/]+)\/operations\/[^/]+$/.exec(name);
  if (!m || !op.done) return;
  const uuid = await findByResult(store, deviceIdOf(m[1]!), name);
  if (!uuid) return;
  await store.commands.report(uuid, op.error ? { status: 'failed', error: op.error.message ?? 'the command failed', result: { operation: name } } : { status: 'completed', result: { operation: name } });
}

/** The acknowledged command whose recorded result names this operation. */
async function findByResult(store: Store, deviceId: string, operation: string): Promise<string | undefined> {
  for (const c of await store.commands.listForDevice(deviceId, { limit: 100 })) {
    if (c.state !== 'acknowledged') continue;
    const rs = await store.commands.results(c.uuid);
    if (rs.some((r) => (r.result as { operation?: string } | null)?.operation === operation)) return c.uuid;
  }
  return undefined;
}
