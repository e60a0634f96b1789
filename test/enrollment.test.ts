/**
 * Pre-shared enrollment keys and client registration (SPEC §4, woho seed): the registration
 * table exactly over /ws, the require_auth_key setting from REST, RPC and the server flag,
 * expiry, revocation (REST, RPC, the CLI in another process, reset, delete, client deletion)
 * closing the live connection, clones, key administration and clients,
 * viewers scoped to their groups, the audit log and the live `events` pushes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { KEY_IN_USE_WINDOW_MS } from "../src/core/enrollment/index.ts";
import {
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

const KEY_FORMAT = /^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$/;
const INVALID = "AUTH_FAILED: Invalid or revoked key";
const BOUND = "AUTH_FAILED: Key already bound to a different client";
const IN_USE = "AUTH_FAILED: Key already in use";
const CLONE = "AUTH_FAILED: Client already connected";

let server: TestServer;
let admin: string;
let watcher: RpcClient;
/** The shared server's clock runs with real time, plus whatever `pastInUseWindow` added. */
let skew = 0;

/** Makes every binding made so far older than the "Key already in use" window. */
function pastInUseWindow(): void {
  skew += KEY_IN_USE_WINDOW_MS;
}

const uuid = () => crypto.randomUUID();
const regArgs = (id: string, key?: string) => ({
  uuid: id,
  name: `client-${id.slice(0, 8)}`,
  hostname: `host-${id.slice(0, 8)}.example`,
  version: "1.2.3",
  os: "linux",
  ...(key === undefined ? {} : { auth_key: key }),
});

/** Connects a fresh socket and registers on it; the socket stays open. */
async function register(id: string, key?: string, url = server.wsUrl): Promise<{ rpc: RpcClient; reply: any }> {
  const rpc = await RpcClient.connect(url);
  const reply = await rpc.request("client", "register", regArgs(id, key));
  return { rpc, reply };
}

async function getClient(id: string, token = admin): Promise<any> {
  return (await call(server.url, "GET", `/api/clients/${id}`, { token })).body;
}

/** Closes a client's socket and waits until the server no longer counts it online. */
async function disconnect(rpc: RpcClient, id: string): Promise<void> {
  rpc.close();
  await rpc.closed;
  await eventually(async () => (await getClient(id)).online === false, { what: `${id} to be offline` });
}

/** Registers and disconnects: leaves the key bound (when one is required). */
async function enroll(id: string, key?: string): Promise<any> {
  const { rpc, reply } = await register(id, key);
  expect(reply.name).toBe("response");
  await disconnect(rpc, id);
  return reply.args;
}

async function setRequire(on: boolean): Promise<void> {
  const res = await call(server.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: on } });
  expect(res.status).toBe(200);
  expect(res.body).toEqual({ require_auth_key: on });
}

async function generate(body: Record<string, unknown> = { quantity: 1 }, token = admin): Promise<any[]> {
  const res = await call(server.url, "POST", "/api/keys", { token, body });
  expect(res.status).toBe(201);
  return res.body.items;
}

async function getKey(id: number, token = admin): Promise<any> {
  return (await call(server.url, "GET", `/api/keys/${id}`, { token })).body;
}

/** Each refusal's machine-readable reason (`args.reason`), next to the seed's message. */
const REASON_OF: Record<string, string> = {
  AUTH_REQUIRED: "auth_required",
  [INVALID]: "invalid_key",
  [BOUND]: "bound_elsewhere",
  [IN_USE]: "key_in_use",
  [CLONE]: "already_connected",
};

/** A refusal with its seed message and the reason that goes with it; any other error carries no reason. */
function expectError(reply: any, code: number, message: string): void {
  expect(reply).toMatchObject({ namespace: "rpc", name: "error", args: { code, message } });
  expect(reply.args.reason).toBe(REASON_OF[message]);
}

/** Resolves with how the server closed the socket (a revocation's close). */
function closedByServer(rpc: RpcClient): Promise<{ code: number; reason: string }> {
  return eventually(() => rpc.closedWith, { what: "the server to close the socket" });
}

/**
 * True when the socket is still open `ms` after now. The wait is what is tested (nothing closes
 * it in that time), not a synchronisation.
 */
async function stillOpenAfter(rpc: RpcClient, ms: number): Promise<boolean> {
  await Bun.sleep(ms);
  return rpc.closedWith === null;
}

async function signedInSocket(token: string): Promise<RpcClient> {
  const rpc = await RpcClient.connect(server.wsUrl);
  expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
  return rpc;
}

function waitForEvent(rpc: RpcClient, topic: string, match: (args: any) => boolean = () => true): Promise<any> {
  return eventually(() => rpc.events.find((e) => e.name === topic && match(e.args)), { what: `the event ${topic}` });
}

/** A round trip on the socket: every push sent to it before now has arrived. */
async function settle(rpc: RpcClient): Promise<void> {
  expect((await rpc.request("rpc", "query", {})).name).toBe("response");
}

async function audit(action: string): Promise<any[]> {
  return (await call(server.url, "GET", `/api/audit?action=${encodeURIComponent(action)}&limit=1000`, { token: admin })).body.items;
}

beforeAll(async () => {
  server = await startTestServer({ clock: () => Date.now() + skew });
  admin = await login(server.url);
  watcher = await signedInSocket(admin);
});
afterAll(async () => {
  watcher.close();
  await server.close();
});

// ---------------------------------------------------------------------------------------------

describe("the woho registration table over /ws", () => {
  /** active-other: bound to another UUID 10 s ago or more; active-other-recent: less than 10 s ago. */
  type KeyState =
    "none" | "empty" | "unknown" | "malformed" | "revoked" | "pending" | "active-same" | "active-other" | "active-other-recent";
  interface Row {
    required: boolean;
    key: KeyState;
    result: "registered" | "reconnect" | { code: number; message: string };
  }
  const rows: Row[] = [
    { required: false, key: "none", result: "registered" },
    { required: false, key: "unknown", result: "registered" },
    { required: false, key: "malformed", result: "registered" },
    { required: false, key: "revoked", result: "registered" },
    { required: false, key: "pending", result: "registered" },
    { required: false, key: "active-other", result: "registered" },
    { required: false, key: "active-other-recent", result: "registered" },
    { required: true, key: "none", result: { code: 403, message: "AUTH_REQUIRED" } },
    { required: true, key: "empty", result: { code: 403, message: "AUTH_REQUIRED" } },
    { required: true, key: "unknown", result: { code: 403, message: INVALID } },
    { required: true, key: "malformed", result: { code: 403, message: INVALID } },
    { required: true, key: "revoked", result: { code: 403, message: INVALID } },
    { required: true, key: "pending", result: "registered" },
    { required: true, key: "active-same", result: "reconnect" },
    { required: true, key: "active-other", result: { code: 403, message: BOUND } },
    { required: true, key: "active-other-recent", result: { code: 403, message: IN_USE } },
  ];

  const table = rows.map((r) => ({ ...r, outcome: typeof r.result === "object" ? `${r.result.code} ${r.result.message}` : r.result }));
  test.each(table)("auth required: $required, key $key → $outcome", async ({ required, key: state, result }) => {
    const me = uuid();
    const [key] = await generate();
    // Put the key into the state the row names (binding needs the requirement on).
    await setRequire(true);
    if (state === "active-same") await enroll(me, key.key);
    if (state === "active-other" || state === "active-other-recent") await enroll(uuid(), key.key);
    if (state === "active-other") pastInUseWindow();
    if (state === "revoked") expect((await call(server.url, "POST", `/api/keys/${key.id}/revoke`, { token: admin })).status).toBe(200);
    await setRequire(required);
    const before = await getKey(key.id);

    const sent = {
      none: undefined,
      empty: "",
      unknown: "ABCD-EFGH-JKMN",
      malformed: "not a key at all",
      revoked: key.key,
      pending: key.key,
      "active-same": key.key,
      "active-other": key.key,
      "active-other-recent": key.key,
    }[state];
    const { rpc, reply } = await register(me, sent);
    try {
      const after = await getKey(key.id);
      if (typeof result === "object") {
        expectError(reply, result.code, result.message);
        expect(after).toEqual(before);
        expect((await call(server.url, "GET", `/api/clients/${me}`, { token: admin })).status).toBe(404);
        const failures = (await audit("client.register")).filter((e) => e.target === me);
        expect(failures).toHaveLength(1);
        expect(failures[0]).toMatchObject({ outcome: "failure", reason: result.message });
        return;
      }
      expect(reply).toMatchObject({
        name: "response",
        args: { registered: true, uuid: me, reconnect: result === "reconnect" || !required },
      });
      expect(await getClient(me)).toMatchObject({ uuid: me, online: true, key_id: required ? key.id : null });
      if (!required) {
        // The key was ignored: its record is untouched.
        expect(after).toEqual(before);
      } else if (state === "pending") {
        expect(before.status).toBe("pending");
        expect(after).toMatchObject({ status: "active", client_uuid: me, usage_count: 1, client_name: regArgs(me).name });
        expect(after.first_used_at).toBe(after.last_used_at);
        expect(after.first_used_at).not.toBeNull();
      } else {
        expect(after).toMatchObject({ status: "active", client_uuid: me, usage_count: before.usage_count + 1 });
        expect(after.first_used_at).toBe(before.first_used_at);
      }
    } finally {
      rpc.close();
      await rpc.closed;
      await setRequire(false);
    }
  });

  const spellings = [
    { label: "as generated", spell: (k: string) => k },
    { label: "lower case", spell: (k: string) => k.toLowerCase() },
    { label: "without dashes", spell: (k: string) => k.replace(/-/g, "") },
    { label: "lower case without dashes", spell: (k: string) => k.replace(/-/g, "").toLowerCase() },
    { label: "mixed case, surrounding spaces", spell: (k: string) => ` ${k.slice(0, 7).toLowerCase()}${k.slice(7)} ` },
  ];
  test.each(spellings)("a key typed $label binds, and the bound client reconnects with any spelling", async ({ spell }) => {
    await setRequire(true);
    try {
      const me = uuid();
      const [key] = await generate();
      await enroll(me, spell(key.key));
      expect(await getKey(key.id)).toMatchObject({ status: "active", client_uuid: me });
      for (const again of spellings) {
        const { rpc, reply } = await register(me, again.spell(key.key));
        expect(reply).toMatchObject({ name: "response", args: { reconnect: true } });
        await disconnect(rpc, me);
      }
      expect((await getKey(key.id)).usage_count).toBe(1 + spellings.length);
      // Another client is refused whatever the spelling.
      pastInUseWindow();
      const other = await register(uuid(), spell(key.key).toLowerCase());
      expectError(other.reply, 403, BOUND);
      other.rpc.close();
    } finally {
      await setRequire(false);
    }
  });

  test("a key with a wrong character (O for 0, I for 1, L) is unknown", async () => {
    await setRequire(true);
    try {
      for (const bad of ["OOOO-OOOO-OOOO", "IIII-1111-LLLL", "ABCD-EFGH-JKM0", "ABCD-EFGH-JKMNP", "ABC-EFGH-JKMN"]) {
        const { rpc, reply } = await register(uuid(), bad);
        expectError(reply, 403, INVALID);
        rpc.close();
      }
    } finally {
      await setRequire(false);
    }
  });
});

describe("require_auth_key takes effect on the very next registration", () => {
  test("toggled over REST and over RPC, read back from both; each change is audited and pushed", async () => {
    const viaRpc = async (on: boolean) => {
      const reply = await watcher.request("latchkey", "settings", { action: "update", require_auth_key: on });
      expect(reply.args).toEqual({ require_auth_key: on });
    };
    for (const [label, set] of [
      ["REST", setRequire],
      ["RPC", viaRpc],
    ] as const) {
      await settle(watcher);
      const pushed = watcher.events.length;
      await set(true);
      let r = await register(uuid());
      expectError(r.reply, 403, "AUTH_REQUIRED");
      r.rpc.close();
      expect((await call(server.url, "GET", "/api/settings", { token: admin })).body).toEqual({ require_auth_key: true });
      expect((await watcher.request("latchkey", "settings", { action: "get" })).args).toEqual({ require_auth_key: true });
      await set(false);
      const me = uuid();
      r = await register(me);
      expect(r.reply.name).toBe("response");
      await disconnect(r.rpc, me);
      await settle(watcher);
      const changes = watcher.events
        .slice(pushed)
        .filter((e) => e.name === "settings.changed")
        .map((e) => e.args);
      expect({ label, changes }).toEqual({ label, changes: [{ require_auth_key: true }, { require_auth_key: false }] });
    }
    const audited = await audit("settings.update");
    expect(audited.length).toBeGreaterThanOrEqual(4);
    expect(audited[0]).toMatchObject({ actor: "admin", target: "require_auth_key", outcome: "success", reason: "false" });
  });

  test("the server flag --require-auth-key turns it on at start", async () => {
    const flagged = await startTestServer({ flags: ["--require-auth-key"] });
    try {
      const token = await login(flagged.url);
      expect((await call(flagged.url, "GET", "/api/settings", { token })).body).toEqual({ require_auth_key: true });
      const rpc = await RpcClient.connect(flagged.wsUrl);
      expectError(await rpc.request("client", "register", regArgs(uuid())), 403, "AUTH_REQUIRED");
      const key = (await call(flagged.url, "POST", "/api/keys", { token, body: { quantity: 1 } })).body.items[0];
      expect((await rpc.request("client", "register", regArgs(uuid(), key.key))).name).toBe("response");
      rpc.close();
      // And it can still be turned off at run time.
      await call(flagged.url, "PATCH", "/api/settings", { token, body: { require_auth_key: false } });
      const other = await RpcClient.connect(flagged.wsUrl);
      expect((await other.request("client", "register", regArgs(uuid()))).name).toBe("response");
      other.close();
    } finally {
      await flagged.close();
    }
  });

  test("viewers may read the setting but not change it", async () => {
    await createUser(server.url, admin, { username: "settings-viewer", password: "viewer-password", role: "viewer" });
    const viewer = await login(server.url, "settings-viewer", "viewer-password");
    expect((await call(server.url, "GET", "/api/settings", { token: viewer })).status).toBe(200);
    expect((await call(server.url, "PATCH", "/api/settings", { token: viewer, body: { require_auth_key: true } })).status).toBe(403);
    const rpc = await signedInSocket(viewer);
    expect((await rpc.request("latchkey", "settings", { action: "update", require_auth_key: true })).args.code).toBe(403);
    rpc.close();
    expect((await call(server.url, "GET", "/api/settings", { token: admin })).body).toEqual({ require_auth_key: false });
  });
});

describe("expiry: a restart is not a re-enrollment", () => {
  test("an expired pending key is refused; an active key's bound client still reconnects after expiry; revocation still wins", async () => {
    const clock = manualClock(Date.parse("2026-03-01T00:00:00Z"));
    const own = await startTestServer({ clock });
    try {
      const token = await login(own.url);
      await call(own.url, "PATCH", "/api/settings", { token, body: { require_auth_key: true } });
      const keys = (await call(own.url, "POST", "/api/keys", { token, body: { quantity: 2, expires_at: "2026-03-02" } })).body.items;
      const [bound, unused] = [keys[0], keys[1]];
      const me = uuid();
      const first = await RpcClient.connect(own.wsUrl);
      expect((await first.request("client", "register", regArgs(me, bound.key))).name).toBe("response");
      first.close();
      await first.closed;

      clock.advance(2 * 24 * 3600 * 1000);
      const token2 = await login(own.url);
      const keysNow = (await call(own.url, "GET", "/api/keys", { token: token2 })).body.items;
      expect(keysNow.every((k: any) => k.expired === true)).toBe(true);

      const stranger = await RpcClient.connect(own.wsUrl);
      expectError(await stranger.request("client", "register", regArgs(uuid(), unused.key)), 403, INVALID);
      stranger.close();
      expect((await call(own.url, "GET", `/api/keys/${unused.id}`, { token: token2 })).body.status).toBe("pending");

      await eventually(async () => (await call(own.url, "GET", `/api/clients/${me}`, { token: token2 })).body.online === false, {
        what: "the first socket to be gone",
      });
      const again = await RpcClient.connect(own.wsUrl);
      expect(await again.request("client", "register", regArgs(me, bound.key))).toMatchObject({
        name: "response",
        args: { reconnect: true },
      });
      // Revocation wins over the identity: the socket closes, and the next attempt fails.
      await call(own.url, "POST", `/api/keys/${bound.id}/revoke`, { token: token2 });
      expect(await closedByServer(again)).toEqual({ code: 4003, reason: INVALID });
      const last = await RpcClient.connect(own.wsUrl);
      expectError(await last.request("client", "register", regArgs(me, bound.key)), 403, INVALID);
      last.close();
    } finally {
      await own.close();
    }
  });
});

describe("another UUID with an active key: in use for 10 s after the binding, bound to a different client after", () => {
  test(
    "measured from the binding on the server's clock; " + "a reset key's next binding opens a new window; each refusal is audited",
    async () => {
      const bindAt = Date.parse("2026-04-01T00:00:00Z");
      const clock = manualClock(bindAt);
      const own = await startTestServer({ clock });
      try {
        const token = await login(own.url);
        await call(own.url, "PATCH", "/api/settings", { token, body: { require_auth_key: true } });
        const [key] = (await call(own.url, "POST", "/api/keys", { token, body: { quantity: 1 } })).body.items;
        /** Registers `id` with the key on a socket of its own, closed again at once. */
        const present = async (id: string, at: number): Promise<any> => {
          clock.set(at);
          const rpc = await RpcClient.connect(own.wsUrl);
          try {
            return await rpc.request("client", "register", regArgs(id, key.key));
          } finally {
            rpc.close();
            await rpc.closed;
          }
        };
        const [a, b, c] = [uuid(), uuid(), uuid()];
        expect(await present(a, bindAt)).toMatchObject({ name: "response", args: { uuid: a, reconnect: false } });
        expectError(await present(b, bindAt + 3000), 403, IN_USE);
        expectError(await present(c, bindAt + KEY_IN_USE_WINDOW_MS - 1), 403, IN_USE);
        expectError(await present(b, bindAt + KEY_IN_USE_WINDOW_MS), 403, BOUND);
        expectError(await present(c, bindAt + 60_000), 403, BOUND);

        // Reset (the remedy for "bound to a different client"), and another machine binds it: the
        // window counts from this binding, for the previous holder as for anyone else.
        const rebindAt = bindAt + 120_000;
        clock.set(rebindAt);
        expect((await call(own.url, "POST", `/api/keys/${key.id}/reset`, { token })).status).toBe(200);
        expect(await present(b, rebindAt)).toMatchObject({ name: "response", args: { uuid: b, reconnect: false } });
        expect((await call(own.url, "GET", `/api/keys/${key.id}`, { token })).body).toMatchObject({
          status: "active",
          client_uuid: b,
          first_used_at: new Date(rebindAt).toISOString(),
        });
        expectError(await present(a, rebindAt + 3000), 403, IN_USE);
        expectError(await present(c, rebindAt + 3000), 403, IN_USE);
        expectError(await present(a, rebindAt + KEY_IN_USE_WINDOW_MS), 403, BOUND);

        const log = (
          await call(own.url, "GET", "/api/audit?action=client.register&outcome=failure&limit=1000", { token })
        ).body.items.reverse();
        expect(log.map((e: any) => [e.target, e.reason])).toEqual([
          [b, IN_USE],
          [c, IN_USE],
          [b, BOUND],
          [c, BOUND],
          [a, IN_USE],
          [c, IN_USE],
          [a, BOUND],
        ]);
        expect((await call(own.url, "GET", `/api/keys/${key.id}`, { token })).body).toMatchObject({
          status: "active",
          client_uuid: b,
          usage_count: 2,
        });
      } finally {
        await own.close();
      }
    },
  );
});

// ---------------------------------------------------------------------------------------------

describe("revocation closes the live connection", () => {
  interface Way {
    label: string;
    act: (key: any, me: string) => Promise<void>;
    /** After the act, a new client may take the key (reset). */
    freed?: boolean;
    /** The message the old client gets when it tries again. */
    next: string;
    /** The audit action that records it. */
    action: string;
  }
  const ok = (res: { status: number }) => expect(res.status).toBeLessThan(300);
  const cli = async (args: string[]) => {
    const res = await runLatchkey([...args, ...server.storageArgs]);
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
  };
  const ways: Way[] = [
    {
      label: "REST revoke",
      act: async (k) => ok(await call(server.url, "POST", `/api/keys/${k.id}/revoke`, { token: admin })),
      next: INVALID,
      action: "key.revoke",
    },
    {
      label: "RPC revoke",
      act: async (k) => expect((await watcher.request("latchkey", "keys", { action: "revoke", id: k.id })).name).toBe("response"),
      next: INVALID,
      action: "key.revoke",
    },
    { label: "CLI revoke (another process)", act: (k) => cli(["key", "revoke", String(k.id)]), next: INVALID, action: "key.revoke" },
    {
      label: "REST reset",
      act: async (k) => ok(await call(server.url, "POST", `/api/keys/${k.id}/reset`, { token: admin })),
      freed: true,
      next: BOUND,
      action: "key.reset",
    },
    {
      label: "RPC reset",
      act: async (k) => expect((await watcher.request("latchkey", "keys", { action: "reset", id: k.id })).name).toBe("response"),
      freed: true,
      next: BOUND,
      action: "key.reset",
    },
    {
      label: "CLI reset (another process)",
      act: (k) => cli(["key", "reset", String(k.id)]),
      freed: true,
      next: BOUND,
      action: "key.reset",
    },
    {
      label: "REST delete",
      act: async (k) => ok(await call(server.url, "DELETE", `/api/keys/${k.id}`, { token: admin })),
      next: INVALID,
      action: "key.delete",
    },
    {
      label: "RPC delete",
      act: async (k) => expect((await watcher.request("latchkey", "keys", { action: "delete", id: k.id })).name).toBe("response"),
      next: INVALID,
      action: "key.delete",
    },
    { label: "CLI delete (another process)", act: (k) => cli(["key", "delete", String(k.id)]), next: INVALID, action: "key.delete" },
    {
      label: "REST client delete",
      act: async (_k, me) => ok(await call(server.url, "DELETE", `/api/clients/${me}`, { token: admin })),
      next: INVALID,
      action: "client.delete",
    },
    {
      label: "RPC client delete",
      act: async (_k, me) => expect((await watcher.request("latchkey", "clients", { action: "delete", uuid: me })).name).toBe("response"),
      next: INVALID,
      action: "client.delete",
    },
  ];

  beforeAll(() => setRequire(true));
  afterAll(() => setRequire(false));

  test.each(ways)("$label", async ({ label, act, freed, next, action }) => {
    const me = uuid();
    const [key] = await generate({ quantity: 1, label: "revocation" });
    const { rpc, reply } = await register(me, key.key);
    expect(reply.name).toBe("response");
    await settle(watcher);
    const pushed = watcher.events.length;
    await act(key, me);
    expect(await closedByServer(rpc)).toEqual({ code: 4003, reason: INVALID });
    await eventually(
      async () => {
        const res = await call(server.url, "GET", `/api/clients/${me}`, { token: admin });
        return res.status === 404 || res.body.online === false;
      },
      { what: `${me} to be offline or gone` },
    );
    if (freed) {
      // Reset: the key is pending again, and a new machine takes it.
      expect(await getKey(key.id)).toMatchObject({ status: "pending", client_uuid: null });
      const newcomer = uuid();
      await enroll(newcomer, key.key);
      expect(await getKey(key.id)).toMatchObject({ status: "active", client_uuid: newcomer });
      pastInUseWindow();
    }
    const retry = await register(me, key.key);
    expectError(retry.reply, 403, next);
    retry.rpc.close();
    const entries = await audit(action);
    expect(entries.some((e) => e.target === `key ${key.id}` || e.target === me)).toBe(true);
    // The admin's socket heard of it (the CLI's change is not pushed: the server did not make it).
    await waitForEvent(watcher, "clients.offline", (a) => a.uuid === me);
    if (!action.startsWith("client") && !label.startsWith("CLI"))
      expect(watcher.events.slice(pushed).some((e) => e.name === "keys.changed")).toBe(true);
  });

  test("a client deleted while connected is gone from the list and its key revoked", async () => {
    const me = uuid();
    const [key] = await generate();
    const { rpc } = await register(me, key.key);
    expect((await call(server.url, "DELETE", `/api/clients/${me}`, { token: admin })).status).toBe(204);
    expect(await closedByServer(rpc)).toEqual({ code: 4003, reason: INVALID });
    expect((await call(server.url, "GET", `/api/clients/${me}`, { token: admin })).status).toBe(404);
    expect(await getKey(key.id)).toMatchObject({ status: "revoked" });
    expect((await call(server.url, "DELETE", `/api/clients/${me}`, { token: admin })).status).toBe(404);
  });

  test.each(["reset", "delete", "revoke"])(
    "a client re-enrolled with a new key stays connected when its old, revoked key then gets: %s",
    async (change) => {
      const me = uuid();
      const [old, fresh] = await generate({ quantity: 2 });
      const first = await register(me, old.key);
      await call(server.url, "POST", `/api/keys/${old.id}/revoke`, { token: admin });
      expect(await closedByServer(first.rpc)).toEqual({ code: 4003, reason: INVALID });
      // The woho remedy: reinstall with a new key.
      const { rpc, reply } = await register(me, fresh.key);
      expect(reply).toMatchObject({ name: "response", args: { reconnect: false } });
      expect((await getClient(me)).key_id).toBe(fresh.id);
      // Cleaning up the old key, in this process and from the CLI, does not touch the new binding.
      if (change === "delete") expect((await call(server.url, "DELETE", `/api/keys/${old.id}`, { token: admin })).status).toBe(204);
      else expect((await call(server.url, "POST", `/api/keys/${old.id}/${change}`, { token: admin })).status).toBe(200);
      if (change !== "delete") await runLatchkey(["key", change, String(old.id), ...server.storageArgs]);
      // Longer than the server takes to notice another process's change (it checks twice a second).
      expect(await stillOpenAfter(rpc, 1200)).toBe(true);
      expect((await rpc.request("client", "heartbeat", {})).args).toBe("ok");
      expect(await getClient(me)).toMatchObject({ online: true, key_id: fresh.id });
      await disconnect(rpc, me);
    },
  );

  test("revoking a key that nobody uses closes nobody else", async () => {
    const me = uuid();
    const [mine, spare] = await generate({ quantity: 2 });
    const { rpc } = await register(me, mine.key);
    await call(server.url, "POST", `/api/keys/${spare.id}/revoke`, { token: admin });
    await runLatchkey(["key", "revoke", String(spare.id), ...server.storageArgs]);
    // Longer than the server takes to notice another process's change (it checks twice a second).
    expect(await stillOpenAfter(rpc, 1200)).toBe(true);
    expect((await rpc.request("client", "heartbeat", {})).args).toBe("ok");
    await disconnect(rpc, me);
  });
});

describe("clones", () => {
  test.each([{ required: true }, { required: false }])(
    "auth required: $required — a second live connection with a connected UUID is refused, audited, and the first stays",
    async ({ required }) => {
      await setRequire(required);
      try {
        const me = uuid();
        const [key] = await generate();
        const first = await register(me, key.key);
        expect(first.reply.name).toBe("response");
        const clone = await register(me, key.key);
        expectError(clone.reply, 409, "AUTH_FAILED: Client already connected");
        // The clone over REST mirror is refused as well (it has no connection).
        expect((await call(server.url, "PUT", "/client/register", { body: regArgs(me, key.key) })).status).toBe(400);
        const entries = (await audit("client.register")).filter((e) => e.target === me && e.outcome === "failure");
        expect(entries.map((e) => e.reason)).toEqual([CLONE]);
        expect(await stillOpenAfter(first.rpc, 300)).toBe(true);
        expect((await first.rpc.request("client", "heartbeat", null)).args).toBe("ok");
        expect((await getClient(me)).online).toBe(true);
        if (required) expect((await getKey(key.id)).usage_count).toBe(1);
        // Wait until the server has seen the clone's socket close (its count of sockets drops).
        const sockets = await metric(server.url, "latchkey_ws_connections");
        clone.rpc.close();
        await eventually(async () => (await metric(server.url, "latchkey_ws_connections")) < sockets, {
          what: "the server to see the clone's socket close",
        });
        // The clone's socket closing did not take the first one's presence with it.
        expect((await getClient(me)).online).toBe(true);
        await disconnect(first.rpc, me);
        // Once the first is gone, the machine reconnects normally.
        await enroll(me, key.key);
      } finally {
        await setRequire(false);
      }
    },
  );

  test("one socket cannot register as two clients", async () => {
    const { rpc, reply } = await register(uuid());
    expect(reply.name).toBe("response");
    const second = await rpc.request("client", "register", regArgs(uuid()));
    expect(second).toMatchObject({ name: "error", args: { code: 400, field: "uuid" } });
    rpc.close();
  });

  test("heartbeat before registering is refused", async () => {
    const rpc = await RpcClient.connect(server.wsUrl);
    expect((await rpc.request("client", "heartbeat", {})).args.code).toBe(401);
    rpc.close();
  });
});

// ---------------------------------------------------------------------------------------------

describe("keys administration", () => {
  test("generate 1 and 100; 0, 101, 1.5 and a 101-character label are refused naming the field", async () => {
    expect(await generate({ quantity: 1 })).toHaveLength(1);
    const hundred = await generate({ quantity: 100, label: "batch of 100" });
    expect(hundred).toHaveLength(100);
    for (const quantity of [0, 101, 1.5, -1]) {
      const res = await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity } });
      expect(res.status).toBe(400);
      expect(res.body.error.field).toBe("quantity");
    }
    const missing = await call(server.url, "POST", "/api/keys", { token: admin, body: {} });
    expect([missing.status, missing.body.error.field]).toEqual([400, "quantity"]);
    const long = await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 1, label: "x".repeat(101) } });
    expect([long.status, long.body.error.field]).toEqual([400, "label"]);
    const exact = await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 1, label: "x".repeat(100) } });
    expect(exact.status).toBe(201);
    for (const [quantity, field] of [
      [0, "args.quantity"],
      [101, "args.quantity"],
    ] as const) {
      const reply = await watcher.request("latchkey", "keys", { action: "generate", quantity });
      expect(reply.args).toMatchObject({ code: 400, field });
    }
    expect((await watcher.request("latchkey", "keys", { action: "generate", quantity: 1, label: "y".repeat(101) })).args).toMatchObject({
      code: 400,
      field: "args.label",
    });
  });

  test("format XXXX-XXXX-XXXX without 0 O 1 I L, unique, pending, with the label", async () => {
    const keys = [...(await generate({ quantity: 100, label: "Customer ABC – batch 1" })), ...(await generate({ quantity: 100 }))];
    for (const k of keys) expect(k.key).toMatch(KEY_FORMAT);
    expect(new Set(keys.map((k) => k.key)).size).toBe(200);
    expect(keys[0]).toMatchObject({
      status: "pending",
      label: "Customer ABC – batch 1",
      usage_count: 0,
      client_uuid: null,
      client_name: null,
      first_used_at: null,
      last_used_at: null,
      expired: false,
    });
    // Every character of the alphabet shows up, and nothing else.
    const chars = new Set(keys.flatMap((k) => k.key.replace(/-/g, "").split("")));
    expect([...chars].sort().join("")).toBe("23456789ABCDEFGHJKMNPQRSTUVWXYZ");
    const all = await call(server.url, "GET", "/api/keys?limit=1000", { token: admin });
    expect(new Set(all.body.items.map((k: any) => k.key)).size).toBe(all.body.items.length);
  });

  test("statuses, usage count, first/last used and the bound client; list filters by status", async () => {
    await setRequire(true);
    try {
      const me = uuid();
      const [key] = await generate({ quantity: 1, label: "tracked" });
      await enroll(me, key.key);
      const bound = await getKey(key.id);
      expect(bound).toMatchObject({ status: "active", usage_count: 1, client_uuid: me, client_name: regArgs(me).name });
      skew += 1000;
      await enroll(me, key.key);
      const again = await getKey(key.id);
      expect(again.usage_count).toBe(2);
      expect(again.first_used_at).toBe(bound.first_used_at);
      expect(Date.parse(again.last_used_at)).toBeGreaterThan(Date.parse(bound.first_used_at));
      const active = await call(server.url, "GET", "/api/keys?status=active&limit=1000", { token: admin });
      expect(active.body.items.every((k: any) => k.status === "active")).toBe(true);
      expect(active.body.items.map((k: any) => k.id)).toContain(key.id);
      expect(active.body.total).toBe(active.body.items.length);
      await call(server.url, "POST", `/api/keys/${key.id}/revoke`, { token: admin });
      const revoked = (await watcher.request("latchkey", "keys", { action: "list", status: "revoked", limit: 1000 })).args;
      expect(revoked.items.map((k: any) => k.id)).toContain(key.id);
      expect(await getKey(key.id)).toMatchObject({ status: "revoked", client_uuid: me, usage_count: 2 });
      const reset = (await watcher.request("latchkey", "keys", { action: "reset", id: key.id })).args;
      expect(reset).toMatchObject({ status: "pending", client_uuid: null });
      expect((await watcher.request("latchkey", "keys", { action: "get", id: key.id })).args).toMatchObject({
        id: key.id,
        status: "pending",
      });
      expect((await watcher.request("latchkey", "keys", { action: "delete", id: key.id })).args).toBe("ok");
      expect((await call(server.url, "GET", `/api/keys/${key.id}`, { token: admin })).status).toBe(404);
      for (const path of [`/api/keys/${key.id}/revoke`, `/api/keys/${key.id}/reset`])
        expect((await call(server.url, "POST", path, { token: admin })).status).toBe(404);
      expect((await call(server.url, "DELETE", `/api/keys/${key.id}`, { token: admin })).status).toBe(404);
    } finally {
      await setRequire(false);
    }
  });

  test("install command: this server's address, the root CA's fingerprint, the mTLS port, the key; the machine names itself", async () => {
    const [labelled] = await generate({ quantity: 1, label: "Customer ABC – batch 1" });
    const [plain] = await generate({ quantity: 1 });
    const host = new URL(server.url).host;
    const pin = await server.services.ca.caFingerprint();
    expect(pin).toMatch(/^[0-9a-f]{64}$/);
    const cmd = async (id: number, query = "") =>
      (await call(server.url, "GET", `/api/keys/${id}/install-command${query}`, { token: admin })).body;
    // Tests listen on a free port, not 9443: the command names it.
    const tail = `-ca-fingerprint ${pin} -mtls-port ${server.mtlsPort}`;
    expect(await cmd(plain.id)).toEqual({ command: `latchkey client install -server ${host} ${tail} -key ${plain.key}` });
    // The label is the key's, not every machine's name: a batch of keys shares one.
    expect(await cmd(labelled.id)).toEqual({ command: `latchkey client install -server ${host} ${tail} -key ${labelled.key}` });
    expect(await cmd(plain.id, "?server=keys.example.com:9000")).toEqual({
      command: `latchkey client install -server keys.example.com:9000 ${tail} -key ${plain.key}`,
    });
    expect((await cmd(plain.id)).command).toMatch(
      /^latchkey client install -server \S+:\d+ -ca-fingerprint [0-9a-f]{64} -mtls-port \d+ -key [A-HJKMNP-Z2-9-]{14}$/,
    );
    expect((await call(server.url, "GET", "/api/keys/999999/install-command", { token: admin })).status).toBe(404);
  });

  test("install command: a Host header that is not HOST[:PORT] never reaches the shell command", async () => {
    const [key] = await generate({ quantity: 1 });
    const path = `/api/keys/${key.id}/install-command`;
    for (const host of ["x;id", "$(id):1", "evil.example:9000 -key AAAA-BBBB-CCCC", "a.example:1`reboot`"]) {
      const res = await call(server.url, "GET", path, { token: admin, headers: { host } });
      expect({ host, status: res.status, field: res.body?.error?.field }).toEqual({ host, status: 400, field: "server" });
      expect(res.text).not.toContain(key.key);
    }
    // An explicit ?server= is used whatever the Host header says; a plain host name is kept.
    const tail = `-ca-fingerprint ${await server.services.ca.caFingerprint()} -mtls-port ${server.mtlsPort} -key ${key.key}`;
    expect(
      (await call(server.url, "GET", `${path}?server=keys.example.com:9000`, { token: admin, headers: { host: "x;id" } })).body.command,
    ).toBe(`latchkey client install -server keys.example.com:9000 ${tail}`);
    expect((await call(server.url, "GET", path, { token: admin, headers: { host: "keys.example.com" } })).body.command).toBe(
      `latchkey client install -server keys.example.com ${tail}`,
    );
    expect((await call(server.url, "GET", path, { token: admin, headers: { host: "[::1]:9000" } })).body.command).toBe(
      `latchkey client install -server [::1]:9000 ${tail}`,
    );
  });

  test("every state change is audited and pushed to a signed-in admin's socket", async () => {
    await setRequire(true);
    try {
      await settle(watcher);
      const from = watcher.events.length;
      const [key] = await generate({ quantity: 1, label: "audited" });
      const me = uuid();
      const { rpc } = await register(me, key.key);
      await call(server.url, "POST", `/api/keys/${key.id}/revoke`, { token: admin });
      await rpc.closed;
      await call(server.url, "POST", `/api/keys/${key.id}/reset`, { token: admin });
      await call(server.url, "DELETE", `/api/keys/${key.id}`, { token: admin });
      await waitForEvent(watcher, "keys.changed", (a) => a.change === "deleted" && a.ids[0] === key.id);
      const mine = watcher.events.slice(from);
      const keyChanges = mine.filter((e) => e.name === "keys.changed" && e.args.ids.includes(key.id)).map((e) => e.args.change);
      expect(keyChanges).toEqual(["generated", "bound", "revoked", "reset", "deleted"]);
      expect(mine.some((e) => e.name === "clients.online" && e.args.uuid === me)).toBe(true);
      expect(mine.some((e) => e.name === "clients.offline" && e.args.uuid === me)).toBe(true);
      for (const action of ["key.generate", "key.revoke", "key.reset", "key.delete"]) {
        const entries = await audit(action);
        expect(entries.length).toBeGreaterThan(0);
        expect(entries[0]).toMatchObject({ actor: "admin", outcome: "success" });
      }
      expect((await audit("key.revoke"))[0]).toMatchObject({ target: `key ${key.id}`, reason: `bound to ${me}` });
      expect((await audit("client.register")).find((e) => e.target === me)).toMatchObject({
        outcome: "success",
        reason: `key ${key.id} bound`,
      });
      // No full secret in the audit log.
      const everything = await call(server.url, "GET", "/api/audit?limit=1000", { token: admin });
      expect(everything.text).not.toContain(key.key);
      // A socket that is not signed in hears nothing.
      const anonymous = await RpcClient.connect(server.wsUrl);
      await generate();
      // A round trip on the socket: a push sent to it for the generation would have arrived first.
      expect((await anonymous.request("rpc", "query", {})).args.code).toBe(401);
      expect(anonymous.events).toEqual([]);
      anonymous.close();
    } finally {
      await setRequire(false);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("clients, and viewers scoped to their groups", () => {
  const g1 = "east";
  const g2 = "west";
  let viewer: string;
  let viewerSocket: RpcClient;
  const ids = { east: uuid(), west: uuid(), keyless: uuid() };
  let keys: Record<string, any>;

  beforeAll(async () => {
    await createUser(server.url, admin, { username: "east-viewer", password: "viewer-password", role: "viewer", allowed_groups: [g1] });
    viewer = await login(server.url, "east-viewer", "viewer-password");
    viewerSocket = await signedInSocket(viewer);
    keys = {
      east: (await generate({ quantity: 1, group: g1, label: "east" }))[0],
      west: (await generate({ quantity: 1, group: g2, label: "west" }))[0],
    };
    await setRequire(true);
    await enroll(ids.east, keys.east.key);
    await enroll(ids.west, keys.west.key);
    await setRequire(false);
    await enroll(ids.keyless);
  });
  afterAll(() => viewerSocket.close());

  test("list and detail carry every field; the key's group goes to the client", async () => {
    const client = await getClient(ids.east);
    expect(client).toEqual({
      uuid: ids.east,
      name: regArgs(ids.east).name,
      hostname: regArgs(ids.east).hostname,
      group: g1,
      key_id: keys.east.id,
      version: "1.2.3",
      os: "linux",
      address: expect.stringMatching(/^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/),
      interfaces: [],
      online: false,
      first_seen_at: expect.any(String),
      last_seen_at: expect.any(String),
    });
    expect(Date.parse(client.last_seen_at)).toBeGreaterThanOrEqual(Date.parse(client.first_seen_at));
    const list = await call(server.url, "GET", "/api/clients?limit=1000", { token: admin });
    expect(list.body.total).toBe(list.body.items.length);
    expect(list.body.items.find((c: any) => c.uuid === ids.east)).toEqual(client);
    expect((await watcher.request("latchkey", "clients", { action: "get", uuid: ids.east })).args).toEqual(client);
    // UUIDs are taken in any case.
    expect((await getClient(ids.east.toUpperCase())).uuid).toBe(ids.east);
  });

  test("filter by status online/offline and by group", async () => {
    const { rpc } = await register(ids.west);
    try {
      const online = (await call(server.url, "GET", "/api/clients?status=online&limit=1000", { token: admin })).body;
      expect(online.items.map((c: any) => c.uuid)).toContain(ids.west);
      expect(online.items.every((c: any) => c.online)).toBe(true);
      expect(online.total).toBe(online.items.length);
      const offline = (await call(server.url, "GET", "/api/clients?status=offline&limit=1000", { token: admin })).body;
      expect(offline.items.map((c: any) => c.uuid)).toContain(ids.east);
      expect(offline.items.map((c: any) => c.uuid)).not.toContain(ids.west);
      expect(offline.items.every((c: any) => !c.online)).toBe(true);
      const west = (await call(server.url, "GET", `/api/clients?group=${g2}`, { token: admin })).body;
      expect(west.items.map((c: any) => c.uuid)).toEqual([ids.west]);
      const rpcOnline = (await watcher.request("latchkey", "clients", { action: "list", status: "online", group: g2 })).args;
      expect(rpcOnline).toMatchObject({ total: 1, items: [{ uuid: ids.west, online: true }] });
      const paged = (await call(server.url, "GET", "/api/clients?limit=1&offset=1", { token: admin })).body;
      expect(paged.items).toHaveLength(1);
      expect(paged.total).toBeGreaterThan(1);
    } finally {
      await disconnect(rpc, ids.west);
    }
  });

  test("a viewer sees only the keys and clients of their groups, keys masked", async () => {
    const keyList = (await call(server.url, "GET", "/api/keys?limit=1000", { token: viewer })).body;
    expect(keyList.items.map((k: any) => k.id)).toEqual([keys.east.id]);
    expect(keyList.total).toBe(1);
    expect(keyList.items[0].key).toBe(`${keys.east.key.slice(0, 4)}-••••-••••`);
    expect(JSON.stringify(keyList)).not.toContain(keys.east.key);
    expect((await call(server.url, "GET", `/api/keys/${keys.west.id}`, { token: viewer })).status).toBe(404);
    expect((await call(server.url, "GET", `/api/keys/${keys.east.id}`, { token: viewer })).body.key).toBe(
      `${keys.east.key.slice(0, 4)}-••••-••••`,
    );
    const rpcKeys = (await viewerSocket.request("latchkey", "keys", { action: "list" })).args;
    expect(rpcKeys.items.map((k: any) => k.key)).toEqual([`${keys.east.key.slice(0, 4)}-••••-••••`]);
    // The counts by state (the dashboard's) are of the viewer's keys too: the west key is not counted.
    expect(keyList.by_status).toEqual({ pending: 0, active: 1, revoked: 0 });
    expect(rpcKeys.by_status).toEqual({ pending: 0, active: 1, revoked: 0 });
    const adminCounts = (await call(server.url, "GET", "/api/keys?status=revoked&limit=1", { token: admin })).body.by_status;
    const adminAll = (await call(server.url, "GET", "/api/keys?limit=1000", { token: admin })).body.items;
    expect(adminCounts).toEqual({
      pending: adminAll.filter((k: any) => k.status === "pending").length,
      active: adminAll.filter((k: any) => k.status === "active").length,
      revoked: adminAll.filter((k: any) => k.status === "revoked").length,
    });

    const clients = (await call(server.url, "GET", "/api/clients?limit=1000", { token: viewer })).body;
    expect(clients).toMatchObject({ total: 1, items: [{ uuid: ids.east }] });
    expect((await call(server.url, "GET", `/api/clients?group=${g2}`, { token: viewer })).body).toEqual({ items: [], total: 0 });
    expect((await call(server.url, "GET", `/api/clients/${ids.west}`, { token: viewer })).status).toBe(404);
    expect((await call(server.url, "GET", `/api/clients/${ids.keyless}`, { token: viewer })).status).toBe(404);
    expect((await call(server.url, "GET", `/api/clients/${ids.east}`, { token: viewer })).status).toBe(200);
    expect((await viewerSocket.request("latchkey", "clients", { action: "list" })).args).toMatchObject({
      total: 1,
      items: [{ uuid: ids.east }],
    });
  });

  test("a viewer's writes are 403 over REST and RPC, and change nothing", async () => {
    const writes: [string, string, unknown?][] = [
      ["POST", "/api/keys", { quantity: 1 }],
      ["POST", `/api/keys/${keys.east.id}/revoke`],
      ["POST", `/api/keys/${keys.east.id}/reset`],
      ["DELETE", `/api/keys/${keys.east.id}`],
      ["GET", `/api/keys/${keys.east.id}/install-command`],
      ["PATCH", "/api/settings", { require_auth_key: true }],
      ["DELETE", `/api/clients/${ids.east}`],
    ];
    for (const [method, path, body] of writes) {
      const res = await call(server.url, method, path, { token: viewer, ...(body ? { body } : {}) });
      expect({ method, path, status: res.status }).toEqual({ method, path, status: 403 });
    }
    for (const args of [
      { action: "generate", quantity: 1 },
      { action: "revoke", id: keys.east.id },
      { action: "reset", id: keys.east.id },
      { action: "delete", id: keys.east.id },
    ]) {
      expect((await viewerSocket.request("latchkey", "keys", args)).args.code).toBe(403);
    }
    expect((await viewerSocket.request("latchkey", "clients", { action: "delete", uuid: ids.east })).args.code).toBe(403);
    expect(await getKey(keys.east.id)).toMatchObject({ status: "active", client_uuid: ids.east });
    expect((await getClient(ids.east)).uuid).toBe(ids.east);
  });

  test("a viewer's socket hears of its groups' clients and keys only", async () => {
    await settle(viewerSocket);
    const from = viewerSocket.events.length;
    const west = await register(ids.west);
    const east = await register(ids.east);
    await waitForEvent(viewerSocket, "clients.online", (a) => a.uuid === ids.east);
    await disconnect(east.rpc, ids.east);
    await disconnect(west.rpc, ids.west);
    await waitForEvent(viewerSocket, "clients.offline", (a) => a.uuid === ids.east);
    await generate({ quantity: 1, group: g2 });
    const [eastKey] = await generate({ quantity: 1, group: g1 });
    await waitForEvent(viewerSocket, "keys.changed", (a) => a.ids.includes(eastKey.id));
    const heard = viewerSocket.events.slice(from);
    expect(heard.some((e) => e.args.uuid === ids.west)).toBe(false);
    expect(heard.filter((e) => e.name === "keys.changed").map((e) => e.args.ids)).toEqual([[eastKey.id]]);
  });

  test("deleting a client over REST: 204, gone, key revoked; an unknown client is 404", async () => {
    expect((await call(server.url, "DELETE", `/api/clients/${ids.keyless}`, { token: admin })).status).toBe(204);
    expect((await call(server.url, "GET", `/api/clients/${ids.keyless}`, { token: admin })).status).toBe(404);
    expect((await call(server.url, "DELETE", `/api/clients/${ids.west}`, { token: admin })).status).toBe(204);
    expect(await getKey(keys.west.id)).toMatchObject({ status: "revoked" });
    expect((await audit("client.delete")).find((e) => e.target === ids.west)).toMatchObject({
      outcome: "success",
      reason: `revoked key ${keys.west.id}`,
    });
    expect((await call(server.url, "DELETE", `/api/clients/${crypto.randomUUID()}`, { token: admin })).status).toBe(404);
  });
});
