// MS-MDE2 discovery: the Discover request decoded, the DiscoverResponse
// written. Pure: which URLs and which auth policy to answer with is the
// caller's. Reference: [MS-MDE2] 3.1.4.1 (Discover), 3.1.4.1.3.1
// (DiscoveryRequest), 3.1.4.1.3.2 (DiscoveryResponse).
import { child, children, el, type XmlElement, type XmlNode } from './xml.js';
import { SoapFault } from './soap.js';

export const DISCOVER_ACTION = 'http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover';
export const DISCOVER_RESPONSE_ACTION = 'http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse';
/** The request's namespace ends with a slash, the response's does not ([MS-MDE2] 4.1). */
export const DISCOVER_NS = 'http://schemas.microsoft.com/windows/management/2012/01/enrollment/';
export const DISCOVER_RESPONSE_NS = 'http://schemas.microsoft.com/windows/management/2012/01/enrollment';

export type AuthPolicy = 'OnPremise' | 'Federated' | 'Certificate';
const AUTH_POLICIES: readonly AuthPolicy[] = ['OnPremise', 'Federated', 'Certificate'];

export interface DiscoverRequest {
  emailAddress: string;
  /** "4.0", "5.0", … as sent. */
  requestVersion: string;
  /** e.g. CIMClient_Windows. */
  deviceType?: string;
  /** Dotted quad, e.g. 10.0.22631.2861. */
  applicationVersion?: string;
  /** The product type number ([MS-MDE2] 2.2.9.6), as sent. */
  osEdition?: string;
  /** What the device can do, in its order. */
  authPolicies: AuthPolicy[];
}

export interface DiscoverResult {
  authPolicy: AuthPolicy;
  enrollmentVersion: string;
  enrollmentPolicyServiceUrl: string;
  enrollmentServiceUrl: string;
  /** Federated only: the page the web authentication broker opens. */
  authenticationServiceUrl?: string;
}

const MAX = 512;
const field = (r: XmlElement, name: string): string | undefined => {
  const v = child(r, name)?.text;
  if (v !== undefined && v.length > MAX) throw new SoapFault('MessageFormat', `${name} is longer than ${MAX} characters`);
  return v || undefined;
};

/** Decodes the body of a Discover request. */
export function parseDiscover(body: XmlElement): DiscoverRequest {
  if (body.name !== 'Discover') throw new SoapFault('MessageFormat', `expected Discover, found <${body.name}>`);
  const r = child(body, 'request');
  if (!r) throw new SoapFault('MessageFormat', 'Discover without a request');
  const emailAddress = field(r, 'EmailAddress');
  if (!emailAddress) throw new SoapFault('MessageFormat', 'Discover without an EmailAddress');
  const requestVersion = field(r, 'RequestVersion') ?? '1.0';
  if (!/^\d{1,2}(\.\d{1,2})?$/.test(requestVersion)) throw new SoapFault('MessageFormat', `RequestVersion "${requestVersion}" is not a version`);
  const listed = children(child(r, 'AuthPolicies'), 'AuthPolicy').map((p) => p.text);
  // A device that lists none is an old client that only knows OnPremise.
  const authPolicies = (listed.length ? listed : ['OnPremise']).filter((p): p is AuthPolicy => (AUTH_POLICIES as readonly string[]).includes(p));
  const deviceType = field(r, 'DeviceType');
  const applicationVersion = field(r, 'ApplicationVersion');
  const osEdition = field(r, 'OSEdition');
  return { emailAddress, requestVersion, authPolicies, ...(deviceType ? { deviceType } : {}), ...(applicationVersion ? { applicationVersion } : {}), ...(osEdition ? { osEdition } : {}) };
}

/** The enrollment protocol version to answer with: what the device asked for, capped at what this server speaks. */
export function enrollmentVersionFor(requested: string, highest = '5.0'): string {
  const v = Math.min(Number(requested), Number(highest));
  return (v < 3 ? 3 : v).toFixed(1);
}

/** The body of a DiscoverResponse, elements in the order Microsoft's servers write them. */
export function discoverResponse(r: DiscoverResult): XmlNode {
  return el(
    'DiscoverResponse',
    { xmlns: DISCOVER_RESPONSE_NS },
    el(
      'DiscoverResult',
      undefined,
      el('AuthPolicy', undefined, r.authPolicy),
      el('EnrollmentVersion', undefined, r.enrollmentVersion),
      el('EnrollmentPolicyServiceUrl', undefined, r.enrollmentPolicyServiceUrl),
      el('EnrollmentServiceUrl', undefined, r.enrollmentServiceUrl),
      r.authenticationServiceUrl ? el('AuthenticationServiceUrl', undefined, r.authenticationServiceUrl) : undefined,
    ),
  );
}

/** Reads a DiscoverResponse body (the device side). */
export function readDiscoverResponse(body: XmlElement): DiscoverResult {
  const r = child(body, 'DiscoverResult');
  const get = (n: string) => child(r, n)?.text || undefined;
  const authPolicy = get('AuthPolicy') as AuthPolicy | undefined;
  const enrollmentServiceUrl = get('EnrollmentServiceUrl');
  if (body.name !== 'DiscoverResponse' || !authPolicy || !enrollmentServiceUrl) throw new Error('not a DiscoverResponse with AuthPolicy and EnrollmentServiceUrl');
  const authenticationServiceUrl = get('AuthenticationServiceUrl');
  return {
    authPolicy,
    enrollmentVersion: get('EnrollmentVersion') ?? '1.0',
    enrollmentPolicyServiceUrl: get('EnrollmentPolicyServiceUrl') ?? enrollmentServiceUrl,
    enrollmentServiceUrl,
    ...(authenticationServiceUrl ? { authenticationServiceUrl } : {}),
  };
}
