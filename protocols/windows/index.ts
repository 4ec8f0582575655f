// Windows MDM as `muster serve` mounts it: enrollment (MS-MDE2 discovery,
// MS-XCEP policy, MS-WSTEP enrollment and renewal, issuing from the shared
// device CA), the OMA-DM session endpoint, and the driver — built from one
// configuration. Everything Windows-specific stays behind this function.
import type { FastifyInstance } from 'fastify';
import type { PlatformDriver } from '../../controller/reconcile/driver.js';
import type { Store } from '../../controller/store/index.js';
import type { CertificateAuthority } from '../pki/ca.js';
import type { TrustedPeer } from '../pki/client-cert.js';
import type { WindowsAuthMode } from './auth.js';
import { DEFAULT_PROVIDER_ID } from './csp.js';
import { createWindowsDriver, recordWindowsResults, renderWindowsCommand, windowsInventoryOnSession } from './driver.js';
import { windowsEnrollRoutes } from './enroll-routes.js';
import { PATHS, createWindowsEnrollService, type WindowsCredential, type WindowsEnrollConfig } from './enroll-service.js';
import { createWindowsMdmService } from './mdm-service.js';
import { windowsMdmRoutes } from './mdm-routes.js';

export interface WindowsConfig extends Omit<WindowsEnrollConfig, 'providerId'> {
  ca: CertificateAuthority;
  /** PROVIDER-ID of the provisioning document, DMClient provider of the poll nodes. Default Muster. */
  providerId?: string;
  /** How devices prove who they are on the OMA-DM endpoint, in order. Default mtls. */
  deviceAuth?: readonly WindowsAuthMode[];
  /** The header a trusted TLS-terminating proxy puts the client certificate in (default client-cert). */
  certHeader?: string;
  /** The TCP peers that may send that header (needed with header mode: without it the header is refused). */
  trustedProxy?: TrustedPeer;
  /** Ask devices again for their inventory once the last answer is older than this. Default 24 h. */
  inventoryMaxAgeMs?: number;
  secret(name: string): string | undefined;
  log: { info(msg: string, f?: Record<string, unknown>): void; warn(msg: string, f?: Record<string, unknown>): void; error(msg: string, f?: Record<string, unknown>): void };
}

export interface WindowsMdm {
  driver: PlatformDriver;
  urls: { discovery: string; policy: string; enrollment: string; auth: string; management: string };
  /** Mounts /EnrollmentServer/* and /ManagementServer/MDM.svc. */
  register(app: FastifyInstance): Promise<void>;
  /** A credential a person types into Settings › Access work or school (one device by default). */
  issueCredential(o: { group?: string; note?: string; ttlMs?: number; oneTime?: boolean; device?: string }): Promise<WindowsCredential & { discoveryUrl: string; enrollLink: string }>;
}

export function createWindowsMdm(store: Store, c: WindowsConfig): WindowsMdm {
  const providerId = c.providerId ?? DEFAULT_PROVIDER_ID;
  const modes = c.deviceAuth ?? ['mtls'];
  const enroll = createWindowsEnrollService({ store, ca: c.ca, config: { ...c, providerId }, log: c.log });
  const mdm = createWindowsMdmService({
    store,
    log: c.log,
    serverUrl: enroll.urls.management,
    renderCommand: (cmd) => renderWindowsCommand(cmd, { secret: c.secret }),
    onResults: (id, done, tx) => recordWindowsResults(store, id, done, tx),
    onSessionStart: windowsInventoryOnSession(store, { ...(c.inventoryMaxAgeMs ? { maxAgeMs: c.inventoryMaxAgeMs } : {}) }),
  });
  const header = c.certHeader ?? 'client-cert';
  return {
    // No WNS: changes ride each device's next poll (the schedule is set at enrollment and by spec.windows.poll).
    driver: createWindowsDriver({ providerId }),
    urls: enroll.urls,
    async register(app) {
      // Behind a TLS-terminating proxy a renewing device's certificate arrives in its header, as on OMA-DM.
      const auth = { modes, header, ...(c.trustedProxy ? { trustedProxy: c.trustedProxy } : {}) };
      await app.register(windowsEnrollRoutes, { service: enroll, log: c.log, deviceAuth: auth });
      await app.register(windowsMdmRoutes, { service: mdm, auth: { ...auth, ca: c.ca }, log: c.log });
    },
    async issueCredential(o) {
      const cred = await enroll.issueCredential(o);
      const discoveryUrl = cred.discoveryUrl ?? enroll.urls.discovery;
      // The deep link Windows opens straight into "Enroll only in device management".
      const enrollLink = `ms-device-enrollment:?mode=mdm&username=${encodeURIComponent(cred.username)}&servername=${encodeURIComponent(discoveryUrl)}`;
      return { ...cred, discoveryUrl, enrollLink };
    },
  };
}

export { PATHS };
