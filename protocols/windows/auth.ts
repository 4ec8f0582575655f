// Which certificate a Windows device's OMA-DM request was made with: its
// MDM enrollment certificate (issued by Muster's CA through MS-WSTEP), on the
// TLS connection itself (mTLS) or forwarded by a trusted TLS-terminating
// proxy in a header, believed only from the proxies' addresses
// (protocols/pki/client-cert.ts). The certificate must
// chain to the CA and be current here; the service then requires it to be
// unrevoked and bound to the device named in the SyncML header.
//
// Refusals are HTTP 403. MS-MDM and the OMA DM protocol page describe 401
// only as a SyncML status that asks for credentials (MD5 or basic, with a
// Chal for the next nonce): an HTTP 401 would invite the DM client to retry
// with application-level credentials Muster does not use, while a 403 is a
// plain refusal the client logs as a failed session and retries at its next
// scheduled poll. The reference documents no unenrollment on either.
import type { CertificateAuthority } from '../pki/ca.js';
import { ClientCertError, UntrustedHeaderError, certFromHeader, certFromTls, firstAcceptedCertificate, forwardedCertHeader, type TrustedPeer } from '../pki/client-cert.js';

export type WindowsAuthMode = 'mtls' | 'header';

export class WindowsAuthError extends Error {
  override name = 'WindowsAuthError';
  constructor(
    message: string,
    /** Set when the request carried the certificate header from a peer that is not a trusted proxy: a forgery. */
    readonly untrustedPeer?: string,
  ) {
    super(message);
  }
}

export interface WindowsAuthOptions {
  /** Accepted ways, tried in this order. */
  modes: readonly WindowsAuthMode[];
  ca: CertificateAuthority;
  /** The header a trusted proxy puts the client certificate in (default client-cert). */
  header?: string;
  /** Which TCP peers may send that header; without it, header mode accepts no one. */
  trustedProxy?: TrustedPeer;
}

export interface WindowsAuthRequest {
  headers: Record<string, string | string[] | undefined>;
  socket?: unknown;
}

/** The presented certificate's SHA-256 (the identity key in the store), after checking it chains to the CA and is current. */
export function authenticateWindowsDevice(req: WindowsAuthRequest, o: WindowsAuthOptions): { certSha256: string; via: WindowsAuthMode } {
  try {
    return firstAcceptedCertificate(o.modes, windowsCertificateReader(req, o), o.ca);
  } catch (e) {
    if (e instanceof UntrustedHeaderError) throw new WindowsAuthError(e.message, e.peer);
    if (e instanceof ClientCertError) throw new WindowsAuthError(e.message);
    throw e;
  }
}

/**
 * Each mode's certificate DER for this request (the OMA-DM session, and the
 * enrollment renewal, where the certificate being renewed vouches for the
 * request). A certificate header from a peer that is not a trusted proxy
 * throws UntrustedHeaderError here, before any mode is tried.
 */
export function windowsCertificateReader(req: WindowsAuthRequest, o: Pick<WindowsAuthOptions, 'modes' | 'header' | 'trustedProxy'>): (mode: WindowsAuthMode) => Buffer | undefined {
  const forwarded = o.modes.includes('header') ? forwardedCertHeader(req, o.header ?? 'client-cert', o.trustedProxy) : undefined;
  return (mode) => (mode === 'mtls' ? certFromTls(req.socket) : certFromHeader(forwarded));
}
