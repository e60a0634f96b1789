import { AppError } from "./errors.ts";
import type { Clock } from "./clock.ts";

/**
 * A failed-login limit over one kind of key (an account, an address, or both). Attempts are
 * counted when they start (`count`) and taken back when they succeed (`uncount` or `reset`), so
 * that guesses sent at once are held to the limit as if each had already failed.
 */
export interface Limiter {
  /** Seconds the key must still wait, or 0. */
  waitSeconds(key: string): number;
  count(key: string): void;
  uncount(key: string): void;
  reset(key: string): void;
  /** No key has failed lately: nothing can be waiting, whoever asks. */
  isEmpty(): boolean;
  /** A key's bucket as text for the shared store, with when it may be forgotten; null when empty. */
  exportState(key: string): { state: string; expiresAt: number } | null;
  /** Replaces a key's bucket with one read from the shared store (null: none). */
  importState(key: string, state: string | null): void;
}

interface Bucket {
  failures: number;
  lastFailure: number;
}

export interface BackoffLimits {
  /** Failures allowed before waiting is required. */
  freeFailures: number;
  /** Longest wait, in seconds. */
  maxWaitSeconds: number;
  /** A bucket with no failure for this long is forgotten. */
  forgetAfterSeconds: number;
}

/**
 * After the free failures, each further attempt must wait twice as long as the last, up to a
 * cap. The buckets live in memory; what the processes and nodes on one database share goes through
 * `exportState`/`importState`/`mergeState` (the login throttles in auth.ts, the licensing ones in
 * shared-throttle.ts). The least recently failed keys are evicted first past `maxEntries`.
 */
export class Throttle implements Limiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly clock: Clock,
    private readonly limits: BackoffLimits,
    private readonly maxEntries = 100_000,
  ) {}

  isEmpty(): boolean {
    return this.buckets.size === 0;
  }

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

  count(key: string): void {
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

  /** Same as `count`; the name reads better where a failure is recorded after the fact. */
  fail(key: string): void {
    this.count(key);
  }

  uncount(key: string): void {
    const bucket = this.buckets.get(key);
    if (!bucket) return;
    if (--bucket.failures <= 0) this.buckets.delete(key);
  }

  reset(key: string): void {
    this.buckets.delete(key);
  }

  exportState(key: string): { state: string; expiresAt: number } | null {
    const bucket = this.buckets.get(key);
    if (!bucket) return null;
    return { state: JSON.stringify(bucket), expiresAt: bucket.lastFailure + this.limits.forgetAfterSeconds * 1000 };
  }

  importState(key: string, state: string | null): void {
    this.buckets.delete(key);
    const bucket = parseBucket(state);
    if (bucket !== null) this.buckets.set(key, bucket);
  }

  /**
   * Folds a bucket heard from elsewhere (the shared store, another node) into the key's: the more
   * failures and the later one of the two, so that what this process counted meanwhile stays.
   */
  mergeState(key: string, state: string | null): void {
    const heard = parseBucket(state);
    if (heard === null) return;
    const bucket = this.buckets.get(key);
    if (bucket === undefined) this.buckets.set(key, heard);
    else
      ((bucket.failures = Math.max(bucket.failures, heard.failures)),
        (bucket.lastFailure = Math.max(bucket.lastFailure, heard.lastFailure)));
  }

  /** True when the key has used its free failures (and is not forgotten yet): its next failure makes it wait. */
  pastFreeFailures(key: string): boolean {
    const bucket = this.buckets.get(key);
    return (
      bucket !== undefined &&
      bucket.failures >= this.limits.freeFailures &&
      this.clock() - bucket.lastFailure < this.limits.forgetAfterSeconds * 1000
    );
  }
}

function parseBucket(state: string | null): Bucket | null {
  if (state === null) return null;
  const { failures, lastFailure } = JSON.parse(state) as Bucket;
  return Number.isInteger(failures) && failures > 0 && Number.isFinite(lastFailure) ? { failures, lastFailure } : null;
}

export interface WindowLimits {
  /** Failures allowed in any window. */
  maxFailures: number;
  windowSeconds: number;
}

/**
 * At most `maxFailures` in any `windowSeconds`: past that, attempts wait until the oldest failure
 * of the window leaves it. For the account-wide limit, which is high enough that no one address
 * can reach it alone, and predictable for the owner who is locked out by a distributed attack.
 */
export class WindowThrottle implements Limiter {
  /** Per key, the times of its latest failures (at most maxFailures), oldest first. */
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly clock: Clock,
    private readonly limits: WindowLimits,
    private readonly maxEntries = 10_000,
  ) {}

  isEmpty(): boolean {
    return this.failures.size === 0;
  }

  private recent(key: string): number[] | undefined {
    const times = this.failures.get(key);
    if (!times) return undefined;
    const cutoff = this.clock() - this.limits.windowSeconds * 1000;
    while (times.length > 0 && times[0]! <= cutoff) times.shift();
    if (times.length === 0) {
      this.failures.delete(key);
      return undefined;
    }
    return times;
  }

  waitSeconds(key: string): number {
    const times = this.recent(key);
    if (!times || times.length < this.limits.maxFailures) return 0;
    const remaining = times[0]! + this.limits.windowSeconds * 1000 - this.clock();
    return Math.max(1, Math.ceil(remaining / 1000));
  }

  count(key: string): void {
    let times = this.recent(key);
    if (!times) {
      if (this.failures.size >= this.maxEntries) {
        const oldest = this.failures.keys().next().value;
        if (oldest !== undefined) this.failures.delete(oldest);
      }
      this.failures.set(key, (times = []));
    } else {
      this.failures.delete(key);
      this.failures.set(key, times);
    }
    times.push(this.clock());
    if (times.length > this.limits.maxFailures) times.shift();
  }

  uncount(key: string): void {
    const times = this.failures.get(key);
    if (!times) return;
    times.pop();
    if (times.length === 0) this.failures.delete(key);
  }

  reset(key: string): void {
    this.failures.delete(key);
  }

  exportState(key: string): { state: string; expiresAt: number } | null {
    const times = this.failures.get(key);
    if (!times || times.length === 0) return null;
    return { state: JSON.stringify(times), expiresAt: times[times.length - 1]! + this.limits.windowSeconds * 1000 };
  }

  importState(key: string, state: string | null): void {
    this.failures.delete(key);
    if (state === null) return;
    const times = (JSON.parse(state) as unknown[]).filter((t): t is number => typeof t === "number");
    if (times.length > 0) this.failures.set(key, times);
  }
}

export function throttled(retryAfter: number, what: string): AppError {
  return new AppError("throttled", `too many failed logins for this ${what}; retry in ${retryAfter} s`, { retryAfter });
}
