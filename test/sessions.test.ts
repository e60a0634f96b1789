/**
 * Session lifetime and revocation over a real server: the sliding idle limit and the absolute
 * lifetime (on a manual clock), their flags, and everything that must end a user's sessions at
 * once — WebSockets included — whether it happens over REST, RPC or the CLI in another process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  ADMIN_PASSWORD,
  call,
  createUser,
  eventually,
  login,
  manualClock,
  RpcClient,
  runLatchkey,
  startTestServer,
  type TestServer,
} from "./support.ts";

const PASSWORD = "session password one";
const NEW_PASSWORD = "session password two";

/** Status of a request with the token: 200 while the session lives, 401 once it has ended. */
async function sessionStatus(server: TestServer, token: string): Promise<number> {
  return (await call(server.url, "GET", "/api/auth/session", { token })).status;
}

async function signedInSocket(server: TestServer, username: string, password: string): Promise<{ client: RpcClient; token: string }> {
  const client = await RpcClient.connect(server.wsUrl);
  const reply = await client.request("rpc", "auth", { username, password });
  expect(reply.name).toBe("response");
  return { client, token: reply.args[0] };
}

describe("expiry with the default limits (300 s idle, 86400 s absolute)", () => {
  const clock = manualClock();
  let server: TestServer;
  const at = (base: number, seconds: number) => clock.set(base + Math.round(seconds * 1000));

  beforeAll(async () => {
    server = await startTestServer({ clock });
    await createUser(server.url, await login(server.url), { username: "sam", password: PASSWORD });
  });
  afterAll(() => server.close());

  const idleCases: { name: string; uses: number[]; checkAt: number; alive: boolean }[] = [
    { name: "unused, just before the idle limit", uses: [], checkAt: 299.999, alive: true },
    { name: "unused, at the idle limit", uses: [], checkAt: 300, alive: false },
    { name: "used at 200 s, just before 500 s", uses: [200], checkAt: 499.999, alive: true },
    { name: "used at 200 s, at 500 s", uses: [200], checkAt: 500, alive: false },
    { name: "used at 200 s and 450 s, at 749 s", uses: [200, 450], checkAt: 749, alive: true },
    { name: "used at 200 s and 450 s, at 750 s", uses: [200, 450], checkAt: 750, alive: false },
  ];
  for (const c of idleCases) {
    test(`idle: ${c.name} → ${c.alive ? "alive" : "expired"}`, async () => {
      const base = clock();
      const token = await login(server.url, "sam", PASSWORD);
      for (const use of c.uses) {
        at(base, use);
        expect(await sessionStatus(server, token)).toBe(200);
      }
      at(base, c.checkAt);
      expect(await sessionStatus(server, token)).toBe(c.alive ? 200 : 401);
      if (!c.alive) {
        // Expired stays expired.
        expect(await sessionStatus(server, token)).toBe(401);
      }
    });
  }

  test("every kind of successful request slides the idle limit: REST, RPC over /ws, rpc/auth_token", async () => {
    const base = clock();
    const { client, token } = await signedInSocket(server, "sam", PASSWORD);
    const query = () => client.request("rpc", "query", {});
    try {
      at(base, 250);
      expect((await query()).name).toBe("response");
      at(base, 500);
      expect((await call(server.url, "PUT", "/rpc/auth_token", { body: { token } })).body).toEqual({ args: [token, 300] });
      at(base, 750);
      expect((await query()).name).toBe("response");
      at(base, 1000);
      expect(await sessionStatus(server, token)).toBe(200);
      at(base, 1299.999);
      expect((await query()).name).toBe("response");
      at(base, 1599.999);
      expect(await query()).toMatchObject({ name: "error", args: { code: 401, message: "Unauthorized" } });
    } finally {
      client.close();
    }
  });

  test("the periodic sweep removes expired sessions but never one that is still alive", async () => {
    const base = clock();
    const stale = await login(server.url, "sam", PASSWORD);
    const alive = await login(server.url, "sam", PASSWORD);
    // A use a few seconds after login: recent enough that it may not have been written back yet.
    at(base, 4);
    expect(await sessionStatus(server, alive)).toBe(200);
    at(base, 300.5);
    // The server runs this every minute; run it at the awkward moment.
    await server.services.sessions.sweep();
    at(base, 303);
    expect(await sessionStatus(server, alive)).toBe(200);
    expect(await sessionStatus(server, stale)).toBe(401);
  });

  test("absolute: even constant use ends at 86400 s", async () => {
    const base = clock();
    const token = await login(server.url, "sam", PASSWORD);
    for (let t = 250; t < 86400; t += 250) {
      at(base, t);
      if ((await sessionStatus(server, token)) !== 200) throw new Error(`session ended early, at ${t} s`);
    }
    at(base, 86399.999);
    expect(await sessionStatus(server, token)).toBe(200);
    at(base, 86400);
    expect(await sessionStatus(server, token)).toBe(401);
  });

  const expiredTokenCases = [
    {
      name: "over /ws",
      send: async (token: string) => {
        const client = await RpcClient.connect(server.wsUrl);
        try {
          const reply = await client.request("rpc", "auth_token", { token });
          return { code: reply.name === "error" ? reply.args.code : 200, args: reply.args };
        } finally {
          client.close();
        }
      },
    },
    {
      name: "over the REST mirror",
      send: async (token: string) => {
        const res = await call(server.url, "PUT", "/rpc/auth_token", { body: { token } });
        return { code: res.status, args: res.status === 200 ? res.body.args : res.body };
      },
    },
  ];
  for (const c of expiredTokenCases) {
    test(`rpc/auth_token ${c.name}: accepted while alive, 401 once expired`, async () => {
      const base = clock();
      const token = await login(server.url, "sam", PASSWORD);
      at(base, 299);
      expect(await c.send(token)).toEqual({ code: 200, args: [token, 300] });
      at(base, 299 + 300);
      const expired = await c.send(token);
      expect(expired.code).toBe(401);
    });
  }

  test("a socket whose session expired gets 401s and may sign in again", async () => {
    const base = clock();
    const { client } = await signedInSocket(server, "sam", PASSWORD);
    try {
      at(base, 301);
      expect(await client.request("rpc", "query", {})).toMatchObject({ name: "error", args: { code: 401 } });
      expect((await client.request("rpc", "auth", { username: "sam", password: PASSWORD })).name).toBe("response");
      expect((await client.request("rpc", "query", {})).name).toBe("response");
    } finally {
      client.close();
    }
  });
});

describe("--session-idle 60 --session-absolute 120", () => {
  const clock = manualClock();
  let server: TestServer;
  const at = (base: number, seconds: number) => clock.set(base + Math.round(seconds * 1000));

  beforeAll(async () => {
    server = await startTestServer({ clock, flags: ["--session-idle", "60", "--session-absolute", "120"] });
  });
  afterAll(() => server.close());

  test("logins report the configured idle lifetime", async () => {
    const res = await call(server.url, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } });
    expect(res.body.expires_in).toBe(60);
    const rpcLogin = await call(server.url, "PUT", "/rpc/auth", { body: { username: "admin", password: ADMIN_PASSWORD } });
    expect(rpcLogin.body.args[1]).toBe(60);
    const token = await call(server.url, "PUT", "/rpc/auth_token", { body: { token: res.body.token } });
    expect(token.body.args).toEqual([res.body.token, 60]);
  });

  const cases: { name: string; uses: number[]; checkAt: number; alive: boolean }[] = [
    { name: "unused at 59 s", uses: [], checkAt: 59, alive: true },
    { name: "unused at 60 s", uses: [], checkAt: 60, alive: false },
    { name: "used every 50 s, at 119 s", uses: [50, 100], checkAt: 119, alive: true },
    { name: "used every 50 s, at 120 s", uses: [50, 100], checkAt: 120, alive: false },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.alive ? "alive" : "expired"}`, async () => {
      const base = clock();
      const token = await login(server.url);
      for (const use of c.uses) {
        at(base, use);
        expect(await sessionStatus(server, token)).toBe(200);
      }
      at(base, c.checkAt);
      expect(await sessionStatus(server, token)).toBe(c.alive ? 200 : 401);
    });
  }
});

describe("ending a user's sessions", () => {
  let server: TestServer;
  let admin: { client: RpcClient; token: string };
  let adminToken: string;

  beforeAll(async () => {
    server = await startTestServer();
    adminToken = await login(server.url);
    admin = await signedInSocket(server, "admin", ADMIN_PASSWORD);
  });
  afterAll(async () => {
    admin.client.close();
    await server.close();
  });

  const cli = (...args: string[]) => runLatchkey([...args, ...server.storageArgs]);

  const revocations: { name: string; kind: "delete" | "passwd"; act: (username: string) => Promise<void> }[] = [
    {
      name: "REST DELETE /api/users/{username}",
      kind: "delete",
      act: async (u) => expect((await call(server.url, "DELETE", `/api/users/${u}`, { token: adminToken })).status).toBe(204),
    },
    {
      name: "RPC latchkey/users {action: delete}",
      kind: "delete",
      act: async (u) => expect((await admin.client.request("latchkey", "users", { action: "delete", username: u })).args).toBe("ok"),
    },
    {
      name: "CLI `latchkey user delete` in another process",
      kind: "delete",
      act: async (u) => expect(await cli("user", "delete", u)).toMatchObject({ code: 0 }),
    },
    {
      name: "REST PATCH /api/users/{username} {password}",
      kind: "passwd",
      act: async (u) =>
        expect((await call(server.url, "PATCH", `/api/users/${u}`, { token: adminToken, body: { password: NEW_PASSWORD } })).status).toBe(
          200,
        ),
    },
    {
      name: "RPC latchkey/users {action: update, password}",
      kind: "passwd",
      act: async (u) =>
        expect((await admin.client.request("latchkey", "users", { action: "update", username: u, password: NEW_PASSWORD })).name).toBe(
          "response",
        ),
    },
    {
      name: "CLI `latchkey user passwd --password-stdin` in another process",
      kind: "passwd",
      act: async (u) => {
        const result = await runLatchkey(["user", "passwd", u, "--password-stdin", ...server.storageArgs], {
          input: `${NEW_PASSWORD}\n`,
        });
        expect(result).toMatchObject({ code: 0 });
      },
    },
  ];

  revocations.forEach((r, i) => {
    test(`${r.name} ends every session, open WebSockets included (4001)`, async () => {
      const username = `${r.kind}${i}`;
      await createUser(server.url, adminToken, { username, password: PASSWORD });
      const restToken = await login(server.url, username, PASSWORD);
      const byLogin = await signedInSocket(server, username, PASSWORD);
      // A socket that arrived with the bearer token on the upgrade request.
      const byHeader = await RpcClient.connect(server.wsUrl, { authorization: `Bearer ${restToken}` });
      expect((await byHeader.request("rpc", "query", {})).name).toBe("response");
      expect(await sessionStatus(server, restToken)).toBe(200);

      await r.act(username);

      for (const socket of [byLogin.client, byHeader]) {
        const closed = await eventually(() => socket.closedWith, { what: `the server to close ${username}'s WebSocket` });
        expect(closed.code).toBe(4001);
        expect(closed.reason).toStartWith("session ended");
      }
      expect(await sessionStatus(server, restToken)).toBe(401);
      expect(await sessionStatus(server, byLogin.token)).toBe(401);
      const oldPassword = await call(server.url, "POST", "/api/auth/login", { body: { username, password: PASSWORD } });
      expect(oldPassword.status).toBe(401);
      if (r.kind === "passwd") expect(await sessionStatus(server, await login(server.url, username, NEW_PASSWORD))).toBe(200);

      // Nobody else was signed out.
      expect((await admin.client.request("rpc", "query", {})).name).toBe("response");
      expect(await sessionStatus(server, adminToken)).toBe(200);
    });
  });

  test("logout ends that one session and closes the sockets that use it, not the user's others", async () => {
    await createUser(server.url, adminToken, { username: "leaver", password: PASSWORD });
    const token = await login(server.url, "leaver", PASSWORD);
    const sameSession = await RpcClient.connect(server.wsUrl);
    expect((await sameSession.request("rpc", "auth_token", { token })).name).toBe("response");
    const otherSession = await signedInSocket(server, "leaver", PASSWORD);
    try {
      expect((await call(server.url, "POST", "/api/auth/logout", { token })).status).toBe(200);
      expect((await eventually(() => sameSession.closedWith, { what: "the server to close the logged-out socket" })).code).toBe(4001);
      expect((await otherSession.client.request("rpc", "query", {})).name).toBe("response");
      expect(await sessionStatus(server, otherSession.token)).toBe(200);
    } finally {
      otherSession.client.close();
    }
  });

  test("rpc/auth_clear on one socket closes the other sockets of that session, not itself", async () => {
    await createUser(server.url, adminToken, { username: "clearer", password: PASSWORD });
    const first = await signedInSocket(server, "clearer", PASSWORD);
    const second = await RpcClient.connect(server.wsUrl);
    try {
      expect((await second.request("rpc", "auth_token", { token: first.token })).name).toBe("response");
      expect((await first.client.request("rpc", "auth_clear", "junk")).args).toBe("ok");
      expect((await eventually(() => second.closedWith, { what: "the server to close the other socket of the session" })).code).toBe(4001);
      expect(await first.client.request("rpc", "query", {})).toMatchObject({ name: "error", args: { code: 401 } });
      expect(await sessionStatus(server, first.token)).toBe(401);
    } finally {
      first.client.close();
    }
  });
});

describe("--ws-idle 5", () => {
  let server: TestServer;
  beforeAll(async () => {
    // 5 s is the smallest idle limit the configuration accepts.
    server = await startTestServer({ flags: ["--ws-idle", "5"] });
  });
  afterAll(() => server.close());

  test("a silent WebSocket is closed (4000) while a chatty one stays open", async () => {
    const silent = await signedInSocket(server, "admin", ADMIN_PASSWORD);
    const chatty = await RpcClient.connect(server.wsUrl);
    let chatting = true;
    const chat = (async () => {
      while (chatting && chatty.ws.readyState === WebSocket.OPEN) {
        await Promise.race([chatty.request("rpc", "query", {}), chatty.closed]);
        // The chatty client's pace (a message a second, well inside the 5 s limit), not a synchronisation.
        await Bun.sleep(1000);
      }
    })();
    try {
      const closed = await eventually(() => silent.client.closedWith, {
        timeoutMs: 15_000,
        what: "the server to close the silent WebSocket",
      });
      expect(closed.code).toBe(4000);
      expect(chatty.ws.readyState).toBe(WebSocket.OPEN);
      expect((await chatty.request("rpc", "query", {})).name).toBe("error");
      // Closing the socket does not end the session: the token still works over REST.
      expect(await sessionStatus(server, silent.token)).toBe(200);
    } finally {
      chatting = false;
      await chat;
      chatty.close();
    }
  }, 20_000);
});
