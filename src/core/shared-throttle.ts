/**
 * A backoff throttle (throttle.ts) whose failures count on every process and node sharing the
 * database: the licensing throttles (unknown tokens per address, refused seats per key).
 *
 * Their checks are on the hot path, so the decision is made from memory: each node keeps its own
 * copy of the buckets. Every failure is added to the shared bucket in the database (a short,
 * locked transaction) and what the database then holds is folded into the local copy. A key past
 * its free failures is told to the other nodes (`tell`, broadcast), and from then on every node
 * asks the database before letting that key through, so a key that must wait waits on every node.
 * Below the free failures nothing needs deciding: the count in the database is exact, and a node
 * hears of a key crossing the line within the broadcast's delay.
 */
import type { Sql } from "../db/sql.ts";
import type { ThrottleStore } from "../db/throttles.ts";
import type { Clock } from "./clock.ts";
import { Throttle, type BackoffLimits } from "./throttle.ts";

/** A bucket past its free failures, as told to the other nodes. */
export interface ThrottleNews {
  limiter: string;
  key: string;
  state: string;
}

export interface ThrottleSharing {
  sql: Sql;
  store: ThrottleStore;
  /** Tells the other nodes of a bucket past its free failures. */
  tell: (news: ThrottleNews) => void;
  /** A failure that could not be written to the database (the local count holds meanwhile). */
  onError: (error: unknown) => void;
}

export class SharedThrottle {
  private readonly local: Throttle;

  constructor(
    /** The limiter's name in the shared store, e.g. `license.invalid_token`. */
    readonly name: string,
    private readonly clock: Clock,
    private readonly limits: BackoffLimits,
    private readonly sharing: ThrottleSharing,
  ) {
    this.local = new Throttle(clock, limits);
  }

  /** No key has failed lately on this node, nor been told of: nothing can be waiting here. */
  isEmpty(): boolean {
    return this.local.isEmpty();
  }

  /**
   * Seconds the key must still wait, or 0: at once from memory, unless the key is past its free
   * failures and its wait here is over, then as the database has it (another node may have
   * counted a failure since).
   */
  waitSeconds(key: string): number | Promise<number> {
    const wait = this.local.waitSeconds(key);
    if (wait > 0 || !this.local.pastFreeFailures(key)) return wait;
    return this.asShared(key);
  }

  private async asShared(key: string): Promise<number> {
    this.local.mergeState(key, await this.sharing.store.peek(this.name, key, this.clock()));
    return this.local.waitSeconds(key);
  }

  /**
   * Counts a failure: here at once, then in the database. The promise settles once the database
   * has it (callers on the hot path need not wait for it); a failed write goes to `onError`.
   */
  fail(key: string): Promise<void> {
    this.local.fail(key);
    return this.record(key).catch((error: unknown) => this.sharing.onError(error));
  }

  private async record(key: string): Promise<void> {
    const { sql, store } = this.sharing;
    const now = this.clock();
    // The shared bucket plus this failure, worked out on a scratch throttle of its own.
    const scratch = new Throttle(this.clock, this.limits, 1);
    const bucket = await sql.transaction(
      async () => {
        scratch.importState(key, await store.hold(this.name, key, now));
        scratch.fail(key);
        const exported = scratch.exportState(key)!;
        await store.save(this.name, key, exported, now);
        return exported;
      },
      // A throttle's count may be lost in a power cut; the call need not wait for the disk.
      { durable: false },
    );
    this.local.mergeState(key, bucket.state);
    if (scratch.pastFreeFailures(key)) this.sharing.tell({ limiter: this.name, key, state: bucket.state });
  }

  /** A bucket another node told of. */
  heard(key: string, state: string): void {
    this.local.mergeState(key, state);
  }
}
