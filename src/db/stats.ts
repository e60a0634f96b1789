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

/**
 * StatsStore.write on PostgreSQL, one statement: several nodes add to the same rows (the current
 * hour's overall counts), and a transaction of a statement per row would hold each row through its
 * node's round trips for the rest, while the other nodes' writes wait for it. The rows are taken in
 * key order, so that two nodes' writes never wait for each other in a cycle. Counts and peaks are
 * different metrics (no row twice in one statement); the prune leaves the rows written alone. Its
 * commit does not wait for the disk (set_config is local to the statement's own transaction). A
 * data-modifying WITH runs whether or not the query reads it.
 */
const WRITE_POSTGRES = `
  WITH rows AS (
    SELECT r ->> 'scope' AS scope, r ->> 'metric' AS metric, (r ->> 'hour')::bigint AS hour, (r ->> 'value')::bigint AS value, peak
    FROM (SELECT r, false AS peak FROM jsonb_array_elements(CAST(? AS text)::jsonb) r
          UNION ALL SELECT r, true FROM jsonb_array_elements(CAST(? AS text)::jsonb) r) given
  ), written AS (
    INSERT INTO stats_hourly AS s (scope, metric, hour, value)
    SELECT scope, metric, hour, value FROM rows ORDER BY scope, metric, hour
    ON CONFLICT (scope, metric, hour) DO UPDATE
      SET value = CASE WHEN excluded.metric IN (SELECT metric FROM rows WHERE peak) THEN GREATEST(s.value, excluded.value)
                       ELSE s.value + excluded.value END
    RETURNING 1
  ), pruned AS (
    DELETE FROM stats_hourly WHERE (scope, metric, hour) IN
      (SELECT scope, metric, hour FROM stats_hourly WHERE hour < ? ORDER BY hour LIMIT ?)
      AND (scope, metric, hour) NOT IN (SELECT scope, metric, hour FROM rows)
    RETURNING 1
  )
  SELECT set_config('synchronous_commit', 'off', true) AS local, (SELECT count(*) FROM pruned)::int AS pruned`;

/** Queries over `stats_hourly` (migration 0009). */
export class StatsStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Adds counts and raises peaks in one transaction, then deletes at most `prune.limit` rows older
   * than `prune.before`; returns how many it deleted. Roll-ups may be lost in a power cut, like
   * the check counters: the commit does not wait for the disk.
   */
  async write(counts: readonly StatsRow[], peaks: readonly StatsRow[], prune?: { before: number; limit: number }): Promise<number> {
    if (this.sql.dialect === "postgres") {
      const row = await this.sql.get<{ pruned: number }>(WRITE_POSTGRES, [
        JSON.stringify(counts),
        JSON.stringify(peaks),
        prune?.before ?? 0,
        prune?.limit ?? 0,
      ]);
      return row!.pruned;
    }
    return this.sql.transaction(
      async () => {
        // Pruned first: a late count of an hour past retention is written, and goes with the next write.
        const pruned = prune ? await this.sql.run(PRUNE, [prune.before, prune.limit]) : 0;
        for (const r of counts) await this.sql.run(ADD, [r.scope, r.metric, r.hour, r.value]);
        for (const r of peaks) await this.sql.run(RAISE[this.sql.dialect], [r.scope, r.metric, r.hour, r.value]);
        return pruned;
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
