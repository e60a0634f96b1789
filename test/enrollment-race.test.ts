/**
 * A pending key raced by many machines at once (SPEC §4, §9): exactly one registration wins and
 * binds the key, every other one is refused with exactly `AUTH_FAILED: Key already in use` — the
 * woho remedy "generate a separate key per machine" — whether it lost the conditional UPDATE or
 * read the key just after the winner bound it, and the audit log says so for each of them.
 *
 * As in licensing-race.test.ts: two separate server processes on the same data directory, with
 * each round's registrations spread across both, so that they truly interleave at the database,
 * where only the single `UPDATE ... WHERE status = 'pending'` can keep the binding unique. The
 * sockets are all open before a round starts, and the register frames go out back to back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { ADMIN_PASSWORD, call, eventually, login, RpcClient, spawnLatchkey, tempDir, waitForListening } from "./support.ts";

const PARALLEL = 50;
const ROUNDS = 20;
const IN_USE = "AUTH_FAILED: Key already in use";
const INVALID = "AUTH_FAILED: Invalid or revoked key";

let dir: { path: string; remove(): void };
const servers: { proc: ReturnType<typeof spawnLatchkey>; url: string; wsUrl: string }[] = [];
let admin: string;
/** Per round, how often the audit log switches between the two servers' registrations. */
const switches: number[] = [];

async function startServer(): Promise<void> {
  const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dir.path], {
    env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD },
  });
  const { url } = await waitForListening(proc);
  servers.push({ proc, url, wsUrl: `${url.replace(/^http/, "ws")}/ws` });
}

beforeAll(async () => {
  dir = tempDir("latchkey-enroll-race-");
  // One after the other: the first creates the database, the second opens it.
  await startServer();
  await startServer();
  admin = await login(servers[0]!.url);
  const res = await call(servers[0]!.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: true } });
  expect(res.body).toEqual({ require_auth_key: true });
});

afterAll(async () => {
  for (const { proc } of servers) {
    proc.kill("SIGTERM");
    await proc.exited;
  }
  dir?.remove();
});

async function newKeys(quantity: number): Promise<{ id: number; key: string }[]> {
  const res = await call(servers[0]!.url, "POST", "/api/keys", { token: admin, body: { quantity, label: "raced" } });
  expect(res.status).toBe(201);
  return res.body.items;
}

/** What the database itself says about a key, read on a connection of its own. */
function stored(keyId: number): { status: string; client_uuid: string | null; usage_count: number; clients: string[] } {
  const db = new Database(join(dir.path, "latchkey.db"), { readonly: true });
  try {
    const key = db
      .query<{ status: string; client_uuid: string | null; usage_count: number }, [number]>(
        "SELECT status, client_uuid, usage_count FROM enrollment_keys WHERE id = ?",
      )
      .get(keyId)!;
    const clients = db
      .query<{ uuid: string }, [number]>("SELECT uuid FROM clients WHERE key_id = ? ORDER BY uuid")
      .all(keyId)
      .map((r) => r.uuid);
    return { ...key, clients };
  } finally {
    db.close();
  }
}

const regArgs = (uuid: string, key: string) => ({
  uuid,
  name: `racer-${uuid.slice(0, 8)}`,
  hostname: `racer-${uuid.slice(0, 8)}.example`,
  version: "1.0",
  os: "linux",
  auth_key: key,
});

/** Socket i goes to server i mod 2. */
async function openSockets(n: number): Promise<RpcClient[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => RpcClient.connect(servers[i % servers.length]!.wsUrl)));
}

async function closeAll(sockets: RpcClient[]): Promise<void> {
  for (const s of sockets) s.close();
  await Promise.all(sockets.map((s) => s.closed));
}

describe(`${PARALLEL} machines registering with one pending key at the same moment`, () => {
  test.each(Array.from({ length: ROUNDS }, (_, round) => ({ round })))(
    "round $round: exactly one wins, the key is bound once",
    async () => {
      const [key] = await newKeys(1);
      const sockets = await openSockets(PARALLEL);
      try {
        const uuids: string[] = sockets.map(() => crypto.randomUUID());
        // Half of them type the key in lower case without dashes: it is the same key.
        const replies = await Promise.all(
          sockets.map((s, i) =>
            s.request("client", "register", regArgs(uuids[i]!, i % 2 ? key!.key : key!.key.replace(/-/g, "").toLowerCase())),
          ),
        );
        const winners = replies.flatMap((r, i) => (r.name === "response" ? [i] : []));
        expect(winners).toHaveLength(1);
        const winner = uuids[winners[0]!]!;
        expect(replies[winners[0]!].args).toMatchObject({ registered: true, uuid: winner, reconnect: false });
        const losers = replies.filter((_, i) => i !== winners[0]).map((r) => [r.name, r.args.code, r.args.message, r.args.reason]);
        expect(losers).toEqual(Array.from({ length: PARALLEL - 1 }, () => ["error", 403, IN_USE, "key_in_use"]));
        expect(stored(key!.id)).toEqual({ status: "active", client_uuid: winner, usage_count: 1, clients: [winner] });
        // One audit entry per machine: the winner's binding, and each loser's refusal with its reason.
        const audit = await call(servers[0]!.url, "GET", "/api/audit?action=client.register&limit=1000", { token: admin });
        const entries: { id: number; target: string; outcome: string; reason: string }[] = audit.body.items
          .filter((e: { target: string }) => uuids.includes(e.target))
          .reverse();
        expect(entries).toHaveLength(PARALLEL);
        for (const e of entries) {
          expect({ target: e.target, outcome: e.outcome, reason: e.reason }).toEqual(
            e.target === winner
              ? { target: winner, outcome: "success", reason: `key ${key!.id} bound` }
              : { target: e.target, outcome: "failure", reason: IN_USE },
          );
        }
        const side = entries.map((e) => uuids.indexOf(e.target) % 2);
        switches.push(side.filter((s, i) => i > 0 && s !== side[i - 1]).length);
        // The losers were not recorded as clients at all.
        const clients = await call(servers[1]!.url, "GET", "/api/clients?limit=1000", { token: await login(servers[1]!.url) });
        const mine = clients.body.items.filter((c: { uuid: string }) => uuids.includes(c.uuid));
        expect(mine.map((c: { uuid: string }) => c.uuid)).toEqual([winner]);
        // The winner reconnects on either server once its socket is gone.
        await closeAll(sockets);
        const again = await RpcClient.connect(servers[(winners[0]! + 1) % 2]!.wsUrl);
        // The other server may not have seen the first socket close yet: a clone (409), briefly.
        const reply = await eventually(
          async () => {
            const r = await again.request("client", "register", regArgs(winner, key!.key));
            return (r.name === "response" || r.args.code !== 409) && r;
          },
          { what: "the other server to see the winner's first socket close" },
        );
        expect(reply).toMatchObject({ name: "response", args: { reconnect: true } });
        again.close();
        expect(stored(key!.id)).toMatchObject({ status: "active", client_uuid: winner, usage_count: 2 });
      } finally {
        await closeAll(sockets);
      }
    },
  );

  test("the rounds truly raced: the two servers' registrations interleave at the database", () => {
    // Had each server handled its half of a round in one go, the round's audit log would switch
    // servers once; twice or more means one server's run was cut by the other's writes and resumed.
    expect(switches).toHaveLength(ROUNDS);
    expect(Math.max(...switches)).toBeGreaterThanOrEqual(2);
  });

  test(`${PARALLEL} machines, ${PARALLEL} keys, each machine its own key: all win, every key bound once`, async () => {
    const keys = await newKeys(PARALLEL);
    const sockets = await openSockets(PARALLEL);
    try {
      const uuids: string[] = sockets.map(() => crypto.randomUUID());
      const replies = await Promise.all(sockets.map((s, i) => s.request("client", "register", regArgs(uuids[i]!, keys[i]!.key))));
      expect(replies.every((r) => r.name === "response")).toBe(true);
      for (const [i, k] of keys.entries())
        expect(stored(k.id)).toEqual({ status: "active", client_uuid: uuids[i]!, usage_count: 1, clients: [uuids[i]!] });
    } finally {
      await closeAll(sockets);
    }
  });
});

describe("revocation reaches a client connected to the other server", () => {
  test("revoked over REST on server 0, the client on server 1 is closed", async () => {
    const [key] = await newKeys(1);
    const uuid = crypto.randomUUID();
    const client = await RpcClient.connect(servers[1]!.wsUrl);
    expect((await client.request("client", "register", regArgs(uuid, key!.key))).name).toBe("response");
    expect((await call(servers[0]!.url, "POST", `/api/keys/${key!.id}/revoke`, { token: admin })).status).toBe(200);
    const closed = await eventually(() => client.closedWith, { what: "server 1 to close the revoked client's socket" });
    expect(closed).toEqual({ code: 4003, reason: INVALID });
    const retry = await RpcClient.connect(servers[1]!.wsUrl);
    expect((await retry.request("client", "register", regArgs(uuid, key!.key))).args).toEqual({
      code: 403,
      message: INVALID,
      reason: "invalid_key",
    });
    retry.close();
  });

  test("deleted over REST on server 0, the client on server 1 is closed", async () => {
    const [key] = await newKeys(1);
    const uuid = crypto.randomUUID();
    const client = await RpcClient.connect(servers[1]!.wsUrl);
    expect((await client.request("client", "register", regArgs(uuid, key!.key))).name).toBe("response");
    expect((await call(servers[0]!.url, "DELETE", `/api/keys/${key!.id}`, { token: admin })).status).toBe(204);
    const closed = await eventually(() => client.closedWith, { what: "server 1 to close the revoked client's socket" });
    expect(closed).toEqual({ code: 4003, reason: INVALID });
  });
});
