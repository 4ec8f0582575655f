// The certificate authority Muster's protocols share (Apple SCEP, Windows WSTEP):
// one RSA key and self-signed certificate, created on first start or loaded,
// the key encrypted at rest. Certificates are built with node-forge and signed
// with node's crypto; the private key never leaves this module except
// re-encrypted (exportKeyPem).
import { X509Certificate, createCipheriv, createHash, createPrivateKey, generateKeyPairSync, pbkdf2Sync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import forge from 'node-forge';
import { algorithm, certParts, int, octets, oid, parseDer, seq, toBin, toBuffer, toDer, Type, Class, type Asn1 } from './asn1.js';

/** A clear, expected problem with the CA's key or certificate (wrong passphrase, missing file…). */
export class CaError extends Error {
  override name = 'CaError';
}

export interface CaSubject {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
}

export interface CaFileOptions {
  keyFile: string;
  certFile: string;
  passphrase: string;
  /** Used only when the CA is created. Default CN "Muster SCEP CA", O "Muster". */
  subject?: CaSubject;
  /** Used only when the CA is created. Default 3650. */
  validityDays?: number;
  keyBits?: number;
  now?: () => Date;
}

export interface CaPemOptions {
  /** PEM from a secret; an encrypted key needs the passphrase, a plain one is accepted from a secret store. */
  keyPem: string;
  certPem: string;
  passphrase?: string;
  now?: () => Date;
}

export type Eku = 'clientAuth' | 'serverAuth' | 'emailProtection' | 'codeSigning';

export interface IssueRequest {
  /** A verified PKCS#10 request: its subject (byte for byte) and public key are certified. */
  csr?: forge.pki.CertificateSigningRequest;
  /** Instead of a CSR. */
  publicKey?: forge.pki.rsa.PublicKey;
  subject?: forge.pki.CertificateField[];
  /** Default 365; never beyond the CA certificate's own end. */
  validityDays?: number;
  /** Default ["clientAuth"]. */
  ekus?: Eku[];
}

const OID_SHA256_RSA = '1.2.840.113549.1.1.11';
const OID_PBES2 = '1.2.840.113549.1.5.13';
const OID_PBKDF2 = '1.2.840.113549.1.5.12';
const OID_HMAC_SHA256 = '1.2.840.113549.2.9';
const OID_AES256_CBC = '2.16.840.1.101.3.4.1.42';
// OWASP's 2023 figure for PBKDF2-HMAC-SHA256; OpenSSL's (and so node's export) default is 2048.
const KDF_ITERATIONS = 600_000;
const DAY_MS = 86_400_000;
// Devices with a slightly slow clock must not see a certificate from the future.
const BACKDATE_MS = 5 * 60_000;

/** Lower-case hex SHA-256 of a certificate's DER (the store's identity key). */
export function sha256Fingerprint(cert: forge.pki.Certificate | Buffer | string): string {
  let der: Buffer;
  if (Buffer.isBuffer(cert)) der = cert;
  else if (typeof cert === 'string') der = toBuffer(forge.pki.pemToDer(cert).getBytes());
  else der = toBuffer(toDer(forge.pki.certificateToAsn1(cert)));
  return createHash('sha256').update(der).digest('hex');
}

/** A random positive 16-byte serial: top bit clear (positive), next bit set (no leading zero byte). */
function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = 0x40 | (b[0]! & 0x3f);
  return b.toString('hex');
}

/** "CN=x, O=y" in certificate order, for logs and the store; RFC 4514 special characters escaped. */
export function formatName(attrs: forge.pki.CertificateField[]): string {
  return attrs
    .map((a) => {
      let v = typeof a.value === 'string' ? a.value : '';
      if ((a.valueTagClass as number) === Type.UTF8) v = toBuffer(v).toString('utf8');
      return `${a.shortName ?? a.name ?? a.type}=${v.replace(/[,+"\\<>;=]/g, '\\$&')}`;
    })
    .join(', ');
}

/** Forge's typings lack getTBSCertificate. */
const getTbs = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): Asn1 }).getTBSCertificate;

export class CertificateAuthority {
  readonly cert: forge.pki.Certificate;
  readonly certDer: Buffer;
  readonly certPem: string;
  /** sha256Fingerprint of the CA certificate. */
  readonly fingerprint: string;
  /** The CA certificate in node's form, for verifying what devices present. */
  readonly x509: X509Certificate;
  readonly #key: KeyObject;
  readonly #forgeKey: forge.pki.rsa.PrivateKey;
  readonly #subject: Asn1;
  readonly #ski: string;
  readonly #now: () => Date;

  constructor(certDer: Buffer, key: KeyObject, now: () => Date = () => new Date()) {
    if (key.asymmetricKeyType !== 'rsa') throw new CaError(`the CA key must be RSA, not ${key.asymmetricKeyType}`);
    const node = parseDer(certDer, 'CA certificate');
    this.cert = forge.pki.certificateFromAsn1(node);
    this.certDer = certDer;
    this.certPem = forge.pki.certificateToPem(this.cert);
    this.fingerprint = sha256Fingerprint(certDer);
    this.x509 = new X509Certificate(certDer);
    if (!this.x509.checkPrivateKey(key)) throw new CaError('the CA certificate does not belong to the CA key');
    if (!this.x509.ca) throw new CaError('the CA certificate is not a CA certificate (basicConstraints cA is not set)');
    this.#key = key;
    this.#forgeKey = forge.pki.privateKeyFromPem(key.export({ type: 'pkcs8', format: 'pem' }) as string);
    this.#subject = certParts(node).subject;
    const ext = this.cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | undefined;
    this.#ski = ext?.subjectKeyIdentifier ? forge.util.hexToBytes(ext.subjectKeyIdentifier) : this.cert.generateSubjectKeyIdentifier().getBytes();
    this.#now = now;
  }

  /**
   * Issues an end-entity certificate: random 16-byte serial, keyUsage
   * digitalSignature + keyEncipherment, the requested EKUs (clientAuth by
   * default), SKI/AKI. The issuer (and a CSR's subject) are copied as the
   * original DER: Apple and Go chain by comparing raw name bytes, and forge
   * would re-encode names (multi-valued RDNs, string types) differently.
   */
  issue(req: IssueRequest): forge.pki.Certificate {
    const publicKey = req.csr?.publicKey ?? req.publicKey;
    if (!publicKey) throw new Error('issue: a CSR or a public key is required');
    const now = this.#now().getTime();
    const cert = forge.pki.createCertificate();
    cert.version = 2;
    cert.serialNumber = randomSerialHex();
    cert.publicKey = publicKey;
    cert.validity.notBefore = new Date(now - BACKDATE_MS);
    const end = now + (req.validityDays ?? 365) * DAY_MS;
    cert.validity.notAfter = new Date(Math.min(end, this.cert.validity.notAfter.getTime()));
    cert.setSubject(req.csr ? req.csr.subject.attributes : (req.subject ?? []));
    cert.setIssuer(this.cert.subject.attributes);
    const ekus = req.ekus ?? ['clientAuth'];
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', ...Object.fromEntries(ekus.map((e) => [e, true])) },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: this.#ski },
    ]);
    cert.signatureOid = OID_SHA256_RSA;
    cert.siginfo.algorithmOid = OID_SHA256_RSA;
    const tbs = getTbs(cert);
    const fields = tbs.value as Asn1[];
    fields[3] = this.#subject; // issuer: [0] version, serial, signature, issuer, validity, subject, …
    if (req.csr?.certificationRequestInfo) {
      const csrSubject = (req.csr.certificationRequestInfo.value as Asn1[])[1];
      if (csrSubject) fields[5] = csrSubject;
    }
    return this.#signCertificate(tbs);
  }

  #signCertificate(tbs: Asn1): forge.pki.Certificate {
    const signature = sign('sha256', toBuffer(toDer(tbs)), this.#key);
    const der = toDer(seq([tbs, algorithm(OID_SHA256_RSA), forge.asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, '\0' + toBin(signature))]));
    return forge.pki.certificateFromAsn1(parseDer(der, 'issued certificate'));
  }

  /**
   * Why `cert` is not a currently valid certificate from this CA, or
   * undefined when it is. Renewal relies on this instead of a challenge.
   */
  checkIssued(cert: X509Certificate): string | undefined {
    if (!cert.checkIssued(this.x509)) return 'not issued by this CA';
    if (!cert.verify(this.x509.publicKey)) return 'signature does not verify with the CA key';
    const now = this.#now().getTime();
    if (now < Date.parse(cert.validFrom)) return 'not valid yet';
    if (now > Date.parse(cert.validTo)) return 'expired';
    return undefined;
  }

  /** RSA signature (PKCS#1 v1.5) by the CA key, for SCEP responses. */
  sign(data: Buffer, hash: 'sha256' | 'sha384' | 'sha512' = 'sha256'): Buffer {
    return sign(hash, data, this.#key);
  }

  /**
   * Unwraps a key sent to the CA (RSAES-PKCS1-v1_5 key transport); undefined
   * when the padding is wrong. forge does it because node 20 refuses PKCS#1
   * v1.5 decryption (CVE-2023-46809).
   */
  unwrapKey(encrypted: Buffer): Buffer | undefined {
    try {
      return toBuffer(this.#forgeKey.decrypt(toBin(encrypted), 'RSAES-PKCS1-V1_5'));
    } catch {
      return undefined;
    }
  }

  /** The CA key as encrypted PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC). */
  exportKeyPem(passphrase: string): string {
    return encryptKeyPem(this.#key, passphrase);
  }

  /** A certificate as DER bytes. */
  static toDer(cert: forge.pki.Certificate): Buffer {
    return toBuffer(toDer(forge.pki.certificateToAsn1(cert)));
  }
}

/**
 * PKCS#8 EncryptedPrivateKeyInfo written by hand: forge's encryptRsaPrivateKey
 * runs PBKDF2 in JavaScript (seconds at a serious iteration count) and node's
 * export cannot choose the count. Reading it back is node's createPrivateKey.
 */
function encryptKeyPem(key: KeyObject, passphrase: string): string {
  if (!passphrase) throw new CaError('a passphrase is required to store the CA key');
  const pkcs8 = key.export({ type: 'pkcs8', format: 'der' });
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const dk = pbkdf2Sync(passphrase, salt, KDF_ITERATIONS, 32, 'sha256');
  const cipher = createCipheriv('aes-256-cbc', dk, iv);
  const encrypted = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  const info = seq([
    seq([
      oid(OID_PBES2),
      seq([
        seq([oid(OID_PBKDF2), seq([octets(toBin(salt)), int(KDF_ITERATIONS), algorithm(OID_HMAC_SHA256)])]),
        seq([oid(OID_AES256_CBC), octets(toBin(iv))]),
      ]),
    ]),
    octets(toBin(encrypted)),
  ]);
  return forge.pem.encode({ type: 'ENCRYPTED PRIVATE KEY', body: toDer(info) });
}

function decryptKeyPem(pem: string, passphrase: string | undefined, where: string): KeyObject {
  const encrypted = /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(pem);
  if (encrypted && !passphrase) throw new CaError(`${where} is encrypted and no passphrase was given`);
  try {
    return createPrivateKey(encrypted ? { key: pem, format: 'pem', passphrase: passphrase! } : { key: pem, format: 'pem' });
  } catch (e) {
    if (encrypted) throw new CaError(`${where} could not be decrypted: wrong passphrase (${(e as Error).message})`);
    throw new CaError(`${where} is not a PEM private key (${(e as Error).message})`);
  }
}

function certDerFromPem(pem: string, where: string): Buffer {
  try {
    return Buffer.from(new X509Certificate(pem).raw);
  } catch (e) {
    throw new CaError(`${where} is not a PEM certificate (${(e as Error).message})`);
  }
}

/** A new CA in memory: RSA key and a self-signed certificate (cA, keyCertSign). */
export function generateCa(o: { subject?: CaSubject; validityDays?: number; keyBits?: number; now?: () => Date } = {}): CertificateAuthority {
  const now = o.now ?? (() => new Date());
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: o.keyBits ?? 2048 });
  const forgeKey = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  const s = o.subject ?? { commonName: 'Muster SCEP CA', organization: 'Muster' };
  const utf8 = (shortName: string, value: string): forge.pki.CertificateField => ({ shortName, value: forge.util.encodeUtf8(value), valueTagClass: Type.UTF8 as number });
  const attrs: forge.pki.CertificateField[] = [];
  if (s.country) attrs.push({ shortName: 'C', value: s.country });
  if (s.organization) attrs.push(utf8('O', s.organization));
  if (s.organizationalUnit) attrs.push(utf8('OU', s.organizationalUnit));
  attrs.push(utf8('CN', s.commonName));
  const cert = forge.pki.createCertificate();
  cert.serialNumber = randomSerialHex();
  cert.publicKey = forge.pki.rsa.setPublicKey(forgeKey.n, forgeKey.e);
  const t = now().getTime();
  cert.validity.notBefore = new Date(t - BACKDATE_MS);
  cert.validity.notAfter = new Date(t + (o.validityDays ?? 3650) * DAY_MS);
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  // The CA is its own RA: it signs CertReps and receives the requests' key
  // transport, and some clients check keyUsage for both.
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forgeKey, forge.md.sha256.create());
  return new CertificateAuthority(CertificateAuthority.toDer(cert), privateKey, now);
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * The CA from PEM strings, or from files: created (key encrypted with the
 * passphrase, mode 0600) when neither file exists, loaded otherwise. A key on
 * disk must be encrypted; one file without the other is an error, never a
 * silent new CA (devices trust the old one).
 */
export async function loadOrCreateCa(o: CaFileOptions | CaPemOptions): Promise<CertificateAuthority> {
  if ('keyPem' in o) {
    const key = decryptKeyPem(o.keyPem, o.passphrase, 'the CA key');
    return new CertificateAuthority(certDerFromPem(o.certPem, 'the CA certificate'), key, o.now);
  }
  if (!o.passphrase) throw new CaError('a passphrase for the CA key is required');
  const [keyPem, certPem] = await Promise.all([readIfExists(o.keyFile), readIfExists(o.certFile)]);
  if (keyPem === undefined && certPem === undefined) {
    const ca = generateCa(o);
    await mkdir(dirname(o.keyFile), { recursive: true, mode: 0o700 });
    await mkdir(dirname(o.certFile), { recursive: true });
    try {
      // 'wx': two replicas starting together on one volume must not both create a CA.
      await writeFile(o.keyFile, ca.exportKeyPem(o.passphrase), { mode: 0o600, flag: 'wx' });
      await writeFile(o.certFile, ca.certPem, { mode: 0o644, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateCa(o);
      throw e;
    }
    return ca;
  }
  if (keyPem === undefined) throw new CaError(`${o.certFile} exists but the CA key ${o.keyFile} does not: restore the key (or remove both to start a new CA, which devices will not trust)`);
  if (certPem === undefined) throw new CaError(`${o.keyFile} exists but the CA certificate ${o.certFile} does not: restore it (or remove both to start a new CA)`);
  if (!keyPem.includes('ENCRYPTED')) throw new CaError(`${o.keyFile} is not encrypted; encrypt it (openssl pkcs8 -topk8 -v2 aes-256-cbc) or provide it as a secret`);
  const key = decryptKeyPem(keyPem, o.passphrase, o.keyFile);
  return new CertificateAuthority(certDerFromPem(certPem, o.certFile), key, o.now);
}
