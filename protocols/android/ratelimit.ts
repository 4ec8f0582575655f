// Google's AMAPI quota is counted per project in a sliding window (1,000
// requests per 100 s by default). Every call goes through one limiter that
// never starts more than `requests` calls in any `windowMs`, and retries 429
// and 5xx answers (and lost connections) with exponential backoff, honouring
// Retry-After. A 429 holds back every call, not just the one that got it: the
// quota is the project's, so the next call would be refused too.
//
// The limiter is per process: run the AMAPI worker in one process (the
// leader), or give each replica its share of the project's quota.

export interface RateLimitOptions {
  /** Calls allowed per window. Default 900 (a margin under Google's 1,000). */
  requests?: number;
  /** Default 100 s. */
  windowMs?: number;
  /** Attempts per call, the first included. Default 6. */
  attempts?: number;
  /** First backoff; doubles each time, with jitter in its upper half. Default 1 s; capped at maxBackoffMs. */
  baseMs?: number;
  /** Default 64 s. */
  maxBackoffMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  /** Told the time of every call it lets start (for benchmarks and tests). */
  onStart?: (at: number) => void;
}

/** What the limiter needs to know of a failed call. */
export interface CallFailure {
  /** The HTTP status; undefined when no answer came. */
  status?: number;
  retryAfterMs?: number;
  /** The request never left (a programming or configuration error): retrying cannot help. */
  local?: boolean;
}

export interface RunOptions {
  /**
   * A call that may be repeated without harm (GET, PATCH, DELETE). A call that
   * is not (issueCommand, create) is retried only on 429, which Google
   * answers before doing anything.
   */
  idempotent?: boolean;
}

export class RateLimiter {
  private readonly starts: number[] = [];
  private head = 0;
  private chain: Promise<void> = Promise.resolve();
  /** No call starts before this time (set by a 429). */
  private pausedUntil = 0;
  readonly requests: number;
  readonly windowMs: number;
  /** Calls started, retries included (for benchmarks and tests). */
  calls = 0;
  /** Attempts that were retries. */
  retries = 0;

  constructor(private readonly o: RateLimitOptions = {}) {
    this.requests = o.requests ?? 900;
    this.windowMs = o.windowMs ?? 100_000;
    if (!(Number.isInteger(this.requests) && this.requests > 0)) throw new Error('the AMAPI rate limit needs a positive whole number of requests');
    if (!(this.windowMs > 0)) throw new Error('the AMAPI rate limit window must be positive');
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  private sleep(ms: number): Promise<void> {
    return this.o.sleep ? this.o.sleep(ms) : new Promise((r) => setTimeout(r, ms));
  }

  /** Resolves when one more call may start; calls are admitted one at a time, in order. */
  acquire(): Promise<void> {
    const turn = this.chain.then(async () => {
      for (;;) {
        const now = this.now();
        if (now < this.pausedUntil) {
          // Whole milliseconds, so a clock that adds the wait lands on the mark and never just short of it.
          await this.sleep(Math.ceil(this.pausedUntil - now));
          continue;
        }
        // The window is (now - windowMs, now]: a call that started exactly windowMs ago has left it.
        while (this.head < this.starts.length && this.starts[this.head]! <= now - this.windowMs) this.head++;
        if (this.head > 4096) {
          this.starts.splice(0, this.head);
          this.head = 0;
        }
        if (this.starts.length - this.head < this.requests) {
          this.starts.push(now);
          this.calls++;
          this.o.onStart?.(now);
          return;
        }
        // Wait until the oldest call in the window leaves it.
        await this.sleep(Math.ceil(this.starts[this.head]! + this.windowMs - now));
      }
    });
    this.chain = turn.catch(() => {});
    return turn;
  }

  /** The wait before attempt `attempt + 1`: exponential, jittered, at least what Retry-After asked. */
  backoffMs(attempt: number, retryAfterMs?: number): number {
    const cap = this.o.maxBackoffMs ?? 64_000;
    const exp = Math.min(cap, (this.o.baseMs ?? 1000) * 2 ** (attempt - 1));
    // Jitter in the upper half keeps the growth visible while spreading retries out.
    const jittered = exp / 2 + (exp / 2) * (this.o.random ?? Math.random)();
    return Math.round(Math.max(retryAfterMs ?? 0, jittered));
  }

  /** Runs `fn` within the quota, retrying what may be retried. */
  async run<T>(fn: () => Promise<T>, classify: (e: unknown) => CallFailure, ro: RunOptions = {}): Promise<T> {
    const attempts = this.o.attempts ?? 6;
    const idempotent = ro.idempotent ?? true;
    for (let attempt = 1; ; attempt++) {
      await this.acquire();
      try {
        return await fn();
      } catch (e) {
        const f = classify(e);
        const retryable = !f.local && (f.status === 429 || (idempotent && (f.status === undefined || f.status >= 500)));
        if (!retryable || attempt >= attempts) throw e;
        this.retries++;
        const wait = this.backoffMs(attempt, f.retryAfterMs);
        if (f.status === 429) this.pausedUntil = Math.max(this.pausedUntil, this.now() + wait);
        await this.sleep(wait);
      }
    }
  }
}

/** Retry-After as seconds or an HTTP date, in milliseconds from `now`. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}
