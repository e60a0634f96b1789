/**
 * The storage executor (src/db/sql.ts) on both backends: a real SQLite file and a throwaway
 * PostgreSQL cluster. Statements, placeholders, transactions that commit, roll back and join,
 * isolation from statements outside the transaction, one winner of racing conditional updates,
 * and a clear error when PostgreSQL is gone.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { DatabaseUnavailable, PostgresSql, SharedFlush, SqliteSql, toPostgresPlaceholders, type Sql } from "../src/db/sql.ts";
import { startPostgres, type PostgresCluster } from "./postgres.ts";
import { tempDir } from "./support.ts";

setDefaultTimeout(60_000);

let cluster: PostgresCluster;
const backends: { name: string; sql: Sql; close: () => Promise<void> }[] = [];

beforeAll(async () => {
  const dir = tempDir("latchkey-sql-");
  const db = new Database(join(dir.path, "t.db"), { create: true, strict: true });
  db.run("PRAGMA journal_mode = WAL");
  backends.push({ name: "sqlite", sql: new SqliteSql(db), close: async () => (db.close(), dir.remove()) });
  cluster = await startPostgres();
  const pg = new Bun.SQL(cluster.url, { bigint: true, max: 8 });
  backends.push({ name: "postgres", sql: new PostgresSql(pg), close: () => pg.close() });
  for (const { sql } of backends) {
    await sql.run("CREATE TABLE t (id integer PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0, status text NOT NULL DEFAULT 'pending')");
  }
});

afterAll(async () => {
  for (const b of backends) await b.close();
  await cluster?.stop();
});

describe("placeholders for PostgreSQL", () => {
  test.each([
    ["SELECT ?", "SELECT $1"],
    ["SELECT ?, ?", "SELECT $1, $2"],
    ["SELECT ?1, ?2, ?1", "SELECT $1, $2, $1"],
    ["SELECT '?' || ?", "SELECT '?' || $1"],
    [`SELECT "a?b", ?`, `SELECT "a?b", $1`],
    ["SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"],
  ])("%p → %p", (from, to) => {
    expect(toPostgresPlaceholders(from)).toBe(to);
  });
});

for (const name of ["sqlite", "postgres"]) {
  describe(name, () => {
    const sql = () => backends.find((b) => b.name === name)!.sql;

    test("get, all and run with placeholders; big integers come back as numbers", async () => {
      await sql().run("DELETE FROM t");
      expect(await sql().run("INSERT INTO t (id, v, n) VALUES (?, ?, ?), (?, ?, ?)", [1, "a", 1764600000000, 2, "b", 5])).toBe(2);
      expect(await sql().get("SELECT id, v, n FROM t WHERE id = ?", [1])).toEqual({ id: 1, v: "a", n: 1764600000000 });
      expect(await sql().get("SELECT id FROM t WHERE id = ?", [99])).toBeNull();
      expect(await sql().all("SELECT id FROM t WHERE n >= ?1 AND id >= ?1 ORDER BY id", [1])).toEqual([{ id: 1 }, { id: 2 }]);
      expect(await sql().all<{ n: number }>("SELECT count(*) AS n FROM t")).toEqual([{ n: 2 }]);
      expect(await sql().run("UPDATE t SET v = ? WHERE id = ?", ["z", 42])).toBe(0);
    });

    test("a transaction commits what its callback wrote, however deep the calls", async () => {
      await sql().run("DELETE FROM t");
      const insert = async (id: number) => sql().run("INSERT INTO t (id, v) VALUES (?, ?)", [id, "x"]);
      const result = await sql().transaction(async () => {
        await insert(1);
        await Promise.all([insert(2), insert(3)]);
        return sql().get<{ n: number }>("SELECT count(*) AS n FROM t");
      });
      expect(result).toEqual({ n: 3 });
      expect(await sql().get("SELECT count(*) AS n FROM t")).toEqual({ n: 3 });
    });

    test("a throw rolls back everything, a nested transaction included, and the error comes out", async () => {
      await sql().run("DELETE FROM t");
      const failing = sql().transaction(async () => {
        await sql().run("INSERT INTO t (id) VALUES (1)");
        await sql().transaction(async () => sql().run("INSERT INTO t (id) VALUES (2)"));
        throw new Error("refused");
      });
      await expect(failing).rejects.toThrow("refused");
      expect(await sql().get("SELECT count(*) AS n FROM t")).toEqual({ n: 0 });
      // A failing statement rolls back the same way, and the connection stays usable.
      const duplicate = sql().transaction(async () => {
        await sql().run("INSERT INTO t (id) VALUES (7)");
        await sql().run("INSERT INTO t (id) VALUES (7)");
      });
      await expect(duplicate).rejects.toThrow();
      expect(await sql().get("SELECT count(*) AS n FROM t")).toEqual({ n: 0 });
    });

    test("statements outside a transaction do not see or join its writes before it commits", async () => {
      await sql().run("DELETE FROM t");
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const written = new Promise<void>((resolve) => (inserted = resolve));
      const tx = sql().transaction(async () => {
        await sql().run("INSERT INTO t (id) VALUES (1)");
        inserted();
        await gate;
        throw new Error("rolled back");
      });
      await written;
      // (On PostgreSQL these two run on different connections of the pool, in either order.)
      const outside = sql().get<{ n: number }>("SELECT count(*) AS n FROM t WHERE id = 1");
      const outsideWrite = sql().run("INSERT INTO t (id) VALUES (2)");
      release();
      await expect(tx).rejects.toThrow("rolled back");
      expect(await outside).toEqual({ n: 0 });
      expect(await outsideWrite).toBe(1);
      expect(await sql().all("SELECT id FROM t")).toEqual([{ id: 2 }]);
    });

    test("50 racing conditional transitions: exactly one winner, 10 rounds", async () => {
      for (let round = 0; round < 10; round++) {
        await sql().run("DELETE FROM t");
        await sql().run("INSERT INTO t (id, status) VALUES (1, 'pending')");
        const outcomes = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            sql().transaction(async () => {
              const won = (await sql().run("UPDATE t SET status = 'active', v = ? WHERE id = 1 AND status = 'pending'", [`c${i}`])) === 1;
              if (won) await sql().run("UPDATE t SET n = n + 1 WHERE id = 1");
              return won;
            }),
          ),
        );
        expect(outcomes.filter(Boolean).length).toBe(1);
        expect(await sql().get("SELECT n FROM t WHERE id = 1")).toEqual({ n: 1 });
      }
    });

    test("a transaction that lets its locks go before the disk write is committed and durable once it returns", async () => {
      await sql().run("DELETE FROM t");
      const value = await sql().transaction(
        async () => {
          await sql().run("INSERT INTO t (id, v) VALUES (1, 'released')");
          return "done";
        },
        { releaseBeforeFlush: true },
      );
      expect(value).toBe("done");
      expect(await sql().get("SELECT v FROM t WHERE id = 1")).toEqual({ v: "released" });
      // A throw still rolls it back.
      const error = await sql()
        .transaction(
          async () => {
            await sql().run("INSERT INTO t (id, v) VALUES (2, 'never')");
            throw new Error("no");
          },
          { releaseBeforeFlush: true },
        )
        .catch((e: unknown) => e);
      expect((error as Error).message).toBe("no");
      expect(await sql().get("SELECT count(*) AS n FROM t")).toEqual({ n: 1 });
    });

    test("an undurable transaction commits like any other", async () => {
      await sql().run("DELETE FROM t");
      await sql().transaction(async () => sql().run("INSERT INTO t (id) VALUES (1)"), { durable: false });
      expect(await sql().get("SELECT count(*) AS n FROM t")).toEqual({ n: 1 });
    });
  });
}

/** 40 calls of `flush` at once: when each was made and when it returned. */
function fortyAtOnce(flush: () => Promise<void>): Promise<{ at: number; done: number }[]> {
  return Promise.all(
    Array.from({ length: 40 }, async () => {
      const at = performance.now();
      await flush();
      return { at, done: performance.now() };
    }),
  );
}

test("PostgreSQL flushes are shared: 40 calls at once run two flushing transactions, each begun after its calls", async () => {
  const pg = new Bun.SQL(cluster.url, { bigint: true, max: 4 });
  const sql = new PostgresSql(pg);
  const flushes: { start: number; end: number }[] = [];
  const unsafe = pg.unsafe.bind(pg);
  // Watches the flushing statements on their way to the pool.
  (pg as { unsafe: typeof pg.unsafe }).unsafe = ((text: string, params?: unknown[]) => {
    if (!text.includes("pg_logical_emit_message")) return unsafe(text, params);
    const flush = { start: performance.now(), end: Infinity };
    flushes.push(flush);
    return unsafe(text, params).then((rows: unknown) => ((flush.end = performance.now()), rows));
  }) as typeof pg.unsafe;
  try {
    await sql.flush();
    expect(flushes.length).toBe(1);
    flushes.length = 0;
    const calls = await fortyAtOnce(() => sql.flush());
    // The first call starts one; the 39 arriving while it runs share the next.
    expect(flushes.length).toBe(2);
    for (const call of calls) expect(flushes.some((f) => f.start >= call.at && f.end <= call.done)).toBe(true);
  } finally {
    await pg.close();
  }
});

test("SQLite: commits that let the write lock go are synced together, and every one is in its log file when it returns", async () => {
  const dir = tempDir("latchkey-sql-wal-");
  const db = new Database(join(dir.path, "w.db"), { create: true, strict: true });
  try {
    db.run("PRAGMA journal_mode = WAL");
    db.run("PRAGMA synchronous = FULL");
    db.run("CREATE TABLE w (id integer PRIMARY KEY)");
    const sql = new SqliteSql(db);
    const syncs: number[] = [];
    const flush = sql.flush.bind(sql);
    sql.flush = () => (syncs.push(syncs.length), flush());
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        sql.transaction(() => sql.run("INSERT INTO w (id) VALUES (?)", [i]), { releaseBeforeFlush: true }),
      ),
    );
    // Every transaction asked for the log to be synced after its commit...
    expect(syncs).toHaveLength(40);
    expect(await sql.get("SELECT count(*) AS n FROM w")).toEqual({ n: 40 });
    // ...its commits are in the log file (not yet checkpointed into the database file), and the
    // connection is back to syncing every commit.
    expect(Bun.file(join(dir.path, "w.db-wal")).size).toBeGreaterThan(0);
    expect(db.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
  } finally {
    db.close();
    dir.remove();
  }
});

test("shared flushes: 40 requests at once make two disk writes, each begun after the requests it answers", async () => {
  const writes: { start: number; end: number }[] = [];
  const shared = new SharedFlush(async () => {
    const write = { start: performance.now(), end: Infinity };
    writes.push(write);
    await Bun.sleep(5);
    write.end = performance.now();
  });
  await shared.request();
  expect(writes).toHaveLength(1);
  writes.length = 0;
  const calls = await fortyAtOnce(() => shared.request());
  expect(writes).toHaveLength(2);
  for (const call of calls) expect(writes.some((w) => w.start >= call.at && w.end <= call.done)).toBe(true);
  // A write that fails fails its callers, and the next request starts a new one.
  const failing = new SharedFlush(async () => {
    throw new Error("disk");
  });
  await expect(failing.request()).rejects.toThrow("disk");
  await expect(failing.request()).rejects.toThrow("disk");
});

test("PostgreSQL gone: DatabaseUnavailable, not a hang", async () => {
  const other = await startPostgres();
  const pg = new Bun.SQL(other.url, { bigint: true, max: 2, connectionTimeout: 2 });
  const sql = new PostgresSql(pg);
  expect(await sql.get("SELECT 1 AS one")).toEqual({ one: 1 });
  await other.stop();
  const error = await sql.get("SELECT 1 AS one").catch((e: unknown) => e);
  expect(error).toBeInstanceOf(DatabaseUnavailable);
  const txError = await sql.transaction(async () => sql.get("SELECT 1")).catch((e: unknown) => e);
  expect(txError).toBeInstanceOf(DatabaseUnavailable);
  await pg.close().catch(() => undefined);
});
