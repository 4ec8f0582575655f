// Google's AMAPI quota is counted per project in a sliding window (1,000
// requests per 100 s by default). Every call goes through one limiter that
// never starts more than `requests` calls in any `windowMs`, and retries
// 429 and 5xx answers with exponential backoff, honouring Retry-After.

export interface RateLimitOptions {
  /** Calls allowed per window. Default 900 (a margin under Google's 1,000). */
  requests?: number;
  /** Default 100 s. */
  windowMs?: number;
  /** Attempts per call, the first included. Default 6. */
  attempts?: number;
  /** First backoff; doubles each time, with full jitter. Default 500 ms; capped at 60 s. */
  baseMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

/** What the limiter needs to know of a failed call. */
export interface CallFailure {
  status?: number;
  retryAfterMs?: number;
}

export class RateLimiter {
  private readonly starts: number[] = [];
  private head = 0;
  private chain: Promise<void> = Promise.resolve();
  readonly requests: number;
  readonly windowMs: number;
  /** Calls started, retries included (for benchmarks and tests). */
  calls = 0;
  retries = 0;

  constructor(private readonly o: RateLimitOptions = {}) {
    this.requests = o.requests ?? 900;
    this.windowMs = o.windowMs ?? 100_000;
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
        while (this.head < this.starts.length && this.starts[this.head]! <= now - this.windowMs) this.head++;
        if (this.head > 4096) {
          this.starts.splice(0, this.head);
          this.head = 0;
        }
        if (this.starts.length - this.head < this.requests) {
          this.starts.push(now);
          this.calls++;
          return;
        }
        // Wait until the oldest call in the window leaves it.
        await this.sleep(this.starts[this.head]! + this.windowMs - now + 1);
      }
    });
    this.chain = turn.catch(() => {});
    return turn;
  }

  /** Runs `fn` within the quota, retrying what Google says may be retried. */
  async run<T>(fn: () => Promise<T>, classify: (e: unknown) => CallFailure): Promise<T> {
    const attempts = this.o.attempts ?? 6;
    for (let attempt = 1; ; attempt++) {
      await this.acquire();
      try {
        return await fn();
      } catch (e) {
        const f = classify(e);
        const retryable = f.status === 429 || (f.status !== undefined && f.status >= 500) || f.status === undefined;
        if (!retryable || attempt >= attempts) throw e;
        this.retries++;
        const backoff = Math.min(60_000, (this.o.baseMs ?? 500) * 2 ** (attempt - 1)) * (this.o.random ?? Math.random)();
        await this.sleep(Math.max(f.retryAfterMs ?? 0, backoff));
      }
    }
  }
}
