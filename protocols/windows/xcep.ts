// MS-XCEP GetPolicies: the request decoded, the GetPoliciesResponse written.
// Every element is written in schema order, and every nillable element
// without a value is present with xsi:nil="true" (Windows refuses a policy
// with one missing). Reference: [MS-XCEP] 3.1.4.1 and its schema (6.2);
// [MS-MDE2] 3.3 for what the Windows enrollment client reads.
import { child, el, type XmlElement, type XmlNode } from './xml.js';
import { SoapFault } from './soap.js';

export const GET_POLICIES_ACTION = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies';
export const GET_POLICIES_RESPONSE_ACTION = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse';
export const XCEP_NS = 'http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy';

export interface GetPoliciesRequest {
  /** client/lastUpdate, when the device sent one (not nil). */
  lastUpdate?: string;
  /** client/preferredLanguage. */
  preferredLanguage?: string;
}

/** The one certificate template Muster offers, as XCEP describes it. */
export interface EnrollmentPolicy {
  /** response/policyID: stable for this server's policy. */
  policyId: string;
  policyFriendlyName?: string;
  nextUpdateHours?: number;
  /** attributes/commonName: the template's name. */
  templateName: string;
  /** The template's OID (an oID of group 9, "enrollment object"). */
  templateOid: string;
  validitySeconds: number;
  renewalSeconds: number;
  minimalKeyLength: number;
  /** pKIDefaultKeySpec: 1 AT_KEYEXCHANGE, 2 AT_SIGNATURE. */
  keySpec: number;
  majorRevision: number;
  minorRevision: number;
}

/** The OIDs the policy refers to, by oIDReferenceID. */
const TEMPLATE_REF = 0;
const HASH_REF = 1;
const KEY_ALGORITHM_REF = 2;
const SHA256 = { value: '2.16.840.1.101.3.4.2.1', group: 1, name: 'sha256' };
const RSA = { value: '1.2.840.113549.1.1.1', group: 3, name: 'RSA' };

/** Decodes a GetPolicies body; the client's hints only, since Muster has one policy for everyone. */
export function parseGetPolicies(body: XmlElement): GetPoliciesRequest {
  if (body.name !== 'GetPolicies') throw new SoapFault('MessageFormat', `expected GetPolicies, found <${body.name}>`);
  const client = child(body, 'client');
  if (!client) throw new SoapFault('MessageFormat', 'GetPolicies without a client');
  const value = (name: string): string | undefined => {
    const e = child(client, name);
    if (!e || e.attrs.nil === 'true' || !e.text) return undefined;
    return e.text.slice(0, 64);
  };
  const lastUpdate = value('lastUpdate');
  const preferredLanguage = value('preferredLanguage');
  return { ...(lastUpdate ? { lastUpdate } : {}), ...(preferredLanguage ? { preferredLanguage } : {}) };
}

const nil = (name: string): XmlNode => el(name, { 'xsi:nil': 'true' });
const val = (name: string, v: string | number | boolean | undefined): XmlNode => (v === undefined ? nil(name) : el(name, undefined, String(v)));

/** The GetPoliciesResponse body. */
export function getPoliciesResponse(p: EnrollmentPolicy): XmlNode {
  const attributes = el(
    'attributes',
    undefined,
    el('commonName', undefined, p.templateName),
    el('policySchema', undefined, '3'),
    el('certificateValidity', undefined, el('validityPeriodSeconds', undefined, String(p.validitySeconds)), el('renewalPeriodSeconds', undefined, String(p.renewalSeconds))),
    el('permission', undefined, el('enroll', undefined, 'true'), el('autoEnroll', undefined, 'false')),
    el(
      'privateKeyAttributes',
      undefined,
      el('minimalKeyLength', undefined, String(p.minimalKeyLength)),
      val('keySpec', p.keySpec),
      nil('keyUsageProperty'),
      nil('permissions'),
      val('algorithmOIDReference', KEY_ALGORITHM_REF),
      nil('cryptoProviders'),
    ),
    el('revision', undefined, el('majorRevision', undefined, String(p.majorRevision)), el('minorRevision', undefined, String(p.minorRevision))),
    nil('supersededPolicies'),
    nil('privateKeyFlags'),
    nil('subjectNameFlags'),
    nil('enrollmentFlags'),
    nil('generalFlags'),
    // policySchema 3 with a hash algorithm: the reference must be given ([MS-XCEP] 3.1.4.1.3.1).
    val('hashAlgorithmOIDReference', HASH_REF),
    nil('rARequirements'),
    nil('keyArchivalAttributes'),
    nil('extensions'),
  );
  const oid = (o: { value: string; group: number; name: string }, ref: number): XmlNode =>
    el('oID', undefined, el('value', undefined, o.value), el('group', undefined, String(o.group)), el('oIDReferenceID', undefined, String(ref)), el('defaultName', undefined, o.name));
  return el(
    'GetPoliciesResponse',
    { xmlns: XCEP_NS },
    el(
      'response',
      undefined,
      el('policyID', undefined, p.policyId),
      val('policyFriendlyName', p.policyFriendlyName),
      val('nextUpdateHours', p.nextUpdateHours),
      // Always the full policy: there is one, and it is small.
      nil('policiesNotChanged'),
      el('policies', undefined, el('policy', undefined, el('policyOIDReference', undefined, String(TEMPLATE_REF)), nil('cAs'), attributes)),
    ),
    nil('cAs'),
    el('oIDs', undefined, oid({ value: p.templateOid, group: 9, name: p.templateName }, TEMPLATE_REF), oid(SHA256, HASH_REF), oid(RSA, KEY_ALGORITHM_REF)),
  );
}

/** What a device takes from a GetPoliciesResponse: the key size and hash to use. */
export interface PolicyChoice {
  minimalKeyLength: number;
  /** The hash algorithm OID, when the policy names one. */
  hashOid?: string;
}

/** Reads a GetPoliciesResponse body (the device side). */
export function readGetPoliciesResponse(body: XmlElement): PolicyChoice {
  const policy = child(child(child(body, 'response'), 'policies'), 'policy');
  const attrs = child(policy, 'attributes');
  const minimalKeyLength = Number(child(child(attrs, 'privateKeyAttributes'), 'minimalKeyLength')?.text);
  if (body.name !== 'GetPoliciesResponse' || !Number.isInteger(minimalKeyLength)) throw new Error('not a GetPoliciesResponse with a policy');
  const hashRef = child(attrs, 'hashAlgorithmOIDReference');
  const hashOid =
    hashRef && hashRef.attrs.nil !== 'true'
      ? child(
          (child(body, 'oIDs')?.children ?? []).find((o) => child(o, 'oIDReferenceID')?.text === hashRef.text),
          'value',
        )?.text
      : undefined;
  return { minimalKeyLength, ...(hashOid ? { hashOid } : {}) };
}
