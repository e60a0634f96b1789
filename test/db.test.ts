/** Storage: pragmas, append-only migrations, and durability of acknowledged writes. */
import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { migrate } from "../src/db/migrate.ts";
import { migrations } from "../src/db/migrations/index.ts";
import { openDatabase } from "../src/db/open.ts";
import { SqliteSql } from "../src/db/sql.ts";
import { call, login, spawnLatchkey, tempDir, waitForListening, ADMIN_PASSWORD } from "./support.ts";

const dirs: { remove(): void }[] = [];
afterEach(() => dirs.splice(0).forEach((d) => d.remove()));
const fresh = () => {
  const d = tempDir();
  dirs.push(d);
  return d.path;
};

describe("openDatabase", () => {
  test("sets WAL, FULL sync, a long busy timeout and foreign keys", () => {
    const db = openDatabase(fresh(), { create: true });
    expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(db.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
    expect((db.query("PRAGMA busy_timeout").get() as { timeout: number }).timeout).toBeGreaterThanOrEqual(5000);
    expect(db.query("PRAGMA foreign_keys").get()).toEqual({ foreign_keys: 1 });
    db.close();
  });

  test("an undurable transaction commits without FULL sync for that transaction only, and restores it when the work throws", async () => {
    const db = openDatabase(fresh(), { create: true });
    const sql = new SqliteSql(db);
    db.run("CREATE TABLE t (n INTEGER)");
    const inside = await sql.transaction(
      async () => {
        await sql.run("INSERT INTO t VALUES (1)");
        return (await sql.get<{ synchronous: number }>("PRAGMA synchronous"))!.synchronous;
      },
      { durable: false },
    );
    expect(inside).toBe(1);
    expect(db.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
    const failing = sql.transaction(
      async () => {
        await sql.run("INSERT INTO t VALUES (2)");
        throw new Error("boom");
      },
      { durable: false },
    );
    await expect(failing).rejects.toThrow("boom");
    expect(db.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
    // The failed transaction rolled back; the first one committed.
    expect(db.query("SELECT n FROM t").all()).toEqual([{ n: 1 }]);
    db.close();
  });

  test("refuses to create a database unless asked, with a remedy", () => {
    expect(() => openDatabase(join(fresh(), "missing"), { create: false })).toThrow(/start the server once/);
  });
});

describe("migrations", () => {
  test("0004 moves check counters out of the licenses table, keeping them, and cascades deletes", () => {
    const db = new Database(join(fresh(), "latchkey.db"));
    db.run("PRAGMA foreign_keys = ON");
    migrate(
      db,
      migrations.filter((m) => m.name < "0004"),
    );
    db.run("INSERT INTO applications (name, created_at) VALUES ('App', 0)");
    const insert = db.query(
      "INSERT INTO licenses (app_id, token, token_hash, activations_allowed, created_at, " +
        "total_checks, last_check_at, last_check_address) " +
        "VALUES (1, ?, ?, 1, 0, ?, ?, ?)",
    );
    insert.run("CHECKED", "h1", 7, 1_700_000_000_000, "10.0.0.7");
    insert.run("NEVER", "h2", 0, null, null);
    expect(
      migrate(
        db,
        migrations.filter((m) => m.name < "0005"),
      ),
    ).toEqual(["0004_check_counters"]);
    expect(db.query("SELECT license_id, total, last_at, last_address FROM license_checks").all()).toEqual([
      { license_id: 1, total: 7, last_at: 1_700_000_000_000, last_address: "10.0.0.7" },
    ]);
    const columns = db
      .query<{ name: string }, []>("SELECT name FROM pragma_table_info('licenses')")
      .all()
      .map((c) => c.name);
    expect(columns).not.toContain("total_checks");
    expect(columns).not.toContain("last_check_at");
    expect(columns).toContain("last_activation_at");
    db.run("DELETE FROM licenses WHERE id = 1");
    expect(db.query("SELECT count(*) AS n FROM license_checks").get()).toEqual({ n: 0 });
    db.close();
  });

  test("0005 gives existing accounts a credential version of 0, which password changes bump", () => {
    const db = new Database(join(fresh(), "latchkey.db"));
    migrate(
      db,
      migrations.filter((m) => m.name < "0005"),
    );
    db.run(
      "INSERT INTO users (username, role, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, " +
        "created_at, password_changed_at) VALUES ('old', 'admin', 'h', 's', 4096, 'k', 'k', 0, 0)",
    );
    expect(
      migrate(
        db,
        migrations.filter((m) => m.name < "0006"),
      ),
    ).toEqual(["0005_credential_version"]);
    expect(db.query("SELECT credential_version FROM users WHERE username = 'old'").get()).toEqual({ credential_version: 0 });
    db.close();
  });

  test("are recorded once and not re-applied", () => {
    const dir = fresh();
    const db = openDatabase(dir, { create: true });
    expect(db.query("SELECT name FROM _migrations ORDER BY name").all()).toEqual(migrations.map((m) => ({ name: m.name })));
    expect(migrations.map((m) => m.name)).toEqual([
      "0001_init",
      "0002_licensing",
      "0003_enrollment",
      "0004_check_counters",
      "0005_credential_version",
      "0006_ca",
      "0007_client_certificates",
      "0008_user_certificates",
      "0009_stats",
      "0010_nodes",
      "0011_throttles",
      "0012_hot_paths",
      "0013_sign_in_exchanges",
      "0014_registration",
    ]);
    expect(migrate(db)).toEqual([]);
    db.close();
    const again = openDatabase(dir, { create: false });
    expect(again.query("SELECT count(*) AS n FROM _migrations").get()).toEqual({ n: migrations.length });
    again.close();
  });

  test("a new migration applies after the shipped ones, in its own transaction", () => {
    const db = openDatabase(fresh(), { create: true });
    const applied = migrate(db, [
      { name: "0001_init", sql: "this would fail if it ran again" },
      { name: "0002_test", sql: "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);" },
    ]);
    expect(applied).toEqual(["0002_test"]);
    expect(db.query("SELECT x FROM t").all()).toEqual([{ x: 1 }]);
    db.close();
  });

  test("a failing migration leaves nothing behind", () => {
    const db = openDatabase(fresh(), { create: true });
    expect(() => migrate(db, [{ name: "0002_bad", sql: "CREATE TABLE u (x INTEGER); INSERT INTO nope VALUES (1);" }])).toThrow();
    expect(db.query("SELECT name FROM sqlite_master WHERE name = 'u'").get()).toBeNull();
    expect(db.query("SELECT name FROM _migrations WHERE name = '0002_bad'").get()).toBeNull();
    db.close();
  });
});

describe("durability", () => {
  test("an acknowledged write survives kill -9 of the server", async () => {
    const dataDir = fresh();
    const proc = spawnLatchkey(["server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
      env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD },
    });
    try {
      const { url } = await waitForListening(proc);
      const token = await login(url);
      const names = Array.from({ length: 5 }, (_, i) => `durable-${i}`);
      for (const username of names) {
        const res = await call(url, "POST", "/api/users", { token, body: { username, password: "durable password" } });
        expect(res.status).toBe(201);
      }
      proc.kill("SIGKILL");
      await proc.exited;
      const db = new Database(join(dataDir, "latchkey.db"));
      const rows = db.query("SELECT username FROM users WHERE username LIKE 'durable-%' ORDER BY username").all() as { username: string }[];
      expect(rows.map((r) => r.username)).toEqual(names);
      expect(db.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" });
      db.close();
    } finally {
      proc.kill("SIGKILL");
    }
  });
});
