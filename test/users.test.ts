/**
 * Accounts end to end: REST `/api/users` and RPC `latchkey/users` (over /ws and the REST mirror
 * `PUT /latchkey/users`), as scenario tables run in order against one real server. Every change
 * is checked in the audit log (actor, target, outcome).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ADMIN_PASSWORD, call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

type Who = "admin" | "viewer" | "anonymous";

interface AuditExpectation {
  action: string;
  target: string;
  outcome: "success" | "failure" | "denied";
}

interface RestScenario {
  name: string;
  who?: Who;
  method: string;
  path: string;
  body?: unknown;
  status: number;
  /** A fragment the JSON reply must contain (toMatchObject). */
  expected?: unknown;
  /** The newest audit entry of this action afterwards; the actor is always the admin. */
  audit?: AuditExpectation;
}

let server: TestServer;
const tokens: Partial<Record<Who, string>> = {};

beforeAll(async () => {
  server = await startTestServer();
  tokens.admin = await login(server.url);
  await createUser(server.url, tokens.admin, { username: "users-viewer", password: "viewer-password", role: "viewer" });
  tokens.viewer = await login(server.url, "users-viewer", "viewer-password");
});
afterAll(() => server.close());

function tokenOf(who: Who | undefined): { token?: string } {
  const token = who === undefined ? tokens.admin : who === "anonymous" ? undefined : tokens[who];
  return token ? { token } : {};
}

async function newestAudit(action: string): Promise<Record<string, unknown> | undefined> {
  const res = await call(server.url, "GET", `/api/audit?action=${encodeURIComponent(action)}&limit=1`, { token: tokens.admin! });
  expect(res.status).toBe(200);
  return res.body.items[0];
}

async function expectAudited(audit: AuditExpectation): Promise<void> {
  expect(await newestAudit(audit.action)).toMatchObject({ ...audit, actor: "admin", address: "127.0.0.1" });
}

async function runRest(s: RestScenario) {
  const res = await call(server.url, s.method, s.path, { ...tokenOf(s.who), ...(s.body === undefined ? {} : { body: s.body }) });
  expect({ status: res.status, body: res.body }).toMatchObject({ status: s.status, ...(s.expected === undefined ? {} : { body: s.expected }) });
  if (s.audit) await expectAudited(s.audit);
  return res;
}

const long = (n: number) => "p".repeat(n);

describe("REST /api/users lifecycle", () => {
  const scenarios: RestScenario[] = [
    {
      name: "create with defaults: role viewer, no groups",
      method: "POST",
      path: "/api/users",
      body: { username: "alice", password: "alice-password" },
      status: 201,
      expected: { username: "alice", role: "viewer", allowed_groups: [], last_login_at: null, legacy: false },
      audit: { action: "user.create", target: "alice", outcome: "success" },
    },
    {
      name: "create an admin with groups",
      method: "POST",
      path: "/api/users",
      body: { username: "bob", password: "bob-password", role: "admin", allowed_groups: ["ops", "eu west"] },
      status: 201,
      expected: { username: "bob", role: "admin", allowed_groups: ["ops", "eu west"] },
      audit: { action: "user.create", target: "bob", outcome: "success" },
    },
    {
      name: "create a viewer with groups",
      method: "POST",
      path: "/api/users",
      body: { username: "carol", password: "carol-password", role: "viewer", allowed_groups: ["g1"] },
      status: 201,
      expected: { username: "carol", role: "viewer", allowed_groups: ["g1"] },
    },
    {
      name: "a duplicate username is a 409 naming the field",
      method: "POST",
      path: "/api/users",
      body: { username: "alice", password: "another-password" },
      status: 409,
      expected: { error: { code: "conflict", field: "username" } },
      audit: { action: "user.create", target: "alice", outcome: "failure" },
    },
    {
      name: "a duplicate of the bootstrap admin is a 409 too",
      method: "POST",
      path: "/api/users",
      body: { username: "admin", password: "another-password", role: "viewer" },
      status: 409,
      expected: { error: { code: "conflict", field: "username" } },
    },
    {
      name: "a name that differs from an existing one only in case is a 409",
      method: "POST",
      path: "/api/users",
      body: { username: "ADMIN", password: "another-password", role: "admin" },
      status: 409,
      expected: { error: { code: "conflict", field: "username", message: 'a user named "admin" already exists (names differ only in case)' } },
    },
    {
      name: "a 7-character password is refused",
      method: "POST",
      path: "/api/users",
      body: { username: "dave", password: long(7) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
    },
    {
      name: "a 1025-character password is refused",
      method: "POST",
      path: "/api/users",
      body: { username: "dave", password: long(1025) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
    },
    {
      name: "an 8-character password is the shortest accepted",
      method: "POST",
      path: "/api/users",
      body: { username: "dave", password: long(8) },
      status: 201,
      expected: { username: "dave" },
    },
    {
      name: "a 1024-character password is the longest accepted",
      method: "POST",
      path: "/api/users",
      body: { username: "erin", password: long(1024) },
      status: 201,
      expected: { username: "erin" },
    },
    {
      name: "get one account",
      method: "GET",
      path: "/api/users/bob",
      status: 200,
      expected: { username: "bob", role: "admin", allowed_groups: ["ops", "eu west"], last_login_at: null },
    },
    { name: "get an unknown account", method: "GET", path: "/api/users/nobody", status: 404, expected: { error: { code: "not_found" } } },
    {
      name: "patch the role",
      method: "PATCH",
      path: "/api/users/alice",
      body: { role: "admin" },
      status: 200,
      expected: { username: "alice", role: "admin", allowed_groups: [] },
      audit: { action: "user.update", target: "alice", outcome: "success" },
    },
    {
      name: "patch the groups",
      method: "PATCH",
      path: "/api/users/alice",
      body: { allowed_groups: ["north", "south"] },
      status: 200,
      expected: { username: "alice", role: "admin", allowed_groups: ["north", "south"] },
      audit: { action: "user.update", target: "alice", outcome: "success" },
    },
    {
      name: "patch the role back and clear the groups",
      method: "PATCH",
      path: "/api/users/alice",
      body: { role: "viewer", allowed_groups: [] },
      status: 200,
      expected: { role: "viewer", allowed_groups: [] },
    },
    {
      name: "patch the password",
      method: "PATCH",
      path: "/api/users/carol",
      body: { password: "carol-new-password" },
      status: 200,
      expected: { username: "carol" },
      audit: { action: "user.passwd", target: "carol", outcome: "success" },
    },
    {
      name: "patch with a 7-character password is refused",
      method: "PATCH",
      path: "/api/users/carol",
      body: { password: long(7) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
    },
    {
      name: "patch with a 1025-character password is refused",
      method: "PATCH",
      path: "/api/users/carol",
      body: { password: long(1025) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
    },
    { name: "patch an unknown account", method: "PATCH", path: "/api/users/nobody", body: { role: "viewer" }, status: 404, expected: { error: { code: "not_found" } } },
    {
      name: "the bootstrap admin cannot be demoted",
      method: "PATCH",
      path: "/api/users/admin",
      body: { role: "viewer" },
      status: 403,
      expected: { error: { code: "forbidden" } },
      audit: { action: "user.update", target: "admin", outcome: "denied" },
    },
    {
      name: "nor demoted together with a password change (which must not happen either)",
      method: "PATCH",
      path: "/api/users/admin",
      body: { role: "viewer", password: "a-new-admin-password" },
      status: 403,
      expected: { error: { code: "forbidden" } },
    },
    {
      name: "the bootstrap admin cannot be deleted",
      method: "DELETE",
      path: "/api/users/admin",
      status: 403,
      expected: { error: { code: "forbidden" } },
      audit: { action: "user.delete", target: "admin", outcome: "denied" },
    },
    { name: "the bootstrap admin is still an admin", method: "GET", path: "/api/users/admin", status: 200, expected: { username: "admin", role: "admin" } },
    {
      name: "delete an account",
      method: "DELETE",
      path: "/api/users/dave",
      status: 204,
      audit: { action: "user.delete", target: "dave", outcome: "success" },
    },
    { name: "a deleted account is gone", method: "GET", path: "/api/users/dave", status: 404, expected: { error: { code: "not_found" } } },
    { name: "deleting it again is a 404", method: "DELETE", path: "/api/users/dave", status: 404, expected: { error: { code: "not_found" } } },
  ];

  test.each(scenarios)("$name", async (s) => {
    const res = await runRest(s);
    // No reply about an account ever carries its verifiers.
    if (res.status < 300) expect(res.text).not.toMatch(/password_hash|scram_|legacy_hash|"password"/);
    if (s.status === 204) expect(res.text).toBe("");
  });

  test("the admin's password still works after the refused change", async () => {
    expect(await login(server.url, "admin", ADMIN_PASSWORD)).toBeString();
  });

  test("the changed password is the one that logs in", async () => {
    expect(await login(server.url, "carol", "carol-new-password")).toBeString();
    const old = await call(server.url, "POST", "/api/auth/login", { body: { username: "carol", password: "carol-password" } });
    expect(old.status).toBe(401);
  });
});

describe("REST list paging", () => {
  const names = ["page-01", "page-02", "page-03", "page-04", "page-05"];

  beforeAll(async () => {
    for (const username of names) await createUser(server.url, tokens.admin!, { username, password: "paging-password" });
  });

  test("the default page holds every account, sorted by name, with the total", async () => {
    const res = await call(server.url, "GET", "/api/users", { token: tokens.admin! });
    expect(res.status).toBe(200);
    const usernames: string[] = res.body.items.map((u: { username: string }) => u.username);
    expect(usernames).toEqual([...usernames].sort());
    expect(usernames).toEqual(expect.arrayContaining([...names, "admin", "alice", "bob", "carol", "erin", "users-viewer"]));
    expect(res.body.total).toBe(usernames.length);
  });

  const pages = [
    { query: "limit=2&offset=0", size: 2, from: 0 },
    { query: "limit=2&offset=2", size: 2, from: 2 },
    { query: "limit=3&offset=3", size: 3, from: 3 },
    { query: "limit=1000&offset=0", size: Infinity, from: 0 },
    { query: "limit=1", size: 1, from: 0 },
    { query: "offset=1", size: Infinity, from: 1 },
    { query: "limit=5&offset=1000", size: 0, from: 1000 },
  ];

  test.each(pages)("?$query is the matching slice with the same total", async ({ query, size, from }) => {
    const all = (await call(server.url, "GET", "/api/users", { token: tokens.admin! })).body;
    const res = await call(server.url, "GET", `/api/users?${query}`, { token: tokens.admin! });
    expect(res.status).toBe(200);
    expect(res.body.total).toBe(all.total);
    expect(res.body.items).toEqual(all.items.slice(from, from + size));
  });
});

describe("who may touch accounts", () => {
  const routes = [
    { method: "GET", path: "/api/users" },
    { method: "POST", path: "/api/users", body: { username: "intruder", password: "intruder-password", role: "admin" } },
    { method: "GET", path: "/api/users/alice" },
    { method: "PATCH", path: "/api/users/users-viewer", body: { role: "admin" } },
    { method: "PATCH", path: "/api/users/alice", body: { password: "taken-over-password" } },
    { method: "DELETE", path: "/api/users/alice" },
  ];
  const scenarios: RestScenario[] = [
    ...routes.map((r) => ({
      ...r,
      name: `viewer: ${r.method} ${r.path} → 403`,
      who: "viewer" as const,
      status: 403,
      expected: { error: { code: "forbidden" } },
    })),
    ...routes.map((r) => ({
      ...r,
      name: `anonymous: ${r.method} ${r.path} → 401`,
      who: "anonymous" as const,
      status: 401,
      expected: { error: { code: "unauthorized" } },
    })),
  ];

  test.each(scenarios)("$name", runRest);

  const rpcArgs = [
    { action: "list" },
    { action: "get", username: "alice" },
    { action: "create", username: "intruder", password: "intruder-password", role: "admin" },
    { action: "update", username: "users-viewer", role: "admin" },
    { action: "delete", username: "alice" },
  ];

  test.each(rpcArgs)("viewer: latchkey/users $action → 403 over /ws and the mirror", async (args) => {
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      expect((await rpc.request("rpc", "auth_token", { token: tokens.viewer })).name).toBe("response");
      const reply = await rpc.request("latchkey", "users", args);
      expect(reply).toMatchObject({ namespace: "rpc", name: "error", args: { code: 403 } });
    } finally {
      rpc.close();
    }
    const mirror = await call(server.url, "PUT", "/latchkey/users", { token: tokens.viewer!, body: args });
    expect(mirror.status).toBe(403);
    expect(mirror.body.error.code).toBe("forbidden");
  });

  test.each(rpcArgs)("anonymous: latchkey/users $action → 401 over /ws and the mirror", async (args) => {
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      const reply = await rpc.request("latchkey", "users", args);
      expect(reply).toMatchObject({ namespace: "rpc", name: "error", args: { code: 401, message: "Unauthorized" } });
    } finally {
      rpc.close();
    }
    const mirror = await call(server.url, "PUT", "/latchkey/users", { body: args });
    expect(mirror.status).toBe(401);
  });

  test("nothing the viewer or anonymous tried changed anything", async () => {
    const alice = await call(server.url, "GET", "/api/users/alice", { token: tokens.admin! });
    expect(alice.body).toMatchObject({ username: "alice", role: "viewer" });
    expect((await call(server.url, "GET", "/api/users/intruder", { token: tokens.admin! })).status).toBe(404);
    expect((await call(server.url, "GET", "/api/users/users-viewer", { token: tokens.admin! })).body.role).toBe("viewer");
    expect(await login(server.url, "alice", "alice-password")).toBeString();
  });
});

describe("RPC latchkey/users", () => {
  type Transport = "ws" | "mirror";
  interface RpcScenario {
    name: string;
    args: unknown;
    /** 200 for a response, else the error code. */
    code: number;
    expected?: unknown;
    audit?: AuditExpectation;
  }

  /** One call, over either transport, as {code, args}. */
  async function rpcCall(transport: Transport, rpc: RpcClient, args: unknown): Promise<{ code: number; args: any }> {
    if (transport === "ws") {
      const reply = await rpc.request("latchkey", "users", args);
      expect(reply.namespace).toBe("rpc");
      return reply.name === "response" ? { code: 200, args: reply.args } : { code: reply.args.code, args: reply.args };
    }
    const res = await call(server.url, "PUT", "/latchkey/users", { token: tokens.admin!, body: args });
    return res.status === 200 ? { code: 200, args: res.body.args } : { code: res.status, args: { ...res.body.error, code: res.status } };
  }

  function scenarios(t: Transport): RpcScenario[] {
    const u = (name: string) => `${t}-${name}`;
    return [
      {
        name: "create with defaults",
        args: { action: "create", username: u("frank"), password: "frank-password" },
        code: 200,
        expected: { username: u("frank"), role: "viewer", allowed_groups: [] },
        audit: { action: "user.create", target: u("frank"), outcome: "success" },
      },
      {
        name: "create with role and groups",
        args: { action: "create", username: u("grace"), password: "grace-password", role: "admin", allowed_groups: ["red", "blue"] },
        code: 200,
        expected: { username: u("grace"), role: "admin", allowed_groups: ["red", "blue"] },
      },
      {
        name: "duplicate → 409 naming the field",
        args: { action: "create", username: u("frank"), password: "frank-password" },
        code: 409,
        expected: { field: "username" },
        audit: { action: "user.create", target: u("frank"), outcome: "failure" },
      },
      { name: "7-character password", args: { action: "create", username: u("henry"), password: long(7) }, code: 400, expected: { field: "args.password" } },
      { name: "1025-character password", args: { action: "create", username: u("henry"), password: long(1025) }, code: 400, expected: { field: "args.password" } },
      { name: "get", args: { action: "get", username: u("grace") }, code: 200, expected: { username: u("grace"), role: "admin" } },
      { name: "get unknown", args: { action: "get", username: u("nobody") }, code: 404 },
      { name: "list with limit", args: { action: "list", limit: 1 }, code: 200, expected: { items: [{ username: "admin" }] } },
      {
        name: "update role",
        args: { action: "update", username: u("frank"), role: "admin" },
        code: 200,
        expected: { role: "admin" },
        audit: { action: "user.update", target: u("frank"), outcome: "success" },
      },
      { name: "update groups", args: { action: "update", username: u("frank"), allowed_groups: ["x"] }, code: 200, expected: { role: "admin", allowed_groups: ["x"] } },
      {
        name: "update password",
        args: { action: "update", username: u("frank"), password: "frank-new-password" },
        code: 200,
        expected: { username: u("frank") },
        audit: { action: "user.passwd", target: u("frank"), outcome: "success" },
      },
      { name: "update with a 7-character password", args: { action: "update", username: u("frank"), password: long(7) }, code: 400, expected: { field: "args.password" } },
      { name: "update with a 1025-character password", args: { action: "update", username: u("frank"), password: long(1025) }, code: 400, expected: { field: "args.password" } },
      { name: "update unknown", args: { action: "update", username: u("nobody"), role: "viewer" }, code: 404 },
      {
        name: "demote the bootstrap admin",
        args: { action: "update", username: "admin", role: "viewer" },
        code: 403,
        audit: { action: "user.update", target: "admin", outcome: "denied" },
      },
      {
        name: "delete the bootstrap admin",
        args: { action: "delete", username: "admin" },
        code: 403,
        audit: { action: "user.delete", target: "admin", outcome: "denied" },
      },
      { name: "delete", args: { action: "delete", username: u("grace") }, code: 200, expected: "ok", audit: { action: "user.delete", target: u("grace"), outcome: "success" } },
      { name: "get after delete", args: { action: "get", username: u("grace") }, code: 404 },
      { name: "delete again", args: { action: "delete", username: u("grace") }, code: 404 },
    ];
  }

  for (const transport of ["ws", "mirror"] as const) {
    describe(transport === "ws" ? "over /ws" : "over PUT /latchkey/users", () => {
      let rpc: RpcClient;
      beforeAll(async () => {
        rpc = await RpcClient.connect(server.wsUrl);
        expect((await rpc.request("rpc", "auth_token", { token: tokens.admin })).name).toBe("response");
      });
      afterAll(() => rpc.close());

      test.each(scenarios(transport))("$name", async (s) => {
        const reply = await rpcCall(transport, rpc, s.args);
        expect(reply.code).toBe(s.code);
        if (s.code !== 200) expect(reply.args).toMatchObject({ code: s.code, message: expect.any(String) });
        if (s.expected !== undefined) {
          if (typeof s.expected === "object" && s.expected !== null) expect(reply.args).toMatchObject(s.expected);
          else expect(reply.args).toEqual(s.expected);
        }
        if (s.audit) await expectAudited(s.audit);
      });

      test("list pages agree with the REST list", async () => {
        const rest = (await call(server.url, "GET", "/api/users", { token: tokens.admin! })).body;
        const first = await rpcCall(transport, rpc, { action: "list", limit: 3, offset: 0 });
        const second = await rpcCall(transport, rpc, { action: "list", limit: 3, offset: 3 });
        expect(first.args.total).toBe(rest.total);
        expect([...first.args.items, ...second.args.items]).toEqual(rest.items.slice(0, 6));
      });
    });
  }
});

describe("changes end the sessions they should", () => {
  test("a password change closes the user's WebSocket and voids the old token", async () => {
    await createUser(server.url, tokens.admin!, { username: "ivan", password: "ivan-password" });
    const token = await login(server.url, "ivan", "ivan-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth", { username: "ivan", password: "ivan-password" })).name).toBe("response");
    const res = await call(server.url, "PATCH", "/api/users/ivan", { token: tokens.admin!, body: { password: "ivan-new-password" } });
    expect(res.status).toBe(200);
    expect((await rpc.closed).code).toBe(4001);
    expect((await call(server.url, "GET", "/api/auth/session", { token })).status).toBe(401);
  });

  test("deleting a user closes their WebSocket and voids their token", async () => {
    await createUser(server.url, tokens.admin!, { username: "judy", password: "judy-password" });
    const token = await login(server.url, "judy", "judy-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
    const res = await call(server.url, "DELETE", "/api/users/judy", { token: tokens.admin! });
    expect(res.status).toBe(204);
    expect((await rpc.closed).code).toBe(4001);
    expect((await call(server.url, "GET", "/api/auth/session", { token })).status).toBe(401);
  });

  test("a role change ends the user's sessions, WebSockets included; the new role applies at the next login", async () => {
    await createUser(server.url, tokens.admin!, { username: "kate", password: "kate-password", role: "admin" });
    const token = await login(server.url, "kate", "kate-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
    expect((await call(server.url, "GET", "/api/users", { token })).status).toBe(200);
    await call(server.url, "PATCH", "/api/users/kate", { token: tokens.admin!, body: { role: "viewer" } });
    expect((await rpc.closed).code).toBe(4001);
    expect((await call(server.url, "GET", "/api/users", { token })).status).toBe(401);
    const again = await login(server.url, "kate", "kate-password");
    expect((await call(server.url, "GET", "/api/users", { token: again })).status).toBe(403);
  });

  test("a change of groups alone keeps the sessions and applies to the next request", async () => {
    await createUser(server.url, tokens.admin!, { username: "kurt", password: "kurt-password", role: "viewer", allowed_groups: ["a"] });
    const token = await login(server.url, "kurt", "kurt-password");
    expect((await call(server.url, "GET", "/api/auth/session", { token })).body.allowed_groups).toEqual(["a"]);
    await call(server.url, "PATCH", "/api/users/kurt", { token: tokens.admin!, body: { allowed_groups: ["b"] } });
    expect((await call(server.url, "GET", "/api/auth/session", { token })).body.allowed_groups).toEqual(["b"]);
  });
});

describe("the audit trail of account changes", () => {
  test("every change made above is recorded with the admin as actor and the account as target", async () => {
    const res = await call(server.url, "GET", "/api/audit?actor=admin&limit=1000", { token: tokens.admin! });
    expect(res.status).toBe(200);
    const seen = new Set(res.body.items.map((e: { action: string; target: string; outcome: string }) => `${e.action} ${e.target} ${e.outcome}`));
    for (const expected of [
      "user.create alice success",
      "user.create alice failure",
      "user.create bob success",
      "user.update alice success",
      "user.passwd carol success",
      "user.delete dave success",
      "user.delete admin denied",
      "user.update admin denied",
      "user.create ws-frank success",
      "user.create mirror-frank success",
      "user.passwd ivan success",
      "user.delete judy success",
      "user.update kate success",
    ]) {
      expect(seen).toContain(expected);
    }
    // Refused input is not a change: nothing was recorded for the accounts that were never made.
    expect([...seen].filter((s) => String(s).includes("henry") || String(s).includes("intruder"))).toEqual([]);
  });
});
