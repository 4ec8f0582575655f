// `muster render`: what a bundle becomes, printed for a person or a pipe.
import { describe, expect, it } from 'vitest';
import { decodePlist } from '../../protocols/apple/plist.js';
import { decodeServerMessage } from '../../protocols/windows/syncml/wire.js';
import { muster } from '../support/cli.js';

describe('muster render', () => {
  it('prints the Apple profile on stdout and says on stderr that declarations exist', async () => {
    const r = await muster(['render', 'corp-baseline', '--platform', 'apple', 'policies-example']);
    expect(r.code).toBe(0);
    const profile = decodePlist(Buffer.from(r.stdout)) as { PayloadIdentifier: string; PayloadType: string };
    expect(profile).toMatchObject({ PayloadIdentifier: 'dev.muster.bundle.corp-baseline', PayloadType: 'Configuration' });
    expect(r.stderr).toMatch(/also becomes 3 Declarative Device Management declarations: add --ddm/);
  });

  it('prints the declarations as JSON with --ddm, and fails when a bundle has none', async () => {
    const r = await muster(['render', 'corp-baseline', '--platform', 'apple', '--ddm', 'policies-example']);
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as Array<{ family: string; declaration: { Type: string; Payload: { TargetOSVersion: string } } }>;
    expect(list.map((x) => x.family)).toEqual(['macos', 'ios', 'ipados']);
    expect(list.every((x) => x.declaration.Type === 'com.apple.configuration.softwareupdate.enforcement.specific')).toBe(true);
    const none = await muster(['render', 'android-kiosk', '--platform', 'apple', '--ddm', 'policies-example']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no declarations/);
  });

  it('prints the SyncML commands a Windows device would receive, readable and still valid SyncML', async () => {
    const r = await muster(['render', 'windows-hardening', '--platform', 'windows', 'policies-example']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').length).toBeGreaterThan(50);
    const msg = decodeServerMessage(r.stdout);
    const targets = msg.body.flatMap((c) => ('items' in c ? c.items.map((i) => i.target) : []));
    expect(targets).toContain('./Device/Vendor/MSFT/Policy/Config/Defender/AllowCloudProtection');
    expect(r.stderr).toMatch(/^\d+ CSP nodes/);
    const nodes = await muster(['render', 'windows-hardening', '--platform', 'windows', '--nodes', 'policies-example']);
    expect(JSON.parse(nodes.stdout)).toContainEqual(expect.objectContaining({ locUri: './Device/Vendor/MSFT/Policy/Config/Defender/AllowCloudProtection', format: 'int' }));
    const none = await muster(['render', 'android-kiosk', '--platform', 'windows', 'policies-example']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/nothing for Windows/);
  });

  it('prints the AMAPI policy JSON for Android, with the policy name and overrides on stderr', async () => {
    const r = await muster(['render', 'android-kiosk', '--platform', 'android', 'policies-example']);
    expect(r.code).toBe(0);
    const policy = JSON.parse(r.stdout) as { statusReportingSettings?: Record<string, boolean>; kioskCustomLauncherEnabled?: boolean; applications?: unknown[] };
    expect(policy.statusReportingSettings?.deviceSettingsEnabled).toBe(true);
    expect(r.stdout.endsWith('}\n')).toBe(true);
    expect(r.stderr).toMatch(/^AMAPI policy m-[0-9a-f]{20}$/m);
    const none = await muster(['render', 'macos-extras', '--platform', 'android', 'policies-example']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/nothing for Android/);
  });
});
