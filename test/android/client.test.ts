// The real googleapis client (@googleapis/androidmanagement) against the local
// AMAPI server: service-account credentials through the JWT-bearer grant,
// Google's error bodies as AmapiError, paging, updateMask, signup — and the
// retry policy: gaxios's own retries are off, the limiter retries exactly 429,
// 5xx and lost connections, honouring Retry-After, with exponential backoff.
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Amapi, AmapiError } from '../../protocols/android/client.js';
import { finishSignup, startSignup } from '../../protocols/android/enroll.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';

describe('the AMAPI client against the local AMAPI server', () => {
  const sim = new AmapiSimulator();
  let enterprise: string;
  let dir: string;
  const sleeps: number[] = [];
  // The limiter's clock is virtual: a wait moves it on at once, and is recorded.
  let t = 0;
  const client = (o: { attempts?: number; keyJson?: string; rootUrl?: string } = {}) =>
    new Amapi({
      keyJson: o.keyJson ?? sim.serviceAccountKey(),
      rootUrl: o.rootUrl ?? sim.url,
      rateLimit: { attempts: o.attempts ?? 6, baseMs: 1000, random: () => 0.5, now: () => t, sleep: async (ms) => void (sleeps.push(ms), (t += ms)) },
    });

  beforeAll(async () => {
    await sim.start();
    enterprise = sim.createEnterprise();
    dir = mkdtempSync(join(tmpdir(), 'muster-amapi-'));
  });
  afterAll(async () => {
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('exchanges a service-account key file for an access token once, and reuses it', async () => {
    const file = join(dir, 'key.json');
    writeFileSync(file, sim.serviceAccountKey());
    const before = sim.tokenRequests.length;
    const a = new Amapi({ keyFile: file, rootUrl: sim.url });
    const [e1, e2] = await Promise.all([a.getEnterprise(enterprise), a.getEnterprise(enterprise)]);
    await a.getEnterprise(enterprise);
    expect(e1.name).toBe(enterprise);
    expect(e2.name).toBe(enterprise);
    // Concurrent calls share one token request; later calls reuse the token.
    expect(sim.tokenRequests.slice(before)).toEqual([{ status: 200 }]);
    expect(a.requests['enterprises.get']).toBe(3);
  });

  it('refuses a key the token endpoint does not accept, without retrying', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const before = sim.tokenRequests.length;
    const bad = client({ keyJson: sim.serviceAccountKey({ privateKeyPem: other }) });
    const err = await bad.getEnterprise(enterprise).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AmapiError);
    expect(err).toMatchObject({ status: 400 });
    expect((err as Error).message).toMatch(/token exchange .* failed: 400 invalid_grant: Invalid JWT: signature verification failed/);
    expect(sim.tokenRequests.slice(before)).toHaveLength(1);
    // The assertion is checked for its issuer too.
    const impostor = client({ keyJson: sim.serviceAccountKey({ email: 'someone@else.iam.gserviceaccount.com' }) });
    await expect(impostor.getEnterprise(enterprise)).rejects.toThrow(/unexpected "iss" claim value/);
    expect(() => new Amapi({ keyJson: '{not json' })).toThrow(/not JSON/);
    expect(() => new Amapi({ keyJson: '{"client_email": "x"}' })).toThrow(/no client_email or private_key/);
  });

  it("turns Google's error bodies into AmapiError with Google's message and status", async () => {
    const a = client();
    const missing = await a.getPolicy(`${enterprise}/policies/nope`).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(AmapiError);
    expect(missing).toMatchObject({ status: 404, reason: 'NOT_FOUND' });
    expect((missing as Error).message).toMatch(/^policies.get enterprises\/.*\/policies\/nope: 404 NOT_FOUND: Requested entity was not found/);
    const bad = await a.patchPolicy(`${enterprise}/policies/p1`, { cameraAccess: 'CAMERA_OFF' }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ status: 400, reason: 'INVALID_ARGUMENT' });
    expect((bad as Error).message).toContain(`Invalid value at 'policy.cameraAccess' ("CAMERA_OFF")`);
  });

  it('retries a 429 after the Retry-After it was given, and 5xx with exponential backoff', async () => {
    const a = client();
    await a.patchPolicy(`${enterprise}/policies/p2`, { screenCaptureDisabled: true });
    sleeps.length = 0;
    sim.fail({ method: 'GET', path: /policies\/p2$/, status: 429, retryAfter: 7, times: 2 });
    expect((await a.getPolicy(`${enterprise}/policies/p2`)).screenCaptureDisabled).toBe(true);
    expect(sleeps).toEqual([7000, 7000]);
    expect(a.requests['policies.get']).toBe(3);

    sleeps.length = 0;
    sim.fail({ method: 'GET', path: /policies\/p2$/, status: 500, times: 2 });
    sim.fail({ method: 'GET', path: /policies\/p2$/, status: 503, times: 1 });
    expect((await a.getPolicy(`${enterprise}/policies/p2`)).name).toBe(`${enterprise}/policies/p2`);
    // base 1 s, doubling, jitter fixed at the middle of the upper half.
    expect(sleeps).toEqual([750, 1500, 3000]);
    expect(a.limiter.retries).toBe(5);
  });

  it('has gaxios retry nothing itself: with one attempt, a failing GET is sent exactly once', async () => {
    const a = client({ attempts: 1 });
    const before = sim.requests.length;
    sim.fail({ method: 'GET', path: /policies\/p2$/, status: 500 });
    await expect(a.getPolicy(`${enterprise}/policies/p2`)).rejects.toMatchObject({ status: 500 });
    sim.fail({ method: 'GET', path: /policies\/p2$/, status: 429, retryAfter: 1 });
    await expect(a.getPolicy(`${enterprise}/policies/p2`)).rejects.toMatchObject({ status: 429, retryAfterMs: 1000 });
    expect(sim.requests.slice(before).map((r) => r.status)).toEqual([500, 429]);
  });

  it('retries a command only when Google refused it before doing anything (429), never after a 5xx', async () => {
    const t = await client().createEnrollmentToken(enterprise, { policyName: `${enterprise}/policies/p2`, duration: '600s' });
    const device = sim.enroll(t.value!, { serial: 'R1' });
    const a = client();
    sim.fail({ path: /:issueCommand$/, status: 500 });
    await expect(a.issueCommand(device, { type: 'LOCK' })).rejects.toMatchObject({ status: 500 });
    expect(a.requests['devices.issueCommand']).toBe(1);
    sim.fail({ path: /:issueCommand$/, status: 429, retryAfter: 2 });
    const op = await a.issueCommand(device, { type: 'LOCK' });
    expect(op.name).toMatch(new RegExp(`^${device}/operations/`));
    expect(a.requests['devices.issueCommand']).toBe(3);
    expect((await a.getOperation(op.name!)).metadata).toMatchObject({ type: 'LOCK' });
  });

  it('retries a lost connection, and not an error raised before anything was sent', async () => {
    const closed = new AmapiSimulator();
    await closed.start();
    const url = closed.url;
    await closed.stop();
    sleeps.length = 0;
    const gone = client({ rootUrl: url, attempts: 3 });
    // The token comes from the running server; the API root answers nothing.
    await expect(gone.getEnterprise(enterprise)).rejects.toMatchObject({ status: undefined });
    expect(sleeps).toHaveLength(2);
    const a = client();
    sleeps.length = 0;
    const e = await a.call('policies.get', '(none)', () => a.api.enterprises.policies.get({} as { name: string })).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/Missing required parameters: name/);
    expect(sleeps).toEqual([]);
  });

  it('pages through devices.list with pageToken/nextPageToken', async () => {
    const t = await client().createEnrollmentToken(enterprise, { policyName: `${enterprise}/policies/p2` });
    for (let i = 0; i < 24; i++) sim.enroll(t.value!, { serial: `S${i}` });
    const a = client();
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const p = await a.listDevices(enterprise, token, 10);
      pages++;
      for (const d of p.devices ?? []) seen.push(d.name!);
      token = p.nextPageToken ?? undefined;
    } while (token);
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(25);
  });

  it('patches a device with updateMask=policyName only; a patch without a mask is an illegal transition', async () => {
    const a = client();
    await a.patchPolicy(`${enterprise}/policies/p3`, { cameraAccess: 'CAMERA_ACCESS_DISABLED' });
    const device = [...sim.devices.keys()][0]!;
    const d = await a.setDevicePolicy(device, `${enterprise}/policies/p3`);
    expect(d.policyName).toBe(`${enterprise}/policies/p3`);
    const patch = sim.requests.filter((r) => r.method === 'PATCH' && r.path === `/v1/${device}`).at(-1)!;
    expect(patch.query).toMatchObject({ updateMask: 'policyName' });
    expect(patch.body).toEqual({ policyName: `${enterprise}/policies/p3` });
    await expect(a.call('devices.patch', device, () => a.api.enterprises.devices.patch({ name: device, requestBody: { policyName: `${enterprise}/policies/p2` } }))).rejects.toMatchObject({
      status: 400,
      reason: 'FAILED_PRECONDITION',
      message: expect.stringMatching(/Illegal state transition/),
    });
  });

  it('binds to a new enterprise: signupUrls.create, then enterprises.create with the token the callback got', async () => {
    const a = client();
    const s = await startSignup(a, { projectId: sim.projectId, callbackUrl: 'https://muster.example.com/android/signup' });
    expect(s.url).toMatch(/^https:\/\/play\.google\.com\/work\/adminsignup\?token=/);
    const callback = new URL(sim.completeSignup(s.name));
    expect(callback.origin + callback.pathname).toBe('https://muster.example.com/android/signup');
    const token = callback.searchParams.get('enterpriseToken')!;
    await expect(finishSignup(a, { projectId: sim.projectId, signupUrlName: s.name, enterpriseToken: 'forged' })).rejects.toMatchObject({ status: 400 });
    const e = await finishSignup(a, { projectId: sim.projectId, signupUrlName: s.name, enterpriseToken: token, displayName: 'Acme' });
    expect(e).toEqual({ name: expect.stringMatching(/^enterprises\/LC/), displayName: 'Acme' });
    expect((await a.getEnterprise(e.name)).enterpriseDisplayName).toBe('Acme');
  });
});
