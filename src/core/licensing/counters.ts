/**
 * Check counters: per key, the number of checks and the last check's time and address; per
 * machine, the last check's time. They are batched in memory and written about once a second
 * (SPEC §10 allows it): a write per check would cost more than the check. The same batch feeds
 * the charts' hourly roll-ups (stats.ts): each key's checks are handed over once per flush, not
 * counted twice per check.
 */
import type { Database } from "bun:sqlite";
import type { LicenseStore } from "../../db/licenses.ts";
import { immediateUnsynced } from "../../db/open.ts";
import { appScope, HOUR_MS, hourOf, type Stats } from "../stats.ts";

/** A key's checks since the last flush. */
export interface PendingChecks {
  checks: number;
  at: number;
  address: string | null;
  /** The machine whose address `address` is. */
  hwid: string;
  appId: number;
  /** Checks not yet handed over to the roll-ups, all in the hour that starts at `hour`. */
  hourChecks: number;
  hour: number;
}

/** Keys and machines per flush transaction: each slice takes about a millisecond. */
const FLUSH_SLICE = 250;

export class CheckCounters {
  private readonly keys = new Map<number, PendingChecks>();
  /** The last check's time, by activation id. */
  private readonly machines = new Map<number, number>();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly db: Database,
    private readonly store: LicenseStore,
    private readonly stats: Stats,
  ) {
    stats.source(() => this.handOver());
  }

  start(): void {
    this.timer = setInterval(() => this.flushInSlices(), 1000);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.flush();
  }

  /**
   * Counts a check that passed. The caller's address is read only when another machine than the
   * last one checks: a machine checking again before the next flush (about a second) is taken to
   * be where it was.
   */
  count(licenseId: number, appId: number, activationId: number, hwid: string, now: number, addressOf: () => string | null): void {
    const pending = this.keys.get(licenseId);
    if (pending) {
      pending.checks++;
      pending.at = now;
      if (pending.hwid !== hwid) {
        pending.hwid = hwid;
        pending.address = addressOf();
      }
      if (now - pending.hour >= HOUR_MS || now < pending.hour) {
        this.handOverKey(licenseId, pending);
        pending.hour = hourOf(now);
      }
      pending.hourChecks++;
    } else this.keys.set(licenseId, { checks: 1, at: now, address: addressOf(), hwid, appId, hourChecks: 1, hour: hourOf(now) });
    this.machines.set(activationId, now);
  }

  pendingKey(licenseId: number): PendingChecks | undefined {
    return this.keys.get(licenseId);
  }

  /** The last check's time of a machine, when it has not been written yet. */
  pendingMachine(activationId: number): number | undefined {
    return this.machines.get(activationId);
  }

  /**
   * The key is being deleted: its counters have nowhere to go, nor has its own chart (its checks
   * still count overall and for its application).
   */
  forgetKey(licenseId: number): void {
    const pending = this.keys.get(licenseId);
    if (pending && pending.hourChecks > 0) this.stats.count("checks_ok", pending.hourChecks, [appScope(pending.appId)], pending.hour);
    this.keys.delete(licenseId);
    this.stats.forgetLicense(licenseId);
  }

  /** Hands every key's checks counted since the last time over to the roll-ups (before the charts are read). */
  handOver(): void {
    for (const [licenseId, pending] of this.keys) this.handOverKey(licenseId, pending);
  }

  private handOverKey(licenseId: number, pending: PendingChecks): void {
    if (pending.hourChecks === 0) return;
    this.stats.count("checks_ok", pending.hourChecks, [appScope(pending.appId)], pending.hour);
    this.stats.countKeyChecks(licenseId, pending.hourChecks, pending.hour);
    pending.hourChecks = 0;
  }

  /** Writes every batched counter now (on shutdown, and in tests). */
  flush(): void {
    while (this.flushSlice()) {
      // each slice is its own transaction
    }
  }

  /**
   * The timer's flush: a slice per transaction, the next slice on a later turn of the event loop,
   * so that a second's worth of checks on many keys never holds up the checks being answered
   * meanwhile (each row costs a few microseconds to write).
   */
  private flushInSlices(): void {
    if (this.flushSlice()) setImmediate(() => this.flushInSlices());
  }

  /** Writes one slice of the batched counters; true when more are left. */
  private flushSlice(): boolean {
    const keys = takeSome(this.keys, FLUSH_SLICE).map(([id, p]) => {
      this.handOverKey(id, p);
      return { id, ...p };
    });
    const machines = takeSome(this.machines, FLUSH_SLICE).map(([id, at]) => ({ id, at }));
    // Counters may be lost in a power cut (SPEC §10 lets them be batched): no fsync per slice.
    if (keys.length > 0 || machines.length > 0) immediateUnsynced(this.db, () => this.store.flushChecks(keys, machines));
    return this.keys.size > 0 || this.machines.size > 0;
  }
}

/** Removes and returns up to `limit` entries of a map, oldest first. */
function takeSome<K, V>(map: Map<K, V>, limit: number): [K, V][] {
  const taken: [K, V][] = [];
  for (const entry of map) {
    if (taken.length === limit) break;
    taken.push(entry);
  }
  for (const [key] of taken) map.delete(key);
  return taken;
}
