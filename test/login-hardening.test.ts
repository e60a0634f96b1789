/**
 * Logins under attack, over real sockets: guesses sent together are held to the throttles
 * (REST, /ws pipelined frames, the REST mirror), the hashing work is bounded so that another
 * address's login goes through during a burst, one address cannot lock an account out for the
 * others, pending SCRAM exchanges are capped per address, and a change of credentials wins over
 * every login in flight (password logins, SCRAM, the wsauth challenge; REST, RPC and the CLI).
 *
 * Distinct client addresses come through `--trusted-proxy 127.0.0.1/32`: every request names
 * its address in X-Forwarded-For, as a reverse proxy would.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { clientFinalMessage, clientFirstMessage } from "../src/core/scram.ts";
import {
  ADMIN_PASSWORD,
  call,
  createUser,
  eventually,
  login,
  manualClock,
  metric,
  RpcClient,
  runLatchkey,
  startTestServer,
  type TestServer,
} from "./support.ts";

const PROXY = ["--trusted-proxy", "127.0.0.1/32"];
const PASSWORD = "the right password";
const from = (address: string) => ({ "x-forwarded-for": address });

async function restLogin(server: TestServer, username: string, password: string, address: string) {
  return call(server.url, "POST", "/api/auth/login", { body: { username, password }, headers: from(address) });
}

/** How many replies had each status. */
function tally(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

async function auditEntries(server: TestServer, token: string, query = ""): Promise<any[]> {
  const res = await call(server.url, "GET", `/api/audit?format=jsonl${query}`, { token });
  expect(res.status).toBe(200);
  return res.text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

async function sessionAlive(server: TestServer, token: string): Promise<boolean> {
  const res = await call(server.url, "GET", "/api/auth/session", { token });
  expect([200, 401]).toContain(res.status);
  return res.status === 200;
}

/** A SCRAM exchange over REST, started now and finished when asked. */
async function startScram(server: TestServer, username: string, address: string) {
  const first = clientFirstMessage(username);
  const start = await call(server.url, "POST", "/api/auth/scram/start", { body: { client_first: first.message }, headers: from(address) });
  expect(start.status).toBe(200);
  return {
    serverFirst: start.body.server_first as string,
    async finish(password: string) {
      const final = await clientFinalMessage({
        password,
        clientFirstBare: first.bare,
        serverFirst: start.body.server_first,
        clientNonce: first.nonce,
      });
      return call(server.url, "POST", "/api/auth/scram/finish", { body: { client_final: final.message }, headers: from(address) });
    },
  };
}

describe("guesses sent together are held to the limits", () => {
  let server: TestServer;
  let admin: string;
  // Time stands still here, so that no backoff runs out while a burst is being answered (after 5
  // failures, the 6th guess may come after 1 s; that is the backoff, not a burst slipping through).
  const clock = manualClock(Date.now());
  beforeAll(async () => {
    server = await startTestServer({ flags: PROXY, clock });
    admin = await login(server.url);
  });
  afterAll(() => server.close());

  test(
    "100 parallel REST guesses on one account from one address: " +
      "5 are evaluated, the rest get 429 before hashing, the right one last included",
    async () => {
      await createUser(server.url, admin, { username: "rest-victim", password: PASSWORD });
      const guesses = Array.from({ length: 99 }, (_, i) => restLogin(server, "rest-victim", `guess ${i}`, "10.1.0.1"));
      guesses.push(restLogin(server, "rest-victim", PASSWORD, "10.1.0.1"));
      const replies = await Promise.all(guesses);
      expect(tally(replies.map((r) => r.status))).toEqual({ 401: 5, 429: 95 });
      expect(replies.at(-1)!.status).toBe(429);
      for (const r of replies.filter((r) => r.status === 429)) expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
      const entries = (await auditEntries(server, admin, "&action=auth.password")).filter((e) => e.target === "rest-victim");
      expect(tally(entries.map((e) => (e.outcome === "failure" ? 1 : e.outcome === "denied" ? 2 : 3)))).toEqual({ 1: 5, 2: 95 });
      expect(entries.every((e) => e.address === "10.1.0.1")).toBe(true);
    },
  );

  test("2,500 rpc/auth frames pipelined on one socket: 5 are evaluated, the rest get 429", async () => {
    await createUser(server.url, admin, { username: "ws-victim", password: PASSWORD });
    const client = await RpcClient.connect(server.wsUrl, from("10.1.0.2"));
    try {
      const replies = await Promise.all(
        Array.from({ length: 2500 }, (_, i) =>
          client.request("rpc", "auth", { username: "ws-victim", password: i === 2499 ? PASSWORD : `guess ${i}` }),
        ),
      );
      expect(tally(replies.map((r) => (r.name === "response" ? 200 : r.args.code)))).toEqual({ 401: 5, 429: 2495 });
      expect(replies.at(-1)!.args.code).toBe(429);
    } finally {
      client.close();
    }
  });

  test("100 parallel guesses over the REST mirror PUT /rpc/auth: 5 are evaluated", async () => {
    await createUser(server.url, admin, { username: "mirror-victim", password: PASSWORD });
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(server.url, "PUT", "/rpc/auth", { body: { username: "mirror-victim", password: `guess ${i}` }, headers: from("10.1.0.3") }),
      ),
    );
    expect(tally(replies.map((r) => r.status))).toEqual({ 401: 5, 429: 95 });
  });

  test("one address guessing 60 accounts at once: 20 are evaluated (the per-address limit)", async () => {
    const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => restLogin(server, `sprayed${i}`, "guess", "10.1.0.4")));
    expect(tally(replies.map((r) => r.status))).toEqual({ 401: 20, 429: 40 });
    expect(replies.filter((r) => r.status === 429).every((r) => r.body.error.message.includes("address"))).toBe(true);
  });

  test("7 failures from one address do not lock the account for another address", async () => {
    await createUser(server.url, admin, { username: "elsewhere", password: PASSWORD });
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await restLogin(server, "elsewhere", `guess ${i}`, "10.1.0.5")).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    expect((await restLogin(server, "elsewhere", PASSWORD, "10.1.0.5")).status).toBe(429);
    const other = await restLogin(server, "elsewhere", PASSWORD, "10.1.0.6");
    expect(other.status).toBe(200);
  });
});

describe("the account-wide limit", () => {
  test("50 failures in 15 minutes from many addresses lock the account everywhere until the oldest leaves the window", async () => {
    const clock = manualClock();
    const server = await startTestServer({ flags: PROXY, clock });
    try {
      const admin = await login(server.url);
      await createUser(server.url, admin, { username: "popular", password: PASSWORD });
      // 5 failures from each of 10 addresses: no (account, address) pair and no address is over its limit.
      for (let a = 0; a < 10; a++) {
        const replies = await Promise.all(
          Array.from({ length: 5 }, (_, i) => restLogin(server, "popular", `guess ${a}.${i}`, `10.2.0.${a}`)),
        );
        expect(replies.map((r) => r.status)).toEqual([401, 401, 401, 401, 401]);
        clock.advance(60_000);
      }
      const locked = await restLogin(server, "popular", PASSWORD, "10.2.1.1");
      expect(locked.status).toBe(429);
      expect(locked.body.error.message).toContain("account");
      // The first failures were 10 minutes ago: 5 more minutes and the window lets the owner in.
      expect(locked.body.error.retry_after).toBe(300);
      clock.advance(300_000);
      expect((await restLogin(server, "popular", PASSWORD, "10.2.1.1")).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe("the hashing work is bounded", () => {
  test("during a burst of 600 guesses from 30 addresses, another address's login completes ahead of most of the burst", async () => {
    // The burst's sockets never sign in (every guess fails): on a busy machine answering them all
    // may take longer than the default 10 s sign-in deadline, which would close them mid-burst.
    const server = await startTestServer({ flags: [...PROXY, "--ws-auth-timeout", "600"] });
    // The burst comes over WebSockets (20 pipelined frames on each of 30), so that no HTTP client
    // pool holds the bystander's request back behind it.
    const sockets = await Promise.all(Array.from({ length: 30 }, (_, a) => RpcClient.connect(server.wsUrl, from(`10.3.0.${a}`))));
    try {
      const admin = await login(server.url);
      await createUser(server.url, admin, { username: "bystander", password: PASSWORD });
      const burst = sockets.flatMap((socket, a) =>
        Array.from({ length: 20 }, (_, i) => socket.request("rpc", "auth", { username: `target${a}.${i % 4}`, password: `guess ${i}` })),
      );
      // Once most of the burst waits in the server's hashing queue, log in from an address of its own.
      await eventually(async () => (await metric(server.url, "latchkey_login_verifications_pending")) >= 300, {
        what: "300 of the burst's guesses to wait for hashing",
      });
      const mine = await restLogin(server, "bystander", PASSWORD, "10.3.1.1");
      const replies = await Promise.all(burst);
      expect(mine.status).toBe(200);
      // Every guess got an answer: evaluated (401) or, past a limit, throttled (429).
      const statuses = tally(replies.map((r) => r.args.code));
      expect(Object.keys(statuses).every((s) => ["401", "429"].includes(s))).toBe(true);
      // Lanes take turns: at most one verification per busy address (and those already running)
      // finished before the bystander's. Without the queue, most of the burst's would have.
      const entries = await auditEntries(server, admin, "&action=auth.password");
      const success = entries.findIndex((e) => e.target === "bystander" && e.outcome === "success");
      const failures = entries.filter((e) => e.outcome === "failure" && e.address?.startsWith("10.3.0."));
      const before = entries.slice(0, success).filter((e) => e.outcome === "failure" && e.address?.startsWith("10.3.0.")).length;
      expect(failures.length).toBe(statuses[401]!);
      expect(failures.length).toBeGreaterThan(300);
      expect(before).toBeLessThanOrEqual(30 + 2 + 5);
    } finally {
      for (const s of sockets) s.close();
      await server.close();
    }
  });
});

describe("pending SCRAM exchanges are capped per address", () => {
  test("10,050 anonymous starts from one address do not evict another address's exchange; they evict only their own oldest", async () => {
    const server = await startTestServer({ flags: PROXY });
    const flood = await RpcClient.connect(server.wsUrl, from("10.4.0.1"));
    try {
      await createUser(server.url, await login(server.url), { username: "patient", password: PASSWORD });
      const theirs = await startScram(server, "patient", "10.4.0.2");
      const ownFirst = await startScram(server, "patient", "10.4.0.1");
      const replies = await Promise.all(
        Array.from({ length: 10_050 }, (_, i) =>
          flood.request("rpc", "auth_scram", { client_first: clientFirstMessage(`nobody${i}`).message }),
        ),
      );
      expect(replies.every((r) => r.name === "response")).toBe(true);
      expect((await theirs.finish(PASSWORD)).status).toBe(200);
      const own = await ownFirst.finish(PASSWORD);
      expect(own.status).toBe(401);
      expect(own.body.error.message).toContain("unknown or expired SCRAM exchange");
    } finally {
      flood.close();
      await server.close();
    }
  });
});

describe("a change of credentials wins over every login in flight", () => {
  let server: TestServer;
  let admin: string;
  beforeAll(async () => {
    server = await startTestServer({ flags: [...PROXY, "--legacy-challenge-login"] });
    admin = await login(server.url);
  });
  afterAll(() => server.close());

  /**
   * Each change, and which sessions may outlive it: none made with a password it replaced; after a
   * role change, only those of logins that read the account after it (they carry the new role).
   */
  const changes: { name: string; apply: (username: string) => Promise<void>; mayOutlive?: (session: { role: string }) => boolean }[] = [
    {
      name: "a password change over REST",
      apply: async (u) =>
        expect(
          (await call(server.url, "PATCH", `/api/users/${u}`, { token: admin, body: { password: "a brand new password" } })).status,
        ).toBe(200),
    },
    {
      name: "a password change over RPC",
      apply: async (u) =>
        expect(
          (
            await call(server.url, "PUT", "/latchkey/users", {
              token: admin,
              body: { action: "update", username: u, password: "a brand new password" },
            })
          ).status,
        ).toBe(200),
    },
    {
      name: "a password change by `latchkey user passwd` in another process",
      apply: async (u) => {
        const res = await runLatchkey(["user", "passwd", u, "--password-stdin", ...server.storageArgs], {
          input: "a brand new password\n",
        });
        expect(res.code).toBe(0);
      },
    },
    {
      name: "a role change",
      apply: async (u) =>
        expect((await call(server.url, "PATCH", `/api/users/${u}`, { token: admin, body: { role: "admin" } })).status).toBe(200),
      mayOutlive: (session) => session.role === "admin",
    },
  ];

  changes.forEach((change, i) => {
    test(`a SCRAM exchange started before ${change.name} cannot be finished after it`, async () => {
      const username = `scram-change-${i}`;
      await createUser(server.url, admin, { username, password: PASSWORD });
      const exchange = await startScram(server, username, `10.5.${i}.1`);
      await change.apply(username);
      const res = await exchange.finish(PASSWORD);
      expect(res.status).toBe(401);
      expect(res.body.token).toBeUndefined();
    });
  });

  changes.forEach((change, i) => {
    test(`password logins racing ${change.name}: no session survives the change (10 rounds)`, async () => {
      for (let round = 0; round < 10; round++) {
        const username = `race-${i}-${round}`;
        await createUser(server.url, admin, { username, password: PASSWORD });
        // 20 logins from 20 addresses (no throttle in the way), the change in the middle of them.
        const logins = Array.from({ length: 20 }, (_, k) => restLogin(server, username, PASSWORD, `10.6.${round}.${k}`));
        // Part of the race, not a synchronisation: each round lands the change at another point of the logins.
        await Bun.sleep(5 + round * 3);
        await change.apply(username);
        const replies = await Promise.all(logins);
        expect(replies.every((r) => r.status === 200 || r.status === 401)).toBe(true);
        const tokens = replies.filter((r) => r.status === 200).map((r) => r.body.token as string);
        const sessions = await Promise.all(tokens.map((token) => call(server.url, "GET", "/api/auth/session", { token })));
        const wrong = sessions.filter((r) => r.status === 200 && !(change.mayOutlive?.(r.body) ?? false));
        expect({ round, outliving: wrong.length }).toEqual({ round, outliving: 0 });
      }
    });
  });

  test("logins racing the account's deletion get 401, never 500, and leave no session (10 rounds)", async () => {
    for (let round = 0; round < 10; round++) {
      const username = `doomed-${round}`;
      await createUser(server.url, admin, { username, password: PASSWORD });
      const logins = Array.from({ length: 20 }, (_, k) => restLogin(server, username, PASSWORD, `10.7.${round}.${k}`));
      // Part of the race, not a synchronisation: each round lands the deletion at another point of the logins.
      await Bun.sleep(5 + round * 3);
      expect((await call(server.url, "DELETE", `/api/users/${username}`, { token: admin })).status).toBe(204);
      const replies = await Promise.all(logins);
      expect(tally(replies.map((r) => r.status))[500]).toBeUndefined();
      expect(replies.every((r) => r.status === 200 || r.status === 401)).toBe(true);
      for (const r of replies.filter((r) => r.status === 200)) expect(await sessionAlive(server, r.body.token)).toBe(false);
    }
    expect(await server.services.storage.sql.get("SELECT count(*) AS n FROM sessions WHERE user_id NOT IN (SELECT id FROM users)")).toEqual(
      {
        n: 0,
      },
    );
  });

  test("a wsauth challenge given before a password change cannot be answered after it", async () => {
    const salt = "0123456789abcdef";
    const hash = createHash("sha256")
      .update(PASSWORD + salt)
      .digest("hex");
    const file = join(server.dataDir, "import.json");
    writeFileSync(
      file,
      JSON.stringify({ users: [{ username: "legacy-lee", password_hash: hash, salt, role: "viewer", allowed_groups: [] }] }),
    );
    expect((await runLatchkey(["user", "import", file, "--legacy-challenge-login", ...server.storageArgs])).code).toBe(0);
    const answer = async () => {
      const challenge = await call(server.url, "POST", "/api/auth/challenge", {
        body: { username: "legacy-lee" },
        headers: from("10.8.0.1"),
      });
      expect(challenge.status).toBe(200);
      return (nonce = challenge.body.nonce as string) =>
        call(server.url, "POST", "/api/auth/login", {
          body: {
            username: "legacy-lee",
            nonce,
            response: createHash("sha256")
              .update(hash + nonce)
              .digest("hex"),
          },
          headers: from("10.8.0.1"),
        });
    };
    expect((await (await answer())()).status).toBe(200);
    const pending = await answer();
    expect(
      (
        await runLatchkey(["user", "passwd", "legacy-lee", "--password-stdin", ...server.storageArgs], {
          input: "another password\n",
        })
      ).code,
    ).toBe(0);
    expect((await pending()).status).toBe(401);
  });
});

describe("LATCHKEY_ADMIN_PASSWORD is admin's password at every start", () => {
  test(
    "a changed value applies at the next start, is audited, " +
      "and ends admin's sessions; " +
      "while it is set the API refuses to change it",
    async () => {
      const { parseArgs } = await import("../src/cli/args.ts");
      const { loadConfig, serverFlags } = await import("../src/config.ts");
      const { startServer } = await import("../src/server.ts");
      const { silentLogger } = await import("../src/log.ts");
      const first = await startTestServer();
      const config = loadConfig(parseArgs([...first.storageArgs, "--listen", "127.0.0.1:0"], serverFlags), {});
      const oldToken = await login(first.url);
      await first.stop("restart");

      const second = await startServer(config, { log: silentLogger, adminPassword: "the second password" });
      try {
        expect((await call(second.url, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } })).status).toBe(
          401,
        );
        const token = await login(second.url, "admin", "the second password");
        expect(await sessionAlive({ url: second.url } as TestServer, oldToken)).toBe(false);
        const view = await call(second.url, "GET", "/api/users/admin", { token });
        expect(view.body.password_from_env).toBe(true);
        const refused = await call(second.url, "PATCH", "/api/users/admin", { token, body: { password: "changed from the api" } });
        expect(refused.status).toBe(403);
        expect(refused.body.error.message).toContain("LATCHKEY_ADMIN_PASSWORD");
        const cli = await runLatchkey(["user", "passwd", "admin", "--password-stdin", ...first.storageArgs], {
          input: "changed from the cli\n",
        });
        expect(cli.code).toBe(1);
        expect(cli.stderr).toContain("LATCHKEY_ADMIN_PASSWORD");
        const audit = await auditEntries({ url: second.url } as TestServer, token, "&action=user.passwd");
        expect(audit.map((e) => [e.actor, e.outcome, e.reason])).toEqual([
          ["system", "success", "LATCHKEY_ADMIN_PASSWORD changed"],
          ["admin", "denied", "set by LATCHKEY_ADMIN_PASSWORD"],
          [expect.stringMatching(/^cli:/), "denied", "set by LATCHKEY_ADMIN_PASSWORD"],
        ]);
      } finally {
        await second.stop("restart");
      }

      // Without the variable, the password stays as last set, and can be changed again.
      const third = await startServer(config, { log: silentLogger });
      try {
        const token = await login(third.url, "admin", "the second password");
        expect((await call(third.url, "GET", "/api/users/admin", { token })).body.password_from_env).toBe(false);
        expect((await call(third.url, "PATCH", "/api/users/admin", { token, body: { password: "changed from the api" } })).status).toBe(
          200,
        );
      } finally {
        await third.stop("done");
        first.close().catch(() => {});
      }
    },
  );
});
