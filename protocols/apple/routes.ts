// The Apple device endpoints as one fastify plugin: parse, authenticate, call
// the service, write the answer. PUT /mdm/apple/checkin takes check-in
// messages; PUT /mdm/apple/connect (the ServerURL) takes command reports, and
// check-ins too when the device sends them there with the check-in content
// type. Never a 401 (it unenrolls the device), and never a 400 to a command
// report (the device would resend it forever): an unreadable report gets an
// empty 200 and a log line.
//
// Before authentication a body costs little: check-ins are small and read
// with a small limit (the plist reader is linear and bounded); a report may
// be large (InstalledApplicationList), so its signer or certificate is
// checked before the plist is read. A body over its limit is a 413 with a
// short text (the device tries again later).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { refuseUntrustedHeader } from '../pki/client-cert.js';
import { DeviceAuthError, authenticateDevice, type DeviceAuthOptions } from './auth.js';
import { decodePlist, encodePlist } from './plist.js';
import type { AppleLog, AppleService } from './service.js';
import { WireError, parseCheckin, parseReport } from './wire.js';

export interface AppleRoutesOptions {
  service: AppleService;
  auth: DeviceAuthOptions;
  log: AppleLog;
  /** Largest check-in accepted, bytes. Default 256 KiB. */
  maxCheckinBytes?: number;
  /** Largest command report accepted, bytes (InstalledApplicationList of a full Mac, CertificateList …). Default 8 MiB. */
  maxReportBytes?: number;
}

/**
 * A check-in is a few KiB (Authenticate, TokenUpdate with its UnlockToken,
 * a bootstrap token, a Declarative Management status report); 256 KiB leaves
 * a wide margin and keeps what is read before authentication small.
 */
export const DEFAULT_MAX_CHECKIN_BYTES = 256 * 1024;
export const DEFAULT_MAX_REPORT_BYTES = 8 * 1024 * 1024;

const CHECKIN_TYPE = 'application/x-apple-aspen-mdm-checkin';
const PLIST_TYPE = 'application/xml; charset=UTF-8';

export async function appleRoutes(app: FastifyInstance, o: AppleRoutesOptions): Promise<void> {
  const checkinLimit = o.maxCheckinBytes ?? DEFAULT_MAX_CHECKIN_BYTES;
  const reportLimit = o.maxReportBytes ?? DEFAULT_MAX_REPORT_BYTES;
  // Bodies stay raw: Mdm-Signature is over the exact bytes. Each route sets its own limit.
  for (const type of [CHECKIN_TYPE, 'application/x-apple-aspen-mdm', 'application/xml', 'text/xml', 'application/octet-stream']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: reportLimit }, (_req, body, done) => done(null, body));
  }
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: reportLimit }, (_req, body, done) => done(null, body));
  // A forged certificate header is refused before the body is read, whatever the body would have been.
  if (o.auth.modes.includes('header')) app.addHook('onRequest', refuseUntrustedHeader({ header: o.auth.header ?? 'client-cert', trustedProxy: o.auth.trustedProxy, log: o.log }));

  const tooLarge = (reply: FastifyReply, limit: number) => reply.code(413).type('text/plain').send(`the message is larger than ${limit} bytes`);
  // What fastify refuses before a handler runs gets a short text with its status; never a 401, never a stack.
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      o.log.warn('Apple MDM request over its size limit', { remote: req.ip, url: req.url });
      return tooLarge(reply, req.routeOptions.bodyLimit ?? reportLimit);
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 && err.statusCode !== 401) return reply.code(err.statusCode).type('text/plain').send('bad request');
    o.log.warn('Apple MDM request failed', { remote: req.ip, url: req.url, error: err.message });
    return reply.code(500).type('text/plain').send('internal error');
  });

  const identify = (req: FastifyRequest, body: Buffer) => {
    try {
      return authenticateDevice({ headers: req.headers, body, socket: req.raw.socket }, o.auth);
    } catch (e) {
      if (e instanceof DeviceAuthError) return e;
      throw e;
    }
  };

  const checkin = async (req: FastifyRequest, reply: FastifyReply, body: Buffer) => {
    // A check-in sent to the ServerURL arrives under the report's larger limit.
    if (body.length > checkinLimit) return tooLarge(reply, checkinLimit);
    let msg;
    try {
      msg = parseCheckin(decodePlist(body, { maxBytes: checkinLimit }));
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

  app.put('/mdm/apple/checkin', { bodyLimit: checkinLimit }, async (req, reply) => checkin(req, reply, bodyOf(req)));

  app.put('/mdm/apple/connect', { bodyLimit: reportLimit }, async (req, reply) => {
    const body = bodyOf(req);
    if (String(req.headers['content-type'] ?? '').startsWith(CHECKIN_TYPE)) return checkin(req, reply, body);
    // Who sent it first: a report can be megabytes, and only a device of ours gets it read.
    const id = identify(req, body);
    if (id instanceof DeviceAuthError) {
      o.log.warn('command report without a valid device certificate', { remote: req.ip, reason: id.message });
      return reply.code(403).type('text/plain').send('device certificate not accepted');
    }
    let report;
    try {
      report = parseReport(decodePlist(body, { maxBytes: reportLimit }));
    } catch (e) {
      o.log.warn('unreadable command report; answered with nothing', { remote: req.ip, error: (e as Error).message });
      return reply.code(200).send('');
    }
    const a = await o.service.connect(report, id);
    if (a.status !== 200) return reply.code(a.status).type('text/plain').send(a.error);
    return a.command ? reply.code(200).type(PLIST_TYPE).send(encodePlist(a.command)) : reply.code(200).send('');
  });
}

const bodyOf = (req: FastifyRequest): Buffer => (Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
