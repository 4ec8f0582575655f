// The quota limiter on a virtual clock: never more than `requests` starts in
// any window, retries only what may be retried, honours Retry-After and holds
// every caller back after a 429.
import { describe, expect, it } from 'vitest';
import { RateLimiter, parseRetryAfter } from '../../protocols/android/ratelimit.js';

function virtualClock() {
  const c = { t: 0, sleeps: [] as number[] };
  return { c, now: () => c.t, sleep: async (ms: number) => void (c.sleeps.push(ms), (c.t += ms)) };
}

/** The most starts seen in any half-open window [s, s + w). */
function maxInWindow(starts: number[], w: number): number {
  const s = [...starts].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < s.length; i++) {
    while (s[j]! <= s[i]! - w) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

describe('RateLimiter', () => {
  it('never starts more than the limit in any sliding window, and still starts everything', async () => {
    const { c, now, sleep } = virtualClock();
    const l = new RateLimiter({ requests: 50, windowMs: 10_000, now, sleep });
    const starts: number[] = [];
    // 20 callers at once, with calls that take virtual time of their own.
    await Promise.all(
      Array.from({ length: 20 }, async (_, k) => {
        for (let i = 0; i < 30; i++) {
          await l.run(async () => {
            starts.push(c.t);
            c.t += (k % 3) * 7;
          }, () => ({}));
        }
      }),
    );
    expect(starts).toHaveLength(600);
    expect(maxInWindow(starts, 10_000)).toBe(50);
    expect(l.calls).toBe(600);
    // 600 calls at 50 per 10 s need at least 11 full windows.
    expect(Math.max(...starts)).toBeGreaterThanOrEqual(110_000);
  });

  it('retries 429 after Retry-After and holds every other caller back meanwhile', async () => {
    const { c, now, sleep } = virtualClock();
    const l = new RateLimiter({ requests: 1000, windowMs: 100_000, now, sleep, random: () => 0 });
    const starts: Array<[string, number]> = [];
    let first = true;
    const a = l.run(
      async () => {
        starts.push(['a', c.t]);
        if (first) {
          first = false;
          throw { status: 429 };
        }
        return 'a';
      },
      (e) => ({ status: (e as { status: number }).status, retryAfterMs: 30_000 }),
    );
    await new Promise((r) => setImmediate(r));
    const b = l.run(async () => (starts.push(['b', c.t]), 'b'), () => ({}));
    expect(await Promise.all([a, b])).toEqual(['a', 'b']);
    expect(starts[0]).toEqual(['a', 0]);
    // b asked right after the 429: it waited out the pause too.
    expect(starts.find(([w]) => w === 'b')![1]).toBeGreaterThanOrEqual(30_000);
    expect(l.retries).toBe(1);
  });

  it('backs off exponentially with jitter, capped, and at least as long as Retry-After', () => {
    const lo = new RateLimiter({ baseMs: 1000, maxBackoffMs: 8000, random: () => 0 });
    const hi = new RateLimiter({ baseMs: 1000, maxBackoffMs: 8000, random: () => 1 });
    expect([1, 2, 3, 4, 5, 6].map((a) => lo.backoffMs(a))).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
    expect([1, 2, 3, 4, 5, 6].map((a) => hi.backoffMs(a))).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(lo.backoffMs(1, 20_000)).toBe(20_000);
  });

  it('does not retry 4xx, local errors, or non-idempotent calls after a 5xx; gives up after its attempts', async () => {
    const { now, sleep } = virtualClock();
    const l = new RateLimiter({ attempts: 4, now, sleep });
    let n = 0;
    const count = async (f: object, idempotent = true) => {
      n = 0;
      const fn = async () => {
        n++;
        throw new Error('x');
      };
      await l.run(fn, () => f, { idempotent }).catch(() => undefined);
      return n;
    };
    expect(await count({ status: 400 })).toBe(1);
    expect(await count({ status: 404 })).toBe(1);
    expect(await count({ local: true })).toBe(1);
    expect(await count({ status: 500 }, false)).toBe(1);
    expect(await count({ status: 429 }, false)).toBe(4);
    expect(await count({ status: 503 })).toBe(4);
    expect(await count({})).toBe(4);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('120', 0)).toBe(120_000);
    expect(parseRetryAfter('Wed, 21 Oct 2026 07:28:00 GMT', Date.parse('Wed, 21 Oct 2026 07:27:30 GMT'))).toBe(30_000);
    expect(parseRetryAfter('soon', 0)).toBeUndefined();
    expect(parseRetryAfter(undefined, 0)).toBeUndefined();
  });

  it('refuses a limit that could never admit a call', () => {
    expect(() => new RateLimiter({ requests: 0 })).toThrow(/positive whole number/);
    expect(() => new RateLimiter({ windowMs: 0 })).toThrow(/window must be positive/);
  });
});
