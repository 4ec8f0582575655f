import { describe, expect, it } from 'vitest';
import { compareVersions, evaluateCompliance } from '../../controller/compliance/evaluate.js';
import type { ComplianceRule } from '../../controller/policy/types.js';

const now = new Date('2026-11-23T12:00:00Z');
const rules = (...r: ComplianceRule[]) => r.map((rule) => ({ bundle: 'baseline', rule }));

describe('compliance', () => {
  it('compares dotted versions numerically, part by part', () => {
    expect(compareVersions('15.10', '15.9')).toBe(1);
    expect(compareVersions('15', '15.0.0')).toBe(0);
    expect(compareVersions('10.0.22631', '10.0.26100.4061')).toBe(-1);
    expect(compareVersions('15.1 beta', '15')).toBeUndefined();
  });

  it('passes, fails and cannot yet judge each kind of rule', () => {
    const r = evaluateCompliance(
      rules(
        { name: 'os', minimumOsVersion: { macos: '15.2', windows: '10.0.26100' } },
        { name: 'disk', encryptionRequired: true },
        { name: 'pin', passcodeRequired: true },
        { name: 'seen', maxDaysSinceLastSeen: 7 },
      ),
      { osFamily: 'macos', osVersion: '15.1', encrypted: true, lastSeenAt: new Date('2026-11-10T00:00:00Z') },
      now,
    );
    expect(r.checks.map((c) => [c.rule, c.status])).toEqual([
      ['os', 'fail'],
      ['disk', 'pass'],
      ['pin', 'unknown'],
      ['seen', 'fail'],
    ]);
    expect(r.state).toBe('noncompliant');
    expect(r.checks[0]!.detail).toBe('15.1 is below 15.2');
    expect(r.checks[3]!.detail).toMatch(/not seen for 13 days/);
  });

  it('is unknown until every critical rule can be judged, and warnings never make a device noncompliant', () => {
    const pin = rules({ name: 'pin', passcodeRequired: true });
    expect(evaluateCompliance(pin, {}, now).state).toBe('unknown');
    expect(evaluateCompliance(pin, { passcodePresent: true }, now).state).toBe('compliant');
    const warn = rules({ name: 'pin', passcodeRequired: true, severity: 'warning' });
    expect(evaluateCompliance(warn, { passcodePresent: false }, now)).toMatchObject({ state: 'compliant', checks: [{ status: 'fail', severity: 'warning' }] });
    // A family with no minimum passes; no rules at all is compliant.
    expect(evaluateCompliance(rules({ name: 'os', minimumOsVersion: { windows: '10' } }), { osFamily: 'android', osVersion: '14' }, now).state).toBe('compliant');
    expect(evaluateCompliance([], {}, now).state).toBe('compliant');
  });
});
