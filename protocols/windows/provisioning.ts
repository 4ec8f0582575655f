// The wap-provisioningdoc an enrollment answers with: the CA as a trusted
// root, the device's certificate, the WSTEP renewal settings, the w7
// APPLICATION (the OMA-DM account) and the DMClient provider with its poll
// schedule. Built as data and written by xml.ts, so every value is escaped
// (never CDATA). References: [MS-MDE2] 2.2.9.1; the CertificateStore CSP,
// w7 APPLICATION CSP and DMClient CSP references.
import { createHash } from 'node:crypto';
import { child, children, el, parseXml, type XmlElement, type XmlNode, writeXml } from './xml.js';

/** The DMClient poll schedule: a fast set after enrollment, a second set, then a steady interval. */
export interface PollSchedule {
  first: { everyMinutes: number; times: number };
  second: { everyMinutes: number; times: number };
  /** Every poll after both sets, for ever. */
  thenMinutes: number;
  /** Also poll when a user signs in. */
  onLogin: boolean;
}

/** Fast after enrollment (a new device gets its policy within minutes), then gentle: Windows has no push without WNS. */
export const DEFAULT_POLL: PollSchedule = { first: { everyMinutes: 3, times: 15 }, second: { everyMinutes: 15, times: 12 }, thenMinutes: 480, onLogin: true };

/** The DMClient CSP refuses a schedule whose numbers are all 0; intervals are whole minutes. */
export function checkPollSchedule(p: PollSchedule): PollSchedule {
  const ints = [p.first.everyMinutes, p.first.times, p.second.everyMinutes, p.second.times, p.thenMinutes];
  if (ints.some((n) => !Number.isInteger(n) || n < 0 || n > 1_000_000)) throw new Error('poll schedule: every value must be a whole number from 0');
  if (p.thenMinutes < 1) throw new Error('poll schedule: the steady interval must be at least one minute');
  return p;
}

/** Upper-case hex SHA-1 of a certificate's DER: the name CertificateStore gives it. */
export const thumbprint = (der: Buffer): string => createHash('sha1').update(der).digest('hex').toUpperCase();

export interface ProvisioningInput {
  caDer: Buffer;
  certDer: Buffer;
  /** My/User for a user's enrollment, My/System for the device's. */
  certStore: 'User' | 'System';
  /** The issued certificate's subject as SSLCLIENTCERTSEARCHCRITERIA names it ("CN=…"). */
  certSubject: string;
  /** PROVIDER-ID, and the DMClient provider's name: they must be equal. */
  providerId: string;
  /** NAME: shown in Settings. */
  providerName: string;
  /** ADDR: the OMA-DM endpoint, …/ManagementServer/MDM.svc. */
  managementUrl: string;
  /** EntDMID: the device id the server knows the device by. */
  entDmid: string;
  entDeviceName?: string;
  upn?: string;
  poll: PollSchedule;
  /** CertificateStore/My/WSTEP/Renew; omitted when undefined. */
  renewal?: { robo: boolean; periodDays: number; retryIntervalDays: number; serverUrl: string };
  /** APPAUTH secrets (required by the CSP, both levels; the DM session itself authenticates with the certificate). */
  appAuth: { clientSecret: string; clientNonce: string; serverName: string; serverSecret: string; serverNonce: string };
  /** Default 6, 30000, 120000: the connection retry and back-off of the DM client. */
  connRetryFreq?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

const parm = (name: string, value?: string, datatype?: 'boolean' | 'integer' | 'string'): XmlNode => el('parm', { name, value, datatype });
const characteristic = (type: string, ...kids: Array<XmlNode | undefined>): XmlNode => el('characteristic', { type }, ...kids);

/**
 * The client certificate search: "Subject=<subject>&Stores=My\<store>", each
 * side URI-escaped outside RFC 2396's unreserved set, which is exactly what
 * encodeURIComponent leaves alone (w7 APPLICATION CSP).
 */
export const certSearchCriteria = (subject: string, store: 'User' | 'System'): string => `Subject=${encodeURIComponent(subject)}&Stores=${encodeURIComponent(`My\\${store}`)}`;

/** The provisioning document as data. */
export function provisioningDoc(p: ProvisioningInput): XmlNode {
  const caThumb = thumbprint(p.caDer);
  const certThumb = thumbprint(p.certDer);
  const poll = p.poll;
  return el(
    'wap-provisioningdoc',
    { version: '1.1' },
    characteristic('CertificateStore', characteristic('Root', characteristic('System', characteristic(caThumb, parm('EncodedCertificate', p.caDer.toString('base64')))))),
    characteristic(
      'CertificateStore',
      characteristic(
        'My',
        characteristic(p.certStore, characteristic(certThumb, parm('EncodedCertificate', p.certDer.toString('base64'))), characteristic('PrivateKeyContainer')),
        p.renewal
          ? characteristic(
              'WSTEP',
              characteristic(
                'Renew',
                // The CSP insists on the datatypes of these three when they are given.
                parm('ROBOSupport', String(p.renewal.robo), 'boolean'),
                parm('RenewPeriod', String(p.renewal.periodDays), 'integer'),
                parm('RetryInterval', String(p.renewal.retryIntervalDays), 'integer'),
                parm('ServerURL', p.renewal.serverUrl, 'string'),
              ),
            )
          : undefined,
      ),
    ),
    characteristic(
      'APPLICATION',
      parm('APPID', 'w7'),
      parm('PROVIDER-ID', p.providerId),
      parm('NAME', p.providerName),
      parm('ADDR', p.managementUrl),
      parm('CONNRETRYFREQ', String(p.connRetryFreq ?? 6)),
      parm('INITIALBACKOFFTIME', String(p.initialBackoffMs ?? 30_000)),
      parm('MAXBACKOFFTIME', String(p.maxBackoffMs ?? 120_000)),
      parm('BACKCOMPATRETRYDISABLED'),
      parm('DEFAULTENCODING', 'application/vnd.syncml.dm+xml'),
      parm('SSLCLIENTCERTSEARCHCRITERIA', certSearchCriteria(p.certSubject, p.certStore)),
      // Both levels must be present (the CSP reference); CLIENT must be DIGEST, and both carry AAUTHDATA.
      characteristic('APPAUTH', parm('AAUTHLEVEL', 'CLIENT'), parm('AAUTHTYPE', 'DIGEST'), parm('AAUTHSECRET', p.appAuth.clientSecret), parm('AAUTHDATA', p.appAuth.clientNonce)),
      characteristic('APPAUTH', parm('AAUTHLEVEL', 'APPSRV'), parm('AAUTHTYPE', 'DIGEST'), parm('AAUTHNAME', p.appAuth.serverName), parm('AAUTHSECRET', p.appAuth.serverSecret), parm('AAUTHDATA', p.appAuth.serverNonce)),
    ),
    characteristic(
      'DMClient',
      characteristic(
        'Provider',
        characteristic(
          p.providerId,
          parm('EntDMID', p.entDmid, 'string'),
          p.entDeviceName ? parm('EntDeviceName', p.entDeviceName, 'string') : undefined,
          p.upn ? parm('UPN', p.upn, 'string') : undefined,
          characteristic(
            'Poll',
            parm('NumberOfFirstRetries', String(poll.first.times), 'integer'),
            parm('IntervalForFirstSetOfRetries', String(poll.first.everyMinutes), 'integer'),
            parm('NumberOfSecondRetries', String(poll.second.times), 'integer'),
            parm('IntervalForSecondSetOfRetries', String(poll.second.everyMinutes), 'integer'),
            // 0: the steady interval repeats for ever.
            parm('NumberOfRemainingScheduledRetries', '0', 'integer'),
            parm('IntervalForRemainingScheduledRetries', String(poll.thenMinutes), 'integer'),
            parm('PollOnLogin', String(poll.onLogin), 'boolean'),
            parm('AllUsersPollOnFirstLogin', String(poll.onLogin), 'boolean'),
          ),
        ),
      ),
    ),
  );
}

export const writeProvisioningDoc = (p: ProvisioningInput): string => writeXml(provisioningDoc(p));

/** A renewal's document: the new certificate (and the root), nothing of the DM account changes (certificate renewal reference). */
export function renewalDoc(p: Pick<ProvisioningInput, 'caDer' | 'certDer' | 'certStore' | 'providerId'>): string {
  return writeXml(
    el(
      'wap-provisioningdoc',
      { version: '1.1' },
      characteristic(
        'CertificateStore',
        characteristic('Root', characteristic('System', characteristic(thumbprint(p.caDer), parm('EncodedCertificate', p.caDer.toString('base64'))))),
        characteristic('My', characteristic(p.certStore, characteristic(thumbprint(p.certDer), parm('EncodedCertificate', p.certDer.toString('base64'))), characteristic('PrivateKeyContainer'))),
      ),
      characteristic('APPLICATION', parm('PROVIDER-ID', p.providerId)),
    ),
  );
}

// ------------------------------------------------------------------ reading (the device side)

/** What a device takes from its provisioning document. */
export interface ProvisionedSettings {
  /** Thumbprint → base64 DER. */
  roots: Record<string, string>;
  /** The client certificate: its store, thumbprint and base64 DER. */
  client: { store: string; thumbprint: string; der: string; privateKeyContainer: boolean };
  renewal?: Record<string, string>;
  /** w7 APPLICATION parms by name (APPAUTH excluded). */
  application: Record<string, string>;
  appAuth: Array<Record<string, string>>;
  providerId: string;
  dmClient: Record<string, string>;
  poll: PollSchedule;
}

const parms = (e: XmlElement | undefined): Record<string, string> => Object.fromEntries(children(e, 'parm').map((p) => [p.attrs.name ?? '', p.attrs.value ?? '']));
const typed = (e: XmlElement | undefined, type: string): XmlElement | undefined => children(e, 'characteristic').find((c) => c.attrs.type === type);

/** The new certificate in a renewal's document (the device side). */
export function readRenewalDoc(xml: string): { store: string; thumbprint: string; der: string; providerId: string } {
  const doc = parseXml(xml);
  const my = typed(children(doc, 'characteristic').find((c) => c.attrs.type === 'CertificateStore' && typed(c, 'My')), 'My');
  for (const store of ['User', 'System']) {
    const cert = typed(my, store)?.children.find((c) => c.name === 'characteristic' && c.attrs.type !== 'PrivateKeyContainer');
    const app = children(doc, 'characteristic').find((c) => c.attrs.type === 'APPLICATION');
    if (cert) return { store, thumbprint: cert.attrs.type ?? '', der: parms(cert).EncodedCertificate ?? '', providerId: parms(app)['PROVIDER-ID'] ?? '' };
  }
  throw new Error('the renewal document carries no client certificate');
}

/** Reads a provisioning document; throws when a part enrollment needs is missing. */
export function readProvisioningDoc(xml: string): ProvisionedSettings {
  const doc = parseXml(xml);
  if (doc.name !== 'wap-provisioningdoc') throw new Error('not a wap-provisioningdoc');
  const top = children(doc, 'characteristic');
  const stores = top.filter((c) => c.attrs.type === 'CertificateStore');
  const roots: Record<string, string> = {};
  let client: ProvisionedSettings['client'] | undefined;
  let renewal: Record<string, string> | undefined;
  for (const s of stores) {
    for (const c of typed(typed(s, 'Root'), 'System')?.children ?? []) roots[c.attrs.type ?? ''] = parms(c).EncodedCertificate ?? '';
    const my = typed(s, 'My');
    for (const storeName of ['User', 'System']) {
      const st = typed(my, storeName);
      const cert = st?.children.find((c) => c.name === 'characteristic' && c.attrs.type !== 'PrivateKeyContainer');
      if (st && cert) client = { store: storeName, thumbprint: cert.attrs.type ?? '', der: parms(cert).EncodedCertificate ?? '', privateKeyContainer: !!typed(st, 'PrivateKeyContainer') };
    }
    const renew = typed(typed(my, 'WSTEP'), 'Renew');
    if (renew) renewal = parms(renew);
  }
  const app = top.find((c) => c.attrs.type === 'APPLICATION');
  const application = parms(app);
  const appAuth = children(app, 'characteristic')
    .filter((c) => c.attrs.type === 'APPAUTH')
    .map(parms);
  const providerId = application['PROVIDER-ID'] ?? '';
  const provider = typed(typed(top.find((c) => c.attrs.type === 'DMClient'), 'Provider'), providerId);
  const pollParms = parms(typed(provider, 'Poll'));
  const n = (k: string): number => Number(pollParms[k]);
  if (!client || !app || !provider || !child(provider, 'characteristic')) throw new Error('the provisioning document lacks the client certificate, the w7 APPLICATION or its DMClient provider');
  return {
    roots,
    client,
    ...(renewal ? { renewal } : {}),
    application,
    appAuth,
    providerId,
    dmClient: parms(provider),
    poll: {
      first: { everyMinutes: n('IntervalForFirstSetOfRetries'), times: n('NumberOfFirstRetries') },
      second: { everyMinutes: n('IntervalForSecondSetOfRetries'), times: n('NumberOfSecondRetries') },
      thenMinutes: n('IntervalForRemainingScheduledRetries'),
      onLogin: pollParms.PollOnLogin === 'true',
    },
  };
}
