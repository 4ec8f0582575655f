// The AMAPI worker on the real command queue against the local AMAPI server:
// what fails a command (4xx, with Google's message; a missing secret, named
// but never shown), what defers it (5xx and 429 beyond the limiter's own
// retries, after Retry-After), and a policy re-sent when its secrets change.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { Amapi } from '../../protocols/android/client.js';
import { BASE_POLICY_ID } from '../../protocols/android/compile.js';
import { APPLY_POLICY } from '../../protocols/android/driver.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';
import { AmapiWorker } from '../../protocols/android/worker.js';
import { backends, testDatabase, type TestDatabase } from '../support/db.js';

describe.each(backends)('the AMAPI worker (%s)', (backend) => {
  let tdb: TestDatabase;
  let store: Store;
  const sim = new AmapiSimulator();
  let enterprise: string;
  let worker: AmapiWorker;
  const secrets: Record<string, string> = { PSK: 'first-passphrase' };
  const warnings: string[] = [];
  let n = 0;
  const ids: string[] = [];
  const apply = async (deviceId: string, policyId: string, policy: Record<string, unknown>) => {
    const uuid = `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
    await store.commands.enqueue({ uuid, deviceId, type: APPLY_POLICY, payload: { policyId, policy } });
    await worker.drain();
    return (await store.commands.get(uuid))!;
  };

  beforeAll(async () => {
    tdb = await testDatabase(backend);
    store = await tdb.open();
    await sim.start();
    enterprise = sim.createEnterprise();
    // The limiter's waits run on a virtual clock (a 429's pause would otherwise hold the suite for minutes).
    let clock = 0;
    const amapi = new Amapi({ keyJson: sim.serviceAccountKey(), rootUrl: sim.url, rateLimit: { attempts: 2, now: () => clock, sleep: async (ms) => void (clock += ms) } });
    worker = new AmapiWorker({ store, amapi, enterprise, secret: (k) => secrets[k], log: { info() {}, warn: (m, f) => void warnings.push(`${m} ${JSON.stringify(f)}`) } });
    await amapi.patchPolicy(`${enterprise}/policies/${BASE_POLICY_ID}`, {});
    const t = await amapi.createEnrollmentToken(enterprise, { policyName: `${enterprise}/policies/${BASE_POLICY_ID}` });
    for (let i = 0; i < 3; i++) {
      const name = sim.enroll(t.value!, { id: `w0rker${i}` });
      ids.push(`w0rker${i}`);
      await store.devices.upsert({ id: `w0rker${i}`, platform: 'android' });
      await store.devices.setEnrollment({ deviceId: `w0rker${i}`, platform: 'android', status: 'enrolled', state: { name, policyName: `${enterprise}/policies/${BASE_POLICY_ID}` } });
    }
  });
  afterAll(async () => {
    await sim.stop();
    await tdb?.cleanup();
  });

  it('fails a command AMAPI refuses (4xx), with Google’s message', async () => {
    const c = await apply(ids[0]!, 'm-bad', { cameraAccess: 'NO_CAMERA' });
    expect(c).toMatchObject({ state: 'failed', lastError: expect.stringContaining(`400 INVALID_ARGUMENT: Invalid value at 'policy.cameraAccess'`) });
    const orphan = 'no-amapi-name';
    await store.devices.upsert({ id: orphan, platform: 'android' });
    expect(await apply(orphan, 'm-x', {})).toMatchObject({ state: 'failed', lastError: expect.stringMatching(/no AMAPI device name/) });
  });

  it('fails a command whose secret is not set, naming the secret and never its value', async () => {
    const c = await apply(ids[0]!, 'm-secret', { openNetworkConfiguration: { NetworkConfigurations: [{ GUID: 'g', Name: 'n', Type: 'WiFi', WiFi: { SSID: 'n', Security: 'WPA-PSK', Passphrase: '${secret:MISSING}' } }] } });
    expect(c).toMatchObject({ state: 'failed', lastError: expect.stringMatching(/secret MISSING not set/) });
  });

  it('scrubs a secret Google quotes back in a refusal before it is logged or stored', async () => {
    const c = await apply(ids[0]!, 'm-echo', { cameraAccess: '${secret:PSK}' });
    expect(c.state).toBe('failed');
    expect(c.lastError).toContain(`Invalid value at 'policy.cameraAccess' ("(secret)")`);
    expect(JSON.stringify([c, await store.commands.results(c.uuid), warnings])).not.toContain(secrets.PSK);
  });

  it('defers what failed for a passing reason beyond the limiter’s retries, honouring Retry-After', async () => {
    sim.fail({ method: 'PATCH', path: /policies\/m-flaky$/, status: 503, times: 2 });
    const c = await apply(ids[1]!, 'm-flaky', { screenCaptureDisabled: true });
    expect(c).toMatchObject({ state: 'not_now', lastError: null });
    expect((await store.commands.results(c.uuid)).at(-1)).toMatchObject({ status: 'not_now', error: expect.stringContaining('503 UNAVAILABLE') });
    sim.fail({ method: 'PATCH', path: /policies\/m-busy$/, status: 429, retryAfter: 120, times: 2 });
    const busy = await apply(ids[1]!, 'm-busy', { screenCaptureDisabled: true });
    expect(busy.state).toBe('not_now');
    // Not asked again before Google said it may be.
    expect(busy.notBefore.getTime() - Date.now()).toBeGreaterThan(100_000);
    expect(warnings.some((w) => w.includes('it will be tried again') && w.includes('"retryAfterMs":120000'))).toBe(true);
  });

  it('re-sends a policy whose secrets changed, and records the version the device must reach', async () => {
    const wifi = { openNetworkConfiguration: { NetworkConfigurations: [{ GUID: 'g', Name: 'Corp', Type: 'WiFi', WiFi: { SSID: 'Corp', Security: 'WPA-PSK', Passphrase: '${secret:PSK}' } }] } };
    expect((await apply(ids[0]!, 'm-wifi', wifi)).state).toBe('completed');
    expect((await apply(ids[1]!, 'm-wifi', wifi)).state).toBe('completed');
    const name = `${enterprise}/policies/m-wifi`;
    expect(sim.requests.filter((r) => r.method === 'PATCH' && r.path === `/v1/${name}`)).toHaveLength(1);
    secrets.PSK = 'rotated-passphrase';
    expect((await apply(ids[2]!, 'm-wifi', wifi)).state).toBe('completed');
    expect(sim.requests.filter((r) => r.method === 'PATCH' && r.path === `/v1/${name}`)).toHaveLength(2);
    expect(sim.policies.get(name)).toMatchObject({ version: 2n });
    expect(JSON.stringify(sim.policies.get(name)!.policy)).toContain('rotated-passphrase');
    expect((await store.devices.getEnrollment(ids[2]!))?.state).toMatchObject({ policyName: name, expected: { policyId: 'm-wifi', version: '2' } });
    expect(JSON.stringify(await store.commands.listForDevice(ids[2]!))).not.toContain('rotated-passphrase');
  });
});
