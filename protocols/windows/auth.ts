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
import { X509Certificate, createHash } from 'node:crypto';
import type { CertificateAuthority } from '../pki/ca.js';
import { certFromHeader, certFromTls, firstHeader } from '../pki/client-cert.js';

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
  const errors: string[] = [];
  for (const mode of o.modes) {
    let der: Buffer | undefined;
    try {
      der = mode === 'mtls' ? certFromTls(req.socket) : certFromHeader(firstHeader(req.headers[o.header ?? 'client-cert']));
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
    const problem = o.ca.checkIssued(cert);
    if (problem) {
      errors.push(`${mode}: certificate ${problem}`);
      continue;
    }
    return { certSha256: createHash('sha256').update(der).digest('hex'), via: mode };
  }
  throw new WindowsAuthError(errors.length ? errors.join('; ') : `no device certificate (accepted: ${o.modes.join(', ')})`);
}
