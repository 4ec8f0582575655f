// Input before authentication, one attack shape at a time, against the
// endpoints as `muster serve` mounts them (bench/serve-rig.ts): each hostile
// body gets its protocol's answer (a SOAP fault, 403, 413, 400 to SCEP, 401
// to a push without a token — never a 401 to an Apple device), what is
// refused unread is never parsed, nothing is stored, and /healthz answers over
// the server's socket beside every request. The hostile requests go through
// fastify's inject: over a socket, a server that refuses a body early closes
// the connection under the upload, and the client may see the reset before
// the answer (bench/hostile measures over sockets). How fast is
// bench/hostile's business (no timing is asserted here); the rate limits and
// timeouts are checked at the end.
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDrivers } from '../../controller/drivers.js';
import { Reconciler } from '../../controller/reconcile/reconciler.js';
import { buildApp } from '../../controller/server/app.js';
import { createPino, logOf } from '../../controller/server/log.js';
import { Controller } from '../../controller/serve/controller.js';
import { createDirSource } from '../../controller/sources/dir-source.js';
import type { Store } from '../../controller/store/index.js';
import { BODIES, MiB } from '../../bench/hostile-shapes.js';
import { serveRig, type ServeRig } from '../../bench/serve-rig.js';
import { readFault } from '../../protocols/windows/soap.js';
import { parseXml } from '../../protocols/windows/xml.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';

// How often the Windows parsers ran: what is refused before parsing must leave these unchanged.
const parsed = vi.hoisted(() => ({ xml: 0, syncml: 0 }));
vi.mock('../../protocols/windows/xml.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../protocols/windows/xml.js')>();
  return { ...real, parseXml: (...a: Parameters<typeof real.parseXml>) => (parsed.xml++, real.parseXml(...a)) };
});
vi.mock('../../protocols/windows/syncml/wire.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../protocols/windows/syncml/wire.js')>();
  return { ...real, decodeClientMessage: (...a: Parameters<typeof real.decodeClientMessage>) => (parsed.syncml++, real.decodeClientMessage(...a)) };
});

const KiB = 1024;
const SOAP = 'application/soap+xml; charset=utf-8';
const SYNCML = 'application/vnd.syncml.dm+xml';
const CHECKIN = 'application/x-apple-aspen-mdm-checkin';
const REPORT = 'application/x-apple-aspen-mdm';
const fixture = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/windows/enroll', name), 'utf8');

interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

/** One request over a fresh connection. */
function send(base: string, method: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const faultOf = (body: string) => readFault(parseXml(body));

describe.each(backends)('input before authentication (%s)', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  let rig: ServeRig;
  let device: { id: string; header: string };

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    // Rate limits off here (they are tested at the end): every request reaches its route.
    rig = await serveRig(store, { enrollRatePerMinute: 0, authFailuresPerMinute: 0 });
    const id = 'A0A0A0A0B1B1B1B1C2C2C2C2D3D3D3D3';
    device = { id, header: (await rig.deviceCertificate({ bindTo: id })).header };
  });
  afterAll(async () => {
    await rig?.close();
    await tdb?.cleanup();
  });

  /** A hostile request, with /healthz asked over the socket at the same moment: both must answer. */
  const hostile = async (method: string, path: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<Answer> => {
    const [r, health] = await Promise.all([rig.app.inject({ method: method as 'POST', url: path, payload: body, headers }), send(rig.url, 'GET', '/healthz')]);
    expect(health.status).toBe(200);
    expect(r.body).not.toMatch(/FST_|\bat .*\.[jt]s:\d+|Error:/);
    return { status: r.statusCode, headers: r.headers, body: r.body };
  };
  /** What an attack could have left behind. */
  const snapshot = async () => ({
    devices: await store.devices.count(),
    audit: (await store.audit.list({ limit: 100_000 })).length,
    commands: await store.commands.countByState(),
    sessions: (await store.windowsSessions.open(device.id)).length,
  });

  describe('Windows', () => {
    it('refuses 1 MiB of repeated <!DOCTYPE to Discovery.svc by its size, unread, and one that fits by a plain scan', async () => {
      const before = await snapshot();
      const xml = parsed.xml;
      const big = await hostile('POST', '/EnrollmentServer/Discovery.svc', BODIES.doctype(MiB), { 'content-type': SOAP });
      expect(parsed.xml).toBe(xml);
      expect(big.status).toBe(500);
      expect(faultOf(big.body)).toMatchObject({ subcode: 's:MessageFormat', reason: expect.stringMatching(/larger than 16384 bytes/) });
      // As large as the endpoint reads: the scan finds the DOCTYPE before the parser sees anything.
      const fits = await hostile('POST', '/EnrollmentServer/Discovery.svc', BODIES.doctype(16 * KiB), { 'content-type': SOAP });
      expect(fits.status).toBe(500);
      expect(faultOf(fits.body)).toMatchObject({ subcode: 's:MessageFormat', reason: expect.stringMatching(/a DOCTYPE is refused/) });
      expect(await snapshot()).toEqual(before);
    });

    it('refuses any DOCTYPE, even one without an internal subset in front of a valid Discover', async () => {
      const r = await hostile('POST', '/EnrollmentServer/Discovery.svc', `<!DOCTYPE s:Envelope>${fixture('discover-v5.xml').replace(/^<\?xml[^>]*>/, '')}`, { 'content-type': SOAP });
      expect(r.status).toBe(500);
      expect(faultOf(r.body)?.reason).toMatch(/a DOCTYPE is refused/);
      // The same request without it is answered.
      expect((await hostile('POST', '/EnrollmentServer/Discovery.svc', fixture('discover-v5.xml'), { 'content-type': SOAP })).status).toBe(200);
    });

    it('reads 1 MiB of repeated <!DOCTYPE as refused, in one pass', () => {
      expect(() => parseXml(BODIES.doctype(MiB), { maxBytes: 2 * MiB })).toThrow(/a DOCTYPE is refused/);
      expect(() => parseXml(BODIES.doctype(MiB).toString('latin1').toLowerCase(), { maxBytes: 2 * MiB })).toThrow(/a DOCTYPE is refused/);
    });

    it('answers MDM.svc without a certificate 403 before reading the body, whatever the body', async () => {
      const before = await snapshot();
      const counts = { ...parsed };
      for (const body of [BODIES.doctype(MiB), BODIES.nestedXml(MiB), Buffer.from('<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>'), BODIES.doctype(MiB + 1)]) {
        expect(await hostile('POST', '/ManagementServer/MDM.svc', body, { 'content-type': SYNCML })).toMatchObject({ status: 403, body: 'device certificate not accepted' });
      }
      // A certificate from Muster's CA that is no known identity, and a revoked one: refused the same way, unparsed.
      const stranger = await rig.deviceCertificate();
      expect(await hostile('POST', '/ManagementServer/MDM.svc', BODIES.doctype(MiB), { 'content-type': SYNCML, 'client-cert': stranger.header })).toMatchObject({ status: 403, body: 'device certificate not accepted' });
      const revokedId = 'E4E4E4E4F5F5F5F5A6A6A6A6B7B7B7B7';
      const revoked = await rig.deviceCertificate({ bindTo: revokedId });
      await store.identities.revoke(revoked.certSha256);
      expect(await hostile('POST', '/ManagementServer/MDM.svc', BODIES.doctype(MiB), { 'content-type': SYNCML, 'client-cert': revoked.header })).toMatchObject({ status: 403 });
      expect(parsed).toEqual(counts);
      expect(await snapshot()).toEqual({ ...before, devices: before.devices + 1 });
      expect(rig.logs.some((l) => l.msg === 'windows OMA-DM message refused' && l.fields?.reason === 'the identity is revoked')).toBe(true);
    });

    it('reads a message only from an enrolled device: its 1 MiB of <!DOCTYPE is a 400, one byte more a 413', async () => {
      const before = await snapshot();
      const syncml = parsed.syncml;
      const r = await hostile('POST', '/ManagementServer/MDM.svc', BODIES.doctype(MiB), { 'content-type': SYNCML, 'client-cert': device.header });
      expect(r).toMatchObject({ status: 400, body: expect.stringMatching(/^unreadable SyncML: a DOCTYPE is refused/) });
      expect(parsed.syncml).toBe(syncml + 1);
      expect(await hostile('POST', '/ManagementServer/MDM.svc', BODIES.doctype(MiB + 1), { 'content-type': SYNCML, 'client-cert': device.header })).toMatchObject({ status: 413, body: 'the message is larger than 1048576 bytes' });
      expect(parsed.syncml).toBe(syncml + 1);
      expect(await snapshot()).toEqual(before);
    });

    it('refuses deeply nested XML with a short reason: on Enrollment.svc as a fault, from a device as a 400', async () => {
      const before = await snapshot();
      const r = await hostile('POST', '/EnrollmentServer/Enrollment.svc', BODIES.nestedXml(64 * KiB), { 'content-type': SOAP });
      expect(r.status).toBe(500);
      // Counted before the validator, which would keep a stack as deep as the body and list every unclosed tag.
      expect(faultOf(r.body)).toMatchObject({ subcode: 's:MessageFormat', reason: 'the request is not readable XML: nested more than 16 levels deep' });
      expect(r.body.length).toBeLessThan(4 * KiB);
      // The validator's message quotes the tag, however long; the fault quotes a bounded part of it.
      const unclosed = await hostile('POST', '/EnrollmentServer/Enrollment.svc', `<${'x'.repeat(60_000)}>`, { 'content-type': SOAP });
      expect(faultOf(unclosed.body)?.reason).toMatch(/^the request is not readable XML: malformed XML/);
      expect(faultOf(unclosed.body)!.reason.length).toBeLessThan(600);
      expect(faultOf((await hostile('POST', '/EnrollmentServer/Enrollment.svc', BODIES.nestedXml(MiB), { 'content-type': SOAP })).body)?.reason).toMatch(/larger than 65536 bytes/);
      const closed = `<SyncML xmlns="SYNCML:SYNCML1.2">${'<a>'.repeat(200)}${'</a>'.repeat(200)}</SyncML>`;
      expect(await hostile('POST', '/ManagementServer/MDM.svc', closed, { 'content-type': SYNCML, 'client-cert': device.header })).toMatchObject({ status: 400, body: 'unreadable SyncML: nested more than 24 levels deep' });
      expect(await hostile('POST', '/ManagementServer/MDM.svc', BODIES.nestedXml(MiB), { 'content-type': SYNCML, 'client-cert': device.header })).toMatchObject({ status: 400, body: 'unreadable SyncML: nested more than 24 levels deep' });
      expect(await snapshot()).toEqual(before);
    });

    it('refuses an element with tens of thousands of attributes: Policy.svc reads at most 32 KiB, and the envelope is no GetPolicies', async () => {
      const before = await snapshot();
      const fits = await hostile('POST', '/EnrollmentServer/Policy.svc', BODIES.manyAttributes(32 * KiB), { 'content-type': SOAP });
      expect(fits.status).toBe(500);
      expect(faultOf(fits.body)).toMatchObject({ subcode: 's:MessageFormat' });
      expect(faultOf((await hostile('POST', '/EnrollmentServer/Policy.svc', BODIES.manyAttributes(MiB), { 'content-type': SOAP })).body)?.reason).toMatch(/larger than 32768 bytes/);
      // Repeated attribute names are malformed XML.
      const repeated = await hostile('POST', '/EnrollmentServer/Policy.svc', `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" ${'x="1" '.repeat(4000)}/>`, { 'content-type': SOAP });
      expect(faultOf(repeated.body)?.reason).toMatch(/malformed XML/);
      expect(await hostile('POST', '/ManagementServer/MDM.svc', BODIES.manyAttributes(MiB), { 'content-type': SYNCML, 'client-cert': device.header })).toMatchObject({ status: 400 });
      expect(await snapshot()).toEqual(before);
    });
  });

  describe('Apple', () => {
    it('answers a huge check-in plist 413 and a deeply nested one 400, never 401, storing nothing', async () => {
      const before = await snapshot();
      expect(await hostile('PUT', '/mdm/apple/checkin', BODIES.hugePlist(MiB), { 'content-type': CHECKIN })).toMatchObject({ status: 413, body: 'the message is larger than 262144 bytes' });
      const nested = await hostile('PUT', '/mdm/apple/checkin', BODIES.nestedPlist(256 * KiB), { 'content-type': CHECKIN });
      expect(nested).toMatchObject({ status: 400, body: 'not a check-in plist' });
      expect(rig.logs.some((l) => l.msg === 'unreadable check-in' && /nested more than 64 levels/.test(String(l.fields?.error)))).toBe(true);
      // As large as a check-in may be, well-formed: read (linear, bounded), and not a check-in.
      expect((await hostile('PUT', '/mdm/apple/checkin', BODIES.hugePlist(256 * KiB), { 'content-type': CHECKIN })).status).toBe(400);
      // A check-in sent to the ServerURL is held to the check-in's limit too.
      expect((await hostile('PUT', '/mdm/apple/connect', BODIES.hugePlist(MiB), { 'content-type': CHECKIN })).status).toBe(413);
      expect(await snapshot()).toEqual(before);
    });

    it('checks who sent a command report before reading it: 1 MiB of nested plist without a certificate is a 403, 8 MiB and more a 413', async () => {
      const before = await snapshot();
      // Parsed first, this body would be an unreadable report, answered 200.
      expect(await hostile('PUT', '/mdm/apple/connect', BODIES.nestedPlist(MiB), { 'content-type': REPORT })).toMatchObject({ status: 403, body: 'device certificate not accepted' });
      expect(await hostile('PUT', '/mdm/apple/connect', BODIES.nestedPlist(MiB), { 'content-type': REPORT, 'mdm-signature': 'bm90IGEgc2lnbmF0dXJl' })).toMatchObject({ status: 403 });
      expect(await hostile('PUT', '/mdm/apple/connect', BODIES.hugePlist(8 * MiB + 1), { 'content-type': REPORT })).toMatchObject({ status: 413, body: 'the message is larger than 8388608 bytes' });
      expect(await snapshot()).toEqual(before);
    });

    it('answers SCEP garbage and oversized messages 400 with a short text, issuing nothing', async () => {
      const before = await snapshot();
      const garbage = await hostile('POST', '/mdm/apple/scep?operation=PKIOperation', BODIES.garbageDer(64 * KiB), { 'content-type': 'application/x-pki-message' });
      expect(garbage.status).toBe(400);
      expect(garbage.body).toMatch(/^malformed SCEP request: [^\n]{1,300}\n$/);
      expect(await hostile('POST', '/mdm/apple/scep?operation=PKIOperation', BODIES.garbageDer(MiB), { 'content-type': 'application/x-pki-message' })).toMatchObject({ status: 400, body: 'malformed SCEP request: more than 65536 bytes\n' });
      const viaGet = await send(rig.url, 'GET', `/mdm/apple/scep?operation=PKIOperation&message=${'MDAw'.repeat(3000)}`);
      expect(viaGet.body).toMatch(/^malformed SCEP request: /);
      expect(viaGet.status).toBe(400);
      expect(await snapshot()).toEqual(before);
    });
  });

  describe('Pub/Sub, the admin API and the webhook', () => {
    it('refuses a push without a token before reading it, acknowledges an unreadable huge JSON from Google, and stores nothing', async () => {
      const before = await snapshot();
      expect((await hostile('POST', '/android/pubsub', BODIES.hugeJson(16 * MiB + 1), { 'content-type': 'application/json' })).status).toBe(401);
      const auth = { 'content-type': 'application/json', authorization: `Bearer ${await rig.pubsubToken()}` };
      expect((await hostile('POST', '/android/pubsub', BODIES.deepJson(MiB), auth)).status).toBe(204);
      expect((await hostile('POST', '/android/pubsub', BODIES.hugeJson(MiB), auth)).status).toBe(204);
      const tooBig = await hostile('POST', '/android/pubsub', BODIES.hugeJson(16 * MiB + 1), auth);
      expect(tooBig.status).toBe(413);
      expect(JSON.parse(tooBig.body)).toEqual({ error: 'the request body is larger than 16777216 bytes' });
      expect(await snapshot()).toEqual(before);
    });

    it('checks the admin token before the body: 401 for 1 MiB without one, 413 past the route limit with one', async () => {
      const before = await snapshot();
      expect((await hostile('POST', '/api/v1/plan', BODIES.deepJson(MiB), { 'content-type': 'application/json' })).status).toBe(401);
      const auth = { 'content-type': 'application/json', authorization: `Bearer ${rig.adminToken}` };
      const action = await hostile('POST', '/api/v1/rollouts/none/pause', BODIES.hugeJson(64 * KiB + 1), auth);
      expect(action.status).toBe(413);
      expect(JSON.parse(action.body)).toEqual({ error: 'the request body is larger than 65536 bytes' });
      expect((await hostile('POST', '/api/v1/plan', BODIES.hugeJson(8 * MiB + 1), auth)).status).toBe(413);
      // Under the limit, a deep JSON is refused by the JSON reader, not a stack overflow or a 500.
      expect((await hostile('POST', '/api/v1/plan', BODIES.deepJson(MiB), auth)).status).toBe(400);
      expect(await snapshot()).toEqual(before);
    });

    it('answers the webhook 401 for an unsigned megabyte and 413 past its limit, starting no sync', async () => {
      expect((await hostile('POST', '/hooks/git', BODIES.hugeJson(MiB), { 'content-type': 'application/json' })).status).toBe(401);
      const big = BODIES.hugeJson(MiB + 1);
      expect((await hostile('POST', '/hooks/git', big, { 'content-type': 'application/json', 'x-hub-signature-256': rig.webhookSignature(big) })).status).toBe(413);
    });
  });

  it('answers every oversized body with its protocol’s status and a short reason, never a 401 to Apple', async () => {
    const pushToken = await rig.pubsubToken();
    const cases: Array<{ method: string; path: string; size: number; headers: Record<string, string>; status: number; says: RegExp }> = [
      { method: 'PUT', path: '/mdm/apple/checkin', size: 256 * KiB, headers: { 'content-type': CHECKIN }, status: 413, says: /^the message is larger than 262144 bytes$/ },
      { method: 'PUT', path: '/mdm/apple/connect', size: 8 * MiB, headers: { 'content-type': REPORT }, status: 413, says: /^the message is larger than 8388608 bytes$/ },
      { method: 'POST', path: '/mdm/apple/scep?operation=PKIOperation', size: 64 * KiB, headers: { 'content-type': 'application/x-pki-message' }, status: 400, says: /^malformed SCEP request: more than 65536 bytes\n$/ },
      { method: 'POST', path: '/EnrollmentServer/Discovery.svc', size: 16 * KiB, headers: { 'content-type': SOAP }, status: 500, says: /larger than 16384 bytes/ },
      { method: 'POST', path: '/EnrollmentServer/Policy.svc', size: 32 * KiB, headers: { 'content-type': SOAP }, status: 500, says: /larger than 32768 bytes/ },
      { method: 'POST', path: '/EnrollmentServer/Enrollment.svc', size: 64 * KiB, headers: { 'content-type': SOAP }, status: 500, says: /larger than 65536 bytes/ },
      { method: 'POST', path: '/EnrollmentServer/Auth', size: 8 * KiB, headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 413, says: /^the request is larger than 8192 bytes \(trace [0-9a-f-]+\)\n$/ },
      { method: 'POST', path: '/ManagementServer/MDM.svc', size: MiB, headers: { 'content-type': SYNCML, 'client-cert': device.header }, status: 413, says: /^the message is larger than 1048576 bytes$/ },
      { method: 'POST', path: '/android/pubsub', size: 16 * MiB, headers: { 'content-type': 'application/json', authorization: `Bearer ${pushToken}` }, status: 413, says: /larger than 16777216 bytes/ },
      { method: 'POST', path: '/api/v1/devices/x/actions/lock', size: 64 * KiB, headers: { 'content-type': 'application/json', authorization: `Bearer ${rig.adminToken}` }, status: 413, says: /larger than 65536 bytes/ },
      { method: 'POST', path: '/api/v1/plan', size: 8 * MiB, headers: { 'content-type': 'application/json', authorization: `Bearer ${rig.adminToken}` }, status: 413, says: /larger than 8388608 bytes/ },
      { method: 'POST', path: '/hooks/git', size: MiB, headers: { 'content-type': 'application/json' }, status: 413, says: /larger than 1048576 bytes/ },
    ];
    const before = await snapshot();
    for (const c of cases) {
      const r = await hostile(c.method, c.path, Buffer.alloc(c.size + 1, 0x20), c.headers);
      expect({ path: c.path, status: r.status }).toEqual({ path: c.path, status: c.status });
      const reason = c.path.startsWith('/EnrollmentServer/') && c.status === 500 ? faultOf(r.body)!.reason : c.headers['content-type'] === 'application/json' ? (JSON.parse(r.body) as { error: string }).error : r.body;
      expect(reason).toMatch(c.says);
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe('rate limits, timeouts and closing', () => {
  let tdb: TestDatabase;
  let store: Store;
  let rig: ServeRig;

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    rig = await serveRig(store, { enrollRatePerMinute: 6, authFailuresPerMinute: 3, connectionTimeoutMs: 300 });
  });
  afterAll(async () => {
    await rig?.close();
    await tdb?.cleanup();
  });

  const from = (remoteAddress: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: string, headers: Record<string, string> = {}) => rig.app.inject({ method, url, remoteAddress, headers, ...(payload !== undefined ? { payload } : {}) });

  it('limits the enrollment endpoints per client address, together, with 429 and Retry-After in each protocol’s words', async () => {
    const a = '10.0.0.1';
    const answers = [
      await from(a, 'GET', '/EnrollmentServer/Discovery.svc'),
      await from(a, 'POST', '/EnrollmentServer/Discovery.svc', fixture('discover-v5.xml'), { 'content-type': SOAP }),
      await from(a, 'GET', '/mdm/apple/scep?operation=GetCACaps'),
      await from(a, 'GET', '/mdm/apple/enroll?code=nope'),
      await from(a, 'GET', '/EnrollmentServer/Auth'),
      await from(a, 'POST', '/EnrollmentServer/Policy.svc', fixture('get-policies.xml'), { 'content-type': SOAP }),
    ];
    expect(answers.map((r) => r.statusCode)).not.toContain(429);
    const soap = await from(a, 'POST', '/EnrollmentServer/Discovery.svc', fixture('discover-v5.xml'), { 'content-type': SOAP });
    expect(soap.statusCode).toBe(429);
    expect(Number(soap.headers['retry-after'])).toBeGreaterThan(0);
    expect(faultOf(soap.body)).toMatchObject({ subcode: 's:EnrollmentServer', reason: expect.stringMatching(/too many requests from this address/) });
    const scep = await from(a, 'GET', '/mdm/apple/scep?operation=GetCACert');
    expect(scep.statusCode).toBe(429);
    expect(scep.headers['retry-after']).toBeDefined();
    expect(scep.body).toMatch(/^too many requests from this address; try again in \d+ seconds\n$/);
    expect((await from(a, 'GET', '/mdm/apple/enroll?code=nope')).statusCode).toBe(429);
    expect((await from(a, 'GET', '/EnrollmentServer/Auth')).statusCode).toBe(429);
    // Another address has its own budget.
    expect((await from('10.0.0.2', 'GET', '/mdm/apple/scep?operation=GetCACaps')).statusCode).toBe(200);
  });

  it('never limits device-authenticated endpoints or /healthz: a fleet behind one address keeps checking in', async () => {
    const a = '10.0.0.3';
    for (let i = 0; i < 7; i++) await from(a, 'GET', '/mdm/apple/scep?operation=GetCACaps');
    expect((await from(a, 'GET', '/mdm/apple/scep?operation=GetCACaps')).statusCode).toBe(429);
    for (let i = 0; i < 20; i++) {
      expect((await from(a, 'PUT', '/mdm/apple/checkin', 'not a plist', { 'content-type': CHECKIN })).statusCode).toBe(400);
      expect((await from(a, 'POST', '/ManagementServer/MDM.svc', '<SyncML/>', { 'content-type': SYNCML })).statusCode).toBe(403);
      expect((await from(a, 'PUT', '/mdm/apple/connect', 'x', { 'content-type': REPORT })).statusCode).toBe(403);
      expect((await from(a, 'GET', '/healthz')).statusCode).toBe(200);
    }
  });

  it('answers failed admin logins 429 with Retry-After past the limit, while a valid token still works', async () => {
    const a = '10.0.0.4';
    for (let i = 0; i < 3; i++) expect((await from(a, 'GET', '/api/v1/rollouts', undefined, { authorization: 'Bearer mst_000000000000_' + 'x'.repeat(43) })).statusCode).toBe(401);
    const limited = await from(a, 'GET', '/api/v1/rollouts', undefined, { authorization: 'Bearer wrong' });
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await from(a, 'GET', '/api/v1/rollouts', undefined, { authorization: `Bearer ${rig.adminToken}` })).statusCode).toBe(200);
    expect((await from('10.0.0.5', 'GET', '/api/v1/rollouts')).statusCode).toBe(401);
  });

  it('ends the connection of an answer still in flight when the server closes, so closing never waits on keep-alive', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let arrived!: () => void;
    const inFlight = new Promise<void>((r) => (arrived = r));
    const pino = createPino({ level: 'silent' });
    const reconciler = new Reconciler({ store, drivers: createDrivers(), log: logOf(pino) });
    const app = await buildApp({
      store,
      reconciler,
      controller: new Controller({ store, source: createDirSource('/nonexistent'), reconciler, log: logOf(pino) }),
      drivers: createDrivers(),
      logger: pino,
      protocols: [
        async (s) => {
          s.get('/slow', async () => (arrived(), await held, 'done'));
          // The answer is given while the server closes.
          s.addHook('preClose', async () => release());
        },
      ],
    });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const agent = new Agent({ keepAlive: true });
    const answer = new Promise<{ connection: string | undefined; body: string }>((resolve, reject) => {
      request(`${base}/slow`, { agent }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ connection: res.headers.connection, body }));
      })
        .on('error', reject)
        .end();
    });
    await inFlight;
    const closed = app.close();
    expect(await answer).toEqual({ connection: 'close', body: 'done' });
    await closed;
    agent.destroy();
  });

  it('sets the request and keep-alive timeouts, and closes a connection that sends nothing', async () => {
    expect(rig.app.server.requestTimeout).toBe(60_000);
    expect(rig.app.server.keepAliveTimeout).toBe(72_000);
    expect(rig.app.server.timeout).toBe(300);
    const socket = connect(Number(new URL(rig.url).port), '127.0.0.1');
    await once(socket, 'connect');
    await once(socket, 'close');
    expect(socket.destroyed).toBe(true);
  });
});
