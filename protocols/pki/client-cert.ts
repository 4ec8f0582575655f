// The client certificate a device presented, wherever the deployment puts it:
// on the TLS connection itself (mTLS, node's peer certificate), or in a
// header a trusted TLS-terminating proxy adds — RFC 9440 `Client-Cert:
// :<base64 DER>:`, or a URL-escaped PEM as nginx's $ssl_client_escaped_cert.
// Shared by every protocol whose devices authenticate with a certificate Muster
// issued (Apple MDM, Windows OMA-DM); checking the certificate is the caller's part.
import { X509Certificate, createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';

export class ClientCertError extends Error {
  override name = 'ClientCertError';
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
