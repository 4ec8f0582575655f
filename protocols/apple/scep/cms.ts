// The CMS (PKCS#7) pieces SCEP needs, on forge's ASN.1 and node's crypto.
// forge's pkcs7 cannot verify a signature, drops signed attributes it does
// not know (SCEP's are all custom OIDs), re-encodes issuer names, and handles
// only "data" inside an envelope, so SignedData and EnvelopedData are read and
// written here directly; the crypto is node's (RSA key transport unwrapping
// is the CA's, see ca.ts).
import forge from 'node-forge';
import { X509Certificate, constants, createCipheriv, createDecipheriv, createHash, publicEncrypt, randomBytes, verify } from 'node:crypto';
import {
  algorithm,
  algorithmOid,
  certParts,
  children,
  ctx,
  ctxPrim,
  derSet,
  int,
  octetContent,
  octets,
  oid,
  parseDer,
  primitive,
  readOid,
  Asn1FormatError,
  seq,
  set,
  toBin,
  toBuffer,
  toDer,
  Class,
  Type,
  type Asn1,
} from '../../pki/asn1.js';

export const OID = {
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  envelopedData: '1.2.840.113549.1.7.3',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  challengePassword: '1.2.840.113549.1.9.7',
  rsaEncryption: '1.2.840.113549.1.1.1',
} as const;

/** SCEP failInfo values (RFC 8894 3.2.1.4.5). */
export enum FailInfo {
  badAlg = 0,
  badMessageCheck = 1,
  badRequest = 2,
  badTime = 3,
  badCertId = 4,
}

/** A request that parsed but cannot be honoured: answered with a FAILURE CertRep. */
export class ScepFailure extends Error {
  override name = 'ScepFailure';
  constructor(
    readonly failInfo: FailInfo,
    message: string,
  ) {
    super(message);
  }
}

export type DigestName = 'sha1' | 'sha256' | 'sha384' | 'sha512';
export const DIGEST_OIDS: Record<string, DigestName> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
export const digestOid = (name: DigestName): string => Object.entries(DIGEST_OIDS).find(([, n]) => n === name)![0];

// rsaEncryption, or sha1/256/384/512WithRSAEncryption (some signers name the pair).
const RSA_SIGNATURE_OIDS = new Set([OID.rsaEncryption, '1.2.840.113549.1.1.5', '1.2.840.113549.1.1.11', '1.2.840.113549.1.1.12', '1.2.840.113549.1.1.13']);

export interface Cipher {
  oid: string;
  /** node's cipher name; 'des-cbc' is done with forge (OpenSSL 3 keeps single DES in its legacy provider). */
  node: string;
  keyLength: number;
  ivLength: number;
}
/** Content ciphers accepted in requests and used (the same one) in responses. */
export const CIPHERS: Record<string, Cipher> = {
  aes128: { oid: '2.16.840.1.101.3.4.1.2', node: 'aes-128-cbc', keyLength: 16, ivLength: 16 },
  aes192: { oid: '2.16.840.1.101.3.4.1.22', node: 'aes-192-cbc', keyLength: 24, ivLength: 16 },
  aes256: { oid: '2.16.840.1.101.3.4.1.42', node: 'aes-256-cbc', keyLength: 32, ivLength: 16 },
  des3: { oid: '1.2.840.113549.3.7', node: 'des-ede3-cbc', keyLength: 24, ivLength: 8 },
};
/** Single DES: never advertised, read only when allowed (micromdm's scepclient ≤ 2.1 sends it whatever GetCACaps says). */
export const DES_CBC: Cipher = { oid: '1.3.14.3.2.7', node: 'des-cbc', keyLength: 8, ivLength: 8 };
const cipherByOid = (id: string): Cipher | undefined => Object.values(CIPHERS).find((c) => c.oid === id);

// ------------------------------------------------------------------ attributes

export const attribute = (type: string, value: Asn1): Asn1 => seq([oid(type), set([value])]);

/** Attributes by type (the single value of each); a repeated type or a multi-valued one is malformed. */
export function readAttributes(attrs: Asn1[], what: string): Map<string, Asn1> {
  const out = new Map<string, Asn1>();
  for (const a of attrs) {
    const [type, values] = children(a, `${what} attribute`);
    const id = readOid(type, `${what} attribute type`);
    const vs = children(values, `${what} ${id} values`, Type.SET);
    if (out.has(id) || vs.length !== 1) throw new Asn1FormatError(`${what}: attribute ${id} must appear once with one value`);
    out.set(id, vs[0]!);
  }
  return out;
}

// ------------------------------------------------------------------ SignedData

export interface SignerInfo {
  /** IssuerAndSerialNumber (SEQUENCE) or [0] SubjectKeyIdentifier. */
  sid: Asn1;
  digestOid: string;
  /** The attributes as received; undefined when the signer has none. */
  signedAttrs: Asn1[] | undefined;
  signatureOid: string;
  signature: Buffer;
}

export interface SignedData {
  contentType: string;
  /** The encapsulated content's octets (empty when absent). */
  content: Buffer;
  /** Certificates as their original ASN.1. */
  certificates: Asn1[];
  signers: SignerInfo[];
}

function contentInfo(node: Asn1, what: string): { type: string; content: Asn1 | undefined } {
  const [type, content] = children(node, what);
  return { type: readOid(type, `${what} contentType`), content: content === undefined ? undefined : children(content, `${what} content`, 0, Class.CONTEXT_SPECIFIC)[0] };
}

export function readSignedData(der: Buffer, maxBytes: number, what = 'pkiMessage'): SignedData {
  const ci = contentInfo(parseDer(der, what, maxBytes), what);
  if (ci.type !== OID.signedData) throw new Asn1FormatError(`${what}: content type ${ci.type} is not signedData`);
  const fields = children(ci.content, `${what} SignedData`);
  let i = 2; // version, digestAlgorithms
  const [eType, eContent] = children(fields[i++], `${what} encapContentInfo`);
  const contentType = readOid(eType, `${what} eContentType`);
  const content = eContent ? toBuffer(octetContent(children(eContent, `${what} eContent`, 0, Class.CONTEXT_SPECIFIC)[0], `${what} eContent`)) : Buffer.alloc(0);
  let certificates: Asn1[] = [];
  if (fields[i]?.tagClass === Class.CONTEXT_SPECIFIC && fields[i]!.type === 0) {
    certificates = children(fields[i++], `${what} certificates`, 0, Class.CONTEXT_SPECIFIC).filter((c) => c.tagClass === Class.UNIVERSAL && c.type === Type.SEQUENCE);
  }
  if (fields[i]?.tagClass === Class.CONTEXT_SPECIFIC && fields[i]!.type === 1) i++; // crls
  const signers = children(fields[i], `${what} signerInfos`, Type.SET).map((s) => readSignerInfo(s, what));
  return { contentType, content, certificates, signers };
}

function readSignerInfo(node: Asn1, what: string): SignerInfo {
  const f = children(node, `${what} SignerInfo`);
  const sid = f[1];
  if (!sid) throw new Asn1FormatError(`${what}: SignerInfo without a signer identifier`);
  const digestOid = algorithmOid(f[2], `${what} digestAlgorithm`);
  let i = 3;
  let signedAttrs: Asn1[] | undefined;
  if (f[i]?.tagClass === Class.CONTEXT_SPECIFIC && f[i]!.type === 0) signedAttrs = children(f[i++], `${what} signedAttrs`, 0, Class.CONTEXT_SPECIFIC);
  const signatureOid = algorithmOid(f[i++], `${what} signatureAlgorithm`);
  const signature = toBuffer(primitive(f[i], `${what} signature`, Type.OCTETSTRING));
  return { sid, digestOid, signedAttrs, signatureOid, signature };
}

const sameDer = (a: Asn1, b: Asn1): boolean => toDer(a) === toDer(b);

/** Whether an IssuerAndSerialNumber or [0] SKI names this certificate. */
export function identifies(id: Asn1, cert: Asn1): boolean {
  try {
    const parts = certParts(cert);
    if (id.tagClass === Class.UNIVERSAL && id.type === Type.SEQUENCE) {
      const [issuer, serial] = children(id, 'IssuerAndSerialNumber');
      return !!issuer && !!serial && sameDer(issuer, parts.issuer) && sameDer(serial, parts.serial);
    }
    if (id.tagClass === Class.CONTEXT_SPECIFIC && id.type === 0 && typeof id.value === 'string') {
      const ski = skiOf(cert);
      return ski !== undefined && ski === id.value;
    }
  } catch {
    // a certificate we cannot read identifies nothing
  }
  return false;
}

const OID_SKI = '2.5.29.14';
function skiOf(cert: Asn1): string | undefined {
  const tbs = children(certParts(cert).tbs, 'tbsCertificate');
  const exts = tbs.find((f) => f.tagClass === Class.CONTEXT_SPECIFIC && f.type === 3);
  if (!exts) return undefined;
  for (const ext of children(children(exts, 'extensions', 3, Class.CONTEXT_SPECIFIC)[0], 'extensions')) {
    const e = children(ext, 'extension');
    if (readOid(e[0], 'extension id') !== OID_SKI) continue;
    const value = parseDer(primitive(e[e.length - 1], 'extension value', Type.OCTETSTRING), 'subjectKeyIdentifier');
    return primitive(value, 'subjectKeyIdentifier', Type.OCTETSTRING);
  }
  return undefined;
}

/**
 * Verifies a SignerInfo over `content` with `certDer`'s RSA key: the
 * messageDigest attribute must match and the signature must cover the DER
 * SET OF the signed attributes exactly as received (re-encoding a DER input
 * with forge reproduces it; signed attributes are DER by definition).
 */
export function verifySigner(signer: SignerInfo, content: Buffer, certDer: Buffer): void {
  const hash = DIGEST_OIDS[signer.digestOid];
  if (!hash) throw new ScepFailure(FailInfo.badAlg, `digest algorithm ${signer.digestOid} is not supported`);
  if (!RSA_SIGNATURE_OIDS.has(signer.signatureOid)) throw new ScepFailure(FailInfo.badAlg, `signature algorithm ${signer.signatureOid} is not supported`);
  if (!signer.signedAttrs) throw new ScepFailure(FailInfo.badMessageCheck, 'the signer has no signed attributes');
  const attrs = readAttributes(signer.signedAttrs, 'signedAttrs');
  const ct = attrs.get(OID.contentType);
  if (ct && readOid(ct, 'contentType attribute') !== OID.data) throw new ScepFailure(FailInfo.badMessageCheck, 'signed content type is not data');
  const md = attrs.get(OID.messageDigest);
  if (!md) throw new ScepFailure(FailInfo.badMessageCheck, 'no messageDigest attribute');
  if (!toBuffer(primitive(md, 'messageDigest', Type.OCTETSTRING)).equals(createHash(hash).update(content).digest())) {
    throw new ScepFailure(FailInfo.badMessageCheck, 'messageDigest does not match the content');
  }
  let key;
  try {
    key = new X509Certificate(certDer).publicKey;
  } catch (e) {
    throw new ScepFailure(FailInfo.badMessageCheck, `the signer certificate cannot be read (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new ScepFailure(FailInfo.badAlg, `signer key type ${key.asymmetricKeyType} is not supported`);
  const signed = toBuffer(toDer(set(signer.signedAttrs)));
  if (!verify(hash, signed, key, signer.signature)) throw new ScepFailure(FailInfo.badMessageCheck, 'the signature does not verify');
}

export interface SignOptions {
  /** Encapsulated content (empty for a failure CertRep). */
  content: Buffer;
  /** The signer's certificate as ASN.1 (its issuer and serial name the signer). */
  signerCert: Asn1;
  sign(data: Buffer): Buffer;
  digest?: 'sha256' | 'sha384' | 'sha512';
  /** Signed attributes besides contentType and messageDigest. */
  attributes: Asn1[];
  certificates: Asn1[];
}

/** A SignedData ContentInfo with one RSA signer and signed attributes, DER. */
export function buildSignedData(o: SignOptions): Buffer {
  const digest = o.digest ?? 'sha256';
  const parts = certParts(o.signerCert);
  const attrs = derSet([
    attribute(OID.contentType, oid(OID.data)),
    attribute(OID.messageDigest, octets(toBin(createHash(digest).update(o.content).digest()))),
    ...o.attributes,
  ]);
  const signature = o.sign(toBuffer(toDer(attrs)));
  const signerInfo = seq([
    int(1),
    seq([parts.issuer, parts.serial]),
    algorithm(digestOid(digest)),
    ctx(0, attrs.value as Asn1[]),
    algorithm(OID.rsaEncryption),
    octets(toBin(signature)),
  ]);
  const signedData = seq([
    int(1),
    set([algorithm(digestOid(digest))]),
    seq([oid(OID.data), ctx(0, [octets(toBin(o.content))])]),
    ...(o.certificates.length ? [ctx(0, o.certificates)] : []),
    set([signerInfo]),
  ]);
  return toBuffer(toDer(seq([oid(OID.signedData), ctx(0, [signedData])])));
}

/** A degenerate certificates-only SignedData (no content, no signers), DER. */
export function buildCertsOnly(certs: Asn1[]): Buffer {
  const signedData = seq([int(1), set([]), seq([oid(OID.data)]), ctx(0, certs), set([])]);
  return toBuffer(toDer(seq([oid(OID.signedData), ctx(0, [signedData])])));
}

// ------------------------------------------------------------------ EnvelopedData

/**
 * Decrypts an EnvelopedData ContentInfo sent to `me` (the CA certificate).
 * A key transport with bad padding gets a random key instead of an error of
 * its own (implicit rejection), so every decryption failure looks the same.
 */
export function openEnvelopedData(der: Buffer, me: Asn1, unwrapKey: (encrypted: Buffer) => Buffer | undefined, allowSingleDes = false): { content: Buffer; cipher: Cipher } {
  const ci = contentInfo(parseDer(der, 'pkcsPKIEnvelope'), 'pkcsPKIEnvelope');
  if (ci.type !== OID.envelopedData) throw new ScepFailure(FailInfo.badMessageCheck, `pkcsPKIEnvelope content type ${ci.type} is not envelopedData`);
  const f = children(ci.content, 'EnvelopedData');
  let i = 1;
  if (f[i]?.tagClass === Class.CONTEXT_SPECIFIC && f[i]!.type === 0) i++; // originatorInfo
  const keyTrans = children(f[i++], 'recipientInfos', Type.SET).filter((r) => r.tagClass === Class.UNIVERSAL && r.type === Type.SEQUENCE);
  const chosen = keyTrans.find((r) => identifies(children(r, 'recipientInfo')[1]!, me)) ?? keyTrans[0];
  if (!chosen) throw new ScepFailure(FailInfo.badMessageCheck, 'no key transport recipient');
  const r = children(chosen, 'KeyTransRecipientInfo');
  const keyAlg = algorithmOid(r[2], 'keyEncryptionAlgorithm');
  if (keyAlg !== OID.rsaEncryption) throw new ScepFailure(FailInfo.badAlg, `key encryption ${keyAlg} is not supported (rsaEncryption only)`);
  const encryptedKey = toBuffer(primitive(r[3], 'encryptedKey', Type.OCTETSTRING));

  const [ctype, calg, encrypted] = children(f[i], 'encryptedContentInfo');
  readOid(ctype, 'encryptedContentInfo contentType');
  const [algOid, ivNode] = children(calg, 'contentEncryptionAlgorithm');
  const algId = readOid(algOid, 'contentEncryptionAlgorithm');
  const cipher = cipherByOid(algId) ?? (allowSingleDes && algId === DES_CBC.oid ? DES_CBC : undefined);
  if (!cipher) throw new ScepFailure(FailInfo.badAlg, `content encryption ${readOid(algOid, 'contentEncryptionAlgorithm')} is not supported (AES-CBC or DES3-CBC)`);
  const iv = toBuffer(primitive(ivNode, 'content encryption IV', Type.OCTETSTRING));
  if (iv.length !== cipher.ivLength) throw new ScepFailure(FailInfo.badMessageCheck, `IV of ${iv.length} bytes for ${cipher.node}`);
  if (!encrypted) throw new ScepFailure(FailInfo.badMessageCheck, 'EnvelopedData without encrypted content');
  const ciphertext = toBuffer(octetContent(encrypted, 'encryptedContent', 0, Class.CONTEXT_SPECIFIC));

  let key = unwrapKey(encryptedKey);
  if (!key || key.length !== cipher.keyLength) key = randomBytes(cipher.keyLength);
  try {
    if (cipher === DES_CBC) return { content: forgeDesDecrypt(key, iv, ciphertext), cipher };
    const d = createDecipheriv(cipher.node, key, iv);
    return { content: Buffer.concat([d.update(ciphertext), d.final()]), cipher };
  } catch {
    throw new ScepFailure(FailInfo.badMessageCheck, 'the envelope could not be decrypted with the CA key');
  }
}

function forgeDesDecrypt(key: Buffer, iv: Buffer, ciphertext: Buffer): Buffer {
  const d = forge.cipher.createDecipher('DES-CBC', forge.util.createBuffer(toBin(key)));
  d.start({ iv: forge.util.createBuffer(toBin(iv)) });
  d.update(forge.util.createBuffer(toBin(ciphertext)));
  if (!d.finish()) throw new Error('bad padding');
  return toBuffer(d.output.getBytes());
}

/** An EnvelopedData ContentInfo for one RSA recipient certificate, DER. */
export function buildEnvelopedData(content: Buffer, recipientCert: Asn1, cipher: Cipher): Buffer {
  const parts = certParts(recipientCert);
  const publicKey = new X509Certificate(toBuffer(toDer(recipientCert))).publicKey;
  const key = randomBytes(cipher.keyLength);
  const iv = randomBytes(cipher.ivLength);
  const c = createCipheriv(cipher.node, key, iv);
  const encrypted = Buffer.concat([c.update(content), c.final()]);
  const encryptedKey = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, key);
  const envelopedData = seq([
    int(0),
    set([seq([int(0), seq([parts.issuer, parts.serial]), algorithm(OID.rsaEncryption), octets(toBin(encryptedKey))])]),
    seq([oid(OID.data), seq([oid(cipher.oid), octets(toBin(iv))]), ctxPrim(0, toBin(encrypted))]),
  ]);
  return toBuffer(toDer(seq([oid(OID.envelopedData), ctx(0, [envelopedData])])));
}
