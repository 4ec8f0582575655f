// The rollout engine is pure: tables of (spec, status, observations, time) → status.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RolloutSpec } from '../../controller/policy/types.js';
import { bucketOf, inCanary } from '../../controller/rollout/bucket.js';
import { parseDuration } from '../../controller/rollout/duration.js';
import { analysisVerdict, applyAction, evaluate, newRevision, RolloutActionError, type Observations, type RolloutStatus } from '../../controller/rollout/engine.js';

const T0 = new Date('2026-03-01T00:00:00Z');
const at = (ms: number) => new Date(T0.getTime() + ms);
const H = 3_600_000;
const spec = (steps: RolloutSpec['steps'], extra: Partial<RolloutSpec> = {}): RolloutSpec => ({ bundle: 'b', groups: ['g'], steps, ...extra });
const start = (s: RolloutSpec): RolloutStatus => newRevision({ revision: 2, stableHash: 'sha256:old', canaryHash: 'sha256:new', generation: 1, steps: s.steps.length }, T0);
const obs = (o: Partial<Observations> = {}): Observations => ({ targeted: 100, ring: 10, ringAssigned: 10, reported: 0, failed: 0, ...o });

describe('buckets', () => {
  it('are sticky and in range', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (salt, id) => {
        const b = bucketOf(salt, id);
        return b === bucketOf(salt, id) && b >= 0 && b < 10_000 && Number.isInteger(b);
      }),
    );
  });
  it('only add devices when the weight rises', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 9999 }), fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 100 }), (b, w1, w2) => !(inCanary(b, Math.min(w1, w2)) && !inCanary(b, Math.max(w1, w2)))));
  });
  it('spread devices evenly (1 % ring of 20,000 devices is about 200)', () => {
    let n = 0;
    for (let i = 0; i < 20_000; i++) if (inCanary(bucketOf('corp-baseline', `device-${i}`), 1)) n++;
    expect(n).toBeGreaterThan(150);
    expect(n).toBeLessThan(250);
  });
  it('depend on the salt', () => {
    const a = Array.from({ length: 200 }, (_, i) => bucketOf('a', `d${i}`));
    const b = Array.from({ length: 200 }, (_, i) => bucketOf('b', `d${i}`));
    expect(a).not.toEqual(b);
  });
});

describe('durations', () => {
  it.each([
    ['90s', 90_000],
    ['1h30m', 5_400_000],
    ['7d', 604_800_000],
    ['250ms', 250],
  ])('%s = %i ms', (text, ms) => expect(parseDuration(text)).toBe(ms));
  it.each(['', '1x', 'h', '1h 30m', '-1h'])('refuses "%s"', (text) => expect(() => parseDuration(text)).toThrow(/not a duration/));
});

describe('analysis verdict', () => {
  it.each([
    [{ maxFailureRate: 0.1, minReports: 10 }, 9, 0, 'inconclusive'],
    [{ maxFailureRate: 0.1, minReports: 10 }, 10, 1, 'pass'],
    [{ maxFailureRate: 0.1, minReports: 10 }, 10, 2, 'fail'],
    [{ maxFailureRate: 0, minReports: 1 }, 5, 1, 'fail'],
    [{ maxFailureRate: 0, minReports: 0 }, 0, 0, 'inconclusive'],
  ] as const)('%o with %i reports, %i failed → %s', (a, reported, failed, verdict) => expect(analysisVerdict(a, reported, failed)).toBe(verdict));
});

describe('evaluate', () => {
  it('sets the weight, then advances once the ring is assigned', () => {
    const s = spec([{ setWeight: 10 }, { pause: {} }, { setWeight: 100 }]);
    const e1 = evaluate(s, start(s), obs({ ring: 0, ringAssigned: 0 }), T0);
    expect(e1.status).toMatchObject({ weight: 10, currentStep: 0, phase: 'Progressing' });
    const e2 = evaluate(s, e1.status, obs({ ring: 10, ringAssigned: 7 }), at(60_000));
    expect(e2.status.currentStep).toBe(0);
    const e3 = evaluate(s, e2.status, obs({ ring: 10, ringAssigned: 10 }), at(120_000));
    expect(e3.status).toMatchObject({ currentStep: 1, phase: 'Paused' });
    expect(e3.status.conditions).toContainEqual(expect.objectContaining({ type: 'Paused', status: 'True', reason: 'WaitingForPromotion' }));
  });

  it('waits out a timed pause', () => {
    const s = spec([{ pause: { duration: '1h' } }, { setWeight: 100 }]);
    const e1 = evaluate(s, start(s), obs(), T0);
    expect(e1.status.phase).toBe('Paused');
    expect(evaluate(s, e1.status, obs(), at(H - 1)).status.currentStep).toBe(0);
    expect(evaluate(s, e1.status, obs(), at(H)).status).toMatchObject({ currentStep: 1, weight: 100 });
  });

  it('aborts on a failed analysis and passes a good one after its window', () => {
    const s = spec([{ setWeight: 10 }, { analysis: { maxFailureRate: 0.1, minReports: 5, window: '1h' } }, { setWeight: 100 }]);
    const at10 = { ...start(s), weight: 10, currentStep: 1 };
    const bad = evaluate(s, at10, obs({ reported: 10, failed: 3 }), at(60_000));
    expect(bad.status).toMatchObject({ aborted: true, weight: 0, phase: 'Degraded' });
    expect(bad.status.conditions).toContainEqual(expect.objectContaining({ type: 'Aborted', status: 'True' }));
    const early = evaluate(s, at10, obs({ reported: 10, failed: 0 }), at(60_000));
    expect(early.status).toMatchObject({ currentStep: 1, phase: 'Progressing' });
    const good = evaluate(s, at10, obs({ reported: 10, failed: 0 }), at(H));
    expect(good.status).toMatchObject({ currentStep: 2, weight: 100 });
  });

  it('pauses an analysis that has too little data at the end of its window', () => {
    const s = spec([{ setWeight: 10 }, { analysis: { maxFailureRate: 0.1, minReports: 50, window: '2h' } }, { setWeight: 100 }]);
    const at10 = { ...start(s), weight: 10, currentStep: 1 };
    expect(evaluate(s, at10, obs({ reported: 3 }), at(H)).status.phase).toBe('Progressing');
    const paused = evaluate(s, at10, obs({ reported: 3 }), at(2 * H));
    expect(paused.status.phase).toBe('Paused');
    expect(paused.status.aborted).toBe(false);
  });

  it('rolls back on a missed progress deadline with autoRollback, holds without', () => {
    const steps: RolloutSpec['steps'] = [{ setWeight: 50 }, { setWeight: 100 }];
    const stuck = (extra: Partial<RolloutSpec>) => {
      const s = spec(steps, { progressDeadline: '1h', ...extra });
      const e1 = evaluate(s, start(s), obs(), T0);
      return evaluate(s, e1.status, obs({ ring: 50, ringAssigned: 10 }), at(2 * H)).status;
    };
    expect(stuck({ autoRollback: true })).toMatchObject({ aborted: true, phase: 'Degraded' });
    expect(stuck({ autoRollback: false })).toMatchObject({ aborted: false, phase: 'Degraded', weight: 50 });
  });

  it('is Healthy at 100 % once the last step is done and every device is assigned', () => {
    const s = spec([{ setWeight: 100 }]);
    const e1 = evaluate(s, start(s), obs(), T0);
    const e2 = evaluate(s, e1.status, obs({ ring: 100, ringAssigned: 100 }), at(1000));
    const e3 = evaluate(s, e2.status, obs({ ring: 100, ringAssigned: 100 }), at(2000));
    expect(e3.status).toMatchObject({ phase: 'Healthy', weight: 100 });
    expect(e3.status.conditions).toContainEqual(expect.objectContaining({ type: 'Available', status: 'True' }));
  });

  it('starts Healthy when the new bundle is the stable one (a revert)', () => {
    expect(newRevision({ revision: 3, stableHash: 'sha256:a', canaryHash: 'sha256:a', generation: 1, steps: 3 }, T0)).toMatchObject({ phase: 'Healthy', weight: 100, currentStep: 3 });
  });

  it('keeps lastTransitionTime while a condition holds', () => {
    const s = spec([{ pause: {} }, { setWeight: 100 }]);
    const e1 = evaluate(s, start(s), obs(), T0);
    const e2 = evaluate(s, e1.status, obs(), at(H));
    expect(e2.status.conditions.find((c) => c.type === 'Paused')!.lastTransitionTime).toBe(T0.toISOString());
  });
});

describe('operator actions', () => {
  const s = spec([{ setWeight: 10 }, { pause: {} }, { setWeight: 50 }, { pause: {} }, { setWeight: 100 }]);
  const waiting = (): RolloutStatus => ({ ...start(s), weight: 10, currentStep: 1, phase: 'Paused' });

  it('promote finishes the step in force; --full skips to the end', () => {
    expect(applyAction(s, waiting(), 'promote', T0).status.currentStep).toBe(2);
    expect(applyAction(s, waiting(), 'promote-full', T0).status.currentStep).toBe(5);
  });
  it('promote refuses a setWeight still assigning', () => {
    expect(() => applyAction(s, { ...waiting(), currentStep: 0 }, 'promote', T0)).toThrow(RolloutActionError);
  });
  it('pause holds every step until resume', () => {
    const p = applyAction(s, { ...waiting(), currentStep: 2 }, 'pause', T0).status;
    expect(evaluate(s, p, obs(), at(H)).status).toMatchObject({ phase: 'Paused', currentStep: 2 });
    const r = applyAction(s, p, 'resume', at(H)).status;
    expect(evaluate(s, r, obs(), at(H)).status.weight).toBe(50);
  });
  it('abort returns everyone to stable and cannot be undone by promote', () => {
    const a = applyAction(s, waiting(), 'abort', T0).status;
    expect(a).toMatchObject({ aborted: true, weight: 0, phase: 'Degraded' });
    expect(() => applyAction(s, a, 'promote', T0)).toThrow(/aborted/);
    expect(() => applyAction(s, a, 'resume', T0)).toThrow(/aborted/);
  });
});
