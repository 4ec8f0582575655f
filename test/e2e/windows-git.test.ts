// Windows end to end, the way a fleet runs: policy in a Git repository,
// `muster serve --windows` over HTTPS that asks for client certificates, and
// simulated PCs that enroll with credentials from `muster enroll windows`
// (discovery, policy, WSTEP, a real CSR) and then reach the server only on
// their own poll schedule. A commit rolls a bundle out in stages (a person
// promotes past the pause), an admin locks a PC from the CLI, and a commit
// that drops the rollout deletes the nodes again.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf } from '../../controller/rollout/bucket.js';
import { SimulatedWindowsDevice } from '../../protocols/windows/simulator/device.js';
import { enrollWindowsDevice } from '../../protocols/windows/simulator/enroll-client.js';
import { group, rollout } from '../reconcile/helpers.js';
import { serverCertificate } from '../windows/session-support.js';
import { BIN, PolicyRepo, childEnv, createToken, freePort, serve, until, type Served } from './support.js';

const run = promisify(execFile);
const CAMERA = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera';
const MIN_LENGTH = './Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength';
const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: win-baseline }
spec:
  version: "1.0.0"
  platforms: [windows]
  settings:
    passcode: { required: true, minLength: 12 }
    restrictions: { allowCamera: false }
`;
const groupYaml = group('pilot-pcs', '{ matchLabels: { muster.dev/platform: windows, muster.dev/enrollment-group: pilot } }');

describe('Windows fleet from a Git commit, on its poll schedule', { timeout: 180_000 }, () => {
  const repo = new PolicyRepo();
  const dir = repo.root;
  const tls = serverCertificate();
  let server: Served;
  let token: string;
  const pcs: SimulatedWindowsDevice[] = [];
  // Asynchronous: the PCs poll from this process, and a blocking call would starve them.
  const cli = async (...args: string[]) => (await run(process.execPath, [BIN, ...args, '--server', server.url], { env: childEnv({ MUSTER_TOKEN: token, NODE_EXTRA_CA_CERTS: join(dir, 'tls.pem') }), encoding: 'utf8' })).stdout;

  beforeAll(async () => {
    writeFileSync(join(dir, 'tls.pem'), tls.cert);
    writeFileSync(join(dir, 'tls.key'), tls.key);
    repo.commit({ 'groups/pilot.yaml': groupYaml }, 'pilot group');
    const db = join(dir, 'db');
    token = createToken(db, 'operate');
    const port = await freePort();
    server = await serve(
      ['--source', repo.bare, '--git-interval', '1s', '--data-dir', db, '--ca-dir', join(dir, 'ca'), '--git-cache', join(dir, 'git-cache'), '--tick', '200ms', '--listen', `127.0.0.1:${port}`,
        '--tls-cert', join(dir, 'tls.pem'), '--tls-key', join(dir, 'tls.key'), '--public-url', `https://127.0.0.1:${port}`,
        '--windows', '--windows-credential-domain', 'corp.example.com', '--windows-poll', '1m'],
      childEnv({ MUSTER_CA_PASSPHRASE: 'a passphrase for the e2e CA' }),
    );
    expect(server.url).toBe(`https://127.0.0.1:${port}`);

    for (let i = 0; i < 6; i++) {
      // One credential per PC, from the CLI a person would use.
      const cred = JSON.parse(await cli('enroll', 'windows', '--group', 'pilot', '--note', `pc ${i}`, '--output', 'json')) as { username: string; password: string; discoveryUrl: string; enrollLink: string; oneTime: boolean };
      expect(cred.oneTime).toBe(true);
      expect(cred.enrollLink).toMatch(/^ms-device-enrollment:\?mode=mdm&username=enroll-[0-9a-f]+%40corp\.example\.com&servername=https%3A%2F%2F127\.0\.0\.1/);
      const enrolled = await enrollWindowsDevice({ discoveryUrl: cred.discoveryUrl, email: cred.username, password: cred.password, ca: tls.cert, deviceId: `E2EWIN${i}0000000000000000000000000`.slice(0, 32), deviceName: `DESK-${i}` });
      // The credential works once.
      await expect(enrollWindowsDevice({ discoveryUrl: cred.discoveryUrl, email: cred.username, password: cred.password, ca: tls.cert })).rejects.toMatchObject({ step: 'policy' });
      const pc = new SimulatedWindowsDevice({ ...enrolled, caPem: tls.cert, model: 'Surface Laptop 7' });
      // Its provisioning said: poll every minute; here a minute lasts 100 ms.
      pc.startPolling({ minuteMs: 100 });
      pcs.push(pc);
    }
    await until(async () => {
      const list = JSON.parse(await cli('devices', 'list', '--platform', 'windows', '--output', 'json')) as Array<{ model: string | null }>;
      return list.length === 6 && list.every((d) => d.model === 'Surface Laptop 7');
    }, 30_000, 'six PCs known by their first sessions');
  }, 150_000);
  afterAll(async () => {
    for (const pc of pcs) pc.stopPolling();
    await server?.stop();
    repo.cleanup();
  });

  it('rolls a committed bundle to the ring, waits for a person, then to every PC, each at its own poll', async () => {
    const ring = pcs.filter((p) => bucketOf('win', p.deviceId) < 5000);
    expect(ring.length).toBeGreaterThan(0);
    expect(ring.length).toBeLessThan(pcs.length);

    repo.commit({ 'groups/pilot.yaml': groupYaml, 'bundles/win.yaml': bundleYaml, 'rollouts/win.yaml': rollout('win', 'win-baseline', ['pilot-pcs'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') }, 'roll out win-baseline');
    await until(async () => ring.every((p) => p.tree.get(CAMERA)?.value === '0' && p.tree.get(MIN_LENGTH)?.value === '12'), 60_000, 'the nodes on the ring').catch(async (e) => {
      console.log(await cli('rollout', 'status', 'win', '--output', 'json'));
      console.log(await cli('devices', 'show', ring[0]!.deviceId, '--output', 'json'));
      console.log(JSON.stringify([...ring[0]!.tree.snapshot().keys()]), ring[0]!.sessions.slice(-3), ring[0]!.lastError);
      throw e;
    });
    await until(async () => JSON.parse(await cli('rollout', 'status', 'win', '--output', 'json')).phase === 'Paused', 30_000, 'the pause');
    expect(pcs.filter((p) => p.tree.get(CAMERA)?.value === '0').map((p) => p.deviceId)).toEqual(ring.map((p) => p.deviceId));

    await cli('rollout', 'promote', 'win');
    await until(async () => pcs.every((p) => p.tree.get(CAMERA)?.value === '0'), 60_000, 'the nodes on every PC');
    await until(async () => JSON.parse(await cli('rollout', 'status', 'win', '--output', 'json')).phase === 'Healthy', 30_000, 'a healthy rollout');
    const shown = JSON.parse(await cli('devices', 'show', pcs[0]!.deviceId, '--output', 'json')) as { sync: string; device: { attributes: Record<string, string> } };
    expect(shown.sync).toBe('Synced');
    expect(shown.device.attributes['enrollment-group']).toBe('pilot');
  });

  it('locks a PC from the CLI at its next poll', async () => {
    const pc = pcs[1]!;
    await cli('devices', 'lock', pc.deviceId);
    await until(async () => pc.locked, 30_000, 'the PC to lock');
    await until(async () => (JSON.parse(await cli('devices', 'show', pc.deviceId, '--output', 'json')) as { commands: Array<{ type: string; state: string }> }).commands.some((c) => c.type === 'windows.Lock' && c.state === 'completed'), 30_000, 'the lock command completed');
  });

  it('a PC wiped from the CLI is out of management; enrolled again, it receives every bundle at once, with no new bundle version', async () => {
    const old = pcs[2]!;
    await cli('devices', 'wipe', old.deviceId, '--yes');
    await until(async () => old.wiped, 30_000, 'the PC to wipe');
    await until(async () => (JSON.parse(await cli('devices', 'show', old.deviceId, '--output', 'json')) as { commands: Array<{ type: string; state: string }> }).commands.some((c) => c.type === 'windows.Wipe' && c.state === 'completed'), 30_000, 'the wipe confirmed');
    old.stopPolling();
    // The reset PC has a fresh DM client and holds nothing; the wipe freed its id, so an ordinary credential enrolls it.
    const cred = JSON.parse(await cli('enroll', 'windows', '--group', 'pilot', '--output', 'json')) as { username: string; password: string; discoveryUrl: string };
    const enrolled = await enrollWindowsDevice({ discoveryUrl: cred.discoveryUrl, email: cred.username, password: cred.password, ca: tls.cert, deviceId: old.deviceId, deviceName: 'DESK-2' });
    const fresh = new SimulatedWindowsDevice({ ...enrolled, caPem: tls.cert, model: 'Surface Laptop 7' });
    expect(fresh.tree.get(CAMERA)).toBeUndefined();
    fresh.startPolling({ minuteMs: 100 });
    pcs[2] = fresh;
    await until(async () => fresh.tree.get(CAMERA)?.value === '0' && fresh.tree.get(MIN_LENGTH)?.value === '12', 60_000, 'the bundle on the re-enrolled PC');
    await until(async () => (JSON.parse(await cli('devices', 'show', fresh.deviceId, '--output', 'json')) as { sync: string }).sync === 'Synced', 30_000, 'the re-enrolled PC in sync');
  });

  it('deletes the nodes when a commit drops the rollout', async () => {
    repo.commit({ 'groups/pilot.yaml': groupYaml, 'bundles/win.yaml': bundleYaml }, 'drop the rollout');
    await until(async () => pcs.every((p) => !p.tree.has(CAMERA)), 60_000, 'the nodes gone from every PC');
  });
});
