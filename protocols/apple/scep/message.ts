// SCEP pkiMessages (RFC 8894 section 3): the signed attributes that carry
// messageType, transactionID and the nonces, reading a request and writing a
// CertRep.
import { randomBytes } from 'node:crypto';
import { octets, prim, primitive, printable, readString, Asn1FormatError, toBin, toBuffer, Type, type Asn1 } from '../../pki/asn1.js';
import { attribute, buildSignedData, FailInfo, readAttributes, readSignedData, type SignedData, type SignerInfo } from './cms.js';

export const SCEP_OID = {
  messageType: '2.16.840.1.113733.1.9.2',
  pkiStatus: '2.16.840.1.113733.1.9.3',
  failInfo: '2.16.840.1.113733.1.9.4',
  senderNonce: '2.16.840.1.113733.1.9.5',
  recipientNonce: '2.16.840.1.113733.1.9.6',
  transactionID: '2.16.840.1.113733.1.9.7',
} as const;

export const MessageType = {
  CertRep: 3,
  RenewalReq: 17,
  UpdateReq: 18,
  PKCSReq: 19,
  CertPoll: 20,
  GetCert: 21,
  GetCRL: 22,
} as const;

export const PkiStatus = { SUCCESS: 0, FAILURE: 2, PENDING: 3 } as const;

export interface PkiRequest {
  signed: SignedData;
  signer: SignerInfo;
  messageType: number;
  transactionId: string;
  /** The transactionID value as received, echoed byte for byte in the reply. */
  transactionIdNode: Asn1;
  senderNonce: Buffer;
}

/** The SCEP attributes of a signer, decoded; a missing one is malformed. */
export function scepAttributes(signer: SignerInfo, what: string) {
  if (!signer.signedAttrs) throw new Asn1FormatError(`${what}: no signed attributes`);
  const attrs = readAttributes(signer.signedAttrs, `${what} signedAttrs`);
  const need = (oid: string, name: string): Asn1 => {
    const v = attrs.get(oid);
    if (!v) throw new Asn1FormatError(`${what}: no ${name} attribute`);
    return v;
  };
  const text = (oid: string, name: string): string | undefined => (attrs.has(oid) ? readString(attrs.get(oid), name) : undefined);
  const nonce = (oid: string, name: string): Buffer | undefined => (attrs.has(oid) ? toBuffer(primitive(attrs.get(oid), name, Type.OCTETSTRING)) : undefined);
  const messageTypeText = readString(need(SCEP_OID.messageType, 'messageType'), 'messageType');
  if (!/^\d{1,3}$/.test(messageTypeText)) throw new Asn1FormatError(`${what}: messageType "${messageTypeText.slice(0, 8)}" is not a number`);
  const transactionIdNode = need(SCEP_OID.transactionID, 'transactionID');
  const failInfo = text(SCEP_OID.failInfo, 'failInfo');
  const pkiStatus = text(SCEP_OID.pkiStatus, 'pkiStatus');
  return {
    messageType: Number(messageTypeText),
    transactionId: readString(transactionIdNode, 'transactionID'),
    transactionIdNode,
    senderNonce: nonce(SCEP_OID.senderNonce, 'senderNonce'),
    recipientNonce: nonce(SCEP_OID.recipientNonce, 'recipientNonce'),
    pkiStatus: pkiStatus === undefined ? undefined : Number(pkiStatus),
    failInfo: failInfo === undefined ? undefined : Number(failInfo),
  };
}

/** Parses a request pkiMessage far enough to answer it: one signer, messageType, transactionID, senderNonce. */
export function readPkiRequest(der: Buffer, maxBytes: number): PkiRequest {
  const signed = readSignedData(der, maxBytes);
  if (signed.signers.length !== 1) throw new Asn1FormatError(`pkiMessage: ${signed.signers.length} signers, expected one`);
  const signer = signed.signers[0]!;
  const a = scepAttributes(signer, 'pkiMessage');
  if (!a.senderNonce || a.senderNonce.length === 0 || a.senderNonce.length > 64) throw new Asn1FormatError('pkiMessage: senderNonce missing or not 1–64 bytes');
  if (a.transactionId.length === 0 || a.transactionId.length > 256) throw new Asn1FormatError('pkiMessage: transactionID empty or longer than 256 characters');
  return { signed, signer, messageType: a.messageType, transactionId: a.transactionId, transactionIdNode: a.transactionIdNode, senderNonce: a.senderNonce };
}

export interface CertRepOptions {
  request: PkiRequest;
  /** The CA certificate as ASN.1 (signer of the reply, also sent along). */
  caCert: Asn1;
  sign(data: Buffer): Buffer;
  /** SUCCESS: the pkcsPKIEnvelope (EnvelopedData DER) holding the issued certificate. */
  envelope?: Buffer;
  /** FAILURE: why. */
  failInfo?: FailInfo;
}

/**
 * A CertRep: SignedData by the CA with messageType 3, pkiStatus, failInfo
 * (on failure), the echoed transactionID, a fresh senderNonce and the
 * request's senderNonce as recipientNonce. A failure carries empty content
 * (as micromdm's server does; Apple devices accept it).
 */
export function buildCertRep(o: CertRepOptions): Buffer {
  const success = o.envelope !== undefined;
  const attributes = [
    attribute(SCEP_OID.messageType, printable(String(MessageType.CertRep))),
    attribute(SCEP_OID.pkiStatus, printable(String(success ? PkiStatus.SUCCESS : PkiStatus.FAILURE))),
    attribute(SCEP_OID.transactionID, echo(o.request.transactionIdNode)),
    attribute(SCEP_OID.senderNonce, octets(toBin(randomBytes(16)))),
    attribute(SCEP_OID.recipientNonce, octets(toBin(o.request.senderNonce))),
  ];
  if (!success) attributes.push(attribute(SCEP_OID.failInfo, printable(String(o.failInfo ?? FailInfo.badRequest))));
  return buildSignedData({ content: o.envelope ?? Buffer.alloc(0), signerCert: o.caCert, sign: o.sign, attributes, certificates: [o.caCert] });
}

/** A copy of a received string value: same tag, same bytes. */
const echo = (n: Asn1): Asn1 => prim(n.type, n.value as string);
