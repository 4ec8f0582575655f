// Apple MDM as `muster serve` mounts it: the SCEP CA, the check-in and command
// endpoints, the enrollment profile, and the driver — built from one
// configuration. Everything Apple-specific stays behind this function.
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import forge from 'node-forge';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import { ENROLLMENT_ROUTE } from '../../controller/server/rate-limit.js';
import type { Store } from '../../controller/store/index.js';
import type { DeviceAuthMode } from './auth.js';
import { createAppleDriver, recordAppleResult, recordDeclarationStatus, renderAppleCommand } from './driver.js';
import { ENROLLMENT_CONTENT_TYPE, enrollmentProfileBytes } from './enroll-profile.js';
import type { ProfileSigner } from './profiles.js';
import { signProfile } from './profiles.js';
import { appleRoutes } from './routes.js';
import { createApnsClient, type ApnsOptions } from './apns.js';
import { appleWake } from './wake.js';
import type { CertificateAuthority } from '../pki/ca.js';
import { challengeEquals } from './scep/challenge.js';
import { scepRoutes } from './scep/routes.js';
import { queueStaleInventory } from './inventory.js';
import type { ScepIssued } from './scep/server.js';
import { createAppleService, type AppleLog } from './service.js';

export interface AppleConfig {
  /** The device CA (shared with the other protocols that issue identities). */
  ca: CertificateAuthority;
  /** The APNs push topic of the push certificate (com.apple.mgmt.External.…). */
  topic: string;
  /** The https URL devices reach this server at. */
  publicUrl: string;
  deviceAuth: readonly DeviceAuthMode[];
  /** A shared SCEP challenge accepted besides one-time ones (optional). */
  staticChallenge?: string;
  secret(name: string): string | undefined;
  /** APNs, to wake devices when work is queued; without it devices get work at their next check-in. */
  apns?: Omit<ApnsOptions, 'topic' | 'log'>;
  log: AppleLog & { error(msg: string, fields?: Record<string, unknown>): void };
}

export const SCEP_PURPOSE = 'apple-scep';

export interface AppleMdm {
  ca: CertificateAuthority;
  driver: PlatformDriver;
  /** Mounts /mdm/apple/scep, /mdm/apple/checkin and /mdm/apple/connect. */
  register(app: FastifyInstance): Promise<void>;
  /** A signed enrollment profile with a fresh one-time challenge. */
  enrollmentProfile(opts?: { ttlMs?: number; note?: string }): Promise<{ bytes: Buffer; contentType: string }>;
  /** A one-time link a person opens on the device: GET /mdm/apple/enroll?code=… serves the profile once. */
  enrollmentLink(opts?: { ttlMs?: number; note?: string }): Promise<string>;
  /** Re-asks devices whose inventory is older than maxAgeMs, and pushes them; returns how many. */
  refreshInventory(maxAgeMs: number): Promise<number>;
  /** Closes the APNs connections. */
  close(): Promise<void>;
}

export const LINK_PURPOSE = 'apple-enroll-link';

export async function createAppleMdm(store: Store, c: AppleConfig): Promise<AppleMdm> {
  const ca = c.ca;
  // Profiles are signed by a certificate the CA issues at start-up (kept in memory only).
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const signerCert = ca.issue({ publicKey: keys.publicKey, subject: [{ name: 'commonName', value: 'Muster profile signing' }], ekus: ['codeSigning'], validityDays: 30 });
  const signer: ProfileSigner = { certPem: forge.pki.certificateToPem(signerCert), keyPem: forge.pki.privateKeyToPem(keys.privateKey), chainPems: [ca.certPem] };
  const sign = (bytes: Buffer) => signProfile(bytes, signer);

  const service = createAppleService({
    store,
    log: c.log,
    renderCommand: (cmd) => renderAppleCommand(cmd, { secret: c.secret, signProfile: sign }),
    onResult: (cmd, report) => recordAppleResult(store, cmd, report),
    onDeclarativeStatus: (udid, report) => recordDeclarationStatus(store, udid, report),
  });

  const apns = c.apns ? createApnsClient({ ...c.apns, topic: c.topic, log: c.log }) : undefined;
  const mdm: AppleMdm = {
    ca,
    driver: createAppleDriver(apns ? { wake: appleWake(store, apns, c.log) } : {}),
    async register(app) {
      await app.register(scepRoutes, {
        ca,
        challenges: {
          verify: async (x) => (c.staticChallenge !== undefined && challengeEquals(x, c.staticChallenge)) || store.challenges.verify(x, SCEP_PURPOSE),
          consume: async (x) => (c.staticChallenge !== undefined && challengeEquals(x, c.staticChallenge)) || !!(await store.challenges.consume(x, SCEP_PURPOSE)),
        },
        onIssued: (i) => recordScepIssue(store, i),
        renewalAllowed: async (fp) => !(await store.identities.get(fp))?.revokedAt,
      });
      await app.register(appleRoutes, { service, auth: { modes: c.deviceAuth, ca }, log: c.log });
      // The link is the credential: it works once, and an unknown or used one reveals nothing.
      // Anyone may try one, so it is rate limited per client address like SCEP.
      app.get<{ Querystring: { code?: string } }>('/mdm/apple/enroll', ENROLLMENT_ROUTE, async (req, reply) => {
        // Codes are 40 hex characters: anything much longer is not one, and is not hashed and looked up.
        const code = typeof req.query.code === 'string' && req.query.code.length <= 128 ? req.query.code : '';
        const link = code ? await store.challenges.consume(code, LINK_PURPOSE) : undefined;
        if (!link) return reply.code(403).type('text/plain').send('this enrollment link is not valid (it works once, and expires)\n');
        const note = (link.details as { note?: string } | null)?.note ?? undefined;
        const p = await mdm.enrollmentProfile({ ...(note ? { note } : {}) });
        return reply.type(p.contentType).header('content-disposition', 'attachment; filename="muster-enroll.mobileconfig"').send(p.bytes);
      });
    },
    async enrollmentProfile(opts = {}) {
      const challenge = await store.challenges.issue(SCEP_PURPOSE, opts.ttlMs ?? 24 * 3_600_000, { note: opts.note ?? null });
      const base = c.publicUrl.replace(/\/+$/, '');
      const bytes = enrollmentProfileBytes({ serverUrl: `${base}/mdm/apple/connect`, checkInUrl: `${base}/mdm/apple/checkin`, topic: c.topic, scep: { url: `${base}/mdm/apple/scep`, challenge }, ca }, signer);
      await store.audit.append({ actor: 'controller', action: 'enrollment.profile', subject: 'apple', details: { challengeSha256: createHash('sha256').update(challenge).digest('hex'), note: opts.note ?? null } });
      return { bytes, contentType: ENROLLMENT_CONTENT_TYPE };
    },
    async refreshInventory(maxAgeMs) {
      const asked = await queueStaleInventory(store, { maxAgeMs });
      if (asked.length) {
        c.log.info('asked Apple devices for fresh inventory', { devices: asked.length });
        await mdm.driver.wake?.(asked);
      }
      return asked.length;
    },
    async close() {
      await apns?.close();
    },
    async enrollmentLink(opts = {}) {
      const code = await store.challenges.issue(LINK_PURPOSE, opts.ttlMs ?? 24 * 3_600_000, { note: opts.note ?? null });
      return `${c.publicUrl.replace(/\/+$/, '')}/mdm/apple/enroll?code=${code}`;
    },
  };
  return mdm;
}

/**
 * Every certificate the SCEP CA issues becomes a known identity, audited. A
 * renewal carries the device over: the new certificate is bound where the
 * old one was, so the device goes on checking in without a new Authenticate.
 */
export async function recordScepIssue(store: Store, i: ScepIssued): Promise<void> {
  const previous = i.renewalOf ? await store.identities.get(i.renewalOf) : undefined;
  await store.identities.add({ certSha256: i.fingerprint, serialNumber: i.serialNumber, subject: i.csrSubject, notAfter: i.notAfter, ...(previous?.deviceId ? { deviceId: previous.deviceId } : {}) });
  await store.audit.append({ actor: 'scep', action: 'certificate.issue', subject: `certificate/${i.fingerprint}`, details: { serial: i.serialNumber, subject: i.csrSubject, type: i.messageType, renewalOf: i.renewalOf ?? null, device: previous?.deviceId ?? null } });
}
