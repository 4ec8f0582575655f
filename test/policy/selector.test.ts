import { describe, expect, it } from 'vitest';
import { groupContains, groupsCanOverlap, selectorMatches, selectorSatisfiable } from '../../controller/policy/selector.js';
import type { DeviceGroupSpec, LabelSelector } from '../../controller/policy/types.js';

const mac = { 'muster.dev/platform': 'apple', 'muster.dev/os': 'macos', department: 'finance' };

describe('label selector', () => {
  it.each<[string, LabelSelector, boolean]>([
    ['empty selector matches everything', {}, true],
    ['matchLabels equal', { matchLabels: { department: 'finance' } }, true],
    ['matchLabels different', { matchLabels: { department: 'sales' } }, false],
    ['In', { matchExpressions: [{ key: 'muster.dev/os', operator: 'In', values: ['macos', 'ios'] }] }, true],
    ['In missing key', { matchExpressions: [{ key: 'role', operator: 'In', values: ['kiosk'] }] }, false],
    ['NotIn', { matchExpressions: [{ key: 'department', operator: 'NotIn', values: ['finance'] }] }, false],
    ['NotIn missing key matches', { matchExpressions: [{ key: 'role', operator: 'NotIn', values: ['kiosk'] }] }, true],
    ['Exists', { matchExpressions: [{ key: 'department', operator: 'Exists' }] }, true],
    ['DoesNotExist', { matchExpressions: [{ key: 'department', operator: 'DoesNotExist' }] }, false],
    ['all terms are ANDed', { matchLabels: { department: 'finance' }, matchExpressions: [{ key: 'muster.dev/os', operator: 'In', values: ['windows'] }] }, false],
  ])('%s', (_, sel, want) => {
    expect(selectorMatches(sel, mac)).toBe(want);
  });

  it('membership: exclude wins over include, include over selector; no selector means includes only', () => {
    const spec: DeviceGroupSpec = { selector: { matchLabels: { department: 'finance' } }, include: ['D1', 'SER2'], exclude: ['D3'] };
    expect(groupContains(spec, { id: 'D1', facts: {} })).toBe(true);
    expect(groupContains(spec, { id: 'D2', serial: 'SER2', facts: {} })).toBe(true);
    expect(groupContains(spec, { id: 'D3', facts: mac })).toBe(false);
    expect(groupContains(spec, { id: 'D4', facts: mac })).toBe(true);
    expect(groupContains({ include: ['D1'] }, { id: 'D4', facts: mac })).toBe(false);
  });
});

describe('static overlap of groups', () => {
  const g = (sel: LabelSelector, rest: Partial<DeviceGroupSpec> = {}): DeviceGroupSpec => ({ selector: sel, ...rest });
  it.each<[string, DeviceGroupSpec, DeviceGroupSpec, boolean]>([
    ['different values of one label are disjoint', g({ matchLabels: { department: 'finance' } }), g({ matchLabels: { department: 'sales' } }), false],
    ['In vs NotIn covering it is disjoint', g({ matchExpressions: [{ key: 'department', operator: 'In', values: ['finance'] }] }), g({ matchExpressions: [{ key: 'department', operator: 'NotIn', values: ['finance'] }] }), false],
    ['Exists vs DoesNotExist is disjoint', g({ matchExpressions: [{ key: 'role', operator: 'Exists' }] }), g({ matchExpressions: [{ key: 'role', operator: 'DoesNotExist' }] }), false],
    ['In vs DoesNotExist is disjoint', g({ matchLabels: { role: 'kiosk' } }), g({ matchExpressions: [{ key: 'role', operator: 'DoesNotExist' }] }), false],
    ['unrelated keys can overlap', g({ matchLabels: { department: 'finance' } }), g({ matchLabels: { 'muster.dev/os': 'macos' } }), true],
    ['overlapping In sets can overlap', g({ matchExpressions: [{ key: 'department', operator: 'In', values: ['a', 'b'] }] }), g({ matchExpressions: [{ key: 'department', operator: 'In', values: ['b', 'c'] }] }), true],
    ['an include makes overlap possible', g({ matchLabels: { department: 'finance' } }, { include: ['D1'] }), g({ matchLabels: { department: 'sales' } }), true],
    ['unless the other group excludes it', g({ matchLabels: { department: 'finance' } }, { include: ['D1'] }), g({ matchLabels: { department: 'sales' } }, { exclude: ['D1'] }), false],
    ['a group with no selector and no include reaches nothing', {}, g({}), false],
  ])('%s', (_, a, b, want) => {
    expect(groupsCanOverlap(a, b)).toBe(want);
    expect(groupsCanOverlap(b, a)).toBe(want);
  });

  it('takes an extra constraint such as a platform', () => {
    const macs = g({ matchLabels: { 'muster.dev/platform': 'apple' } });
    const all = g({});
    expect(groupsCanOverlap(macs, all, { matchLabels: { 'muster.dev/platform': 'apple' } })).toBe(true);
    expect(groupsCanOverlap(macs, all, { matchLabels: { 'muster.dev/platform': 'android' } })).toBe(false);
  });

  it('finds self-contradicting selectors', () => {
    expect(selectorSatisfiable({ matchLabels: { a: 'x' }, matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['x'] }] })).toBe(false);
    expect(selectorSatisfiable({ matchExpressions: [{ key: 'a', operator: 'Exists' }, { key: 'a', operator: 'DoesNotExist' }] })).toBe(false);
    expect(selectorSatisfiable({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['x'] }] })).toBe(true);
  });
});
