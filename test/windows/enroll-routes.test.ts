// Policy.svc, Enrollment.svc and the federated page over HTTP (fastify
// inject), fed captured-style requests: the GetPoliciesResponse and the
// RequestSecurityTokenResponseCollection element by element, credentials
// (one-time, reused, wrong, expired; the policy request never uses one up),
// bad CSRs, entity bombs, the federated token flow.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { challengeDigest } from '../../controller/store/challenges.js';
import type { Store } from '../../controller/store/index.js';
import { generateCa, type CertificateAuthority } from '../../protocols/pki/ca.js';
import { CREDENTIAL_PURPOSE, createWindowsEnrollService, issueWindowsCredential, type WindowsEnrollService } from '../../protocols/windows/enroll-service.js';
import { windowsEnrollRoutes } from '../../protocols/windows/enroll-routes.js';
import { readProvisioningDoc, thumbprint } from '../../protocols/windows/provisioning.js';
import { windowsCsr } from '../../protocols/windows/simulator/enroll-client.js';
import { parseXml, type XmlElement } from '../../protocols/windows/xml.js';
import { testDatabase, type TestDatabase } from '../support/db.js';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/windows/enroll', name), 'utf8');
const quiet = { info: () => {}, warn: () => {}, error: () => {} };
const names = (e: XmlElement | undefined) => (e?.children ?? []).map((c) => c.name);
const at = (e: XmlElement | undefined, ...path: string[]): XmlElement | undefined => path.reduce<XmlElement | undefined>((x, n) => x?.children.find((c) => c.name === n), e);
const fill = (xml: string, v: Record<string, string>) => xml.replace(/\{\{(\w+)\}\}/g, (_m, k: string) => v[k] ?? `{{${k}}}`);
const xmlText = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

describe('Windows enrollment endpoints', () => {
  let tdb: TestDatabase;
  let store: Store;
  let ca: CertificateAuthority;
  let service: WindowsEnrollService;
  let app: FastifyInstance;
  let n = 0;
  const deviceId = () => `6C2B5E1A-3D4F-4B7A-9E0D-${String(++n).padStart(12, '0')}`;

  const post = (path: string, body: string) => app.inject({ method: 'POST', url: `/EnrollmentServer/${path}`, payload: body, headers: { 'content-type': 'application/soap+xml; charset=utf-8' } });
  const policyRequest = (username: string, password: string) => post('Policy.svc', fill(fixture('get-policies.xml'), { USERNAME: xmlText(username), PASSWORD: xmlText(password) }));
  const csr = (cn = 'LAB-PC!01') => windowsCsr({ commonName: cn }).csrDer.toString('base64');
  const enrollRequest = (v: { USERNAME: string; PASSWORD: string; CSR?: string; DEVICEID?: string }) => post('Enrollment.svc', fill(fixture('rst-onpremise.xml'), { CSR: csr(), DEVICEID: deviceId(), ...v, USERNAME: xmlText(v.USERNAME), PASSWORD: xmlText(v.PASSWORD) }));
  const faultOf = (body: string) => {
    const f = at(parseXml(body), 'Body', 'Fault')!;
    return { code: at(f, 'Code', 'Value')?.text, subcode: at(f, 'Code', 'Subcode', 'Value')?.text, reason: at(f, 'Reason', 'Text')?.text ?? '', errorType: at(f, 'Detail', 'DeviceEnrollmentServiceError', 'ErrorType')?.text };
  };

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    ca = generateCa();
    service = createWindowsEnrollService({ store, ca, config: { publicUrl: 'https://mdm.example.com', credentialDomain: 'example.com' }, log: quiet });
    app = Fastify();
    await app.register(windowsEnrollRoutes, { service, log: quiet });
  });
  afterAll(async () => {
    await app?.close();
    await tdb?.cleanup();
  });

  describe('Policy.svc (MS-XCEP GetPolicies)', () => {
    it('answers with the policy, every element in schema order and every empty nillable one nil', async () => {
      const cred = await service.issueCredential();
      const r = await policyRequest(cred.username, cred.password);
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe('application/soap+xml; charset=utf-8');
      const env = parseXml(r.body);
      expect(at(env, 'Header', 'Action')!.text).toBe('http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse');
      expect(at(env, 'Header', 'RelatesTo')!.text).toBe('urn:uuid:72048B64-0F19-448F-8C2E-B4C661860AA0');
      const body = at(env, 'Body')!;
      expect(body.attrs['xmlns:xsi']).toBe('http://www.w3.org/2001/XMLSchema-instance');
      const gpr = at(body, 'GetPoliciesResponse')!;
      expect(gpr.attrs.xmlns).toBe('http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy');
      expect(names(gpr)).toEqual(['response', 'cAs', 'oIDs']);
      const response = at(gpr, 'response')!;
      expect(names(response)).toEqual(['policyID', 'policyFriendlyName', 'nextUpdateHours', 'policiesNotChanged', 'policies']);
      expect(at(response, 'policyID')!.text).toMatch(/^\{[0-9A-F-]{36}\}$/);
      const policy = at(response, 'policies', 'policy')!;
      expect(names(policy)).toEqual(['policyOIDReference', 'cAs', 'attributes']);
      const attrs = at(policy, 'attributes')!;
      expect(names(attrs)).toEqual([
        'commonName', 'policySchema', 'certificateValidity', 'permission', 'privateKeyAttributes', 'revision', 'supersededPolicies', 'privateKeyFlags',
        'subjectNameFlags', 'enrollmentFlags', 'generalFlags', 'hashAlgorithmOIDReference', 'rARequirements', 'keyArchivalAttributes', 'extensions',
      ]);
      expect(names(at(attrs, 'certificateValidity'))).toEqual(['validityPeriodSeconds', 'renewalPeriodSeconds']);
      expect(at(attrs, 'certificateValidity', 'validityPeriodSeconds')!.text).toBe(String(365 * 86400));
      expect(at(attrs, 'certificateValidity', 'renewalPeriodSeconds')!.text).toBe(String(42 * 86400));
      expect(names(at(attrs, 'permission'))).toEqual(['enroll', 'autoEnroll']);
      const pka = at(attrs, 'privateKeyAttributes')!;
      expect(names(pka)).toEqual(['minimalKeyLength', 'keySpec', 'keyUsageProperty', 'permissions', 'algorithmOIDReference', 'cryptoProviders']);
      expect(at(pka, 'minimalKeyLength')!.text).toBe('2048');
      expect(names(at(attrs, 'revision'))).toEqual(['majorRevision', 'minorRevision']);
      // Exactly these are nil, each written with xsi:nil="true".
      const nils: string[] = [];
      const walk = (e: XmlElement, p: string) => {
        for (const c of e.children) {
          if (c.attrs.nil !== undefined) {
            expect(c.attrs.nil).toBe('true');
            expect(c.children).toEqual([]);
            expect(c.text).toBe('');
            nils.push(`${p}${c.name}`);
          }
          walk(c, `${p}${c.name}/`);
        }
      };
      walk(gpr, '');
      expect(nils).toEqual([
        'response/nextUpdateHours',
        'response/policiesNotChanged',
        'response/policies/policy/cAs',
        'response/policies/policy/attributes/privateKeyAttributes/keyUsageProperty',
        'response/policies/policy/attributes/privateKeyAttributes/permissions',
        'response/policies/policy/attributes/privateKeyAttributes/cryptoProviders',
        'response/policies/policy/attributes/supersededPolicies',
        'response/policies/policy/attributes/privateKeyFlags',
        'response/policies/policy/attributes/subjectNameFlags',
        'response/policies/policy/attributes/enrollmentFlags',
        'response/policies/policy/attributes/generalFlags',
        'response/policies/policy/attributes/rARequirements',
        'response/policies/policy/attributes/keyArchivalAttributes',
        'response/policies/policy/attributes/extensions',
        'cAs',
      ]);
      expect(r.body).toContain('<cAs xsi:nil="true"/>');
      // Every reference resolves to an oID of the right group.
      const oids = Object.fromEntries(at(gpr, 'oIDs')!.children.map((o) => [at(o, 'oIDReferenceID')!.text, { value: at(o, 'value')!.text, group: at(o, 'group')!.text, names: names(o) }]));
      expect(oids[at(policy, 'policyOIDReference')!.text]).toMatchObject({ group: '9' });
      expect(oids[at(attrs, 'hashAlgorithmOIDReference')!.text]).toMatchObject({ value: '2.16.840.1.101.3.4.2.1', group: '1' });
      expect(oids[at(pka, 'algorithmOIDReference')!.text]).toMatchObject({ value: '1.2.840.113549.1.1.1', group: '3' });
      for (const o of Object.values(oids)) expect(o.names).toEqual(['value', 'group', 'oIDReferenceID', 'defaultName']);
    });

    it('does not use up a one-time credential', async () => {
      const cred = await service.issueCredential();
      for (let i = 0; i < 3; i++) expect((await policyRequest(cred.username, cred.password)).statusCode).toBe(200);
      expect(await store.challenges.peek(cred.password, CREDENTIAL_PURPOSE)).toBeDefined();
      expect((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password })).statusCode).toBe(200);
    });

    it('refuses a wrong password, a wrong user name, and no credential', async () => {
      const cred = await service.issueCredential();
      const wrong = await policyRequest(cred.username, cred.password.replace(/.$/, (c) => (c === '0' ? '1' : '0')));
      expect(wrong.statusCode).toBe(500);
      expect(faultOf(wrong.body)).toMatchObject({ code: 's:Sender', subcode: 's:Authentication' });
      expect(faultOf((await policyRequest('someone-else@example.com', cred.password)).body).subcode).toBe('s:Authentication');
      // The user name is compared without regard to case.
      expect((await policyRequest(cred.username.toUpperCase(), cred.password)).statusCode).toBe(200);
      const anonymous = fixture('get-policies.xml').replace(/<wsse:Security[\s\S]*<\/wsse:Security>/, '');
      expect(faultOf((await post('Policy.svc', anonymous)).body).subcode).toBe('a:InvalidSecurity');
    });
  });

  describe('Enrollment.svc (MS-WSTEP RequestSecurityToken)', () => {
    it('issues the certificate and answers with the provisioning document, element by element', async () => {
      const cred = await service.issueCredential({ group: 'lab' });
      const id = deviceId();
      const r = await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password, DEVICEID: id });
      expect(r.statusCode).toBe(200);
      expect(Number(r.headers['content-length'])).toBe(r.rawPayload.length);
      const env = parseXml(r.body);
      const header = at(env, 'Header')!;
      expect(names(header)).toEqual(['Action', 'ActivityId', 'RelatesTo', 'Security']);
      expect(at(header, 'Action')!.text).toBe('http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep');
      expect(at(header, 'RelatesTo')!.text).toBe('urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749');
      expect(names(at(header, 'Security', 'Timestamp'))).toEqual(['Created', 'Expires']);
      const coll = at(env, 'Body', 'RequestSecurityTokenResponseCollection')!;
      expect(coll.attrs.xmlns).toBe('http://docs.oasis-open.org/ws-sx/ws-trust/200512');
      expect(names(coll)).toEqual(['RequestSecurityTokenResponse']);
      const rstr = at(coll, 'RequestSecurityTokenResponse')!;
      expect(names(rstr)).toEqual(['TokenType', 'DispositionMessage', 'RequestedSecurityToken', 'RequestID']);
      expect(at(rstr, 'TokenType')!.text).toBe('http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken');
      expect(at(rstr, 'DispositionMessage')!.attrs.xmlns).toBe('http://schemas.microsoft.com/windows/pki/2009/01/enrollment');
      expect(at(rstr, 'RequestID')!.attrs.xmlns).toBe('http://schemas.microsoft.com/windows/pki/2009/01/enrollment');
      const bst = at(rstr, 'RequestedSecurityToken', 'BinarySecurityToken')!;
      expect(bst.attrs.ValueType).toBe('http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc');
      expect(bst.attrs.EncodingType).toBe('http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary');
      const xml = Buffer.from(bst.text, 'base64').toString('utf8');
      expect(xml.startsWith('<wap-provisioningdoc version="1.1">')).toBe(true);
      const doc = readProvisioningDoc(xml);
      expect(Object.keys(doc.roots)).toEqual([thumbprint(ca.certDer)]);
      const certDer = Buffer.from(doc.client.der, 'base64');
      expect(doc.client).toMatchObject({ store: 'User', thumbprint: thumbprint(certDer), privateKeyContainer: true });
      expect(doc.application).toMatchObject({ APPID: 'w7', 'PROVIDER-ID': 'Muster', ADDR: 'https://mdm.example.com/ManagementServer/MDM.svc', DEFAULTENCODING: 'application/vnd.syncml.dm+xml' });
      expect(doc.providerId).toBe('Muster');
      // The device's name went through the XML reader and writer intact ("&" escaped both ways).
      expect(doc.dmClient).toMatchObject({ EntDMID: id, EntDeviceName: 'DESKTOP-LAB01 & co', UPN: cred.username });
      expect(doc.renewal).toMatchObject({ ROBOSupport: 'true', ServerURL: 'https://mdm.example.com/EnrollmentServer/Enrollment.svc' });
      const cert = forge.pki.certificateFromAsn1(forge.asn1.fromDer(certDer.toString('binary')));
      expect(cert.subject.getField('CN').value).toBe('LAB-PC!01');
      expect(doc.application.SSLCLIENTCERTSEARCHCRITERIA).toBe('Subject=CN%3DLAB-PC!01&Stores=My%5CUser');
      // Recorded: the device with its context, the identity bound to it.
      const device = await store.devices.get(id);
      expect(device).toMatchObject({ platform: 'windows', osVersion: '10.0.22631.2861', attributes: { 'enrollment-group': 'lab' } });
      expect(device!.attributes).toMatchObject({ os: 'windows', 'enrollment-source': 'mde2', 'enrollment-type': 'full', 'device-name': 'DESKTOP-LAB01 & co', 'os-edition': '48', 'windows-device-type': 'CIMClient_Windows', locale: 'en-US' });
      expect(device!.identifiers).toEqual({ 'windows-device-id': id, hwdevid: 'F2A5D5A8E3C0B1B9A1F1D6C6E4B2A0C9D8E7F6A5B4C3D2E1F0A9B8C7D6E5F4A3' });
      const [identity] = await store.identities.listForDevice(id);
      expect(identity).toMatchObject({ deviceId: id, subject: 'CN=LAB-PC!01', revokedAt: null });
    });

    it('refuses a one-time credential the second time', async () => {
      const cred = await service.issueCredential();
      expect((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password })).statusCode).toBe(200);
      const again = await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password });
      expect(again.statusCode).toBe(500);
      expect(faultOf(again.body)).toMatchObject({ code: 's:Sender', subcode: 's:Authentication' });
      expect(faultOf((await policyRequest(cred.username, cred.password)).body).subcode).toBe('s:Authentication');
    });

    it('lets exactly one of two simultaneous enrollments use a one-time credential', async () => {
      const cred = await service.issueCredential();
      const both = await Promise.all([enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password }), enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password })]);
      expect(both.map((r) => r.statusCode).sort()).toEqual([200, 500]);
      expect(faultOf(both.find((r) => r.statusCode === 500)!.body).subcode).toBe('s:Authentication');
    });

    it('lets a multi-use credential enroll several devices until it expires', async () => {
      const cred = await issueWindowsCredential(store, { domain: 'example.com', oneTime: false, group: 'kiosks' });
      for (let i = 0; i < 3; i++) expect((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password })).statusCode).toBe(200);
      const expired = await issueWindowsCredential(store, { domain: 'example.com', ttlMs: 1 });
      await new Promise((r) => setTimeout(r, 20));
      expect(faultOf((await enrollRequest({ USERNAME: expired.username, PASSWORD: expired.password })).body).subcode).toBe('s:Authentication');
    });

    it('answers bad CSRs with CertificateRequest faults and keeps the credential', async () => {
      const cred = await service.issueCredential();
      const tampered = Buffer.from(csr(), 'base64');
      tampered[tampered.length - 3]! ^= 0x55;
      const oversized = Buffer.alloc(20_000, 0x41).toString('base64');
      for (const [bad, why] of [
        [tampered.toString('base64'), /signature does not verify/],
        ['not*base64', /not base64/],
        [Buffer.from('garbage, not DER').toString('base64'), /cannot be read/],
        [oversized, /larger than 16384 bytes/],
      ] as const) {
        const r = await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password, CSR: bad });
        expect(r.statusCode).toBe(500);
        const f = faultOf(r.body);
        expect(f.subcode).toBe('s:CertificateRequest');
        expect(f.reason).toMatch(why);
      }
      // Nothing was used up by the failures.
      expect((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password })).statusCode).toBe(200);
    });

    it('refuses a request without a DeviceID, or with one that is not an identifier', async () => {
      const cred = await service.issueCredential();
      for (const bad of ['', 'a b/../c', 'x'.repeat(200)]) {
        const f = faultOf((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password, DEVICEID: bad })).body);
        expect(f).toMatchObject({ subcode: 's:MessageFormat', errorType: 'InvalidEnrollmentData' });
      }
      expect(await store.challenges.peek(cred.password, CREDENTIAL_PURPOSE)).toBeDefined();
    });

    it('refuses entity declarations and wrong actions before anything else', async () => {
      const bomb = fixture('billion-laughs.xml').replace('http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover', 'http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep');
      expect(faultOf((await post('Enrollment.svc', bomb)).body)).toMatchObject({ subcode: 's:MessageFormat', reason: expect.stringMatching(/entity declarations are refused|DOCTYPE/) });
      const cred = await service.issueCredential();
      const discover = await post('Enrollment.svc', fixture('discover-v5.xml'));
      expect(faultOf(discover.body)).toMatchObject({ subcode: 's:MessageFormat', reason: expect.stringMatching(/RST\/wstep, not/) });
      // A wrong action to the policy service is refused the same way, credential or not.
      const asPolicy = fill(fixture('rst-onpremise.xml'), { USERNAME: cred.username, PASSWORD: cred.password, CSR: csr(), DEVICEID: deviceId() });
      expect(faultOf((await post('Policy.svc', asPolicy)).body).subcode).toBe('s:MessageFormat');
    });

    it('refuses a device id that belongs to another platform', async () => {
      const id = deviceId();
      await store.devices.upsert({ id, platform: 'apple' });
      const cred = await service.issueCredential();
      const f = faultOf((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password, DEVICEID: id })).body);
      expect(f.subcode).toBe('s:Authorization');
      expect((await store.devices.get(id))!.platform).toBe('apple');
      // The transaction rolled back: the one-time credential is still there.
      expect(await store.challenges.peek(cred.password, CREDENTIAL_PURPOSE)).toBeDefined();
    });

    it('refuses a short key and a Renew without a client certificate', async () => {
      const cred = await service.issueCredential();
      const weak = windowsCsr({ commonName: 'weak', keyBits: 1024 }).csrDer.toString('base64');
      expect(faultOf((await enrollRequest({ USERNAME: cred.username, PASSWORD: cred.password, CSR: weak })).body)).toMatchObject({ subcode: 's:CertificateRequest', reason: expect.stringMatching(/1024 bits/) });
      const renew = fill(fixture('rst-onpremise.xml'), { USERNAME: cred.username, PASSWORD: cred.password, CSR: csr(), DEVICEID: deviceId() })
        .replace('ws-trust/200512/Issue', 'ws-trust/200512/Renew')
        .replace('enrollment#PKCS10', 'enrollment#PKCS10x');
      expect(faultOf((await post('Enrollment.svc', renew)).body).subcode).toBe('s:MessageFormat');
      const renew7 = renew.replace('http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10x', 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7');
      expect(faultOf((await post('Enrollment.svc', renew7)).body)).toMatchObject({ subcode: 's:Authentication', errorType: 'NotEligibleToRenew' });
    });
  });

  describe('federated sign-in', () => {
    const appru = 'ms-app://windows.immersivecontrolpanel';
    const form = (v: Record<string, string>) => app.inject({ method: 'POST', url: '/EnrollmentServer/Auth', payload: new URLSearchParams(v).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

    it('shows the enrollment-code form, escaping what it reflects', async () => {
      const r = await app.inject({ method: 'GET', url: `/EnrollmentServer/Auth?appru=${encodeURIComponent(appru)}&login_hint=${encodeURIComponent('"><script>alert(1)</script>')}` });
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(r.headers['content-security-policy']).toContain("default-src 'none'");
      expect(r.body).toContain('name="code"');
      expect(r.body).toContain(`name="appru" value="${appru}"`);
      expect(r.body).not.toContain('<script>alert(1)');
      expect(r.body).toContain('&#34;&#62;&#60;script&#62;');
      expect((await app.inject({ method: 'GET', url: '/EnrollmentServer/Auth?appru=https://evil.example/' })).statusCode).toBe(400);
    });

    it('posts a token back to appru for a valid code, and only there', async () => {
      const cred = await service.issueCredential();
      const wrong = await form({ appru, login_hint: cred.username, code: 'nope' });
      expect(wrong.statusCode).toBe(200);
      expect(wrong.body).toContain('not valid');
      expect(wrong.body).not.toContain('wresult');
      expect((await form({ appru: 'https://evil.example/collect', code: cred.password })).statusCode).toBe(400);
      const ok = await form({ appru, login_hint: cred.username, code: cred.password });
      expect(ok.statusCode).toBe(200);
      expect(ok.body).toContain(`<form method="post" action="${appru}">`);
      const token = /name="wresult" value="([^"]+)"/.exec(ok.body)![1]!;
      expect(token).toMatch(/^muster_wab_[0-9a-f]{40}$/);
      expect(token).not.toContain(cred.password);
      const nonce = /script-src 'nonce-([^']+)'/.exec(String(ok.headers['content-security-policy']))![1];
      expect(ok.body).toContain(`<script nonce="${nonce}">`);
      // The code itself is untouched until an enrollment succeeds.
      expect(await store.challenges.peek(cred.password, CREDENTIAL_PURPOSE)).toBeDefined();
    });

    it('enrolls with the token as a bearer BinarySecurityToken (a device enrollment goes to My/System), once', async () => {
      const cred = await service.issueCredential({ group: 'federated' });
      const token = (await service.federatedLogin(cred.password, cred.username))!;
      const id = deviceId();
      const body = fill(fixture('rst-federated-device.xml'), { TOKEN: Buffer.from(token).toString('base64'), CSR: csr(), DEVICEID: id });
      const policyBody = fixture('get-policies.xml').replace(/<wsse:UsernameToken[\s\S]*<\/wsse:UsernameToken>/, `<wsse:BinarySecurityToken ValueType="http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">${Buffer.from(token).toString('base64')}</wsse:BinarySecurityToken>`);
      expect((await post('Policy.svc', policyBody)).statusCode).toBe(200);
      const r = await post('Enrollment.svc', body);
      expect(r.statusCode).toBe(200);
      const doc = readProvisioningDoc(Buffer.from(at(parseXml(r.body), 'Body', 'RequestSecurityTokenResponseCollection', 'RequestSecurityTokenResponse', 'RequestedSecurityToken', 'BinarySecurityToken')!.text, 'base64').toString('utf8'));
      expect(doc.client.store).toBe('System');
      expect(doc.application.SSLCLIENTCERTSEARCHCRITERIA).toMatch(/&Stores=My%5CSystem$/);
      expect((await store.devices.get(id))!.attributes).toMatchObject({ 'enrollment-type': 'device', 'enrollment-user': cred.username });
      expect((await store.devices.getEnrollment(id))!.state).toMatchObject({ certStore: 'System', enrollmentType: 'device' });
      // Token and one-time credential are both used up now.
      const replay = await post('Enrollment.svc', fill(fixture('rst-federated-device.xml'), { TOKEN: Buffer.from(token).toString('base64'), CSR: csr(), DEVICEID: deviceId() }));
      expect(faultOf(replay.body).subcode).toBe('s:Authentication');
      expect(await store.challenges.peek({ sha256: challengeDigest(cred.password) }, CREDENTIAL_PURPOSE)).toBeUndefined();
      // A token of another type, or a made-up one, is refused.
      const forged = body.replace('DeviceEnrollmentUserToken', 'SomethingElse');
      expect(faultOf((await post('Enrollment.svc', forged)).body).subcode).toBe('a:InvalidSecurity');
      const made = fill(fixture('rst-federated-device.xml'), { TOKEN: Buffer.from(`muster_wab_${'0'.repeat(40)}`).toString('base64'), CSR: csr(), DEVICEID: deviceId() });
      expect(faultOf((await post('Enrollment.svc', made)).body).subcode).toBe('s:Authentication');
    });
  });

  it('issueWindowsCredential validates what it is given', async () => {
    await expect(issueWindowsCredential(store, { domain: 'not a domain' })).rejects.toThrow(/not a domain name/);
    await expect(issueWindowsCredential(store, { domain: 'example.com', group: 'Bad Group' })).rejects.toThrow(/label value/);
    await expect(issueWindowsCredential(store, { domain: 'example.com', user: 'a b' })).rejects.toThrow(/user part/);
    const c = await issueWindowsCredential(store, { domain: 'Example.COM', user: 'Front-Desk', note: 'reception PC', ttlMs: 3_600_000 });
    expect(c.username).toBe('front-desk@example.com');
    expect(c.password).toMatch(/^[0-9a-f]{40}$/);
    expect(c.expiresAt.getTime()).toBeGreaterThan(Date.now());
    const audited = (await store.audit.list({ limit: 1000 })).filter((a) => a.action === 'enrollment.credential');
    expect(audited.at(-1)!.details).toMatchObject({ username: 'front-desk@example.com', note: 'reception PC', credentialSha256: challengeDigest(c.password) });
    expect(JSON.stringify(audited)).not.toContain(c.password);
  });

  it('issues with the service a discovery URL and the configured domain', async () => {
    const c = await service.issueCredential({ user: 'ops' });
    expect(c).toMatchObject({ username: 'ops@example.com', discoveryUrl: 'https://mdm.example.com/EnrollmentServer/Discovery.svc', oneTime: true });
  });
});
