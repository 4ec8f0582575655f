// SOAP 1.2 as the Windows enrollment services speak it (MS-MDE2 discovery,
// MS-XCEP policy, MS-WSTEP enrollment): the envelope read once into a typed
// request (WS-Addressing headers, the WS-Security credential, the body
// element), responses and faults written back. XML goes through xml.ts only.
// Reference: [MS-MDE2] 2.2.10 (faults) and 3.4 (authentication), WS-Security
// 1.0 (UsernameToken, BinarySecurityToken), WS-Addressing 1.0.
import { randomUUID } from 'node:crypto';
import { XmlError, child, el, parseXml, path, textAt, type XmlElement, type XmlLimits, type XmlNode, writeXml } from './xml.js';

export const NS = {
  s: 'http://www.w3.org/2003/05/soap-envelope',
  a: 'http://www.w3.org/2005/08/addressing',
  u: 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd',
  wsse: 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd',
  wst: 'http://docs.oasis-open.org/ws-sx/ws-trust/200512',
  ac: 'http://schemas.xmlsoap.org/ws/2006/12/authorization',
  xsi: 'http://www.w3.org/2001/XMLSchema-instance',
  xsd: 'http://www.w3.org/2001/XMLSchema',
  /** WCF's diagnostics namespace, where Microsoft's servers put ActivityId. */
  diagnostics: 'http://schemas.microsoft.com/2004/09/servicemodel/diagnostics',
} as const;

export const ANONYMOUS = 'http://www.w3.org/2005/08/addressing/anonymous';
export const PASSWORD_TEXT = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText';
export const BASE64_BINARY = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary';
/** The federated (web authentication broker) token's ValueType ([MS-MDE2] 3.4). */
export const USER_TOKEN_TYPE = 'http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken';
export const SOAP_CONTENT_TYPE = 'application/soap+xml; charset=utf-8';
const ADDRESSING_FAULT = 'http://www.w3.org/2005/08/addressing/soap/fault';
const MAX_REASON = 512;

// ------------------------------------------------------------------ faults

/**
 * The fault subcodes of [MS-MDE2] 2.2.10. Each is a QName: the first five in
 * the SOAP envelope namespace (`s:`), the last two in WS-Addressing's (`a:`).
 * Windows turns them into MENROLL_E_DEVICE_* (0x80180001…0x80180007).
 */
export type FaultSubcode = 'MessageFormat' | 'Authentication' | 'Authorization' | 'CertificateRequest' | 'EnrollmentServer' | 'InternalServiceFault' | 'InvalidSecurity';
const SUBCODE_PREFIX: Record<FaultSubcode, 's' | 'a'> = {
  MessageFormat: 's',
  Authentication: 's',
  Authorization: 's',
  CertificateRequest: 's',
  EnrollmentServer: 's',
  InternalServiceFault: 'a',
  InvalidSecurity: 'a',
};
// Whose fault it is (SOAP 1.2 5.4.6): the device's input, or the server.
const SENDER: ReadonlySet<FaultSubcode> = new Set(['MessageFormat', 'Authentication', 'Authorization', 'CertificateRequest', 'InvalidSecurity']);

/**
 * The Windows 10 detail error types ([MS-MDE2] 2.2.10, deviceenrollmentserviceerror),
 * for a fault whose cause the user can act on.
 */
export type FaultErrorType = 'DeviceCapReached' | 'DeviceNotSupported' | 'NotSupported' | 'NotEligibleToRenew' | 'InMaintenance' | 'UserLicense' | 'InvalidEnrollmentData';

/**
 * A refusal the device is told about as a SOAP fault. The reason is shown to
 * people: never put a secret in it. Reasons that quote the request (an
 * action, an element name) are cut short, so a fault never echoes a large body.
 */
export class SoapFault extends Error {
  override name = 'SoapFault';
  constructor(
    readonly subcode: FaultSubcode,
    reason: string,
    readonly errorType?: FaultErrorType,
  ) {
    super(reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON)}…` : reason);
  }
  get code(): 'Sender' | 'Receiver' {
    return SENDER.has(this.subcode) ? 'Sender' : 'Receiver';
  }
}

// ------------------------------------------------------------------ requests

export type SecurityToken =
  /** OnPremise: WS-Security UsernameToken (PasswordText). */
  | { kind: 'username'; username: string; password: string }
  /** Federated: the opaque token the authentication page handed back, decoded. */
  | { kind: 'bearer'; valueType: string; token: string };

/** A SOAP request, decoded once. */
export interface SoapRequest {
  /** a:Action, trimmed. */
  action: string;
  /** a:MessageID, trimmed (echoed as a:RelatesTo). */
  messageId?: string;
  /** a:To. */
  to?: string;
  /** a:ReplyTo/a:Address. */
  replyTo?: string;
  /** The credential in wsse:Security, when there is one. */
  security?: SecurityToken;
  /** The single element in s:Body. */
  body: XmlElement;
}

/** Bounds on what a SOAP request may be; generous for a PKCS#10 and its context, small for anything else. */
export const SOAP_LIMITS: Required<XmlLimits> = { maxBytes: 256 * 1024, maxDepth: 16 };
const MAX_TEXT = 16 * 1024;

const trimmed = (s: string | undefined): string | undefined => {
  const t = s?.trim();
  return t ? t : undefined;
};

/** The namespace a prefix means on this element, from its own declarations (Windows declares them all on s:Envelope). */
const declared = (e: XmlElement, prefix: string): string | undefined => e.attrs[prefix ? `xmlns:${prefix}` : 'xmlns'];

/**
 * Reads a SOAP 1.2 envelope. Anything that is not one (bad XML, a DOCTYPE
 * with entities, too large or deep, SOAP 1.1, no body) is a MessageFormat
 * fault; a wsse:Security header that cannot be read is InvalidSecurity.
 */
export function readEnvelope(input: Buffer | string, limits: XmlLimits = SOAP_LIMITS): SoapRequest {
  let root: XmlElement;
  try {
    root = parseXml(input, { ...SOAP_LIMITS, ...limits });
  } catch (e) {
    if (e instanceof XmlError) throw new SoapFault('MessageFormat', `the request is not readable XML: ${e.message}`);
    throw e;
  }
  if (root.name !== 'Envelope') throw new SoapFault('MessageFormat', `expected a SOAP Envelope, found <${root.name}>`);
  const ns = declared(root, root.prefix);
  if (ns !== NS.s) throw new SoapFault('MessageFormat', `the envelope is not SOAP 1.2 (namespace ${ns ?? 'none'})`);
  const header = child(root, 'Header');
  const bodyEl = child(root, 'Body');
  const body = bodyEl?.children[0];
  if (!body) throw new SoapFault('MessageFormat', 'the envelope has no body');
  if (bodyEl.children.length > 1) throw new SoapFault('MessageFormat', 'the body has more than one element');
  const action = trimmed(textAt(header, 'Action'));
  if (!action) throw new SoapFault('MessageFormat', 'the request has no a:Action header');
  const messageId = trimmed(textAt(header, 'MessageID'));
  const to = trimmed(textAt(header, 'To'));
  const replyTo = trimmed(textAt(header, 'ReplyTo', 'Address'));
  const security = readSecurity(child(header, 'Security'));
  return { action, body, ...(messageId ? { messageId } : {}), ...(to ? { to } : {}), ...(replyTo ? { replyTo } : {}), ...(security ? { security } : {}) };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64 (whitespace allowed between groups, as devices wrap lines); undefined when it is not base64. */
export function decodeBase64(text: string): Buffer | undefined {
  const compact = text.replace(/\s+/g, '');
  if (compact.length % 4 !== 0 || !BASE64.test(compact)) return undefined;
  return Buffer.from(compact, 'base64');
}

function readSecurity(sec: XmlElement | undefined): SecurityToken | undefined {
  if (!sec) return undefined;
  const ut = child(sec, 'UsernameToken');
  if (ut) {
    const username = child(ut, 'Username')?.text ?? '';
    const password = child(ut, 'Password');
    if (!username || !password) throw new SoapFault('InvalidSecurity', 'the UsernameToken needs a Username and a Password');
    const type = password.attrs.Type;
    // PasswordDigest would need the cleartext on the server: only PasswordText is defined for MDE.
    if (type !== undefined && type !== PASSWORD_TEXT) throw new SoapFault('InvalidSecurity', 'only PasswordText passwords are supported');
    if (username.length > 320 || password.text.length > 1024) throw new SoapFault('InvalidSecurity', 'the UsernameToken is too long');
    return { kind: 'username', username, password: password.text };
  }
  const bst = child(sec, 'BinarySecurityToken');
  if (bst) {
    const valueType = bst.attrs.ValueType ?? '';
    if (bst.text.length > MAX_TEXT) throw new SoapFault('InvalidSecurity', 'the security token is too long');
    // [MS-MDE2] 3.4: the device base64-encodes the opaque token it was given.
    const decoded = decodeBase64(bst.text);
    const token = decoded ? decoded.toString('utf8') : bst.text.trim();
    if (!token) throw new SoapFault('InvalidSecurity', 'the security token is empty');
    return { kind: 'bearer', valueType, token };
  }
  return undefined;
}

// ------------------------------------------------------------------ responses

export interface ResponseHeaders {
  /** The response's a:Action. */
  action: string;
  /** The request's a:MessageID, echoed as a:RelatesTo. */
  relatesTo?: string | undefined;
  /** Correlates the answer with the server's log (WCF's ActivityId). */
  activityId?: string;
  /** More header elements (e.g. a wsse:Security timestamp). */
  extra?: XmlNode[];
}

const header = (h: ResponseHeaders): XmlNode => {
  const activity = h.activityId ?? randomUUID();
  return el(
    's:Header',
    undefined,
    el('a:Action', { 's:mustUnderstand': '1' }, h.action),
    el('ActivityId', { CorrelationId: activity, xmlns: NS.diagnostics }, activity),
    h.relatesTo ? el('a:RelatesTo', undefined, h.relatesTo) : undefined,
    ...(h.extra ?? []),
  );
};

/** A SOAP 1.2 response envelope around one body element. */
export function writeEnvelope(h: ResponseHeaders, body: XmlNode): string {
  const envelope = el('s:Envelope', { 'xmlns:s': NS.s, 'xmlns:a': NS.a, 'xmlns:u': NS.u }, header(h), el('s:Body', { 'xmlns:xsi': NS.xsi, 'xmlns:xsd': NS.xsd }, body));
  return writeXml(envelope, { declaration: true });
}

/** A fault envelope ([MS-MDE2] 2.2.10), with the Windows 10 detail when the fault has an error type. */
export function writeFault(f: SoapFault, h: Partial<ResponseHeaders> & { traceId?: string }): string {
  const traceId = h.traceId ?? randomUUID();
  const fault = el(
    's:Fault',
    undefined,
    el('s:Code', undefined, el('s:Value', undefined, `s:${f.code}`), el('s:Subcode', undefined, el('s:Value', undefined, `${SUBCODE_PREFIX[f.subcode]}:${f.subcode}`))),
    el('s:Reason', undefined, el('s:Text', { 'xml:lang': 'en-US' }, f.message)),
    f.errorType
      ? el(
          's:Detail',
          undefined,
          el(
            'DeviceEnrollmentServiceError',
            { xmlns: 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment' },
            el('ErrorType', undefined, f.errorType),
            el('Message', undefined, f.message),
            el('TraceId', undefined, traceId),
          ),
        )
      : undefined,
  );
  return writeEnvelope({ action: h.action ?? ADDRESSING_FAULT, relatesTo: h.relatesTo, activityId: traceId, ...(h.extra ? { extra: h.extra } : {}) }, fault);
}

// ------------------------------------------------------------------ reading answers (the device side)

/** A fault as a client reads it back. */
export interface ReadFault {
  code: string;
  subcode: string;
  reason: string;
  errorType?: string;
}

/** The fault in a response envelope, or undefined when the body is not a fault. */
export function readFault(envelope: XmlElement): ReadFault | undefined {
  const f = path(envelope, 'Body', 'Fault');
  if (!f) return undefined;
  const errorType = textAt(f, 'Detail', 'DeviceEnrollmentServiceError', 'ErrorType');
  return {
    code: textAt(f, 'Code', 'Value') ?? '',
    subcode: textAt(f, 'Code', 'Subcode', 'Value') ?? '',
    reason: textAt(f, 'Reason', 'Text') ?? '',
    ...(errorType ? { errorType } : {}),
  };
}

/** The WS-Addressing headers of an outgoing request, the way Windows writes them. */
export function requestHeader(o: { action: string; to: string; messageId?: string; security?: XmlNode }): XmlNode {
  return el(
    's:Header',
    undefined,
    el('a:Action', { 's:mustUnderstand': '1' }, o.action),
    el('a:MessageID', undefined, o.messageId ?? `urn:uuid:${randomUUID()}`),
    el('a:ReplyTo', undefined, el('a:Address', undefined, ANONYMOUS)),
    el('a:To', { 's:mustUnderstand': '1' }, o.to),
    o.security,
  );
}
