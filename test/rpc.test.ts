/**
 * The sysadm RPC envelope over a real WebSocket and its REST mirror: reply shape, errors,
 * `rpc/query`, the explicit registry (prototype names are unknown calls), frame limits, malformed
 * frames (each answered, the connection kept), and many requests in flight on one socket.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { ADMIN_PASSWORD, call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

let server: TestServer;
let admin: string;
let viewer: string;

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  await createUser(server.url, admin, { username: "rpc-viewer", password: "viewer-password", role: "viewer", allowed_groups: ["g1"] });
  viewer = await login(server.url, "rpc-viewer", "viewer-password");
});
afterAll(() => server.close());

/** A socket signed in with the given token (or anonymous). */
async function connect(token?: string): Promise<RpcClient> {
  const rpc = await RpcClient.connect(server.wsUrl);
  if (token !== undefined) expect((await rpc.request("rpc", "auth_token", { token })).name).toBe("response");
  return rpc;
}

/** Sends one raw frame and resolves with the next frame the server sends back, parsed. */
function exchange(rpc: RpcClient, frame: string | Uint8Array<ArrayBuffer>): Promise<any> {
  return new Promise((resolve) => {
    rpc.ws.addEventListener("message", (e) => resolve(JSON.parse(String(e.data))), { once: true });
    rpc.ws.send(frame);
  });
}

/** The socket still works: a well-formed call gets its own reply. */
async function expectAlive(rpc: RpcClient, signedIn: boolean): Promise<void> {
  const reply = await rpc.request("rpc", "query", { junk: "junk" });
  if (signedIn) expect(reply).toMatchObject({ namespace: "rpc", name: "response", args: { "latchkey/users": "read/write" } });
  else expect(reply).toMatchObject({ namespace: "rpc", name: "error", args: { code: 401 } });
}

describe("the envelope, exactly as the sysadm seed shows it", () => {
  test("an anonymous call is the seed's 401 reply, id echoed", async () => {
    const rpc = await connect();
    try {
      const reply = await exchange(rpc, JSON.stringify({ namespace: "rpc", name: "query", id: "sampleID", args: { junk: "junk" } }));
      expect(reply).toEqual({ args: { code: 401, message: "Unauthorized" }, id: "sampleID", name: "error", namespace: "rpc" });
    } finally {
      rpc.close();
    }
  });

  const logins = [
    { name: "a wrong password", args: { username: "admin", password: "not-the-password" } },
    { name: "an unknown user", args: { username: "nobody-here", password: "whatever-password" } },
  ];
  test.each(logins)("rpc/auth with $name is the seed's 401 reply", async ({ args }) => {
    const rpc = await connect();
    try {
      const reply = await exchange(rpc, JSON.stringify({ namespace: "rpc", name: "auth", id: "sampleID", args }));
      expect(reply).toEqual({ args: { code: 401, message: "Unauthorized" }, id: "sampleID", name: "error", namespace: "rpc" });
    } finally {
      rpc.close();
    }
  });

  test("rpc/auth_token with an unknown token is the seed's 401 reply", async () => {
    const rpc = await connect();
    try {
      const reply = await exchange(
        rpc,
        JSON.stringify({ namespace: "rpc", name: "auth_token", id: "sampleID", args: { token: "MySavedAuthToken" } }),
      );
      expect(reply).toEqual({ args: { code: 401, message: "Unauthorized" }, id: "sampleID", name: "error", namespace: "rpc" });
    } finally {
      rpc.close();
    }
  });

  test("rpc/auth answers [token, seconds] and signs the socket in", async () => {
    const rpc = await connect();
    try {
      const reply = await exchange(
        rpc,
        JSON.stringify({ namespace: "rpc", name: "auth", id: "sampleID", args: { username: "admin", password: ADMIN_PASSWORD } }),
      );
      expect(Object.keys(reply).sort()).toEqual(["args", "id", "name", "namespace"]);
      expect(reply).toMatchObject({ id: "sampleID", name: "response", namespace: "rpc" });
      expect(reply.args).toEqual([expect.any(String), 300]);
      await expectAlive(rpc, true);
      // The token works over REST too.
      expect((await call(server.url, "GET", "/api/auth/session", { token: reply.args[0] })).body.username).toBe("admin");
    } finally {
      rpc.close();
    }
  });

  const ids = [
    { label: "a string", id: "fooid" },
    { label: "a uuid", id: crypto.randomUUID() },
    { label: "a number", id: 42 },
    { label: "zero", id: 0 },
    { label: "an empty string", id: "" },
    { label: "128 characters", id: "i".repeat(128) },
    { label: "unicode", id: "⟨ид⟩ 🔑" },
  ];
  test.each(ids)("the reply echoes an id that is $label", async ({ id }) => {
    const rpc = await connect(admin);
    try {
      const reply = await exchange(rpc, JSON.stringify({ id, name: "query", namespace: "rpc", args: { junk: "junk" } }));
      expect(reply.id).toBe(id);
      expect(reply).toMatchObject({ name: "response", namespace: "rpc" });
    } finally {
      rpc.close();
    }
  });

  test("without an id the reply carries id null", async () => {
    const rpc = await connect(admin);
    try {
      const reply = await exchange(rpc, JSON.stringify({ name: "query", namespace: "rpc" }));
      expect(reply).toMatchObject({ id: null, name: "response", namespace: "rpc" });
    } finally {
      rpc.close();
    }
  });

  test("rpc/auth_clear answers ok and the socket is anonymous again", async () => {
    const rpc = await connect(await login(server.url));
    try {
      await expectAlive(rpc, true);
      const reply = await exchange(rpc, JSON.stringify({ namespace: "rpc", name: "auth_clear", id: "sampleID", args: "junk argument" }));
      expect(reply).toEqual({ args: "ok", id: "sampleID", name: "response", namespace: "rpc" });
      await expectAlive(rpc, false);
    } finally {
      rpc.close();
    }
  });
});

describe("rpc/query", () => {
  const who: { label: string; token: () => string; sees: Record<string, string> }[] = [
    { label: "admin", token: () => admin, sees: { "latchkey/users": "read/write", "latchkey/audit": "read" } },
    { label: "viewer", token: () => viewer, sees: {} },
  ];

  test.each(who)("over /ws, $label sees what it may use", async ({ token, sees }) => {
    const rpc = await connect(token());
    try {
      const reply = await exchange(rpc, JSON.stringify({ id: "fooid", name: "query", namespace: "rpc", args: { junk: "junk" } }));
      expect(reply).toMatchObject({ id: "fooid", name: "response", namespace: "rpc", args: sees });
      expect(
        Object.keys(reply.args)
          .filter((k) => k.startsWith("latchkey/users") || k.startsWith("latchkey/audit"))
          .sort(),
      ).toEqual(Object.keys(sees).sort());
      for (const level of Object.values(reply.args)) expect(["read", "read/write"]).toContain(level as string);
    } finally {
      rpc.close();
    }
  });

  test.each(who)("PUT /rpc/query {junk} as $label is {args: {...}}", async ({ token, sees }) => {
    const res = await call(server.url, "PUT", "/rpc/query", { token: token(), body: { junk: "junk" } });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body)).toEqual(["args"]);
    expect(res.body.args).toMatchObject(sees);
    const listed: string[] = Object.keys(res.body.args).filter((k) => k === "latchkey/users" || k === "latchkey/audit");
    expect(listed.sort()).toEqual(Object.keys(sees).sort());
  });

  const argsVariants = [{ junk: "junk" }, "junk", 42, null, [1, 2], undefined];
  test.each(argsVariants)("takes any args (%p)", async (args) => {
    const rpc = await connect(admin);
    try {
      const reply = await rpc.request("rpc", "query", args);
      expect(reply).toMatchObject({ name: "response", args: { "latchkey/users": "read/write", "latchkey/audit": "read" } });
    } finally {
      rpc.close();
    }
  });

  test("anonymous: 401 over /ws and over PUT /rpc/query", async () => {
    const rpc = await connect();
    try {
      expect((await rpc.request("rpc", "query", { junk: "junk" })).args).toEqual({ code: 401, message: "Unauthorized" });
    } finally {
      rpc.close();
    }
    const res = await call(server.url, "PUT", "/rpc/query", { body: { junk: "junk" } });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("unauthorized");
  });
});

describe("only registered calls are dispatched", () => {
  const HOSTILE = ["__proto__", "constructor", "toString", "hasOwnProperty", "prototype", "valueOf", "__defineGetter__", "isPrototypeOf"];
  const cases: { label: string; namespace: string; name: string; args: unknown; code: number; wsOnly?: boolean }[] = [
    { label: "a sysadm subsystem latchkey has not", namespace: "sysadm", name: "network", args: { action: "list-devices" }, code: 404 },
    { label: "an unknown name in a known namespace", namespace: "rpc", name: "nope", args: {}, code: 404 },
    { label: "an unknown namespace", namespace: "nope", name: "query", args: {}, code: 404 },
    { label: "a known name in the wrong namespace", namespace: "latchkey", name: "query", args: {}, code: 404 },
    { label: "the namespace alone as name", namespace: "latchkey", name: "latchkey", args: {}, code: 404 },
    { label: "a name that differs in case", namespace: "rpc", name: "Query", args: {}, code: 404 },
    { label: "a slash inside the name", namespace: "latchkey", name: "users/x", args: { action: "list" }, code: 404, wsOnly: true },
    // The whole key in the namespace: the empty name is refused before any lookup.
    { label: "namespace latchkey/users with no name", namespace: "latchkey/users", name: "", args: {}, code: 400, wsOnly: true },
    ...HOSTILE.flatMap((h) => [
      { label: `${h} as name`, namespace: "rpc", name: h, args: {}, code: 404 },
      { label: `${h} as namespace`, namespace: h, name: "query", args: {}, code: 404 },
      { label: `${h} as both`, namespace: h, name: h, args: {}, code: 404 },
      { label: `${h} as namespace of a real name`, namespace: h, name: "users", args: { action: "list" }, code: 404 },
    ]),
  ];

  test.each(cases)("over /ws: $label → $code, socket still works", async ({ namespace, name, args, code }) => {
    const rpc = await connect(admin);
    try {
      const reply = await exchange(rpc, JSON.stringify({ namespace, name, id: "x1", args }));
      expect(reply).toMatchObject({ id: "x1", name: "error", namespace: "rpc", args: { code, message: expect.any(String) } });
      await expectAlive(rpc, true);
    } finally {
      rpc.close();
    }
  });

  // A slash cannot be part of a path segment, so those cases exist only over /ws.
  test.each(cases.filter((c) => !c.wsOnly))("over PUT /<namespace>/<name>: $label → 404", async ({ namespace, name, args }) => {
    const res = await call(server.url, "PUT", `/${namespace}/${name}`, { token: admin, body: args });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe("not_found");
    expect((await call(server.url, "GET", "/healthz")).status).toBe(200);
  });

  test("anonymous callers get 404 for unknown calls too (nothing is looked up on a prototype)", async () => {
    const rpc = await connect();
    try {
      for (const h of HOSTILE) {
        expect((await rpc.request("rpc", h, {})).args.code).toBe(404);
        expect((await rpc.request(h, h, {})).args.code).toBe(404);
      }
      await expectAlive(rpc, false);
    } finally {
      rpc.close();
    }
  });

  test("no hostile name is dispatched (none shows in the metrics of calls), and no prototype is polluted", async () => {
    const pollute = JSON.stringify({
      namespace: "rpc",
      name: "query",
      id: "p",
      args: { __proto__: { polluted: true }, constructor: { prototype: { polluted: true } } },
    });
    const rpc = await connect(admin);
    try {
      // The calls this test looks for in the metrics, made here rather than left to the cases above.
      for (const h of HOSTILE) {
        for (const [namespace, name] of [
          ["rpc", h],
          [h, "query"],
          [h, h],
          [h, "users"],
        ] as const) {
          expect((await rpc.request(namespace, name, {})).args.code).toBe(404);
          expect((await call(server.url, "PUT", `/${namespace}/${name}`, { token: admin, body: {} })).status).toBe(404);
        }
      }
      expect((await rpc.request("sysadm", "network", { action: "list-devices" })).args.code).toBe(404);
      expect((await call(server.url, "PUT", "/sysadm/network", { token: admin, body: { action: "list-devices" } })).status).toBe(404);
      expect((await exchange(rpc, pollute)).name).toBe("response");
      const own = '{"namespace":"latchkey","name":"users","id":"q","args":{"action":"list","__proto__":{"polluted":true}}}';
      expect(await exchange(rpc, own)).toMatchObject({ id: "q", name: "error", args: { code: 400, field: "args.__proto__" } });
    } finally {
      rpc.close();
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty("polluted");
    const metrics = (await call(server.url, "GET", "/metrics")).text;
    for (const h of HOSTILE) expect(metrics).not.toContain(h);
    expect(metrics).not.toContain("sysadm/network");
  });
});

describe("frame size", () => {
  const MAX = 262144;
  /** An envelope of exactly `size` bytes whose args is a string of `fill`. */
  function envelopeOf(size: number, fill: (n: number) => string): string {
    const empty = JSON.stringify({ namespace: "rpc", name: "query", id: "big", args: "" });
    return JSON.stringify({ namespace: "rpc", name: "query", id: "big", args: fill(size - empty.length) });
  }
  const random = (n: number) => randomBytes(n).toString("base64").slice(0, n);
  const run = (n: number) => "a".repeat(n);

  const over = [
    { label: "random (incompressible) data one byte over", frame: () => envelopeOf(MAX + 1, random) },
    { label: "a long run of one character one byte over", frame: () => envelopeOf(MAX + 1, run) },
    { label: "random garbage, not even JSON, 1 MB", frame: () => random(1024 * 1024) },
    { label: "a run of one character, 4 MB", frame: () => run(4 * 1024 * 1024) },
    { label: "a binary frame over the limit", frame: () => new Uint8Array(randomBytes(MAX + 100)) },
  ];

  test.each(over)("$label closes the socket with 1009", async ({ frame }) => {
    const rpc = await connect(admin);
    rpc.ws.send(frame());
    expect((await rpc.closed).code).toBe(1009);
    // The server itself carries on.
    const other = await connect(admin);
    try {
      await expectAlive(other, true);
    } finally {
      other.close();
    }
  });

  const within = [
    { label: "random data exactly at the limit", frame: () => envelopeOf(MAX, random) },
    { label: "a run of one character exactly at the limit", frame: () => envelopeOf(MAX, run) },
  ];

  test.each(within)("$label is answered", async ({ frame }) => {
    const rpc = await connect(admin);
    try {
      const text = frame();
      expect(Buffer.byteLength(text)).toBe(MAX);
      expect(await exchange(rpc, text)).toMatchObject({ id: "big", name: "response" });
    } finally {
      rpc.close();
    }
  });

  test("--max-frame sets the limit", async () => {
    const small = await startTestServer({ flags: ["--max-frame", "2048"] });
    try {
      const token = await login(small.url);
      const ok = await RpcClient.connect(small.wsUrl);
      expect((await ok.request("rpc", "auth_token", { token })).name).toBe("response");
      expect(await exchange(ok, envelopeOf(2048, random))).toMatchObject({ id: "big", name: "response" });
      ok.ws.send(envelopeOf(2049, random));
      expect((await ok.closed).code).toBe(1009);
    } finally {
      await small.close();
    }
  });
});

describe("malformed frames get a 400 error reply and the connection keeps working", () => {
  const frames: { label: string; frame: string | Uint8Array<ArrayBuffer>; field?: string; id?: string | number | null }[] = [
    { label: "not JSON", frame: "this is not json", field: "frame" },
    { label: "truncated JSON", frame: '{"namespace":"rpc","name":"query"', field: "frame" },
    { label: "JSON with a trailing comma", frame: '{"namespace":"rpc","name":"query",}', field: "frame" },
    { label: "an empty frame", frame: "", field: "frame" },
    { label: "whitespace", frame: "   \n\t ", field: "frame" },
    { label: "a JSON array", frame: "[]" },
    { label: "a JSON array of an envelope", frame: JSON.stringify([{ namespace: "rpc", name: "query", id: "a" }]) },
    { label: "a JSON number", frame: "42", field: "frame" },
    { label: "a JSON float", frame: "-1.5e300", field: "frame" },
    { label: "a JSON string", frame: '"rpc/query"', field: "frame" },
    {
      label: "a JSON string that holds an envelope",
      frame: JSON.stringify(JSON.stringify({ namespace: "rpc", name: "query", id: "s1" })),
      field: "frame",
    },
    { label: "JSON true", frame: "true", field: "frame" },
    { label: "JSON null", frame: "null", field: "frame" },
    { label: "an empty object", frame: "{}", field: "namespace" },
    { label: "an object missing namespace", frame: JSON.stringify({ name: "query", id: "m1" }), field: "namespace", id: "m1" },
    { label: "an object missing name", frame: JSON.stringify({ namespace: "rpc", id: "m2" }), field: "name", id: "m2" },
    { label: "a numeric namespace", frame: JSON.stringify({ namespace: 1, name: "query", id: "m3" }), field: "namespace", id: "m3" },
    { label: "a null name", frame: JSON.stringify({ namespace: "rpc", name: null, id: "m4" }), field: "name", id: "m4" },
    { label: "an object as name", frame: JSON.stringify({ namespace: "rpc", name: { a: 1 }, id: "m5" }), field: "name", id: "m5" },
    {
      label: "an array as namespace",
      frame: JSON.stringify({ namespace: ["rpc"], name: "query", id: "m6" }),
      field: "namespace",
      id: "m6",
    },
    { label: "an empty namespace", frame: JSON.stringify({ namespace: "", name: "query", id: "m7" }), field: "namespace", id: "m7" },
    { label: "a 65-character name", frame: JSON.stringify({ namespace: "rpc", name: "q".repeat(65), id: "m8" }), field: "name", id: "m8" },
    { label: "an object as id", frame: JSON.stringify({ namespace: "rpc", name: "query", id: { a: 1 } }), field: "id" },
    { label: "a boolean id", frame: JSON.stringify({ namespace: "rpc", name: "query", id: true }), field: "id" },
    {
      label: "an id of 129 characters",
      frame: JSON.stringify({ namespace: "rpc", name: "query", id: "i".repeat(129) }),
      field: "id",
      id: null,
    },
    {
      label: "an id of 100 KB",
      frame: JSON.stringify({ namespace: "rpc", name: "query", id: "i".repeat(100_000) }),
      field: "id",
      id: null,
    },
    {
      label: "an unknown envelope field",
      frame: JSON.stringify({ namespace: "rpc", name: "query", id: "m9", extra: 1 }),
      field: "extra",
      id: "m9",
    },
    {
      label: "a __proto__ envelope field",
      frame: '{"namespace":"rpc","name":"query","id":"m10","__proto__":{"x":1}}',
      field: "__proto__",
      id: "m10",
    },
    { label: "a JSON-RPC 2.0 frame", frame: JSON.stringify({ jsonrpc: "2.0", method: "rpc.query", id: "m11" }), id: "m11" },
    { label: "invalid UTF-8 bytes", frame: new Uint8Array([0xff, 0xfe, 0xfd, 0x00]), field: "frame" },
    { label: "a binary frame of garbage", frame: new Uint8Array(randomBytes(512)), field: "frame" },
    { label: "deeply nested arrays", frame: "[".repeat(100_000) + "]".repeat(100_000) },
    {
      label: "deeply nested args",
      frame: `{"namespace":"rpc","name":"nope","id":"m12","args":${"[".repeat(50_000)}${"]".repeat(50_000)}}`,
      id: "m12",
    },
  ];

  test.each(frames)("$label", async ({ frame, field, id }) => {
    const rpc = await connect(admin);
    try {
      const reply = await exchange(rpc, frame);
      expect(Object.keys(reply).sort()).toEqual(["args", "id", "name", "namespace"]);
      expect(reply).toMatchObject({ namespace: "rpc", name: "error" });
      // A frame that names an unknown call is a 404; everything else here is a 400.
      expect(reply.args.code).toBe(id === "m12" ? 404 : 400);
      expect(reply.args.message).toBeString();
      expect(reply.args.message.length).toBeGreaterThan(0);
      if (field !== undefined) expect(reply.args.field).toBe(field);
      if (id !== undefined) expect(reply.id).toBe(id);
      await expectAlive(rpc, true);
    } finally {
      rpc.close();
    }
  });

  test("all of them in a row on one socket, each followed by a good request", async () => {
    const rpc = await connect(admin);
    try {
      for (const { frame } of frames) {
        const reply = await exchange(rpc, frame);
        expect(reply.name).toBe("error");
        expect([400, 404]).toContain(reply.args.code);
        await expectAlive(rpc, true);
      }
    } finally {
      rpc.close();
    }
    expect((await call(server.url, "GET", "/healthz")).status).toBe(200);
  });
});

describe("many requests in flight on one socket", () => {
  test("200 concurrent requests each get their own reply", async () => {
    const rpc = await connect(admin);
    try {
      const kinds = [
        {
          send: () => rpc.request("rpc", "query", { junk: "junk" }),
          check: (r: any) => expect(r.args["latchkey/users"]).toBe("read/write"),
        },
        {
          send: () => rpc.request("latchkey", "users", { action: "list", limit: 1 }),
          check: (r: any) => expect(r.args.items[0].username).toBe("admin"),
        },
        {
          send: () => rpc.request("latchkey", "users", { action: "get", username: "rpc-viewer" }),
          check: (r: any) => expect(r.args.username).toBe("rpc-viewer"),
        },
        { send: () => rpc.request("latchkey", "audit", { limit: 1 }), check: (r: any) => expect(r.args.items).toHaveLength(1) },
        { send: () => rpc.request("rpc", "__proto__", {}), check: (r: any) => expect(r.args.code).toBe(404) },
        { send: () => rpc.request("latchkey", "users", { action: "nope" }), check: (r: any) => expect(r.args.code).toBe(400) },
      ];
      const sent = Array.from({ length: 200 }, (_, i) => {
        const kind = kinds[i % kinds.length]!;
        return { id: `r${i + 2}`, kind, reply: kind.send() };
      });
      const replies = await Promise.all(sent.map((s) => s.reply));
      expect(new Set(replies.map((r) => r.id)).size).toBe(200);
      sent.forEach((s, i) => {
        const reply = replies[i];
        expect(reply.namespace).toBe("rpc");
        s.kind.check(reply);
      });
    } finally {
      rpc.close();
    }
  });

  test("raw frames with numeric ids come back matched to their request", async () => {
    const rpc = await connect(admin);
    try {
      const got = new Map<number, any>();
      const all = new Promise<void>((resolve) => {
        rpc.ws.addEventListener("message", (e) => {
          const msg = JSON.parse(String(e.data));
          got.set(msg.id, msg);
          if (got.size === 200) resolve();
        });
      });
      for (let i = 0; i < 200; i++) {
        const args =
          i % 2 === 0 ? { action: "get", username: i % 4 === 0 ? "admin" : "rpc-viewer" } : { action: "get", username: `missing-${i}` };
        rpc.ws.send(JSON.stringify({ namespace: "latchkey", name: "users", id: i, args }));
      }
      await all;
      for (let i = 0; i < 200; i++) {
        const reply = got.get(i);
        if (i % 2 === 0) expect(reply.args.username).toBe(i % 4 === 0 ? "admin" : "rpc-viewer");
        else expect(reply.args).toMatchObject({ code: 404, message: `no user named "missing-${i}"` });
      }
    } finally {
      rpc.close();
    }
  });
});

describe("the REST mirror", () => {
  const cases = [
    {
      label: "rpc/auth answers {args: [token, seconds]}",
      path: "/rpc/auth",
      body: { username: "admin", password: ADMIN_PASSWORD },
      token: false,
      status: 200,
      args: [expect.any(String), 300],
    },
    {
      label: "rpc/auth with a wrong password is a 401",
      path: "/rpc/auth",
      body: { username: "admin", password: "not-the-password" },
      token: false,
      status: 401,
    },
    {
      label: "latchkey/users list",
      path: "/latchkey/users",
      body: { action: "list", limit: 1 },
      token: true,
      status: 200,
      args: { items: [{ username: "admin" }] },
    },
    { label: "an unknown call is a 404", path: "/latchkey/nope", body: {}, token: true, status: 404 },
    { label: "a call without a token is a 401", path: "/latchkey/users", body: { action: "list" }, token: false, status: 401 },
    {
      label: "rpc/auth_clear with a token ends that session",
      path: "/rpc/auth_clear",
      body: "junk argument",
      token: "fresh",
      status: 200,
      args: "ok",
    },
  ] as const;

  test.each(cases)("$label", async ({ path, body, token, status, ...rest }) => {
    const bearer = token === "fresh" ? await login(server.url) : token ? admin : undefined;
    const res = await call(server.url, "PUT", path, { ...(bearer ? { token: bearer } : {}), body });
    expect(res.status).toBe(status);
    if (status === 200) {
      expect(Object.keys(res.body)).toEqual(["args"]);
      if ("args" in rest) {
        if (typeof rest.args === "object") expect(res.body.args).toMatchObject(rest.args);
        else expect(res.body.args).toEqual(rest.args);
      }
    } else {
      expect(res.body.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
    }
    if (token === "fresh") expect((await call(server.url, "GET", "/api/auth/session", { token: bearer! })).status).toBe(401);
  });
});
