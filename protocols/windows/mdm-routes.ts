// The Windows OMA-DM endpoint as one fastify plugin: read the body raw,
// authenticate the certificate (it chains to the CA, is current, and is a
// known, unrevoked identity bound to a device), only then decode the SyncML,
// call the service (which checks the message names that same device), write
// the answer (application/vnd.syncml.dm+xml, never chunked). Nothing of the
// body is looked at for a client that is not a device of ours. An unreadable
// message is a 400 with a short reason; a refused certificate a 403 (see
// auth.ts for why not 401); nothing internal reaches the device.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { refuseUntrustedHeader } from '../pki/client-cert.js';
import { WindowsAuthError, authenticateWindowsDevice, type WindowsAuthOptions } from './auth.js';
import type { IdentifiedDevice, WindowsMdmLog, WindowsMdmService } from './mdm-service.js';
import { SYNCML_CONTENT_TYPE, SyncmlError, decodeClientMessage } from './syncml/wire.js';

export interface WindowsMdmRoutesOptions {
  service: WindowsMdmService;
  auth: WindowsAuthOptions;
  log: WindowsMdmLog;
  /** Largest message accepted. Default 1 MiB (Windows' own MaxMsgSize is far below). */
  maxBodyBytes?: number;
}

export const MDM_PATH = '/ManagementServer/MDM.svc';

export async function windowsMdmRoutes(app: FastifyInstance, o: WindowsMdmRoutesOptions): Promise<void> {
  const limit = o.maxBodyBytes ?? 1024 * 1024;
  // Encapsulated in this plugin: other routes keep their own parsers.
  for (const type of [SYNCML_CONTENT_TYPE, 'application/vnd.syncml.dm+wbxml', 'application/xml', 'text/xml']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: limit }, (_req, body, done) => done(null, body));
  }
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: limit }, (_req, body, done) => done(null, body));
  // A forged certificate header is refused before the body is read.
  if (o.auth.modes.includes('header')) app.addHook('onRequest', refuseUntrustedHeader({ header: o.auth.header ?? 'client-cert', trustedProxy: o.auth.trustedProxy, log: o.log }));

  const text = (reply: FastifyReply, code: number, body: string) => reply.code(code).header('content-type', 'text/plain; charset=utf-8').send(body);

  // What fastify refuses before the handler (too large) keeps its status with a short reason; a failure
  // inside is a bare 500 (the DM client retries at its next poll), its cause in the log only.
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err.statusCode !== undefined && err.statusCode < 500) {
      o.log.warn('OMA-DM request refused', { remote: req.ip, status: err.statusCode, error: err.message });
      return text(reply, err.statusCode, err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `the message is larger than ${limit} bytes` : 'bad request');
    }
    const fields = { remote: req.ip, error: err.message };
    if (o.log.error) o.log.error('OMA-DM request failed', fields);
    else o.log.warn('OMA-DM request failed', fields);
    return text(reply, 500, 'internal error');
  });

  // Who is asking is settled in onRequest, before fastify reads the body: a
  // client that is not one of our devices gets its 403 without the body being
  // buffered, let alone parsed.
  const devices = new WeakMap<FastifyRequest, IdentifiedDevice>();
  const identify = async (req: FastifyRequest, reply: FastifyReply) => {
    if (String(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/vnd.syncml.dm+wbxml')) {
      // Muster provisions devices for XML (DEFAULTENCODING); WBXML is not read.
      return text(reply, 415, 'WBXML is not supported: send application/vnd.syncml.dm+xml');
    }
    let cert;
    try {
      cert = authenticateWindowsDevice({ headers: req.headers, socket: req.raw.socket }, o.auth);
    } catch (e) {
      if (!(e instanceof WindowsAuthError)) throw e;
      o.log.warn('OMA-DM message without a valid device certificate', { remote: req.ip, reason: e.message });
      return text(reply, 403, 'device certificate not accepted');
    }
    const who = await o.service.identify(cert, { remote: req.ip });
    if ('status' in who) return text(reply, who.status, who.error);
    devices.set(req, who);
  };

  app.post(MDM_PATH, { bodyLimit: limit, onRequest: identify }, async (req: FastifyRequest, reply: FastifyReply) => {
    const who = devices.get(req);
    if (!who) throw new Error('OMA-DM handler reached without an identified device');
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    let msg;
    try {
      msg = decodeClientMessage(body, { maxBytes: limit });
    } catch (e) {
      if (!(e instanceof SyncmlError)) throw e;
      o.log.warn('unreadable OMA-DM message', { remote: req.ip, device: who.deviceId, error: e.message });
      return text(reply, 400, `unreadable SyncML: ${e.message}`);
    }
    const a = await o.service.handleFrom(who, msg);
    if (a.status !== 200) return text(reply, a.status, a.error);
    return reply.code(200).header('content-type', SYNCML_CONTENT_TYPE).send(a.body);
  });
}
