// Git host webhooks: GitHub signs the exact request body with the shared
// secret (X-Hub-Signature-256: sha256=<hex HMAC-SHA256>). Compared in
// constant time; anything malformed is simply not valid.
import { createHmac, timingSafeEqual } from 'node:crypto';

export function verifyGithubSignature(secret: string, body: Buffer, header: string | undefined): boolean {
  if (!secret || typeof header !== 'string') return false;
  const m = /^sha256=([0-9a-f]{64})$/i.exec(header.trim());
  if (!m) return false;
  const given = Buffer.from(m[1]!.toLowerCase(), 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The branch and new head of a push event, when the body is one. */
export function parseGithubPush(body: Buffer | string): { ref: string; after: string } | undefined {
  try {
    const v = JSON.parse(body.toString()) as { ref?: unknown; after?: unknown };
    return typeof v.ref === 'string' && typeof v.after === 'string' ? { ref: v.ref, after: v.after } : undefined;
  } catch {
    return undefined;
  }
}
