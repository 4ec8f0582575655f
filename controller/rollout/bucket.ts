// Sticky buckets: a device's place in a rollout, 0..9999 basis points, from a
// hash of the salt and its id. A device is in the canary when its bucket is
// below weight × 100, so raising the weight only ever adds devices and the 1 %
// ring is the same devices in every revision that shares the salt.
import { createHash } from 'node:crypto';

export const BUCKETS = 10_000;

export function bucketOf(salt: string, deviceId: string): number {
  // 48 bits of SHA-256 mod 10,000: the modulo bias (< 2^-35) is immaterial.
  return createHash('sha256').update(`${salt}:${deviceId}`).digest().readUIntBE(0, 6) % BUCKETS;
}

export function inCanary(bucket: number, weight: number): boolean {
  return bucket < Math.round(weight * 100);
}
