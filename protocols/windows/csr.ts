// The PKCS#10 a Windows device sends in its RequestSecurityToken: decoded
// with a size bound, read with node-forge (through the bounded DER reader),
// its signature checked with node's crypto over the request's own bytes.
//
// Windows quirks this has to accept: a PrintableString subject carrying
// characters PrintableString does not allow ('!', '@', '_'…) — neither forge
// nor our reader checks the character set, and the subject is certified byte
// for byte (ca.ts copies it), so nothing re-encodes it; Microsoft attributes
// (OS version, client info, enrollment CSP) in the request's attributes;
// base64 wrapped over several lines.
import { X509Certificate, createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import forge from 'node-forge';
import { Asn1FormatError, Class, Type, algorithmOid, children, octetContent, parseDer, primitive, readOid, set, toBuffer, toDer, type Asn1 } from '../pki/asn1.js';
import { formatName } from '../pki/ca.js';
import { decodeBase64 } from './soap.js';

/** Why a CSR is refused; the enrollment answers it with a CertificateRequest fault. */
export class CsrError extends Error {
  override name = 'CsrError';
}

export interface CsrLimits {
  /** Largest DER accepted. Default 16 KiB (a Windows request is about 1.5 KiB). */
  maxBytes?: number;
  /** Smallest RSA modulus accepted, bits. Default 2048 (the policy's minimalKeyLength). */
  minKeyBits?: number;
}

export interface WindowsCsr {
  der: Buffer;
  /** forge's view, for the CA (its certificationRequestInfo keeps the subject's original encoding). */
  request: forge.pki.CertificateSigningRequest;
  /** "CN=…" for logs and the store. */
  subject: string;
  /** The subject's commonName, decoded. */
  commonName: string;
  keyBits: number;
  /** The signature's hash. */
  hash: 'sha1' | 'sha256' | 'sha384' | 'sha512';
}

const RSA_SIGNATURES: Record<string, WindowsCsr['hash']> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};

/**
 * The bytes of the first element inside a DER SEQUENCE: the signed
 * CertificationRequestInfo exactly as the device encoded it. (forge would
 * re-encode it; the signature is over the original.) The input has already
 * been parsed by the bounded reader, so only the headers are read here.
 */
function firstInner(der: Buffer): Buffer {
  const header = (at: number): { start: number; end: number } => {
    const lenByte = der[at + 1];
    if (lenByte === undefined) throw new CsrError('the CSR is truncated');
    if (lenByte < 0x80) return { start: at + 2, end: at + 2 + lenByte };
    const n = lenByte & 0x7f;
    if (n === 0 || n > 4) throw new CsrError('the CSR uses a length encoding DER does not allow');
    let len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[at + 2 + i] ?? 0);
    return { start: at + 2 + n, end: at + 2 + n + len };
  };
  const outer = header(0);
  const inner = header(outer.start);
  if (inner.end > der.length) throw new CsrError('the CSR is truncated');
  return der.subarray(outer.start, inner.end);
}

/** A name attribute's value as text: forge hands UTF8String over as its bytes, the other string types decoded. */
export function attributeText(a: forge.pki.CertificateField): string {
  const v = typeof a.value === 'string' ? a.value : '';
  return (a.valueTagClass as number) === forge.asn1.Type.UTF8 ? toBuffer(v).toString('utf8') : v;
}

/** Decodes and verifies the base64 PKCS#10 of a RequestSecurityToken. */
export function readCsr(base64: string, limits: CsrLimits = {}): WindowsCsr {
  const maxBytes = limits.maxBytes ?? 16 * 1024;
  const minKeyBits = limits.minKeyBits ?? 2048;
  // Bound before decoding: base64 is 4 characters per 3 bytes.
  if (base64.replace(/\s+/g, '').length > Math.ceil(maxBytes / 3) * 4) throw new CsrError(`the CSR is larger than ${maxBytes} bytes`);
  const der = decodeBase64(base64);
  if (!der || der.length === 0) throw new CsrError('the CSR is not base64');
  let request: forge.pki.CertificateSigningRequest;
  try {
    request = forge.pki.certificationRequestFromAsn1(parseDer(der, 'CSR', maxBytes));
  } catch (e) {
    const why = e instanceof Asn1FormatError ? e.message : (e as Error).message.split('\n')[0];
    throw new CsrError(`the CSR cannot be read: ${why}`);
  }
  const hash = RSA_SIGNATURES[request.signatureOid ?? ''];
  if (!hash) throw new CsrError(`the CSR is signed with ${request.signatureOid ?? 'an unknown algorithm'}, not RSA with SHA-1 or SHA-2`);
  const publicKey = request.publicKey as forge.pki.rsa.PublicKey | null;
  if (!publicKey) throw new CsrError('the CSR has no RSA public key');
  const keyBits = publicKey.n.bitLength();
  if (keyBits < minKeyBits) throw new CsrError(`the CSR's key is ${keyBits} bits, less than the ${minKeyBits} the policy asks for`);
  const spki = toBuffer(toDer(forge.pki.publicKeyToAsn1(publicKey)));
  const signature = toBuffer(request.signature as string);
  let ok: boolean;
  try {
    ok = verifySignature(hash, firstInner(der), createPublicKey({ key: spki, format: 'der', type: 'spki' }), signature);
  } catch (e) {
    if (e instanceof CsrError) throw e;
    ok = false; // a signature of the wrong length, say
  }
  if (!ok) throw new CsrError('the CSR signature does not verify');
  const attrs = request.subject.attributes;
  const cn = attrs.find((a) => a.shortName === 'CN' || a.type === '2.5.4.3');
  const subject = formatName(attrs);
  const commonName = cn ? attributeText(cn) : undefined;
  // The provisioning document finds the certificate again by its subject (SSLCLIENTCERTSEARCHCRITERIA).
  if (!commonName) throw new CsrError('the CSR has no subject common name');
  return { der, request, subject, keyBits, hash, commonName };
}

// ------------------------------------------------------------------ renewal

const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const OID_MESSAGE_DIGEST = '1.2.840.113549.1.9.4';
const DIGESTS: Record<string, WindowsCsr['hash']> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
const RSA_ENCRYPTION = '1.2.840.113549.1.1.1';

/**
 * A renewal's PKCS#7 ([MS-MDE2] 3.5, automatic renewal): a SignedData whose
 * content is the new PKCS#10, signed with the key of the certificate being
 * renewed. The signature must verify with `currentCertDer`'s key — the
 * certificate the device presented on the TLS connection — which proves the
 * device still holds that key; then the inner CSR is read as any other.
 * (forge cannot verify CMS, so the one SignerInfo is checked here.)
 */
export function readRenewalRequest(base64: string, currentCertDer: Buffer, limits: CsrLimits = {}): WindowsCsr {
  const maxBytes = (limits.maxBytes ?? 16 * 1024) + 16 * 1024;
  if (base64.replace(/\s+/g, '').length > Math.ceil(maxBytes / 3) * 4) throw new CsrError(`the renewal request is larger than ${maxBytes} bytes`);
  const der = decodeBase64(base64);
  if (!der || der.length === 0) throw new CsrError('the renewal request is not base64');
  let content: Buffer;
  let signer: { digest: WindowsCsr['hash']; signedAttrs?: Asn1[]; signature: Buffer };
  try {
    const [type, wrapped] = children(parseDer(der, 'renewal request', maxBytes), 'ContentInfo');
    if (readOid(type, 'contentType') !== OID_SIGNED_DATA) throw new CsrError('the renewal request is not a PKCS#7 SignedData');
    const sd = children(children(wrapped, 'SignedData wrapper', 0, Class.CONTEXT_SPECIFIC)[0], 'SignedData');
    const [, eContent] = children(sd[2], 'encapContentInfo');
    if (!eContent) throw new CsrError('the renewal request carries no certificate request');
    content = toBuffer(octetContent(children(eContent, 'eContent', 0, Class.CONTEXT_SPECIFIC)[0], 'eContent'));
    const signerInfos = children(sd[sd.length - 1], 'signerInfos', Type.SET);
    if (signerInfos.length !== 1) throw new CsrError('the renewal request must have exactly one signer');
    const f = children(signerInfos[0], 'SignerInfo');
    const digest = DIGESTS[algorithmOid(f[2], 'digestAlgorithm')];
    if (!digest) throw new CsrError('the renewal request uses a digest other than SHA-1 or SHA-2');
    let i = 3;
    const signedAttrs = f[i]?.tagClass === Class.CONTEXT_SPECIFIC && f[i]!.type === 0 ? children(f[i++], 'signedAttrs', 0, Class.CONTEXT_SPECIFIC) : undefined;
    const sigAlg = algorithmOid(f[i++], 'signatureAlgorithm');
    if (sigAlg !== RSA_ENCRYPTION && !RSA_SIGNATURES[sigAlg]) throw new CsrError(`the renewal request is signed with ${sigAlg}, not RSA`);
    signer = { digest, signature: toBuffer(primitive(f[i], 'signature', Type.OCTETSTRING)), ...(signedAttrs ? { signedAttrs } : {}) };
  } catch (e) {
    if (e instanceof CsrError) throw e;
    throw new CsrError(`the renewal request cannot be read: ${(e as Error).message.split('\n')[0]}`);
  }
  let signed = content;
  if (signer.signedAttrs) {
    const md = signer.signedAttrs.map((a) => children(a, 'attribute')).find(([t]) => readOid(t, 'attribute type') === OID_MESSAGE_DIGEST)?.[1];
    const value = md ? children(md, 'messageDigest values', Type.SET)[0] : undefined;
    if (!value || !toBuffer(primitive(value, 'messageDigest', Type.OCTETSTRING)).equals(createHash(signer.digest).update(content).digest())) {
      throw new CsrError('the renewal request\'s messageDigest does not match its content');
    }
    // The signature covers the attributes as a DER SET OF (RFC 5652 5.4).
    signed = toBuffer(toDer(set(signer.signedAttrs)));
  }
  let ok: boolean;
  try {
    ok = verifySignature(signer.digest, signed, new X509Certificate(currentCertDer).publicKey, signer.signature);
  } catch {
    ok = false; // a key of another type, a signature of the wrong length
  }
  if (!ok) throw new CsrError('the renewal request is not signed by the certificate being renewed');
  return readCsr(content.toString('base64'), limits);
}
