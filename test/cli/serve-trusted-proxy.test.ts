// `muster serve` refuses header device auth without --trusted-proxy, before it
// opens anything: the header would otherwise be believed from anyone who
// reaches the listener (test/security/proxy-header.test.ts has the attack).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { muster } from '../support/cli.js';

describe('muster serve --trusted-proxy', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-serve-proxy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const serve = (...args: string[]) => muster(['serve', '--source', dir, '--log-format', 'json', ...args], { cwd: dir });

  it('exits 2 when --device-auth or --windows-device-auth asks for header without it, naming both flags', async () => {
    const apple = await serve('--device-auth', 'signature,header');
    expect(apple.code).toBe(2);
    expect(apple.stderr).toMatch(/--device-auth header needs --trusted-proxy CIDR/);
    const windows = await serve('--windows-device-auth', 'header,mtls');
    expect(windows.code).toBe(2);
    expect(windows.stderr).toMatch(/--windows-device-auth header needs --trusted-proxy/);
    const both = await serve('--device-auth', 'header', '--windows-device-auth', 'header');
    expect(both.stderr).toMatch(/--device-auth header and --windows-device-auth header needs/);
    // Refused before the database was opened.
    expect(readdirSync(dir)).toEqual([]);
  });

  it('exits 2 on a range it cannot read, and on a shutdown grace that is not a duration', async () => {
    const bad = await serve('--device-auth', 'header', '--trusted-proxy', '10.0.0.0/8', 'proxy.internal');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--trusted-proxy: "proxy\.internal" is not an address or CIDR range/);
    const grace = await serve('--shutdown-grace', 'soon');
    expect(grace.code).toBe(2);
    expect(grace.stderr).toMatch(/--shutdown-grace/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
