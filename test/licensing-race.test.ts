/**
 * The seat count is exact under concurrency (SPEC §6, §9): many parallel activations of a key
 * with k seats produce exactly k successes, the rest 410 (or 429 once the key is throttled), and
 * the database agrees: activations_used = k and exactly k activation rows.
 *
 * Why separate server processes rather than an in-process server: Bun runs a request handler to
 * completion on one thread, and an in-process server would share that thread with this test's
 * client, so requests would merely queue behind each other. Here the servers are their own
 * processes (spawnLatchkey), the test fires real HTTP at them from outside, and there are TWO
 * servers on the same data directory (with LATCHKEY_TEST_BACKEND=postgres, on the same PostgreSQL
 * database), with the requests of each round spread across both: the activations then truly
 * interleave at the database, where only the write lock (`BEGIN IMMEDIATE` on SQLite, the key's row
 * lock on PostgreSQL) and the single conditional `UPDATE ... WHERE activations_used <
 * activations_allowed` can keep the count exact.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { freshDatabase } from "./postgres.ts";
import { ADMIN_PASSWORD, call, login, spawnLatchkey, TEST_BACKEND, tempDir, waitForListening } from "./support.ts";

const PARALLEL = 200;
const ROUNDS = 10;

let dir: { path: string; remove(): void };
/** With LATCHKEY_TEST_BACKEND=postgres, the database both servers share (else SQLite in `dir`). */
let databaseUrl: string | null = null;
const servers: { proc: ReturnType<typeof spawnLatchkey>; url: string }[] = [];
let admin: string;
let appId: number;

async function startServer(): Promise<void> {
  const database = databaseUrl === null ? [] : ["--database", databaseUrl];
  const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dir.path, ...database], {
    env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD },
  });
  const { url } = await waitForListening(proc);
  servers.push({ proc, url });
}

beforeAll(async () => {
  dir = tempDir("latchkey-race-");
  if (TEST_BACKEND === "postgres") databaseUrl = await freshDatabase();
  // One after the other: the first creates the database, the second opens it.
  await startServer();
  await startServer();
  admin = await login(servers[0]!.url);
  appId = (await call(servers[0]!.url, "POST", "/api/apps", { token: admin, body: { name: "Raced", support_message: "race support" } }))
    .body.id;
});

afterAll(async () => {
  for (const { proc } of servers) {
    proc.kill("SIGTERM");
    await proc.exited;
  }
  dir?.remove();
});

async function newKey(activations: number): Promise<{ id: number; token: string }> {
  const res = await call(servers[0]!.url, "POST", "/api/licenses", { token: admin, body: { app_id: appId, activations } });
  expect(res.status).toBe(201);
  return res.body;
}

/** Request i goes to server i mod 2. */
async function post(i: number, path: string, fields: Record<string, string>): Promise<{ status: number; body: any; i: number }> {
  const res = await fetch(`${servers[i % servers.length]!.url}${path}`, { method: "POST", body: new URLSearchParams(fields) });
  return { status: res.status, body: await res.json(), i };
}

/**
 * What the database itself says about a key, read on a connection of its own: its seat counter,
 * its activations' machines, and how many successful activations the audit log records for it.
 */
async function stored(licenseId: number): Promise<{ used: number; rows: string[]; audited: number }> {
  const target = `license ${licenseId}`;
  if (databaseUrl !== null) {
    const db = new Bun.SQL(databaseUrl, { max: 1 });
    try {
      const [{ used }] = await db`SELECT activations_used::int AS used FROM licenses WHERE id = ${licenseId}`;
      const rows = await db`SELECT hwid FROM activations WHERE license_id = ${licenseId} ORDER BY hwid COLLATE "C"`;
      const [{ audited }] = await db`SELECT count(*)::int AS audited FROM audit
        WHERE action = 'license.activate' AND outcome = 'success' AND target = ${target}`;
      return { used, rows: rows.map((r: { hwid: string }) => r.hwid), audited };
    } finally {
      await db.close();
    }
  }
  const db = new Database(join(dir.path, "latchkey.db"), { readonly: true });
  try {
    const used = db.query<{ n: number }, [number]>("SELECT activations_used AS n FROM licenses WHERE id = ?").get(licenseId)!.n;
    const rows = db
      .query<{ hwid: string }, [number]>("SELECT hwid FROM activations WHERE license_id = ? ORDER BY hwid")
      .all(licenseId)
      .map((r) => r.hwid);
    const audited = db
      .query<{ n: number }, [string]>(
        "SELECT count(*) AS n FROM audit WHERE action = 'license.activate' AND outcome = 'success' AND target = ?",
      )
      .get(target)!.n;
    return { used, rows, audited };
  } finally {
    db.close();
  }
}

function tally(replies: { status: number }[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const r of replies) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return counts;
}

describe(`${PARALLEL} parallel activations from distinct machines`, () => {
  const cases = [1, 5].flatMap((seats) => Array.from({ length: ROUNDS }, (_, round) => ({ seats, round })));
  test.each(cases)("a key with $seats seat(s), round $round: exactly $seats succeed", async ({ seats, round }) => {
    const key = await newKey(seats);
    const hwid = (i: number) => `r${round}-m${String(i).padStart(3, "0")}`;
    const replies = await Promise.all(
      Array.from({ length: PARALLEL }, (_, i) => post(i, "/api/activate", { token: key.token, hwid: hwid(i), machine: `M${i}` })),
    );
    const counts = tally(replies);
    expect(counts[201]).toBe(seats);
    expect((counts[410] ?? 0) + (counts[429] ?? 0)).toBe(PARALLEL - seats);
    for (const r of replies) {
      if (r.status === 201) expect(r.body).toEqual({ result: "ok", remainingActivations: expect.any(Number), receipt: expect.any(String) });
      if (r.status === 410)
        expect(r.body).toEqual({ result: "failure", error: "key is out of activations", support_message: "race support" });
      if (r.status === 429)
        expect(r.body).toMatchObject({ result: "failure", error: expect.stringContaining("too many failed activations for this key") });
    }
    const winners = replies
      .filter((r) => r.status === 201)
      .map((r) => hwid(r.i))
      .sort();
    // The losers wrote nothing: no activation row, no success in the audit log.
    expect(await stored(key.id)).toEqual({ used: seats, rows: winners, audited: seats });
  });
});

describe("races on one machine and against deactivation", () => {
  test(`${PARALLEL} parallel activations from the same machine at a 1-seat key: all succeed, one seat used`, async () => {
    const key = await newKey(1);
    const replies = await Promise.all(
      Array.from({ length: PARALLEL }, (_, i) => post(i, "/api/activate", { token: key.token, hwid: "the-one-machine" })),
    );
    expect(tally(replies)).toEqual({ 201: PARALLEL });
    for (const r of replies) expect(r.body).toEqual({ result: "ok", remainingActivations: 0, receipt: expect.any(String) });
    // One new seat and PARALLEL - 1 activations again, each audited once.
    expect(await stored(key.id)).toEqual({ used: 1, rows: ["the-one-machine"], audited: PARALLEL });
  });

  test.each(Array.from({ length: 5 }, (_, round) => ({ round })))(
    "round $round: deactivations raced against activations on a full key never over-allocate",
    async ({ round }) => {
      const seats = 3;
      const key = await newKey(seats);
      const holders = ["h0", "h1", "h2"];
      for (const [i, hwid] of holders.entries()) expect((await post(i, "/api/activate", { token: key.token, hwid })).status).toBe(201);
      expect(await stored(key.id)).toEqual({ used: seats, rows: holders, audited: seats });

      const newcomers = Array.from({ length: 100 }, (_, i) => `r${round}-new-${String(i).padStart(3, "0")}`);
      const requests: Promise<{ status: number; body: any; i: number; kind: string; hwid: string }>[] = [];
      // Interleaved: the holders leave while newcomers (and h0, coming back) try to get in.
      newcomers.forEach((hwid, i) => {
        requests.push(post(i, "/api/activate", { token: key.token, hwid }).then((r) => ({ ...r, kind: "activate", hwid })));
        if (i % 30 === 5 && i < 90) {
          const holder = holders[(i - 5) / 30]!;
          requests.push(
            post(i + 1, "/api/deactivate", { token: key.token, hwid: holder }).then((r) => ({ ...r, kind: "deactivate", hwid: holder })),
          );
        }
        if (i % 10 === 0)
          requests.push(
            post(i + 1, "/api/activate", { token: key.token, hwid: "h0" }).then((r) => ({ ...r, kind: "activate", hwid: "h0" })),
          );
      });
      const replies = await Promise.all(requests);
      for (const r of replies) expect([200, 201, 404, 410, 429]).toContain(r.status);
      // Each holder held a seat (or h0 had it back) when its deactivation arrived.
      expect(replies.filter((r) => r.kind === "deactivate").map((r) => r.status)).toEqual([200, 200, 200]);

      const after = await stored(key.id);
      expect(after.used).toBe(after.rows.length);
      expect(after.used).toBeLessThanOrEqual(seats);
      // Every newcomer that was told yes holds a seat; nobody holds one without having been told yes.
      const admitted = [...new Set(replies.filter((r) => r.kind === "activate" && r.status === 201).map((r) => r.hwid))];
      const admittedNewcomers = admitted.filter((h) => h !== "h0").sort();
      expect(after.rows.filter((h) => h !== "h0")).toEqual(admittedNewcomers);
      for (const hwid of after.rows) expect(admitted).toContain(hwid);
      // And every machine holding a seat passes its check.
      for (const hwid of after.rows) {
        const checked = await fetch(`${servers[0]!.url}/api/check?${new URLSearchParams({ token: key.token, hwid })}`);
        expect(checked.status).toBe(201);
      }
    },
  );

  test("both servers saw the same database: counters add up across them", async () => {
    const key = await newKey(-1);
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => post(i, "/api/activate", { token: key.token, hwid: `u-${i}` })));
    expect(tally(replies)).toEqual({ 201: 50 });
    for (const r of replies) expect(r.body.remainingActivations).toBe(-1);
    const license = (await call(servers[1]!.url, "GET", `/api/licenses/${key.id}`, { token: await login(servers[1]!.url) })).body;
    expect(license).toMatchObject({ activations_used: 50, total_activations: 50, remaining_activations: -1 });
    expect((await stored(key.id)).rows).toHaveLength(50);
  });
});
