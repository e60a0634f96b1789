/**
 * Writes the committed schema descriptions, src/db/schema/sqlite.txt and postgres.txt, from a fresh
 * in-memory SQLite database and a throwaway PostgreSQL cluster, each with every migration applied.
 * Run after adding a migration (to both backends) and review the diff:
 *
 *   npx bun scripts/schema.ts
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { migrate } from "../src/db/migrate.ts";
import { migratePostgres } from "../src/db/postgres/migrate.ts";
import { describePostgres, describeSqlite } from "../src/db/schema.ts";
import { startPostgres } from "../test/postgres.ts";

const dir = join(import.meta.dir, "..", "src", "db", "schema");

const db = new Database(":memory:");
migrate(db);
const sqlite = describeSqlite(db);
db.close();

const cluster = await startPostgres();
let postgres: string;
try {
  const sql = new Bun.SQL(cluster.url, { bigint: true, max: 1 });
  try {
    await migratePostgres(sql);
    postgres = await describePostgres(sql);
  } finally {
    await sql.close();
  }
} finally {
  await cluster.stop();
}

await Bun.write(join(dir, "sqlite.txt"), sqlite);
await Bun.write(join(dir, "postgres.txt"), postgres);
console.log(`wrote ${join(dir, "sqlite.txt")} and ${join(dir, "postgres.txt")}`);
