/**
 * The charts' roll-ups (src/core/stats.ts) and their routes, `GET /api/stats`,
 * `GET /api/licenses/{id}/stats` and `GET /api/apps/{id}/stats`: counted from real events on a
 * real server (license checks and activations over the public API, registrations over the
 * WebSocket, failed and throttled sign-ins, host reports over mutual TLS) and read back as each
 * caller may see them; hour boundaries on an injected clock; range validation; zero-filling;
 * retention; many events at once; a shutdown racing the flush.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { HOUR_MS, Stats } from "../src/core/stats.ts";
import { openDatabase } from "../src/db/open.ts";
import { StatsStore } from "../src/db/stats.ts";
import { openPostgresStorage, openSqliteStorage } from "../src/db/storage.ts";
import { SqliteSql } from "../src/db/sql.ts";
import { silentLogger } from "../src/log.ts";
import type { RunningServer } from "../src/server.ts";
import { startServer } from "../src/server.ts";
import { freshDatabase } from "./postgres.ts";
import {
  ADMIN_PASSWORD,
  call,
  createUser,
  eventually,
  login,
  manualClock,
  RpcClient,
  startTestServer,
  TEST_BACKEND,
  TEST_ENV,
  tempDir,
  type TestServer,
} from "./support.ts";

const actor = { name: "test", address: null };
const REPORT = { interfaces: [{ name: "eth0", addresses: ["192.0.2.10"] }], port: 8080, version: "1.0.0" };

type Series = Record<string, number[] | null>;
const total = (values: number[] | null | undefined) => (values ? values.reduce((a, b) => a + b, 0) : null);
const peakOf = (values: number[] | null | undefined) => (values ? Math.max(0, ...values) : null);
/** Every series summed over the range (null where the caller may not see it). */
const totals = (series: Series) => Object.fromEntries(Object.entries(series).map(([name, values]) => [name, total(values)]));

async function stats(server: { url: string }, token: string, path = "/api/stats", range?: string) {
  const res = await call(server.url, "GET", range === undefined ? path : `${path}?range=${range}`, { token });
  expect(res.status).toBe(200);
  return res.body as { range: string; bucket_seconds: number; from: string; to: string; timestamps: number[]; series: Series };
}

async function activate(server: { url: string }, token: string, hwid: string): Promise<number> {
  const res = await fetch(`${server.url}/api/activate`, { method: "POST", body: new URLSearchParams({ token, hwid }) });
  await res.body?.cancel();
  return res.status;
}

async function check(server: { url: string }, token: string, hwid: string): Promise<number> {
  const res = await fetch(`${server.url}/api/check?${new URLSearchParams({ token, hwid })}`);
  await res.body?.cancel();
  return res.status;
}

async function newApp(server: { url: string }, token: string, name: string): Promise<number> {
  const res = await call(server.url, "POST", "/api/apps", { token, body: { name } });
  expect(res.status).toBe(201);
  return res.body.id;
}

async function newKey(server: { url: string }, token: string, appId: number, activations: number): Promise<{ id: number; token: string }> {
  const res = await call(server.url, "POST", "/api/licenses", { token, body: { app_id: appId, activations } });
  expect(res.status).toBe(201);
  return { id: res.body.id, token: res.body.token };
}

/** A woodstock client's report: POST over mutual TLS with the host's bundle. */
async function report(server: RunningServer, hostname: string): Promise<number> {
  const bundle = await server.services.hosts.hostBundle(actor, hostname);
  const res = await fetch(`https://localhost:${server.mtlsPort}/api/hosts/${hostname}/client`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(REPORT),
    tls: { ca: bundle.ca, cert: bundle.certificate, key: bundle.key },
  });
  await res.body?.cancel();
  return res.status;
}

describe("every kind of event is counted, and each caller sees what they may", () => {
  let server: TestServer;
  let admin: string;
  let ana: string;
  let bo: string;
  const sockets: RpcClient[] = [];
  let appId: number;
  let k1: { id: number; token: string };
  let k2: { id: number; token: string };

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "ana", password: "ana-password", role: "viewer", allowed_groups: ["g1"] });
    await createUser(server.url, admin, { username: "bo", password: "bo-password", role: "viewer" });
    ana = await login(server.url, "ana", "ana-password");
    bo = await login(server.url, "bo", "bo-password");

    // Licensing: three activations pass and two fail; six checks pass and two fail.
    appId = await newApp(server, admin, "Stats App");
    k1 = await newKey(server, admin, appId, 2);
    k2 = await newKey(server, admin, appId, -1);
    expect(await activate(server, k1.token, "m1")).toBe(201);
    expect(await activate(server, k1.token, "m2")).toBe(201);
    expect(await activate(server, k1.token, "m3")).toBe(410);
    expect(await activate(server, "NOSUCHTOKEN", "m1")).toBe(404);
    expect(await activate(server, k2.token, "m1")).toBe(201);
    for (let i = 0; i < 4; i++) expect(await check(server, k1.token, "m1")).toBe(201);
    for (let i = 0; i < 2; i++) expect(await check(server, k2.token, "m1")).toBe(201);
    expect(await check(server, k1.token, "not-activated")).toBe(404);
    expect(await check(server, "NOSUCHTOKEN", "m1")).toBe(404);

    // Registrations: two admitted (one in g1), two refused (one with a key of g1); both admitted stay online.
    expect((await call(server.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: true } })).status).toBe(200);
    const g1Key = (await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 1, label: "g1", group: "g1" } })).body
      .items[0].key;
    const plainKey = (await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 1, label: "plain" } })).body.items[0]
      .key;
    const register = async (n: number, authKey: string) => {
      const socket = await RpcClient.connect(server.wsUrl);
      sockets.push(socket);
      const uuid = `00000000-0000-4000-8000-00000000000${n}`;
      return socket.request("client", "register", { uuid, name: `client-${n}`, hostname: `client-${n}.example`, auth_key: authKey });
    };
    expect((await register(1, g1Key)).name).toBe("response");
    expect((await register(2, plainKey)).name).toBe("response");
    expect((await register(3, "AAAA-BBBB-CCCC")).args.code).toBe(403);
    expect((await register(4, g1Key)).args.code).toBe(403);

    // Sign-ins: five wrong passwords, then the account is throttled from this address.
    for (let i = 0; i < 5; i++)
      expect(
        (await call(server.url, "POST", "/api/auth/login", { body: { username: "mallory", password: "wrong-password" } })).status,
      ).toBe(401);
    expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "mallory", password: "wrong-password" } })).status).toBe(
      429,
    );

    // Host reports: two from a host of g1, one from a host of no group.
    await server.services.hosts.registerHost(actor, "web-01.example", "g1");
    await server.services.hosts.registerHost(actor, "db-01.example", null);
    expect(await report(server, "web-01.example")).toBe(200);
    expect(await report(server, "web-01.example")).toBe(200);
    expect(await report(server, "db-01.example")).toBe(200);
  });

  afterAll(async () => {
    for (const socket of sockets) socket.close();
    await server?.close();
  });

  test("an admin sees everything, over a day, a week and a month", async () => {
    for (const range of ["24h", "7d", "30d"]) {
      const body = await stats(server, admin, "/api/stats", range);
      expect(body.range).toBe(range);
      const { clients_online, ...counts } = body.series;
      expect(totals(counts)).toEqual({
        checks_ok: 6,
        checks_failed: 2,
        activations_ok: 3,
        activations_failed: 2,
        registrations_ok: 2,
        registrations_refused: 2,
        logins_failed: 5,
        logins_throttled: 1,
        host_reports: 3,
      });
      expect(peakOf(clients_online)).toBe(2);
    }
  });

  test("a viewer sees licensing whole, clients and hosts of her groups, and no sign-ins", async () => {
    const { clients_online, ...counts } = (await stats(server, ana)).series;
    expect(totals(counts)).toEqual({
      checks_ok: 6,
      checks_failed: 2,
      activations_ok: 3,
      activations_failed: 2,
      registrations_ok: 1,
      registrations_refused: 1,
      logins_failed: null,
      logins_throttled: null,
      host_reports: 2,
    });
    expect(peakOf(clients_online)).toBe(1);
    // A viewer of no group sees no client or host at all.
    const none = (await stats(server, bo)).series;
    expect([
      total(none.registrations_ok),
      total(none.registrations_refused),
      peakOf(none.clients_online),
      total(none.host_reports),
    ]).toEqual([0, 0, 0, 0]);
    expect(total(none.checks_ok)).toBe(6);
  });

  test("a key's and an application's series count their own checks and activations", async () => {
    for (const token of [admin, ana]) {
      expect(totals((await stats(server, token, `/api/licenses/${k1.id}/stats`)).series)).toEqual({
        checks_ok: 4,
        checks_failed: 1,
        activations_ok: 2,
        activations_failed: 1,
      });
    }
    expect(totals((await stats(server, admin, `/api/licenses/${k2.id}/stats`, "30d")).series)).toEqual({
      checks_ok: 2,
      checks_failed: 0,
      activations_ok: 1,
      activations_failed: 0,
    });
    expect(totals((await stats(server, bo, `/api/apps/${appId}/stats`, "7d")).series)).toEqual({
      checks_ok: 6,
      checks_failed: 1,
      activations_ok: 3,
      activations_failed: 1,
    });
  });

  test("a deleted key's history goes with it; its checks still count for its application and overall", async () => {
    // One check still with the check counters, and one already handed over to the roll-ups.
    expect(await check(server, k2.token, "m1")).toBe(201);
    await server.services.licensing.flush();
    expect(await check(server, k2.token, "m1")).toBe(201);
    expect((await call(server.url, "DELETE", `/api/licenses/${k2.id}`, { token: admin })).status).toBe(204);
    expect((await call(server.url, "GET", `/api/licenses/${k2.id}/stats`, { token: admin })).status).toBe(404);
    expect(total((await stats(server, admin, `/api/apps/${appId}/stats`)).series.checks_ok)).toBe(8);
    expect(total((await stats(server, admin)).series.checks_ok)).toBe(8);
    const rows = await server.services.storage.sql.get("SELECT count(*) AS n FROM stats_hourly WHERE scope = ?", [`license:${k2.id}`]);
    expect(rows).toEqual({ n: 0 });
  });
});

describe("buckets and their boundaries", () => {
  test("events fall into the hour they happened in, whichever range reads them", async () => {
    const clock = manualClock(Date.parse("2026-03-01T10:59:59.000Z"));
    const server = await startTestServer({ clock });
    try {
      let admin = await login(server.url);
      const key = await newKey(server, admin, await newApp(server, admin, "Clocked"), -1);
      expect(await activate(server, key.token, "m1")).toBe(201);
      for (let i = 0; i < 3; i++) expect(await check(server, key.token, "m1")).toBe(201);
      // Into the next hour with no flush in between: the batched checks are split at the hour.
      clock.advance(2000);
      for (let i = 0; i < 2; i++) expect(await check(server, key.token, "m1")).toBe(201);
      expect(await activate(server, key.token, "m2")).toBe(201);
      expect(await check(server, key.token, "m9")).toBe(404);

      const day = await stats(server, admin);
      expect(day.bucket_seconds).toBe(3600);
      expect(day.from).toBe("2026-02-28T12:00:00.000Z");
      expect(day.to).toBe("2026-03-01T12:00:00.000Z");
      expect(day.series.checks_ok!.slice(-3)).toEqual([0, 3, 2]);
      expect(day.series.activations_ok!.slice(-3)).toEqual([0, 1, 1]);
      expect(day.series.checks_failed!.slice(-3)).toEqual([0, 0, 1]);
      const keyDay = await stats(server, admin, `/api/licenses/${key.id}/stats`);
      expect(keyDay.series.checks_ok!.slice(-2)).toEqual([3, 2]);

      // Five hours on (the session has ended meanwhile): the same hours, further back.
      clock.advance(5 * HOUR_MS);
      admin = await login(server.url);
      const later = await stats(server, admin, "/api/stats", "24h");
      expect(later.to).toBe("2026-03-01T17:00:00.000Z");
      expect(later.series.checks_ok!.slice(-8)).toEqual([0, 3, 2, 0, 0, 0, 0, 0]);
      const week = await stats(server, admin, "/api/stats", "7d");
      expect(week.timestamps).toHaveLength(168);
      expect(week.series.checks_ok![166 - 5]).toBe(3);
      expect(week.series.checks_ok![167 - 5]).toBe(2);
      // Six-hour buckets from 00:00, 06:00, 12:00 and 18:00 UTC: 10:59 and 11:00 share 06:00–12:00.
      const month = await stats(server, admin, "/api/stats", "30d");
      expect(month.bucket_seconds).toBe(6 * 3600);
      expect(month.to).toBe("2026-03-01T18:00:00.000Z");
      expect(month.from).toBe(new Date(Date.parse("2026-03-01T18:00:00.000Z") - 120 * 6 * HOUR_MS).toISOString());
      expect(month.series.checks_ok!.slice(-3)).toEqual([0, 5, 0]);
      expect(month.series.activations_ok!.slice(-3)).toEqual([0, 2, 0]);
    } finally {
      await server.close();
    }
  });

  test("with nothing counted every series is zero-filled, one value per bucket", async () => {
    const clock = manualClock(Date.parse("2026-06-15T08:30:00.000Z"));
    const server = await startTestServer({ clock });
    try {
      const admin = await login(server.url);
      for (const [range, buckets, seconds] of [
        ["24h", 24, 3600],
        ["7d", 168, 3600],
        ["30d", 120, 21600],
      ] as const) {
        const body = await stats(server, admin, "/api/stats", range);
        expect(body.timestamps).toHaveLength(buckets);
        expect(body.bucket_seconds).toBe(seconds);
        for (let i = 1; i < buckets; i++) expect(body.timestamps[i]! - body.timestamps[i - 1]!).toBe(seconds);
        expect(Date.parse(body.from) / 1000).toBe(body.timestamps[0]!);
        expect(Date.parse(body.to) / 1000).toBe(body.timestamps[buckets - 1]! + seconds);
        // The last bucket holds now.
        expect(body.timestamps[buckets - 1]! * 1000).toBeLessThanOrEqual(clock());
        expect(Date.parse(body.to)).toBeGreaterThan(clock());
        expect(Object.keys(body.series).sort()).toEqual(
          [
            "activations_failed",
            "activations_ok",
            "checks_failed",
            "checks_ok",
            "clients_online",
            "host_reports",
            "logins_failed",
            "logins_throttled",
            "registrations_ok",
            "registrations_refused",
          ].sort(),
        );
        for (const values of Object.values(body.series)) expect(values).toEqual(new Array(buckets).fill(0));
      }
    } finally {
      await server.close();
    }
  });
});

describe("what the routes refuse", () => {
  let server: TestServer;
  let admin: string;
  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
  });
  afterAll(() => server.close());

  test.each([
    ["/api/stats?range=1y", 400, "range"],
    ["/api/stats?range=", 400, "range"],
    ["/api/stats?range=24H", 400, "range"],
    ["/api/stats?range=24h&range=7d", 400, "range"],
    ["/api/stats?since=2026-01-01", 400, "since"],
    ["/api/licenses/999999/stats", 404, undefined],
    ["/api/licenses/abc/stats", 400, "id"],
    ["/api/licenses/1/stats?range=forever", 400, "range"],
    ["/api/apps/999999/stats", 404, undefined],
    ["/api/apps/0/stats", 400, "id"],
  ])("GET %s → %d", async (path, status, field) => {
    const res = await call(server.url, "GET", path, { token: admin });
    expect(res.status).toBe(status);
    expect(res.body.error.field).toBe(field);
    if (field === "range") expect(res.body.error.message).toBe("range must be 24h, 7d or 30d");
  });

  test("the range defaults to 24 hours, and anonymous callers are refused", async () => {
    expect((await stats(server, admin)).range).toBe("24h");
    expect((await call(server.url, "GET", "/api/stats")).status).toBe(401);
  });
});

describe("writing and retention", () => {
  test("writers at once (nodes on one database): counts add up, peaks keep the highest, old hours go, new rows stay", async () => {
    // On PostgreSQL two storages on one database, as two nodes; on SQLite one process's storage.
    const dir = tempDir();
    const storages =
      TEST_BACKEND === "postgres"
        ? await freshDatabase().then((url) => Promise.all([openPostgresStorage(url), openPostgresStorage(url)]))
        : [openSqliteStorage(dir.path, { create: true })];
    try {
      const stores = [0, 1].map((w) => new StatsStore(storages[w % storages.length]!.sql));
      const sql = storages[0]!.sql;
      const hour = Date.parse("2027-05-01T12:00:00.000Z");
      const old = hour - 401 * 24 * HOUR_MS;
      const retention = { before: hour - 400 * 24 * HOUR_MS, limit: 10 };
      await stores[0]!.write(
        Array.from({ length: 30 }, (_, i) => ({ scope: `license:${i}`, metric: "checks_ok", hour: old, value: 1 })),
        [],
      );
      const pruned = await Promise.all(
        stores.flatMap((store, w) =>
          Array.from({ length: 20 }, (_, i) =>
            store.write(
              [
                { scope: "", metric: "checks_ok", hour, value: 1 },
                { scope: "app:1", metric: "checks_ok", hour, value: 2 },
              ],
              [{ scope: "", metric: "clients_online", hour, value: w * 100 + i }],
              retention,
            ),
          ),
        ),
      );
      const value = async (scope: string, metric: string, at: number) =>
        (
          await sql.get<{ value: number }>("SELECT value FROM stats_hourly WHERE scope = ? AND metric = ? AND hour = ?", [
            scope,
            metric,
            at,
          ])
        )?.value;
      expect(await value("", "checks_ok", hour)).toBe(40);
      expect(await value("app:1", "checks_ok", hour)).toBe(80);
      expect(await value("", "clients_online", hour)).toBe(119);
      expect(pruned.reduce((a, b) => a + b, 0)).toBe(30);
      expect(await sql.get("SELECT count(*) AS n FROM stats_hourly WHERE scope LIKE 'license:%'")).toEqual({ n: 0 });
      // An hour past retention counted late is written, not pruned by the same write; the next write prunes it.
      expect(await stores[1]!.write([{ scope: "app:9", metric: "checks_ok", hour: old, value: 5 }], [], retention)).toBe(0);
      expect(await value("app:9", "checks_ok", old)).toBe(5);
      expect(await stores[0]!.write([], [], retention)).toBe(1);
      expect(await value("app:9", "checks_ok", old)).toBeUndefined();
    } finally {
      for (const storage of storages) await storage.close();
      dir.remove();
    }
  });

  test("roll-ups older than 400 days go, at most 10,000 rows per write, and only once an hour unless more are left", async () => {
    const dir = tempDir();
    const db = openDatabase(dir.path, { create: true });
    try {
      const clock = manualClock(Date.parse("2027-05-01T12:30:00.000Z"));
      const store = new StatsStore(new SqliteSql(db));
      const stats = new Stats(store, clock);
      const hour = clock() - (clock() % HOUR_MS);
      const old = hour - 401 * 24 * HOUR_MS;
      const kept = hour - 399 * 24 * HOUR_MS;
      const rows = (at: number, n: number) =>
        Array.from({ length: n }, (_, i) => ({ scope: `license:${i}`, metric: "checks_ok", hour: at, value: 1 }));
      await store.write([...rows(old, 25_000), ...rows(kept, 100)], []);
      const count = (at: number) => (db.query("SELECT count(*) AS n FROM stats_hourly WHERE hour = ?").get(at) as { n: number }).n;

      await stats.flush();
      expect(count(old)).toBe(15_000);
      await stats.flush();
      expect(count(old)).toBe(5_000);
      await stats.flush();
      expect(count(old)).toBe(0);
      expect(count(kept)).toBe(100);

      // Caught up: no more deleting within this hour, whatever is written.
      await store.write(rows(old, 10), []);
      stats.count("checks_ok");
      await stats.flush();
      expect(count(old)).toBe(10);
      clock.advance(HOUR_MS);
      await stats.flush();
      expect(count(old)).toBe(0);
      // The hour that was 399 days old is still within 400 days.
      expect(count(kept)).toBe(100);
      expect(db.query("SELECT sum(value) AS n FROM stats_hourly WHERE scope = '' AND metric = 'checks_ok'").get()).toEqual({ n: 1 });
    } finally {
      db.close();
      dir.remove();
    }
  });

  test("the timer writes in slices, and a stop between two slices writes the rest once", async () => {
    const dir = tempDir();
    const db = openDatabase(dir.path, { create: true });
    try {
      const clock = manualClock();
      const store = new StatsStore(new SqliteSql(db));
      const slices: number[] = [];
      let firstSlice!: () => void;
      const sliced = new Promise<void>((resolve) => (firstSlice = resolve));
      const write = store.write.bind(store);
      store.write = (counts, peaks, prune) => {
        slices.push(counts.length + peaks.length);
        firstSlice();
        return write(counts, peaks, prune);
      };
      const stats = new Stats(store, clock);
      // 2,000 keys' checks: 4,001 rows (each key's, its application's, and everything).
      for (let id = 1; id <= 2000; id++) stats.count("checks_ok", 2, [`license:${id}`, `app:${id}`]);
      const errors: unknown[] = [];
      stats.start((error) => errors.push(error));
      await sliced;
      // The first slice is written; the next is due on a later turn of the event loop. Stop now.
      expect(slices).toEqual([250]);
      await stats.stop();
      expect(slices).toEqual([250, 3751]);
      await Bun.sleep(50);
      expect(slices).toEqual([250, 3751]);
      expect(errors).toEqual([]);
      expect(db.query("SELECT count(*) AS rows, sum(value) AS total FROM stats_hourly").get()).toEqual({ rows: 4001, total: 3 * 4000 });
    } finally {
      db.close();
      dir.remove();
    }
  });

  test("each key's checks wait for the minute's write, or for a read; the overall and the application's do not", async () => {
    const dir = tempDir();
    const db = openDatabase(dir.path, { create: true });
    try {
      const clock = manualClock();
      const stats = new Stats(new StatsStore(new SqliteSql(db)), clock);
      const stored = (scope: string) => db.query("SELECT value FROM stats_hourly WHERE scope = ?").get(scope) as { value: number } | null;
      stats.count("checks_ok", 3, ["app:1"], clock());
      stats.countKeyChecks(7, 3, clock());
      stats.start((error) => {
        throw error;
      });
      await eventually(() => stored("app:1"), { what: "the timer's first write" });
      expect(stored("")).toEqual({ value: 3 });
      expect(stored("license:7")).toBeNull();
      await stats.flush();
      expect(stored("license:7")).toEqual({ value: 3 });
      await stats.stop();
    } finally {
      db.close();
      dir.remove();
    }
  });

  test("a write that fails keeps its counts for the next one", async () => {
    const dir = tempDir();
    const db = openDatabase(dir.path, { create: true });
    try {
      const clock = manualClock();
      const stats = new Stats(new StatsStore(new SqliteSql(db)), clock);
      stats.count("host_reports", 2, ["group:g1"]);
      db.run("DROP INDEX stats_hourly_by_hour");
      db.run("ALTER TABLE stats_hourly RENAME TO stats_hourly_away");
      await expect(stats.flush()).rejects.toThrow();
      db.run("ALTER TABLE stats_hourly_away RENAME TO stats_hourly");
      stats.count("host_reports", 1);
      await stats.flush();
      expect(db.query("SELECT scope, value FROM stats_hourly ORDER BY scope").all()).toEqual([
        { scope: "", value: 3 },
        { scope: "group:g1", value: 2 },
      ]);
    } finally {
      db.close();
      dir.remove();
    }
  });
});

describe("many events at once", () => {
  test("concurrent checks, activations and reads are each counted exactly once", async () => {
    const server = await startTestServer();
    try {
      const admin = await login(server.url);
      const app = await newApp(server, admin, "Busy");
      const keys = [await newKey(server, admin, app, -1), await newKey(server, admin, app, -1)];
      const machines = Array.from({ length: 200 }, (_, i) => `busy-${i}`);
      // 200 activations at once, split over two keys.
      const activated = await Promise.all(machines.map((m, i) => activate(server, keys[i % 2]!.token, m)));
      expect(activated.every((s) => s === 201)).toBe(true);
      // 2,000 checks at once, with 100 failing ones and 20 reads of the charts (each a write) among them.
      const work: Promise<unknown>[] = [];
      for (let i = 0; i < 2000; i++) work.push(check(server, keys[i % 2]!.token, machines[i % 200]!));
      for (let i = 0; i < 100; i++) work.push(check(server, keys[0]!.token, `unknown-${i}`));
      for (let i = 0; i < 20; i++) work.push(call(server.url, "GET", "/api/stats", { token: admin }));
      await Promise.all(work);
      const all = (await stats(server, admin)).series;
      expect([total(all.activations_ok), total(all.checks_ok), total(all.checks_failed)]).toEqual([200, 2000, 100]);
      const first = (await stats(server, admin, `/api/licenses/${keys[0]!.id}/stats`)).series;
      expect([total(first.activations_ok), total(first.checks_ok), total(first.checks_failed)]).toEqual([100, 1000, 100]);
      const checks = (await call(server.url, "GET", `/api/licenses/${keys[1]!.id}`, { token: admin })).body.total_checks;
      expect(checks).toBe(1000);
    } finally {
      await server.close();
    }
  });

  test("a shutdown racing the flush loses no acknowledged check", async () => {
    const dir = tempDir();
    const dataDir = join(dir.path, "data");
    const config = loadConfig(parseArgs(["--data-dir", dataDir, "--listen", "127.0.0.1:0"], serverFlags), TEST_ENV);
    const server = await startServer(config, { log: silentLogger, adminPassword: ADMIN_PASSWORD });
    try {
      const admin = await login(server.url);
      const appId = await newApp(server, admin, "Racing");
      const key = await newKey(server, admin, appId, -1);
      for (let i = 0; i < 8; i++) expect(await activate(server, key.token, `racer-${i}`)).toBe(201);
      let acknowledged = 0;
      let sent = 0;
      let stopping = false;
      // Eight clients check as fast as they are answered until the server is gone; it stops mid-stream.
      const racers = Array.from({ length: 8 }, async (_, i) => {
        while (!stopping) {
          sent++;
          try {
            if ((await check(server, key.token, `racer-${i}`)) === 201) acknowledged++;
          } catch {
            return;
          }
        }
      });
      await Bun.sleep(700);
      stopping = true;
      await server.stop("test: stop while checking");
      await Promise.all(racers);
      expect(acknowledged).toBeGreaterThan(50);

      const db = openDatabase(dataDir, { create: false });
      try {
        const stored = (scope: string) =>
          (
            db.query("SELECT coalesce(sum(value), 0) AS n FROM stats_hourly WHERE scope = ? AND metric = 'checks_ok'").get(scope) as {
              n: number;
            }
          ).n;
        expect(stored("")).toBeGreaterThanOrEqual(acknowledged);
        expect(stored("")).toBeLessThanOrEqual(sent);
        expect(stored(`license:${key.id}`)).toBe(stored(""));
        expect(stored(`app:${appId}`)).toBe(stored(""));
        // The roll-ups agree with the key's own counter, written by the same flushes.
        expect((db.query("SELECT total FROM license_checks WHERE license_id = ?").get(key.id) as { total: number }).total).toBe(stored(""));
      } finally {
        db.close();
      }
    } finally {
      await server.stop();
      dir.remove();
    }
  });
});
