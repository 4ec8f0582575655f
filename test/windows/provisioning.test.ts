// The wap-provisioningdoc an enrollment answers with, characteristic by
// characteristic: certificates named by their SHA-1 thumbprints, the WSTEP
// renewal, the w7 APPLICATION with both APPAUTH levels, the DMClient provider
// named as PROVIDER-ID with its poll schedule; values escaped, never CDATA.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, describe, expect, it } from 'vitest';
import { CertificateAuthority, generateCa } from '../../protocols/pki/ca.js';
import { DEFAULT_POLL, certSearchCriteria, checkPollSchedule, readProvisioningDoc, renewalDoc, thumbprint, writeProvisioningDoc, type ProvisioningInput } from '../../protocols/windows/provisioning.js';
import { parseXml, type XmlElement } from '../../protocols/windows/xml.js';
import { missingTool } from '../support/tools.js';

const noOpenssl = missingTool('openssl', 'openssl');
const dir = mkdtempSync(join(tmpdir(), 'muster-win-prov-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ca = generateCa();
const keys = forge.pki.rsa.generateKeyPair(1024);
const cert = ca.issue({ publicKey: keys.publicKey, subject: [{ shortName: 'CN', value: 'PC!01' }] });
const certDer = CertificateAuthority.toDer(cert);

const input = (over: Partial<ProvisioningInput> = {}): ProvisioningInput => ({
  caDer: ca.certDer,
  certDer,
  certStore: 'User',
  certSubject: 'CN=PC!01',
  providerId: 'Muster',
  providerName: 'Muster',
  managementUrl: 'https://mdm.example.com/ManagementServer/MDM.svc',
  entDmid: '6C2B5E1A-3D4F-4B7A-9E0D-1F2A3B4C5D6E',
  entDeviceName: 'DESKTOP-LAB01',
  upn: 'alex@example.com',
  poll: DEFAULT_POLL,
  renewal: { robo: true, periodDays: 42, retryIntervalDays: 4, serverUrl: 'https://mdm.example.com/EnrollmentServer/Enrollment.svc' },
  appAuth: { clientSecret: 'c-secret', clientNonce: 'Y2xpZW50', serverName: 'srv', serverSecret: 's-secret', serverNonce: 'c2VydmVy' },
  ...over,
});

const chars = (e: XmlElement | undefined): XmlElement[] => (e?.children ?? []).filter((c) => c.name === 'characteristic');
const types = (e: XmlElement | undefined): string[] => chars(e).map((c) => c.attrs.type ?? '');
const named = (e: XmlElement | undefined, type: string): XmlElement | undefined => chars(e).find((c) => c.attrs.type === type);
const parms = (e: XmlElement | undefined): Array<[string, string | undefined, string | undefined]> => (e?.children ?? []).filter((c) => c.name === 'parm').map((p) => [p.attrs.name!, p.attrs.value, p.attrs.datatype]);

/** What openssl says a certificate's SHA-1 fingerprint is, as CertificateStore spells it. */
function opensslThumbprint(der: Buffer): string {
  writeFileSync(join(dir, 'c.der'), der);
  const out = execFileSync('openssl', ['x509', '-inform', 'DER', '-in', join(dir, 'c.der'), '-noout', '-fingerprint', '-sha1'], { encoding: 'utf8' });
  return out.split('=')[1]!.trim().replace(/:/g, '').toUpperCase();
}

describe('provisioning document', () => {
  const doc = parseXml(writeProvisioningDoc(input()));

  it('installs the CA as a trusted root and the device certificate in My/User, both named by thumbprint', () => {
    expect(doc.name).toBe('wap-provisioningdoc');
    expect(doc.attrs.version).toBe('1.1');
    expect(types(doc)).toEqual(['CertificateStore', 'CertificateStore', 'APPLICATION', 'DMClient']);
    const [roots, mine] = chars(doc);
    expect(types(roots)).toEqual(['Root']);
    const system = named(named(roots, 'Root'), 'System');
    expect(types(system)).toEqual([thumbprint(ca.certDer)]);
    expect(thumbprint(ca.certDer)).toMatch(/^[0-9A-F]{40}$/);
    expect(parms(chars(system)[0])).toEqual([['EncodedCertificate', ca.certDer.toString('base64'), undefined]]);
    expect(types(mine)).toEqual(['My']);
    expect(types(named(mine, 'My'))).toEqual(['User', 'WSTEP']);
    const user = named(named(mine, 'My'), 'User');
    expect(types(user)).toEqual([thumbprint(certDer), 'PrivateKeyContainer']);
    expect(parms(chars(user)[0])).toEqual([['EncodedCertificate', certDer.toString('base64'), undefined]]);
  });

  it.skipIf(!!noOpenssl)('names the certificates by the SHA-1 fingerprints openssl computes', () => {
    expect(thumbprint(ca.certDer)).toBe(opensslThumbprint(ca.certDer));
    expect(thumbprint(certDer)).toBe(opensslThumbprint(certDer));
  });

  it('puts a device enrollment in My/System and points the certificate search there', () => {
    const d = parseXml(writeProvisioningDoc(input({ certStore: 'System' })));
    const my = named(chars(d)[1], 'My');
    expect(types(my)).toEqual(['System', 'WSTEP']);
    expect(parms(named(d, 'APPLICATION')).find(([n]) => n === 'SSLCLIENTCERTSEARCHCRITERIA')?.[1]).toBe('Subject=CN%3DPC!01&Stores=My%5CSystem');
  });

  it('enables automatic renewal with typed parameters, and leaves WSTEP out when renewal is off', () => {
    const renew = named(named(named(chars(doc)[1], 'My'), 'WSTEP'), 'Renew');
    expect(parms(renew)).toEqual([
      ['ROBOSupport', 'true', 'boolean'],
      ['RenewPeriod', '42', 'integer'],
      ['RetryInterval', '4', 'integer'],
      ['ServerURL', 'https://mdm.example.com/EnrollmentServer/Enrollment.svc', 'string'],
    ]);
    const { renewal: _r, ...rest } = input();
    void _r;
    expect(types(named(chars(parseXml(writeProvisioningDoc(rest)))[1], 'My'))).toEqual(['User']);
  });

  it('bootstraps the OMA-DM account (w7 APPLICATION) with both APPAUTH levels', () => {
    const app = named(doc, 'APPLICATION');
    expect(parms(app)).toEqual([
      ['APPID', 'w7', undefined],
      ['PROVIDER-ID', 'Muster', undefined],
      ['NAME', 'Muster', undefined],
      ['ADDR', 'https://mdm.example.com/ManagementServer/MDM.svc', undefined],
      ['CONNRETRYFREQ', '6', undefined],
      ['INITIALBACKOFFTIME', '30000', undefined],
      ['MAXBACKOFFTIME', '120000', undefined],
      ['BACKCOMPATRETRYDISABLED', undefined, undefined],
      ['DEFAULTENCODING', 'application/vnd.syncml.dm+xml', undefined],
      ['SSLCLIENTCERTSEARCHCRITERIA', 'Subject=CN%3DPC!01&Stores=My%5CUser', undefined],
    ]);
    const auths = chars(app);
    expect(auths.map((a) => a.attrs.type)).toEqual(['APPAUTH', 'APPAUTH']);
    const byLevel = Object.fromEntries(auths.map((a) => [parms(a).find(([n]) => n === 'AAUTHLEVEL')![1], Object.fromEntries(parms(a).map(([n, v]) => [n, v]))]));
    expect(Object.keys(byLevel)).toEqual(['CLIENT', 'APPSRV']);
    expect(byLevel.CLIENT).toEqual({ AAUTHLEVEL: 'CLIENT', AAUTHTYPE: 'DIGEST', AAUTHSECRET: 'c-secret', AAUTHDATA: 'Y2xpZW50' });
    expect(byLevel.APPSRV).toEqual({ AAUTHLEVEL: 'APPSRV', AAUTHTYPE: 'DIGEST', AAUTHNAME: 'srv', AAUTHSECRET: 's-secret', AAUTHDATA: 'c2VydmVy' });
  });

  it('names the DMClient provider as PROVIDER-ID and writes the poll schedule', () => {
    const d = parseXml(writeProvisioningDoc(input({ providerId: 'Contoso MDM', poll: { first: { everyMinutes: 2, times: 10 }, second: { everyMinutes: 30, times: 6 }, thenMinutes: 1440, onLogin: false } })));
    const app = named(d, 'APPLICATION');
    const providerId = parms(app).find(([n]) => n === 'PROVIDER-ID')![1];
    const provider = named(named(named(d, 'DMClient'), 'Provider'), providerId!);
    expect(provider).toBeDefined();
    expect(parms(provider)).toEqual([
      ['EntDMID', '6C2B5E1A-3D4F-4B7A-9E0D-1F2A3B4C5D6E', 'string'],
      ['EntDeviceName', 'DESKTOP-LAB01', 'string'],
      ['UPN', 'alex@example.com', 'string'],
    ]);
    expect(parms(named(provider, 'Poll'))).toEqual([
      ['NumberOfFirstRetries', '10', 'integer'],
      ['IntervalForFirstSetOfRetries', '2', 'integer'],
      ['NumberOfSecondRetries', '6', 'integer'],
      ['IntervalForSecondSetOfRetries', '30', 'integer'],
      ['NumberOfRemainingScheduledRetries', '0', 'integer'],
      ['IntervalForRemainingScheduledRetries', '1440', 'integer'],
      ['PollOnLogin', 'false', 'boolean'],
      ['AllUsersPollOnFirstLogin', 'false', 'boolean'],
    ]);
  });

  it('the default schedule is fast after enrollment, then every 8 hours', () => {
    expect(readProvisioningDoc(writeProvisioningDoc(input())).poll).toEqual({ first: { everyMinutes: 3, times: 15 }, second: { everyMinutes: 15, times: 12 }, thenMinutes: 480, onLogin: true });
    expect(() => checkPollSchedule({ ...DEFAULT_POLL, thenMinutes: 0 })).toThrow(/at least one minute/);
    expect(() => checkPollSchedule({ ...DEFAULT_POLL, first: { everyMinutes: 1.5, times: 2 } })).toThrow(/whole number/);
  });

  it('escapes what it embeds and never uses CDATA', () => {
    const name = 'Lab "A" <&> 1';
    const xml = writeProvisioningDoc(input({ entDeviceName: name, certSubject: 'CN=PC!01,O=A&B' }));
    expect(xml).not.toContain('CDATA');
    expect(xml).toContain('value="Lab &quot;A&quot; &lt;&amp;&gt; 1"');
    const back = readProvisioningDoc(xml);
    expect(back.dmClient.EntDeviceName).toBe(name);
    expect(back.application.SSLCLIENTCERTSEARCHCRITERIA).toBe('Subject=CN%3DPC!01%2CO%3DA%26B&Stores=My%5CUser');
  });

  it('URI-escapes the certificate search outside RFC 2396 unreserved characters', () => {
    expect(certSearchCriteria("CN=a-b_c.d!e~f*g'h(i)j k@l", 'User')).toBe("Subject=CN%3Da-b_c.d!e~f*g'h(i)j%20k%40l&Stores=My%5CUser");
  });

  it('a renewal document carries only the certificates and the provider id', () => {
    const d = parseXml(renewalDoc({ caDer: ca.certDer, certDer, certStore: 'User', providerId: 'Muster' }));
    expect(types(d)).toEqual(['CertificateStore', 'APPLICATION']);
    expect(types(chars(d)[0])).toEqual(['Root', 'My']);
    expect(types(named(named(chars(d)[0], 'My'), 'User'))).toEqual([thumbprint(certDer), 'PrivateKeyContainer']);
    expect(parms(named(d, 'APPLICATION'))).toEqual([['PROVIDER-ID', 'Muster', undefined]]);
  });
});
