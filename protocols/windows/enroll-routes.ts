// The Windows enrollment endpoints as one fastify plugin: read the SOAP
// envelope, check the action, decode the body, call the service, write the
// answer. Every answer is one string body, so fastify sends it with a
// Content-Length and never chunked (Windows refuses chunked enrollment
// responses). Faults go out with HTTP 500, as WCF — which the Windows
// enrollment client is built against — sends them; the client reads the
// fault's subcode from the body.
//
//   GET  /EnrollmentServer/Discovery.svc   the probe: 200, empty
//   POST /EnrollmentServer/Discovery.svc   MS-MDE2 Discover
//   POST /EnrollmentServer/Policy.svc      MS-XCEP GetPolicies
//   POST /EnrollmentServer/Enrollment.svc  MS-WSTEP RequestSecurityToken
//   GET  /EnrollmentServer/Auth            federated: the page asking for the enrollment code
//   POST /EnrollmentServer/Auth            federated: the code checked, the token posted back to appru
//
// Everything here is called before the device has a credential Muster
// issued: each route takes a body no larger than its messages need (a
// Discover is about 1 KiB, an RST with its PKCS#10 a few), and every one is
// marked ENROLLMENT_ROUTE, so `muster serve` limits requests per client
// address. Over the limit the answer is HTTP 429 with Retry-After, a SOAP
// fault in the body (WCF has no fault for it; Windows shows the enrollment as
// failed and the user tries again).
import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ENROLLMENT_ROUTE } from '../../controller/server/rate-limit.js';
import { ClientCertError, certFromTls, refuseUntrustedHeader } from '../pki/client-cert.js';
import { windowsCertificateReader, type WindowsAuthOptions } from './auth.js';
import { discoverResponse, DISCOVER_ACTION, DISCOVER_RESPONSE_ACTION, parseDiscover } from './discovery.js';
import { PATHS, type WindowsEnrollLog, type WindowsEnrollService } from './enroll-service.js';
import { SOAP_CONTENT_TYPE, SoapFault, readEnvelope, writeEnvelope, writeFault, type SoapRequest } from './soap.js';
import { GET_POLICIES_ACTION, GET_POLICIES_RESPONSE_ACTION, getPoliciesResponse, parseGetPolicies } from './xcep.js';
import { RST_ACTION, RSTRC_ACTION, parseRst, rstrResponse, timestampHeader } from './wstep.js';
import type { XmlNode } from './xml.js';

export interface WindowsEnrollRoutesOptions {
  service: WindowsEnrollService;
  log: WindowsEnrollLog & { error(msg: string, fields?: Record<string, unknown>): void };
  /** Largest request body accepted by every SOAP endpoint, instead of each one's own (ENROLL_BODY_LIMITS). */
  maxBodyBytes?: number;
  /**
   * Where a renewing device's certificate is read, in order (the OMA-DM
   * endpoint's modes). Default: the TLS peer certificate (the server must ask
   * for one, without requiring it). With header mode, a certificate header
   * from a peer that is not a trusted proxy is refused 403 on every
   * enrollment endpoint.
   */
  deviceAuth?: Pick<WindowsAuthOptions, 'modes' | 'header' | 'trustedProxy'>;
  now?: () => Date;
}

/**
 * Largest body each endpoint reads, bytes: many times what Windows sends
 * (Discover ~1 KiB; GetPolicies ~2 KiB; an RST with a 4096-bit PKCS#10, or a
 * renewal's PKCS#7 with the current certificate, under 16 KiB), small enough
 * that reading one before any credential is checked costs little.
 */
export const ENROLL_BODY_LIMITS = { discovery: 16 * 1024, policy: 32 * 1024, enrollment: 64 * 1024, authForm: 8 * 1024 } as const;

/** WCF's status for every fault (see the header comment). */
const FAULT_STATUS = 500;
const SOAP_TYPES = ['application/soap+xml', 'application/xml', 'text/xml'];

interface Answer {
  body: XmlNode;
  extra?: XmlNode[];
}

export async function windowsEnrollRoutes(app: FastifyInstance, o: WindowsEnrollRoutesOptions): Promise<void> {
  const limits = { ...ENROLL_BODY_LIMITS, ...(o.maxBodyBytes ? { discovery: o.maxBodyBytes, policy: o.maxBodyBytes, enrollment: o.maxBodyBytes } : {}) };
  const now = o.now ?? (() => new Date());
  const { service, log } = o;
  // Bodies stay raw bytes: xml.ts checks size, encoding and entities itself. Each route sets its own limit.
  app.addContentTypeParser(SOAP_TYPES, { parseAs: 'buffer', bodyLimit: Math.max(limits.discovery, limits.policy, limits.enrollment) }, (_req, body, done) => done(null, body));
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: limits.authForm }, (_req, body, done) => done(null, body));

  // Errors fastify raises before a handler runs (body too large, no parser, rate limit) still answer as SOAP.
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    const traceId = randomUUID();
    const tooLarge = err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `the request is larger than ${req.routeOptions.bodyLimit ?? limits.enrollment} bytes` : undefined;
    if (!req.url.startsWith('/EnrollmentServer/') || req.url.startsWith(PATHS.auth)) {
      log.warn('windows enrollment page error', { url: req.url, error: err.message, traceId });
      return reply.code(err.statusCode && err.statusCode < 500 ? err.statusCode : 500).type('text/plain; charset=utf-8').send(`${err.statusCode && err.statusCode < 500 ? (tooLarge ?? err.message) : 'internal error'} (trace ${traceId})\n`);
    }
    if (err.statusCode === 429) {
      log.warn('windows enrollment rate limited', { url: req.url, remote: req.ip, traceId });
      return reply.code(429).type(SOAP_CONTENT_TYPE).send(writeFault(new SoapFault('EnrollmentServer', err.message), { traceId }));
    }
    const client = err.statusCode !== undefined && err.statusCode < 500;
    const fault = client ? new SoapFault('MessageFormat', tooLarge ?? err.message) : new SoapFault('InternalServiceFault', `the server could not complete the request (trace ${traceId})`);
    (client ? log.warn : log.error)('windows enrollment request failed', { url: req.url, error: err.message, traceId });
    return reply.code(FAULT_STATUS).type(SOAP_CONTENT_TYPE).send(writeFault(fault, { traceId }));
  });

  const auth = o.deviceAuth;
  if (auth?.modes.includes('header')) app.addHook('onRequest', refuseUntrustedHeader({ header: auth.header ?? 'client-cert', trustedProxy: auth.trustedProxy, log }));
  const clientCert = (req: FastifyRequest): Buffer | undefined => {
    if (!auth) return certFromTls(req.raw.socket);
    try {
      const read = windowsCertificateReader({ headers: req.headers, socket: req.raw.socket }, auth);
      for (const mode of auth.modes) {
        const der = read(mode);
        if (der) return der;
      }
      return undefined;
    } catch (e) {
      if (e instanceof ClientCertError) throw new SoapFault('Authentication', `the presented device certificate cannot be read: ${e.message}`, 'NotEligibleToRenew');
      throw e;
    }
  };
  const soap = (expected: string, responseAction: string, limit: number, handle: (r: SoapRequest, req: FastifyRequest) => Promise<Answer>) => async (req: FastifyRequest, reply: FastifyReply) => {
    const traceId = randomUUID();
    let env: SoapRequest | undefined;
    try {
      env = readEnvelope(Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0), { maxBytes: limit });
      if (env.action !== expected) throw new SoapFault('MessageFormat', `this endpoint answers ${expected}, not ${env.action}`);
      const a = await handle(env, req);
      return reply.code(200).type(SOAP_CONTENT_TYPE).send(writeEnvelope({ action: responseAction, relatesTo: env.messageId, activityId: traceId, ...(a.extra ? { extra: a.extra } : {}) }, a.body));
    } catch (e) {
      let fault: SoapFault;
      if (e instanceof SoapFault) {
        fault = e;
        log.warn('windows enrollment refused', { url: req.url, subcode: fault.subcode, reason: fault.message, traceId, remote: req.ip });
      } else {
        fault = new SoapFault('InternalServiceFault', `the server could not complete the request (trace ${traceId})`);
        log.error('windows enrollment failed', { url: req.url, error: (e as Error).message, traceId });
      }
      return reply.code(FAULT_STATUS).type(SOAP_CONTENT_TYPE).send(writeFault(fault, { action: responseAction, relatesTo: env?.messageId, traceId }));
    }
  };

  // Windows probes the discovery URL with a GET before it posts.
  app.get(PATHS.discovery, ENROLLMENT_ROUTE, async (_req, reply) => reply.code(200).type('text/html; charset=utf-8').send(''));

  app.post(
    PATHS.discovery,
    { ...ENROLLMENT_ROUTE, bodyLimit: limits.discovery },
    soap(DISCOVER_ACTION, DISCOVER_RESPONSE_ACTION, limits.discovery, async (r) => ({ body: discoverResponse(service.discover(parseDiscover(r.body))) })),
  );

  app.post(
    PATHS.policy,
    { ...ENROLLMENT_ROUTE, bodyLimit: limits.policy },
    soap(GET_POLICIES_ACTION, GET_POLICIES_RESPONSE_ACTION, limits.policy, async (r) => {
      parseGetPolicies(r.body);
      return { body: getPoliciesResponse(await service.policy(r.security)) };
    }),
  );

  app.post(
    PATHS.enrollment,
    { ...ENROLLMENT_ROUTE, bodyLimit: limits.enrollment },
    soap(RST_ACTION, RSTRC_ACTION, limits.enrollment, async (r, req) => {
      const rst = parseRst(r.body);
      const result = await service.enroll(r.security, rst, rst.requestType === 'renew' ? { clientCertDer: clientCert(req) } : {});
      return { body: rstrResponse({ provisioningDoc: result.provisioningDoc, requestId: result.requestId }), extra: [timestampHeader(now())] };
    }),
  );

  // ---------------------------------------------------------------- the federated page

  app.get<{ Querystring: { appru?: string; login_hint?: string } }>(PATHS.auth, ENROLLMENT_ROUTE, async (req, reply) => {
    const appru = typeof req.query.appru === 'string' ? req.query.appru : '';
    const hint = typeof req.query.login_hint === 'string' ? req.query.login_hint.slice(0, 320) : '';
    if (!isAppReturnUrl(appru)) return page(reply, 400, 'Muster enrollment', '<p>This page is opened by Windows during device enrollment (Settings → Accounts → Access work or school).</p>');
    return page(reply, 200, 'Muster enrollment', codeForm(appru, hint));
  });

  app.post(PATHS.auth, { ...ENROLLMENT_ROUTE, bodyLimit: limits.authForm }, async (req, reply) => {
    const form = new URLSearchParams(typeof req.body === 'string' ? req.body : '');
    const appru = form.get('appru') ?? '';
    const hint = (form.get('login_hint') ?? '').slice(0, 320);
    const code = (form.get('code') ?? '').slice(0, 256);
    if (!isAppReturnUrl(appru)) return page(reply, 400, 'Muster enrollment', '<p>This request did not come from Windows enrollment.</p>');
    const token = code ? await service.federatedLogin(code, hint) : undefined;
    if (!token) return page(reply, 200, 'Muster enrollment', codeForm(appru, hint, 'That enrollment code is not valid, or has expired or been used. Ask your administrator for a new one.'));
    // The web authentication broker ends at appru: post the token there, by itself.
    const nonce = randomBytes(16).toString('base64');
    const html =
      `<p>Signing in…</p><form method="post" action="${esc(appru)}"><input type="hidden" name="wresult" value="${esc(token)}"/><noscript><input type="submit" value="Continue"/></noscript></form>` +
      `<script nonce="${nonce}">document.forms[0].submit();</script>`;
    return page(reply, 200, 'Working…', html, `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; form-action ms-app: 'self'`);
  });
}

/** The web authentication broker's return address is an ms-app:// URI; anything else would send the token away. */
const isAppReturnUrl = (u: string): boolean => /^ms-app:\/\/[^\s"'<>]{1,512}$/i.test(u);

/** HTML text and attribute escaping for the few values these pages reflect. */
const esc = (s: string): string => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function codeForm(appru: string, hint: string, error?: string): string {
  return (
    `<h1>Enroll this device</h1>` +
    (hint ? `<p>Signing in as <strong>${esc(hint)}</strong>.</p>` : '') +
    (error ? `<p class="error" role="alert">${esc(error)}</p>` : '') +
    `<form method="post" action="${PATHS.auth}">` +
    `<input type="hidden" name="appru" value="${esc(appru)}"/><input type="hidden" name="login_hint" value="${esc(hint)}"/>` +
    `<label for="code">Enrollment code</label><input id="code" name="code" type="password" autocomplete="one-time-code" required autofocus/>` +
    `<button type="submit">Continue</button></form>`
  );
}

function page(reply: FastifyReply, status: number, title: string, body: string, csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"): FastifyReply {
  const html = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><meta name="viewport" content="width=device-width, initial-scale=1"/><title>${esc(title)}</title><style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:28rem}input,button{display:block;margin:.5rem 0;padding:.5rem;font-size:1rem;width:100%}.error{color:#a00}</style></head><body>${body}</body></html>`;
  return reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', csp).header('referrer-policy', 'no-referrer').send(html);
}
