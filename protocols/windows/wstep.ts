// MS-WSTEP as MS-MDE2 profiles it: the RequestSecurityToken decoded (its
// PKCS#10 and the AdditionalContext the device describes itself with), the
// RequestSecurityTokenResponseCollection written around the provisioning
// document. Reference: [MS-MDE2] 3.4.4.1.1.1 (RST), 3.4.4.1.1.2 (RSTRC);
// [MS-WSTEP] 3.1.4.1.
import { child, children, el, path, type XmlElement, type XmlNode } from './xml.js';
import { BASE64_BINARY, NS, SoapFault, decodeBase64 } from './soap.js';

export const RST_ACTION = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep';
export const RSTRC_ACTION = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep';
export const ENROLLMENT_TOKEN_TYPE = 'http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken';
export const PROVISION_DOC_TYPE = 'http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc';
export const PKCS10_TYPE = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10';
export const PKCS7_TYPE = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7';
export const ISSUE = 'http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue';
export const RENEW = 'http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew';
export const WSTEP_NS = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment';

/** The AdditionalContext items Muster reads, decoded; every item is kept in `items` too. */
export interface EnrollmentContext {
  deviceId?: string;
  hwDevId?: string;
  osVersion?: string;
  osEdition?: string;
  deviceName?: string;
  /** e.g. CIMClient_Windows. */
  deviceType?: string;
  /** Full (a user's enrollment) or Device (the device's). */
  enrollmentType?: string;
  applicationVersion?: string;
  uxInitiated?: string;
  enrollmentData?: string;
  locale?: string;
  /** Every ContextItem by name, values in order (MAC and IMEI repeat). */
  items: Record<string, string[]>;
}

export interface RstRequest {
  requestType: 'issue' | 'renew';
  /** The base64 of the PKCS#10 (issue) or PKCS#7 (renew), as sent. */
  token: string;
  tokenType: 'pkcs10' | 'pkcs7';
  context: EnrollmentContext;
}

// Bounds on the context, which devices fill and the store keeps.
const MAX_ITEMS = 64;
const MAX_NAME = 64;
const MAX_VALUE = 2048;

const KNOWN: Record<string, keyof Omit<EnrollmentContext, 'items'>> = {
  DeviceID: 'deviceId',
  HWDevID: 'hwDevId',
  OSVersion: 'osVersion',
  OSEdition: 'osEdition',
  DeviceName: 'deviceName',
  DeviceType: 'deviceType',
  EnrollmentType: 'enrollmentType',
  ApplicationVersion: 'applicationVersion',
  UXInitiated: 'uxInitiated',
  EnrollmentData: 'enrollmentData',
  Locale: 'locale',
};

function readContext(ac: XmlElement | undefined): EnrollmentContext {
  const items: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  const list = children(ac, 'ContextItem');
  if (list.length > MAX_ITEMS) throw new SoapFault('MessageFormat', `AdditionalContext has more than ${MAX_ITEMS} items`);
  const ctx: EnrollmentContext = { items };
  for (const item of list) {
    const name = item.attrs.Name ?? '';
    const value = child(item, 'Value')?.text ?? '';
    if (!name || name.length > MAX_NAME) throw new SoapFault('MessageFormat', 'a ContextItem without a usable Name');
    if (value.length > MAX_VALUE) throw new SoapFault('MessageFormat', `ContextItem ${name} is longer than ${MAX_VALUE} characters`);
    (items[name] ??= []).push(value);
    const key = KNOWN[name];
    if (key && ctx[key] === undefined && value) ctx[key] = value;
  }
  return ctx;
}

/** Decodes the body of a RequestSecurityToken. */
export function parseRst(body: XmlElement): RstRequest {
  if (body.name !== 'RequestSecurityToken') throw new SoapFault('MessageFormat', `expected RequestSecurityToken, found <${body.name}>`);
  const tokenType = child(body, 'TokenType')?.text;
  if (tokenType !== ENROLLMENT_TOKEN_TYPE) throw new SoapFault('MessageFormat', `TokenType must be ${ENROLLMENT_TOKEN_TYPE}`);
  const rt = child(body, 'RequestType')?.text;
  if (rt !== ISSUE && rt !== RENEW) throw new SoapFault('MessageFormat', `RequestType ${rt ?? '(none)'} is neither Issue nor Renew`);
  const bst = child(body, 'BinarySecurityToken');
  if (!bst) throw new SoapFault('MessageFormat', 'the request carries no BinarySecurityToken');
  const valueType = bst.attrs.ValueType ?? '';
  const encoding = bst.attrs.EncodingType;
  if (encoding !== undefined && encoding !== BASE64_BINARY) throw new SoapFault('MessageFormat', `BinarySecurityToken EncodingType ${encoding} is not base64binary`);
  const kind = valueType === PKCS10_TYPE ? 'pkcs10' : valueType === PKCS7_TYPE ? 'pkcs7' : undefined;
  if (!kind) throw new SoapFault('MessageFormat', `BinarySecurityToken ValueType ${valueType || '(none)'} is neither PKCS#10 nor PKCS#7`);
  return { requestType: rt === ISSUE ? 'issue' : 'renew', token: bst.text, tokenType: kind, context: readContext(child(body, 'AdditionalContext')) };
}

/** The RequestSecurityTokenResponseCollection body around a provisioning document. */
export function rstrResponse(o: { provisioningDoc: string; requestId: string }): XmlNode {
  return el(
    'RequestSecurityTokenResponseCollection',
    { xmlns: NS.wst },
    el(
      'RequestSecurityTokenResponse',
      undefined,
      el('TokenType', undefined, ENROLLMENT_TOKEN_TYPE),
      el('DispositionMessage', { xmlns: WSTEP_NS }),
      el(
        'RequestedSecurityToken',
        undefined,
        el('BinarySecurityToken', { ValueType: PROVISION_DOC_TYPE, EncodingType: BASE64_BINARY, xmlns: NS.wsse }, Buffer.from(o.provisioningDoc, 'utf8').toString('base64')),
      ),
      el('RequestID', { xmlns: WSTEP_NS }, o.requestId),
    ),
  );
}

/** The WS-Security timestamp Microsoft's servers put on an RSTRC. */
export function timestampHeader(now: Date, lifetimeMs = 5 * 60_000): XmlNode {
  return el(
    'o:Security',
    { 's:mustUnderstand': '1', 'xmlns:o': NS.wsse },
    el('u:Timestamp', { 'u:Id': '_0' }, el('u:Created', undefined, now.toISOString()), el('u:Expires', undefined, new Date(now.getTime() + lifetimeMs).toISOString())),
  );
}

/** The provisioning document in an RSTRC body (the device side). */
export function readRstr(body: XmlElement): string {
  const bst = path(body, 'RequestSecurityTokenResponse', 'RequestedSecurityToken', 'BinarySecurityToken');
  if (body.name !== 'RequestSecurityTokenResponseCollection' || !bst) throw new Error('not a RequestSecurityTokenResponseCollection with a token');
  if (bst.attrs.ValueType !== PROVISION_DOC_TYPE) throw new Error(`unexpected token type ${bst.attrs.ValueType ?? '(none)'}`);
  const bytes = decodeBase64(bst.text);
  if (!bytes) throw new Error('the provisioning document is not base64');
  return bytes.toString('utf8');
}
