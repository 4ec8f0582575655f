// The Apple device endpoints as one fastify plugin: parse, authenticate, call
// the service, write the answer. PUT /mdm/apple/checkin takes check-in
// messages; PUT /mdm/apple/connect (the ServerURL) takes command reports, and
// check-ins too when the device sends them there with the check-in content
// type. Never a 401 (it unenrolls the device), and never a 400 to a command
// report (the device would resend it forever): an unreadable report gets an
// empty 200 and a log line.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { refuseUntrustedHeader } from '../pki/client-cert.js';
import { DeviceAuthError, authenticateDevice, type DeviceAuthOptions } from './auth.js';
import { decodePlist, encodePlist } from './plist.js';
import type { AppleLog, AppleService } from './service.js';
import { WireError, parseCheckin, parseReport } from './wire.js';

export interface AppleRoutesOptions {
  service: AppleService;
  auth: DeviceAuthOptions;
  log: AppleLog;
  /** Largest check-in or report accepted (InstalledApplicationList can be large). Default 8 MiB. */
  maxBodyBytes?: number;
}

const CHECKIN_TYPE = 'application/x-apple-aspen-mdm-checkin';
const PLIST_TYPE = 'application/xml; charset=UTF-8';

export async function appleRoutes(app: FastifyInstance, o: AppleRoutesOptions): Promise<void> {
  const limit = o.maxBodyBytes ?? 8 * 1024 * 1024;
  // Bodies stay raw: Mdm-Signature is over the exact bytes.
  for (const type of [CHECKIN_TYPE, 'application/x-apple-aspen-mdm', 'application/xml', 'text/xml', 'application/octet-stream']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: limit }, (_req, body, done) => done(null, body));
  }
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: limit }, (_req, body, done) => done(null, body));
  // A forged certificate header is refused before the body is read, whatever the body would have been.
  if (o.auth.modes.includes('header')) app.addHook('onRequest', refuseUntrustedHeader({ header: o.auth.header ?? 'client-cert', trustedProxy: o.auth.trustedProxy, log: o.log }));

  const identify = (req: FastifyRequest, body: Buffer) => {
    try {
      return authenticateDevice({ headers: req.headers, body, socket: req.raw.socket }, o.auth);
    } catch (e) {
      if (e instanceof DeviceAuthError) return e;
      throw e;
    }
  };

  const checkin = async (req: FastifyRequest, reply: FastifyReply, body: Buffer) => {
    let msg;
    try {
      msg = parseCheckin(decodePlist(body));
    } catch (e) {
      o.log.warn('unreadable check-in', { remote: req.ip, error: (e as Error).message });
      return reply.code(400).type('text/plain').send(e instanceof WireError ? e.message : 'not a check-in plist');
    }
    const id = identify(req, body);
    if (id instanceof DeviceAuthError) {
      o.log.warn('check-in without a valid device certificate', { udid: msg.udid, type: msg.type, reason: id.message });
      return reply.code(403).type('text/plain').send('device certificate not accepted');
    }
    const a = await o.service.checkin(msg, id);
    if (a.status !== 200) return reply.code(a.status).type('text/plain').send(a.error);
    if ('json' in a) return reply.code(200).type('application/json').send(JSON.stringify(a.json));
    return a.body ? reply.code(200).type(PLIST_TYPE).send(encodePlist(a.body)) : reply.code(200).send('');
  };

  app.put('/mdm/apple/checkin', async (req, reply) => checkin(req, reply, bodyOf(req)));

  app.put('/mdm/apple/connect', async (req, reply) => {
    const body = bodyOf(req);
    if (String(req.headers['content-type'] ?? '').startsWith(CHECKIN_TYPE)) return checkin(req, reply, body);
    let report;
    try {
      report = parseReport(decodePlist(body));
    } catch (e) {
      o.log.warn('unreadable command report; answered with nothing', { remote: req.ip, error: (e as Error).message });
      return reply.code(200).send('');
    }
    const id = identify(req, body);
    if (id instanceof DeviceAuthError) {
      o.log.warn('command report without a valid device certificate', { udid: report.udid, reason: id.message });
      return reply.code(403).type('text/plain').send('device certificate not accepted');
    }
    const a = await o.service.connect(report, id);
    if (a.status !== 200) return reply.code(a.status).type('text/plain').send(a.error);
    return a.command ? reply.code(200).type(PLIST_TYPE).send(encodePlist(a.command)) : reply.code(200).send('');
  });
}

const bodyOf = (req: FastifyRequest): Buffer => (Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
