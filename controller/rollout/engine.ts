// The rollout state machine, as plain functions of (spec, status, observations,
// now). The reconciler gathers the observations, calls evaluate(), and writes
// the returned status in one transaction; what a person runs (promote, pause,
// resume, abort) is applyAction(), a small mutation of the same status — never
// a second code path.
//
// Steps:
//   setWeight: N        the canary ring becomes N %; done once every device in
//                       the ring has been assigned (fan-out is paced).
//   pause: {duration}   done when the duration has passed.
//   pause: {}           waits for `muster rollout promote`.
//   analysis: {...}     judges the ring by the share of reporting canary
//                       devices that failed: a clear failure aborts; a pass
//                       needs minReports and, with a window, the window over;
//                       too little data by the end of the window pauses.
// After the last step the rollout is Healthy at 100 %, and its bundle becomes
// the stable one for the next revision.
import type { RolloutSpec, RolloutStep } from '../policy/types.js';
import { parseDuration } from './duration.js';

export type RolloutPhase = 'Progressing' | 'Paused' | 'Healthy' | 'Degraded';

export interface Condition {
  type: 'Progressing' | 'Paused' | 'Available' | 'Aborted';
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

/** A rollout revision's status: everything the engine decides from. */
export interface RolloutStatus {
  revision: number;
  stableHash: string | null;
  canaryHash: string;
  /** Index of the step in force; steps.length once every step is done. */
  currentStep: number;
  /** Canary weight in percent now in force. */
  weight: number;
  phase: RolloutPhase;
  /** Paused by a person (`muster rollout pause`). */
  paused: boolean;
  /** Aborted: every device is back on the stable bundle until Git changes. */
  aborted: boolean;
  stepStartedAt: Date;
  conditions: Condition[];
  observedGeneration: number;
  /** One line on what the rollout is doing or waiting for. */
  message: string;
}

/** What the reconciler saw of the canary ring at the current weight. */
export interface Observations {
  /** Devices the rollout's groups hold. */
  targeted: number;
  /** Devices in the ring at the current weight. */
  ring: number;
  /** Of those, devices assigned the canary bundle. */
  ringAssigned: number;
  /** Canary devices whose outcome for the canary bundle is known. */
  reported: number;
  /** Of those, devices that reported failure. */
  failed: number;
}

export type OperatorAction = 'promote' | 'promote-full' | 'pause' | 'resume' | 'abort';

export type Verdict = 'pass' | 'fail' | 'inconclusive';

const DEFAULT_ANALYSIS_WINDOW_MS = 60 * 60 * 1000;

/** The status of a new revision, at step 0 with no canary devices yet. */
export function newRevision(
  p: { revision: number; stableHash: string | null; canaryHash: string; generation: number; steps: number },
  now: Date,
): RolloutStatus {
  const status: RolloutStatus = {
    revision: p.revision,
    stableHash: p.stableHash,
    canaryHash: p.canaryHash,
    currentStep: 0,
    weight: 0,
    phase: 'Progressing',
    paused: false,
    aborted: false,
    stepStartedAt: now,
    conditions: [],
    observedGeneration: p.generation,
    message: 'revision started',
  };
  // Going back to the bundle that is already stable has nothing to roll out.
  if (p.stableHash === p.canaryHash) return { ...status, currentStep: p.steps, weight: 100, phase: 'Healthy', message: 'already stable' };
  return status;
}

/** The bundle hash a device in this rollout should have, or null for none. */
export function bundleFor(status: RolloutStatus, inRing: (weight: number) => boolean): string | null {
  if (status.aborted) return status.stableHash;
  return status.weight > 0 && inRing(status.weight) ? status.canaryHash : status.stableHash;
}

export function analysisVerdict(a: { maxFailureRate: number; minReports: number }, reported: number, failed: number): Verdict {
  if (reported < a.minReports || reported === 0) return 'inconclusive';
  return failed / reported > a.maxFailureRate ? 'fail' : 'pass';
}

/** The description of a step for logs and status: "setWeight 10", "pause 1h", "pause (until promoted)". */
export function describeStep(step: RolloutStep | undefined): string {
  if (!step) return 'complete';
  if ('setWeight' in step) return `setWeight ${step.setWeight}`;
  if ('pause' in step) return step.pause.duration ? `pause ${step.pause.duration}` : 'pause (until promoted)';
  return `analysis (max failure rate ${step.analysis.maxFailureRate}, min ${step.analysis.minReports} reports)`;
}

export interface Evaluation {
  status: RolloutStatus;
  /** Human-readable transitions that happened, in order (for logs, events and audit). */
  transitions: string[];
}

/**
 * One evaluation: advances through every step that is done now, stopping at
 * the first that is not. Pure: the same inputs give the same status.
 */
export function evaluate(spec: RolloutSpec, current: RolloutStatus, obs: Observations, now: Date): Evaluation {
  const s: RolloutStatus = { ...current, conditions: [...current.conditions] };
  const transitions: string[] = [];
  const steps = spec.steps;
  const at = now.toISOString();
  const set = (c: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>) => {
    s.conditions = setCondition(s.conditions, { ...c, observedGeneration: s.observedGeneration }, at);
  };
  const advance = (why: string) => {
    transitions.push(`step ${s.currentStep + 1}/${steps.length} ${describeStep(steps[s.currentStep])} done: ${why}`);
    s.currentStep += 1;
    s.stepStartedAt = now;
  };

  if (s.aborted) {
    s.phase = 'Degraded';
    s.weight = 0;
    set({ type: 'Progressing', status: 'False', reason: 'RolloutAborted', message: s.message });
    return { status: s, transitions };
  }

  // Each pass either advances one step or returns; the bound only guards against a bug.
  for (let guard = 0; guard <= steps.length + 1; guard++) {
    if (s.currentStep >= steps.length) {
      if (s.weight !== 100) {
        s.weight = 100;
        transitions.push('weight 100 % (all steps done)');
      }
      if (obs.ringAssigned < obs.ring && current.weight === 100) {
        s.phase = 'Progressing';
        s.message = `assigning the last ${obs.ring - obs.ringAssigned} devices`;
        return { status: s, transitions };
      }
      if (current.weight !== 100) {
        // The weight just reached 100: Healthy once the reconciler has assigned the ring.
        s.phase = 'Progressing';
        s.message = 'assigning every device';
        return { status: s, transitions };
      }
      if (s.phase !== 'Healthy') transitions.push('rollout Healthy');
      s.phase = 'Healthy';
      s.message = 'every device has the bundle';
      set({ type: 'Progressing', status: 'True', reason: 'RolloutCompleted', message: 'all steps done' });
      set({ type: 'Available', status: 'True', reason: 'Healthy', message: s.message });
      set({ type: 'Paused', status: 'False', reason: 'NotPaused', message: '' });
      return { status: s, transitions };
    }

    if (s.paused) {
      s.phase = 'Paused';
      s.message = 'paused by a person: muster rollout resume';
      set({ type: 'Paused', status: 'True', reason: 'PausedByUser', message: s.message });
      return { status: s, transitions };
    }

    const step = steps[s.currentStep]!;
    const elapsed = now.getTime() - s.stepStartedAt.getTime();

    if ('setWeight' in step) {
      if (s.weight !== step.setWeight) {
        transitions.push(`weight ${s.weight} % → ${step.setWeight} %`);
        s.weight = step.setWeight;
        s.stepStartedAt = now;
        s.phase = 'Progressing';
        s.message = `assigning ${step.setWeight} % of devices`;
        set({ type: 'Progressing', status: 'True', reason: 'WeightChanged', message: s.message });
        set({ type: 'Paused', status: 'False', reason: 'NotPaused', message: '' });
        return { status: s, transitions };
      }
      if (current.weight === step.setWeight && obs.ringAssigned >= obs.ring) {
        advance(`${obs.ring} devices in the ring assigned`);
        continue;
      }
      if (deadlineExceeded(spec, elapsed)) return degrade(spec, s, transitions, set, `step ${describeStep(step)} did not finish within ${spec.progressDeadline}`);
      s.phase = 'Progressing';
      s.message = `assigning ${step.setWeight} %: ${obs.ringAssigned}/${obs.ring} devices`;
      return { status: s, transitions };
    }

    if ('pause' in step) {
      if (step.pause.duration) {
        const ms = parseDuration(step.pause.duration);
        if (elapsed >= ms) {
          advance(`${step.pause.duration} passed`);
          continue;
        }
        s.phase = 'Paused';
        s.message = `pausing ${step.pause.duration} at ${s.weight} % (until ${new Date(s.stepStartedAt.getTime() + ms).toISOString()})`;
        set({ type: 'Paused', status: 'True', reason: 'PauseStep', message: s.message });
        return { status: s, transitions };
      }
      s.phase = 'Paused';
      s.message = `waiting at ${s.weight} % for a person: muster rollout promote`;
      set({ type: 'Paused', status: 'True', reason: 'WaitingForPromotion', message: s.message });
      return { status: s, transitions };
    }

    // analysis
    const a = step.analysis;
    const verdict = analysisVerdict(a, obs.reported, obs.failed);
    const rate = obs.reported ? `${obs.failed}/${obs.reported} failed` : 'no reports';
    const windowMs = a.window ? parseDuration(a.window) : DEFAULT_ANALYSIS_WINDOW_MS;
    if (verdict === 'fail') {
      transitions.push(`analysis failed: ${rate} (max ${a.maxFailureRate})`);
      return abort(s, transitions, set, `analysis failed at ${s.weight} %: ${rate}, more than ${a.maxFailureRate * 100} %`);
    }
    if (verdict === 'pass' && (!a.window || elapsed >= windowMs)) {
      advance(`analysis passed: ${rate}`);
      continue;
    }
    if (elapsed >= windowMs) {
      s.phase = 'Paused';
      s.message = `analysis inconclusive: ${obs.reported} of ${a.minReports} reports needed; promote to go on, resume to wait again`;
      set({ type: 'Paused', status: 'True', reason: 'InsufficientData', message: s.message });
      return { status: s, transitions };
    }
    s.phase = 'Progressing';
    s.message = `analysing ${s.weight} %: ${rate}, ${obs.reported}/${a.minReports} reports`;
    set({ type: 'Progressing', status: 'True', reason: 'Analysing', message: s.message });
    return { status: s, transitions };
  }
  return { status: s, transitions };
}

function deadlineExceeded(spec: RolloutSpec, elapsedMs: number): boolean {
  return !!spec.progressDeadline && elapsedMs > parseDuration(spec.progressDeadline);
}

type SetCondition = (c: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>) => void;

function abort(s: RolloutStatus, transitions: string[], set: SetCondition, message: string): Evaluation {
  s.aborted = true;
  s.weight = 0;
  s.phase = 'Degraded';
  s.message = `aborted: ${message}; every device is back on the stable bundle`;
  transitions.push('rollout aborted: back to stable');
  set({ type: 'Aborted', status: 'True', reason: 'RolloutAborted', message });
  set({ type: 'Progressing', status: 'False', reason: 'RolloutAborted', message: s.message });
  set({ type: 'Available', status: 'False', reason: 'RolloutAborted', message: s.message });
  return { status: s, transitions };
}

function degrade(spec: RolloutSpec, s: RolloutStatus, transitions: string[], set: SetCondition, message: string): Evaluation {
  transitions.push(`progress deadline exceeded: ${message}`);
  if (spec.autoRollback) return abort(s, transitions, set, message);
  s.phase = 'Degraded';
  s.message = `${message}; holding at ${s.weight} % (autoRollback is off)`;
  set({ type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: s.message });
  return { status: s, transitions };
}

export class RolloutActionError extends Error {}

/** What a person asked for, applied to the status; evaluate() takes it from there. */
export function applyAction(spec: RolloutSpec, current: RolloutStatus, action: OperatorAction, now: Date): Evaluation {
  const s: RolloutStatus = { ...current, conditions: [...current.conditions] };
  const at = now.toISOString();
  const done = current.currentStep >= spec.steps.length;
  switch (action) {
    case 'abort':
      if (current.aborted) throw new RolloutActionError('the rollout is already aborted');
      if (done && current.phase === 'Healthy') throw new RolloutActionError('the rollout is complete; change the bundle in Git to roll back');
      return abort(s, [], (c) => (s.conditions = setCondition(s.conditions, { ...c, observedGeneration: s.observedGeneration }, at)), 'aborted by a person');
    case 'pause':
      if (current.aborted || done) throw new RolloutActionError(`nothing to pause: the rollout is ${current.aborted ? 'aborted' : 'complete'}`);
      s.paused = true;
      return { status: s, transitions: ['paused by a person'] };
    case 'resume': {
      if (current.aborted) throw new RolloutActionError('an aborted rollout cannot resume; change the bundle in Git to start a new revision');
      const step = spec.steps[current.currentStep];
      const insufficient = !!step && 'analysis' in step && current.phase === 'Paused';
      if (!current.paused && !insufficient) throw new RolloutActionError('the rollout is not paused');
      s.paused = false;
      // Resuming an inconclusive analysis waits a whole window again.
      if (insufficient) s.stepStartedAt = now;
      return { status: s, transitions: ['resumed by a person'] };
    }
    case 'promote':
    case 'promote-full': {
      if (current.aborted) throw new RolloutActionError('an aborted rollout cannot be promoted; change the bundle in Git to start a new revision');
      if (done) throw new RolloutActionError('the rollout has no steps left');
      s.paused = false;
      if (action === 'promote-full') {
        s.currentStep = spec.steps.length;
        s.stepStartedAt = now;
        return { status: s, transitions: ['promoted to 100 % by a person (remaining steps skipped)'] };
      }
      // Promote finishes the step in force: a pause or an analysis is skipped; a
      // setWeight still assigning is left to finish.
      const step = spec.steps[current.currentStep]!;
      if ('setWeight' in step) throw new RolloutActionError(`step ${current.currentStep + 1} (${describeStep(step)}) is still assigning devices; use --full to skip to 100 %`);
      s.currentStep += 1;
      s.stepStartedAt = now;
      return { status: s, transitions: [`step ${current.currentStep + 1}/${spec.steps.length} ${describeStep(step)} promoted by a person`] };
    }
  }
}

/** Kubernetes condition semantics: lastTransitionTime moves only when status changes. */
export function setCondition(list: readonly Condition[], c: Omit<Condition, 'lastTransitionTime'>, at: string): Condition[] {
  const prev = list.find((x) => x.type === c.type);
  const next: Condition = { ...c, lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : at };
  return [...list.filter((x) => x.type !== c.type), next].sort((a, b) => a.type.localeCompare(b.type));
}
