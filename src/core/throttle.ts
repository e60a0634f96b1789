import { AppError } from "./errors.ts";
import type { Clock } from "./clock.ts";

interface Bucket {
  failures: number;
  lastFailure: number;
}

export interface ThrottleLimits {
  /** Failures allowed before waiting is required. */
  freeFailures: number;
  /** Longest wait, in seconds. */
  maxWaitSeconds: number;
  /** A bucket with no failure for this long is forgotten. */
  forgetAfterSeconds: number;
}

/**
 * Failed-login throttling by key (an account name or a source address). After the free
 * failures, each further attempt must wait twice as long as the last, up to a cap. Kept in
 * memory: a restart forgets it, which is acceptable for a throttle and keeps the hot path free
 * of writes.
 */
export class Throttle {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly clock: Clock,
    private readonly limits: ThrottleLimits,
    private readonly maxEntries = 100_000,
  ) {}

  /** No key has failed lately: nothing can be waiting, whoever asks. */
  isEmpty(): boolean {
    return this.buckets.size === 0;
  }

  /** Seconds the key must still wait, or 0. */
  waitSeconds(key: string): number {
    const bucket = this.buckets.get(key);
    if (!bucket) return 0;
    const now = this.clock();
    if (now - bucket.lastFailure >= this.limits.forgetAfterSeconds * 1000) {
      this.buckets.delete(key);
      return 0;
    }
    const excess = bucket.failures - this.limits.freeFailures;
    if (excess < 0) return 0;
    const wait = Math.min(this.limits.maxWaitSeconds, 2 ** excess);
    const remaining = bucket.lastFailure + wait * 1000 - now;
    return remaining > 0 ? Math.ceil(remaining / 1000) : 0;
  }

  fail(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket) {
      bucket.failures++;
      bucket.lastFailure = this.clock();
      // Re-insert so that Map order stays "least recently failed first" for eviction.
      this.buckets.delete(key);
      this.buckets.set(key, bucket);
      return;
    }
    if (this.buckets.size >= this.maxEntries) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    this.buckets.set(key, { failures: 1, lastFailure: this.clock() });
  }

  reset(key: string): void {
    this.buckets.delete(key);
  }
}

export function throttled(retryAfter: number, what: string): AppError {
  return new AppError("throttled", `too many failed logins for this ${what}; retry in ${retryAfter} s`, { retryAfter });
}
