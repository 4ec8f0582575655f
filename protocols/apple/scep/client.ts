// The device side of SCEP, minimal: build a PKCSReq/RenewalReq and read the
// CertRep. Tests drive the server with it (next to real clients), and the
// simulated fleet can enroll through it. It reuses the CMS pieces the server
// uses, so the real-client tests are what keep both honest.
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { parseDer, printable, octets, toBin, toBuffer, toDer, type Asn1 } from '../../pki/asn1.js';
import { attribute, CIPHERS, identifies, openEnvelopedData, readSignedData, verifySigner, buildEnvelopedData, buildSignedData, type DigestName } from './cms.js';
import { MessageType, PkiStatus, scepAttributes, SCEP_OID } from './message.js';

export interface PkiRequestOptions {
  messageType: 'PKCSReq' | 'RenewalReq';
  csrDer: Buffer;
  /** Self-signed for PKCSReq; the certificate being renewed for RenewalReq. */
  signerCertDer: Buffer;
  signerKey: KeyObject;
  /** The recipient: the CA certificate from GetCACert. */
  caCertDer: Buffer;
  cipher?: keyof typeof CIPHERS;
  digest?: Exclude<DigestName, 'sha1'>;
  transactionId?: string;
  senderNonce?: Buffer;
}

export function buildPkiRequest(o: PkiRequestOptions): { der: Buffer; transactionId: string; senderNonce: Buffer } {
  const cipher = CIPHERS[o.cipher ?? 'aes256']!;
  const digest = o.digest ?? 'sha256';
  const envelope = buildEnvelopedData(o.csrDer, parseDer(o.caCertDer, 'CA certificate'), cipher);
  const transactionId = o.transactionId ?? createHash('sha256').update(o.csrDer).digest('hex');
  const senderNonce = o.senderNonce ?? randomBytes(16);
  const signerCert = parseDer(o.signerCertDer, 'signer certificate');
  const der = buildSignedData({
    content: envelope,
    signerCert,
    sign: (data) => forgeSign(o.signerKey, data, digest),
    digest,
    attributes: [
      attribute(SCEP_OID.messageType, printable(String(MessageType[o.messageType]))),
      attribute(SCEP_OID.transactionID, printable(transactionId)),
      attribute(SCEP_OID.senderNonce, octets(toBin(senderNonce))),
    ],
    certificates: [signerCert],
  });
  return { der, transactionId, senderNonce };
}

function forgeSign(key: KeyObject, data: Buffer, digest: Exclude<DigestName, 'sha1'>): Buffer {
  const k = forge.pki.privateKeyFromPem(key.export({ type: 'pkcs8', format: 'pem' }) as string);
  const md = forge.md[digest].create();
  md.update(toBin(data));
  return toBuffer(k.sign(md));
}

export interface CertRepResult {
  status: 'SUCCESS' | 'FAILURE' | 'PENDING';
  failInfo: number | undefined;
  transactionId: string;
  senderNonce: Buffer | undefined;
  recipientNonce: Buffer | undefined;
  /** SUCCESS: the certificates in the reply, DER, the issued one first. */
  certificates: Buffer[];
  /** SUCCESS: the OID of the cipher the reply was encrypted with. */
  cipherOid: string | undefined;
}

/**
 * Reads a CertRep: verifies the CA's signature, and on success decrypts the
 * envelope with the requester's key and lists the certificates inside.
 */
export function readCertRep(der: Buffer, o: { caCertDer: Buffer; recipientCertDer: Buffer; recipientKey: KeyObject }): CertRepResult {
  const signed = readSignedData(der, Infinity, 'CertRep');
  const signer = signed.signers[0];
  if (!signer || signed.signers.length !== 1) throw new Error('CertRep: expected one signer');
  const ca = parseDer(o.caCertDer, 'CA certificate');
  const signerCert = [...signed.certificates, ca].find((c) => identifies(signer.sid, c));
  if (!signerCert || toDer(signerCert) !== toDer(ca)) throw new Error('CertRep: not signed by the CA');
  verifySigner(signer, signed.content, o.caCertDer);
  const a = scepAttributes(signer, 'CertRep');
  if (a.messageType !== MessageType.CertRep) throw new Error(`CertRep: messageType ${a.messageType}`);
  const status = a.pkiStatus === PkiStatus.SUCCESS ? 'SUCCESS' : a.pkiStatus === PkiStatus.FAILURE ? 'FAILURE' : a.pkiStatus === PkiStatus.PENDING ? 'PENDING' : undefined;
  if (!status) throw new Error(`CertRep: pkiStatus ${a.pkiStatus}`);
  let certificates: Buffer[] = [];
  let cipherOid: string | undefined;
  if (status === 'SUCCESS') {
    const key = forge.pki.privateKeyFromPem(o.recipientKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    const me = parseDer(o.recipientCertDer, 'recipient certificate');
    const unwrap = (k: Buffer): Buffer | undefined => {
      try {
        return toBuffer(key.decrypt(toBin(k), 'RSAES-PKCS1-V1_5'));
      } catch {
        return undefined;
      }
    };
    const { content, cipher } = openEnvelopedData(signed.content, me, unwrap);
    cipherOid = cipher.oid;
    certificates = readSignedData(content, Infinity, 'degenerate SignedData').certificates.map((c: Asn1) => toBuffer(toDer(c)));
  }
  return { status, failInfo: a.failInfo, transactionId: a.transactionId, senderNonce: a.senderNonce, recipientNonce: a.recipientNonce, certificates, cipherOid };
}

/** A throwaway self-signed certificate for signing a PKCSReq (what devices do). */
export function selfSignedCert(key: KeyObject, commonName: string, days = 1): Buffer {
  const k = forge.pki.privateKeyFromPem(key.export({ type: 'pkcs8', format: 'pem' }) as string);
  const cert = forge.pki.createCertificate();
  cert.serialNumber = '01' + randomBytes(8).toString('hex');
  cert.publicKey = forge.pki.rsa.setPublicKey(k.n, k.e);
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
  cert.setSubject([{ shortName: 'CN', value: commonName }]);
  cert.setIssuer([{ shortName: 'CN', value: commonName }]);
  cert.sign(k, forge.md.sha256.create());
  return toBuffer(toDer(forge.pki.certificateToAsn1(cert)));
}

/** A PKCS#10 request (SHA-256, RSA) with an optional challengePassword, DER. */
export function buildCsr(key: KeyObject, subject: forge.pki.CertificateField[], challenge?: string): Buffer {
  const k = forge.pki.privateKeyFromPem(key.export({ type: 'pkcs8', format: 'pem' }) as string);
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.rsa.setPublicKey(k.n, k.e);
  csr.setSubject(subject);
  if (challenge !== undefined) csr.setAttributes([{ name: 'challengePassword', value: challenge }]);
  csr.sign(k, forge.md.sha256.create());
  return toBuffer(toDer(forge.pki.certificationRequestToAsn1(csr)));
}
