/**
 * The schema both backends build from their migrations, against the committed descriptions in
 * src/db/schema/ (written by scripts/schema.ts); the two backends against each other; and
 * migratePostgres from several nodes starting at once.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrate } from "../src/db/migrate.ts";
import { migrations } from "../src/db/migrations/index.ts";
import { migratePostgres } from "../src/db/postgres/migrate.ts";
import { postgresMigrations } from "../src/db/postgres/migrations/index.ts";
import { describePostgres, describeSqlite } from "../src/db/schema.ts";
import { startPostgres, type PostgresCluster } from "./postgres.ts";

setDefaultTimeout(60_000);

const SCHEMA_DIR = join(import.meta.dir, "..", "src", "db", "schema");
const REGENERATE = "schema changed: run `npx bun scripts/schema.ts` and review the diff of src/db/schema/";

let cluster: PostgresCluster;
let admin: Bun.SQL;
let dir: string;
let sqliteDb: Database;
let pg: Bun.SQL;
let sqliteApplied: string[];
let postgresApplied: string[];

/** A new, empty database on the cluster, and a client of it. */
async function freshPostgres(name: string, options: { max?: number } = {}): Promise<Bun.SQL> {
  await admin.unsafe(`CREATE DATABASE ${name}`);
  return new Bun.SQL(cluster.url.replace(/\/postgres$/, `/${name}`), { bigint: true, ...options });
}

/** Table name → column names in order, read from a description. */
function columnsByTable(description: string): Map<string, string[]> {
  const tables = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of description.split("\n")) {
    const table = line.match(/^table (\S+)/);
    if (table) tables.set(table[1]!, (current = []));
    const column = line.match(/^ {2}column (\S+):/);
    if (column) current.push(column[1]!);
  }
  return tables;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "latchkey-schema-"));
  sqliteDb = new Database(join(dir, "latchkey.db"));
  sqliteApplied = migrate(sqliteDb);
  cluster = await startPostgres();
  admin = new Bun.SQL(cluster.url, { bigint: true, max: 1 });
  pg = await freshPostgres("schema_main");
  postgresApplied = await migratePostgres(pg);
});

afterAll(async () => {
  sqliteDb?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  await pg?.close();
  await admin?.close();
  await cluster?.stop();
});

describe("committed schema descriptions", () => {
  test("SQLite: a freshly migrated database matches src/db/schema/sqlite.txt", () => {
    const committed = readFileSync(join(SCHEMA_DIR, "sqlite.txt"), "utf8");
    expect(describeSqlite(sqliteDb), REGENERATE).toBe(committed);
  });

  test("PostgreSQL: a freshly migrated database matches src/db/schema/postgres.txt", async () => {
    const committed = readFileSync(join(SCHEMA_DIR, "postgres.txt"), "utf8");
    expect(await describePostgres(pg), REGENERATE).toBe(committed);
  });
});

describe("both backends", () => {
  test("the same migrations, by name and order", () => {
    expect(
      postgresMigrations.map((m) => m.name),
      "src/db/postgres/migrations/index.ts must list the same migrations as src/db/migrations/index.ts: add the missing translation",
    ).toEqual(migrations.map((m) => m.name));
  });

  test("the same tables, and in each the same columns in the same order", async () => {
    const sqlite = columnsByTable(describeSqlite(sqliteDb));
    const postgres = columnsByTable(await describePostgres(pg));
    const missing = "a migration changed one backend's tables but not the other's: translate it for the other backend";
    expect([...postgres.keys()].sort(), missing).toEqual([...sqlite.keys()].sort());
    for (const [table, columns] of sqlite) {
      expect(postgres.get(table), `table ${table}: columns differ between backends; ${missing}`).toEqual(columns);
    }
  });

  test("_migrations records the same names on both backends", async () => {
    const sqlite = sqliteDb
      .query<{ name: string }, []>("SELECT name FROM _migrations ORDER BY name")
      .all()
      .map((r) => r.name);
    const postgres = (await pg`SELECT name FROM _migrations ORDER BY name`).map((r: { name: string }) => r.name);
    expect(sqlite).toEqual(migrations.map((m) => m.name));
    expect(postgres, "PostgreSQL recorded other migrations than SQLite").toEqual(sqlite);
    expect(postgresApplied).toEqual(sqliteApplied);
  });

  test("the translated triggers do what SQLite's do", async () => {
    const now = 1_700_000_000_000;
    sqliteDb.run("PRAGMA foreign_keys = ON");
    const script = [
      `INSERT INTO users (username, role, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key,
         created_at, password_changed_at) VALUES ('ann', 'admin', 'h', 's', 4096, 'k', 'k', ${now}, ${now})`,
      `INSERT INTO ca_roots (certificate_pem, key_pem, fingerprint, source, created_at, created_by)
         VALUES ('pem', 'key', 'f', 'generated', ${now}, 'test')`,
      `INSERT INTO certificates (serial, ca_id, fingerprint, kind, common_name, der, not_before, not_after, created_at, created_by)
         VALUES ('01', (SELECT id FROM ca_roots), 'f1', 'user', 'ann', x'00', ${now}, ${now}, ${now}, 'test')`,
      `INSERT INTO user_certificates (user_id, pub_key, key_spki, key_id, key_md5, key_type, ca_serial, registered_at, registered_by)
         VALUES ((SELECT id FROM users), 'p', x'00', 'k1', 'm', 'ed25519', '01', ${now}, 'test')`,
      `UPDATE certificates SET status = 'revoked', revoked_at = ${now + 1}, revocation_reason = 'keyCompromise' WHERE serial = '01'`,
      `INSERT INTO applications (name, created_at) VALUES ('App', ${now})`,
      `INSERT INTO licenses (app_id, token, token_hash, activations_allowed, created_at)
         VALUES ((SELECT id FROM applications), 't', 'th', 1, ${now})`,
      `INSERT INTO stats_hourly (scope, metric, hour, value) SELECT 'license:' || id, 'checks', 0, 1 FROM licenses
         UNION ALL SELECT 'app:' || id, 'checks', 0, 1 FROM applications UNION ALL SELECT '', 'checks', 0, 1`,
      `DELETE FROM licenses`,
      `DELETE FROM applications`,
    ];
    // x'00' is a blob literal on SQLite; PostgreSQL reads it as a bit string.
    const pgScript = script.map((s) => s.replace(/x'00'/g, "'\\x00'::bytea"));
    await pg.begin(async (tx) => {
      for (const statement of pgScript) await tx.unsafe(statement);
    });
    sqliteDb.transaction(() => script.forEach((s) => sqliteDb.run(s)))();
    const read = "SELECT revoked_at, revoked_by FROM user_certificates";
    const stats = "SELECT scope FROM stats_hourly ORDER BY scope";
    expect(sqliteDb.query(read).all()).toEqual([{ revoked_at: now + 1, revoked_by: "ca: keyCompromise" }]);
    expect([...(await pg.unsafe(read))]).toEqual([{ revoked_at: BigInt(now + 1), revoked_by: "ca: keyCompromise" }]);
    expect(sqliteDb.query(stats).all()).toEqual([{ scope: "" }]);
    expect([...(await pg.unsafe(stats))]).toEqual([{ scope: "" }]);
  });

  test("names differing only in case are refused on both, like SQLite's COLLATE NOCASE", async () => {
    const insert = "INSERT INTO applications (name, created_at) VALUES ('Twin', 1), ('tWIN', 2)";
    expect(() => sqliteDb.run(insert)).toThrow(/UNIQUE/);
    await expect(pg.unsafe(insert)).rejects.toThrow(/applications_by_name/);
  });
});

describe("migratePostgres", () => {
  test("five nodes starting at once apply each migration exactly once; a second run applies none", async () => {
    const setup = await freshPostgres("schema_race");
    await setup.close();
    const url = cluster.url.replace(/\/postgres$/, "/schema_race");
    const nodes = Array.from({ length: 5 }, () => new Bun.SQL(url, { bigint: true, max: 1 }));
    try {
      const results = await Promise.all(nodes.map((node) => migratePostgres(node)));
      const all = results.flat();
      expect(all.toSorted(), "each migration must be applied by exactly one node").toEqual(postgresMigrations.map((m) => m.name));
      const again = await Promise.all(nodes.map((node) => migratePostgres(node)));
      expect(again.flat()).toEqual([]);
      const [row] = await nodes[0]!`SELECT count(*)::int AS n, count(DISTINCT name)::int AS names FROM _migrations`;
      expect(row).toEqual({ n: postgresMigrations.length, names: postgresMigrations.length });
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
    }
  });
});
