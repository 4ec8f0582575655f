// Enrolling Android devices: an enrollment token bound to Muster's base
// policy (the reconciler moves each device to its own policy as soon as it
// reports), shown as a link and a QR code; and the one-time signup that binds
// Muster to a new enterprise.
import QRCode from 'qrcode';
import type { Amapi } from './client.js';
import { compileAndroidPolicy, policyIdFor, resolveSecrets } from './compile.js';

export interface EnrollmentTokenResult {
  name: string;
  value: string;
  /** The JSON a device's setup wizard reads from the QR code. */
  qrCode: string;
  link: string;
  expires: string | null;
  oneTime: boolean;
}

/** The policy a device enrolls into before it has bundles: status reporting only. */
export const BASE_POLICY_ID = policyIdFor([]);

export async function createEnrollmentToken(amapi: Amapi, o: { enterprise: string; group?: string; oneTime?: boolean; durationMs?: number }): Promise<EnrollmentTokenResult> {
  const durationMs = o.durationMs ?? 24 * 3_600_000;
  if (!(durationMs >= 60_000 && durationMs <= 90 * 86_400_000)) throw new Error('an enrollment token lasts between one minute and 90 days');
  const base = `${o.enterprise}/policies/${BASE_POLICY_ID}`;
  await amapi.patchPolicy(base, resolveSecrets(compileAndroidPolicy([]), () => undefined).policy);
  const t = await amapi.createEnrollmentToken(o.enterprise, {
    policyName: base,
    duration: `${Math.round(durationMs / 1000)}s`,
    oneTimeOnly: !!o.oneTime,
    ...(o.group ? { additionalData: JSON.stringify({ group: o.group }) } : {}),
  });
  if (!t.value || !t.name) throw new Error('AMAPI returned an enrollment token without a value');
  return {
    name: t.name,
    value: t.value,
    qrCode: t.qrCode ?? '',
    link: `https://enterprise.google.com/android/enroll?et=${encodeURIComponent(t.value)}`,
    expires: t.expirationTimestamp ?? null,
    oneTime: !!o.oneTime,
  };
}

/** The QR code for a terminal (small, UTF-8 blocks). */
export function qrForTerminal(text: string): Promise<string> {
  return QRCode.toString(text, { type: 'terminal', small: true, errorCorrectionLevel: 'M' });
}

export function qrToPng(text: string, file: string): Promise<void> {
  return QRCode.toFile(file, text, { type: 'png', errorCorrectionLevel: 'M', margin: 2, width: 512 });
}

/** Step one of binding to a new enterprise: the URL an admin opens to sign up. */
export async function startSignup(amapi: Amapi, o: { projectId: string; callbackUrl: string }): Promise<{ name: string; url: string }> {
  const s = await amapi.createSignupUrl(o.projectId, o.callbackUrl);
  if (!s.name || !s.url) throw new Error('AMAPI returned a signup URL without a name or url');
  return { name: s.name, url: s.url };
}

/** Step two: the enterpriseToken the callback received makes the enterprise. */
export async function finishSignup(amapi: Amapi, o: { projectId: string; signupUrlName: string; enterpriseToken: string; displayName?: string }): Promise<string> {
  const e = await amapi.createEnterprise(o.projectId, o.signupUrlName, o.enterpriseToken, o.displayName);
  if (!e.name) throw new Error('AMAPI returned an enterprise without a name');
  return e.name;
}
