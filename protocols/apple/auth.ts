// Which certificate a device request was made with, by configuration: the TLS
// client certificate (mTLS), a certificate a trusted proxy forwards in a
// header, believed only from the proxies' addresses (RFC 9440 `Client-Cert: :<base64 DER>:`, or a URL-escaped PEM as
// nginx's $ssl_client_escaped_cert), or the Mdm-Signature header — a
// detached CMS SignedData over the body. The first two are shared with
// Windows (protocols/pki/client-cert.ts). node-forge cannot verify CMS, so the
// signer is checked here on forge's bounded ASN.1 parser (protocols/pki/asn1.ts), which
// also accepts the BER indefinite lengths real devices send. Real devices
// sign with SHA-1 and no signed attributes: the RSA signature is then over
// the body's digest directly.
import { X509Certificate, verify } from 'node:crypto';
import { toBuffer, toDer } from '../pki/asn1.js';
import type { CertificateAuthority } from '../pki/ca.js';
import { ClientCertError, UntrustedHeaderError, certFromHeader, certFromTls, firstAcceptedCertificate, firstHeader, forwardedCertHeader, type TrustedPeer } from '../pki/client-cert.js';
import { DIGEST_OIDS, identifies, readSignedData, verifySigner } from './scep/cms.js';

export type DeviceAuthMode = 'mtls' | 'header' | 'signature';

export class DeviceAuthError extends Error {
  constructor(
    message: string,
    /** Set when the request carried the certificate header from a peer that is not a trusted proxy: a forgery. */
    readonly untrustedPeer?: string,
  ) {
    super(message);
  }
}

export interface DeviceAuthOptions {
  /** Which ways are accepted, tried in this order. */
  modes: readonly DeviceAuthMode[];
  ca: CertificateAuthority;
  /** The header a trusted proxy puts the client certificate in (default client-cert). */
  header?: string;
  /** Which TCP peers may send that header; without it, header mode accepts no one. */
  trustedProxy?: TrustedPeer;
}

/** Upper bound for a Mdm-Signature (a signature plus one or two certificates). */
const MAX_SIGNATURE_BYTES = 32 * 1024;

export interface AuthRequest {
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  socket?: unknown;
}

/** The device certificate's SHA-256, after checking it chains to our CA and is current. */
export function authenticateDevice(req: AuthRequest, o: DeviceAuthOptions): { certSha256: string; via: DeviceAuthMode } {
  try {
    // Checked before any mode: a forged header makes the whole request hostile, whatever else it carries.
    const forwarded = o.modes.includes('header') ? forwardedCertHeader(req, o.header ?? 'client-cert', o.trustedProxy) : undefined;
    return firstAcceptedCertificate(o.modes, (mode) => (mode === 'mtls' ? fromTls(req.socket) : mode === 'header' ? fromHeader(forwarded) : fromSignature(first(req.headers['mdm-signature']), req.body)), o.ca);
  } catch (e) {
    if (e instanceof UntrustedHeaderError) throw new DeviceAuthError(e.message, e.peer);
    if (e instanceof ClientCertError) throw new DeviceAuthError(e.message);
    throw e;
  }
}

const first = firstHeader;
const fromTls = certFromTls;

/** RFC 9440 `:base64:` byte sequence, or a URL-escaped PEM (protocols/pki/client-cert.ts). */
export function fromHeader(value: string | undefined): Buffer | undefined {
  try {
    return certFromHeader(value);
  } catch (e) {
    throw e instanceof ClientCertError ? new DeviceAuthError(e.message) : e;
  }
}

/** Verifies the detached signature over `body`; returns the signer's certificate. */
export function fromSignature(header: string | undefined, body: Buffer): Buffer | undefined {
  if (!header) return undefined;
  if (header.length > (MAX_SIGNATURE_BYTES * 4) / 3 + 4) throw new DeviceAuthError('Mdm-Signature too large');
  let sd;
  try {
    sd = readSignedData(Buffer.from(header.replace(/\s+/g, ''), 'base64'), MAX_SIGNATURE_BYTES, 'Mdm-Signature');
  } catch (e) {
    throw new DeviceAuthError((e as Error).message);
  }
  const signer = sd.signers[0];
  if (!signer || sd.signers.length !== 1) throw new DeviceAuthError('Mdm-Signature must have exactly one signer');
  const cert = sd.certificates.find((c) => identifies(signer.sid, c));
  if (!cert) throw new DeviceAuthError('Mdm-Signature does not carry its signer certificate');
  const certDer = toBuffer(toDer(cert));
  try {
    if (signer.signedAttrs) verifySigner(signer, body, certDer);
    else {
      const hash = DIGEST_OIDS[signer.digestOid];
      if (!hash) throw new Error(`digest algorithm ${signer.digestOid} is not supported`);
      if (!verify(hash, body, new X509Certificate(certDer).publicKey, signer.signature)) throw new Error('the signature does not verify over the body');
    }
  } catch (e) {
    throw new DeviceAuthError(`Mdm-Signature: ${(e as Error).message}`);
  }
  return certDer;
}
