import type { Migration } from "../migrations/index.ts";
import { postgresMigrations } from "./migrations/index.ts";

/** The key of the transaction-level advisory lock that serialises migrations across nodes. */
const MIGRATION_LOCK = 0x6c61_7463; // "latc"

/**
 * Applies the embedded PostgreSQL migrations that the database has not seen yet, each in its own
 * transaction, and records them in `_migrations`. Safe to run from several nodes at once: each
 * transaction takes an advisory lock and re-reads `_migrations` under it.
 */
export async function migratePostgres(sql: Bun.SQL, list: readonly Migration[] = postgresMigrations): Promise<string[]> {
  // Under the lock too: concurrent CREATE TABLE IF NOT EXISTS can collide in pg_type.
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK}::bigint)`;
    await tx`CREATE TABLE IF NOT EXISTS _migrations (name text PRIMARY KEY, applied_at bigint NOT NULL)`;
  });
  const applied: string[] = [];
  for (const migration of list) {
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK}::bigint)`;
      const done = await tx`SELECT 1 FROM _migrations WHERE name = ${migration.name}`;
      if (done.length > 0) return;
      // Without parameters, unsafe() sends a simple query: every statement of the text runs.
      await tx.unsafe(migration.sql);
      await tx`INSERT INTO _migrations (name, applied_at) VALUES (${migration.name}, ${Date.now()})`;
      applied.push(migration.name);
    });
  }
  return applied;
}
