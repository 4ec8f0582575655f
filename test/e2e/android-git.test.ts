// Android end to end, the way a fleet runs: policy in a Git repository,
// `muster serve --android-enterprise` calling the Android Management API (a
// local server speaking its REST paths and Google's OAuth token exchange)
// through the googleapis client, and a simulated fleet that enrolls with a
// token from `muster enroll android` and reports only through Pub/Sub push
// with signed OIDC tokens. A commit rolls a bundle out in stages by moving
// devices between AMAPI policies; a person promotes; an admin locks a phone
// from the CLI; a commit that drops the rollout moves them back.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf } from '../../controller/rollout/bucket.js';
import { BASE_POLICY_ID } from '../../protocols/android/compile.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';
import { group, rollout } from '../reconcile/helpers.js';
import { BIN, PolicyRepo, childEnv, createToken, serve, until, type Served } from './support.js';

const run = promisify(execFile);
const PUSH_ACCOUNT = 'amapi-push@muster-sim.iam.gserviceaccount.com';
const TOPIC = 'projects/muster-sim/topics/amapi';
const AUDIENCE = 'https://mdm.example.com/android/pubsub';
const bundleYaml = `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata: { name: field-phones }
spec:
  version: "1.0.0"
  platforms: [android]
  settings:
    passcode: { required: true, minLength: 8, complexity: alphanumeric }
    restrictions: { allowCamera: false }
`;
const groupYaml = group('field', '{ matchLabels: { muster.dev/platform: android, muster.dev/enrollment-group: field } }');

describe('Android fleet from a Git commit, through AMAPI and Pub/Sub', { timeout: 180_000 }, () => {
  const repo = new PolicyRepo();
  const dir = repo.root;
  const sim = new AmapiSimulator();
  let enterprise: string;
  let server: Served;
  let token: string;
  const phones = new Map<string, string>(); // Muster id → AMAPI name
  const cli = async (...args: string[]) => (await run(process.execPath, [BIN, ...args, '--server', server.url], { env: childEnv({ MUSTER_TOKEN: token }), encoding: 'utf8', cwd: dir })).stdout;
  const applied = (id: string) => sim.device(phones.get(id)!)?.resource.appliedPolicyName as string | undefined;
  const onBundlePolicy = (id: string) => !!applied(id) && !applied(id)!.endsWith(`/${BASE_POLICY_ID}`);

  beforeAll(async () => {
    await sim.start();
    enterprise = sim.createEnterprise({ displayName: 'E2E Corp' });
    writeFileSync(join(dir, 'sa.json'), sim.serviceAccountKey());
    repo.commit({ 'groups/field.yaml': groupYaml }, 'field group');
    const db = join(dir, 'db');
    token = createToken(db, 'operate');
    server = await serve(
      ['--source', repo.bare, '--git-interval', '1s', '--data-dir', db, '--git-cache', join(dir, 'git-cache'), '--tick', '200ms',
        '--android-enterprise', enterprise, '--android-key-file', join(dir, 'sa.json'), '--amapi-url', sim.url, '--android-jwks-url', sim.jwksUrl,
        '--android-service-account', PUSH_ACCOUNT, '--android-pubsub-audience', AUDIENCE, '--android-pubsub-topic', TOPIC],
      childEnv(),
    );
    // serve pointed the enterprise's notifications at the topic; the push subscription on it reaches serve.
    expect(sim.enterprises.get(enterprise)).toMatchObject({ pubsubTopic: TOPIC });
    sim.subscribe({ endpoint: `${server.url}/android/pubsub`, audience: AUDIENCE, serviceAccountEmail: PUSH_ACCOUNT, topic: TOPIC, name: 'projects/muster-sim/subscriptions/muster' });

    const t = JSON.parse(await cli('enroll', 'android', '--group', 'field', '--duration', '2h', '--qr-png', 'field.png', '--output', 'json')) as { value: string; link: string; group: string; oneTime: boolean; qrCode: string };
    expect(t).toMatchObject({ group: 'field', oneTime: false, link: `https://enterprise.google.com/android/enroll?et=${t.value}` });
    expect(readFileSync(join(dir, 'field.png')).subarray(1, 4).toString('latin1')).toBe('PNG');
    // Device ids chosen so that both halves of a 50 % ring have phones (buckets are sticky and known).
    let inRing = 0;
    for (let i = 0; phones.size < 6; i++) {
      const id = `e2ea${String(i).padStart(12, '0')}`;
      const ring = bucketOf('field', id) < 5000;
      if (ring && inRing >= 3) continue;
      if (!ring && phones.size - inRing >= 3) continue;
      if (ring) inRing++;
      phones.set(id, sim.enroll(t.value, { id, serial: `E2E${i}`, model: 'Pixel 8' }));
    }
    await until(async () => {
      const list = JSON.parse(await cli('devices', 'list', '--platform', 'android', '--output', 'json')) as Array<{ id: string; model: string | null }>;
      return list.length === 6 && list.every((d) => d.model === 'Pixel 8');
    }, 30_000, 'six phones known from their ENROLLMENT notifications');
  }, 150_000);
  afterAll(async () => {
    await server?.stop();
    await sim.stop();
    repo.cleanup();
  });

  it('moves the ring to the bundle’s policy, waits for a person, then the rest, and counts them converged', async () => {
    const ids = [...phones.keys()];
    const ring = ids.filter((id) => bucketOf('field', id) < 5000);
    repo.commit({ 'groups/field.yaml': groupYaml, 'bundles/field.yaml': bundleYaml, 'rollouts/field.yaml': rollout('field', 'field-phones', ['field'], '    - setWeight: 50\n    - pause: {}\n    - setWeight: 100') }, 'roll out field-phones');
    await until(async () => ring.every(onBundlePolicy), 60_000, 'the ring on the bundle’s policy');
    await until(async () => JSON.parse(await cli('rollout', 'status', 'field', '--output', 'json')).phase === 'Paused', 30_000, 'the pause');
    expect(ids.filter(onBundlePolicy).sort()).toEqual(ring.sort());

    await cli('rollout', 'promote', 'field');
    await until(async () => ids.every(onBundlePolicy), 60_000, 'every phone on the bundle’s policy');
    const status = await until(async () => {
      const s = JSON.parse(await cli('rollout', 'status', 'field', '--output', 'json')) as { phase: string; counts: Record<string, number> };
      return s.phase === 'Healthy' && s;
    }, 30_000, 'a healthy rollout');
    expect(status.counts['canary.Synced'] ?? status.counts['stable.Synced']).toBe(6);
    // The policy AMAPI holds is what Muster compiled: camera off, passcode policy present.
    const policy = sim.policies.get(applied(ids[0]!)!)!.policy as { cameraAccess?: string; passwordPolicies?: unknown[] };
    expect(policy.cameraAccess).toBe('CAMERA_ACCESS_DISABLED');
    expect(policy.passwordPolicies).toHaveLength(1);
    // A token made now for the group is bound to the policy its devices hold, so a new phone needs no move.
    const t = JSON.parse(await cli('enroll', 'android', '--group', 'field', '--one-time', '--output', 'json')) as { oneTime: boolean; policyId: string };
    expect(t.oneTime).toBe(true);
    expect(applied(ids[0]!)).toBe(`${enterprise}/policies/${t.policyId}`);
  });

  it('locks a phone from the CLI through issueCommand', async () => {
    const [id, name] = [...phones][0]!;
    await cli('devices', 'lock', id);
    await until(async () => sim.requests.some((q) => q.path === `/v1/${name}:issueCommand` && (q.body as { type: string }).type === 'LOCK'), 30_000, 'the LOCK command at AMAPI');
  });

  it('moves every phone back to the base policy when a commit drops the rollout', async () => {
    repo.commit({ 'groups/field.yaml': groupYaml, 'bundles/field.yaml': bundleYaml }, 'drop the rollout');
    await until(async () => [...phones.keys()].every((id) => applied(id)?.endsWith(`/${BASE_POLICY_ID}`)), 60_000, 'the phones back on the base policy');
  });
});
