/**
 * What the charts show: hourly roll-ups of what happens (checks, activations, registrations,
 * refused sign-ins, host reports) and of who is online, kept as it happens, so that a chart never
 * reads the audit log or the check counters however large they grow.
 *
 * Counting is a few map operations in memory (`count`); checks, the hot path, do not even do that:
 * the check counters (licensing/counters.ts) hand each key's checks over as they write their own
 * batch, about once a second, and before every read. About once a second what was counted is
 * written (`stats_hourly`, in slices of a few hundred rows; each key's checks once a minute), and
 * all of it before every read, so that a chart shows everything answered before it was asked
 * for. Gauges (clients online) are sampled every ten seconds and before every read; each hour
 * keeps its peak.
 */
import type { StatsRow, StatsStore } from "../db/stats.ts";
import type { Clock } from "./clock.ts";
import { isoTime } from "./fields.ts";
import type { Principal } from "./sessions.ts";

export const HOUR_MS = 3_600_000;

/** Events counted per hour. */
export type CountMetric =
  | "checks_ok"
  | "checks_failed"
  | "activations_ok"
  | "activations_failed"
  | "registrations_ok"
  | "registrations_refused"
  | "logins_failed"
  | "logins_throttled"
  | "host_reports";
/** Gauges: each hour keeps the largest value sampled in it. */
export type PeakMetric = "clients_online";
export type Metric = CountMetric | PeakMetric;

/** Checks and activations: every signed-in user reads license keys, so everyone sees these whole. */
export const LICENSING_METRICS = ["checks_ok", "checks_failed", "activations_ok", "activations_failed"] as const;
export type LicensingMetric = (typeof LICENSING_METRICS)[number];
/** Clients and hosts: viewers see those of their groups, as they see the clients and hosts themselves. */
const GROUPED_METRICS = ["registrations_ok", "registrations_refused", "clients_online", "host_reports"] as const;
/** Refused sign-ins: admins only, like the audit log that records them. */
const ADMIN_METRICS = ["logins_failed", "logins_throttled"] as const;
const PEAKS: ReadonlySet<string> = new Set<PeakMetric>(["clients_online"]);

export const STATS_RANGES = ["24h", "7d", "30d"] as const;
export type StatsRange = (typeof STATS_RANGES)[number];
/** Hourly buckets for a day and a week; six-hour buckets (from 00:00, 06:00, 12:00, 18:00 UTC) for 30 days. */
const RANGES: Record<StatsRange, { buckets: number; hours: number }> = {
  "24h": { buckets: 24, hours: 1 },
  "7d": { buckets: 168, hours: 1 },
  "30d": { buckets: 120, hours: 6 },
};

/** The roll-ups of one license key, application or client group, besides those of everything (''). */
export const licenseScope = (id: number): string => `license:${id}`;
export const appScope = (id: number): string => `app:${id}`;
export const groupScope = (name: string): string => `group:${name}`;

export function hourOf(at: number): number {
  return at - (at % HOUR_MS);
}

/** A chart's data: per series, one value per bucket, zero where nothing happened. */
export interface StatsView<M extends Metric = Metric> {
  range: StatsRange;
  bucket_seconds: number;
  /** The start of the first bucket and the end of the last (ISO 8601); the last holds the current hour. */
  from: string;
  to: string;
  /** Each bucket's start, in seconds since the epoch. */
  timestamps: number[];
  /** null: a series the caller may not see. */
  series: Record<M, number[] | null>;
}

/** A gauge's value now: overall, and per client group. */
export interface GaugeSample {
  total: number;
  groups: ReadonlyMap<string, number>;
}

/** Rows deleted by retention per write, so that catching up after a long stop never holds one up. */
const PRUNE_LIMIT = 10_000;
/** Rows per transaction of the timer's write: each slice takes about half a millisecond. */
const WRITE_SLICE = 250;
const NO_SCOPES: readonly string[] = [];

export class Stats {
  /** Counts not yet written: by hour, then by `metric` (everything) or `metric\nscope`. */
  private counts = new Map<number, Map<string, number>>();
  private lastHour = Number.NaN;
  private lastCounts: Map<string, number> | null = null;
  /**
   * Each key's passed checks not yet written: by hour, then key id. Thousands of keys may be
   * checked every second, so their rows are written once a minute (and before every read), not
   * every second: a crash may lose a minute of them (never of the overall or an application's).
   */
  private keyChecks = new Map<number, Map<number, number>>();
  /** The timer's next writes include the keys' checks. */
  private keyChecksDue = false;
  /** Peaks not yet written, by `hour\nmetric\nscope`. */
  private peaks = new Map<string, StatsRow>();
  /** Peaks written for `peakHour`, by `metric\nscope`: a sample no higher is not written again. */
  private readonly writtenPeaks = new Map<string, number>();
  private peakHour = Number.NaN;
  private readonly sources: (() => void)[] = [];
  private readonly gauges: { metric: PeakMetric; sample: () => GaugeSample }[] = [];
  private readonly retentionMs: number;
  private prunedHour = Number.NaN;
  private pruneMore = false;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** The timer's write, while it runs (a slice at a time). */
  private slicing: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly store: StatsStore,
    private readonly clock: Clock,
    options: { retentionDays?: number } = {},
  ) {
    this.retentionMs = (options.retentionDays ?? 400) * 24 * HOUR_MS;
  }

  /** Writes about once a second (sampling the gauges every ten); a failed write is retried with the next. */
  start(onError: (error: unknown) => void): void {
    let ticks = 0;
    this.timer = setInterval(() => {
      ticks++;
      if (ticks % 10 === 0) this.sample();
      if (ticks % 60 === 0) this.keyChecksDue = true;
      this.slicing ??= this.writeInSlices(onError).then(() => {
        this.slicing = null;
      });
    }, 1000);
    this.timer.unref?.();
  }

  /** Stops the timer and writes what is left (after the check counters have handed theirs over). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }

  /** Counts `n` events of `metric` at `at`: overall, and in each of `scopes`. */
  count(metric: CountMetric, n = 1, scopes: readonly string[] = NO_SCOPES, at = this.clock()): void {
    const hour = hourOf(at);
    let counts = this.lastCounts;
    if (hour !== this.lastHour || counts === null) {
      counts = this.countsOf(hour);
      this.lastHour = hour;
      this.lastCounts = counts;
    }
    counts.set(metric, (counts.get(metric) ?? 0) + n);
    for (const scope of scopes) {
      const key = `${metric}\n${scope}`;
      counts.set(key, (counts.get(key) ?? 0) + n);
    }
  }

  /**
   * Counts `n` passed checks of license key `licenseId` at `at` on the key's own chart (the caller
   * counts them overall and for the application with `count`): the check counters' hand-over.
   */
  countKeyChecks(licenseId: number, n: number, at: number): void {
    const hour = hourOf(at);
    let byKey = this.keyChecks.get(hour);
    if (!byKey) this.keyChecks.set(hour, (byKey = new Map()));
    byKey.set(licenseId, (byKey.get(licenseId) ?? 0) + n);
  }

  /** A license key is being deleted, and its roll-ups with it (migration 0009): so are its counts not written yet. */
  forgetLicense(id: number): void {
    const scope = licenseScope(id);
    for (const byKey of this.counts.values()) for (const metric of LICENSING_METRICS) byKey.delete(`${metric}\n${scope}`);
    for (const byKey of this.keyChecks.values()) byKey.delete(id);
  }

  /** A gauge, sampled every ten seconds and before every read: each hour keeps its peak, overall and per group. */
  gauge(metric: PeakMetric, sample: () => GaugeSample): void {
    this.gauges.push({ metric, sample });
  }

  /** Something that keeps counts of its own (the check counters) hands them over (`count`) before each read. */
  source(handOver: () => void): void {
    this.sources.push(handOver);
  }

  /**
   * Writes everything counted so far in one transaction, with what the sources hold (which hand
   * theirs over on their own timer otherwise) and the gauges sampled now.
   */
  async flush(): Promise<void> {
    for (const handOver of this.sources) handOver();
    this.sample();
    this.keyChecksDue = true;
    await this.writeSome(Number.POSITIVE_INFINITY);
    // The rows a slice of the timer's write took out of memory are written when this returns.
    if (this.slicing) await this.slicing;
  }

  /** The dashboard's series over `range`, as far as `viewer` may see them (null where not at all). */
  overview(viewer: Principal, range: StatsRange): Promise<StatsView> {
    const admin = viewer.role === "admin";
    return this.view(range, [
      [LICENSING_METRICS, [""]],
      [GROUPED_METRICS, admin ? [""] : viewer.groups.map(groupScope)],
      [ADMIN_METRICS, admin ? [""] : null],
    ]);
  }

  /** Checks and activations over `range` of one license key or application (`scope`). */
  licensing(scope: string, range: StatsRange): Promise<StatsView<LicensingMetric>> {
    return this.view(range, [[LICENSING_METRICS, [scope]]]);
  }

  private async view<M extends Metric>(range: StatsRange, parts: [readonly M[], readonly string[] | null][]): Promise<StatsView<M>> {
    await this.flush();
    const { buckets, hours } = RANGES[range];
    const bucketMs = hours * HOUR_MS;
    const last = Math.floor(this.clock() / bucketMs) * bucketMs;
    const from = last - (buckets - 1) * bucketMs;
    const to = last + bucketMs;
    const series = {} as Record<M, number[] | null>;
    for (const [metrics, scopes] of parts) {
      for (const metric of metrics) {
        if (scopes === null) {
          series[metric] = null;
          continue;
        }
        const sums = new Array<number>(buckets).fill(0);
        const peak = PEAKS.has(metric);
        for (const scope of scopes) {
          // A gauge's bucket holds its peak hour; several scopes (a viewer's groups) add up their peaks.
          const values = peak ? new Array<number>(buckets).fill(0) : sums;
          for (const [hour, value] of await this.store.hours(scope, metric, from, to)) {
            const i = Math.floor((hour - from) / bucketMs);
            values[i] = peak ? Math.max(values[i]!, value) : values[i]! + value;
          }
          if (peak) values.forEach((value, i) => (sums[i]! += value));
        }
        series[metric] = sums;
      }
    }
    return {
      range,
      bucket_seconds: bucketMs / 1000,
      from: isoTime(from),
      to: isoTime(to),
      timestamps: Array.from({ length: buckets }, (_, i) => (from + i * bucketMs) / 1000),
      series,
    };
  }

  private countsOf(hour: number): Map<string, number> {
    let counts = this.counts.get(hour);
    if (!counts) this.counts.set(hour, (counts = new Map()));
    return counts;
  }

  private sample(): void {
    const hour = hourOf(this.clock());
    if (hour !== this.peakHour) {
      this.writtenPeaks.clear();
      this.peakHour = hour;
    }
    for (const { metric, sample } of this.gauges) {
      const { total, groups } = sample();
      this.raise(metric, "", total, hour);
      for (const [group, value] of groups) this.raise(metric, groupScope(group), value, hour);
    }
  }

  private raise(metric: PeakMetric, scope: string, value: number, hour: number): void {
    if (value <= (this.writtenPeaks.get(`${metric}\n${scope}`) ?? 0)) return;
    const key = `${hour}\n${metric}\n${scope}`;
    const pending = this.peaks.get(key);
    if (!pending) this.peaks.set(key, { scope, metric, hour, value });
    else if (value > pending.value) pending.value = value;
  }

  /** How many rows a write of everything would take now. */
  private heldRows(): number {
    let rows = this.peaks.size;
    for (const byKey of this.counts.values()) rows += byKey.size;
    if (this.keyChecksDue) for (const byKey of this.keyChecks.values()) rows += byKey.size;
    return rows;
  }

  /** Takes up to `limit` counts out of memory, as rows to write. */
  private takeCounts(limit: number): StatsRow[] {
    const rows: StatsRow[] = [];
    for (const [hour, byKey] of this.counts) {
      for (const [key, value] of byKey) {
        if (rows.length >= limit) return rows;
        byKey.delete(key);
        const cut = key.indexOf("\n");
        rows.push(
          cut === -1 ? { scope: "", metric: key, hour, value } : { scope: key.slice(cut + 1), metric: key.slice(0, cut), hour, value },
        );
      }
      this.counts.delete(hour);
      if (this.lastCounts === byKey) this.lastCounts = null;
    }
    if (!this.keyChecksDue) return rows;
    for (const [hour, byKey] of this.keyChecks) {
      for (const [id, value] of byKey) {
        if (rows.length >= limit) return rows;
        byKey.delete(id);
        rows.push({ scope: licenseScope(id), metric: "checks_ok", hour, value });
      }
      this.keyChecks.delete(hour);
    }
    this.keyChecksDue = false;
    return rows;
  }

  /** Takes up to `limit` peaks out of memory. */
  private takePeaks(limit: number): StatsRow[] {
    const rows: StatsRow[] = [];
    for (const [key, row] of this.peaks) {
      if (rows.length >= limit) break;
      this.peaks.delete(key);
      rows.push(row);
    }
    return rows;
  }

  /**
   * Writes up to `limit` rows in one transaction, with the hour's retention when it is due;
   * true when rows are left. A write that fails puts its rows back.
   */
  private async writeSome(limit: number): Promise<boolean> {
    const hour = hourOf(this.clock());
    const prune = this.pruneMore || hour !== this.prunedHour;
    const counts = this.takeCounts(limit);
    const peaks = this.takePeaks(limit - counts.length);
    if (counts.length === 0 && peaks.length === 0 && !prune) return false;
    let pruned: number;
    try {
      pruned = await this.store.write(counts, peaks, prune ? { before: hour - this.retentionMs, limit: PRUNE_LIMIT } : undefined);
    } catch (error) {
      for (const row of counts) {
        const into = this.countsOf(row.hour);
        const key = row.scope === "" ? row.metric : `${row.metric}\n${row.scope}`;
        into.set(key, (into.get(key) ?? 0) + row.value);
      }
      for (const row of peaks) this.raise(row.metric as PeakMetric, row.scope, row.value, row.hour);
      throw error;
    }
    for (const row of peaks) if (row.hour === this.peakHour) this.writtenPeaks.set(`${row.metric}\n${row.scope}`, row.value);
    if (prune) {
      this.prunedHour = hour;
      this.pruneMore = pruned === PRUNE_LIMIT;
    }
    return this.counts.size > 0 || this.peaks.size > 0 || (this.keyChecksDue && this.keyChecks.size > 0);
  }

  /**
   * The timer's write: a slice per transaction, the next on a later turn of the event loop, so
   * that a second's worth of checks on thousands of keys never holds up the requests meanwhile
   * (as the check counters do, counters.ts).
   */
  private async writeInSlices(onError: (error: unknown) => void): Promise<void> {
    // The rows held now, and no more: under a steady stream of events there is always something new
    // to write, and what comes meanwhile waits for the next second's write.
    let slices = Math.ceil(this.heldRows() / WRITE_SLICE);
    try {
      while (!this.stopped && (await this.writeSome(WRITE_SLICE)) && --slices > 0) await new Promise((resolve) => setImmediate(resolve));
    } catch (error) {
      onError(error);
    }
  }
}
