// The SCEP endpoint as a pure function: (operation, message, body) in,
// (status, content type, bytes) out. No HTTP here, so it is tested directly;
// routes.ts mounts it on fastify.
import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { children, Class, parseDer, readOid, readString, Asn1FormatError, toBuffer, toDer, type Asn1 } from '../../pki/asn1.js';
import { CertificateAuthority, formatName, sha256Fingerprint } from '../../pki/ca.js';
import type { ChallengeStore } from './challenge.js';
import { buildCertsOnly, buildEnvelopedData, CIPHERS, DES_CBC, FailInfo, identifies, OID, openEnvelopedData, ScepFailure, verifySigner } from './cms.js';
import { buildCertRep, MessageType, readPkiRequest, type PkiRequest } from './message.js';

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/**
 * iOS 10+ needs SHA-256 and AES or DES3; SCEPStandard (RFC 8894) promises
 * AES, SHA-256 and POSTPKIOperation; Renewal lets a device renew with its
 * current certificate instead of a challenge.
 */
export const CA_CAPS = ['POSTPKIOperation', 'SHA-256', 'AES', 'DES3', 'SCEPStandard', 'Renewal'] as const;

export interface ScepIssued {
  cert: forge.pki.Certificate;
  certDer: Buffer;
  /** Lower-case hex SHA-256 of certDer (the store's identity key). */
  fingerprint: string;
  serialNumber: string;
  notAfter: Date;
  csrSubject: string;
  transactionId: string;
  /** The challenge a PKCSReq was accepted with (a secret: do not log it); undefined for a renewal. */
  challengeUsed: string | undefined;
  messageType: 'PKCSReq' | 'RenewalReq';
  /** RenewalReq: the fingerprint of the certificate it was signed with. */
  renewalOf?: string;
}

export interface ScepLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const silentScepLogger: ScepLogger = { info: () => {}, warn: () => {}, error: () => {} };

export interface ScepOptions {
  ca: CertificateAuthority;
  challenges: ChallengeStore;
  /** Records an issued certificate. If it throws, the device gets a 500 and no certificate. */
  onIssued(issued: ScepIssued): void | Promise<void>;
  /** Largest pkiMessage accepted. Default 64 KiB. */
  maxBodyBytes?: number;
  /** Validity of issued certificates. Default 365 days. */
  validityDays?: number;
  /**
   * RenewalReq: a last say over a currently valid certificate from this CA
   * (e.g. refuse one the store has revoked). Default: allowed.
   */
  renewalAllowed?(fingerprint: string): boolean | Promise<boolean>;
  /**
   * Accept single-DES request envelopes (never advertised; the reply then
   * uses DES3). Off by default: DES protects the challenge poorly. micromdm's
   * scepclient ≤ 2.1 needs it; Apple devices do not.
   */
  allowSingleDes?: boolean;
  log?: ScepLogger;
}

export interface ScepRequest {
  method: string;
  operation: string | undefined;
  /** The `message` query parameter, already URL-decoded. */
  message: string | undefined;
  /** A POST body. */
  body: Buffer | undefined;
}

export interface ScepResponse {
  status: number;
  contentType: string;
  body: Buffer;
}

const text = (status: number, s: string): ScepResponse => ({ status, contentType: 'text/plain; charset=utf-8', body: Buffer.from(s + '\n') });
const printableOperation = (s: string): string => JSON.stringify(s.slice(0, 40));

export function createScepHandler(o: ScepOptions): (req: ScepRequest) => Promise<ScepResponse> {
  const maxBytes = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const log = o.log ?? silentScepLogger;
  const caCert = parseDer(o.ca.certDer, 'CA certificate');
  const sign = (data: Buffer): Buffer => o.ca.sign(data);
  const caps = Buffer.from(CA_CAPS.join('\n') + '\n');

  async function enroll(req: PkiRequest): Promise<Buffer> {
    const type = req.messageType;
    if (type !== MessageType.PKCSReq && type !== MessageType.RenewalReq) throw new ScepFailure(FailInfo.badRequest, `messageType ${type} is not supported`);
    if (req.signed.contentType !== OID.data) throw new ScepFailure(FailInfo.badMessageCheck, 'the signed content is not data');
    const signerCert = req.signed.certificates.find((c) => identifies(req.signer.sid, c));
    if (!signerCert) throw new ScepFailure(FailInfo.badMessageCheck, 'the signer certificate is not in the message');
    const signerDer = toBuffer(toDer(signerCert));
    verifySigner(req.signer, req.signed.content, signerDer);
    const { content, cipher } = openEnvelopedData(req.signed.content, caCert, (k) => o.ca.unwrapKey(k), o.allowSingleDes);
    const { csr, challenge } = readCsr(content);

    let challengeUsed: string | undefined;
    let renewalOf: string | undefined;
    if (type === MessageType.RenewalReq) {
      const why = o.ca.checkIssued(new X509Certificate(signerDer));
      if (why) throw new ScepFailure(FailInfo.badRequest, `RenewalReq signed with a certificate ${why}`);
      renewalOf = sha256Fingerprint(signerDer);
      if (o.renewalAllowed && !(await o.renewalAllowed(renewalOf))) throw new ScepFailure(FailInfo.badRequest, 'renewal refused for this certificate');
    } else {
      // Consumed last, after every other check: a malformed request must not burn a one-time challenge.
      if (challenge === undefined) throw new ScepFailure(FailInfo.badRequest, 'the CSR has no challengePassword');
      if (!(await o.challenges.consume(challenge))) throw new ScepFailure(FailInfo.badRequest, 'wrong, expired or already used challenge');
      challengeUsed = challenge;
    }

    const cert = o.ca.issue({ csr, validityDays: o.validityDays, ekus: ['clientAuth'] });
    const certDer = CertificateAuthority.toDer(cert);
    const issued: ScepIssued = {
      cert,
      certDer,
      fingerprint: sha256Fingerprint(certDer),
      serialNumber: cert.serialNumber,
      notAfter: cert.validity.notAfter,
      csrSubject: formatName(csr.subject.attributes),
      transactionId: req.transactionId,
      challengeUsed,
      messageType: type === MessageType.PKCSReq ? 'PKCSReq' : 'RenewalReq',
      ...(renewalOf ? { renewalOf } : {}),
    };
    await o.onIssued(issued);
    log.info('SCEP certificate issued', { transactionId: req.transactionId, subject: issued.csrSubject, serial: issued.serialNumber, fingerprint: issued.fingerprint, messageType: issued.messageType });
    // The reply uses the request's cipher, upgraded from single DES to DES3 (which node can write).
    return buildEnvelopedData(buildCertsOnly([parseDer(certDer, 'issued certificate')]), signerCert, cipher === DES_CBC ? CIPHERS.des3! : cipher);
  }

  async function pkiOperation(der: Buffer): Promise<ScepResponse> {
    const req = readPkiRequest(der, maxBytes);
    let reply: Buffer;
    try {
      reply = buildCertRep({ request: req, caCert, sign, envelope: await enroll(req) });
    } catch (e) {
      // Past the outer message, bad structure is a failed message check, answered in SCEP.
      const failure = e instanceof ScepFailure ? e : e instanceof Asn1FormatError ? new ScepFailure(FailInfo.badMessageCheck, e.message) : undefined;
      if (!failure) throw e;
      log.warn('SCEP request refused', { transactionId: req.transactionId, messageType: req.messageType, failInfo: FailInfo[failure.failInfo], reason: failure.message });
      reply = buildCertRep({ request: req, caCert, sign, failInfo: failure.failInfo });
    }
    return { status: 200, contentType: 'application/x-pki-message', body: reply };
  }

  function messageFromQuery(message: string | undefined): Buffer {
    if (!message) throw new Asn1FormatError('PKIOperation by GET needs a message parameter');
    // A "+" sent unescaped arrives as a space; some clients wrap lines.
    const b64 = message.replace(/ /g, '+').replace(/[\r\n]/g, '');
    if (b64.length > Math.ceil(maxBytes / 3) * 4 + 4) throw new Asn1FormatError(`message: more than ${maxBytes} bytes`);
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw new Asn1FormatError('message: not base64');
    return Buffer.from(b64, 'base64');
  }

  return async function handle(req: ScepRequest): Promise<ScepResponse> {
    try {
      switch (req.operation) {
        case 'GetCACaps':
          return { status: 200, contentType: 'text/plain', body: caps };
        case 'GetCACert':
          return { status: 200, contentType: 'application/x-x509-ca-cert', body: o.ca.certDer };
        case 'PKIOperation':
          if (req.method === 'POST') {
            if (!req.body || req.body.length === 0) throw new Asn1FormatError('PKIOperation by POST needs a body');
            if (req.body.length > maxBytes) throw new Asn1FormatError(`message: ${req.body.length} bytes, more than ${maxBytes}`);
            return await pkiOperation(req.body);
          }
          return await pkiOperation(messageFromQuery(req.message));
        case undefined:
          return text(400, 'missing operation');
        default:
          return text(400, `unknown operation ${printableOperation(req.operation)}`);
      }
    } catch (e) {
      if (e instanceof Asn1FormatError) {
        log.warn('SCEP request malformed', { operation: req.operation, reason: e.message });
        return text(400, `malformed SCEP request: ${e.message}`);
      }
      log.error('SCEP request failed', { operation: req.operation, error: (e as Error).message });
      return text(500, 'internal error');
    }
  };
}

/** Parses and verifies the PKCS#10 request inside the envelope; finds its challengePassword. */
function readCsr(der: Buffer): { csr: forge.pki.CertificateSigningRequest; challenge: string | undefined } {
  let csr: forge.pki.CertificateSigningRequest;
  try {
    csr = forge.pki.certificationRequestFromAsn1(parseDer(der, 'CSR'), true);
  } catch (e) {
    throw new ScepFailure(FailInfo.badMessageCheck, `the CSR cannot be read (${(e as Error).message.split('\n')[0]})`);
  }
  let ok: boolean;
  try {
    ok = csr.verify();
  } catch {
    ok = false; // forge throws for signature algorithms it does not know
  }
  if (!ok) throw new ScepFailure(FailInfo.badMessageCheck, 'the CSR signature does not verify');
  return { csr, challenge: challengeOf(csr.certificationRequestInfo) };
}

function challengeOf(info: Asn1 | null): string | undefined {
  const attrs = (info?.value as Asn1[] | undefined)?.find((n) => n.tagClass === Class.CONTEXT_SPECIFIC && n.type === 0);
  if (!attrs) return undefined;
  for (const a of children(attrs, 'CSR attributes', 0, Class.CONTEXT_SPECIFIC)) {
    const [type, values] = children(a, 'CSR attribute');
    if (readOid(type, 'CSR attribute type') !== OID.challengePassword) continue;
    return readString(children(values, 'challengePassword values', 17)[0], 'challengePassword');
  }
  return undefined;
}
