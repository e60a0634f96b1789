import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { migrate } from "./migrate.ts";

export const DATABASE_FILE = "latchkey.db";

/**
 * Opens (creating if asked) the data directory's database with the pragmas every connection
 * needs: WAL so the CLI and the server can share the file, FULL sync so that an acknowledged
 * write survives a crash, and a busy timeout long enough for a writer in the other process.
 */
export function openDatabase(dataDir: string, options: { create: boolean }): Database {
  const path = join(dataDir, DATABASE_FILE);
  if (!options.create && !existsSync(path)) {
    throw new Error(
      `no latchkey database in ${dataDir}; start the server once (latchkey server --data-dir ${dataDir}) or pass the right --data-dir`,
    );
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const db = new Database(path, { create: true, strict: true });
  chmodSync(path, 0o600);
  db.run("PRAGMA busy_timeout = 10000");
  db.run("PRAGMA journal_mode = WAL");
  db.run("PRAGMA synchronous = FULL");
  db.run("PRAGMA foreign_keys = ON");
  migrate(db);
  return db;
}
