import type { Sql } from "./sql.ts";

/** One roll-up: a metric's value in one scope for one hour (ms since the epoch, the hour's start). */
export interface StatsRow {
  scope: string;
  metric: string;
  hour: number;
  value: number;
}

const ADD =
  "INSERT INTO stats_hourly (scope, metric, hour, value) VALUES (?, ?, ?, ?) " +
  "ON CONFLICT (scope, metric, hour) DO UPDATE SET value = stats_hourly.value + excluded.value";
const RAISE = {
  sqlite:
    "INSERT INTO stats_hourly (scope, metric, hour, value) VALUES (?, ?, ?, ?) " +
    "ON CONFLICT (scope, metric, hour) DO UPDATE SET value = max(stats_hourly.value, excluded.value)",
  postgres:
    "INSERT INTO stats_hourly (scope, metric, hour, value) VALUES (?, ?, ?, ?) " +
    "ON CONFLICT (scope, metric, hour) DO UPDATE SET value = GREATEST(stats_hourly.value, excluded.value)",
};
const PRUNE = `DELETE FROM stats_hourly WHERE (scope, metric, hour) IN
  (SELECT scope, metric, hour FROM stats_hourly WHERE hour < ? ORDER BY hour LIMIT ?)`;

/** Queries over `stats_hourly` (migration 0009). */
export class StatsStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Adds counts and raises peaks in one transaction, then deletes at most `prune.limit` rows older
   * than `prune.before`; returns how many it deleted. Roll-ups may be lost in a power cut, like
   * the check counters: the commit does not wait for the disk.
   */
  write(counts: readonly StatsRow[], peaks: readonly StatsRow[], prune?: { before: number; limit: number }): Promise<number> {
    return this.sql.transaction(
      async () => {
        for (const r of counts) await this.sql.run(ADD, [r.scope, r.metric, r.hour, r.value]);
        for (const r of peaks) await this.sql.run(RAISE[this.sql.dialect], [r.scope, r.metric, r.hour, r.value]);
        return prune ? this.sql.run(PRUNE, [prune.before, prune.limit]) : 0;
      },
      { durable: false },
    );
  }

  /**
   * The hours of one scope's metric from `from` (inclusive) to `to` (exclusive) that hold anything,
   * as [hour, value]: a range of the primary key. Summed into buckets by the caller, which takes
   * a third of the time of a GROUP BY (that sorts them in a temporary b-tree first).
   */
  async hours(scope: string, metric: string, from: number, to: number): Promise<[number, number][]> {
    const rows = await this.sql.all<{ hour: number; value: number }>(
      "SELECT hour, value FROM stats_hourly WHERE scope = ? AND metric = ? AND hour >= ? AND hour < ?",
      [scope, metric, from, to],
    );
    return rows.map((r) => [r.hour, r.value]);
  }
}
