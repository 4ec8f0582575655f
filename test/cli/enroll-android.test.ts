// `muster enroll android --signup`: the walk-through that binds Muster to a new
// Android Enterprise — a signup URL for the admin's browser, a local callback
// that Google sends the browser back to with an enterpriseToken, then
// enterprises.create — against the local AMAPI server.
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../controller/cli/program.js';
import { AmapiSimulator } from '../../protocols/android/simulator/amapi-server.js';
import { muster } from '../support/cli.js';

describe('muster enroll android --signup', () => {
  const sim = new AmapiSimulator();
  const dir = mkdtempSync(join(tmpdir(), 'muster-signup-'));
  beforeAll(async () => {
    await sim.start();
    writeFileSync(join(dir, 'sa.json'), sim.serviceAccountKey());
  });
  afterAll(async () => {
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints the signup URL, waits for the browser to come back, and creates the enterprise', async () => {
    let stdout = '';
    let stderr = '';
    let sawUrl: (u: string) => void = () => {};
    const url = new Promise<string>((r) => (sawUrl = r));
    const io = {
      stdout: { write: (s: string) => ((stdout += s), /https:\/\/play\.google\.com\S+/.test(stdout) && sawUrl(/https:\/\/play\.google\.com\S+/.exec(stdout)![0]), true) },
      stderr: { write: (s: string) => ((stderr += s), true) },
      env: {},
      cwd: dir,
    };
    const done = runCli(['enroll', 'android', '--signup', '--project', sim.projectId, '--key-file', 'sa.json', '--display-name', 'Acme', '--pubsub-topic', 'projects/muster-sim/topics/amapi', '--amapi-url', sim.url], io);
    const signup = new URL(await url);
    // What Google does once the admin signs up: sends the browser to the callback with a token.
    const callback = sim.completeSignup(`signupUrls/${signup.searchParams.get('token')}`);
    expect(callback).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/android-signup\?enterpriseToken=/);
    const res = await fetch(callback);
    expect(res.status).toBe(200);
    expect(await done).toBe(0);
    const name = /Created (enterprises\/\S+) \(Acme\)/.exec(stdout)?.[1];
    expect(name).toBeDefined();
    expect(sim.enterprises.get(name!)).toMatchObject({ enterpriseDisplayName: 'Acme', pubsubTopic: 'projects/muster-sim/topics/amapi' });
    expect(stdout).toContain(`--android-enterprise ${name}`);
    expect(stderr).toMatch(/waiting for Google to send the browser back/);
  });

  it('finishes a signup started elsewhere, and refuses a token that does not belong to it', async () => {
    const bad = await muster(['enroll', 'android', '--signup', '--project', sim.projectId, '--key-file', 'sa.json', '--amapi-url', sim.url, '--signup-name', 'signupUrls/Cnope', '--enterprise-token', 'EAHnope'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/enterprise token is invalid/);
    const usage = await muster(['enroll', 'android', '--signup', '--key-file', 'sa.json'], { cwd: dir });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/needs --project and --key-file/);
  });
});
