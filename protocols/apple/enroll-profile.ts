// The enrollment profile (.mobileconfig) a device installs to join Muster:
// the SCEP CA as a trusted root, a SCEP payload that makes the device request
// its identity certificate from Muster's CA, and the MDM payload that names
// that identity, the server and the push topic. Signed (attached CMS) and
// served as application/x-apple-aspen-config, raw DER with nothing before it.
// Key names: Apple's device-management schemas (com.apple.security.scep,
// com.apple.mdm, com.apple.security.root).
import { randomUUID } from 'node:crypto';
import type { CertificateAuthority } from './scep/index.js';
import { encodePlist } from './plist.js';
import { signProfile, type ProfilePayload, type ProfileSigner } from './profiles.js';

export const ENROLLMENT_CONTENT_TYPE = 'application/x-apple-aspen-config';

/** Every MDM right: inspect and install profiles, lock, erase, query, manage settings and apps (1 | 2 | … | 4096). */
export const ALL_ACCESS_RIGHTS = 8191;

/**
 * What Muster's server supports: user channels (needed for macOS and Shared
 * iPad) and Bootstrap Token escrow. Apple spells the second without a hyphen.
 */
export const SERVER_CAPABILITIES = ['com.apple.mdm.per-user-connections', 'com.apple.mdm.bootstraptoken'] as const;

export class EnrollmentProfileError extends Error {
  override name = 'EnrollmentProfileError';
}

export interface EnrollmentProfileOptions {
  /** Where the device fetches commands (https). */
  serverUrl: string;
  /** Where the device checks in (https); the ServerURL when left out. */
  checkInUrl?: string;
  /** The APNs push topic, the UID of the push certificate: com.apple.mgmt.External.… */
  topic: string;
  scep: {
    /** The SCEP endpoint, e.g. https://mdm.example.com/mdm/apple/scep */
    url: string;
    /** The challenge the CA expects (a one-time challenge per profile is best). */
    challenge: string;
    /** The CA name devices send as GetCACert's message. Default "muster". */
    name?: string;
    /** Subject of the requested certificate. Default CN "Muster device identity", O = organization. */
    subject?: { commonName: string; organization?: string };
    /** 2048 (default) or 4096. */
    keySize?: 2048 | 4096;
  };
  /** The SCEP CA: its certificate is installed as a trusted root. */
  ca: Pick<CertificateAuthority, 'certDer'>;
  /** Top-level PayloadIdentifier. Default "dev.muster.enrollment". */
  identifier?: string;
  displayName?: string;
  description?: string;
  organization?: string;
  /** Sign check-in and command messages (Mdm-Signature header). Default true. */
  signMessage?: boolean;
  /** For the APNs sandbox (development push certificates). */
  useDevelopmentApns?: boolean;
  /** UUID source, for reproducible tests. Default random. */
  uuid?: () => string;
}

export interface EnrollmentProfile {
  PayloadType: 'Configuration';
  PayloadVersion: 1;
  PayloadIdentifier: string;
  PayloadUUID: string;
  PayloadDisplayName: string;
  PayloadDescription?: string;
  PayloadOrganization: string;
  PayloadScope: 'System';
  PayloadContent: ProfilePayload[];
}

function https(url: string, what: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new EnrollmentProfileError(`${what} "${url}" is not a URL`);
  }
  if (u.protocol !== 'https:') throw new EnrollmentProfileError(`${what} must be https (devices refuse anything else), not ${u.protocol}`);
  return url;
}

/** The enrollment profile as a plain object, ready for encodePlist. */
export function buildEnrollmentProfile(o: EnrollmentProfileOptions): EnrollmentProfile {
  if (!o.topic.startsWith('com.apple.mgmt.')) throw new EnrollmentProfileError(`topic "${o.topic}" is not an MDM push topic (com.apple.mgmt.…)`);
  if (!o.scep.challenge) throw new EnrollmentProfileError('a SCEP challenge is required');
  const uuid = o.uuid ?? (() => randomUUID().toUpperCase());
  const id = o.identifier ?? 'dev.muster.enrollment';
  const organization = o.organization ?? 'Muster';
  const subject = o.scep.subject ?? { commonName: 'Muster device identity', organization };
  const caUuid = uuid();
  const scepUuid = uuid();
  const mdmUuid = uuid();
  const profileUuid = uuid();

  const caPayload: ProfilePayload = {
    PayloadType: 'com.apple.security.root',
    PayloadVersion: 1,
    PayloadIdentifier: `${id}.ca`,
    PayloadUUID: caUuid,
    PayloadDisplayName: `${organization} device CA`,
    PayloadCertificateFileName: 'muster-ca.cer',
    PayloadContent: o.ca.certDer,
  };
  const scepPayload: ProfilePayload = {
    PayloadType: 'com.apple.security.scep',
    PayloadVersion: 1,
    PayloadIdentifier: `${id}.scep`,
    PayloadUUID: scepUuid,
    PayloadDisplayName: 'Device identity (SCEP)',
    PayloadContent: {
      URL: https(o.scep.url, 'the SCEP URL'),
      Name: o.scep.name ?? 'muster',
      Challenge: o.scep.challenge,
      Keysize: o.scep.keySize ?? 2048,
      'Key Type': 'RSA',
      // 1 signing | 4 encryption: the identity signs messages and receives key transport.
      'Key Usage': 5,
      // One RDN per inner array, each holding [type, value] pairs.
      Subject: [[['CN', subject.commonName]], ...(subject.organization ? [[['O', subject.organization]]] : [])],
    },
  };
  const mdmPayload: ProfilePayload = {
    PayloadType: 'com.apple.mdm',
    PayloadVersion: 1,
    PayloadIdentifier: `${id}.mdm`,
    PayloadUUID: mdmUuid,
    PayloadDisplayName: 'Mobile device management',
    ServerURL: https(o.serverUrl, 'the server URL'),
    ...(o.checkInUrl ? { CheckInURL: https(o.checkInUrl, 'the check-in URL') } : {}),
    Topic: o.topic,
    IdentityCertificateUUID: scepUuid,
    SignMessage: o.signMessage ?? true,
    AccessRights: ALL_ACCESS_RIGHTS,
    CheckOutWhenRemoved: true,
    ServerCapabilities: [...SERVER_CAPABILITIES],
    ...(o.useDevelopmentApns ? { UseDevelopmentAPNS: true } : {}),
  };
  return {
    PayloadType: 'Configuration',
    PayloadVersion: 1,
    PayloadIdentifier: id,
    PayloadUUID: profileUuid,
    PayloadDisplayName: o.displayName ?? `${organization} device management`,
    ...(o.description ? { PayloadDescription: o.description } : {}),
    PayloadOrganization: organization,
    PayloadScope: 'System',
    PayloadContent: [caPayload, scepPayload, mdmPayload],
  };
}

/** The signed .mobileconfig: CMS SignedData DER, to serve as ENROLLMENT_CONTENT_TYPE. */
export function enrollmentProfileBytes(o: EnrollmentProfileOptions, signer: ProfileSigner, now?: Date): Buffer {
  return signProfile(encodePlist(buildEnrollmentProfile(o)), signer, now);
}
