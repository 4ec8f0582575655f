// Apple MDM as `muster serve` mounts it: the SCEP CA, the check-in and command
// endpoints, the enrollment profile, and the driver — built from one
// configuration. Everything Apple-specific stays behind this function.
import { createHash } from 'node:crypto';
import { deviceLifecycle } from '../../controller/devices/lifecycle.js';
import { challengeDigest } from '../../controller/store/challenges.js';
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
import type { TrustedPeer } from '../pki/client-cert.js';
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
  /** The TCP peers that may forward a device certificate in a header (needed with header mode: without it the header is refused). */
  trustedProxy?: TrustedPeer;
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
  /**
   * A signed enrollment profile with a fresh one-time challenge. With `device`
   * (an existing Apple device's UDID), the identity it yields may replace that
   * device's current one, and enroll no other device.
   */
  enrollmentProfile(opts?: { ttlMs?: number; note?: string; device?: string }): Promise<{ bytes: Buffer; contentType: string }>;
  /** A one-time link a person opens on the device: GET /mdm/apple/enroll?code=… serves the profile once. */
  enrollmentLink(opts?: { ttlMs?: number; note?: string; device?: string }): Promise<string>;
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
    topic: c.topic,
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
        onIssued: (i) => recordScepIssue(store, i, c.staticChallenge),
        // Only a current Apple identity renews here: another platform's certificate from the same CA gets nothing.
        renewalAllowed: async (fp) => {
          const id = await store.identities.get(fp);
          if (id && id.platform !== 'apple') {
            await deviceLifecycle(store, { log: c.log }).refused({ ...(id.deviceId ? { deviceId: id.deviceId } : {}), reason: 'other-platform', platform: id.platform, certSha256: fp, actor: 'scep', details: { message: 'SCEP RenewalReq signed with another platform\'s identity' } });
          }
          // Only an identity bound to a device renews: an unbound one would shed its profile's --device limit at each renewal.
          return !!id && id.platform === 'apple' && !id.revokedAt && !!id.deviceId && id.notAfter.getTime() > Date.now();
        },
      });
      await app.register(appleRoutes, { service, auth: { modes: c.deviceAuth, ca, ...(c.trustedProxy ? { trustedProxy: c.trustedProxy } : {}) }, log: c.log });
      // The link is the credential: it works once, and an unknown or used one reveals nothing.
      // Anyone may try one, so it is rate limited per client address like SCEP.
      app.get<{ Querystring: { code?: string } }>('/mdm/apple/enroll', ENROLLMENT_ROUTE, async (req, reply) => {
        // Codes are 40 hex characters: anything much longer is not one, and is not hashed and looked up.
        const code = typeof req.query.code === 'string' && req.query.code.length <= 128 ? req.query.code : '';
        const link = code ? await store.challenges.consume(code, LINK_PURPOSE) : undefined;
        if (!link) return reply.code(403).type('text/plain').send('this enrollment link is not valid (it works once, and expires)\n');
        const d = link.details as { note?: string; device?: string } | null;
        const p = await mdm.enrollmentProfile({ ...(d?.note ? { note: d.note } : {}), ...(d?.device ? { device: d.device } : {}) });
        return reply.type(p.contentType).header('content-disposition', 'attachment; filename="muster-enroll.mobileconfig"').send(p.bytes);
      });
    },
    async enrollmentProfile(opts = {}) {
      const challenge = await store.challenges.issue(SCEP_PURPOSE, opts.ttlMs ?? 24 * 3_600_000, { note: opts.note ?? null, forDevice: opts.device ?? null });
      const base = c.publicUrl.replace(/\/+$/, '');
      const bytes = enrollmentProfileBytes({ serverUrl: `${base}/mdm/apple/connect`, checkInUrl: `${base}/mdm/apple/checkin`, topic: c.topic, scep: { url: `${base}/mdm/apple/scep`, challenge }, ca }, signer);
      await store.audit.append({ actor: 'controller', action: 'enrollment.profile', subject: 'apple', details: { challengeSha256: createHash('sha256').update(challenge).digest('hex'), note: opts.note ?? null, forDevice: opts.device ?? null } });
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
      const code = await store.challenges.issue(LINK_PURPOSE, opts.ttlMs ?? 24 * 3_600_000, { note: opts.note ?? null, device: opts.device ?? null });
      return `${c.publicUrl.replace(/\/+$/, '')}/mdm/apple/enroll?code=${code}`;
    },
  };
  return mdm;
}

/**
 * Every certificate the SCEP CA issues becomes a known Apple identity,
 * audited, with the credential it was issued under (and the device an admin
 * issued that credential for, if any); it is bound at Authenticate. A renewal
 * signed with a bound identity carries the device over: the new certificate is
 * bound where the old one was, so the device goes on checking in without a new
 * Authenticate.
 */
export async function recordScepIssue(store: Store, i: ScepIssued, staticChallenge?: string): Promise<void> {
  const lifecycle = deviceLifecycle(store);
  const issued = { certSha256: i.fingerprint, platform: 'apple' as const, protocol: 'apple-scep', serialNumber: i.serialNumber, subject: i.csrSubject, notAfter: i.notAfter };
  await store.transaction(async (tx) => {
    const previous = i.renewalOf ? await store.identities.get(i.renewalOf, tx) : undefined;
    if (i.renewalOf) {
      // renewalAllowed admits only bound identities; one that lost its binding since gets no certificate (the device sees a 500).
      if (!previous?.deviceId) throw new Error('a renewal must be signed with a bound device identity');
      await lifecycle.renew(i.renewalOf, issued, 'scep', tx, { serial: i.serialNumber, type: i.messageType });
      return;
    }
    let credential: string | null = null;
    let forDevice: string | null = null;
    if (i.challengeUsed !== undefined) {
      if (staticChallenge !== undefined && challengeEquals(i.challengeUsed, staticChallenge)) credential = 'static';
      else {
        credential = challengeDigest(i.challengeUsed);
        const rec = await store.challenges.lookup(i.challengeUsed, SCEP_PURPOSE, tx);
        const d = rec?.details as { forDevice?: unknown } | null | undefined;
        forDevice = typeof d?.forDevice === 'string' ? d.forDevice : null;
      }
    }
    await store.identities.add({ ...issued, credential, forDevice }, tx);
    await store.audit.append({ actor: 'scep', action: 'certificate.issue', subject: `certificate/${i.fingerprint}`, details: { serial: i.serialNumber, subject: i.csrSubject, type: i.messageType, renewalOf: i.renewalOf ?? null, forDevice } }, tx);
  });
}
