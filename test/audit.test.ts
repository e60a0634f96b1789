/**
 * The audit log: `GET /api/audit` (filters, paging, JSON lines export) and RPC `latchkey/audit`,
 * over a known history written by a server on a clock the test moves one second per step. The
 * log must never hold a password or a token, whichever way they were sent.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { ADMIN_PASSWORD, call, createUser, login, manualClock, RpcClient, startTestServer, type TestServer } from "./support.ts";

interface Entry {
  id: number;
  at: string;
  actor: string | null;
  address: string | null;
  action: string;
  target: string | null;
  outcome: "success" | "failure" | "denied";
  reason: string | null;
}

/** Distinctive secrets, each sent once in some way; none may ever show up in the log. */
const SECRETS = {
  created: "Quokka-Zebra-4711-distinctive",
  wrong: "Pangolin-Wrong-9922-distinctive",
  unknownUser: "Axolotl-Ghost-5150-distinctive",
  changed: "Narwhal-Second-3141-distinctive",
  rpcCreated: "Okapi-Mirror-2718-distinctive",
  bogusToken: "BogusTokenText-distinctive-0042",
};

const START = Date.parse("2026-01-01T00:00:00Z");
const clock = manualClock(START);
/** The history's steps, one second apart, so that time filters can be written down as data. */
const STEPS = [
  "admin login",
  "create auditee",
  "auditee logs in",
  "failed logins",
  "password change",
  "websocket logins",
  "rpc mirror",
  "deletion",
  "end",
] as const;
type Step = (typeof STEPS)[number];
const stepAt = (name: Step) => new Date(START + (STEPS.indexOf(name) + 1) * 1000).toISOString();
let server: TestServer;
let admin: string;
let viewer: string;
/** Tokens (and derived values) issued while building the history. */
const issued: string[] = [];
function step(name: Step): void {
  clock.advance(1000);
  expect(new Date(clock()).toISOString()).toBe(stepAt(name));
}

async function allEntries(): Promise<Entry[]> {
  const res = await call(server.url, "GET", "/api/audit?limit=1000", { token: admin });
  expect(res.status).toBe(200);
  expect(res.body.total).toBeLessThan(1000);
  return res.body.items;
}

async function jsonl(query = ""): Promise<{ res: Awaited<ReturnType<typeof call>>; entries: Entry[] }> {
  const res = await call(server.url, "GET", `/api/audit?format=jsonl${query ? `&${query}` : ""}`, { token: admin });
  expect(res.status).toBe(200);
  const lines = res.text.split("\n");
  expect(lines.pop()).toBe("");
  return { res, entries: lines.map((line) => JSON.parse(line) as Entry) };
}

beforeAll(async () => {
  server = await startTestServer({ clock });
  step("admin login");
  admin = await login(server.url);
  await createUser(server.url, admin, { username: "audit-viewer", password: "viewer-password", role: "viewer" });
  viewer = await login(server.url, "audit-viewer", "viewer-password");
  issued.push(admin, viewer);

  step("create auditee");
  await createUser(server.url, admin, { username: "auditee", password: SECRETS.created });

  step("auditee logs in");
  issued.push(await login(server.url, "auditee", SECRETS.created));
  const cookieLogin = await call(server.url, "POST", "/api/auth/login", {
    body: { username: "auditee", password: SECRETS.created, cookie: true },
  });
  expect(cookieLogin.status).toBe(200);
  const cookieToken = /latchkey_session=([^;]+)/.exec(cookieLogin.headers.get("set-cookie") ?? "")?.[1];
  expect(cookieToken).toBeString();
  expect(cookieLogin.body.csrf_token).toBeString();
  issued.push(cookieToken!, cookieLogin.body.csrf_token);

  step("failed logins");
  expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "auditee", password: SECRETS.wrong } })).status).toBe(401);
  expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "ghost", password: SECRETS.unknownUser } })).status).toBe(
    401,
  );

  step("password change");
  expect((await call(server.url, "PATCH", "/api/users/auditee", { token: admin, body: { password: SECRETS.changed } })).status).toBe(200);

  step("websocket logins");
  const rpc = await RpcClient.connect(server.wsUrl);
  const auth = await rpc.request("rpc", "auth", { username: "auditee", password: SECRETS.changed });
  expect(auth.name).toBe("response");
  issued.push(auth.args[0]);
  const other = await RpcClient.connect(server.wsUrl);
  expect((await other.request("rpc", "auth_token", { token: auth.args[0] })).name).toBe("response");
  expect((await other.request("rpc", "auth_token", { token: SECRETS.bogusToken })).args.code).toBe(401);
  expect((await other.request("rpc", "auth_clear", "junk argument")).args).toBe("ok");
  rpc.close();
  other.close();

  step("rpc mirror");
  const created = await call(server.url, "PUT", "/latchkey/users", {
    token: admin,
    body: { action: "create", username: "mirror-made", password: SECRETS.rpcCreated, role: "viewer" },
  });
  expect(created.status).toBe(200);
  const mirrorLogin = await call(server.url, "PUT", "/rpc/auth", { body: { username: "mirror-made", password: SECRETS.rpcCreated } });
  expect(mirrorLogin.status).toBe(200);
  issued.push(mirrorLogin.body.args[0]);
  expect((await call(server.url, "POST", "/api/auth/logout", { token: mirrorLogin.body.args[0] })).status).toBe(200);

  step("deletion");
  expect((await call(server.url, "DELETE", "/api/users/mirror-made", { token: admin })).status).toBe(204);
  expect((await call(server.url, "DELETE", "/api/users/admin", { token: admin })).status).toBe(403);

  step("end");
  // Sessions are stored by the SHA-256 of their token; that must not leak either.
  for (const token of [...issued]) issued.push(createHash("sha256").update(token).digest("hex"));
});
afterAll(() => server.close());

describe("what the history recorded", () => {
  const expected = [
    { action: "user.bootstrap", actor: "system", target: "admin", outcome: "success" },
    // The first start also makes the root CA and the mTLS listener's certificate.
    { action: "ca.generate", actor: "system", outcome: "success" },
    { action: "cert.issue", actor: "system", outcome: "success" },
    { action: "auth.password", actor: "admin", target: "admin", outcome: "success", address: "127.0.0.1" },
    { action: "user.create", actor: "admin", target: "auditee", outcome: "success", address: "127.0.0.1" },
    { action: "auth.password", actor: "auditee", target: "auditee", outcome: "success" },
    { action: "auth.password", actor: "auditee", target: "auditee", outcome: "failure", reason: "wrong password" },
    { action: "auth.password", actor: "ghost", target: "ghost", outcome: "failure", reason: "unknown user" },
    { action: "user.passwd", actor: "admin", target: "auditee", outcome: "success" },
    { action: "auth.token", outcome: "failure" },
    { action: "auth.logout", actor: "auditee", target: "auditee", outcome: "success" },
    { action: "user.create", actor: "admin", target: "mirror-made", outcome: "success" },
    { action: "auth.logout", actor: "mirror-made", target: "mirror-made", outcome: "success" },
    { action: "user.delete", actor: "admin", target: "mirror-made", outcome: "success" },
    { action: "user.delete", actor: "admin", target: "admin", outcome: "denied" },
  ];

  test.each(expected)("$action $target $outcome", async (fragment) => {
    const entries = await allEntries();
    expect(entries).toContainEqual(expect.objectContaining(fragment));
  });

  test("the list is newest first, with ids and times never going backwards", async () => {
    const entries = await allEntries();
    for (let i = 1; i < entries.length; i++) {
      expect(entries[i]!.id).toBeLessThan(entries[i - 1]!.id);
      expect(Date.parse(entries[i]!.at)).toBeLessThanOrEqual(Date.parse(entries[i - 1]!.at));
    }
  });

  test("every entry says when, who, from where, what and how it ended", async () => {
    for (const e of await allEntries()) {
      expect(Object.keys(e).sort()).toEqual(["action", "actor", "address", "at", "id", "outcome", "reason", "target"]);
      expect(new Date(e.at).toISOString()).toBe(e.at);
      expect(["success", "failure", "denied"]).toContain(e.outcome);
      if (e.actor !== "system") expect(e.address).toBe("127.0.0.1");
    }
  });
});

describe("no secret ever reaches the log", () => {
  const places = [
    { name: "the JSON lines export", read: async () => (await jsonl()).res.text },
    { name: "the JSON list", read: async () => (await call(server.url, "GET", "/api/audit?limit=1000", { token: admin })).text },
    {
      name: "RPC latchkey/audit",
      read: async () => (await call(server.url, "PUT", "/latchkey/audit", { token: admin, body: { limit: 1000 } })).text,
    },
  ];

  test.each(places)("$name holds no password, token, CSRF token or token hash", async ({ read }) => {
    const text = await read();
    expect(text.length).toBeGreaterThan(1000);
    for (const secret of [...Object.values(SECRETS), ADMIN_PASSWORD, "viewer-password", ...issued]) {
      expect(secret.length).toBeGreaterThanOrEqual(8);
      expect(text.includes(secret)).toBe(false);
    }
  });
});

describe("GET /api/audit filters", () => {
  type Filter = { query: string; keep: (e: Entry) => boolean; atLeast: number };
  const at = (name: Step) => Date.parse(stepAt(name));
  const filters: Filter[] = [
    { query: "actor=auditee", keep: (e) => e.actor === "auditee", atLeast: 3 },
    { query: "actor=ghost", keep: (e) => e.actor === "ghost", atLeast: 1 },
    { query: "actor=nobody-at-all", keep: () => false, atLeast: 0 },
    { query: "action=user.create", keep: (e) => e.action === "user.create", atLeast: 3 },
    { query: "action=auth.password", keep: (e) => e.action === "auth.password", atLeast: 5 },
    { query: "action=user", keep: () => false, atLeast: 0 },
    { query: "outcome=success", keep: (e) => e.outcome === "success", atLeast: 8 },
    { query: "outcome=failure", keep: (e) => e.outcome === "failure", atLeast: 3 },
    { query: "outcome=denied", keep: (e) => e.outcome === "denied", atLeast: 1 },
    { query: "actor=auditee&outcome=failure", keep: (e) => e.actor === "auditee" && e.outcome === "failure", atLeast: 1 },
    {
      query: "action=auth.password&outcome=success&actor=admin",
      keep: (e) => e.action === "auth.password" && e.outcome === "success" && e.actor === "admin",
      atLeast: 1,
    },
    { query: `since=${stepAt("password change")}`, keep: (e) => Date.parse(e.at) >= at("password change"), atLeast: 5 },
    { query: `until=${stepAt("password change")}`, keep: (e) => Date.parse(e.at) < at("password change"), atLeast: 5 },
    {
      query: `since=${stepAt("failed logins")}&until=${stepAt("password change")}`,
      keep: (e) => Date.parse(e.at) >= at("failed logins") && Date.parse(e.at) < at("password change"),
      atLeast: 2,
    },
    {
      query: `since=${encodeURIComponent(new Date(at("websocket logins")).toISOString().replace("Z", "+00:00"))}`,
      keep: (e) => Date.parse(e.at) >= at("websocket logins"),
      atLeast: 4,
    },
    { query: `since=${stepAt("end")}`, keep: () => false, atLeast: 0 },
    {
      query: `until=${stepAt("admin login")}`,
      keep: (e) => ["user.bootstrap", "ca.generate", "cert.issue"].includes(e.action),
      atLeast: 3,
    },
    {
      query: `actor=auditee&since=${stepAt("websocket logins")}`,
      keep: (e) => e.actor === "auditee" && Date.parse(e.at) >= at("websocket logins"),
      atLeast: 2,
    },
  ];

  test.each(filters)("?$query", async ({ query, keep, atLeast }) => {
    const matching = (await allEntries()).filter(keep);
    expect(matching.length).toBeGreaterThanOrEqual(atLeast);
    const res = await call(server.url, "GET", `/api/audit?${query}`, { token: admin });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ items: matching, total: matching.length });
  });

  test.each(filters)("?$query&format=jsonl is the same entries, oldest first", async ({ query, keep }) => {
    const matching = (await allEntries()).filter(keep);
    const { res, entries } = await jsonl(query);
    expect(res.headers.get("content-type")).toStartWith("application/x-ndjson");
    expect(entries).toEqual(matching.reverse());
  });

  const pages = [
    { query: "limit=1", from: 0, size: 1 },
    { query: "limit=3&offset=2", from: 2, size: 3 },
    { query: "offset=5", from: 5, size: 100 },
    { query: "limit=1000&offset=0", from: 0, size: 1000 },
    { query: "limit=10&offset=100000", from: 100000, size: 10 },
    { query: "actor=auditee&limit=2&offset=1", from: 1, size: 2, actor: "auditee" },
  ];

  test.each(pages)("?$query pages through the same list", async ({ query, from, size, actor }) => {
    const matching = (await allEntries()).filter((e) => actor === undefined || e.actor === actor);
    const res = await call(server.url, "GET", `/api/audit?${query}`, { token: admin });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ items: matching.slice(from, from + size), total: matching.length });
  });
});

describe("GET /api/audit?format=jsonl", () => {
  test("one JSON object per line, oldest first, every entry, as a download", async () => {
    const all = await allEntries();
    const { res, entries } = await jsonl();
    expect(res.headers.get("content-type")).toBe("application/x-ndjson");
    expect(res.headers.get("content-disposition")).toContain("attachment");
    expect(entries.length).toBe(all.length);
    expect(entries).toEqual([...all].reverse());
    for (let i = 1; i < entries.length; i++) expect(entries[i]!.id).toBeGreaterThan(entries[i - 1]!.id);
  });

  test("format=json is the ordinary paged list", async () => {
    const res = await call(server.url, "GET", "/api/audit?format=json&limit=2", { token: admin });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("application/json");
    expect(res.body.items).toEqual((await allEntries()).slice(0, 2));
  });

  test("an export with no match is empty", async () => {
    const res = await call(server.url, "GET", "/api/audit?format=jsonl&actor=nobody-at-all", { token: admin });
    expect(res.status).toBe(200);
    expect(res.text).toBe("");
  });

  const refused = [
    { who: "viewer", status: 403, code: "forbidden" },
    { who: "anonymous", status: 401, code: "unauthorized" },
  ];
  test.each(refused)("$who cannot export: $status", async ({ who, status, code }) => {
    const res = await call(server.url, "GET", "/api/audit?format=jsonl", who === "viewer" ? { token: viewer } : {});
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
    expect(res.text).not.toContain("auth.password");
  });
});

describe("RPC latchkey/audit", () => {
  const cases = [
    { label: "{}", args: {}, query: "" },
    { label: "action list", args: { action: "list" }, query: "" },
    { label: "actor", args: { actor: "auditee" }, query: "actor=auditee" },
    { label: "event", args: { event: "user.create" }, query: "action=user.create" },
    { label: "outcome", args: { outcome: "failure" }, query: "outcome=failure" },
    { label: "limit and offset", args: { limit: 2, offset: 1 }, query: "limit=2&offset=1" },
    { label: "actor and outcome", args: { actor: "admin", outcome: "denied" }, query: "actor=admin&outcome=denied" },
    {
      label: "since and until",
      args: { since: stepAt("failed logins"), until: stepAt("websocket logins") },
      query: `since=${stepAt("failed logins")}&until=${stepAt("websocket logins")}`,
    },
  ];

  test.each(cases)("$label over /ws and the mirror is what REST gives for ?$query", async ({ args, query }) => {
    const rest = await call(server.url, "GET", `/api/audit?${query}`, { token: admin });
    expect(rest.status).toBe(200);
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      expect((await rpc.request("rpc", "auth_token", { token: admin })).name).toBe("response");
      const reply = await rpc.request("latchkey", "audit", args);
      expect(reply).toMatchObject({ namespace: "rpc", name: "response" });
      expect(reply.args).toEqual(rest.body);
    } finally {
      rpc.close();
    }
    const mirror = await call(server.url, "PUT", "/latchkey/audit", { token: admin, body: args });
    expect(mirror.status).toBe(200);
    expect(mirror.body).toEqual({ args: rest.body });
  });

  test("a viewer gets 403 and an anonymous caller 401", async () => {
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      expect((await rpc.request("latchkey", "audit", {})).args).toEqual({ code: 401, message: "Unauthorized" });
      expect((await rpc.request("rpc", "auth_token", { token: viewer })).name).toBe("response");
      expect((await rpc.request("latchkey", "audit", {})).args).toMatchObject({ code: 403 });
    } finally {
      rpc.close();
    }
  });
});
