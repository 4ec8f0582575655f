// The SCEP handler on fastify: GET and POST /mdm/apple/scep. Register it
// with app.register (not fastify-plugin): the raw body parsers and the error
// handler below stay inside this plugin. Anyone may call it (the challenge is
// checked inside the message), so both routes are ENROLLMENT_ROUTEs: `muster
// serve` limits them per client address, answered 429 with Retry-After.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ENROLLMENT_ROUTE } from '../../../controller/server/rate-limit.js';
import { createScepHandler, DEFAULT_MAX_BODY_BYTES, type ScepOptions } from './server.js';

export interface ScepRouteOptions extends ScepOptions {
  /** Default /mdm/apple/scep. */
  path?: string;
}

const first = (v: unknown): string | undefined => (Array.isArray(v) ? first(v[0]) : typeof v === 'string' ? v : undefined);

export async function scepRoutes(app: FastifyInstance, o: ScepRouteOptions): Promise<void> {
  const maxBodyBytes = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const handle = createScepHandler({ ...o, maxBodyBytes });
  const path = o.path ?? '/mdm/apple/scep';

  app.addContentTypeParser(['application/x-pki-message', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: maxBodyBytes }, (_req, body, done) => done(null, body));

  // Short plain-text errors, never a stack. Never 401 either: an Apple device
  // unenrolls on it. An oversized body is a malformed message (400).
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(400).type('text/plain; charset=utf-8').send(`malformed SCEP request: more than ${maxBodyBytes} bytes\n`);
    const code = err.statusCode ?? 500;
    const status = code === 401 ? 400 : code >= 400 && code < 500 ? code : 500;
    if (status === 500) req.log.error({ error: err.message }, 'SCEP request failed');
    return reply
      .code(status)
      .type('text/plain; charset=utf-8')
      .send(status === 500 ? 'internal error\n' : `${err.message.split('\n')[0]}\n`);
  });

  const route = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const q = (req.query ?? {}) as Record<string, unknown>;
    const res = await handle({
      method: req.method,
      operation: first(q.operation),
      message: first(q.message),
      body: Buffer.isBuffer(req.body) ? req.body : undefined,
    });
    return reply.code(res.status).type(res.contentType).send(res.body);
  };
  app.get(path, ENROLLMENT_ROUTE, route);
  app.post(path, { ...ENROLLMENT_ROUTE, bodyLimit: maxBodyBytes }, route);
}
