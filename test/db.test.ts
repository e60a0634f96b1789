/** Storage: pragmas, append-only migrations, and durability of acknowledged writes. */
import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { migrate } from "../src/db/migrate.ts";
import { openDatabase } from "../src/db/open.ts";
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

  test("refuses to create a database unless asked, with a remedy", () => {
    expect(() => openDatabase(join(fresh(), "missing"), { create: false })).toThrow(/start the server once/);
  });
});

describe("migrations", () => {
  test("are recorded once and not re-applied", () => {
    const dir = fresh();
    const db = openDatabase(dir, { create: true });
    expect(db.query("SELECT name FROM _migrations ORDER BY name").all()).toEqual([{ name: "0001_init" }, { name: "0002_licensing" }, { name: "0003_enrollment" }]);
    expect(migrate(db)).toEqual([]);
    db.close();
    const again = openDatabase(dir, { create: false });
    expect(again.query("SELECT count(*) AS n FROM _migrations").get()).toEqual({ n: 3 });
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
    const proc = spawnLatchkey(["server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], { env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD } });
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
