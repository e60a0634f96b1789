import type { Database } from "bun:sqlite";
import { migrations, type Migration } from "./migrations/index.ts";

/**
 * Applies the embedded migrations that the database has not seen yet, each in its own
 * immediate transaction, and records them in `_migrations`. Safe to run from several
 * processes at once: the table is re-read inside the transaction.
 */
export function migrate(db: Database, list: readonly Migration[] = migrations): string[] {
  db.run(`CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`);
  const applied: string[] = [];
  for (const migration of list) {
    db.transaction(() => {
      const done = db.query("SELECT 1 FROM _migrations WHERE name = ?").get(migration.name);
      if (done) return;
      db.run(migration.sql);
      db.query("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)").run(migration.name, Date.now());
      applied.push(migration.name);
    }).immediate();
  }
  return applied;
}
