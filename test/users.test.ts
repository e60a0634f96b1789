/**
 * Accounts end to end: REST `/api/users` and RPC `latchkey/users` (over /ws and the REST mirror
 * `PUT /latchkey/users`), as scenario tables against one real server. Each scenario makes the
 * accounts it needs (under names of its own), sends one request, and counts its side effects:
 * the audit entries the request added must be exactly the ones it expects (actor, target,
 * outcome), and what it changed or must have left alone is read back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ADMIN_PASSWORD, call, createUser, eventually, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

type Who = "admin" | "viewer" | "anonymous";

interface AuditExpectation {
  action: string;
  target: string;
  outcome: "success" | "failure" | "denied";
}

/** An account a scenario makes (as the admin, over REST) before its request. */
interface Given {
  username: string;
  password?: string;
  role?: "admin" | "viewer";
  allowed_groups?: string[];
  /** Made and deleted again: a name that existed once. */
  deleted?: boolean;
}

const GIVEN_PASSWORD = "given-password";

interface RestScenario {
  name: string;
  given?: Given[];
  who?: Who;
  method: string;
  path: string;
  body?: unknown;
  status: number;
  /** A fragment the JSON reply must contain (toMatchObject). */
  expected?: unknown;
  /** Every audit entry the request adds, oldest first; the actor is always the admin. */
  audit: AuditExpectation[];
  /** What the request changed, or must have left alone, read back afterwards. */
  after?: () => Promise<void>;
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

async function makeGiven(given: Given[] = []): Promise<void> {
  for (const { deleted, password = GIVEN_PASSWORD, ...account } of given) {
    await createUser(server.url, tokens.admin!, { ...account, password });
    if (deleted) expect((await call(server.url, "DELETE", `/api/users/${account.username}`, { token: tokens.admin! })).status).toBe(204);
  }
}

/** The id of the newest audit entry: what a request adds comes after it. */
async function auditMark(): Promise<number> {
  const res = await call(server.url, "GET", "/api/audit?limit=1", { token: tokens.admin! });
  expect(res.status).toBe(200);
  return res.body.items[0]?.id ?? 0;
}

/** The audit entries added since `mark`, oldest first, as {action, target, outcome, actor, address}. */
async function auditSince(mark: number): Promise<Record<string, unknown>[]> {
  const res = await call(server.url, "GET", "/api/audit?limit=1000", { token: tokens.admin! });
  expect(res.status).toBe(200);
  return (res.body.items as Record<string, unknown>[])
    .filter((e) => (e.id as number) > mark)
    .reverse()
    .map(({ action, target, outcome, actor, address }) => ({ action, target, outcome, actor, address }));
}

const byAdmin = (audit: AuditExpectation[]) => audit.map((a) => ({ ...a, actor: "admin", address: "127.0.0.1" }));

async function getUser(username: string): Promise<{ status: number; body: any }> {
  return call(server.url, "GET", `/api/users/${username}`, { token: tokens.admin! });
}

async function loginStatus(username: string, password: string): Promise<number> {
  return (await call(server.url, "POST", "/api/auth/login", { body: { username, password } })).status;
}

const long = (n: number) => "p".repeat(n);

describe("REST /api/users", () => {
  const scenarios: RestScenario[] = [
    {
      name: "create with defaults: role viewer, no groups",
      method: "POST",
      path: "/api/users",
      body: { username: "alice", password: "alice-password" },
      status: 201,
      expected: { username: "alice", role: "viewer", allowed_groups: [], last_login_at: null, legacy: false },
      audit: [{ action: "user.create", target: "alice", outcome: "success" }],
      after: async () => expect((await getUser("alice")).body).toMatchObject({ username: "alice", role: "viewer", allowed_groups: [] }),
    },
    {
      name: "create an admin with groups",
      method: "POST",
      path: "/api/users",
      body: { username: "bob", password: "bob-password", role: "admin", allowed_groups: ["ops", "eu west"] },
      status: 201,
      expected: { username: "bob", role: "admin", allowed_groups: ["ops", "eu west"] },
      audit: [{ action: "user.create", target: "bob", outcome: "success" }],
    },
    {
      name: "create a viewer with groups",
      method: "POST",
      path: "/api/users",
      body: { username: "carol", password: "carol-password", role: "viewer", allowed_groups: ["g1"] },
      status: 201,
      expected: { username: "carol", role: "viewer", allowed_groups: ["g1"] },
      audit: [{ action: "user.create", target: "carol", outcome: "success" }],
    },
    {
      name: "a duplicate username is a 409 naming the field, and the account is untouched",
      given: [{ username: "taken", role: "admin" }],
      method: "POST",
      path: "/api/users",
      body: { username: "taken", password: "another-password" },
      status: 409,
      expected: { error: { code: "conflict", field: "username" } },
      audit: [{ action: "user.create", target: "taken", outcome: "failure" }],
      after: async () => {
        expect((await getUser("taken")).body.role).toBe("admin");
        expect(await loginStatus("taken", GIVEN_PASSWORD)).toBe(200);
      },
    },
    {
      name: "a duplicate of the bootstrap admin is a 409 too",
      method: "POST",
      path: "/api/users",
      body: { username: "admin", password: "another-password", role: "viewer" },
      status: 409,
      expected: { error: { code: "conflict", field: "username" } },
      audit: [{ action: "user.create", target: "admin", outcome: "failure" }],
    },
    {
      name: "a name that differs from an existing one only in case is a 409",
      method: "POST",
      path: "/api/users",
      body: { username: "ADMIN", password: "another-password", role: "admin" },
      status: 409,
      expected: {
        error: { code: "conflict", field: "username", message: 'a user named "admin" already exists (names differ only in case)' },
      },
      audit: [{ action: "user.create", target: "ADMIN", outcome: "failure" }],
    },
    {
      name: "a 7-character password is refused",
      method: "POST",
      path: "/api/users",
      body: { username: "dave", password: long(7) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
      audit: [],
      after: async () => expect((await getUser("dave")).status).toBe(404),
    },
    {
      name: "a 1025-character password is refused",
      method: "POST",
      path: "/api/users",
      body: { username: "dan", password: long(1025) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
      audit: [],
      after: async () => expect((await getUser("dan")).status).toBe(404),
    },
    {
      name: "an 8-character password is the shortest accepted",
      method: "POST",
      path: "/api/users",
      body: { username: "dora", password: long(8) },
      status: 201,
      expected: { username: "dora" },
      audit: [{ action: "user.create", target: "dora", outcome: "success" }],
    },
    {
      name: "a 1024-character password is the longest accepted",
      method: "POST",
      path: "/api/users",
      body: { username: "erin", password: long(1024) },
      status: 201,
      expected: { username: "erin" },
      audit: [{ action: "user.create", target: "erin", outcome: "success" }],
    },
    {
      name: "get one account",
      given: [{ username: "gina", role: "admin", allowed_groups: ["ops", "eu west"] }],
      method: "GET",
      path: "/api/users/gina",
      status: 200,
      expected: { username: "gina", role: "admin", allowed_groups: ["ops", "eu west"], last_login_at: null },
      audit: [],
    },
    {
      name: "get an unknown account",
      method: "GET",
      path: "/api/users/nobody",
      status: 404,
      expected: { error: { code: "not_found" } },
      audit: [],
    },
    {
      name: "patch the role",
      given: [{ username: "paul" }],
      method: "PATCH",
      path: "/api/users/paul",
      body: { role: "admin" },
      status: 200,
      expected: { username: "paul", role: "admin", allowed_groups: [] },
      audit: [{ action: "user.update", target: "paul", outcome: "success" }],
      after: async () => expect((await getUser("paul")).body.role).toBe("admin"),
    },
    {
      name: "patch the groups",
      given: [{ username: "pia", role: "admin" }],
      method: "PATCH",
      path: "/api/users/pia",
      body: { allowed_groups: ["north", "south"] },
      status: 200,
      expected: { username: "pia", role: "admin", allowed_groups: ["north", "south"] },
      audit: [{ action: "user.update", target: "pia", outcome: "success" }],
    },
    {
      name: "patch the role back and clear the groups",
      given: [{ username: "pat", role: "admin", allowed_groups: ["north", "south"] }],
      method: "PATCH",
      path: "/api/users/pat",
      body: { role: "viewer", allowed_groups: [] },
      status: 200,
      expected: { role: "viewer", allowed_groups: [] },
      audit: [{ action: "user.update", target: "pat", outcome: "success" }],
    },
    {
      name: "patch the password: the new one logs in, the old one no longer",
      given: [{ username: "penny", password: "penny-password" }],
      method: "PATCH",
      path: "/api/users/penny",
      body: { password: "penny-new-password" },
      status: 200,
      expected: { username: "penny" },
      audit: [{ action: "user.passwd", target: "penny", outcome: "success" }],
      after: async () => {
        expect(await loginStatus("penny", "penny-new-password")).toBe(200);
        expect(await loginStatus("penny", "penny-password")).toBe(401);
      },
    },
    {
      name: "patch with a 7-character password is refused",
      given: [{ username: "percy" }],
      method: "PATCH",
      path: "/api/users/percy",
      body: { password: long(7) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
      audit: [],
    },
    {
      name: "patch with a 1025-character password is refused",
      given: [{ username: "perry" }],
      method: "PATCH",
      path: "/api/users/perry",
      body: { password: long(1025) },
      status: 400,
      expected: { error: { code: "bad_request", field: "password" } },
      audit: [],
    },
    {
      name: "patch an unknown account",
      method: "PATCH",
      path: "/api/users/nobody",
      body: { role: "viewer" },
      status: 404,
      expected: { error: { code: "not_found" } },
      audit: [],
    },
    {
      name: "the bootstrap admin cannot be demoted",
      method: "PATCH",
      path: "/api/users/admin",
      body: { role: "viewer" },
      status: 403,
      expected: { error: { code: "forbidden" } },
      audit: [{ action: "user.update", target: "admin", outcome: "denied" }],
      after: async () => expect((await getUser("admin")).body).toMatchObject({ username: "admin", role: "admin" }),
    },
    {
      // Its password comes from LATCHKEY_ADMIN_PASSWORD here: that part is refused first.
      name: "nor demoted together with a password change (which must not happen either)",
      method: "PATCH",
      path: "/api/users/admin",
      body: { role: "viewer", password: "a-new-admin-password" },
      status: 403,
      expected: { error: { code: "forbidden" } },
      audit: [{ action: "user.passwd", target: "admin", outcome: "denied" }],
      after: async () => {
        expect((await getUser("admin")).body).toMatchObject({ username: "admin", role: "admin" });
        expect(await loginStatus("admin", ADMIN_PASSWORD)).toBe(200);
      },
    },
    {
      name: "the bootstrap admin cannot be deleted",
      method: "DELETE",
      path: "/api/users/admin",
      status: 403,
      expected: { error: { code: "forbidden" } },
      audit: [{ action: "user.delete", target: "admin", outcome: "denied" }],
      after: async () => expect((await getUser("admin")).body).toMatchObject({ username: "admin", role: "admin" }),
    },
    {
      name: "delete an account: it is gone",
      given: [{ username: "dina" }],
      method: "DELETE",
      path: "/api/users/dina",
      status: 204,
      audit: [{ action: "user.delete", target: "dina", outcome: "success" }],
      after: async () => expect((await getUser("dina")).body).toMatchObject({ error: { code: "not_found" } }),
    },
    {
      name: "deleting it again is a 404",
      given: [{ username: "dirk", deleted: true }],
      method: "DELETE",
      path: "/api/users/dirk",
      status: 404,
      expected: { error: { code: "not_found" } },
      audit: [],
    },
  ];

  test.each(scenarios)("$name", async (s) => {
    await makeGiven(s.given);
    const mark = await auditMark();
    const res = await call(server.url, s.method, s.path, { ...tokenOf(s.who), ...(s.body === undefined ? {} : { body: s.body }) });
    expect({ status: res.status, body: res.body }).toMatchObject({
      status: s.status,
      ...(s.expected === undefined ? {} : { body: s.expected }),
    });
    // No reply about an account ever carries its verifiers.
    if (res.status < 300) expect(res.text).not.toMatch(/password_hash|scram_|legacy_hash|"password"/);
    if (s.status === 204) expect(res.text).toBe("");
    expect(await auditSince(mark)).toEqual(byAdmin(s.audit));
    await s.after?.();
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
    expect(usernames).toEqual(expect.arrayContaining([...names, "admin", "users-viewer"]));
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
  const TARGET = "touch-target";
  const TARGET_PASSWORD = "touch-target-password";
  beforeAll(async () => {
    await createUser(server.url, tokens.admin!, { username: TARGET, password: TARGET_PASSWORD, role: "viewer", allowed_groups: ["g1"] });
  });

  /** The refused attempt left the accounts as they were, the target's password included, and made none. */
  async function nothingChanged(): Promise<void> {
    expect((await getUser(TARGET)).body).toMatchObject({ username: TARGET, role: "viewer", allowed_groups: ["g1"] });
    expect((await getUser("users-viewer")).body.role).toBe("viewer");
    expect((await getUser("intruder")).status).toBe(404);
    expect(await loginStatus(TARGET, TARGET_PASSWORD)).toBe(200);
  }

  const routes = [
    { method: "GET", path: "/api/users" },
    { method: "POST", path: "/api/users", body: { username: "intruder", password: "intruder-password", role: "admin" } },
    { method: "GET", path: `/api/users/${TARGET}` },
    { method: "PATCH", path: "/api/users/users-viewer", body: { role: "admin" } },
    { method: "PATCH", path: `/api/users/${TARGET}`, body: { password: "taken-over-password" } },
    { method: "DELETE", path: `/api/users/${TARGET}` },
  ];
  const scenarios = [
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

  test.each(scenarios)("$name, and nothing changed", async (s) => {
    const mark = await auditMark();
    const res = await call(server.url, s.method, s.path, { ...tokenOf(s.who), ...(s.body === undefined ? {} : { body: s.body }) });
    expect({ status: res.status, body: res.body }).toMatchObject({ status: s.status, body: s.expected });
    expect(await auditSince(mark)).toEqual([]);
    await nothingChanged();
  });

  const rpcArgs = [
    { action: "list" },
    { action: "get", username: TARGET },
    { action: "create", username: "intruder", password: "intruder-password", role: "admin" },
    { action: "update", username: "users-viewer", role: "admin" },
    { action: "delete", username: TARGET },
  ];

  test.each(rpcArgs)("viewer: latchkey/users $action → 403 over /ws and the mirror, and nothing changed", async (args) => {
    const mark = await auditMark();
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
    expect(await auditSince(mark)).toEqual([]);
    await nothingChanged();
  });

  test.each(rpcArgs)("anonymous: latchkey/users $action → 401 over /ws and the mirror, and nothing changed", async (args) => {
    const mark = await auditMark();
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      const reply = await rpc.request("latchkey", "users", args);
      expect(reply).toMatchObject({ namespace: "rpc", name: "error", args: { code: 401, message: "Unauthorized" } });
    } finally {
      rpc.close();
    }
    const mirror = await call(server.url, "PUT", "/latchkey/users", { body: args });
    expect(mirror.status).toBe(401);
    expect(await auditSince(mark)).toEqual([]);
    await nothingChanged();
  });
});

describe("RPC latchkey/users", () => {
  type Transport = "ws" | "mirror";
  interface RpcScenario {
    name: string;
    given?: Given[];
    args: unknown;
    /** 200 for a response, else the error code. */
    code: number;
    expected?: unknown;
    /** Every audit entry the call adds, oldest first; the actor is always the admin. */
    audit: AuditExpectation[];
    /** What the call changed, read back afterwards. */
    after?: () => Promise<void>;
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

  /** The scenarios for one transport: the accounts they make carry its name, so the two never meet. */
  function scenarios(t: Transport): RpcScenario[] {
    const u = (name: string) => `${t}-${name}`;
    return [
      {
        name: "create with defaults",
        args: { action: "create", username: u("frank"), password: "frank-password" },
        code: 200,
        expected: { username: u("frank"), role: "viewer", allowed_groups: [] },
        audit: [{ action: "user.create", target: u("frank"), outcome: "success" }],
        after: async () => expect((await getUser(u("frank"))).body).toMatchObject({ role: "viewer" }),
      },
      {
        name: "create with role and groups",
        args: { action: "create", username: u("grace"), password: "grace-password", role: "admin", allowed_groups: ["red", "blue"] },
        code: 200,
        expected: { username: u("grace"), role: "admin", allowed_groups: ["red", "blue"] },
        audit: [{ action: "user.create", target: u("grace"), outcome: "success" }],
      },
      {
        name: "duplicate → 409 naming the field",
        given: [{ username: u("taken") }],
        args: { action: "create", username: u("taken"), password: "frank-password" },
        code: 409,
        expected: { field: "username" },
        audit: [{ action: "user.create", target: u("taken"), outcome: "failure" }],
      },
      {
        name: "7-character password",
        args: { action: "create", username: u("henry"), password: long(7) },
        code: 400,
        expected: { field: "args.password" },
        audit: [],
      },
      {
        name: "1025-character password",
        args: { action: "create", username: u("hank"), password: long(1025) },
        code: 400,
        expected: { field: "args.password" },
        audit: [],
      },
      {
        name: "get",
        given: [{ username: u("gina"), role: "admin" }],
        args: { action: "get", username: u("gina") },
        code: 200,
        expected: { username: u("gina"), role: "admin" },
        audit: [],
      },
      { name: "get unknown", args: { action: "get", username: u("nobody") }, code: 404, audit: [] },
      { name: "list with limit", args: { action: "list", limit: 1 }, code: 200, expected: { items: [{ username: "admin" }] }, audit: [] },
      {
        name: "update role",
        given: [{ username: u("uma") }],
        args: { action: "update", username: u("uma"), role: "admin" },
        code: 200,
        expected: { role: "admin" },
        audit: [{ action: "user.update", target: u("uma"), outcome: "success" }],
      },
      {
        name: "update groups",
        given: [{ username: u("ursula"), role: "admin" }],
        args: { action: "update", username: u("ursula"), allowed_groups: ["x"] },
        code: 200,
        expected: { role: "admin", allowed_groups: ["x"] },
        audit: [{ action: "user.update", target: u("ursula"), outcome: "success" }],
      },
      {
        name: "update password",
        given: [{ username: u("ulf") }],
        args: { action: "update", username: u("ulf"), password: "ulf-new-password" },
        code: 200,
        expected: { username: u("ulf") },
        audit: [{ action: "user.passwd", target: u("ulf"), outcome: "success" }],
        after: async () => {
          expect(await loginStatus(u("ulf"), "ulf-new-password")).toBe(200);
          expect(await loginStatus(u("ulf"), GIVEN_PASSWORD)).toBe(401);
        },
      },
      {
        name: "update with a 7-character password",
        given: [{ username: u("uli") }],
        args: { action: "update", username: u("uli"), password: long(7) },
        code: 400,
        expected: { field: "args.password" },
        audit: [],
      },
      {
        name: "update with a 1025-character password",
        given: [{ username: u("udo") }],
        args: { action: "update", username: u("udo"), password: long(1025) },
        code: 400,
        expected: { field: "args.password" },
        audit: [],
      },
      { name: "update unknown", args: { action: "update", username: u("nobody"), role: "viewer" }, code: 404, audit: [] },
      {
        name: "demote the bootstrap admin",
        args: { action: "update", username: "admin", role: "viewer" },
        code: 403,
        audit: [{ action: "user.update", target: "admin", outcome: "denied" }],
        after: async () => expect((await getUser("admin")).body.role).toBe("admin"),
      },
      {
        name: "delete the bootstrap admin",
        args: { action: "delete", username: "admin" },
        code: 403,
        audit: [{ action: "user.delete", target: "admin", outcome: "denied" }],
        after: async () => expect((await getUser("admin")).body.role).toBe("admin"),
      },
      {
        name: "delete, and the account is gone",
        given: [{ username: u("dora") }],
        args: { action: "delete", username: u("dora") },
        code: 200,
        expected: "ok",
        audit: [{ action: "user.delete", target: u("dora"), outcome: "success" }],
        after: async () => expect((await getUser(u("dora"))).status).toBe(404),
      },
      {
        name: "delete again",
        given: [{ username: u("dirk"), deleted: true }],
        args: { action: "delete", username: u("dirk") },
        code: 404,
        audit: [],
      },
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
        await makeGiven(s.given);
        const mark = await auditMark();
        const reply = await rpcCall(transport, rpc, s.args);
        expect(reply.code).toBe(s.code);
        if (s.code !== 200) expect(reply.args).toMatchObject({ code: s.code, message: expect.any(String) });
        if (s.expected !== undefined) {
          if (typeof s.expected === "object" && s.expected !== null) expect(reply.args).toMatchObject(s.expected);
          else expect(reply.args).toEqual(s.expected);
        }
        expect(await auditSince(mark)).toEqual(byAdmin(s.audit));
        await s.after?.();
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
  const closedByServer = (rpc: RpcClient) => eventually(() => rpc.closedWith, { what: "the server to close the user's WebSocket" });

  test("a password change closes the user's WebSocket and voids the old token", async () => {
    await createUser(server.url, tokens.admin!, { username: "ivan", password: "ivan-password" });
    const token = await login(server.url, "ivan", "ivan-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth", { username: "ivan", password: "ivan-password" })).name).toBe("response");
    const mark = await auditMark();
    const res = await call(server.url, "PATCH", "/api/users/ivan", { token: tokens.admin!, body: { password: "ivan-new-password" } });
    expect(res.status).toBe(200);
    expect((await closedByServer(rpc)).code).toBe(4001);
    expect((await call(server.url, "GET", "/api/auth/session", { token })).status).toBe(401);
    expect(await auditSince(mark)).toEqual(byAdmin([{ action: "user.passwd", target: "ivan", outcome: "success" }]));
  });

  test("deleting a user closes their WebSocket and voids their token", async () => {
    await createUser(server.url, tokens.admin!, { username: "judy", password: "judy-password" });
    const token = await login(server.url, "judy", "judy-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
    const mark = await auditMark();
    const res = await call(server.url, "DELETE", "/api/users/judy", { token: tokens.admin! });
    expect(res.status).toBe(204);
    expect((await closedByServer(rpc)).code).toBe(4001);
    expect((await call(server.url, "GET", "/api/auth/session", { token })).status).toBe(401);
    expect(await auditSince(mark)).toEqual(byAdmin([{ action: "user.delete", target: "judy", outcome: "success" }]));
  });

  test("a role change ends the user's sessions, WebSockets included; the new role applies at the next login", async () => {
    await createUser(server.url, tokens.admin!, { username: "kate", password: "kate-password", role: "admin" });
    const token = await login(server.url, "kate", "kate-password");
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
    expect((await call(server.url, "GET", "/api/users", { token })).status).toBe(200);
    const mark = await auditMark();
    await call(server.url, "PATCH", "/api/users/kate", { token: tokens.admin!, body: { role: "viewer" } });
    expect((await closedByServer(rpc)).code).toBe(4001);
    expect(await auditSince(mark)).toEqual(byAdmin([{ action: "user.update", target: "kate", outcome: "success" }]));
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
