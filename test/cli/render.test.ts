// `muster render`: what a bundle becomes, printed for a person or a pipe.
import { describe, expect, it } from 'vitest';
import { decodePlist } from '../../protocols/apple/plist.js';
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
});
