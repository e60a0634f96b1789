/**
 * `latchkey key ...`, run as separate processes on the data directory of a running server
 * (SPEC §1, §4): generate prints the keys alone on standard output, one per line, so that
 * `KEY=$(latchkey key generate)` works, and each key's ID on standard error; list, revoke, reset
 * and delete; a revoke from the CLI disconnects the client connected to the server. Bad flags
 * exit 2 with a sentence that says what to do, echoing a flag as it was typed; failures of the
 * operation itself exit 1.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, eventually, login, RpcClient, runLatchkey, startTestServer, type TestServer } from "./support.ts";

const KEY_LINE = /^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$/;
const INVALID = "AUTH_FAILED: Invalid or revoked key";

let server: TestServer;
let admin: string;

const cli = (...args: string[]) => runLatchkey([...args, ...server.storageArgs]);
async function ok(...args: string[]) {
  const res = await cli(...args);
  if (res.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  expect(res.stderr).toBe("");
  return res;
}
/** `key generate`: the keys from standard output, and from standard error the ID of each, in order. */
async function generate(...args: string[]): Promise<{ keys: string[]; ids: number[] }> {
  const res = await cli("key", "generate", ...args);
  if (res.code !== 0) throw new Error(`latchkey key generate ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  const keys = res.stdout.split("\n");
  expect(keys.pop()).toBe("");
  const lines = res.stderr.split("\n");
  expect(lines.pop()).toBe("");
  expect(lines).toHaveLength(keys.length);
  const ids = lines.map((line, i) => {
    // The key is masked there: standard error is what ends up in logs.
    expect(line).toMatch(new RegExp(`^created key \\d+ \\(${keys[i]!.slice(0, 4)}-••••-••••\\)$`));
    return Number(/\d+/.exec(line)![0]);
  });
  return { keys, ids };
}
const regArgs = (uuid: string, key: string) => ({
  uuid,
  name: "cli-client",
  hostname: "cli-client.example",
  version: "1.0",
  os: "linux",
  auth_key: key,
});
const apiKey = async (id: number) => (await call(server.url, "GET", `/api/keys/${id}`, { token: admin })).body;
/** Keys by their text, as the server's API lists them. */
async function apiKeys(): Promise<Map<string, any>> {
  const items = (await call(server.url, "GET", "/api/keys?limit=1000", { token: admin })).body.items as any[];
  return new Map(items.map((k) => [k.key, k]));
}

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  await call(server.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: true } });
});
afterAll(() => server.close());

describe("latchkey key generate", () => {
  test("prints exactly the key and a newline on stdout, its ID on stderr; the running server knows it at once", async () => {
    const res = await cli("key", "generate");
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}\n$/);
    const key = res.stdout.trim();
    const known = (await apiKeys()).get(key);
    expect(known).toMatchObject({ status: "pending", label: "", usage_count: 0 });
    expect(res.stderr).toBe(`created key ${known.id} (${key.slice(0, 4)}-••••-••••)\n`);
    const rpc = await RpcClient.connect(server.wsUrl);
    const uuid = crypto.randomUUID();
    expect((await rpc.request("client", "register", regArgs(uuid, key))).name).toBe("response");
    rpc.close();
    expect(await apiKey(known.id)).toMatchObject({ status: "active", client_uuid: uuid, usage_count: 1 });
  });

  test("--count 100 prints 100 distinct keys, one per line, each with its ID, with the label, group and expiry", async () => {
    const { keys: lines, ids } = await generate(
      "--count",
      "100",
      "--label",
      "Customer ABC - batch 1",
      "--group",
      "east",
      "--expires",
      "2030-01-01",
    );
    expect(lines).toHaveLength(100);
    for (const line of lines) expect(line).toMatch(KEY_LINE);
    expect(new Set(lines).size).toBe(100);
    const known = await apiKeys();
    for (const [i, line] of lines.entries()) {
      expect(known.get(line)).toMatchObject({
        id: ids[i],
        status: "pending",
        label: "Customer ABC - batch 1",
        group: "east",
        expires_at: "2030-01-01T00:00:00.000Z",
      });
    }
  });

  test("--json prints the keys as JSON", async () => {
    const keys = JSON.parse((await ok("key", "generate", "--count", "2", "--json")).stdout);
    expect(keys).toHaveLength(2);
    for (const k of keys) expect(k).toMatchObject({ id: expect.any(Number), key: expect.stringMatching(KEY_LINE), status: "pending" });
  });

  test("audited with the CLI as the actor, without the keys themselves", async () => {
    const generations = () => call(server.url, "GET", "/api/audit?action=key.generate&limit=1000", { token: admin });
    const before = (await generations()).body.items.length;
    const { keys } = await generate("--count", "2", "--label", "audited");
    const audit = await generations();
    expect(audit.body.items.length).toBeGreaterThan(before);
    expect(audit.body.items[0].actor).toStartWith("cli:");
    // This file generates keys with the CLI only.
    for (const e of audit.body.items) expect(e.actor).toStartWith("cli:");
    for (const key of keys) expect(audit.text).not.toContain(key);
    for (const key of (await apiKeys()).keys()) expect(audit.text).not.toContain(key);
  });
});

describe("latchkey key list, revoke, reset, delete", () => {
  test("list shows every key with status, label, client and uses; --status filters; --json", async () => {
    const [key, bound] = (await generate("--count", "2", "--label", "listed")).keys as [string, string];
    // One of them bound to a client, which used it once.
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("client", "register", regArgs(crypto.randomUUID(), bound))).name).toBe("response");
    rpc.close();
    const list = await ok("key", "list");
    const lines = list.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID\s+KEY\s+STATUS\s+LABEL\s+CLIENT\s+USES\s+CREATED\s+LAST USED$/);
    const row = lines.find((l) => l.includes(key))!;
    expect(row).toMatch(new RegExp(`^\\d+\\s+${key}\\s+pending\\s+listed\\s+-\\s+0\\s+\\S+\\s+never$`));
    const active = JSON.parse((await ok("key", "list", "--status", "active", "--json")).stdout) as any[];
    expect(active.length).toBeGreaterThan(0);
    expect(active.every((k) => k.status === "active")).toBe(true);
    const all = JSON.parse((await ok("key", "list", "--json")).stdout) as any[];
    expect(all.length).toBe((await call(server.url, "GET", "/api/keys", { token: admin })).body.total);
    expect(active.map((k) => k.key)).toContain(bound);
    expect(all.find((k) => k.key === bound)).toMatchObject({ status: "active", usage_count: 1 });
    expect(lines.find((l) => l.includes(bound))).toMatch(/\sactive\s.*cli-client\s+1\s/);
  });

  test("revoke while the client is connected: closed, refused from then on", async () => {
    const generated = await generate();
    const [key, id] = [generated.keys[0]!, generated.ids[0]!];
    expect((await apiKeys()).get(key).id).toBe(id);
    const uuid = crypto.randomUUID();
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("client", "register", regArgs(uuid, key))).name).toBe("response");
    const res = await ok("key", "revoke", String(id));
    expect(res.stdout).toBe(`key ${id} revoked\n`);
    const closed = await eventually(() => rpc.closedWith, { what: "the server to close the revoked client's socket" });
    expect(closed).toEqual({ code: 4003, reason: INVALID });
    expect(await apiKey(id)).toMatchObject({ status: "revoked", client_uuid: uuid });
    const again = await RpcClient.connect(server.wsUrl);
    expect((await again.request("client", "register", regArgs(uuid, key))).args).toEqual({
      code: 403,
      message: INVALID,
      reason: "invalid_key",
    });
    again.close();
    const audit = await call(server.url, "GET", "/api/audit?action=key.revoke", { token: admin });
    expect(audit.body.items[0]).toMatchObject({ actor: expect.stringMatching(/^cli:/), target: `key ${id}`, reason: `bound to ${uuid}` });
  });

  test("reset returns a key to pending (a new machine can take it); delete removes it", async () => {
    const generated = await generate();
    const [key, id] = [generated.keys[0]!, generated.ids[0]!];
    expect((await apiKeys()).get(key).id).toBe(id);
    const old = crypto.randomUUID();
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("client", "register", regArgs(old, key))).name).toBe("response");
    expect((await ok("key", "reset", String(id))).stdout).toBe(`key ${id} reset to pending\n`);
    expect(await eventually(() => rpc.closedWith, { what: "the server to close the reset key's client" })).toEqual({
      code: 4003,
      reason: INVALID,
    });
    expect(await apiKey(id)).toMatchObject({ status: "pending", client_uuid: null });
    const newcomer = crypto.randomUUID();
    const fresh = await RpcClient.connect(server.wsUrl);
    expect((await fresh.request("client", "register", regArgs(newcomer, key.toLowerCase()))).name).toBe("response");
    expect((await ok("key", "delete", String(id))).stdout).toBe(`key ${id} deleted\n`);
    expect(await eventually(() => fresh.closedWith, { what: "the server to close the deleted key's client" })).toEqual({
      code: 4003,
      reason: INVALID,
    });
    expect((await call(server.url, "GET", `/api/keys/${id}`, { token: admin })).status).toBe(404);
    expect((await ok("key", "list")).stdout).not.toContain(key);
  });

  test("an unknown ID is a failure of the operation: exit 1, nothing printed on stdout", async () => {
    for (const sub of ["revoke", "reset", "delete"]) {
      const res = await cli("key", sub, "999999");
      expect(res).toEqual({ code: 1, stdout: "", stderr: "latchkey: no key with id 999999\n" });
    }
  });
});

describe("bad flags exit 2 with a remedy", () => {
  const CASES: { args: string[]; message: string }[] = [
    { args: ["key", "frobnicate"], message: 'unknown key command "frobnicate"; see latchkey key --help' },
    { args: ["key", "generate", "--count", "0"], message: "--count must be 1 to 100" },
    { args: ["key", "generate", "--count", "101"], message: "--count must be 1 to 100" },
    { args: ["key", "generate", "--count", "many"], message: "--count must be a whole number from 1 to 100" },
    { args: ["key", "generate", "--count", "1.5"], message: "--count must be a whole number from 1 to 100" },
    { args: ["key", "generate", "--count", "-1"], message: "--count must be a whole number from 1 to 100" },
    { args: ["key", "generate", "--count"], message: "flag --count needs a value (1..100)" },
    { args: ["key", "generate", "--count", "1", "--count", "2"], message: "flag --count was given more than once" },
    { args: ["key", "generate", "--label", "x".repeat(101)], message: "--label must be at most 100 characters" },
    { args: ["key", "generate", "--label", "tab\there"], message: "--label may not hold control characters" },
    { args: ["key", "generate", "--group", "../etc"], message: "--group group names hold letters, digits, space and . _ - (at most 64)" },
    { args: ["key", "generate", "--expires", "tomorrow"], message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp" },
    { args: ["key", "generate", "--expires", "2030-02-30"], message: "--expires must be a date (YYYY-MM-DD) or an ISO 8601 timestamp" },
    { args: ["key", "generate", "--bogus"], message: "unknown flag --bogus; run with --help to see the flags this command takes" },
    { args: ["key", "list", "--status", "expired"], message: "--status must be pending, active or revoked" },
    { args: ["key", "list", "--json=maybe"], message: "flag --json is a switch" },
    { args: ["key", "revoke"], message: "key revoke takes one ID; see latchkey key list" },
    { args: ["key", "reset", "1", "2"], message: "key reset takes one ID; see latchkey key list" },
    { args: ["key", "delete", "x"], message: "ID must be a positive whole number" },
    { args: ["key", "revoke", "0"], message: "ID must be a positive whole number" },
  ];
  /** How many keys there are, and how many of them are revoked: a refused command changes neither. */
  const counts = async () => ({
    keys: (await call(server.url, "GET", "/api/keys", { token: admin })).body.total,
    revoked: (await call(server.url, "GET", "/api/keys?status=revoked", { token: admin })).body.total,
  });

  test.each(CASES)("$args, and nothing was created, revoked or deleted", async ({ args, message }) => {
    const before = await counts();
    const res = await cli(...args);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("");
    expect(res.stderr).toStartWith("latchkey: ");
    expect(res.stderr).toContain(message);
    expect(await counts()).toEqual(before);
  });

  test.each([
    [["key", "generate", "-bogus"], "unknown flag -bogus; run with --help to see the flags this command takes"],
    [["key", "generate", "---bogus"], "unknown flag ---bogus; run with --help to see the flags this command takes"],
    // Without the value, which may be a secret given to a mistyped flag.
    [["key", "generate", "--bogus=s3cret"], "unknown flag --bogus; run with --help to see the flags this command takes"],
    [
      ["key", "generate", "--b\u00f6gus\u001b[2J"],
      'unknown flag "--b\u00f6gus\\u001b[2J"; run with --help to see the flags this command takes',
    ],
    [["key", "generate", "-count"], "flag -count needs a value (1..100)"],
    [["key", "generate", "-count=1", "-count", "2"], "flag -count was given more than once"],
    [["key", "list", "-json=maybe"], "flag -json is a switch: give it alone, or as -json=true / -json=false"],
    [["key", "generate", "-count", "0"], "-count must be 1 to 100"],
    [["key", "generate", "-label", "tab\there"], "-label may not hold control characters"],
    [["key", "list", "-status", "expired"], "-status must be pending, active or revoked"],
  ])("%p echoes the flag exactly as typed, and nothing was created", async (args, message) => {
    const before = await counts();
    expect(await cli(...args)).toEqual({ code: 2, stdout: "", stderr: `latchkey: ${message}\n` });
    expect(await counts()).toEqual(before);
  });

  test("latchkey key alone prints the usage and exits 2; --help exits 0", async () => {
    const bare = await cli("key");
    expect(bare.code).toBe(2);
    expect(bare.stdout).toContain("latchkey key generate [--count 1..100]");
    const help = await cli("key", "--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("latchkey key revoke ID | reset ID | delete ID");
  });

  test("a data directory without a database: exit 1 naming the remedy", async () => {
    const res = await runLatchkey(["key", "list", "--data-dir", "/nonexistent/latchkey"]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("no latchkey database in /nonexistent/latchkey; start the server once");
  });
});
