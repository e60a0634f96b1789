/**
 * `latchkey app` and `latchkey license`, run as separate processes on the data directory of a
 * server that is running (SPEC §1: admin commands are safe while the server is up, and it sees
 * their changes at once). Output is for people and for scripts: `license create` prints the token
 * alone on stdout, so `TOKEN=$(latchkey license create --app 1)` works. Bad flags exit 2 with a
 * sentence that says what to do; failures of the operation itself exit 1.
 *
 * Each test makes the applications and keys it works on (over REST, or with the command under
 * test); the two that read whole listings do it on a server of their own, so that the listing
 * holds exactly what they made.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, login, runLatchkey, startTestServer, type TestServer } from "./support.ts";

let server: TestServer;
let admin: string;

const cliOn =
  (s: TestServer) =>
  (...args: string[]) =>
    runLatchkey([...args, ...s.storageArgs]);
const cli = (...args: string[]) => cliOn(server)(...args);
async function okOn(s: TestServer, ...args: string[]) {
  const res = await cliOn(s)(...args);
  if (res.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  return res;
}
const ok = (...args: string[]) => okOn(server, ...args);
const activateOn = async (s: TestServer, token: string, hwid: string) =>
  (await call(s.url, "POST", "/api/activate", { body: { token, hwid } })).body;
const activate = (token: string, hwid: string) => activateOn(server, token, hwid);

/** An application made over REST; `name` must be new to the server. */
async function newApp(s: TestServer, token: string, name: string, support?: string): Promise<number> {
  const res = await call(s.url, "POST", "/api/apps", {
    token,
    body: { name, ...(support === undefined ? {} : { support_message: support }) },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

/** A license key made over REST. */
async function newLicense(s: TestServer, token: string, body: Record<string, unknown>): Promise<{ id: number; token: string }> {
  const res = await call(s.url, "POST", "/api/licenses", { token, body });
  expect(res.status).toBe(201);
  return { id: res.body.id, token: res.body.token };
}

/** How many applications and license keys the shared server holds. */
async function totals(): Promise<{ apps: number; licenses: number }> {
  return {
    apps: (await call(server.url, "GET", "/api/apps", { token: admin })).body.total,
    licenses: (await call(server.url, "GET", "/api/licenses", { token: admin })).body.total,
  };
}

/** Runs `body` against a server of its own, for tests that read a whole listing. */
async function onOwnServer(body: (s: TestServer, token: string) => Promise<void>): Promise<void> {
  const own = await startTestServer();
  try {
    await body(own, await login(own.url));
  } finally {
    await own.close();
  }
}

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
});
afterAll(() => server.close());

describe("latchkey app", () => {
  test("create and list, seen by the running server at once", async () => {
    await onOwnServer(async (own, token) => {
      const created = await okOn(own, "app", "create", "Ice Breaker", "--support-message", "call 555-555-5555 for support");
      expect(created).toEqual({ code: 0, stdout: 'created application 1 "Ice Breaker"\n', stderr: "" });
      expect((await okOn(own, "app", "create", "Sled")).stdout).toBe('created application 2 "Sled"\n');
      const api = await call(own.url, "GET", "/api/apps/1", { token });
      expect(api.body).toMatchObject({ id: 1, name: "Ice Breaker", support_message: "call 555-555-5555 for support" });

      const list = await okOn(own, "app", "list");
      expect(list.stdout.split("\n")).toEqual([
        "ID  NAME         KEYS  SUPPORT MESSAGE",
        "1   Ice Breaker  0     call 555-555-5555 for support",
        "2   Sled         0",
        "",
      ]);
      const json = JSON.parse((await okOn(own, "app", "list", "--json")).stdout);
      expect(json).toEqual([
        { id: 1, name: "Ice Breaker", support_message: "call 555-555-5555 for support", created_at: expect.any(String), licenses: 0 },
        { id: 2, name: "Sled", support_message: "", created_at: expect.any(String), licenses: 0 },
      ]);
    });
  });

  test("a name taken in another case is refused (exit 1), and nothing is added", async () => {
    await newApp(server, admin, "Taken Name");
    const before = await totals();
    const res = await cli("app", "create", "TAKEN NAME");
    expect(res).toEqual({ code: 1, stdout: "", stderr: 'latchkey: an application named "Taken Name" already exists\n' });
    expect(await totals()).toEqual(before);
  });
});

describe("latchkey license", () => {
  test("create prints exactly the token and a newline; the summary goes to stderr", async () => {
    const app = await newApp(server, admin, "Token Printer");
    const res = await ok(
      "license",
      "create",
      "--app",
      String(app),
      "--activations",
      "3",
      "--memo",
      "Order 1001",
      "--expires",
      "2030-01-01",
    );
    expect(res.stdout).toMatch(/^[A-Z0-9]{25}\n$/);
    expect(res.stderr).toMatch(/^created license \d+ for "Token Printer": 3 activations, expires 2030-01-01T00:00:00\.000Z\n$/);
    const token = res.stdout.trim();
    const id = Number(/^created license (\d+)/.exec(res.stderr)![1]);
    const api = await call(server.url, "GET", `/api/licenses/${id}`, { token: admin });
    expect(api.body).toMatchObject({
      app_id: app,
      token,
      activations: 3,
      memo: "Order 1001",
      expires_at: "2030-01-01T00:00:00.000Z",
      enabled: true,
    });
    expect(await activate(token, "hw-1")).toEqual({ result: "ok", remainingActivations: 2, receipt: expect.any(String) });
  });

  let sleds = 0;
  test.each([
    { label: "unlimited, --activations -1", args: ["--activations", "-1"], summary: "unlimited activations", remaining: -1 },
    { label: "unlimited, --activations=-1", args: ["--activations=-1"], summary: "unlimited activations", remaining: -1 },
    { label: "the default: one", args: [], summary: "1 activation", remaining: 0 },
    {
      label: "single-dash flags, as in the woho seed",
      args: ["-activations", "2", "-memo", "dash"],
      summary: "2 activations",
      remaining: 1,
    },
  ])("create: $label", async ({ args, summary, remaining }) => {
    const name = `Sled ${++sleds}`;
    const app = await newApp(server, admin, name);
    const res = await ok("license", "create", "--app", String(app), ...args);
    expect(res.stdout).toMatch(/^[A-Z0-9]{25}\n$/);
    expect(res.stderr).toMatch(new RegExp(`^created license \\d+ for "${name}": ${summary}\\n$`));
    expect((await activate(res.stdout.trim(), "hw-1")).remainingActivations).toBe(remaining);
  });

  test("list: a table, --json, and --app to filter", async () => {
    await onOwnServer(async (own, token) => {
      // The keys the tests above cut, each activated once: one of Ice Breaker's, four of Sled's.
      const iceBreaker = await newApp(own, token, "Ice Breaker", "call 555-555-5555 for support");
      const sled = await newApp(own, token, "Sled");
      const three = await newLicense(own, token, { app_id: iceBreaker, activations: 3, memo: "Order 1001", expires_at: "2030-01-01" });
      const sleds = [
        await newLicense(own, token, { app_id: sled, activations: -1 }),
        await newLicense(own, token, { app_id: sled, activations: -1 }),
        await newLicense(own, token, { app_id: sled, activations: 1 }),
        await newLicense(own, token, { app_id: sled, activations: 2, memo: "dash" }),
      ];
      for (const l of [three, ...sleds]) expect((await activateOn(own, l.token, "hw-1")).result).toBe("ok");

      const table = (await okOn(own, "license", "list")).stdout.split("\n");
      expect(table[0]).toMatch(/^ID\s+APP\s+TOKEN\s+USED\s+STATE\s+EXPIRES\s+MEMO$/);
      expect(table).toContain(`1   Ice Breaker  ${three.token}  1/3   enabled  2030-01-01T00:00:00.000Z  Order 1001`);
      expect(table.some((line) => /^2\s+Sled\s+[A-Z0-9]{25}\s+1\/∞\s+enabled\s+-$/.test(line))).toBe(true);
      const all = JSON.parse((await okOn(own, "license", "list", "--json")).stdout);
      expect(all.map((l: { id: number }) => l.id)).toEqual([5, 4, 3, 2, 1]);
      const onlySled = JSON.parse((await okOn(own, "license", "list", "--app", String(sled), "--json")).stdout);
      expect(onlySled.map((l: { app_id: number }) => l.app_id)).toEqual([sled, sled, sled, sled]);
      expect(onlySled.every((l: { token: string }) => /^[A-Z0-9]{25}$/.test(l.token))).toBe(true);
      expect(JSON.parse((await okOn(own, "app", "list", "--json")).stdout).map((a: { licenses: number }) => a.licenses)).toEqual([1, 4]);
    });
  });

  test("disable, enable and delete take effect on the running server at once", async () => {
    const app = await newApp(server, admin, "Switched", "call 555-555-5555 for support");
    const license = await newLicense(server, admin, { app_id: app, activations: 3 });
    expect((await activate(license.token, "hw-1")).result).toBe("ok");

    expect((await ok("license", "disable", String(license.id))).stdout).toBe(`license ${license.id} disabled\n`);
    expect(await activate(license.token, "hw-2")).toEqual({
      result: "failure",
      error: "invalid activation token",
      support_message: "call 555-555-5555 for support",
    });
    expect((await call(server.url, "GET", `/api/check?token=${license.token}&hwid=hw-1`)).status).toBe(404);
    expect((await ok("license", "enable", String(license.id))).stdout).toBe(`license ${license.id} enabled\n`);
    expect((await activate(license.token, "hw-2")).remainingActivations).toBe(1);
    expect((await call(server.url, "GET", `/api/check?token=${license.token}&hwid=hw-1`)).status).toBe(201);

    expect((await ok("license", "delete", String(license.id))).stdout).toBe(`license ${license.id} deleted\n`);
    expect((await call(server.url, "GET", `/api/licenses/${license.id}`, { token: admin })).status).toBe(404);
    expect((await activate(license.token, "hw-3")).error).toBe("invalid activation token");
    // With its last key gone, the application may go too.
    expect((await call(server.url, "DELETE", `/api/apps/${app}`, { token: admin })).status).toBe(204);
  });

  test("the audit log names the command line as the actor", async () => {
    const newest = async () => (await call(server.url, "GET", "/api/audit?limit=1", { token: admin })).body.items[0]?.id ?? 0;
    const mark = await newest();
    const app = /^created application (\d+) "Audited"\n$/.exec((await ok("app", "create", "Audited")).stdout)![1]!;
    const created = await ok("license", "create", "--app", app);
    const token = created.stdout.trim();
    const id = /^created license (\d+)/.exec(created.stderr)![1]!;
    await ok("license", "disable", id);
    await ok("license", "delete", id);

    const audit = await call(server.url, "GET", "/api/audit?limit=1000", { token: admin });
    const mine = audit.body.items.filter((e: { id: number; actor: string | null }) => e.id > mark && e.actor?.startsWith("cli:"));
    expect(mine.map((e: { action: string }) => e.action).reverse()).toEqual([
      "app.create",
      "license.create",
      "license.update",
      "license.delete",
    ]);
    for (const e of mine) expect(e.address).toBe("local");
    expect(JSON.stringify(audit.body)).not.toContain(token);
  });

  test("operations that fail exit 1 with the reason", async () => {
    const gone = await newLicense(server, admin, { app_id: await newApp(server, admin, "Emptied"), activations: 1 });
    expect((await call(server.url, "DELETE", `/api/licenses/${gone.id}`, { token: admin })).status).toBe(204);
    const CASES = [
      { args: ["license", "create", "--app", "999"], message: "latchkey: no application with id 999\n" },
      { args: ["license", "enable", "999"], message: "latchkey: no license key with id 999\n" },
      { args: ["license", "delete", String(gone.id)], message: `latchkey: no license key with id ${gone.id}\n` },
    ];
    for (const { args, message } of CASES) expect(await cli(...args)).toEqual({ code: 1, stdout: "", stderr: message });
    const nowhere = await runLatchkey(["license", "list", "--data-dir", "/nonexistent/latchkey"]);
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toContain("no latchkey database in /nonexistent/latchkey; start the server once");
  });
});

describe("bad flags exit 2 with a remedy", () => {
  /** Stands for an application that exists, so that the refusal is the flag's, not a missing application's. */
  const APP = "<app>";
  let app: string;
  beforeAll(async () => {
    app = String(await newApp(server, admin, "Flag target"));
  });
  const CASES: { args: string[]; message: string | RegExp }[] = [
    { args: ["app", "create"], message: 'app create takes one NAME (quote it if it has spaces: latchkey app create "My App")' },
    { args: ["app", "create", "two", "names"], message: "app create takes one NAME" },
    { args: ["app", "create", ""], message: "NAME is required" },
    { args: ["app", "create", "x".repeat(101)], message: "NAME must be at most 100 characters" },
    { args: ["app", "create", "tab\there"], message: "NAME may not hold control or format characters" },
    { args: ["app", "create", "X", "--support-message"], message: "flag --support-message needs a value (TEXT)" },
    { args: ["app", "create", "X", "--bogus"], message: "unknown flag --bogus; run with --help to see the flags this command takes" },
    { args: ["app", "frobnicate"], message: 'unknown app command "frobnicate"; see latchkey app --help' },
    { args: ["license", "create"], message: "license create needs --app ID; see latchkey app list" },
    { args: ["license", "create", "--app"], message: "flag --app needs a value (ID)" },
    { args: ["license", "create", "--app", "abc"], message: "--app must be a positive whole number" },
    { args: ["license", "create", "--app", "0"], message: "--app must be a positive whole number" },
    {
      args: ["license", "create", "--app", APP, "--activations", "many"],
      message: "--activations must be a whole number, or -1 for unlimited",
    },
    { args: ["license", "create", "--app", APP, "--activations", "-2"], message: "--activations must be -1 (unlimited) or more" },
    {
      args: ["license", "create", "--app", APP, "--activations", "1.5"],
      message: "--activations must be a whole number, or -1 for unlimited",
    },
    { args: ["license", "create", "--app", APP, "--activations", "2000000"], message: "--activations must be at most 1000000" },
    {
      args: ["license", "create", "--app", APP, "--expires", "tomorrow"],
      message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp",
    },
    { args: ["license", "create", "--app", APP, "--expires", "2030-02-30T25:00:00Z"], message: "--expires must be a date" },
    {
      args: ["license", "create", "--app", APP, "--expires", "2030-02-31"],
      message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp",
    },
    { args: ["license", "create", "--app", APP, "--memo", "m".repeat(1001)], message: "--memo must be at most 1000 characters" },
    { args: ["license", "create", "--app", APP, "--app", APP], message: "flag --app was given more than once" },
    { args: ["license", "enable"], message: "license enable takes one ID; see latchkey license list" },
    { args: ["license", "disable", "1", "2"], message: "license disable takes one ID" },
    { args: ["license", "delete", "x"], message: "ID must be a positive whole number" },
    { args: ["license", "revoke", "1"], message: 'unknown license command "revoke"; see latchkey license --help' },
    { args: ["license", "verify"], message: "license verify takes one RECEIPT (or - to read it from standard input)" },
    {
      args: ["license", "verify", "a.b.c"],
      message: "license verify needs --public-key FILE (save it from GET /api/license/public-key?format=pem)",
    },
    { args: ["license", "list", "--allow-grace=maybe"], message: "flag --allow-grace is a switch" },
  ];
  test.each(CASES)("$args, and nothing was created", async ({ args, message }) => {
    const before = await totals();
    const res = await cli(...args.map((a) => (a === APP ? app : a)));
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("");
    expect(res.stderr).toStartWith("latchkey: ");
    if (typeof message === "string") expect(res.stderr).toContain(message);
    else expect(res.stderr).toMatch(message);
    expect(await totals()).toEqual(before);
  });

  test.each([["app"], ["license"]])("%s with no command prints its usage and exits 2; --help exits 0", async (command) => {
    const bare = await runLatchkey([command]);
    expect(bare.code).toBe(2);
    expect(bare.stdout).toStartWith(`Usage: latchkey ${command} `);
    const help = await runLatchkey([command, "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toBe(bare.stdout);
  });
});
