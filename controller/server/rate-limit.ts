// Per-client rate limits on what anyone may call without a credential, on
// @fastify/rate-limit. Only two things are limited:
//  - the enrollment endpoints, which a protocol marks with ENROLLMENT_ROUTE
//    (Apple SCEP and the enroll link, Windows discovery, policy, enrollment
//    and its sign-in page): one budget per client address shared by all of
//    them, so the number means "enrollment requests per minute from here";
//  - failed admin API authentications.
// Never a global hook: device-authenticated traffic (check-ins, OMA-DM
// sessions, Pub/Sub pushes) is not limited, since a whole fleet behind one
// NAT address must keep checking in. The key is the request's address, which
// is the client's own once fastify trusts the proxy in front of it.
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** An endpoint anyone may call to enroll (no device or admin credential yet): rate limited per client address. */
    enrollment?: boolean;
  }
}

/** Route options a protocol spreads into an unauthenticated enrollment route. */
export const ENROLLMENT_ROUTE = { config: { enrollment: true } } as const;

/**
 * Enrollment requests per minute from one address. An enrollment is about
 * four requests (Windows: the discovery probe, Discover, GetPolicies,
 * RequestSecurityToken; Apple: the link, GetCACaps, GetCACert, PKIOperation),
 * so 600 lets 150 devices behind one address enroll each minute — a school's
 * term-start or a fleet's mass enrollment — while a single client cannot keep
 * the CA signing or the database answering credential checks at full speed.
 */
export const DEFAULT_ENROLL_RATE_PER_MINUTE = 600;
/** Failed admin API authentications per minute from one address before the answer becomes 429. */
export const DEFAULT_AUTH_FAILURES_PER_MINUTE = 30;

const MINUTE = 60_000;

export interface RateLimits {
  /** Enrollment requests per minute per client address; 0 turns the limit off. */
  enrollPerMinute: number;
  /** Failed admin API authentications per minute per client address; 0 turns the limit off. */
  authFailuresPerMinute: number;
}

/** Answers over the limit: 429 and Retry-After (set by the plugin); the route's error handler words it for its protocol. */
export class RateLimitedError extends Error {
  override name = 'RateLimitedError';
  readonly statusCode = 429;
  constructor(readonly retryAfterSeconds: number) {
    super(`too many requests from this address; try again in ${retryAfterSeconds} seconds`);
  }
}

/**
 * Installs the limits on `app` (the root instance, before the routes they
 * cover are registered). Returns the check the admin API calls after a
 * failed authentication: true when that client has now failed too often.
 */
export async function installRateLimits(app: FastifyInstance, limits: RateLimits): Promise<{ authFailed(req: FastifyRequest, reply: FastifyReply): Promise<boolean> }> {
  await app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_req, ctx) => new RateLimitedError(Math.max(1, Math.ceil(ctx.ttl / 1000))),
  });
  if (limits.enrollPerMinute > 0) {
    // One limiter (one counter per address) for every marked route, not one per route.
    const enrollment = app.rateLimit({ max: limits.enrollPerMinute, timeWindow: MINUTE });
    app.addHook('onRoute', (route: RouteOptions) => {
      if (!route.config?.enrollment) return;
      // First among the route's onRequest hooks: a refused client costs nothing else.
      route.onRequest = [enrollment, ...(route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest])];
    });
  }
  const failures = limits.authFailuresPerMinute > 0 ? app.createRateLimit({ max: limits.authFailuresPerMinute, timeWindow: MINUTE }) : undefined;
  return {
    async authFailed(req, reply) {
      if (!failures) return false;
      const r = await failures(req);
      if (r.isAllowed || !r.isExceeded) return false;
      reply.header('retry-after', String(Math.max(1, r.ttlInSeconds)));
      return true;
    },
  };
}

/** `--enroll-rate`: `N`, `N/min`, `N/s` or `N/h` as requests per minute (0 or `off`: no limit). Throws with the reason. */
export function parseRatePerMinute(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'off') return 0;
  const m = /^(\d{1,9})(?:\s*\/\s*(s|sec|min|m|h|hour))?$/.exec(t);
  if (!m) throw new Error(`"${text}" is not a rate: write N/min (e.g. 600/min), N/s, N/h, or off`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'min';
  const perMinute = unit.startsWith('s') ? n * 60 : unit.startsWith('h') ? n / 60 : n;
  if (n > 0 && perMinute < 1) throw new Error(`"${text}" is less than one request a minute`);
  return Math.floor(perMinute);
}
