// Which certificate a Windows device's OMA-DM request was made with: its
// MDM enrollment certificate (issued by Muster's CA through MS-WSTEP), on the
// TLS connection itself (mTLS) or forwarded by a trusted TLS-terminating
// proxy in a header (protocols/pki/client-cert.ts). The certificate must
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
import { ClientCertError, certFromHeader, certFromTls, firstAcceptedCertificate, firstHeader } from '../pki/client-cert.js';

export type WindowsAuthMode = 'mtls' | 'header';

export class WindowsAuthError extends Error {
  override name = 'WindowsAuthError';
}

export interface WindowsAuthOptions {
  /** Accepted ways, tried in this order. */
  modes: readonly WindowsAuthMode[];
  ca: CertificateAuthority;
  /** The header a trusted proxy puts the client certificate in (default client-cert). Only honour it behind such a proxy. */
  header?: string;
}

export interface WindowsAuthRequest {
  headers: Record<string, string | string[] | undefined>;
  socket?: unknown;
}

/** The presented certificate's SHA-256 (the identity key in the store), after checking it chains to the CA and is current. */
export function authenticateWindowsDevice(req: WindowsAuthRequest, o: WindowsAuthOptions): { certSha256: string; via: WindowsAuthMode } {
  try {
    return firstAcceptedCertificate(o.modes, (mode) => (mode === 'mtls' ? certFromTls(req.socket) : certFromHeader(firstHeader(req.headers[o.header ?? 'client-cert']))), o.ca);
  } catch (e) {
    if (e instanceof ClientCertError) throw new WindowsAuthError(e.message);
    throw e;
  }
}
