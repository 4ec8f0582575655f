// What the Windows OMA-DM tests share: an enrolled device as the enrollment
// side would leave it (a device row, an enrolled enrollment, a certificate
// from Muster's CA bound as its identity), and a TLS certificate for the
// test server that the simulated PCs trust.
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import type { Store } from '../../controller/store/index.js';
import { CertificateAuthority, sha256Fingerprint } from '../../protocols/pki/ca.js';
import { localServerCertificate } from '../../protocols/pki/local-tls.js';

export interface EnrolledDevice {
  deviceId: string;
  certPem: string;
  keyPem: string;
  certSha256: string;
}

/** Issues a device certificate from the CA and binds it, as MS-WSTEP enrollment would. */
export async function enrollDevice(store: Store, ca: CertificateAuthority, deviceId: string, o: { bind?: boolean } = {}): Promise<EnrolledDevice> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = ca.issue({ publicKey: forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string) as forge.pki.rsa.PublicKey, subject: [{ shortName: 'CN', value: deviceId }] });
  const certPem = forge.pki.certificateToPem(cert);
  const certSha256 = sha256Fingerprint(cert);
  await store.devices.upsert({ id: deviceId, platform: 'windows', attributes: { os: 'windows', 'enrollment-source': 'windows-mdm' } });
  await store.devices.setEnrollment({ deviceId, platform: 'windows', status: 'enrolled', state: {} });
  await store.identities.add({ certSha256, deviceId: o.bind === false ? null : deviceId, platform: 'windows', protocol: 'windows-wstep', serialNumber: cert.serialNumber, subject: `CN=${deviceId}`, notAfter: cert.validity.notAfter });
  return { deviceId, certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, certSha256 };
}

/** A self-signed server certificate for 127.0.0.1 (the simulated PCs trust it as their CA). */
export const serverCertificate = () => localServerCertificate();

export const quiet = { info: () => {}, warn: () => {} };

/** A log that keeps what it was told (to check warnings). */
export function recordingLog() {
  const lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = [];
  return { lines, info: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'info', msg, ...(fields ? { fields } : {}) }), warn: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'warn', msg, ...(fields ? { fields } : {}) }) };
}
