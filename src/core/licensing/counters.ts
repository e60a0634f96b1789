/**
 * Check counters: per key, the number of checks and the last check's time and address; per
 * machine, the last check's time. They are batched in memory and written about once a second
 * (SPEC §10 allows it): a write per check would cost more than the check. The same batch feeds
 * the charts' hourly roll-ups (stats.ts): each key's checks are handed over once per flush, not
 * counted twice per check.
 */
import type { LicenseStore } from "../../db/licenses.ts";
import type { Sql } from "../../db/sql.ts";
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

/** Keys and machines per flush transaction: each slice takes about a millisecond (on SQLite). */
const FLUSH_SLICE = 250;

export class CheckCounters {
  private readonly keys = new Map<number, PendingChecks>();
  /** The last check's time, by activation id. */
  private readonly machines = new Map<number, number>();
  private timer: ReturnType<typeof setInterval> | undefined;
  /** The timer's write while it runs (it never rejects): a flush waits for it. */
  private slicing: Promise<void> | null = null;

  constructor(
    private readonly sql: Sql,
    private readonly store: LicenseStore,
    private readonly stats: Stats,
  ) {
    stats.source(() => this.handOver());
  }

  /** Writes about once a second; a write that fails is reported to `onError`, and its counters are written with the next. */
  start(onError: (error: unknown) => void): void {
    this.timer = setInterval(() => {
      this.slicing ??= this.flushInSlices(onError).then(() => {
        this.slicing = null;
      });
    }, 1000);
    this.timer.unref?.();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
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

  /** Writes every batched counter now (on shutdown, and in tests), after the timer's write if one is running. */
  async flush(): Promise<void> {
    if (this.slicing) await this.slicing;
    while (await this.flushSlice()) {
      // each slice is its own transaction
    }
    // A write the timer began meanwhile has ended too when this returns.
    if (this.slicing) await this.slicing;
  }

  /**
   * The timer's flush: a slice per transaction, the next slice on a later turn of the event loop,
   * so that a second's worth of checks on many keys never holds up the checks being answered
   * meanwhile (on SQLite, other statements wait while a transaction is open).
   */
  private async flushInSlices(onError: (error: unknown) => void): Promise<void> {
    // What is pending now, and no more: under a steady stream of checks there is always something
    // new, and chasing it would write without pause (on several nodes, each queuing on the same
    // key's row). What is counted meanwhile waits for the next second's flush.
    let slices = Math.ceil(Math.max(this.keys.size, this.machines.size) / FLUSH_SLICE);
    try {
      while (slices-- > 0 && (await this.flushSlice())) await new Promise((resolve) => setImmediate(resolve));
    } catch (error) {
      onError(error);
    }
  }

  /** Writes one slice of the batched counters; true when more are left. A slice that fails is put back. */
  private async flushSlice(): Promise<boolean> {
    const keys = takeSome(this.keys, FLUSH_SLICE);
    const machines = takeSome(this.machines, FLUSH_SLICE);
    if (keys.length > 0 || machines.length > 0) {
      const keyRows = keys.map(([id, p]) => {
        this.handOverKey(id, p);
        return { id, checks: p.checks, at: p.at, address: p.address };
      });
      const machineRows = machines.map(([id, at]) => ({ id, at }));
      try {
        // Counters may be lost in a power cut (SPEC §10 lets them be batched): no fsync per slice.
        await this.sql.transaction(() => this.store.flushChecks(keyRows, machineRows), { durable: false });
      } catch (error) {
        this.putBack(keys, machines);
        throw error;
      }
    }
    return this.keys.size > 0 || this.machines.size > 0;
  }

  /** A slice that could not be written goes back, merged with what was counted since (already handed over to the roll-ups). */
  private putBack(keys: [number, PendingChecks][], machines: [number, number][]): void {
    for (const [id, taken] of keys) {
      const since = this.keys.get(id);
      if (since === undefined) this.keys.set(id, taken);
      else {
        since.checks += taken.checks;
        if (taken.at > since.at) Object.assign(since, { at: taken.at, address: taken.address, hwid: taken.hwid });
      }
    }
    for (const [id, at] of machines) {
      const since = this.machines.get(id);
      if (since === undefined || since < at) this.machines.set(id, at);
    }
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
