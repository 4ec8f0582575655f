// `muster serve`'s HTTP side as serve builds it — buildApp with Apple MDM,
// Windows MDM and the Android Pub/Sub endpoint mounted, the admin API and the
// Git webhook — on a real socket, for test/security and bench/hostile.
// Devices prove who they are with a certificate in the proxy header
// (RFC 9440), so the rig speaks plain HTTP; the Pub/Sub tokens are signed by a
// local key instead of Google's.
import { createHmac, randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { SignJWT, createLocalJWKSet, exportJWK, generateKeyPair } from 'jose';
import { createDrivers } from '../controller/drivers.js';
import { Reconciler } from '../controller/reconcile/reconciler.js';
import { buildApp, type AppOptions } from '../controller/server/app.js';
import { createPino, logOf } from '../controller/server/log.js';
import { Controller } from '../controller/serve/controller.js';
import { createDirSource } from '../controller/sources/dir-source.js';
import { verifyGithubSignature } from '../controller/sources/webhook.js';
import type { Store } from '../controller/store/index.js';
import { PUBSUB_PATH, pubsubRoutes } from '../protocols/android/pubsub.js';
import { createAppleMdm, type AppleMdm } from '../protocols/apple/index.js';
import { trustedProxies } from '../controller/server/trusted-proxy.js';
import { generateCa, sha256Fingerprint, type CertificateAuthority } from '../protocols/pki/ca.js';
import { createWindowsMdm, type WindowsMdm } from '../protocols/windows/index.js';

export const RIG_PUSH_ACCOUNT = 'push@muster-rig.iam.gserviceaccount.com';
export const RIG_AUDIENCE = `https://mdm.muster.test${PUBSUB_PATH}`;
const WEBHOOK_SECRET = 'rig-webhook-secret';

export interface RigLogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

export interface ServeRig {
  app: FastifyInstance;
  /** http://127.0.0.1:PORT */
  url: string;
  store: Store;
  ca: CertificateAuthority;
  apple: AppleMdm;
  windows: WindowsMdm;
  /** An admin API bearer token (scope operate). */
  adminToken: string;
  /** A Pub/Sub OIDC token the endpoint accepts. */
  pubsubToken(): Promise<string>;
  /** The X-Hub-Signature-256 header for a webhook body. */
  webhookSignature(body: Buffer): string;
  /** A certificate from the rig's CA as the proxy header carries it (`:base64 DER:`); `bind` makes it a Windows device's identity. */
  deviceCertificate(o?: { bindTo?: string }): Promise<{ header: string; certSha256: string }>;
  /** What the protocols logged. */
  logs: RigLogLine[];
  close(): Promise<void>;
}

export async function serveRig(store: Store, o: Partial<Omit<AppOptions, 'store' | 'reconciler' | 'controller' | 'drivers' | 'logger'>> = {}): Promise<ServeRig> {
  const logs: RigLogLine[] = [];
  const line = (level: string) => (msg: string, fields?: Record<string, unknown>) => void logs.push({ level, msg, ...(fields ? { fields } : {}) });
  const log = { info: line('info'), warn: line('warn'), error: line('error') };
  const ca = generateCa({ keyBits: 2048 });
  const publicUrl = 'https://mdm.muster.test';
  // The load and the tests come from this machine, standing for the TLS proxy that forwards device certificates (--trusted-proxy 127.0.0.1/32 ::1/128).
  const proxy = trustedProxies(['127.0.0.1/32', '::1/128']);
  const trustedProxy = (a: string) => proxy.has(a);
  const apple = await createAppleMdm(store, { ca, topic: 'com.apple.mgmt.External.00000000-0000-4000-8000-000000000rig', publicUrl, deviceAuth: ['header', 'signature'], trustedProxy, secret: () => undefined, log });
  const windows = createWindowsMdm(store, { ca, publicUrl, deviceAuth: ['header'], trustedProxy, secret: () => undefined, log });

  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const kid = `rig-${randomBytes(4).toString('hex')}`;
  const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] });

  const pino = createPino({ level: 'silent' });
  const drivers = createDrivers();
  drivers.set('apple', apple.driver);
  drivers.set('windows', windows.driver);
  const reconciler = new Reconciler({ store, drivers, log: logOf(pino) });
  const controller = new Controller({ store, source: createDirSource('/nonexistent'), reconciler, log: logOf(pino) });
  const app = await buildApp({
    store,
    reconciler,
    controller,
    drivers,
    logger: pino,
    protocols: [
      (s) => apple.register(s),
      (s) => windows.register(s),
      async (s) => void (await s.register(pubsubRoutes, { store, enterprise: 'enterprises/rig', audience: RIG_AUDIENCE, serviceAccountEmail: RIG_PUSH_ACCOUNT, jwks, log })),
    ],
    verifyWebhook: (body, headers) => verifyGithubSignature(WEBHOOK_SECRET, body, headers['x-hub-signature-256'] as string | undefined),
    ...o,
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const adminToken = (await store.tokens.create('rig', 'operate')).token;
  const keys = forge.pki.rsa.generateKeyPair(2048);

  return {
    app,
    url,
    store,
    ca,
    apple,
    windows,
    adminToken,
    logs,
    pubsubToken: () =>
      new SignJWT({ email: RIG_PUSH_ACCOUNT, email_verified: true })
        .setProtectedHeader({ alg: 'RS256', kid })
        .setIssuer('https://accounts.google.com')
        .setAudience(RIG_AUDIENCE)
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(privateKey),
    webhookSignature: (body) => `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(body).digest('hex')}`,
    async deviceCertificate(d = {}) {
      const cert = ca.issue({ publicKey: keys.publicKey, subject: [{ shortName: 'CN', value: d.bindTo ?? 'unbound' }] });
      const der = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
      const certSha256 = sha256Fingerprint(cert);
      if (d.bindTo) {
        await store.devices.upsert({ id: d.bindTo, platform: 'windows', attributes: { os: 'windows' } });
        await store.devices.setEnrollment({ deviceId: d.bindTo, platform: 'windows', status: 'enrolled', state: {} });
        await store.identities.add({ certSha256, deviceId: d.bindTo, platform: 'windows', protocol: 'windows-wstep', serialNumber: cert.serialNumber, notAfter: cert.validity.notAfter });
      }
      return { header: `:${der.toString('base64')}:`, certSha256 };
    },
    async close() {
      await app.close();
      await apple.close();
    },
  };
}
