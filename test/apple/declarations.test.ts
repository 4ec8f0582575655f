// Declarative Device Management, pure: which declarations a bundle becomes
// for which device, the served set (tokens, items, activation), and reading
// status reports.
import { describe, expect, it } from 'vitest';
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { compileDeclarations, configurationStatuses, declaration, declarationSet } from '../../protocols/apple/declarations.js';

const bundle = (minimumVersion: Record<string, string>, deadline?: string, name = 'updates'): ResolvedBundle => ({
  name,
  version: '1.0.0',
  hash: `sha256:${name}`,
  rollout: 'r',
  spec: { version: '1.0.0', settings: { osUpdates: { minimumVersion, ...(deadline ? { deadline } : {}) } } },
});

describe('declarations', () => {
  it('becomes a software-update enforcement for the device family, only where the OS can apply it', () => {
    const b = bundle({ macos: '15.2', ios: '18.2' }, '2026-12-15T18:00:00+01:00');
    const mac = compileDeclarations([b], 'macos', '15.1');
    expect(mac).toHaveLength(1);
    expect(mac[0]).toMatchObject({ id: 'ddm:dev.muster.bundle.updates.softwareupdate', sources: ['sha256:updates'], payload: { Type: 'com.apple.configuration.softwareupdate.enforcement.specific', Payload: { TargetOSVersion: '15.2', TargetLocalDateTime: '2026-12-15T17:00:00' } } });
    expect(mac[0]!.hash).toBe((mac[0]!.payload as { ServerToken: string }).ServerToken);
    expect(compileDeclarations([b], 'ios', '18.0')[0]!.payload).toMatchObject({ Payload: { TargetOSVersion: '18.2' } });
    expect(compileDeclarations([b], 'macos', '13.6')).toEqual([]); // macOS 13 has no enforcement.specific
    expect(compileDeclarations([b], 'ipados', '18.0')).toEqual([]); // no ipados minimum given
    expect(compileDeclarations([b], undefined, null)).toEqual([]);
    expect(compileDeclarations([bundle({ macos: '15.2' })], 'macos', '15.1')).toEqual([]); // no deadline: nothing to enforce
  });

  it('changes the ServerToken with any change in content, and not otherwise', () => {
    const a = declaration('com.example', 'x', { A: 1 });
    expect(declaration('com.example', 'x', { A: 1 }).ServerToken).toBe(a.ServerToken);
    expect(declaration('com.example', 'x', { A: 2 }).ServerToken).not.toBe(a.ServerToken);
    expect(declaration('com.example', 'y', { A: 1 }).ServerToken).not.toBe(a.ServerToken);
  });

  it('serves the configurations with a status subscription and one activation naming them all', () => {
    const c = declaration('com.apple.configuration.softwareupdate.enforcement.specific', 'dev.muster.bundle.u.softwareupdate', { TargetOSVersion: '15.2', TargetLocalDateTime: '2026-12-15T17:00:00' });
    const set = declarationSet([c]);
    expect(set.items.Declarations.Configurations.map((r) => r.Identifier)).toEqual(['dev.muster.bundle.u.softwareupdate', 'dev.muster.status-subscriptions']);
    expect(set.items.Declarations.Activations).toHaveLength(1);
    expect(set.byPath.get('activation/dev.muster.activation')!.Payload).toEqual({ StandardConfigurations: ['dev.muster.bundle.u.softwareupdate', 'dev.muster.status-subscriptions'] });
    expect(set.byPath.get('configuration/dev.muster.status-subscriptions')!.Payload.StatusItems).toContainEqual({ Name: 'softwareupdate.install-state' });
    expect(set.items.DeclarationsToken).toBe(set.token);
    expect(declarationSet([]).items.Declarations).toEqual({ Activations: [], Configurations: [], Assets: [], Management: [] });
    const changed = declarationSet([declaration(c.Type, c.Identifier, { ...c.Payload, TargetOSVersion: '15.3' })]);
    expect(changed.token).not.toBe(set.token);
  });

  it('reads configuration statuses from a status report and ignores what is malformed', () => {
    const report = {
      StatusItems: {
        management: {
          declarations: {
            configurations: [
              { identifier: 'dev.muster.bundle.u.softwareupdate', active: true, valid: 'valid', 'server-token': 'abc' },
              { identifier: 'dev.muster.bundle.v.softwareupdate', active: false, valid: 'invalid', 'server-token': 'def', reasons: [{ code: 'Error.ConfigurationCannotBeApplied', description: 'Target version is older' }] },
              { identifier: 42 },
              'junk',
            ],
          },
        },
      },
    };
    expect(configurationStatuses(report)).toEqual([
      { identifier: 'dev.muster.bundle.u.softwareupdate', active: true, valid: 'valid', serverToken: 'abc', reasons: [] },
      { identifier: 'dev.muster.bundle.v.softwareupdate', active: false, valid: 'invalid', serverToken: 'def', reasons: ['Error.ConfigurationCannotBeApplied: Target version is older'] },
    ]);
    expect(configurationStatuses({ StatusItems: { device: {} } })).toBeUndefined();
    expect(configurationStatuses(null)).toBeUndefined();
  });
});
