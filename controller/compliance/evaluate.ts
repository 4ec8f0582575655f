// Compliance: the rules of a device's bundles (spec.compliance) judged
// against what the device reported. Pure: protocols turn their own reports
// (Apple's SecurityInfo, Windows' read-back CSP values, AMAPI's Device) into
// one Posture; this module knows nothing of any wire format.
import type { ComplianceRule, OsFamily } from '../policy/types.js';

/** What compliance is judged on, as the device's protocol understood its reports. Absent fields are unknown. */
export interface Posture {
  osFamily?: OsFamily;
  osVersion?: string | null;
  /** The boot or data volume is encrypted (FileVault, BitLocker, Android encryption, iOS data protection). */
  encrypted?: boolean;
  passcodePresent?: boolean;
  lastSeenAt?: Date | null;
  /** When the protocol last reported posture (absent: never). */
  reportedAt?: Date;
}

/** The reported-state kind protocols write a Posture under. */
export const POSTURE = 'posture';

export type CheckStatus = 'pass' | 'fail' | 'unknown';

export interface CheckResult {
  rule: string;
  bundle: string;
  severity: 'warning' | 'critical';
  status: CheckStatus;
  detail: string;
}

export interface ComplianceResult {
  /** compliant: no critical rule fails or is unknown; noncompliant: a critical rule fails; unknown: none fails but some cannot be judged yet. */
  state: 'compliant' | 'noncompliant' | 'unknown';
  checks: CheckResult[];
}

/**
 * Numeric dotted versions compared part by part ("15.10" > "15.9",
 * "10.0.26100.4061" > "10.0.22631"); a missing part counts as 0.
 * undefined when either side is not such a version.
 */
export function compareVersions(a: string, b: string): number | undefined {
  const re = /^\d+(\.\d+)*$/;
  if (!re.test(a) || !re.test(b)) return undefined;
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

function check(rule: ComplianceRule, p: Posture, now: Date): { status: CheckStatus; detail: string } {
  if ('minimumOsVersion' in rule) {
    if (!p.osFamily) return { status: 'unknown', detail: 'the OS family is not known yet' };
    const min = rule.minimumOsVersion[p.osFamily];
    if (min === undefined) return { status: 'pass', detail: `no minimum for ${p.osFamily}` };
    if (!p.osVersion) return { status: 'unknown', detail: 'the OS version is not known yet' };
    const c = compareVersions(p.osVersion, min);
    if (c === undefined) return { status: 'unknown', detail: `cannot compare OS version "${p.osVersion}" with ${min}` };
    return c >= 0 ? { status: 'pass', detail: `${p.osVersion} ≥ ${min}` } : { status: 'fail', detail: `${p.osVersion} is below ${min}` };
  }
  if ('encryptionRequired' in rule) {
    if (p.encrypted === undefined) return { status: 'unknown', detail: 'encryption not reported yet' };
    return p.encrypted ? { status: 'pass', detail: 'encrypted' } : { status: 'fail', detail: 'the device reports it is not encrypted' };
  }
  if ('passcodeRequired' in rule) {
    if (p.passcodePresent === undefined) return { status: 'unknown', detail: 'passcode not reported yet' };
    return p.passcodePresent ? { status: 'pass', detail: 'passcode set' } : { status: 'fail', detail: 'the device reports no passcode' };
  }
  if (!p.lastSeenAt) return { status: 'fail', detail: 'never seen' };
  const days = (now.getTime() - p.lastSeenAt.getTime()) / 86_400_000;
  return days <= rule.maxDaysSinceLastSeen ? { status: 'pass', detail: `seen ${days < 1 ? 'today' : `${Math.floor(days)} days ago`}` } : { status: 'fail', detail: `not seen for ${Math.floor(days)} days (limit ${rule.maxDaysSinceLastSeen})` };
}

/** Judges every rule of every bundle; a rule shared by two bundles is judged once per bundle (each reports its own). */
export function evaluateCompliance(rules: ReadonlyArray<{ bundle: string; rule: ComplianceRule }>, posture: Posture, now: Date): ComplianceResult {
  const checks = rules.map(({ bundle, rule }) => ({ rule: rule.name, bundle, severity: rule.severity ?? 'critical', ...check(rule, posture, now) }));
  const critical = checks.filter((c) => c.severity === 'critical');
  const state = critical.some((c) => c.status === 'fail') ? 'noncompliant' : critical.some((c) => c.status === 'unknown') ? 'unknown' : 'compliant';
  return { state, checks };
}
