// MS-MDE2 discovery over HTTP (fastify inject), fed the requests real Windows
// clients send: the GET probe, Discover from Windows 10 (4.0, OnPremise
// only) and Windows 11 (5.0), the answer element by element, and faults.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { generateCa } from '../../protocols/pki/ca.js';
import { parseDiscover, enrollmentVersionFor } from '../../protocols/windows/discovery.js';
import { createWindowsEnrollService, type WindowsEnrollConfig } from '../../protocols/windows/enroll-service.js';
import { windowsEnrollRoutes } from '../../protocols/windows/enroll-routes.js';
import { readEnvelope } from '../../protocols/windows/soap.js';
import { parseXml, type XmlElement } from '../../protocols/windows/xml.js';
import { testDatabase, type TestDatabase } from '../support/db.js';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/windows/enroll', name), 'utf8');
const quiet = { info: () => {}, warn: () => {}, error: () => {} };
const names = (e: XmlElement | undefined) => (e?.children ?? []).map((c) => c.name);
const at = (e: XmlElement | undefined, ...path: string[]): XmlElement | undefined => path.reduce<XmlElement | undefined>((x, n) => x?.children.find((c) => c.name === n), e);

describe('Discover decoding', () => {
  it('reads a Windows 11 request', () => {
    expect(parseDiscover(readEnvelope(fixture('discover-v5.xml')).body)).toEqual({
      emailAddress: 'alex@example.com',
      requestVersion: '5.0',
      deviceType: 'CIMClient_Windows',
      applicationVersion: '10.0.22631.2861',
      osEdition: '48',
      authPolicies: ['OnPremise', 'Federated'],
    });
  });
  it('reads a Windows 10 request, elements in another order', () => {
    const r = parseDiscover(readEnvelope(fixture('discover-v4-onpremise.xml')).body);
    expect(r).toMatchObject({ emailAddress: 'alex@example.com', requestVersion: '4.0', osEdition: '4', authPolicies: ['OnPremise'] });
  });
  it('answers the version asked for, up to 5.0', () => {
    expect(enrollmentVersionFor('4.0')).toBe('4.0');
    expect(enrollmentVersionFor('5.0')).toBe('5.0');
    expect(enrollmentVersionFor('6.0')).toBe('5.0');
    expect(enrollmentVersionFor('2.0')).toBe('3.0');
  });
});

describe('Discovery.svc', () => {
  let tdb: TestDatabase;
  let store: Store;
  const apps: FastifyInstance[] = [];
  let onPremise: FastifyInstance;
  let federated: FastifyInstance;

  const mount = async (config: Partial<WindowsEnrollConfig>): Promise<FastifyInstance> => {
    const app = Fastify();
    const service = createWindowsEnrollService({ store, ca: generateCa(), config: { publicUrl: 'https://mdm.example.com/', ...config }, log: quiet });
    await app.register(windowsEnrollRoutes, { service, log: quiet, maxBodyBytes: 64 * 1024 });
    apps.push(app);
    return app;
  };
  const post = (app: FastifyInstance, body: string | Buffer, type = 'application/soap+xml; charset=utf-8') => app.inject({ method: 'POST', url: '/EnrollmentServer/Discovery.svc', payload: body, headers: { 'content-type': type } });

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    onPremise = await mount({});
    federated = await mount({ authPolicy: 'Federated' });
  });
  afterAll(async () => {
    for (const a of apps) await a.close();
    await tdb?.cleanup();
  });

  it('answers the GET probe with 200 and an empty body', async () => {
    const r = await onPremise.inject({ method: 'GET', url: '/EnrollmentServer/Discovery.svc', headers: { 'user-agent': 'ENROLLClient' } });
    expect(r.statusCode).toBe(200);
    expect(r.rawPayload.length).toBe(0);
    expect(r.headers['content-length']).toBe('0');
  });

  it('answers Discover with the OnPremise policy and the service URLs, in order', async () => {
    const r = await post(onPremise, fixture('discover-v5.xml'));
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/soap+xml; charset=utf-8');
    expect(Number(r.headers['content-length'])).toBe(r.rawPayload.length);
    const env = parseXml(r.body);
    expect(env.attrs['xmlns:s']).toBe('http://www.w3.org/2003/05/soap-envelope');
    expect(env.attrs['xmlns:a']).toBe('http://www.w3.org/2005/08/addressing');
    expect(names(env)).toEqual(['Header', 'Body']);
    const header = at(env, 'Header');
    expect(names(header)).toEqual(['Action', 'ActivityId', 'RelatesTo']);
    expect(at(header, 'Action')!.text).toBe('http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse');
    expect(at(header, 'Action')!.attrs.mustUnderstand).toBe('1');
    expect(at(header, 'RelatesTo')!.text).toBe('urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478');
    const resp = at(env, 'Body', 'DiscoverResponse')!;
    expect(resp.attrs.xmlns).toBe('http://schemas.microsoft.com/windows/management/2012/01/enrollment');
    const result = at(resp, 'DiscoverResult')!;
    expect(names(result)).toEqual(['AuthPolicy', 'EnrollmentVersion', 'EnrollmentPolicyServiceUrl', 'EnrollmentServiceUrl']);
    expect(result.children.map((c) => c.text)).toEqual(['OnPremise', '5.0', 'https://mdm.example.com/EnrollmentServer/Policy.svc', 'https://mdm.example.com/EnrollmentServer/Enrollment.svc']);
  });

  it('echoes a MessageID exactly as sent, and answers version 4.0 to a Windows 10 client', async () => {
    const env = parseXml((await post(onPremise, fixture('discover-v4-onpremise.xml'))).body);
    expect(at(env, 'Header', 'RelatesTo')!.text).toBe('urn:uuid: 2f0c9f4b-52a4-4fb6-9a6e-3c1e4f0d2a11');
    expect(at(env, 'Body', 'DiscoverResponse', 'DiscoverResult', 'EnrollmentVersion')!.text).toBe('4.0');
  });

  it('advertises Federated with the authentication page when configured so', async () => {
    const result = at(parseXml((await post(federated, fixture('discover-v5.xml'))).body), 'Body', 'DiscoverResponse', 'DiscoverResult')!;
    expect(names(result)).toEqual(['AuthPolicy', 'EnrollmentVersion', 'EnrollmentPolicyServiceUrl', 'EnrollmentServiceUrl', 'AuthenticationServiceUrl']);
    expect(at(result, 'AuthPolicy')!.text).toBe('Federated');
    expect(at(result, 'AuthenticationServiceUrl')!.text).toBe('https://mdm.example.com/EnrollmentServer/Auth');
  });

  const faultOf = (body: string) => {
    const env = parseXml(body);
    const f = at(env, 'Body', 'Fault')!;
    return {
      env,
      code: at(f, 'Code', 'Value')!.text,
      subcode: at(f, 'Code', 'Subcode', 'Value')!.text,
      reason: at(f, 'Reason', 'Text')!.text,
      lang: at(f, 'Reason', 'Text')!.attrs.lang,
      errorType: at(f, 'Detail', 'DeviceEnrollmentServiceError', 'ErrorType')?.text,
    };
  };

  it('refuses a device that cannot do the configured authentication, with a fault it can show', async () => {
    const r = await post(federated, fixture('discover-v4-onpremise.xml'));
    expect(r.statusCode).toBe(500);
    const f = faultOf(r.body);
    expect(f.code).toBe('s:Sender');
    expect(f.subcode).toBe('s:Authorization');
    expect(f.errorType).toBe('NotSupported');
    expect(f.reason).toMatch(/Federated/);
    expect(f.lang).toBe('en-US');
    expect(at(f.env, 'Header', 'RelatesTo')!.text).toBe('urn:uuid: 2f0c9f4b-52a4-4fb6-9a6e-3c1e4f0d2a11');
    expect(at(f.env, 'Header', 'Action')!.text).toMatch(/DiscoverResponse$/);
  });

  it('answers malformed requests with MessageFormat faults', async () => {
    const cases: Array<[string | Buffer, RegExp]> = [
      [fixture('discover-v5.xml').replace(/<EmailAddress>.*<\/EmailAddress>/, ''), /EmailAddress/],
      [fixture('discover-v5.xml').replace('IDiscoveryService/Discover<', 'IDiscoveryService/Other<'), /answers .*Discover, not/],
      [fixture('discover-v5.xml').replace('http://www.w3.org/2003/05/soap-envelope', 'http://schemas.xmlsoap.org/soap/envelope/'), /not SOAP 1\.2/],
      ['this is not XML', /not readable XML/],
      [Buffer.from([0x3c, 0x61, 0xff, 0xfe, 0x3e]), /UTF-8/],
    ];
    for (const [body, why] of cases) {
      const r = await post(onPremise, body);
      expect(r.statusCode).toBe(500);
      const f = faultOf(r.body);
      expect(f.subcode).toBe('s:MessageFormat');
      expect(f.reason).toMatch(why);
    }
  });

  it('refuses a body with entity declarations without expanding anything', async () => {
    const r = await post(onPremise, fixture('billion-laughs.xml'));
    expect(r.statusCode).toBe(500);
    const f = faultOf(r.body);
    expect(f.subcode).toBe('s:MessageFormat');
    expect(f.reason).toMatch(/entity declarations are refused|DOCTYPE/);
    expect(r.body).not.toContain('lollol');
  });

  it('refuses a body over the size limit as a SOAP fault, not a bare 413', async () => {
    const padded = fixture('discover-v5.xml').replace('<s:Body>', `<s:Body><!-- ${'x'.repeat(70 * 1024)} -->`);
    const r = await post(onPremise, padded);
    expect(r.statusCode).toBe(500);
    expect(r.headers['content-type']).toBe('application/soap+xml; charset=utf-8');
    expect(faultOf(r.body)).toMatchObject({ subcode: 's:MessageFormat', reason: expect.stringMatching(/larger than 65536 bytes/) });
  });
});
