import type { Sql } from "./sql.ts";

/** Queries over `throttle_buckets` (migration 0011). */
export class ThrottleStore {
  constructor(private readonly sql: Sql) {}

  /**
   * A bucket's state (null when empty), held until the caller's transaction ends: an empty row is
   * made first when there is none, so that PostgreSQL has a row to lock (SQLite's write lock
   * holds everything already).
   */
  async hold(limiter: string, key: string, now: number): Promise<string | null> {
    await this.sql.run("INSERT INTO throttle_buckets (limiter, key, state, expires_at) VALUES (?, ?, NULL, ?) ON CONFLICT DO NOTHING", [
      limiter,
      key,
      now + 60_000,
    ]);
    const lock = this.sql.dialect === "postgres" ? " FOR UPDATE" : "";
    const row = await this.sql.get<{ state: string | null; expires_at: number }>(
      `SELECT state, expires_at FROM throttle_buckets WHERE limiter = ? AND key = ?${lock}`,
      [limiter, key],
    );
    return row === null || row.expires_at <= now ? null : row.state;
  }

  /** A bucket's state as it is now (null when empty), without holding it. */
  async peek(limiter: string, key: string, now: number): Promise<string | null> {
    const row = await this.sql.get<{ state: string | null; expires_at: number }>(
      "SELECT state, expires_at FROM throttle_buckets WHERE limiter = ? AND key = ?",
      [limiter, key],
    );
    return row === null || row.expires_at <= now ? null : row.state;
  }

  async save(limiter: string, key: string, bucket: { state: string; expiresAt: number } | null, now: number): Promise<void> {
    if (bucket === null) {
      await this.sql.run("UPDATE throttle_buckets SET state = NULL, expires_at = ? WHERE limiter = ? AND key = ?", [
        now + 60_000,
        limiter,
        key,
      ]);
    } else {
      await this.sql.run("UPDATE throttle_buckets SET state = ?, expires_at = ? WHERE limiter = ? AND key = ?", [
        bucket.state,
        bucket.expiresAt,
        limiter,
        key,
      ]);
    }
  }

  /** Forgets buckets past their time; returns how many. */
  sweep(now: number): Promise<number> {
    return this.sql.run("DELETE FROM throttle_buckets WHERE expires_at <= ?", [now]);
  }
}
