/**
 * Software licensing (SPEC §6, mini-key-server seed) over real HTTP against an in-process server:
 * the seed's public calls answered exactly as the seed documents them, whether the fields come as
 * a form, a query string or JSON (and from `curl -d`, exactly as the seed's example); per-machine
 * activations, deactivation, expiry, throttling, lookup through the token's hash; and the admin
 * side over REST and RPC (applications, keys, search, roles, counters, activations, audit).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { silentLogger } from "../src/log.ts";
import { quickQuery } from "../src/http/licensing-api.ts";
import { startServer } from "../src/server.ts";
import {
  ADMIN_PASSWORD,
  anotherConnection,
  call,
  createUser,
  eventually,
  login,
  manualClock,
  RpcClient,
  startTestServer,
  tempDir,
  TEST_BACKEND,
  type TestServer,
} from "./support.ts";

type Encoding = "form" | "query" | "json";
const ENCODINGS: Encoding[] = ["form", "query", "json"];
const TOKEN = /^[A-Z0-9]{25}$/;

/** Sends the seed's fields as a form body, a query string or a JSON body. */
async function wire(base: string, encoding: Encoding, method: "GET" | "POST", path: string, fields: Record<string, unknown>) {
  const strings = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) strings.append(k, String(v));
  let url = `${base}${path}`;
  const init: RequestInit = { method };
  if (encoding === "query") url += `?${strings}`;
  // fetch sends URLSearchParams as application/x-www-form-urlencoded, like `curl -d`.
  else if (encoding === "form") init.body = strings;
  else {
    init.body = JSON.stringify(fields);
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: JSON.parse(text) as Record<string, any> };
}

/** Admin helpers over REST. */
function admin(server: () => TestServer, token: () => string) {
  let apps = 0;
  return {
    async app(support = "call 555-555-5555 for support"): Promise<{ id: number; support: string }> {
      const res = await call(server().url, "POST", "/api/apps", {
        token: token(),
        body: { name: `App ${++apps} ${Math.random()}`, support_message: support },
      });
      expect(res.status).toBe(201);
      return { id: res.body.id, support };
    },
    async key(
      appId: number,
      options: { activations?: number; memo?: string; expires_at?: string; enabled?: boolean } = {},
    ): Promise<{ id: number; token: string }> {
      const { enabled, ...create } = options;
      const res = await call(server().url, "POST", "/api/licenses", { token: token(), body: { app_id: appId, activations: 1, ...create } });
      expect(res.status).toBe(201);
      if (enabled === false)
        expect(
          (await call(server().url, "PATCH", `/api/licenses/${res.body.id}`, { token: token(), body: { enabled: false } })).status,
        ).toBe(200);
      return { id: res.body.id, token: res.body.token };
    },
    async license(id: number) {
      return (await call(server().url, "GET", `/api/licenses/${id}`, { token: token() })).body;
    },
    async activations(id: number): Promise<{ hwid: string; [field: string]: unknown }[]> {
      return (await call(server().url, "GET", `/api/licenses/${id}/activations`, { token: token() })).body.items;
    },
  };
}

let server: TestServer;
let adminToken: string;
const clock = manualClock(Date.parse("2026-03-01T12:00:00Z"));
const fixtures = admin(
  () => server,
  () => adminToken,
);

beforeAll(async () => {
  server = await startTestServer({ clock });
  adminToken = await login(server.url);
});
afterAll(() => server.close());

// ---------------------------------------------------------------------------------------------
// The seed's wire protocol.

interface WireContext {
  token: string;
  appId: number;
  support: string;
  otherAppId: number;
  otherSupport: string;
}

interface ActivateCase {
  label: string;
  key?: { activations?: number; enabled?: boolean; expires_at?: string };
  /** Machines activated on the key before the case. */
  before?: string[];
  /** Only for these encodings (wrong JSON types cannot be said in a form). */
  only?: Encoding[];
  fields: (c: WireContext) => Record<string, unknown>;
  status: number;
  body: (c: WireContext) => Record<string, unknown>;
}

const ok = (remaining: number) => () => ({ result: "ok", remainingActivations: remaining, receipt: expect.any(String) });
const invalidToken = (support: (c: WireContext) => string) => (c: WireContext) => ({
  result: "failure",
  error: "invalid activation token",
  support_message: support(c),
});
const UNKNOWN = "NOSUCHKEY0NOSUCHKEY0NOSUC";

const ACTIVATE: ActivateCase[] = [
  {
    label: "a new machine takes a seat",
    key: { activations: 3 },
    fields: (c) => ({ token: c.token, app_id: c.appId, machine: "ICEBREAKER", user: "sam", hwid: "hw-1" }),
    status: 201,
    body: ok(2),
  },
  {
    label: "the seed's client: token, machine and user only",
    key: { activations: 10 },
    fields: (c) => ({ token: c.token, machine: "ICEBREAKER", user: "sam" }),
    status: 201,
    body: ok(9),
  },
  { label: "the last seat", fields: (c) => ({ token: c.token, hwid: "hw-1" }), status: 201, body: ok(0) },
  {
    label: "an activated machine again uses no seat",
    before: ["hw-1"],
    fields: (c) => ({ token: c.token, app_id: c.appId, hwid: "hw-1" }),
    status: 201,
    body: ok(0),
  },
  {
    label: "an unlimited key answers -1",
    key: { activations: -1 },
    before: ["hw-0"],
    fields: (c) => ({ token: c.token, hwid: "hw-1" }),
    status: 201,
    body: ok(-1),
  },
  {
    label: "a token in lower case with spaces around it",
    fields: (c) => ({ token: `  ${c.token.toLowerCase()} `, hwid: "hw-1" }),
    status: 201,
    body: ok(0),
  },
  {
    label: "unknown extra fields are ignored",
    fields: (c) => ({ token: c.token, hwid: "hw-1", os: "windows", version: "1.2.3", result: "forged", remainingActivations: 99 }),
    status: 201,
    body: ok(0),
  },
  {
    label: "out of activations, with the application's support message",
    before: ["hw-0"],
    fields: (c) => ({ token: c.token, app_id: c.appId, machine: "OTHER", user: "sam", hwid: "hw-1" }),
    status: 410,
    body: (c) => ({ result: "failure", error: "key is out of activations", support_message: c.support }),
  },
  {
    label: "a key with no seats at all",
    key: { activations: 0 },
    fields: (c) => ({ token: c.token, hwid: "hw-1" }),
    status: 410,
    body: (c) => ({ result: "failure", error: "key is out of activations", support_message: c.support }),
  },
  {
    label: "an unknown token with app_id: that app's support message",
    fields: (c) => ({ token: UNKNOWN, app_id: c.appId, hwid: "hw-1" }),
    status: 404,
    body: invalidToken((c) => c.support),
  },
  { label: "an unknown token without app_id", fields: () => ({ token: UNKNOWN, hwid: "hw-1" }), status: 404, body: invalidToken(() => "") },
  {
    label: "the wrong app_id: the named app's support message",
    fields: (c) => ({ token: c.token, app_id: c.otherAppId, hwid: "hw-1" }),
    status: 404,
    body: invalidToken((c) => c.otherSupport),
  },
  {
    label: "an app_id of no application",
    fields: (c) => ({ token: c.token, app_id: 999999, hwid: "hw-1" }),
    status: 404,
    body: invalidToken(() => ""),
  },
  {
    label: "a disabled key",
    key: { enabled: false },
    fields: (c) => ({ token: c.token, app_id: c.appId, hwid: "hw-1" }),
    status: 404,
    body: invalidToken((c) => c.support),
  },
  {
    label: "an expired key",
    key: { expires_at: "2026-02-01" },
    fields: (c) => ({ token: c.token, hwid: "hw-1" }),
    status: 410,
    body: (c) => ({ result: "failure", error: "key is no longer valid", support_message: c.support }),
  },
  {
    label: "no token",
    fields: () => ({ machine: "ICEBREAKER", user: "sam" }),
    status: 400,
    body: () => ({ result: "failure", error: "token is required", field: "token" }),
  },
  {
    label: "an empty token",
    fields: () => ({ token: "", machine: "ICEBREAKER" }),
    status: 400,
    body: () => ({ result: "failure", error: "token is required", field: "token" }),
  },
  {
    label: "no hwid and no machine",
    fields: (c) => ({ token: c.token, user: "sam" }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("hwid is required"), field: "hwid" }),
  },
  {
    label: "an empty hwid and machine",
    fields: (c) => ({ token: c.token, hwid: "", machine: "" }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("hwid is required"), field: "hwid" }),
  },
  {
    label: "a 129-character token",
    fields: () => ({ token: "A".repeat(129), hwid: "hw-1" }),
    status: 400,
    body: () => ({ result: "failure", error: "token must be at most 128 characters", field: "token" }),
  },
  {
    label: "a 256-character hwid",
    fields: (c) => ({ token: c.token, hwid: "h".repeat(256) }),
    status: 400,
    body: () => ({ result: "failure", error: "hwid must be at most 255 characters", field: "hwid" }),
  },
  {
    label: "a 256-character machine",
    fields: (c) => ({ token: c.token, machine: "m".repeat(256) }),
    status: 400,
    body: () => ({ result: "failure", error: "machine must be at most 255 characters", field: "machine" }),
  },
  {
    label: "a 256-character user",
    fields: (c) => ({ token: c.token, hwid: "hw-1", user: "u".repeat(256) }),
    status: 400,
    body: () => ({ result: "failure", error: "user must be at most 255 characters", field: "user" }),
  },
  {
    label: "an app_id that is not a number",
    fields: (c) => ({ token: c.token, hwid: "hw-1", app_id: "ICEBREAKER" }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("app_id"), field: "app_id" }),
  },
  {
    label: "app_id 0",
    fields: (c) => ({ token: c.token, hwid: "hw-1", app_id: 0 }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("app_id"), field: "app_id" }),
  },
  {
    label: "app_id as a string of digits in JSON",
    only: ["json"],
    fields: (c) => ({ token: c.token, hwid: "hw-1", app_id: String(c.appId) }),
    status: 201,
    body: ok(0),
  },
  {
    label: "a number for the token",
    only: ["json"],
    fields: () => ({ token: 12345, hwid: "hw-1" }),
    status: 400,
    body: () => ({ result: "failure", error: "token must be a string", field: "token" }),
  },
  {
    label: "a number for the hwid",
    only: ["json"],
    fields: (c) => ({ token: c.token, hwid: 42 }),
    status: 400,
    body: () => ({ result: "failure", error: "hwid must be a string", field: "hwid" }),
  },
  {
    label: "a list for the machine",
    only: ["json"],
    fields: (c) => ({ token: c.token, machine: ["a", "b"] }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("machine"), field: "machine" }),
  },
  {
    label: "null for the token",
    only: ["json"],
    fields: () => ({ token: null, hwid: "hw-1" }),
    status: 400,
    body: () => ({ result: "failure", error: expect.stringContaining("token"), field: "token" }),
  },
];

/** A fresh application pair and key for each case, so cases never share seats. */
async function context(key: ActivateCase["key"] = {}, before: string[] = []): Promise<WireContext & { id: number }> {
  const app = await fixtures.app(`support for ${Math.random()}`);
  const other = await fixtures.app("other app's support");
  const license = await fixtures.key(app.id, key);
  for (const hwid of before)
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: license.token, hwid })).status).toBe(201);
  return { id: license.id, token: license.token, appId: app.id, support: app.support, otherAppId: other.id, otherSupport: other.support };
}

describe("POST /api/activate answers exactly as the seed", () => {
  const cases = ACTIVATE.flatMap((c) => (c.only ?? ENCODINGS).map((encoding) => ({ ...c, encoding })));
  test.each(cases)("$encoding: $label", async ({ key, before, fields, status, body, encoding }) => {
    const c = await context(key, before);
    const res = await wire(server.url, encoding, "POST", "/api/activate", fields(c));
    expect({ status: res.status, body: res.body }).toEqual({ status, body: body(c) });
    expect(res.headers.get("content-type")).toStartWith("application/json");
    if (status === 201) expect(typeof res.body.remainingActivations).toBe("number");
  });
});

describe("GET /api/check", () => {
  interface CheckCase {
    label: string;
    key?: ActivateCase["key"];
    before?: string[];
    /** Admin changes after the activations. */
    after?: (c: WireContext & { id: number }) => Promise<void>;
    fields: (c: WireContext) => Record<string, unknown>;
    status: number;
    body: Record<string, unknown> | ((c: WireContext) => Record<string, unknown>);
  }
  const passed = { result: "ok", receipt: expect.any(String) };
  const invalid = { result: "failure", error: "invalid key" };
  const CHECK: CheckCase[] = [
    {
      label: "an activated machine",
      before: ["hw-1"],
      fields: (c) => ({ token: c.token, app_id: c.appId, machine: "ICEBREAKER", user: "sam", hwid: "hw-1" }),
      status: 201,
      body: passed,
    },
    {
      label: "the seed's client, by machine name",
      before: [],
      after: async (c) =>
        void (await wire(server.url, "form", "POST", "/api/activate", { token: c.token, machine: "ICEBREAKER", user: "sam" })),
      fields: (c) => ({ token: c.token, machine: "ICEBREAKER", user: "sam" }),
      status: 201,
      body: passed,
    },
    {
      label: "the first of three activated machines",
      key: { activations: 3 },
      before: ["hw-1", "hw-2", "hw-3"],
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
      status: 201,
      body: passed,
    },
    {
      label: "unknown extra fields are ignored",
      before: ["hw-1"],
      fields: (c) => ({ token: c.token, hwid: "hw-1", os: "linux", result: "forged" }),
      status: 201,
      body: passed,
    },
    {
      label: "a machine that was never activated",
      before: ["hw-1"],
      fields: (c) => ({ token: c.token, hwid: "hw-2" }),
      status: 404,
      body: invalid,
    },
    { label: "an unknown token", fields: () => ({ token: UNKNOWN, hwid: "hw-1" }), status: 404, body: invalid },
    {
      label: "the wrong app_id: the named app's support message",
      before: ["hw-1"],
      fields: (c) => ({ token: c.token, app_id: c.otherAppId, hwid: "hw-1" }),
      status: 404,
      body: (c) => ({ ...invalid, support_message: c.otherSupport }),
    },
    {
      label: "a key disabled after activation",
      before: ["hw-1"],
      after: async (c) => void (await call(server.url, "PATCH", `/api/licenses/${c.id}`, { token: adminToken, body: { enabled: false } })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
      status: 404,
      body: invalid,
    },
    {
      label: "a key that expired after activation",
      before: ["hw-1"],
      after: async (c) =>
        void (await call(server.url, "PATCH", `/api/licenses/${c.id}`, { token: adminToken, body: { expires_at: "2026-02-01" } })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
      status: 410,
      body: { result: "failure", error: "key is no longer valid" },
    },
    {
      label: "a machine whose activation an admin removed",
      before: ["hw-1"],
      after: async (c) => void (await call(server.url, "DELETE", `/api/licenses/${c.id}/activations/hw-1`, { token: adminToken })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
      status: 404,
      body: invalid,
    },
    {
      label: "no token",
      fields: () => ({ hwid: "hw-1" }),
      status: 400,
      body: { result: "failure", error: "token is required", field: "token" },
    },
    // The seed: a failed check, not bad input.
    { label: "no hwid and no machine", before: ["hw-1"], fields: (c) => ({ token: c.token, user: "sam" }), status: 404, body: invalid },
    {
      label: "an empty hwid and machine",
      before: ["hw-1"],
      fields: (c) => ({ token: c.token, hwid: "", machine: "" }),
      status: 404,
      body: invalid,
    },
    {
      label: "a 256-character hwid",
      fields: (c) => ({ token: c.token, hwid: "h".repeat(256) }),
      status: 400,
      body: { result: "failure", error: "hwid must be at most 255 characters", field: "hwid" },
    },
  ];
  test.each(CHECK)("$label", async ({ key, before, after, fields, status, body }) => {
    const c = await context(key, before);
    await after?.(c);
    // A GET carries its fields in the query string.
    const res = await wire(server.url, "query", "GET", "/api/check", fields(c));
    expect({ status: res.status, body: res.body }).toEqual({ status, body: typeof body === "function" ? body(c) : body });
  });

  test("every activated machine passes, not only the last one", async () => {
    const c = await context({ activations: 5 }, ["hw-a", "hw-b", "hw-c", "hw-d", "hw-e"]);
    for (const hwid of ["hw-e", "hw-a", "hw-c", "hw-b", "hw-d"]) {
      expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid })).status).toBe(201);
    }
    expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid: "hw-f" })).status).toBe(404);
  });
});

describe("a failed check carries the support message of the application app_id names", () => {
  /** The quick path reads a plain query; a field percent-encoded sends it through queryFields and the schema. */
  const PATHS = ["quick", "general"] as const;
  const percent = (value: string) => [...new TextEncoder().encode(value)].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");
  function checkUrl(path: (typeof PATHS)[number], fields: Record<string, string | number | undefined>): string {
    const query = Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .map(([name, value]) => `${name}=${path === "quick" ? value : percent(String(value))}`)
      .join("&");
    const url = `${server.url}/api/check?${query}`;
    // Each path is the one it claims to be.
    expect({ url, quick: quickQuery(url) !== null }).toEqual({ url, quick: path === "quick" });
    return url;
  }
  async function check(path: (typeof PATHS)[number], fields: Record<string, string | number | undefined>) {
    const res = await fetch(checkUrl(path, fields));
    return { status: res.status, body: await res.json() };
  }

  interface Failure {
    label: string;
    key?: ActivateCase["key"];
    after?: (c: WireContext & { id: number }) => Promise<void>;
    fields: (c: WireContext) => Record<string, string | undefined>;
    /** The application the case names in app_id: the key's own, or another one. */
    names?: "own" | "other";
    status?: number;
    error?: string;
  }
  const FAILURES: Failure[] = [
    { label: "an unknown token", fields: () => ({ token: UNKNOWN, hwid: "hw-1" }) },
    { label: "a key of another application", names: "other", fields: (c) => ({ token: c.token, hwid: "hw-1" }) },
    {
      label: "a disabled key",
      after: async (c) => void (await call(server.url, "PATCH", `/api/licenses/${c.id}`, { token: adminToken, body: { enabled: false } })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
    },
    {
      label: "an expired key",
      after: async (c) =>
        void (await call(server.url, "PATCH", `/api/licenses/${c.id}`, { token: adminToken, body: { expires_at: "2026-02-01" } })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
      status: 410,
      error: "key is no longer valid",
    },
    { label: "a machine that was never activated", fields: (c) => ({ token: c.token, hwid: "hw-2", machine: "OTHER" }) },
    { label: "a machine name that was never activated", fields: (c) => ({ token: c.token, machine: "OTHER", user: "sam" }) },
    {
      label: "an activation an admin removed",
      after: async (c) => void (await call(server.url, "DELETE", `/api/licenses/${c.id}/activations/hw-1`, { token: adminToken })),
      fields: (c) => ({ token: c.token, hwid: "hw-1" }),
    },
    { label: "neither hwid nor machine", fields: (c) => ({ token: c.token, user: "sam" }) },
    { label: "neither hwid nor machine, with an unknown token", fields: () => ({ token: UNKNOWN, user: "sam" }) },
  ];

  test.each(FAILURES.flatMap((f) => PATHS.map((path) => ({ ...f, path }))))(
    "$path path: $label",
    async ({ key, after, fields, names = "own", status = 404, error = "invalid key", path }) => {
      const c = await context(key, ["hw-1"]);
      await after?.(c);
      const [appId, support] = names === "own" ? [c.appId, c.support] : [c.otherAppId, c.otherSupport];
      expect(await check(path, { ...fields(c), app_id: appId })).toEqual({
        status,
        body: { result: "failure", error, support_message: support },
      });
      // An app_id that names no application: an empty message, as activate answers.
      expect(await check(path, { ...fields(c), app_id: 999_999 })).toEqual({
        status: 404,
        body: { result: "failure", error: "invalid key", support_message: "" },
      });
      // Without app_id, the seed's body exactly: never the key's own message, which would tell that the token exists.
      if (names === "own") expect(await check(path, fields(c))).toEqual({ status, body: { result: "failure", error } });
    },
  );

  test.each(PATHS)("%s path: an application without a support message answers an empty one", async (path) => {
    const app = await fixtures.app("");
    const license = await fixtures.key(app.id);
    expect(await check(path, { token: license.token, app_id: app.id, hwid: "hw-1" })).toEqual({
      status: 404,
      body: { result: "failure", error: "invalid key", support_message: "" },
    });
    expect(await check(path, { token: UNKNOWN, app_id: app.id })).toEqual({
      status: 404,
      body: { result: "failure", error: "invalid key", support_message: "" },
    });
  });

  test("the message follows the application at once: changed, created and deleted, by this server or by another process", async () => {
    const c = await context({}, ["hw-1"]);
    const failing = { token: c.token, hwid: "hw-2" };
    const message = async (appId: number) => (await check("quick", { ...failing, app_id: appId })).body.support_message;
    expect(await message(c.appId)).toBe(c.support);
    expect(
      (await call(server.url, "PATCH", `/api/apps/${c.appId}`, { token: adminToken, body: { support_message: "patched" } })).status,
    ).toBe(200);
    expect(await message(c.appId)).toBe("patched");

    // An id asked about before its application exists.
    const next = (await fixtures.app("the last app")).id + 1;
    expect(await message(next)).toBe("");
    const created = await fixtures.app("created since");
    expect(created.id).toBe(next);
    expect(await message(next)).toBe("created since");
    expect((await call(server.url, "DELETE", `/api/apps/${next}`, { token: adminToken })).status).toBe(204);
    expect(await message(next)).toBe("");

    // Another process writes the database (the CLI does): seen once SQLite's data_version moves,
    // or PostgreSQL's change feed says so.
    expect(await message(c.appId)).toBe("patched");
    const other = await anotherConnection(server);
    try {
      await other.run("UPDATE applications SET support_message = ? WHERE id = ?", ["from the CLI", c.appId]);
    } finally {
      await other.close();
    }
    await eventually(async () => (await message(c.appId)) === "from the CLI", {
      what: "the support message another process wrote to be answered",
    });
  });

  test("activate and deactivate still need a machine: 400 naming hwid; the seed's machine-only client still activates", async () => {
    const c = await context({ activations: 2 });
    for (const [method, path] of [
      ["POST", "/api/activate"],
      ["POST", "/api/deactivate"],
    ] as const) {
      for (const encoding of ENCODINGS) {
        const res = await wire(server.url, encoding, method, path, { token: c.token, app_id: c.appId, user: "sam" });
        expect({ path, encoding, status: res.status, body: res.body }).toEqual({
          path,
          encoding,
          status: 400,
          body: { result: "failure", error: "hwid is required (or machine, for clients that have no hardware id)", field: "hwid" },
        });
      }
    }
    expect((await wire(server.url, "form", "POST", "/api/activate", { token: c.token, machine: "ICEBREAKER", user: "sam" })).status).toBe(
      201,
    );
    expect((await fixtures.license(c.id)).activations_used).toBe(1);
  });
});

describe("GET /api/check is served by Bun's router (check-route.ts), with what the app's hooks give other routes", () => {
  test("the same security headers as an Elysia route, JSON content type, on every outcome", async () => {
    const c = await context({ activations: 1 }, ["hw-1"]);
    const reference = await fetch(`${server.url}/healthz`);
    const security = [
      "content-security-policy",
      "x-content-type-options",
      "referrer-policy",
      "x-frame-options",
      "cross-origin-opener-policy",
    ];
    const outcomes = [
      { query: `token=${c.token}&hwid=hw-1`, status: 201 },
      { query: `token=${c.token}&hwid=hw-2`, status: 404 },
      { query: `hwid=hw-1`, status: 400 },
      { query: `token=${c.token}&hwid=%E0%A4%A`, status: 400 },
    ];
    for (const { query, status } of outcomes) {
      const res = await fetch(`${server.url}/api/check?${query}`);
      expect(res.status).toBe(status);
      expect(res.headers.get("content-type")).toBe("application/json");
      for (const name of security) expect({ name, value: res.headers.get(name) }).toEqual({ name, value: reference.headers.get(name) });
      expect(await res.json()).toMatchObject(status === 201 ? { result: "ok" } : { result: "failure" });
    }
  });

  test("HEAD answers like GET, without a body; other methods are a 404 in the seed's shape", async () => {
    const c = await context({ activations: 1 }, ["hw-1"]);
    const head = await fetch(`${server.url}/api/check?token=${c.token}&hwid=hw-1`, { method: "HEAD" });
    expect(head.status).toBe(201);
    expect(await head.text()).toBe("");
    for (const method of ["POST", "DELETE", "PATCH"]) {
      const other = await fetch(`${server.url}/api/check?token=${c.token}&hwid=hw-1`, { method });
      expect({ method, status: other.status, body: await other.json() }).toEqual({
        method,
        status: 404,
        body: { result: "failure", error: "no such route" },
      });
    }
  });

  test("counted in /metrics by status, like every other route", async () => {
    const c = await context({ activations: 1 }, ["hw-1"]);
    const count = async (status: number) => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      return Number(
        new RegExp(`latchkey_http_requests_total\\{method="GET",route="/api/check",status="${status}"\\} (\\d+)`).exec(text)?.[1] ?? 0,
      );
    };
    const before = { ok: await count(201), bad: await count(400) };
    for (let i = 0; i < 3; i++) await fetch(`${server.url}/api/check?token=${c.token}&hwid=hw-1`);
    await fetch(`${server.url}/api/check?hwid=hw-1`);
    expect({ ok: await count(201), bad: await count(400) }).toEqual({ ok: before.ok + 3, bad: before.bad + 1 });
  });

  test("a query flooded with one field is a 400 naming it; one past Bun's request-line limit a 431", async () => {
    const flooded = await fetch(`${server.url}/api/check?token=T&${Array(2000).fill("hwid=a").join("&")}`);
    expect({ status: flooded.status, body: await flooded.json() }).toEqual({
      status: 400,
      body: { result: "failure", error: "hwid must be a string", field: "hwid" },
    });
    const distinct = await fetch(`${server.url}/api/check?hwid=h&${Array.from({ length: 1500 }, (_, i) => `f${i}=1`).join("&")}`);
    expect({ status: distinct.status, body: await distinct.json() }).toEqual({
      status: 400,
      body: { result: "failure", error: "token is required", field: "token" },
    });
    expect((await fetch(`${server.url}/api/check?token=T&hwid=${"h".repeat(70_000)}`)).status).toBe(431);
  });

  test("OpenAPI still documents the call and its query fields", async () => {
    const doc = (await (await fetch(`${server.url}/openapi/json`)).json()) as {
      paths: Record<string, { get?: { parameters?: { name: string; in: string; required: boolean; schema: object }[] } }>;
    };
    const parameters = doc.paths["/api/check"]?.get?.parameters ?? [];
    expect(parameters.map((p) => [p.name, p.in, p.required])).toEqual([
      ["token", "query", true],
      ["app_id", "query", false],
      ["machine", "query", false],
      ["user", "query", false],
      ["hwid", "query", false],
      ["nonce", "query", false],
    ]);
    expect(parameters.find((p) => p.name === "hwid")?.schema).toEqual({ type: "string", maxLength: 255 });
  });

  test("OpenAPI says what a failed check answers: the support message with app_id, a 404 without hwid and machine", async () => {
    const doc = (await (await fetch(`${server.url}/openapi/json`)).json()) as {
      paths: Record<string, { get?: { description?: string }; post?: { description?: string } }>;
    };
    const check = doc.paths["/api/check"]?.get?.description ?? "";
    expect(check).toContain("With `app_id`, a failure also carries that application's `support_message`");
    expect(check).toContain("a check with neither `hwid` nor `machine` included");
    expect(check).toContain("400 naming the field only for malformed input");
    expect(doc.paths["/api/activate"]?.post?.description).toContain("when neither `hwid` nor `machine` is given");
  });

  test("the fields of the query string are decoded as a form would be: `+` and %20 are spaces", async () => {
    const c = await context({ activations: 1 }, ["my machine"]);
    for (const hwid of ["my+machine", "my%20machine"])
      expect((await fetch(`${server.url}/api/check?token=${c.token}&hwid=${hwid}`)).status).toBe(201);
    expect((await fetch(`${server.url}/api/check?token=${c.token}&hwid=my%2Bmachine`)).status).toBe(404);
  });
});

describe("POST /api/deactivate frees a seat", () => {
  test.each(ENCODINGS)("%s: deactivate, then the seat serves another machine", async (encoding) => {
    const c = await context({ activations: 2 }, ["hw-1", "hw-2"]);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-3" })).status).toBe(410);
    const res = await wire(server.url, encoding, "POST", "/api/deactivate", {
      token: c.token,
      app_id: c.appId,
      hwid: "hw-1",
      machine: "ICEBREAKER",
      extra: "ignored",
    });
    expect({ status: res.status, body: res.body }).toEqual({ status: 200, body: { result: "ok", remainingActivations: 1 } });
    expect((await fixtures.license(c.id)).activations_used).toBe(1);
    expect((await fixtures.activations(c.id)).map((a) => a.hwid)).toEqual(["hw-2"]);
    expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid: "hw-1" })).status).toBe(404);
    expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid: "hw-2" })).status).toBe(201);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-3" })).body).toEqual({
      result: "ok",
      remainingActivations: 0,
      receipt: expect.any(String),
    });
  });

  const refusals = [
    {
      label: "a machine that holds no seat",
      fields: (c: WireContext) => ({ token: c.token, hwid: "hw-9" }),
      status: 404,
      body: { result: "failure", error: "machine is not activated" },
    },
    {
      label: "an unknown token",
      fields: () => ({ token: UNKNOWN, hwid: "hw-1" }),
      status: 404,
      body: { result: "failure", error: "invalid key" },
    },
    {
      label: "the wrong app_id",
      fields: (c: WireContext) => ({ token: c.token, app_id: c.otherAppId, hwid: "hw-1" }),
      status: 404,
      body: { result: "failure", error: "invalid key" },
    },
    {
      label: "no token",
      fields: () => ({ hwid: "hw-1" }),
      status: 400,
      body: { result: "failure", error: "token is required", field: "token" },
    },
    {
      label: "no hwid and no machine",
      fields: (c: WireContext) => ({ token: c.token }),
      status: 400,
      body: { result: "failure", error: expect.stringContaining("hwid is required"), field: "hwid" },
    },
  ];
  test.each(refusals.flatMap((r) => ENCODINGS.map((encoding) => ({ ...r, encoding }))))(
    "$encoding: $label",
    async ({ fields, status, body, encoding }) => {
      const c = await context({ activations: 1 }, ["hw-1"]);
      const res = await wire(server.url, encoding, "POST", "/api/deactivate", fields(c));
      expect({ status: res.status, body: res.body }).toEqual({ status, body });
      // Whatever was refused, the seat is still held.
      expect((await fixtures.license(c.id)).activations_used).toBe(1);
    },
  );
});

describe("a client written for the seed works unchanged", () => {
  /** Runs curl as its own process without blocking this one, which also serves the requests. */
  async function curl(...args: string[]): Promise<{ status: number; body: any }> {
    const proc = Bun.spawn(["curl", "-s", "-w", "\n%{http_code}", ...args], { stdout: "pipe", stderr: "pipe" });
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    expect(code).toBe(0);
    const lines = out.split("\n");
    return { status: Number(lines.pop()), body: JSON.parse(lines.join("\n")) };
  }

  test("curl -d, exactly as the seed's example, then check and a refused key", async () => {
    const c = await context({ activations: 10 });
    const url = server.url;
    // The seed's README: curl localhost:5001/api/activate -X POST -d token=... -d machine=ICEBREAKER -d user=sam
    const activated = await curl(
      `${url}/api/activate`,
      "-X",
      "POST",
      "-d",
      `token=${c.token}`,
      "-d",
      "machine=ICEBREAKER",
      "-d",
      "user=sam",
    );
    expect(activated).toEqual({ status: 201, body: { result: "ok", remainingActivations: 9, receipt: expect.any(String) } });
    const again = await curl(`${url}/api/activate`, "-X", "POST", "-d", `token=${c.token}`, "-d", "machine=ICEBREAKER", "-d", "user=sam");
    expect(again.body.remainingActivations).toBe(9);
    const checked = await curl(
      "-G",
      `${url}/api/check`,
      "-d",
      `token=${c.token}`,
      "-d",
      `app_id=${c.appId}`,
      "-d",
      "machine=ICEBREAKER",
      "-d",
      "user=sam",
    );
    expect(checked).toEqual({ status: 201, body: { result: "ok", receipt: expect.any(String) } });
    const wrong = await curl(
      `${url}/api/activate`,
      "-X",
      "POST",
      "-d",
      `token=${UNKNOWN}`,
      "-d",
      `app_id=${c.appId}`,
      "-d",
      "machine=ICEBREAKER",
      "-d",
      "user=sam",
    );
    expect(wrong).toEqual({ status: 404, body: { result: "failure", error: "invalid activation token", support_message: c.support } });
    const json = await curl(
      `${url}/api/activate`,
      "-H",
      "content-type: application/json",
      "-d",
      JSON.stringify({ token: c.token, machine: "LAPTOP", user: "kim", hwid: "aa:bb" }),
    );
    expect(json).toEqual({ status: 201, body: { result: "ok", remainingActivations: 8, receipt: expect.any(String) } });
    const missing = await curl(`${url}/api/activate`, "-X", "POST", "-d", "machine=ICEBREAKER");
    expect(missing).toEqual({ status: 400, body: { result: "failure", error: "token is required", field: "token" } });
  });
});

describe("GET /api/license/public-key", () => {
  test("JSON by default, the bare PEM with ?format=pem", async () => {
    const json = await call(server.url, "GET", "/api/license/public-key");
    expect(json.status).toBe(200);
    expect(json.body).toEqual({
      algorithm: "EdDSA",
      key_id: expect.stringMatching(/^[0-9a-f]{16}$/),
      public_key: expect.stringMatching(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----\n$/),
    });
    const pem = await fetch(`${server.url}/api/license/public-key?format=pem`);
    expect(pem.headers.get("content-type")).toBe("application/x-pem-file");
    expect(await pem.text()).toBe(json.body.public_key);
    expect((await call(server.url, "GET", "/api/license/public-key?format=json")).body).toEqual(json.body);
  });

  test("the key survives a restart of the server on the same data directory", async () => {
    const dir = tempDir();
    try {
      const start = () =>
        startServer(loadConfig(parseArgs(["--data-dir", dir.path, "--listen", "127.0.0.1:0"], serverFlags), {}), {
          log: silentLogger,
          adminPassword: ADMIN_PASSWORD,
        });
      const first = await start();
      const key = (await call(first.url, "GET", "/api/license/public-key")).body.public_key;
      await first.stop();
      const second = await start();
      expect((await call(second.url, "GET", "/api/license/public-key")).body.public_key).toBe(key);
      await second.stop();
    } finally {
      dir.remove();
    }
  });
});

describe("lookup goes through the token's hash", () => {
  test("the stored hash is SHA-256 of the token, the lookup is an index search, and only the hash finds the key", async () => {
    const c = await context({ activations: 2 });
    const sql = await anotherConnection(server);
    try {
      const hash = (await sql.get<{ token_hash: string }>("SELECT token_hash FROM licenses WHERE id = ?", [c.id]))!.token_hash;
      expect(hash).toBe(createHash("sha256").update(c.token).digest("hex"));
      const lookup = "SELECT l.*, a.name FROM licenses l JOIN applications a ON a.id = l.app_id WHERE l.token_hash = ?";
      if (TEST_BACKEND === "sqlite") {
        const plan = (await sql.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${lookup}`, [hash])).map((r) => r.detail).join("\n");
        expect(plan).toMatch(/SEARCH l USING INDEX/);
        expect(plan).not.toMatch(/SCAN l\b/);
      } else {
        // Tiny tables make any plan cheap: with sequential scans off, the index must be there to use.
        const plan = await sql.transaction(async () => {
          await sql.run("SET LOCAL enable_seqscan = off");
          return (await sql.all<{ "QUERY PLAN": string }>(`EXPLAIN ${lookup}`, [hash])).map((r) => r["QUERY PLAN"]).join("\n");
        });
        expect(plan).toMatch(/Index Scan using \S+ on licenses l/);
      }
      // With its hash changed, the token no longer finds its key: the lookup reads the hash alone.
      await sql.run("UPDATE licenses SET token_hash = ? WHERE id = ?", ["0".repeat(64), c.id]);
      await eventually(
        async () => (await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-1" })).status === 404,
        {
          what: "the changed hash to be seen",
        },
      );
      await sql.run("UPDATE licenses SET token_hash = ? WHERE id = ?", [hash, c.id]);
      await eventually(
        async () => (await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-1" })).status === 201,
        {
          what: "the restored hash to be seen",
        },
      );
    } finally {
      await sql.close();
    }
  });
});

describe("events", () => {
  test("an activation is pushed to signed-in admins", async () => {
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      expect((await rpc.request("rpc", "auth_token", { token: adminToken })).name).toBe("response");
      const c = await context({ activations: 2 });
      await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-evt", machine: "EVT" });
      const pushed = await eventually(() => rpc.events.find((e) => e.name === "licenses.activated"), {
        what: "the licenses.activated push",
      });
      expect(pushed).toEqual({
        namespace: "events",
        name: "licenses.activated",
        args: { id: c.id, hwid: "hw-evt", machine: "EVT", new_seat: true, remaining: 1 },
      });
    } finally {
      rpc.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Time and throttling: servers of their own, so that their clocks and throttles touch nothing else.

describe("expiry", () => {
  test("a key is valid until its expiry and no longer after it; receipts never outlive the key", async () => {
    const own = manualClock(Date.parse("2026-05-01T00:00:00Z"));
    const s = await startTestServer({ clock: own });
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Expiring", support_message: "renew at example.com" } }))
        .body;
      const key = (
        await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 2, expires_at: "2026-05-01T01:00:00Z" } })
      ).body;
      expect(key.expires_at).toBe("2026-05-01T01:00:00.000Z");
      const activated = await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "hw-1" });
      expect(activated.status).toBe(201);
      const claims = JSON.parse(Buffer.from(activated.body.receipt.split(".")[1], "base64url").toString());
      expect(claims.exp).toBe(Date.parse("2026-05-01T01:00:00Z") / 1000);

      own.advance(60 * 60 * 1000 - 1);
      expect((await wire(s.url, "query", "GET", "/api/check", { token: key.token, hwid: "hw-1" })).status).toBe(201);
      own.advance(1);
      const expired = { result: "failure", error: "key is no longer valid", support_message: "renew at example.com" };
      expect(await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "hw-2" })).toMatchObject({
        status: 410,
        body: expired,
      });
      expect(await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "hw-1" })).toMatchObject({
        status: 410,
        body: expired,
      });
      expect(await wire(s.url, "query", "GET", "/api/check", { token: key.token, hwid: "hw-1" })).toMatchObject({
        status: 410,
        body: { result: "failure", error: "key is no longer valid" },
      });

      // An admin extends it: valid again.
      const fresh = await login(s.url);
      expect(
        (await call(s.url, "PATCH", `/api/licenses/${key.id}`, { token: fresh, body: { expires_at: null } })).body.expires_at,
      ).toBeNull();
      expect((await wire(s.url, "query", "GET", "/api/check", { token: key.token, hwid: "hw-1" })).status).toBe(201);
    } finally {
      await s.close();
    }
  });
});

describe("throttling", () => {
  test("a key: after 20 failed seat attempts, 429 with Retry-After, doubling; audited; check and other keys unaffected", async () => {
    const own = manualClock(Date.parse("2026-05-01T00:00:00Z"));
    const s = await startTestServer({ clock: own });
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Throttled", support_message: "help" } })).body;
      const key = (await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 1 } })).body;
      const other = (await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 1 } })).body;
      expect((await wire(s.url, "json", "POST", "/api/activate", { token: key.token, hwid: "owner" })).status).toBe(201);
      for (let i = 0; i < 20; i++) {
        expect((await wire(s.url, "json", "POST", "/api/activate", { token: key.token, hwid: `intruder-${i}` })).status).toBe(410);
      }
      const throttled = await wire(s.url, "json", "POST", "/api/activate", { token: key.token, hwid: "intruder-20" });
      expect({ status: throttled.status, body: throttled.body }).toEqual({
        status: 429,
        body: {
          result: "failure",
          error: "too many failed activations for this key; retry in 1 s",
          retry_after: 1,
          support_message: "help",
        },
      });
      expect(throttled.headers.get("retry-after")).toBe("1");
      // The machine that holds the seat still passes its checks; another key is not throttled.
      expect((await wire(s.url, "query", "GET", "/api/check", { token: key.token, hwid: "owner" })).status).toBe(201);
      // ...and may activate again (a reinstall) while new machines are held back.
      expect((await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "owner" })).status).toBe(201);
      expect((await wire(s.url, "json", "POST", "/api/activate", { token: other.token, hwid: "someone" })).status).toBe(201);
      // Once the wait is over the next failure doubles it.
      own.advance(1000);
      expect((await wire(s.url, "json", "POST", "/api/activate", { token: key.token, hwid: "intruder-21" })).status).toBe(410);
      const longer = await wire(s.url, "json", "POST", "/api/activate", { token: key.token, hwid: "intruder-22" });
      expect(longer.status).toBe(429);
      expect(longer.headers.get("retry-after")).toBe("2");
      expect((await call(s.url, "GET", `/api/licenses/${key.id}`, { token })).body.activations_used).toBe(1);

      const denied = await call(s.url, "GET", "/api/audit?action=license.activate&outcome=denied", { token });
      expect(denied.body.total).toBe(2);
      expect(denied.body.items[0]).toMatchObject({
        actor: null,
        address: "127.0.0.1",
        target: `license ${key.id}`,
        outcome: "denied",
        reason: "throttled: too many failed activations for this key",
      });
    } finally {
      await s.close();
    }
  });

  test("an address: after 50 invalid tokens, 429 for every licensing call from it, audited", async () => {
    const own = manualClock(Date.parse("2026-05-01T00:00:00Z"));
    const s = await startTestServer({ clock: own });
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Guessed" } })).body;
      const key = (await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 5 } })).body;
      for (let i = 0; i < 50; i++) {
        const guess = `GUESS${String(i).padStart(20, "0")}`;
        const path = i % 3 === 0 ? "/api/check" : i % 3 === 1 ? "/api/activate" : "/api/deactivate";
        expect(
          (await wire(s.url, i % 3 === 0 ? "query" : "form", i % 3 === 0 ? "GET" : "POST", path, { token: guess, hwid: "hw" })).status,
        ).toBe(404);
      }
      const throttled = await wire(s.url, "form", "POST", "/api/activate", { token: "GUESS-NUMBER-FIFTY-ONE", hwid: "hw" });
      expect({ status: throttled.status, body: throttled.body }).toEqual({
        status: 429,
        body: {
          result: "failure",
          error: "too many invalid license tokens from this address; retry in 1 s",
          retry_after: 1,
          support_message: "",
        },
      });
      expect(throttled.headers.get("retry-after")).toBe("1");
      // While it waits, even a good token from that address is refused, on every call.
      expect((await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "hw" })).status).toBe(429);
      expect((await wire(s.url, "query", "GET", "/api/check", { token: key.token, hwid: "hw" })).status).toBe(429);
      expect((await wire(s.url, "form", "POST", "/api/deactivate", { token: key.token, hwid: "hw" })).status).toBe(429);
      own.advance(1000);
      expect((await wire(s.url, "form", "POST", "/api/activate", { token: key.token, hwid: "hw" })).status).toBe(201);
      const denied = await call(s.url, "GET", "/api/audit?outcome=denied&limit=1000", { token });
      const reasons = denied.body.items
        .filter((e: { action: string }) => e.action.startsWith("license."))
        .map((e: { reason: string }) => e.reason);
      expect(reasons.length).toBeGreaterThanOrEqual(4);
      expect(new Set(reasons)).toEqual(new Set(["throttled: too many invalid license tokens from this address"]));
    } finally {
      await s.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Administration over REST.

describe("applications over REST", () => {
  test("create, read, list, rename, unique names ignoring case, delete only when empty", async () => {
    const t = { token: adminToken };
    const created = await call(server.url, "POST", "/api/apps", {
      ...t,
      body: { name: "  Sled Designer  ", support_message: "mail help@example.com" },
    });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      id: expect.any(Number),
      name: "Sled Designer",
      support_message: "mail help@example.com",
      created_at: new Date(clock()).toISOString(),
    });
    const id = created.body.id;
    const noMessage = await call(server.url, "POST", "/api/apps", { ...t, body: { name: "Sled Viewer" } });
    expect(noMessage.body.support_message).toBe("");

    const conflicts = [
      { method: "POST", path: "/api/apps", body: { name: "sled designer" } },
      { method: "POST", path: "/api/apps", body: { name: "SLED DESIGNER " } },
      { method: "PATCH", path: `/api/apps/${noMessage.body.id}`, body: { name: "Sled DESIGNER" } },
    ];
    for (const c of conflicts) {
      const res = await call(server.url, c.method, c.path, { ...t, body: c.body });
      expect({ status: res.status, body: res.body }).toEqual({
        status: 409,
        body: { error: { code: "conflict", message: expect.stringContaining("already exists"), field: "name" } },
      });
    }
    // Renaming to its own name in another case is no conflict.
    expect((await call(server.url, "PATCH", `/api/apps/${id}`, { ...t, body: { name: "SLED designer" } })).body.name).toBe("SLED designer");
    expect((await call(server.url, "PATCH", `/api/apps/${id}`, { ...t, body: { support_message: "call 555" } })).body).toMatchObject({
      name: "SLED designer",
      support_message: "call 555",
    });
    expect((await call(server.url, "GET", `/api/apps/${id}`, t)).body).toMatchObject({ id, support_message: "call 555" });

    const key = await fixtures.key(id);
    const list = await call(server.url, "GET", "/api/apps?limit=1000", t);
    expect(list.body.total).toBe(list.body.items.length);
    expect(list.body.items.find((a: { id: number }) => a.id === id)).toMatchObject({ name: "SLED designer", licenses: 1 });
    const paged = await call(server.url, "GET", "/api/apps?limit=1&offset=1", t);
    expect(paged.body.items).toHaveLength(1);
    expect(paged.body.total).toBe(list.body.total);

    const blocked = await call(server.url, "DELETE", `/api/apps/${id}`, t);
    expect(blocked.status).toBe(409);
    expect(blocked.body.error.message).toContain("1 license key");
    expect((await call(server.url, "DELETE", `/api/licenses/${key.id}`, t)).status).toBe(204);
    expect((await call(server.url, "DELETE", `/api/apps/${id}`, t)).status).toBe(204);
    expect((await call(server.url, "GET", `/api/apps/${id}`, t)).status).toBe(404);
    expect((await call(server.url, "PATCH", `/api/apps/${id}`, { ...t, body: { support_message: "x" } })).status).toBe(404);
    expect((await call(server.url, "DELETE", `/api/apps/${id}`, t)).status).toBe(404);
    // Its name is free again.
    expect((await call(server.url, "POST", "/api/apps", { ...t, body: { name: "Sled Designer" } })).status).toBe(201);
  });
});

describe("license keys over REST", () => {
  test("create: a 25-character A-Z0-9 token, defaults, and every field shown back", async () => {
    const app = await fixtures.app();
    const res = await call(server.url, "POST", "/api/licenses", {
      token: adminToken,
      body: { app_id: app.id, activations: 3, memo: "Order #1001", expires_at: "2027-01-01" },
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(Number),
      app_id: app.id,
      app_name: expect.any(String),
      token: expect.stringMatching(TOKEN),
      activations: 3,
      activations_used: 0,
      remaining_activations: 3,
      enabled: true,
      memo: "Order #1001",
      expires_at: "2027-01-01T00:00:00.000Z",
      created_at: new Date(clock()).toISOString(),
      total_activations: 0,
      total_checks: 0,
      last_activation_at: null,
      last_activation_address: null,
      last_check_at: null,
      last_check_address: null,
    });
    const defaults = await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: app.id } });
    expect(defaults.body).toMatchObject({ activations: 1, remaining_activations: 1, memo: "", expires_at: null });
    const unlimited = await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: app.id, activations: -1 } });
    expect(unlimited.body).toMatchObject({ activations: -1, remaining_activations: -1 });
    const tokens = new Set<string>();
    for (let i = 0; i < 40; i++)
      tokens.add((await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: app.id } })).body.token);
    expect(tokens.size).toBe(40);
    for (const t of tokens) expect(t).toMatch(TOKEN);
    expect((await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: 999999 } })).status).toBe(404);
  });

  // JavaScript's Date rolls a day that does not exist over into the next month; an expiry must not move.
  test.each(["2030-02-30", "2030-02-31", "2031-02-29", "2030-04-31", "2030-02-30T10:00:00Z", "2030-13-01", "2030-01-01T25:00:00Z"])(
    "expires_at %s, a date that does not exist, is refused",
    async (date) => {
      const app = await fixtures.app();
      const created = await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: app.id, expires_at: date } });
      expect({ status: created.status, field: created.body.error?.field }).toEqual({ status: 400, field: "expires_at" });
      const key = await fixtures.key(app.id);
      const patched = await call(server.url, "PATCH", `/api/licenses/${key.id}`, { token: adminToken, body: { expires_at: date } });
      expect({ status: patched.status, field: patched.body.error?.field }).toEqual({ status: 400, field: "expires_at" });
      const rpc = await call(server.url, "PUT", "/latchkey/licenses", {
        token: adminToken,
        body: { action: "create", app_id: app.id, expires_at: date },
      });
      expect({ status: rpc.status, field: rpc.body.error?.field }).toEqual({ status: 400, field: "args.expires_at" });
    },
  );

  test.each([
    ["2032-02-29", "2032-02-29T00:00:00.000Z"],
    ["2030-12-31T23:59:59Z", "2030-12-31T23:59:59.000Z"],
    ["2030-06-01T12:00:00+02:00", "2030-06-01T10:00:00.000Z"],
  ])("expires_at %s is kept as %s", async (date, stored) => {
    const app = await fixtures.app();
    const created = await call(server.url, "POST", "/api/licenses", { token: adminToken, body: { app_id: app.id, expires_at: date } });
    expect(created.body.expires_at).toBe(stored);
  });

  test("list, search (memo or token prefix), filter by app and state, enable, disable, delete", async () => {
    const a = await fixtures.app();
    const b = await fixtures.app();
    const k1 = await fixtures.key(a.id, { memo: "Order 77 for ACME Corp" });
    const k2 = await fixtures.key(a.id, { memo: "trial 100%_off" });
    const k3 = await fixtures.key(b.id, { memo: "acme renewal" });
    const t = { token: adminToken };
    const ids = async (query: string) =>
      (await call(server.url, "GET", `/api/licenses?limit=1000&${query}`, t)).body.items.map((l: { id: number }) => l.id);
    const SEARCHES = [
      { query: `app_id=${a.id}`, expected: [k2.id, k1.id] },
      { query: `app_id=${b.id}`, expected: [k3.id] },
      { query: `app_id=${a.id}&q=acme`, expected: [k1.id] },
      { query: `q=${encodeURIComponent("ACME")}&app_id=${b.id}`, expected: [k3.id] },
      { query: `app_id=${a.id}&q=${k2.token.slice(0, 8)}`, expected: [k2.id] },
      { query: `app_id=${a.id}&q=${k2.token.slice(0, 8).toLowerCase()}`, expected: [k2.id] },
      // The token matches by prefix only, and % or _ are no wildcards.
      { query: `app_id=${a.id}&q=${k1.token.slice(5, 12)}`, expected: [] },
      { query: `app_id=${a.id}&q=${encodeURIComponent("100%_")}`, expected: [k2.id] },
      { query: `app_id=${a.id}&q=${encodeURIComponent("%")}`, expected: [k2.id] },
      { query: `app_id=${a.id}&q=${encodeURIComponent("_")}`, expected: [k2.id] },
      { query: `app_id=${a.id}&enabled=true`, expected: [k2.id, k1.id] },
      { query: `app_id=${a.id}&enabled=false`, expected: [] },
    ];
    for (const { query, expected } of SEARCHES) expect({ query, ids: await ids(query) }).toEqual({ query, ids: expected });
    const page = await call(server.url, "GET", `/api/licenses?app_id=${a.id}&limit=1`, t);
    expect(page.body).toMatchObject({ total: 2, items: [{ id: k2.id }] });

    // Disable: refused on the wire and listed as disabled; enable: back.
    expect((await call(server.url, "PATCH", `/api/licenses/${k1.id}`, { ...t, body: { enabled: false } })).body.enabled).toBe(false);
    expect(await ids(`app_id=${a.id}&enabled=false`)).toEqual([k1.id]);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: k1.token, hwid: "hw" })).status).toBe(404);
    expect((await call(server.url, "PATCH", `/api/licenses/${k1.id}`, { ...t, body: { enabled: true } })).body.enabled).toBe(true);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: k1.token, hwid: "hw" })).status).toBe(201);
    // Other changes: memo, allowance, expiry.
    const patched = await call(server.url, "PATCH", `/api/licenses/${k1.id}`, {
      ...t,
      body: { memo: "changed", activations: 5, expires_at: "2030-06-01T00:00:00Z" },
    });
    expect(patched.body).toMatchObject({
      memo: "changed",
      activations: 5,
      activations_used: 1,
      remaining_activations: 4,
      expires_at: "2030-06-01T00:00:00.000Z",
    });
    expect((await call(server.url, "PATCH", `/api/licenses/${k1.id}`, { ...t, body: {} })).body).toMatchObject({
      memo: "changed",
      activations: 5,
      enabled: true,
    });
    expect((await call(server.url, "PATCH", "/api/licenses/999999", { ...t, body: { memo: "x" } })).status).toBe(404);

    // Delete: gone, with its activations, and its token no longer activates.
    expect((await call(server.url, "DELETE", `/api/licenses/${k1.id}`, t)).status).toBe(204);
    expect((await call(server.url, "GET", `/api/licenses/${k1.id}`, t)).status).toBe(404);
    expect((await call(server.url, "GET", `/api/licenses/${k1.id}/activations`, t)).status).toBe(404);
    expect((await call(server.url, "DELETE", `/api/licenses/${k1.id}`, t)).status).toBe(404);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: k1.token, hwid: "hw" })).status).toBe(404);
    expect(await server.services.storage.sql.get("SELECT count(*) AS n FROM activations WHERE license_id = ?", [k1.id])).toEqual({ n: 0 });
  });

  test("counters: activations, checks (flushed to the database by a timer), last time and address", async () => {
    const c = await context({ activations: 2 });
    const activatedAt = new Date(clock()).toISOString();
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-1", machine: "ICEBREAKER", user: "sam" });
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-1" });
    clock.advance(5000);
    const checkedAt = new Date(clock()).toISOString();
    for (let i = 0; i < 3; i++)
      expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid: "hw-1" })).status).toBe(201);
    // A refused check counts for nothing.
    expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid: "hw-2" })).status).toBe(404);
    expect(await fixtures.license(c.id)).toMatchObject({
      activations_used: 1,
      total_activations: 2,
      total_checks: 3,
      last_activation_at: activatedAt,
      last_activation_address: "127.0.0.1",
      last_check_at: checkedAt,
      last_check_address: "127.0.0.1",
    });
    expect(await fixtures.activations(c.id)).toEqual([
      { hwid: "hw-1", machine: "ICEBREAKER", user: "sam", address: "127.0.0.1", activated_at: activatedAt, last_check_at: checkedAt },
    ]);
    const db = await anotherConnection(server);
    try {
      const stored = async () =>
        (await db.get<{ total_checks: number; last_check_at: number | null }>(
          "SELECT total AS total_checks, last_at AS last_check_at FROM license_checks WHERE license_id = ?",
          [c.id],
        )) ?? { total_checks: 0, last_check_at: null };
      // The flush runs on a real timer (about once a second), whatever the server's clock says.
      await eventually(async () => (await stored()).total_checks >= 3, { what: "the check counters to be written to the database" });
      expect(await stored()).toEqual({ total_checks: 3, last_check_at: Date.parse(checkedAt) });
      expect(await db.get("SELECT last_check_at FROM activations WHERE license_id = ?", [c.id])).toEqual({
        last_check_at: Date.parse(checkedAt),
      });
    } finally {
      await db.close();
    }
  });

  test("counters of many keys at once are all written, a slice per transaction, without holding up checks", async () => {
    // 1,300 keys with one machine each, inserted directly: six slices of the flush (250 each).
    const s = await startTestServer();
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Many" } })).body;
      const db = await anotherConnection(s);
      const tokens: string[] = [];
      await db.transaction(async () => {
        for (let i = 0; i < 1300; i++) {
          const key = `MANY${String(i).padStart(21, "0")}`;
          const { id } = (await db.get<{ id: number }>(
            "INSERT INTO licenses (app_id, token, token_hash, activations_allowed, activations_used, created_at) " +
              "VALUES (?, ?, ?, 1, 1, 0) RETURNING id",
            [app.id, key, createHash("sha256").update(key).digest("hex")],
          ))!;
          await db.run("INSERT INTO activations (license_id, hwid, created_at) VALUES (?, 'hw', 0)", [id]);
          tokens.push(key);
        }
      });
      const checked = Date.now();
      for (let round = 0; round < 2; round++) {
        await Promise.all(tokens.map(async (key) => expect((await fetch(`${s.url}/api/check?token=${key}&hwid=hw`)).status).toBe(201)));
      }
      const written = async () =>
        (await db.get<{ keys: number; checks: number; machines: number }>(
          "SELECT (SELECT count(*) FROM license_checks WHERE total = 2 AND last_address = '127.0.0.1') AS keys, " +
            "(SELECT CAST(coalesce(sum(total), 0) AS bigint) FROM license_checks) AS checks, " +
            "(SELECT count(*) FROM activations WHERE last_check_at >= ?) AS machines",
          [checked - 1000],
        ))!;
      await eventually(async () => (await written()).keys >= 1300, { what: "the counters of all 1,300 keys to be written" });
      expect(await written()).toEqual({ keys: 1300, checks: 2600, machines: 1300 });
      await db.close();
    } finally {
      await s.close();
    }
  });

  test("under a steady stream of checks the timer writes what it found pending, about once a second, not without pause", async () => {
    const s = await startTestServer();
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Steady" } })).body;
      const c = (await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 1 } })).body;
      expect((await wire(s.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-1" })).status).toBe(201);
      const licensing = s.services.licensing;
      await licensing.flush();
      // The counters' writes (and on SQLite the roll-ups') are the transactions that need not wait for the disk.
      // On PostgreSQL, where each write awaits the server while checks go on, chasing every new check
      // wrote without pause (146 writes here).
      const sql = s.services.storage.sql;
      const transaction = sql.transaction.bind(sql);
      let batched = 0;
      sql.transaction = (fn, options) => {
        if (options?.durable === false) batched++;
        return transaction(fn, options);
      };
      let checks = 0;
      const until = Date.now() + 2500;
      while (Date.now() < until) {
        expect((await licensing.check({ token: c.token, hwid: "hw-1" }, "10.0.0.1")).kind).toBe("ok");
        checks++;
        await Bun.sleep(1);
      }
      await licensing.flush();
      sql.transaction = transaction;
      console.log(`licensing: ${checks} checks over 2.5 s took ${batched} batched writes`);
      // Two or three ticks of each timer, and the flush.
      expect(batched).toBeLessThanOrEqual(10);
      expect((await call(s.url, "GET", `/api/licenses/${c.id}`, { token })).body.total_checks).toBe(checks);
    } finally {
      await s.close();
    }
  });

  test("the caller's address is read only when needed: once per machine between flushes, always for unknown tokens", async () => {
    // A server of its own: the shared one's per-address throttle already holds failures, and then
    // every check must read the address.
    const s = await startTestServer();
    try {
      const token = await login(s.url);
      const app = (await call(s.url, "POST", "/api/apps", { token, body: { name: "Addresses" } })).body;
      const c = (await call(s.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 2 } })).body;
      for (const hwid of ["hw-1", "hw-2"])
        expect((await wire(s.url, "json", "POST", "/api/activate", { token: c.token, hwid })).status).toBe(201);
      const licensing = s.services.licensing;
      await licensing.flush();
      const reads: string[] = [];
      const from = (address: string) => () => (reads.push(address), address);
      for (let i = 0; i < 5; i++) expect((await licensing.check({ token: c.token, hwid: "hw-1" }, from("10.0.0.1"))).kind).toBe("ok");
      expect(reads).toEqual(["10.0.0.1"]);
      // Another machine: its address is read, and it is the last check's address from then on.
      expect((await licensing.check({ token: c.token, hwid: "hw-2" }, from("10.0.0.2"))).kind).toBe("ok");
      expect((await licensing.check({ token: c.token, hwid: "hw-1" }, from("10.0.0.1"))).kind).toBe("ok");
      expect(reads).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.1"]);
      expect((await call(s.url, "GET", `/api/licenses/${c.id}`, { token })).body).toMatchObject({ last_check_address: "10.0.0.1" });
      // After a flush the next check reads it again.
      await licensing.flush();
      expect((await licensing.check({ token: c.token, hwid: "hw-1" }, from("10.0.0.9"))).kind).toBe("ok");
      expect(reads.at(-1)).toBe("10.0.0.9");
      // An unknown token always reads it (the per-address throttle counts it).
      reads.length = 0;
      expect((await licensing.check({ token: "NOSUCHTOKEN", hwid: "hw-1" }, from("10.0.0.3"))).kind).toBe("invalid");
      expect(reads).toEqual(["10.0.0.3"]);
      // Now that an address has failed, every check reads its caller's (it may be throttled).
      reads.length = 0;
      for (let i = 0; i < 3; i++) expect((await licensing.check({ token: c.token, hwid: "hw-1" }, from("10.0.0.9"))).kind).toBe("ok");
      expect(reads).toEqual(["10.0.0.9", "10.0.0.9", "10.0.0.9"]);
    } finally {
      await s.close();
    }
  });

  test("counters of a key deleted by another process before they were written are dropped; the others are written", async () => {
    const a = await context({ activations: 1 }, ["hw-1"]);
    const b = await context({ activations: 1 }, ["hw-1"]);
    const licensing = server.services.licensing;
    await licensing.flush();
    // Checked in this process, then the key deleted from another connection (as the CLI would),
    // all before the next flush: nothing here waits but for SQLite, whose statements run at once,
    // so the timer cannot come between.
    expect((await licensing.check({ token: a.token, hwid: "hw-1" }, "10.0.0.1")).kind).toBe("ok");
    expect((await licensing.check({ token: b.token, hwid: "hw-1" }, "10.0.0.2")).kind).toBe("ok");
    const other = await anotherConnection(server);
    await other.run("DELETE FROM licenses WHERE id = ?", [a.id]);
    await expect(licensing.flush()).resolves.toBeUndefined();
    const counters = (id: number) => other.get("SELECT total, last_address FROM license_checks WHERE license_id = ?", [id]);
    expect({ a: await counters(a.id), b: await counters(b.id) }).toEqual({ a: null, b: { total: 1, last_address: "10.0.0.2" } });
    await other.close();
  });

  test("activations: listed per machine; removing one frees its seat", async () => {
    const hwid = "AA:BB:CC:DD/01 ü";
    const c = await context({ activations: 2 }, ["hw-1"]);
    await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid, machine: "M2" });
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-3" })).status).toBe(410);
    const t = { token: adminToken };
    const listed = await call(server.url, "GET", `/api/licenses/${c.id}/activations`, t);
    expect(listed.body).toMatchObject({
      total: 2,
      items: [
        { hwid: "hw-1", machine: null },
        { hwid, machine: "M2" },
      ],
    });
    const path = `/api/licenses/${c.id}/activations/${encodeURIComponent(hwid)}`;
    expect((await call(server.url, "DELETE", path, t)).status).toBe(204);
    expect((await call(server.url, "DELETE", path, t)).status).toBe(404);
    expect((await call(server.url, "DELETE", `/api/licenses/999999/activations/hw-1`, t)).status).toBe(404);
    expect(await fixtures.license(c.id)).toMatchObject({ activations_used: 1, remaining_activations: 1 });
    expect((await wire(server.url, "query", "GET", "/api/check", { token: c.token, hwid })).status).toBe(404);
    expect((await wire(server.url, "json", "POST", "/api/activate", { token: c.token, hwid: "hw-3" })).body).toEqual({
      result: "ok",
      remainingActivations: 0,
      receipt: expect.any(String),
    });
    expect((await fixtures.activations(c.id)).map((a) => a.hwid)).toEqual(["hw-1", "hw-3"]);
  });

  test("audit: activation successes and failures, admin changes; never a full token", async () => {
    const c = await context({ activations: 1 });
    clock.advance(1000);
    const since = new Date(clock()).toISOString();
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-1" });
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-1" });
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-2" });
    await wire(server.url, "form", "POST", "/api/deactivate", { token: c.token, hwid: "hw-1" });
    await call(server.url, "PATCH", `/api/licenses/${c.id}`, { token: adminToken, body: { enabled: false } });
    await wire(server.url, "form", "POST", "/api/activate", { token: c.token, hwid: "hw-1" });
    const entries = (await call(server.url, "GET", `/api/audit?since=${since}&limit=1000&format=json`, { token: adminToken })).body.items
      .filter((e: { target: string | null }) => e.target === `license ${c.id}`)
      .reverse()
      .map((e: any) => ({ actor: e.actor, action: e.action, outcome: e.outcome, reason: e.reason }));
    expect(entries).toEqual([
      { actor: null, action: "license.activate", outcome: "success", reason: "machine hw-1" },
      { actor: null, action: "license.activate", outcome: "success", reason: "machine hw-1 again (no seat used)" },
      { actor: null, action: "license.activate", outcome: "failure", reason: "out of activations" },
      { actor: null, action: "license.deactivate", outcome: "success", reason: "machine hw-1" },
      { actor: "admin", action: "license.update", outcome: "success", reason: "enabled" },
      { actor: null, action: "license.activate", outcome: "failure", reason: "disabled" },
    ]);
    const jsonl = await fetch(`${server.url}/api/audit?format=jsonl`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(await jsonl.text()).not.toContain(c.token);
  });
});

describe("viewers", () => {
  let viewer: string;
  let app: { id: number; support: string };
  let key: { id: number; token: string };
  beforeAll(async () => {
    await createUser(server.url, adminToken, { username: "license-viewer", password: "viewer-password", role: "viewer" });
    viewer = await login(server.url, "license-viewer", "viewer-password");
    app = await fixtures.app();
    key = await fixtures.key(app.id, { activations: 2 });
    await wire(server.url, "json", "POST", "/api/activate", { token: key.token, hwid: "hw-1" });
  });
  const masked = /^[A-Z0-9]{4}•{21}$/;

  /** The viewer's refused write left the application, its key and the list of applications as they were. */
  async function nothingChanged(): Promise<void> {
    expect((await call(server.url, "GET", `/api/apps/${app.id}`, { token: adminToken })).body).toMatchObject({
      id: app.id,
      support_message: app.support,
    });
    expect(await fixtures.license(key.id)).toMatchObject({ enabled: true, activations_used: 1, token: key.token });
    expect(await fixtures.activations(key.id)).toMatchObject([{ hwid: "hw-1" }]);
    const names = (await call(server.url, "GET", "/api/apps?limit=1000", { token: adminToken })).body.items.map(
      (a: { name: string }) => a.name,
    );
    expect(names).not.toContain("viewer's app");
  }

  test("see tokens masked, over REST and RPC", async () => {
    const one = await call(server.url, "GET", `/api/licenses/${key.id}`, { token: viewer });
    expect(one.body.token).toMatch(masked);
    expect(one.body.token.slice(0, 4)).toBe(key.token.slice(0, 4));
    const list = await call(server.url, "GET", "/api/licenses?limit=1000", { token: viewer });
    for (const l of list.body.items) expect(l.token).toMatch(masked);
    expect(list.text).not.toContain(key.token);
    expect((await call(server.url, "GET", `/api/licenses/${key.id}/activations`, { token: viewer })).body.total).toBe(1);
    const rpc = await call(server.url, "PUT", "/latchkey/licenses", { token: viewer, body: { action: "get", id: key.id } });
    expect(rpc.body.args.token).toMatch(masked);
    const rpcList = await call(server.url, "PUT", "/latchkey/licenses", { token: viewer, body: { action: "list", limit: 1000 } });
    expect(rpcList.text).not.toContain(key.token);
  });

  test("cannot recover a token through search: for them q matches the memo only", async () => {
    const prefix = key.token.slice(0, 12);
    const viaRest = await call(server.url, "GET", `/api/licenses?limit=1000&q=${prefix}`, { token: viewer });
    expect(viaRest.body.items.map((l: { id: number }) => l.id)).not.toContain(key.id);
    const viaRpc = await call(server.url, "PUT", "/latchkey/licenses", { token: viewer, body: { action: "list", q: prefix } });
    expect(viaRpc.body.args.items.map((l: { id: number }) => l.id)).not.toContain(key.id);
    // Admins, who see tokens anyway, still find keys by their start.
    expect(
      (await call(server.url, "GET", `/api/licenses?q=${prefix}`, { token: adminToken })).body.items.map((l: { id: number }) => l.id),
    ).toEqual([key.id]);
    const memo = await fixtures.key((await fixtures.app()).id, { memo: "findable by viewers" });
    expect(
      (await call(server.url, "GET", "/api/licenses?q=FINDABLE", { token: viewer })).body.items.map((l: { id: number }) => l.id),
    ).toEqual([memo.id]);
  });

  // Each write aims at the fixtures above, and each row checks that they did not change.
  const WRITES = [
    { method: "POST", path: () => "/api/apps", body: { name: "viewer's app" } },
    { method: "PATCH", path: () => `/api/apps/${app.id}`, body: { support_message: "x" } },
    { method: "DELETE", path: () => `/api/apps/${app.id}` },
    { method: "POST", path: () => "/api/licenses", body: { app_id: 1 } },
    { method: "PATCH", path: () => `/api/licenses/${key.id}`, body: { enabled: false } },
    { method: "DELETE", path: () => `/api/licenses/${key.id}` },
    { method: "DELETE", path: () => `/api/licenses/${key.id}/activations/hw-1` },
  ];
  test.each(WRITES)("$method $path → 403, and nothing changed", async ({ method, path, body }) => {
    const res = await call(server.url, method, path(), { token: viewer, ...(body ? { body } : {}) });
    expect({ status: res.status, code: res.body.error.code }).toEqual({ status: 403, code: "forbidden" });
    await nothingChanged();
  });

  const RPC_WRITES = [
    { action: "create_app", args: () => ({ name: "viewer's app" }) },
    { action: "update_app", args: () => ({ id: app.id, support_message: "x" }) },
    { action: "delete_app", args: () => ({ id: app.id }) },
    { action: "create", args: () => ({ app_id: app.id }) },
    { action: "update", args: () => ({ id: key.id, enabled: false }) },
    { action: "delete", args: () => ({ id: key.id }) },
    { action: "remove_activation", args: () => ({ id: key.id, hwid: "hw-1" }) },
  ];
  test.each(RPC_WRITES)("RPC $action → 403, and nothing changed", async ({ action, args }) => {
    const res = await call(server.url, "PUT", "/latchkey/licenses", { token: viewer, body: { action, ...args() } });
    expect(res.status).toBe(403);
    await nothingChanged();
  });
});

// ---------------------------------------------------------------------------------------------
// Administration over RPC (/ws): one call per scenario, each on applications and keys of its own.

describe("RPC latchkey/licenses over /ws", () => {
  let rpc: RpcClient;
  beforeAll(async () => {
    rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("rpc", "auth_token", { token: adminToken })).name).toBe("response");
  });
  afterAll(() => rpc.close());

  /** What a scenario starts from, made over REST before its one call. */
  interface Given {
    /** An application with the support message "rpc support". */
    app: { id: number; name: string };
    /** Another application, without a support message. */
    other: { id: number; name: string };
    /** A name no application has. */
    unused: string;
    /** A key of `app`, when the scenario asks for one. */
    key?: { id: number; token: string; memo: string };
  }
  interface Scenario {
    label: string;
    /**
     * A key of the scenario's application: 2 activations and a memo of its own unless it says
     * otherwise, activated on `machines`; `deleted` deletes it again before the call.
     */
    key?: { activations?: number; expires_at?: string; enabled?: boolean; machines?: string[]; deleted?: boolean };
    args: (g: Given) => Record<string, unknown>;
    /** The whole reply (its args for "response", or the error). */
    expect: (reply: any, g: Given) => void;
    /** What the call changed, read back afterwards. */
    after?: (g: Given, reply: any) => Promise<void>;
  }

  let made = 0;
  async function given(key: Scenario["key"]): Promise<Given> {
    const n = ++made;
    const newApp = async (name: string, support?: string) => {
      const res = await call(server.url, "POST", "/api/apps", {
        token: adminToken,
        body: { name, ...(support === undefined ? {} : { support_message: support }) },
      });
      expect(res.status).toBe(201);
      return { id: res.body.id as number, name };
    };
    const g: Given = {
      app: await newApp(`Rpc Studio ${n}`, "rpc support"),
      other: await newApp(`Rpc Player ${n}`),
      unused: `Rpc Newcomer ${n}`,
    };
    if (key) {
      const { machines = [], enabled, deleted, ...options } = key;
      const memo = `rpc key ${crypto.randomUUID()}`;
      const created = await fixtures.key(g.app.id, { activations: 2, memo, ...options });
      for (const hwid of machines)
        expect((await wire(server.url, "json", "POST", "/api/activate", { token: created.token, hwid })).status).toBe(201);
      if (enabled === false)
        expect(
          (await call(server.url, "PATCH", `/api/licenses/${created.id}`, { token: adminToken, body: { enabled: false } })).status,
        ).toBe(200);
      if (deleted) expect((await call(server.url, "DELETE", `/api/licenses/${created.id}`, { token: adminToken })).status).toBe(204);
      g.key = { ...created, memo };
    }
    return g;
  }
  const ask = (args: Record<string, unknown>) => rpc.request("latchkey", "licenses", args);
  const response = (reply: any, matcher: unknown) => expect(reply).toMatchObject({ namespace: "rpc", name: "response", args: matcher });
  const error = (code: number, field?: string) => (reply: any) =>
    expect(reply).toMatchObject({
      namespace: "rpc",
      name: "error",
      args: { code, message: expect.any(String), ...(field ? { field } : {}) },
    });

  const SCENARIOS: Scenario[] = [
    {
      label: "create_app",
      args: (g) => ({ action: "create_app", name: g.unused, support_message: "rpc support" }),
      expect: (r, g) => response(r, { name: g.unused, support_message: "rpc support" }),
      after: async (g, r) => expect((await ask({ action: "get_app", id: r.args.id })).args).toMatchObject({ name: g.unused }),
    },
    {
      label: "create_app without a support message: an empty one",
      args: (g) => ({ action: "create_app", name: g.unused }),
      expect: (r, g) => response(r, { name: g.unused, support_message: "" }),
    },
    {
      label: "create_app with a taken name in another case",
      args: (g) => ({ action: "create_app", name: g.app.name.toUpperCase() }),
      expect: error(409, "name"),
    },
    {
      label: "update_app to a taken name",
      args: (g) => ({ action: "update_app", id: g.other.id, name: g.app.name.toLowerCase() }),
      expect: error(409, "name"),
      after: async (g) => expect((await ask({ action: "get_app", id: g.other.id })).args).toMatchObject({ name: g.other.name }),
    },
    {
      label: "update_app",
      args: (g) => ({ action: "update_app", id: g.app.id, support_message: "new support" }),
      expect: (r, g) => response(r, { name: g.app.name, support_message: "new support" }),
      after: async (g) => expect((await ask({ action: "get_app", id: g.app.id })).args).toMatchObject({ support_message: "new support" }),
    },
    {
      label: "get_app",
      args: (g) => ({ action: "get_app", id: g.app.id }),
      expect: (r, g) => response(r, { id: g.app.id, name: g.app.name, support_message: "rpc support" }),
    },
    { label: "get_app of no application", args: () => ({ action: "get_app", id: 999999 }), expect: error(404) },
    {
      label: "list_apps",
      args: () => ({ action: "list_apps", limit: 1000 }),
      expect: (r, g) =>
        expect(r.args.items.map((a: { name: string }) => a.name)).toEqual(expect.arrayContaining([g.app.name, g.other.name])),
    },
    {
      label: "create",
      args: (g) => ({ action: "create", app_id: g.app.id, activations: 2, memo: "rpc key", expires_at: "2030-01-01" }),
      expect: (r, g) =>
        response(r, {
          app_id: g.app.id,
          app_name: g.app.name,
          token: expect.stringMatching(TOKEN),
          activations: 2,
          memo: "rpc key",
          expires_at: "2030-01-01T00:00:00.000Z",
          enabled: true,
        }),
      after: async (g, r) =>
        expect((await ask({ action: "list", app_id: g.app.id })).args).toMatchObject({
          total: 1,
          items: [{ id: r.args.id, token: r.args.token }],
        }),
    },
    { label: "create for no application", args: () => ({ action: "create", app_id: 999999 }), expect: error(404) },
    {
      label: "delete_app with keys",
      key: {},
      args: (g) => ({ action: "delete_app", id: g.app.id }),
      expect: error(409),
      after: async (g) => expect((await ask({ action: "get_app", id: g.app.id })).name).toBe("response"),
    },
    {
      label: "get",
      key: {},
      args: (g) => ({ action: "get", id: g.key!.id }),
      expect: (r, g) => response(r, { id: g.key!.id, token: g.key!.token, activations_used: 0 }),
    },
    {
      label: "list by app",
      key: {},
      args: (g) => ({ action: "list", app_id: g.app.id }),
      expect: (r, g) => response(r, { total: 1, items: [{ id: g.key!.id }] }),
    },
    {
      label: "list by memo, in another case",
      key: {},
      args: (g) => ({ action: "list", q: g.key!.memo.toUpperCase() }),
      expect: (r, g) => response(r, { total: 1, items: [{ id: g.key!.id }] }),
    },
    {
      label: "list by token prefix",
      key: {},
      args: (g) => ({ action: "list", q: g.key!.token.slice(0, 10) }),
      expect: (r, g) => response(r, { total: 1, items: [{ id: g.key!.id }] }),
    },
    {
      label: "activations of a key no machine activated",
      key: {},
      args: (g) => ({ action: "activations", id: g.key!.id }),
      expect: (r) => response(r, { total: 0, items: [] }),
    },
    {
      label: "activations of a key two machines activated on the wire",
      key: { machines: ["rpc-1", "rpc-2"] },
      args: (g) => ({ action: "activations", id: g.key!.id }),
      expect: (r) => response(r, { total: 2, items: [{ hwid: "rpc-1" }, { hwid: "rpc-2" }] }),
    },
    {
      label: "remove_activation frees the seat",
      key: { machines: ["rpc-1", "rpc-2"] },
      args: (g) => ({ action: "remove_activation", id: g.key!.id, hwid: "rpc-1" }),
      expect: (r) => response(r, "ok"),
      after: async (g) => {
        expect((await ask({ action: "get", id: g.key!.id })).args).toMatchObject({
          activations_used: 1,
          remaining_activations: 1,
          total_activations: 2,
        });
        expect((await ask({ action: "activations", id: g.key!.id })).args).toMatchObject({ total: 1, items: [{ hwid: "rpc-2" }] });
      },
    },
    {
      label: "remove_activation of a machine that is not activated",
      key: { machines: ["rpc-2"] },
      args: (g) => ({ action: "remove_activation", id: g.key!.id, hwid: "rpc-1" }),
      expect: error(404),
    },
    {
      label: "update: disable",
      key: {},
      args: (g) => ({ action: "update", id: g.key!.id, enabled: false }),
      expect: (r) => response(r, { enabled: false }),
      after: async (g) => expect((await ask({ action: "get", id: g.key!.id })).args).toMatchObject({ enabled: false }),
    },
    {
      label: "list disabled",
      key: { enabled: false },
      args: (g) => ({ action: "list", app_id: g.app.id, enabled: false }),
      expect: (r, g) => response(r, { total: 1, items: [{ id: g.key!.id }] }),
    },
    {
      label: "list enabled, when the only key is disabled",
      key: { enabled: false },
      args: (g) => ({ action: "list", app_id: g.app.id, enabled: true }),
      expect: (r) => response(r, { total: 0, items: [] }),
    },
    {
      label: "update: enable, allowance, no expiry",
      key: { enabled: false, expires_at: "2030-01-01" },
      args: (g) => ({ action: "update", id: g.key!.id, enabled: true, activations: -1, expires_at: null }),
      expect: (r) => response(r, { enabled: true, activations: -1, remaining_activations: -1, expires_at: null }),
    },
    {
      label: "delete",
      key: {},
      args: (g) => ({ action: "delete", id: g.key!.id }),
      expect: (r) => response(r, "ok"),
      after: async (g) => error(404)(await ask({ action: "get", id: g.key!.id })),
    },
    {
      label: "delete_app, once its key is deleted",
      key: { deleted: true },
      args: (g) => ({ action: "delete_app", id: g.app.id }),
      expect: (r) => response(r, "ok"),
      after: async (g) => error(404)(await ask({ action: "get_app", id: g.app.id })),
    },
    { label: "an unknown action", args: () => ({ action: "explode" }), expect: error(400, "args.action") },
  ];

  test.each(SCENARIOS)("$label", async ({ key, args, expect: check, after }) => {
    const g = await given(key);
    const reply = await ask(args(g));
    // Bun's toMatchObject writes its asymmetric matchers into the object it checks: check a copy.
    check(structuredClone(reply), g);
    await after?.(g, reply);
  });
});
