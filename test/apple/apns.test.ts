// The APNs client against a local HTTP/2 TLS server that plays APNs and
// checks every request the way Apple would: method, path, push type, topic,
// expiration, the exact body, and the credentials (an ES256 provider token
// verified with the matching public key, or a client certificate from the
// test CA). Backoff sleeps are replaced by a recorder, so nothing here waits
// on or asserts a duration.
import { createPublicKey, generateKeyPairSync, randomUUID, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { constants, createSecureServer, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import forge from 'node-forge';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApnsClient, parseRetryAfter, type ApnsClient, type ApnsOptions, type PushTarget } from '../../protocols/apple/apns.js';

const TOPIC = 'com.apple.mgmt.External.5f1d3a9e-8c1b-4e8e-9a57-0d2b1c7e4f60';
const TEAM_ID = 'TEAM123456';
const KEY_ID = 'KEY987654A';
const MIN = 60_000;

// ---- a throwaway PKI (node-forge certificates on keys made by node) --------------

interface Issued {
  certPem: string;
  keyPem: string;
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

let serial = 1;
function issue(subject: forge.pki.CertificateField[], o: { issuer?: Issued; ca?: boolean; serverIps?: string[]; clientAuth?: boolean }): Issued {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = pair.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(pair.publicKey.export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = (serial++).toString(16).padStart(2, '0');
  cert.validity.notBefore = new Date(Date.now() - 3_600_000);
  cert.validity.notAfter = new Date(Date.now() + 10 * 86_400_000);
  cert.setSubject(subject);
  cert.setIssuer(o.issuer ? o.issuer.cert.subject.attributes : subject);
  const ext: object[] = [{ name: 'basicConstraints', cA: !!o.ca, critical: true }];
  if (o.ca) ext.push({ name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true });
  if (o.serverIps) ext.push({ name: 'extKeyUsage', serverAuth: true }, { name: 'subjectAltName', altNames: o.serverIps.map((ip) => ({ type: 7, ip })) });
  if (o.clientAuth) ext.push({ name: 'extKeyUsage', clientAuth: true });
  cert.setExtensions(ext);
  cert.sign(o.issuer?.key ?? key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem, cert, key };
}

let ca: Issued;
let serverCert: Issued;
let pushCert: Issued;
let otherCa: Issued;
let strangerCert: Issued;
let p8: { privatePem: string; publicPem: string };

beforeAll(() => {
  ca = issue([{ shortName: 'CN', value: 'APNs test CA' }], { ca: true });
  serverCert = issue([{ shortName: 'CN', value: 'api.push.test' }], { issuer: ca, serverIps: ['127.0.0.1'] });
  // Shaped like an MDM push certificate: UID is the topic.
  pushCert = issue([{ type: '0.9.2342.19200300.100.1.1', value: TOPIC }, { shortName: 'CN', value: 'APSP:5f1d3a9e-8c1b-4e8e-9a57-0d2b1c7e4f60' }, { shortName: 'C', value: 'US' }], { issuer: ca, clientAuth: true });
  otherCa = issue([{ shortName: 'CN', value: 'Someone else' }], { ca: true });
  strangerCert = issue([{ shortName: 'CN', value: 'stranger' }], { issuer: otherCa, clientAuth: true });
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  p8 = { privatePem: ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicPem: ec.publicKey.export({ type: 'spki', format: 'pem' }).toString() };
});

// ---- a local APNs ---------------------------------------------------------------

interface Reply {
  status: number;
  reason?: string;
  timestamp?: number;
  headers?: Record<string, string>;
  /** Never answer. */
  hang?: boolean;
}

interface Seen {
  session: number;
  token: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  jwt?: string;
  clientSubject?: string;
}

interface FakeApns {
  url: string;
  seen: Seen[];
  problems: string[];
  /** Expected PushMagic per device token; a body for any other magic is a problem. */
  magic: Map<string, string>;
  /** Scripted replies per device token, used in order; 200 when none is left. */
  script: Map<string, Reply[]>;
  sessions: Map<ServerHttp2Session, number>;
  stop(): Promise<void>;
}

const clock = { t: Date.now() };
const now = () => clock.t;

async function startApns(mode: 'token' | 'certificate'): Promise<FakeApns> {
  const server: Http2Server = createSecureServer({
    key: serverCert.keyPem,
    cert: serverCert.certPem,
    ca: [ca.certPem],
    requestCert: mode === 'certificate',
    rejectUnauthorized: mode === 'certificate',
  });
  const fake: FakeApns = { url: '', seen: [], problems: [], magic: new Map(), script: new Map(), sessions: new Map(), stop: async () => {} };
  server.on('session', (s) => fake.sessions.set(s, fake.sessions.size + 1));
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => void answer(stream, headers, body));
  });

  async function answer(stream: ServerHttp2Stream, h: Record<string, string | string[] | undefined>, body: string): Promise<void> {
    const problems: string[] = [];
    const check = (ok: boolean, what: string) => ok || problems.push(what);
    const path = String(h[':path']);
    const token = /^\/3\/device\/([0-9a-f]{64})$/.exec(path)?.[1] ?? '';
    check(h[':method'] === 'POST', `method ${String(h[':method'])}`);
    check(token !== '', `path ${path}`);
    check(h['apns-push-type'] === 'mdm', `apns-push-type ${String(h['apns-push-type'])}`);
    check(h['apns-topic'] === TOPIC, `apns-topic ${String(h['apns-topic'])}`);
    check(h['apns-priority'] === '10', `apns-priority ${String(h['apns-priority'])}`);
    const exp = String(h['apns-expiration']);
    check(/^\d+$/.test(exp) && Number(exp) > Math.floor(now() / 1000), `apns-expiration ${exp} not in the future`);
    const magic = fake.magic.get(token);
    check(magic !== undefined && body === JSON.stringify({ mdm: magic }), `body ${body}`);
    const seen: Seen = { session: fake.sessions.get(stream.session as ServerHttp2Session) ?? 0, token, headers: h, body };
    const auth = h.authorization;
    if (mode === 'token') {
      const jwt = typeof auth === 'string' ? /^bearer (.+)$/.exec(auth)?.[1] : undefined;
      if (!jwt) problems.push('no bearer token');
      else {
        seen.jwt = jwt;
        try {
          // As APNs: signed with the key named by kid, by the team, and under an hour old.
          const { protectedHeader } = await jwtVerify(jwt, createPublicKey(p8.publicPem), { algorithms: ['ES256'], issuer: TEAM_ID, currentDate: new Date(now()), maxTokenAge: '1h' });
          check(protectedHeader.kid === KEY_ID, `kid ${protectedHeader.kid}`);
        } catch (e) {
          problems.push(`jwt: ${(e as Error).message}`);
        }
      }
    } else {
      check(auth === undefined, 'authorization header with certificate auth');
      const socket = stream.session?.socket as TLSSocket | undefined;
      const peer = socket?.getPeerCertificate();
      check(!!socket?.authorized, 'client certificate not authorized');
      seen.clientSubject = peer?.subject ? `UID=${String(peer.subject.UID)}, CN=${String(peer.subject.CN)}` : undefined;
      check(peer?.subject?.CN === 'APSP:5f1d3a9e-8c1b-4e8e-9a57-0d2b1c7e4f60' && peer.subject.UID === TOPIC, `client subject ${seen.clientSubject}`);
    }
    fake.seen.push(seen);
    fake.problems.push(...problems);
    const reply: Reply = problems.length ? { status: 400, reason: 'TestServerCheckFailed' } : (fake.script.get(token)?.shift() ?? { status: 200 });
    if (stream.destroyed || reply.hang) return;
    stream.respond({ ':status': reply.status, 'apns-id': randomUUID().toUpperCase(), ...reply.headers });
    stream.end(reply.reason ? JSON.stringify({ reason: reply.reason, ...(reply.timestamp ? { timestamp: reply.timestamp } : {}) }) : undefined);
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  fake.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.stop = async () => {
    for (const s of fake.sessions.keys()) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return fake;
}

// ---- helpers ----------------------------------------------------------------------

let fleet = 0;
/** A device with a fresh 32-byte token whose PushMagic the server expects. */
function device(apns: FakeApns, id = `dev-${++fleet}`): PushTarget {
  const token = Buffer.from(randomUUID().replace(/-/g, '').repeat(2), 'hex').toString('hex');
  const pushMagic = randomUUID().toUpperCase();
  apns.magic.set(token, pushMagic);
  return { deviceId: id, token, pushMagic };
}

interface Logged {
  level: 'info' | 'warn';
  msg: string;
  fields?: Record<string, unknown>;
}

let apns: FakeApns | undefined;
let client: ApnsClient | undefined;
let logs: Logged[];
let sleeps: number[];

function newClient(server: FakeApns, o: Partial<ApnsOptions> = {}): ApnsClient {
  logs = [];
  sleeps = [];
  client = createApnsClient({
    url: server.url,
    ca: ca.certPem,
    topic: TOPIC,
    auth: { kind: 'token', keyPem: p8.privatePem, keyId: KEY_ID, teamId: TEAM_ID },
    retry: { attempts: 3, baseMs: 10 },
    log: { info: (msg, fields) => logs.push({ level: 'info', msg, fields }), warn: (msg, fields) => logs.push({ level: 'warn', msg, fields }) },
    now,
    // Records the backoff instead of waiting it out.
    sleep: async (ms) => void sleeps.push(ms),
    random: () => 1,
    ...o,
  });
  return client;
}

afterEach(async () => {
  clock.t = Date.now();
  await client?.close();
  client = undefined;
  const problems = apns?.problems ?? [];
  await apns?.stop();
  apns = undefined;
  expect(problems).toEqual([]);
});

const distinct = <T>(xs: T[]) => new Set(xs).size;

// ---- token auth -------------------------------------------------------------------

describe('APNs with a provider token', () => {
  it('sends a well-formed MDM push: path, headers, expiration and the exact body', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    clock.t = Date.parse('2031-05-04T10:00:00.700Z');
    const [r] = await c.push([d]);
    expect(r).toMatchObject({ deviceId: d.deviceId, status: 'sent', httpStatus: 200 });
    expect(r?.apnsId).toMatch(/^[0-9A-F-]{36}$/);
    const [seen] = apns.seen;
    expect(seen?.token).toBe(d.token);
    expect(seen?.body).toBe(`{"mdm":"${d.pushMagic}"}`);
    // One day after the push was asked for, in absolute seconds.
    expect(seen?.headers['apns-expiration']).toBe(String(Date.parse('2031-05-04T10:00:00Z') / 1000 + 86_400));
    expect(decodeProtectedHeader(seen?.jwt ?? '')).toEqual({ alg: 'ES256', kid: KEY_ID });
  });

  it('reuses one JWT for 20 minutes: 19 minutes later it is the same, at 21 it is new', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const fleetA = Array.from({ length: 8 }, () => device(apns!));
    clock.t = Date.now();
    const jwtsAfter = async () => {
      const results = await c.push(fleetA);
      expect(results.every((r) => r.status === 'sent')).toBe(true);
      return distinct(apns!.seen.map((s) => s.jwt));
    };
    expect(await jwtsAfter()).toBe(1);
    expect(await jwtsAfter()).toBe(1);
    clock.t += 19 * MIN;
    expect(await jwtsAfter()).toBe(1);
    clock.t += 2 * MIN; // 21 minutes after the first was made
    expect(await jwtsAfter()).toBe(2);
    clock.t += 19 * MIN; // 19 after the second
    expect(await jwtsAfter()).toBe(2);
    clock.t += 2 * MIN;
    expect(await jwtsAfter()).toBe(3);
    expect(apns.seen).toHaveLength(6 * fleetA.length);
    // The server verified each token under an hour old at its time.
  });

  it('makes a new JWT early when APNs answers 403 ExpiredProviderToken, and retries at once', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    await c.push([device(apns)]); // a JWT is in use
    apns.script.set(d.token, [{ status: 403, reason: 'ExpiredProviderToken' }]);
    const [r] = await c.push([d]);
    expect(r).toMatchObject({ status: 'sent' });
    expect(apns.seen).toHaveLength(3);
    expect(distinct(apns.seen.map((s) => s.jwt))).toBe(2);
    expect(apns.seen[1]?.jwt).toBe(apns.seen[0]?.jwt);
    expect(sleeps).toEqual([]);
    expect(logs.some((l) => l.level === 'warn' && /clock/.test(l.msg))).toBe(true);
  });

  it('403 InvalidProviderToken fails without a retry', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    apns.script.set(d.token, [{ status: 403, reason: 'InvalidProviderToken' }]);
    expect(await c.push([d])).toEqual([expect.objectContaining({ status: 'failed', reason: 'InvalidProviderToken', httpStatus: 403 })]);
    expect(apns.seen).toHaveLength(1);
  });

  it('410 Unregistered marks the token unregistered, with the time APNs gives', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    apns.script.set(d.token, [{ status: 410, reason: 'Unregistered', timestamp: 1_700_000_000_000 }]);
    const [r] = await c.push([d]);
    expect(r).toMatchObject({ deviceId: d.deviceId, status: 'unregistered', reason: 'Unregistered', httpStatus: 410, unregisteredAt: 1_700_000_000_000 });
    expect(apns.seen).toHaveLength(1);
  });

  it('400 BadDeviceToken fails (never unregistered) and warns once about topic or environment', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const bad = [device(apns), device(apns), device(apns)];
    const good = device(apns);
    for (const d of bad) apns.script.set(d.token, [{ status: 400, reason: 'BadDeviceToken' }]);
    const results = await c.push([...bad, good]);
    expect(results.map((r) => [r.deviceId, r.status, r.reason])).toEqual([
      ...bad.map((d) => [d.deviceId, 'failed', 'BadDeviceToken']),
      [good.deviceId, 'sent', undefined],
    ]);
    expect(results.every((r) => r.status !== 'unregistered')).toBe(true);
    expect(apns.seen).toHaveLength(4); // no retries
    const warnings = logs.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.msg).toMatch(/topic/);
    expect(warnings[0]?.msg).toMatch(/environment/);
    expect(warnings[0]?.fields).toMatchObject({ reason: 'BadDeviceToken', count: 3, topic: TOPIC });
  });

  it('429 then 200: sent after one retry, honouring Retry-After', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    apns.script.set(d.token, [{ status: 429, reason: 'TooManyRequests', headers: { 'retry-after': '2' } }]);
    const [r] = await c.push([d]);
    expect(r).toMatchObject({ status: 'sent', httpStatus: 200 });
    expect(apns.seen.map((s) => s.token)).toEqual([d.token, d.token]);
    expect(sleeps).toEqual([2000]);
  });

  it('500 three times: failed after three attempts, with exponential backoff between them', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { retry: { attempts: 3, baseMs: 100 } });
    const d = device(apns);
    apns.script.set(d.token, [{ status: 500, reason: 'InternalServerError' }, { status: 500, reason: 'InternalServerError' }, { status: 500, reason: 'InternalServerError' }, { status: 200 }]);
    const [r] = await c.push([d]);
    expect(r).toMatchObject({ status: 'failed', reason: 'InternalServerError', httpStatus: 500 });
    expect(apns.seen).toHaveLength(3);
    expect(sleeps).toEqual([100, 200]); // random() = 1: the top of each jitter range
  });

  it('jitters the backoff below the exponential ceiling', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { retry: { attempts: 3, baseMs: 100 }, random: () => 0.25 });
    const d = device(apns);
    apns.script.set(d.token, [{ status: 503, reason: 'ServiceUnavailable' }, { status: 503, reason: 'ServiceUnavailable' }]);
    expect((await c.push([d]))[0]?.status).toBe('sent');
    expect(sleeps).toEqual([25, 50]);
  });

  it('coalesces ten concurrent pushes for one device into one request; every caller gets the result', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const d = device(apns);
    const results = await Promise.all(Array.from({ length: 10 }, () => c.push([d])));
    expect(apns.seen).toHaveLength(1);
    expect(results.map((r) => r[0]?.status)).toEqual(Array(10).fill('sent'));
    expect(distinct(results.map((r) => r[0]?.apnsId))).toBe(1);
    // Once that request is done, a new push is a new request.
    await c.push([d]);
    expect(apns.seen).toHaveLength(2);
  });

  it('coalescing keeps the newest token and PushMagic, and duplicates within one call', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const old = device(apns, 'mac-1');
    const renewed = device(apns, 'mac-1'); // a TokenUpdate came in between
    apns.magic.delete(old.token);
    const other = device(apns);
    const [a, b] = await Promise.all([c.push([old, other, old]), c.push([renewed])]);
    expect(apns.seen.map((s) => s.token).sort()).toEqual([renewed.token, other.token].sort());
    expect(a?.map((r) => r.deviceId)).toEqual(['mac-1', other.deviceId, 'mac-1']);
    expect([...(a ?? []), ...(b ?? [])].every((r) => r.status === 'sent')).toBe(true);
  });

  it('refuses a token that is not hex without sending anything', async () => {
    apns = await startApns('token');
    const c = newClient(apns);
    const results = await c.push([{ deviceId: 'x', token: '../../3/device/abc', pushMagic: 'm' }, { deviceId: 'y', token: '', pushMagic: 'm' }]);
    expect(results.map((r) => [r.status, r.reason])).toEqual([['failed', 'InvalidToken'], ['failed', 'InvalidToken']]);
    expect(apns.seen).toHaveLength(0);
  });

  it('keeps a pool of long-lived sessions: many pushes over two connections', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { connections: 2 });
    for (let round = 0; round < 4; round++) {
      const results = await c.push(Array.from({ length: 5 }, () => device(apns!)));
      expect(results.every((r) => r.status === 'sent')).toBe(true);
    }
    expect(apns.seen).toHaveLength(20);
    expect(apns.sessions.size).toBe(2);
    expect(distinct(apns.seen.map((s) => s.session))).toBe(2);
  });

  it('reconnects after the server sends GOAWAY', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { connections: 1 });
    expect((await c.push([device(apns)]))[0]?.status).toBe('sent');
    const [first] = [...apns.sessions.keys()];
    first!.goaway(constants.NGHTTP2_NO_ERROR);
    // The client's only outward sign of having read the GOAWAY is its log line.
    await vi.waitFor(() => expect(logs.some((l) => /GOAWAY/.test(l.msg))).toBe(true));
    expect((await c.push([device(apns)]))[0]?.status).toBe('sent');
    expect(apns.sessions.size).toBe(2);
    expect(apns.seen.map((s) => s.session)).toEqual([1, 2]);
    expect(sleeps).toEqual([]); // the new session was used at once, not after a failed try on the old one
  });

  it('a push racing a GOAWAY and close still arrives, on a new session', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { connections: 1 });
    expect((await c.push([device(apns)]))[0]?.status).toBe('sent');
    const [first] = [...apns.sessions.keys()];
    first!.goaway(constants.NGHTTP2_NO_ERROR);
    first!.close();
    const [r] = await c.push([device(apns)]);
    expect(r?.status).toBe('sent');
    expect(apns.seen.at(-1)?.session).toBe(2);
  });

  it('gives up on a request that gets no answer and retries it on a new session', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { connections: 1, requestTimeoutMs: 300 });
    const d = device(apns);
    apns.script.set(d.token, [{ status: 0, hang: true }]);
    const [r] = await c.push([d]);
    expect(r?.status).toBe('sent');
    expect(apns.seen.map((s) => s.session)).toEqual([1, 2]);
    expect(sleeps).toHaveLength(1);
  });

  it('reconnects after the server drops the connection', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { connections: 1 });
    expect((await c.push([device(apns)]))[0]?.status).toBe('sent');
    const [first] = [...apns.sessions.keys()];
    const closed = once(first!, 'close');
    first!.destroy();
    await closed;
    const [r] = await c.push([device(apns)]);
    expect(r?.status).toBe('sent');
    expect(apns.sessions.size).toBe(2);
    expect(apns.seen.at(-1)?.session).toBe(2);
  });

  it('close() sends what is waiting, shuts the sessions and refuses new pushes', async () => {
    apns = await startApns('token');
    const c = newClient(apns, { coalesceMs: 60_000 });
    await Promise.all([c.push([device(apns)]), c.close()]).then(([r]) => expect(r[0]?.status).toBe('sent'));
    const sessions = [...apns.sessions.keys()];
    expect(sessions).toHaveLength(1);
    expect(sessions.every((s) => s.closed || s.destroyed)).toBe(true);
    await expect(c.push([device(apns)])).rejects.toThrow(/closed/);
  });

  it('refuses a topic that is not an MDM topic and a signing key that is not P-256', () => {
    const base = { log: { info: () => {}, warn: () => {} } };
    expect(() => createApnsClient({ ...base, topic: 'com.example.app', auth: { kind: 'token', keyPem: p8.privatePem, keyId: KEY_ID, teamId: TEAM_ID } })).toThrow(/MDM push topic/);
    expect(() => createApnsClient({ ...base, topic: TOPIC, auth: { kind: 'token', keyPem: serverCert.keyPem, keyId: KEY_ID, teamId: TEAM_ID } })).toThrow(/P-256/);
  });
});

// ---- certificate auth ---------------------------------------------------------------

describe('APNs with the push certificate', () => {
  const certAuth = () => ({ kind: 'certificate' as const, certPem: pushCert.certPem, keyPem: pushCert.keyPem });

  it('presents the push certificate as the TLS client certificate, with no authorization header', async () => {
    apns = await startApns('certificate');
    const c = newClient(apns, { auth: certAuth() });
    const results = await c.push([device(apns), device(apns)]);
    expect(results.map((r) => r.status)).toEqual(['sent', 'sent']);
    expect(apns.seen.map((s) => s.clientSubject)).toEqual(Array(2).fill(`UID=${TOPIC}, CN=APSP:5f1d3a9e-8c1b-4e8e-9a57-0d2b1c7e4f60`));
    expect(logs.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('the server really refuses other clients: a certificate from another CA fails, and is not thrown', async () => {
    apns = await startApns('certificate');
    const c = newClient(apns, { auth: { kind: 'certificate', certPem: strangerCert.certPem, keyPem: strangerCert.keyPem }, topic: TOPIC });
    const [r] = await c.push([device(apns)]);
    expect(r?.status).toBe('failed');
    expect(r?.reason).toBeTruthy();
    expect(apns.seen).toHaveLength(0);
    expect(sleeps).toHaveLength(2); // retried like any connection failure
  });

  it('warns when the topic is not the certificate\'s UID', async () => {
    apns = await startApns('certificate');
    newClient(apns, { auth: certAuth(), topic: 'com.apple.mgmt.External.00000000-0000-0000-0000-000000000000' });
    expect(new X509Certificate(pushCert.certPem).subject).toContain(`UID=${TOPIC}`);
    expect(logs).toEqual([expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/UID/) })]);
  });
});

describe('parseRetryAfter', () => {
  it.each([
    [undefined, undefined],
    ['', undefined],
    ['3', 3000],
    ['0', 0],
    ['Thu, 01 Jan 2037 00:00:10 GMT', 10_000],
    ['Thu, 01 Jan 2037 00:00:00 GMT', 0],
    ['soon', undefined],
  ])('%s → %s ms', (v, ms) => {
    expect(parseRetryAfter(v, Date.parse('2037-01-01T00:00:00Z'))).toBe(ms);
  });
});
