// Git host webhooks: GitHub signs the exact request body with the shared
// secret (X-Hub-Signature-256: sha256=<hex HMAC-SHA256>). Compared in
// constant time; anything malformed is simply not valid.
import { createHmac, timingSafeEqual } from 'node:crypto';

export function verifyGithubSignature(secret: string, body: Buffer, header: string | undefined): boolean {
  // No secret configured means nothing can be verified, not that everything is.
  if (!secret || typeof header !== 'string') return false;
  // Exactly 64 hex digits: Buffer.from(hex) silently drops an odd last digit and stops at the first non-hex one.
  const m = /^sha256=([0-9a-f]{64})$/i.exec(header.trim());
  if (!m) return false;
  const given = Buffer.from(m[1]!, 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  // timingSafeEqual throws on different lengths; checked first (the length is public anyway).
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The branch and new head of a push event (raw body or already parsed), when it is one. */
export function parseGithubPush(body: unknown): { ref: string; after: string } | undefined {
  let v: unknown = body;
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    try {
      v = JSON.parse(body.toString());
    } catch {
      return undefined;
    }
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const { ref, after } = v as { ref?: unknown; after?: unknown };
  return typeof ref === 'string' && typeof after === 'string' ? { ref, after } : undefined;
}
