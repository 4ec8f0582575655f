// The client certificate a device presented, wherever the deployment puts it:
// on the TLS connection itself (mTLS, node's peer certificate), or in a
// header a trusted TLS-terminating proxy adds — RFC 9440 `Client-Cert:
// :<base64 DER>:`, or a URL-escaped PEM as nginx's $ssl_client_escaped_cert.
// Shared by every protocol whose devices authenticate with a certificate Muster
// issued (Apple MDM, Windows OMA-DM); checking the certificate is the caller's part.
import type { TLSSocket } from 'node:tls';

export class ClientCertError extends Error {
  override name = 'ClientCertError';
}

/** Largest header value read (a certificate chain forwarded by mistake stays bounded). */
const MAX_HEADER_CHARS = 16 * 1024;

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
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new ClientCertError('client certificate header is neither :base64: nor a URL-escaped PEM');
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
