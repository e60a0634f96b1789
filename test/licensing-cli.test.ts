/**
 * `latchkey app` and `latchkey license`, run as separate processes on the data directory of a
 * server that is running (SPEC §1: admin commands are safe while the server is up, and it sees
 * their changes at once). Output is for people and for scripts: `license create` prints the token
 * alone on stdout, so `TOKEN=$(latchkey license create --app 1)` works. Bad flags exit 2 with a
 * sentence that says what to do; failures of the operation itself exit 1.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, login, runLatchkey, startTestServer, type TestServer } from "./support.ts";

let server: TestServer;
let admin: string;

const cli = (...args: string[]) => runLatchkey([...args, "--data-dir", server.dataDir]);
async function ok(...args: string[]) {
  const res = await cli(...args);
  if (res.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  return res;
}
const activate = async (token: string, hwid: string) => (await call(server.url, "POST", "/api/activate", { body: { token, hwid } })).body;

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
});
afterAll(() => server.close());

describe("latchkey app", () => {
  test("create and list, seen by the running server at once", async () => {
    const created = await ok("app", "create", "Ice Breaker", "--support-message", "call 555-555-5555 for support");
    expect(created).toEqual({ code: 0, stdout: 'created application 1 "Ice Breaker"\n', stderr: "" });
    expect((await ok("app", "create", "Sled")).stdout).toBe('created application 2 "Sled"\n');
    const api = await call(server.url, "GET", "/api/apps/1", { token: admin });
    expect(api.body).toMatchObject({ id: 1, name: "Ice Breaker", support_message: "call 555-555-5555 for support" });

    const list = await ok("app", "list");
    expect(list.stdout.split("\n")).toEqual([
      "ID  NAME         KEYS  SUPPORT MESSAGE",
      "1   Ice Breaker  0     call 555-555-5555 for support",
      "2   Sled         0",
      "",
    ]);
    const json = JSON.parse((await ok("app", "list", "--json")).stdout);
    expect(json).toEqual([
      { id: 1, name: "Ice Breaker", support_message: "call 555-555-5555 for support", created_at: expect.any(String), licenses: 0 },
      { id: 2, name: "Sled", support_message: "", created_at: expect.any(String), licenses: 0 },
    ]);
  });

  test("a name taken in another case is refused (exit 1), and nothing is added", async () => {
    const res = await cli("app", "create", "ICE BREAKER");
    expect(res).toEqual({ code: 1, stdout: "", stderr: 'latchkey: an application named "Ice Breaker" already exists\n' });
    expect((await call(server.url, "GET", "/api/apps", { token: admin })).body.total).toBe(2);
  });
});

describe("latchkey license", () => {
  const tokens: Record<string, string> = {};

  test("create prints exactly the token and a newline; the summary goes to stderr", async () => {
    const res = await ok("license", "create", "--app", "1", "--activations", "3", "--memo", "Order 1001", "--expires", "2030-01-01");
    expect(res.stdout).toMatch(/^[A-Z0-9]{25}\n$/);
    expect(res.stderr).toBe('created license 1 for "Ice Breaker": 3 activations, expires 2030-01-01T00:00:00.000Z\n');
    tokens.three = res.stdout.trim();
    const api = await call(server.url, "GET", "/api/licenses/1", { token: admin });
    expect(api.body).toMatchObject({ token: tokens.three, activations: 3, memo: "Order 1001", expires_at: "2030-01-01T00:00:00.000Z", enabled: true });
    expect(await activate(tokens.three, "hw-1")).toEqual({ result: "ok", remainingActivations: 2, receipt: expect.any(String) });
  });

  test.each([
    { label: "unlimited, --activations -1", args: ["--activations", "-1"], summary: "unlimited activations", remaining: -1 },
    { label: "unlimited, --activations=-1", args: ["--activations=-1"], summary: "unlimited activations", remaining: -1 },
    { label: "the default: one", args: [], summary: "1 activation", remaining: 0 },
    { label: "single-dash flags, as in the woho seed", args: ["-activations", "2", "-memo", "dash"], summary: "2 activations", remaining: 1 },
  ])("create: $label", async ({ args, summary, remaining }) => {
    const res = await ok("license", "create", "--app", "2", ...args);
    expect(res.stdout).toMatch(/^[A-Z0-9]{25}\n$/);
    expect(res.stderr).toMatch(new RegExp(`^created license \\d+ for "Sled": ${summary}\\n$`));
    expect((await activate(res.stdout.trim(), "hw-1")).remainingActivations).toBe(remaining);
  });

  test("list: a table, --json, and --app to filter", async () => {
    const table = (await ok("license", "list")).stdout.split("\n");
    expect(table[0]).toMatch(/^ID\s+APP\s+TOKEN\s+USED\s+STATE\s+EXPIRES\s+MEMO$/);
    expect(table).toContain(`1   Ice Breaker  ${tokens.three}  1/3   enabled  2030-01-01T00:00:00.000Z  Order 1001`);
    expect(table.some((line) => /^2\s+Sled\s+[A-Z0-9]{25}\s+1\/∞\s+enabled\s+-$/.test(line))).toBe(true);
    const all = JSON.parse((await ok("license", "list", "--json")).stdout);
    expect(all.map((l: { id: number }) => l.id)).toEqual([5, 4, 3, 2, 1]);
    const sled = JSON.parse((await ok("license", "list", "--app", "2", "--json")).stdout);
    expect(sled.map((l: { app_id: number }) => l.app_id)).toEqual([2, 2, 2, 2]);
    expect(sled.every((l: { token: string }) => /^[A-Z0-9]{25}$/.test(l.token))).toBe(true);
    expect(JSON.parse((await ok("app", "list", "--json")).stdout).map((a: { licenses: number }) => a.licenses)).toEqual([1, 4]);
  });

  test("disable, enable and delete take effect on the running server at once", async () => {
    expect((await ok("license", "disable", "1")).stdout).toBe("license 1 disabled\n");
    expect(await activate(tokens.three!, "hw-2")).toEqual({ result: "failure", error: "invalid activation token", support_message: "call 555-555-5555 for support" });
    expect((await call(server.url, "GET", `/api/check?token=${tokens.three}&hwid=hw-1`)).status).toBe(404);
    expect((await ok("license", "enable", "1")).stdout).toBe("license 1 enabled\n");
    expect((await activate(tokens.three!, "hw-2")).remainingActivations).toBe(1);
    expect((await call(server.url, "GET", `/api/check?token=${tokens.three}&hwid=hw-1`)).status).toBe(201);

    expect((await ok("license", "delete", "1")).stdout).toBe("license 1 deleted\n");
    expect((await call(server.url, "GET", "/api/licenses/1", { token: admin })).status).toBe(404);
    expect((await activate(tokens.three!, "hw-3")).error).toBe("invalid activation token");
    // With its last key gone, the application may go too.
    expect((await call(server.url, "DELETE", "/api/apps/1", { token: admin })).status).toBe(204);
  });

  test("the audit log names the command line as the actor", async () => {
    const audit = await call(server.url, "GET", "/api/audit?limit=1000", { token: admin });
    const mine = audit.body.items.filter((e: { actor: string | null }) => e.actor?.startsWith("cli:"));
    expect(new Set(mine.map((e: { action: string }) => e.action))).toEqual(new Set(["app.create", "license.create", "license.update", "license.delete"]));
    for (const e of mine) expect(e.address).toBe("local");
    expect(JSON.stringify(audit.body)).not.toContain(tokens.three);
  });

  test("operations that fail exit 1 with the reason", async () => {
    const CASES = [
      { args: ["license", "create", "--app", "999"], message: "latchkey: no application with id 999\n" },
      { args: ["license", "enable", "999"], message: "latchkey: no license key with id 999\n" },
      { args: ["license", "delete", "1"], message: "latchkey: no license key with id 1\n" },
    ];
    for (const { args, message } of CASES) expect(await cli(...args)).toEqual({ code: 1, stdout: "", stderr: message });
    const nowhere = await runLatchkey(["license", "list", "--data-dir", "/nonexistent/latchkey"]);
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toContain("no latchkey database in /nonexistent/latchkey; start the server once");
  });
});

describe("bad flags exit 2 with a remedy", () => {
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
    { args: ["license", "create", "--app", "2", "--activations", "many"], message: "--activations must be a whole number, or -1 for unlimited" },
    { args: ["license", "create", "--app", "2", "--activations", "-2"], message: "--activations must be -1 (unlimited) or more" },
    { args: ["license", "create", "--app", "2", "--activations", "1.5"], message: "--activations must be a whole number, or -1 for unlimited" },
    { args: ["license", "create", "--app", "2", "--activations", "2000000"], message: "--activations must be at most 1000000" },
    { args: ["license", "create", "--app", "2", "--expires", "tomorrow"], message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp" },
    { args: ["license", "create", "--app", "2", "--expires", "2030-02-30T25:00:00Z"], message: "--expires must be a date" },
    { args: ["license", "create", "--app", "2", "--expires", "2030-02-31"], message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp" },
    { args: ["license", "create", "--app", "2", "--memo", "m".repeat(1001)], message: "--memo must be at most 1000 characters" },
    { args: ["license", "create", "--app", "2", "--app", "2"], message: "flag --app was given more than once" },
    { args: ["license", "enable"], message: "license enable takes one ID; see latchkey license list" },
    { args: ["license", "disable", "1", "2"], message: "license disable takes one ID" },
    { args: ["license", "delete", "x"], message: "ID must be a positive whole number" },
    { args: ["license", "revoke", "1"], message: 'unknown license command "revoke"; see latchkey license --help' },
    { args: ["license", "verify"], message: "license verify takes one RECEIPT (or - to read it from standard input)" },
    { args: ["license", "verify", "a.b.c"], message: "license verify needs --public-key FILE (save it from GET /api/license/public-key?format=pem)" },
    { args: ["license", "list", "--allow-grace=maybe"], message: "flag --allow-grace is a switch" },
  ];
  test.each(CASES)("$args", async ({ args, message }) => {
    const res = await cli(...args);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("");
    expect(res.stderr).toStartWith("latchkey: ");
    if (typeof message === "string") expect(res.stderr).toContain(message);
    else expect(res.stderr).toMatch(message);
  });

  test("nothing was created by any of them", async () => {
    expect((await call(server.url, "GET", "/api/apps", { token: admin })).body.total).toBe(1);
    expect((await call(server.url, "GET", "/api/licenses", { token: admin })).body.total).toBe(4);
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
