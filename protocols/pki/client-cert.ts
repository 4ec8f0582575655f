// The client certificate a device presented, wherever the deployment puts it:
// on the TLS connection itself (mTLS, node's peer certificate), or in a
// header a trusted TLS-terminating proxy adds — RFC 9440 `Client-Cert:
// :<base64 DER>:`, or a URL-escaped PEM as nginx's $ssl_client_escaped_cert.
// Shared by every protocol whose devices authenticate with a certificate Muster
// issued (Apple MDM, Windows OMA-DM); checking the certificate is the caller's part.
//
// The header is believed only from a TCP peer the deployment lists as its
// proxy: a device's certificate is public (it travels in every Mdm-Signature),
// so whoever could send the header straight to the listener could be any
// device. From any other peer the header is a forgery, and the request is
// refused outright rather than judged by its other proofs.
import { X509Certificate, createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';

export class ClientCertError extends Error {
  override name = 'ClientCertError';
}

/** The certificate header arrived from a peer that is not a trusted proxy. */
export class UntrustedHeaderError extends ClientCertError {
  override name = 'UntrustedHeaderError';
  constructor(
    /** The TCP peer address ('unknown' when the socket has none). */
    readonly peer: string,
    readonly header: string,
  ) {
    super(`a ${header} header from ${peer}, which is not a trusted proxy`);
  }
}

/** Whether a TCP peer address is a trusted proxy (`muster serve --trusted-proxy`). */
export type TrustedPeer = (address: string) => boolean;

/** The TCP peer of a request's connection: never X-Forwarded-For, which the client writes. */
export const peerAddress = (socket: unknown): string | undefined => (socket as { remoteAddress?: string } | undefined)?.remoteAddress;

/**
 * The forwarded-certificate header's value when the request came from a
 * trusted proxy; undefined when the request has no such header. From any
 * other peer (or with no trusted peer configured) it throws
 * UntrustedHeaderError. A header sent twice is refused too: a proxy that
 * appends to the client's header instead of overwriting it lets the client
 * choose the certificate.
 */
export function forwardedCertHeader(req: { headers: Record<string, string | string[] | undefined>; socket?: unknown }, header: string, trusted: TrustedPeer | undefined): string | undefined {
  const raw = req.headers[header.toLowerCase()]; // node lower-cases header names
  if (raw === undefined) return undefined;
  const peer = peerAddress(req.socket);
  if (!peer || !trusted?.(peer)) throw new UntrustedHeaderError(peer ?? 'unknown', header);
  if (Array.isArray(raw) && raw.length > 1) throw new ClientCertError(`the ${header} header was sent more than once`);
  return firstHeader(raw);
}

/** Largest header value read (a certificate chain forwarded by mistake stays bounded). */
const MAX_HEADER_CHARS = 16 * 1024;
const PEM_BEGIN = '-----BEGIN CERTIFICATE-----';
const PEM_END = '-----END CERTIFICATE-----';

/** The first value of a header that may have been sent more than once. */
export const firstHeader = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** The DER of the TLS peer certificate, or undefined when the connection has none. */
export function certFromTls(socket: unknown): Buffer | undefined {
  const s = socket as Partial<TLSSocket> | undefined;
  if (!s || typeof s.getPeerCertificate !== 'function') return undefined;
  const c = s.getPeerCertificate(false);
  return c && c.raw && c.raw.length ? c.raw : undefined;
}

/** RFC 9440 `:base64:` byte sequence, or a URL-escaped PEM; undefined when the header is absent. */
export function certFromHeader(value: string | undefined): Buffer | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (v.length > MAX_HEADER_CHARS) throw new ClientCertError('client certificate header too large');
  // Neither form has a comma: one means node joined a header sent twice (see forwardedCertHeader).
  if (v.includes(',')) throw new ClientCertError('client certificate header was sent more than once');
  const sf = /^:([A-Za-z0-9+/=]+):$/.exec(v);
  if (sf) return Buffer.from(sf[1]!, 'base64');
  let pem: string;
  try {
    pem = decodeURIComponent(v);
  } catch {
    throw new ClientCertError('client certificate header is neither :base64: nor a URL-escaped PEM');
  }
  // indexOf, not a lazy regex: /BEGIN([\s\S]+?)END/ rescans the rest from every BEGIN (quadratic).
  const begin = pem.indexOf(PEM_BEGIN);
  const end = begin < 0 ? -1 : pem.indexOf(PEM_END, begin + PEM_BEGIN.length);
  if (end < 0 || end === begin + PEM_BEGIN.length) throw new ClientCertError('client certificate header is neither :base64: nor a URL-escaped PEM');
  return Buffer.from(pem.slice(begin + PEM_BEGIN.length, end).replace(/\s+/g, ''), 'base64');
}

/**
 * Tries each way a certificate may arrive, in order, and returns the first
 * that chains to the CA and is current (with its SHA-256, the identity key in
 * the store). `extract` gives a mode's DER, undefined when that mode found
 * none, or throws when what it found is malformed; the error lists why each
 * mode was refused.
 */
export function firstAcceptedCertificate<M extends string>(modes: readonly M[], extract: (mode: M) => Buffer | undefined, ca: { checkIssued(cert: X509Certificate): string | undefined }): { certSha256: string; via: M } {
  const errors: string[] = [];
  for (const mode of modes) {
    let der: Buffer | undefined;
    try {
      der = extract(mode);
    } catch (e) {
      errors.push(`${mode}: ${(e as Error).message}`);
      continue;
    }
    if (!der) continue;
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
    } catch {
      errors.push(`${mode}: the certificate cannot be read`);
      continue;
    }
    const problem = ca.checkIssued(cert);
    if (problem) {
      errors.push(`${mode}: certificate ${problem}`);
      continue;
    }
    return { certSha256: createHash('sha256').update(der).digest('hex'), via: mode };
  }
  throw new ClientCertError(errors.length ? errors.join('; ') : `no device certificate (accepted: ${modes.join(', ')})`);
}

/**
 * An onRequest hook for a protocol's device routes when header mode is on: a
 * request that carries the certificate header from a peer that is not a
 * trusted proxy is refused 403 (never 401: Apple devices unenroll on it)
 * before its body is read, and logged with the peer. Requests without the
 * header go on to the other configured modes.
 */
export function refuseUntrustedHeader(o: { header: string; trustedProxy: TrustedPeer | undefined; log: { warn(msg: string, fields?: Record<string, unknown>): void } }) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    try {
      forwardedCertHeader({ headers: req.headers, socket: req.raw.socket }, o.header, o.trustedProxy);
    } catch (e) {
      if (!(e instanceof UntrustedHeaderError)) return; // a malformed header is the mode's own refusal, later
      o.log.warn('client certificate header from a peer that is not a trusted proxy; refused', { peer: e.peer, header: o.header, method: req.method, url: req.url.slice(0, 200) });
      await reply.code(403).type('text/plain; charset=utf-8').send('device certificate not accepted');
    }
  };
}
