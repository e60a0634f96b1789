/**
 * Authentication scenarios over a real server and real WebSockets: password login (REST, RPC
 * over /ws, the REST mirror of RPC), tokens and logout, SCRAM-SHA-256, the wsauth users.json
 * import and its opt-in nonce challenge, brute-force throttling and the audit trail.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { clientFirstMessage, clientFinalMessage, verifyServerFinal } from "../src/core/scram.ts";
import {
  ADMIN_PASSWORD,
  anotherConnection,
  call,
  createUser,
  login,
  manualClock,
  RpcClient,
  runLatchkey,
  startTestServer,
  type TestServer,
} from "./support.ts";

/** What any transport answered, in one shape: the result, or the error with its status. */
interface Reply {
  status: number;
  result?: any;
  error?: { code?: string; message: string; field?: string; retry_after?: number };
  /** The Retry-After header (REST only). */
  retryAfterHeader?: string | null;
}

async function rest(server: TestServer, method: string, path: string, options: Parameters<typeof call>[3] = {}): Promise<Reply> {
  const res = await call(server.url, method, path, options);
  if (res.status < 400) return { status: res.status, result: res.body };
  return { status: res.status, error: res.body?.error, retryAfterHeader: res.headers.get("retry-after") };
}

/** The REST mirror of an RPC: `PUT /<namespace>/<name>`, reply `{args}`. */
async function mirror(server: TestServer, namespace: string, name: string, options: Parameters<typeof call>[3] = {}): Promise<Reply> {
  const reply = await rest(server, "PUT", `/${namespace}/${name}`, options);
  return reply.error ? reply : { status: reply.status, result: reply.result.args };
}

function fromEnvelope(envelope: any): Reply {
  expect(envelope.namespace).toBe("rpc");
  if (envelope.name === "response") return { status: 200, result: envelope.args };
  expect(envelope.name).toBe("error");
  const { code, ...error } = envelope.args;
  return { status: code, error };
}

async function rpc(client: RpcClient, namespace: string, name: string, args?: unknown): Promise<Reply> {
  return fromEnvelope(await client.request(namespace, name, args));
}

const sha256hex = (text: string) => createHash("sha256").update(text).digest("hex");
/** 256 random bits in base64url: 43 characters. */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43,}$/;

/** Who a token belongs to, as the REST API sees it (null when it is refused). */
async function whoAmI(server: TestServer, token: string): Promise<string | null> {
  const res = await call(server.url, "GET", "/api/auth/session", { token });
  if (res.status === 401) return null;
  expect(res.status).toBe(200);
  return res.body.username;
}

/** One way of logging in with a password, and what its replies look like. */
interface PasswordTransport {
  name: string;
  /** The field name as reported for an args key (REST bodies vs RPC args). */
  field(key: string): string;
  /** The field reported for a body that is not JSON. */
  nonJsonField: string;
  /** The one error every failed login gets, whatever the reason. */
  badLogin: Reply["error"];
  login(args: unknown): Promise<Reply>;
  sendRaw(text: string): Promise<Reply>;
  /** Checks the success shape; returns the token and lifetime. */
  success(result: any): { token: string; expiresIn: number };
}

describe("password login", () => {
  let server: TestServer;
  let client: RpcClient;
  const PASSWORD = "a perfectly fine password";

  const transports: PasswordTransport[] = [
    {
      name: "REST POST /api/auth/login",
      field: (key) => key,
      nonJsonField: "body",
      badLogin: { code: "unauthorized", message: "invalid username or password" },
      login: (args) => rest(server, "POST", "/api/auth/login", { body: args }),
      sendRaw: (text) => rest(server, "POST", "/api/auth/login", { rawBody: text, headers: { "content-type": "application/json" } }),
      success(result) {
        expect(Object.keys(result).sort()).toEqual(["expires_in", "role", "token"]);
        expect(result.role).toBe("viewer");
        return { token: result.token, expiresIn: result.expires_in };
      },
    },
    {
      name: "RPC rpc/auth over /ws",
      field: (key) => `args.${key}`,
      nonJsonField: "frame",
      badLogin: { message: "Unauthorized" },
      login: (args) => rpc(client, "rpc", "auth", args),
      sendRaw: async (text) => fromEnvelope(await client.sendRaw(text)),
      success(result) {
        expect(result).toBeArrayOfSize(2);
        return { token: result[0], expiresIn: result[1] };
      },
    },
    {
      name: "REST mirror PUT /rpc/auth",
      field: (key) => `args.${key}`,
      nonJsonField: "body",
      badLogin: { code: "unauthorized", message: "invalid username or password" },
      login: (args) => mirror(server, "rpc", "auth", { body: args }),
      sendRaw: (text) => mirror(server, "rpc", "auth", { rawBody: text, headers: { "content-type": "application/json" } }),
      success(result) {
        expect(result).toBeArrayOfSize(2);
        return { token: result[0], expiresIn: result[1] };
      },
    },
  ];

  // Each transport logs in as its own user, so that failures on one never throttle another.
  const userOf = (t: PasswordTransport) => `user${transports.indexOf(t)}`;

  beforeAll(async () => {
    server = await startTestServer();
    client = await RpcClient.connect(server.wsUrl);
    const admin = await login(server.url);
    for (const t of transports) await createUser(server.url, admin, { username: userOf(t), password: PASSWORD });
  });
  afterAll(async () => {
    client.close();
    await server.close();
  });

  const cases: {
    name: string;
    args: (user: string) => unknown;
    status: number;
    /** For 400s: the args key the error must name. */
    field?: string;
    /** The key is absent, so the message must not call it unknown. */
    missing?: boolean;
  }[] = [
    { name: "right password", args: (u) => ({ username: u, password: PASSWORD }), status: 200 },
    { name: "wrong password", args: (u) => ({ username: u, password: "not the password at all" }), status: 401 },
    { name: "unknown user", args: (u) => ({ username: `${u}-ghost`, password: PASSWORD }), status: 401 },
    { name: "too-short password is a failed login, not a 400", args: (u) => ({ username: u, password: "short" }), status: 401 },
    { name: "missing username", args: () => ({ password: PASSWORD }), status: 400, field: "username", missing: true },
    { name: "missing password", args: (u) => ({ username: u }), status: 400, field: "password", missing: true },
    { name: "empty password", args: (u) => ({ username: u, password: "" }), status: 400, field: "password" },
    { name: "password over 1024 characters", args: (u) => ({ username: u, password: "x".repeat(1025) }), status: 400, field: "password" },
    { name: "username of the wrong type", args: () => ({ username: 42, password: PASSWORD }), status: 400, field: "username" },
    { name: "unknown field", args: (u) => ({ username: u, password: PASSWORD, remember_me: true }), status: 400, field: "remember_me" },
  ];

  for (const t of transports) {
    for (const c of cases) {
      test(`${t.name}: ${c.name} → ${c.status}`, async () => {
        const reply = await t.login(c.args(userOf(t)));
        expect(reply.status).toBe(c.status);
        if (c.status === 200) {
          const { token, expiresIn } = t.success(reply.result);
          expect(token).toMatch(TOKEN_SHAPE);
          expect(expiresIn).toBe(300);
          expect(await whoAmI(server, token)).toBe(userOf(t));
        } else if (c.status === 401) {
          // Wrong password, unknown user and short password are indistinguishable.
          expect(reply.error).toEqual(t.badLogin);
        } else {
          expect(reply.error?.field).toBe(t.field(c.field!));
          expect(reply.error?.message).toContain(c.field!);
          if (c.missing) expect(reply.error?.message).not.toContain("not a known field");
        }
      });
    }

    test(`${t.name}: a body that is not JSON → 400`, async () => {
      const reply = await t.sendRaw(`{"username": "${userOf(t)}", "password": `);
      expect(reply.status).toBe(400);
      expect(reply.error?.field).toBe(t.nonJsonField);
      expect(reply.error?.message).toContain("JSON");
    });
  }

  const tokenCases = [
    { name: "a valid token", token: "valid", status: 200 },
    { name: "an unknown token", token: "A".repeat(43), status: 401 },
    { name: "an empty token", token: "", status: 400 },
  ] as const;

  for (const c of tokenCases) {
    test(`rpc/auth_token over /ws with ${c.name} → ${c.status}`, async () => {
      const token = c.token === "valid" ? await login(server.url, userOf(transports[0]!), PASSWORD) : c.token;
      const ws = await RpcClient.connect(server.wsUrl);
      try {
        expect((await rpc(ws, "rpc", "query", {})).status).toBe(401);
        const reply = await rpc(ws, "rpc", "auth_token", { token });
        expect(reply.status).toBe(c.status);
        if (c.status === 200) {
          expect(reply.result).toEqual([token, 300]);
          // The connection is now signed in.
          expect((await rpc(ws, "rpc", "query", {})).status).toBe(200);
        } else {
          if (c.status === 401) expect(reply.error).toEqual({ message: "Unauthorized" });
          else expect(reply.error?.field).toBe("args.token");
          expect((await rpc(ws, "rpc", "query", {})).status).toBe(401);
        }
      } finally {
        ws.close();
      }
    });

    test(`rpc/auth_token over the REST mirror with ${c.name} → ${c.status}`, async () => {
      const token = c.token === "valid" ? await login(server.url, userOf(transports[0]!), PASSWORD) : c.token;
      const reply = await mirror(server, "rpc", "auth_token", { body: { token } });
      expect(reply.status).toBe(c.status);
      if (c.status === 200) expect(reply.result).toEqual([token, 300]);
    });
  }

  test("rpc/auth_clear signs the connection out and kills the token everywhere", async () => {
    const ws = await RpcClient.connect(server.wsUrl);
    try {
      const signedIn = await rpc(ws, "rpc", "auth", { username: userOf(transports[1]!), password: PASSWORD });
      const token = signedIn.result[0] as string;
      expect((await rpc(ws, "rpc", "query", "junk")).status).toBe(200);
      expect(await whoAmI(server, token)).toBe(userOf(transports[1]!));

      expect(await rpc(ws, "rpc", "auth_clear", "junk argument")).toEqual({ status: 200, result: "ok" });
      expect(await rpc(ws, "rpc", "query", "junk")).toEqual({ status: 401, error: { message: "Unauthorized" } });
      expect(await whoAmI(server, token)).toBeNull();
      expect((await rpc(ws, "rpc", "auth_token", { token })).status).toBe(401);
      // Still connected, only no longer signed in: a new login works on the same socket.
      expect((await rpc(ws, "rpc", "auth", { username: userOf(transports[1]!), password: PASSWORD })).status).toBe(200);
      expect((await rpc(ws, "rpc", "query", {})).status).toBe(200);
    } finally {
      ws.close();
    }
  });

  test("rpc/auth_clear over the REST mirror ends the bearer's session", async () => {
    const token = await login(server.url, userOf(transports[2]!), PASSWORD);
    expect(await mirror(server, "rpc", "auth_clear", { token, body: "junk" })).toEqual({ status: 200, result: "ok" });
    expect(await whoAmI(server, token)).toBeNull();
    expect((await mirror(server, "rpc", "query", { token })).status).toBe(401);
  });

  test("POST /api/auth/logout ends the session; the token is then refused", async () => {
    const token = await login(server.url, userOf(transports[0]!), PASSWORD);
    const other = await login(server.url, userOf(transports[0]!), PASSWORD);
    expect(await rest(server, "POST", "/api/auth/logout", { token })).toEqual({ status: 200, result: { ok: true } });
    expect(await whoAmI(server, token)).toBeNull();
    expect((await rest(server, "POST", "/api/auth/logout", { token })).status).toBe(401);
    expect((await mirror(server, "rpc", "query", { token })).status).toBe(401);
    // Only that session ended.
    expect(await whoAmI(server, other)).toBe(userOf(transports[0]!));
    expect((await rest(server, "POST", "/api/auth/logout")).status).toBe(401);
  });
});

/** One way of running a SCRAM exchange. */
interface ScramTransport {
  name: string;
  start(clientFirst: unknown): Promise<Reply>;
  finish(clientFinal: unknown): Promise<Reply>;
  /** Checks the success shape; returns the token and server-final. */
  success(result: any): { token: string; serverFinal: string };
}

/** A full SCRAM exchange as a client would run it, applying the server's prehash hint. */
async function scramLogin(t: ScramTransport, username: string, password: string) {
  const first = clientFirstMessage(username);
  const started = await t.start(first.message);
  expect(started.status).toBe(200);
  const { server_first: serverFirst, prehash } = started.result;
  const scramPassword = prehash ? sha256hex(password + prehash.salt) : password;
  const final = await clientFinalMessage({ password: scramPassword, clientFirstBare: first.bare, serverFirst, clientNonce: first.nonce });
  const finished = await t.finish(final.message);
  return { started, finished, final };
}

function scramTransports(server: () => TestServer, client: () => RpcClient): ScramTransport[] {
  const rpcSuccess = (result: any) => {
    expect(result).toBeArrayOfSize(3);
    expect(result[1]).toBe(300);
    return { token: result[0], serverFinal: result[2] };
  };
  return [
    {
      name: "REST /api/auth/scram",
      start: (clientFirst) => rest(server(), "POST", "/api/auth/scram/start", { body: { client_first: clientFirst } }),
      finish: (clientFinal) => rest(server(), "POST", "/api/auth/scram/finish", { body: { client_final: clientFinal } }),
      success(result) {
        expect(Object.keys(result).sort()).toEqual(["expires_in", "role", "server_final", "token"]);
        expect(result.expires_in).toBe(300);
        return { token: result.token, serverFinal: result.server_final };
      },
    },
    {
      name: "RPC rpc/auth_scram over /ws",
      start: (clientFirst) => rpc(client(), "rpc", "auth_scram", { client_first: clientFirst }),
      finish: (clientFinal) => rpc(client(), "rpc", "auth_scram", { client_final: clientFinal }),
      success: rpcSuccess,
    },
    {
      name: "REST mirror PUT /rpc/auth_scram",
      start: (clientFirst) => mirror(server(), "rpc", "auth_scram", { body: { client_first: clientFirst } }),
      finish: (clientFinal) => mirror(server(), "rpc", "auth_scram", { body: { client_final: clientFinal } }),
      success: rpcSuccess,
    },
  ];
}

describe("SCRAM-SHA-256", () => {
  const clock = manualClock();
  let server: TestServer;
  let client: RpcClient;
  const PASSWORD = "scram is the word";
  const transports = scramTransports(
    () => server,
    () => client,
  );
  const userOf = (t: ScramTransport) => `scram${transports.indexOf(t)}`;

  beforeAll(async () => {
    server = await startTestServer({ clock });
    client = await RpcClient.connect(server.wsUrl);
    const admin = await login(server.url);
    for (const t of transports) await createUser(server.url, admin, { username: userOf(t), password: PASSWORD });
  });
  afterAll(async () => {
    client.close();
    await server.close();
  });

  for (const t of transports) {
    test(`${t.name}: the right password logs in and the server proves it knows the verifier`, async () => {
      const { started, finished, final } = await scramLogin(t, userOf(t), PASSWORD);
      expect(started.result.prehash).toBeNull();
      expect(started.result.server_first).toMatch(/^r=[\x21-\x2b\x2d-\x7e]+,s=[A-Za-z0-9+/=]+,i=\d+$/);
      expect(Number(/,i=(\d+)$/.exec(started.result.server_first)![1])).toBeGreaterThanOrEqual(4096);
      expect(finished.status).toBe(200);
      const { token, serverFinal } = t.success(finished.result);
      expect(token).toMatch(TOKEN_SHAPE);
      expect(verifyServerFinal(serverFinal, final.expectedServerSignature)).toBe(true);
      expect(await whoAmI(server, token)).toBe(userOf(t));

      // Replaying the finished exchange is refused: each exchange is single use.
      const replay = await t.finish(final.message);
      expect(replay.status).toBe(401);
    });

    test(`${t.name}: a wrong password is a 401`, async () => {
      const { finished } = await scramLogin(t, userOf(t), "not the password");
      expect(finished.status).toBe(401);
    });

    test(`${t.name}: an unknown user gets a stable decoy salt, then a 401`, async () => {
      const ghost = `${userOf(t)}-ghost`;
      const a = await t.start(clientFirstMessage(ghost).message);
      const b = await t.start(clientFirstMessage(ghost).message);
      const other = await t.start(clientFirstMessage(`${ghost}2`).message);
      for (const r of [a, b, other]) expect(r.status).toBe(200);
      const saltOf = (r: Reply) => /,s=([^,]+),/.exec(r.result.server_first)![1]!;
      const nonceOf = (r: Reply) => /^r=([^,]+),/.exec(r.result.server_first)![1]!;
      expect(saltOf(a)).toBe(saltOf(b));
      expect(a.result.prehash).toEqual(b.result.prehash);
      expect(nonceOf(a)).not.toBe(nonceOf(b));
      expect(saltOf(other)).not.toBe(saltOf(a));
      // Shaped like a real user's: a 16-byte salt and the same iteration count.
      expect(Buffer.from(saltOf(a), "base64")).toHaveLength(16);
      const real = await t.start(clientFirstMessage(userOf(t)).message);
      expect(Buffer.from(saltOf(real), "base64")).toHaveLength(16);
      const iterationsOf = (r: Reply) => /,i=(\d+)$/.exec(r.result.server_first)![1];
      expect(iterationsOf(a)).toBe(iterationsOf(real));

      const { finished } = await scramLogin(t, ghost, PASSWORD);
      expect(finished.status).toBe(401);
    });

    const malformed: { name: string; step: "start" | "finish"; message: unknown; field: string }[] = [
      { name: "client-first without gs2 header", step: "start", message: `n=${userOf(t)},r=abc`, field: "client_first" },
      {
        name: "client-first asking for channel binding",
        step: "start",
        message: `p=tls-unique,,n=${userOf(t)},r=abc`,
        field: "client_first",
      },
      { name: "client-first with an empty username", step: "start", message: "n,,n=,r=abc", field: "client_first" },
      { name: "client-final that is garbage", step: "finish", message: "garbage", field: "client_final" },
      { name: "client-final with a short proof", step: "finish", message: "c=biws,r=abcdef,p=AAAA", field: "client_final" },
    ];
    for (const m of malformed) {
      test(`${t.name}: ${m.name} → 400`, async () => {
        const reply = m.step === "start" ? await t.start(m.message) : await t.finish(m.message);
        expect(reply.status).toBe(400);
        expect(reply.error?.field).toContain(m.field);
      });
    }

    test(`${t.name}: an exchange left open for over a minute is a 401`, async () => {
      const first = clientFirstMessage(userOf(t));
      const started = await t.start(first.message);
      const final = await clientFinalMessage({
        password: PASSWORD,
        clientFirstBare: first.bare,
        serverFirst: started.result.server_first,
        clientNonce: first.nonce,
      });
      clock.advance(61_000);
      expect((await t.finish(final.message)).status).toBe(401);
    });

    test(`${t.name}: a well-formed client-final for no exchange is a 401`, async () => {
      const reply = await t.finish(`c=biws,r=${randomBytes(30).toString("base64")},p=${randomBytes(32).toString("base64")}`);
      expect(reply.status).toBe(401);
    });
  }

  const missing: { name: string; reply: () => Promise<Reply>; field: string }[] = [
    {
      name: "REST start without client_first",
      reply: () => rest(server, "POST", "/api/auth/scram/start", { body: {} }),
      field: "client_first",
    },
    {
      name: "REST start with a number",
      reply: () => rest(server, "POST", "/api/auth/scram/start", { body: { client_first: 42 } }),
      field: "client_first",
    },
    {
      name: "REST finish without client_final",
      reply: () => rest(server, "POST", "/api/auth/scram/finish", { body: {} }),
      field: "client_final",
    },
    {
      name: "REST start with an unknown field",
      reply: () => rest(server, "POST", "/api/auth/scram/start", { body: { client_first: "n,,n=a,r=b", extra: 1 } }),
      field: "extra",
    },
    // RPC takes either message, so a missing or mistyped one is reported on the args as a whole.
    { name: "RPC with neither message", reply: () => rpc(client, "rpc", "auth_scram", {}), field: "args" },
    { name: "RPC with a number", reply: () => rpc(client, "rpc", "auth_scram", { client_first: 42 }), field: "args" },
  ];
  for (const m of missing) {
    test(`${m.name} → 400 naming ${m.field}`, async () => {
      const reply = await m.reply();
      expect(reply.status).toBe(400);
      expect(reply.error?.field).toBe(m.field);
    });
  }
});

/** A wsauth users.json entry, hashed here without any latchkey code. */
function wsauthUser(username: string, password: string, salt: string) {
  return { username, password, salt, hash: sha256hex(password + salt) };
}

function writeUsersFile(dir: string, users: ReturnType<typeof wsauthUser>[]): string {
  const file = join(dir, `users-${randomBytes(4).toString("hex")}.json`);
  const entries = users.map((u) => ({
    username: u.username,
    password_hash: u.hash,
    salt: u.salt,
    role: "viewer",
    allowed_groups: ["ops"],
  }));
  writeFileSync(file, JSON.stringify({ users: entries }, null, 2));
  return file;
}

/** The users table row of an account, read straight from the database. */
async function storedRow(server: TestServer, username: string): Promise<Record<string, unknown>> {
  const db = await anotherConnection(server);
  try {
    const row = await db.get<Record<string, unknown>>("SELECT * FROM users WHERE username = ?", [username]);
    expect(row).not.toBeNull();
    return row!;
  } finally {
    await db.close();
  }
}

describe("wsauth import", () => {
  let server: TestServer;
  let client: RpcClient;
  let admin: string;
  // A random hex salt as wsauth makes them, and the empty salt of its bootstrap-style accounts.
  const imported = [
    wsauthUser("carol", "carol's wsauth password", randomBytes(8).toString("hex")),
    wsauthUser("dave", "dave's wsauth password", ""),
  ];
  const scram = scramTransports(
    () => server,
    () => client,
  );

  beforeAll(async () => {
    server = await startTestServer();
    client = await RpcClient.connect(server.wsUrl);
    admin = await login(server.url);
    const file = writeUsersFile(server.dataDir, imported);
    // The CLI works on the data directory while the server runs.
    const result = await runLatchkey(["user", "import", file, ...server.storageArgs]);
    expect(result).toMatchObject({ code: 0, stdout: "imported 2 users\n" });
  });
  afterAll(async () => {
    client.close();
    await server.close();
  });

  for (const u of imported) {
    const label = `${u.username} (salt ${JSON.stringify(u.salt)})`;

    test(`${label}: listed as a wsauth import, without the challenge login`, async () => {
      const res = await call(server.url, "GET", `/api/users/${u.username}`, { token: admin });
      expect(res.body).toMatchObject({
        username: u.username,
        role: "viewer",
        allowed_groups: ["ops"],
        legacy: true,
        legacy_challenge: false,
      });
    });

    test(`${label}: logs in with the original password over REST and RPC`, async () => {
      const token = await login(server.url, u.username, u.password);
      expect(await whoAmI(server, token)).toBe(u.username);
      const reply = await rpc(client, "rpc", "auth", { username: u.username, password: u.password });
      expect(reply.status).toBe(200);
      expect((await rest(server, "POST", "/api/auth/login", { body: { username: u.username, password: u.hash } })).status).toBe(401);
    });

    for (const t of scram) {
      test(`${label}: ${t.name} works when the client applies the prehash`, async () => {
        const first = clientFirstMessage(u.username);
        const started = await t.start(first.message);
        expect(started.status).toBe(200);
        expect(started.result.prehash).toEqual({ algorithm: "sha256-hex(password+salt)", salt: u.salt });
        const final = await clientFinalMessage({
          password: sha256hex(u.password + started.result.prehash.salt),
          clientFirstBare: first.bare,
          serverFirst: started.result.server_first,
          clientNonce: first.nonce,
        });
        const finished = await t.finish(final.message);
        expect(finished.status).toBe(200);
        const { token, serverFinal } = t.success(finished.result);
        expect(verifyServerFinal(serverFinal, final.expectedServerSignature)).toBe(true);
        expect(await whoAmI(server, token)).toBe(u.username);
      });
    }

    test(`${label}: SCRAM with the raw password (prehash ignored) is a 401`, async () => {
      const first = clientFirstMessage(u.username);
      const started = await scram[0]!.start(first.message);
      const final = await clientFinalMessage({
        password: u.password,
        clientFirstBare: first.bare,
        serverFirst: started.result.server_first,
        clientNonce: first.nonce,
      });
      expect((await scram[0]!.finish(final.message)).status).toBe(401);
    });

    test(`${label}: no column of its users row holds the wsauth hash`, async () => {
      const row = await storedRow(server, u.username);
      for (const [column, value] of Object.entries(row)) {
        expect({ column, holdsHash: String(value).toLowerCase().includes(u.hash) }).toEqual({ column, holdsHash: false });
      }
      expect(row.legacy_hash).toBeNull();
    });
  }

  test("an invalid users.json imports nothing", async () => {
    const good = wsauthUser("grace", "grace's password", "aa");
    const file = join(server.dataDir, "bad-users.json");
    writeFileSync(
      file,
      JSON.stringify({
        users: [
          { username: good.username, password_hash: good.hash, salt: good.salt },
          { username: "heidi", password_hash: "NOT-HEX" },
        ],
      }),
    );
    const result = await runLatchkey(["user", "import", file, ...server.storageArgs]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("password_hash");
    expect((await call(server.url, "GET", "/api/users/grace", { token: admin })).status).toBe(404);
  });
});

describe("wsauth nonce challenge (--legacy-challenge-login)", () => {
  const clock = manualClock();
  let server: TestServer;
  let plain: TestServer;
  const erin = wsauthUser("erin", "erin's wsauth password", randomBytes(8).toString("hex"));
  const gwen = wsauthUser("gwen", "gwen's wsauth password", randomBytes(8).toString("hex"));
  const frank = wsauthUser("frank", "frank's wsauth password", randomBytes(8).toString("hex"));

  beforeAll(async () => {
    [server, plain] = await Promise.all([startTestServer({ flags: ["--legacy-challenge-login"], clock }), startTestServer()]);
    const kept = await runLatchkey([
      "user",
      "import",
      writeUsersFile(server.dataDir, [erin, gwen]),
      ...server.storageArgs,
      "--legacy-challenge-login",
    ]);
    expect(kept.code).toBe(0);
    const notKept = await runLatchkey(["user", "import", writeUsersFile(server.dataDir, [frank]), ...server.storageArgs]);
    expect(notKept.code).toBe(0);
  });
  afterAll(async () => {
    await Promise.all([server.close(), plain.close()]);
  });

  const challenge = async (username: string) => {
    const reply = await rest(server, "POST", "/api/auth/challenge", { body: { username } });
    expect(reply.status).toBe(200);
    expect(Object.keys(reply.result).sort()).toEqual(["nonce", "salt"]);
    expect(reply.result.nonce).toMatch(/^[0-9a-f]{32}$/);
    return reply.result as { nonce: string; salt: string };
  };
  const respond = (username: string, nonce: string, response: string) =>
    rest(server, "POST", "/api/auth/login", { body: { username, nonce, response } });

  test("challenge → response = SHA256(H + nonce) logs in", async () => {
    const { nonce, salt } = await challenge(erin.username);
    expect(salt).toBe(erin.salt);
    const H = sha256hex(erin.password + salt);
    const reply = await respond(erin.username, nonce, sha256hex(H + nonce));
    expect(reply.status).toBe(200);
    expect(Object.keys(reply.result).sort()).toEqual(["expires_in", "role", "token"]);
    expect(await whoAmI(server, reply.result.token)).toBe(erin.username);
  });

  const failures: { name: string; attempt: () => Promise<Reply> }[] = [
    {
      name: "a nonce used twice",
      attempt: async () => {
        const { nonce } = await challenge(erin.username);
        expect((await respond(erin.username, nonce, sha256hex(erin.hash + nonce))).status).toBe(200);
        return respond(erin.username, nonce, sha256hex(erin.hash + nonce));
      },
    },
    {
      name: "a wrong response",
      attempt: async () => {
        const { nonce } = await challenge(erin.username);
        return respond(erin.username, nonce, sha256hex(sha256hex("wrong password" + erin.salt) + nonce));
      },
    },
    {
      name: "a nonce issued for another user",
      attempt: async () => {
        const { nonce } = await challenge(frank.username);
        return respond(erin.username, nonce, sha256hex(erin.hash + nonce));
      },
    },
    {
      name: "a nonce older than 30 s",
      attempt: async () => {
        const { nonce } = await challenge(gwen.username);
        clock.advance(31_000);
        return respond(gwen.username, nonce, sha256hex(gwen.hash + nonce));
      },
    },
    {
      name: "a nonce that was never issued",
      attempt: () => respond(erin.username, randomBytes(16).toString("hex"), sha256hex(erin.hash + "0".repeat(32))),
    },
    {
      name: "an account imported without --legacy-challenge-login",
      attempt: async () => {
        const { nonce, salt } = await challenge(frank.username);
        expect(salt).toBe(frank.salt);
        return respond(frank.username, nonce, sha256hex(frank.hash + nonce));
      },
    },
  ];
  for (const f of failures) {
    test(`${f.name} → 401`, async () => {
      const reply = await f.attempt();
      expect(reply.status).toBe(401);
      expect(reply.error).toEqual({ code: "unauthorized", message: "invalid username or password" });
    });
  }

  test("the account still logs in with its password, and keeps H only because it was asked to", async () => {
    expect(await whoAmI(server, await login(server.url, erin.username, erin.password))).toBe(erin.username);
    expect(await whoAmI(server, await login(server.url, frank.username, frank.password))).toBe(frank.username);
    expect((await storedRow(server, erin.username)).legacy_hash).toBe(erin.hash);
    const frankRow = await storedRow(server, frank.username);
    for (const value of Object.values(frankRow)) expect(String(value)).not.toContain(frank.hash);
    const admin = await login(server.url);
    const listed = await call(server.url, "GET", "/api/users", { token: admin });
    const flags = Object.fromEntries(listed.body.items.map((u: any) => [u.username, u.legacy_challenge]));
    expect(flags).toMatchObject({ erin: true, frank: false, admin: false });
  });

  test("an unknown user gets a nonce and a salt too", async () => {
    const { salt } = await challenge("nobody");
    expect(salt).toMatch(/^[0-9a-f]{16}$/);
    expect((await challenge("nobody")).salt).toBe(salt);
  });

  test("without the server flag the challenge is a 404 that says how to enable it", async () => {
    const reply = await rest(plain, "POST", "/api/auth/challenge", { body: { username: "erin" } });
    expect(reply.status).toBe(404);
    expect(reply.error?.message).toContain("--legacy-challenge-login");
    const response = await rest(plain, "POST", "/api/auth/login", {
      body: { username: "erin", nonce: "0".repeat(32), response: "0".repeat(64) },
    });
    expect(response.status).toBe(404);
    expect(response.error?.message).toContain("--legacy-challenge-login");
  });
});

describe("brute-force throttling and the audit trail", () => {
  const PASSWORD = "the victim's password";
  const WRONG = "guess number";

  /** The whole audit log as JSON lines, and the entries of one action. */
  async function auditLog(server: TestServer, token: string) {
    const res = await call(server.url, "GET", "/api/audit?format=jsonl", { token });
    expect(res.status).toBe(200);
    const entries = res.text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    return { text: res.text, entries };
  }

  test("one account: failures lock it (429, Retry-After), even for the right password, until the wait is over", async () => {
    const clock = manualClock();
    const server = await startTestServer({ clock });
    const client = await RpcClient.connect(server.wsUrl);
    try {
      const admin = await login(server.url);
      await createUser(server.url, admin, { username: "victim", password: PASSWORD });
      const tokens = [admin];

      for (let i = 1; i <= 5; i++) {
        const reply = await rest(server, "POST", "/api/auth/login", { body: { username: "victim", password: `${WRONG} ${i}` } });
        expect(reply.status).toBe(401);
      }

      // Locked now: every way in says 429 and when to come back, the right password included.
      const attempts: { name: string; attempt: () => Promise<Reply> }[] = [
        {
          name: "REST password",
          attempt: () => rest(server, "POST", "/api/auth/login", { body: { username: "victim", password: PASSWORD } }),
        },
        { name: "RPC over /ws", attempt: () => rpc(client, "rpc", "auth", { username: "victim", password: PASSWORD }) },
        { name: "REST mirror", attempt: () => mirror(server, "rpc", "auth", { body: { username: "victim", password: PASSWORD } }) },
        {
          name: "SCRAM start",
          attempt: () => rest(server, "POST", "/api/auth/scram/start", { body: { client_first: clientFirstMessage("victim").message } }),
        },
      ];
      let retryAfter = 0;
      for (const a of attempts) {
        const reply = await a.attempt();
        expect({ name: a.name, status: reply.status }).toEqual({ name: a.name, status: 429 });
        expect(reply.error?.retry_after).toBeGreaterThan(0);
        expect(reply.error?.message).toMatch(/retry in \d+ s/);
        if (a.name !== "RPC over /ws") expect(reply.retryAfterHeader).toBe(String(reply.error?.retry_after));
        retryAfter = Math.max(retryAfter, reply.error!.retry_after!);
      }
      // Another account from the same address is not affected.
      expect(await whoAmI(server, await login(server.url))).toBe("admin");

      clock.advance(retryAfter * 1000);
      const ok = await rest(server, "POST", "/api/auth/login", { body: { username: "victim", password: PASSWORD } });
      expect(ok.status).toBe(200);
      tokens.push(ok.result.token);
      // Success clears the account's record: the next failure is a plain 401.
      expect((await rest(server, "POST", "/api/auth/login", { body: { username: "victim", password: WRONG } })).status).toBe(401);

      const { text, entries } = await auditLog(server, admin);
      const victim = entries.filter((e) => e.target === "victim" && e.action.startsWith("auth."));
      const count = (action: string, outcome: string) => victim.filter((e) => e.action === action && e.outcome === outcome).length;
      expect({
        passwordFailures: count("auth.password", "failure"),
        passwordDenied: count("auth.password", "denied"),
        passwordSuccess: count("auth.password", "success"),
        scramDenied: count("auth.scram", "denied"),
      }).toEqual({ passwordFailures: 6, passwordDenied: 3, passwordSuccess: 1, scramDenied: 1 });
      expect(victim.filter((e) => e.outcome === "denied").every((e) => e.reason === "throttled (account)")).toBe(true);
      expect(victim.every((e) => e.address === "127.0.0.1")).toBe(true);
      for (const secret of [PASSWORD, WRONG, ADMIN_PASSWORD, ...tokens]) expect(text).not.toContain(secret);
    } finally {
      client.close();
      await server.close();
    }
  });

  test("one address: failures across many usernames lock that address for every account", async () => {
    const clock = manualClock();
    const server = await startTestServer({ clock });
    try {
      const admin = await login(server.url);
      // 20 failures are free per address; each uses a different name so no account is locked.
      for (let i = 0; i < 20; i++) {
        const reply = await rest(server, "POST", "/api/auth/login", { body: { username: `spray${i}`, password: `${WRONG} ${i}` } });
        expect({ i, status: reply.status }).toEqual({ i, status: 401 });
      }
      const locked = await rest(server, "POST", "/api/auth/login", { body: { username: "spray-next", password: WRONG } });
      expect(locked.status).toBe(429);
      expect(locked.error?.message).toContain("address");
      expect(locked.retryAfterHeader).toBe(String(locked.error?.retry_after));

      // The admin's right password from this address is refused too, until the wait is over.
      const adminLocked = await rest(server, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } });
      expect(adminLocked.status).toBe(429);
      clock.advance(adminLocked.error!.retry_after! * 1000);
      const adminOk = await rest(server, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } });
      expect(adminOk.status).toBe(200);

      const { text, entries } = await auditLog(server, admin);
      const logins = entries.filter((e) => e.action === "auth.password");
      expect(logins.filter((e) => e.outcome === "failure")).toHaveLength(20);
      expect(logins.filter((e) => e.outcome === "denied").map((e) => [e.actor, e.reason])).toEqual([
        ["spray-next", "throttled (address)"],
        ["admin", "throttled (address)"],
      ]);
      expect(logins.filter((e) => e.outcome === "success").map((e) => e.actor)).toEqual(["admin", "admin"]);
      for (const secret of [WRONG, ADMIN_PASSWORD, admin, adminOk.result.token]) expect(text).not.toContain(secret);
    } finally {
      await server.close();
    }
  });

  test("over RPC a throttled login is an error envelope with code 429", async () => {
    const clock = manualClock();
    const server = await startTestServer({ clock });
    const client = await RpcClient.connect(server.wsUrl);
    try {
      for (let i = 0; i < 5; i++) expect((await rpc(client, "rpc", "auth", { username: "admin", password: WRONG })).status).toBe(401);
      const envelope = await client.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD });
      expect(envelope).toMatchObject({ namespace: "rpc", name: "error", args: { code: 429 } });
      expect(envelope.args.retry_after).toBeGreaterThan(0);
      expect(envelope.args.message).toContain("retry in");
      clock.advance(envelope.args.retry_after * 1000);
      expect((await rpc(client, "rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).status).toBe(200);
    } finally {
      client.close();
      await server.close();
    }
  });

  test("every kind of attempt is audited without the secrets it carried", async () => {
    const server = await startTestServer();
    const client = await RpcClient.connect(server.wsUrl);
    try {
      const admin = await login(server.url);
      const scram = scramTransports(
        () => server,
        () => client,
      );
      const ok = await scramLogin(scram[0]!, "admin", ADMIN_PASSWORD);
      const replay = await scram[0]!.finish(ok.final.message);
      const bad = await scramLogin(scram[1]!, "admin", WRONG);
      expect([ok.finished.status, replay.status, bad.finished.status]).toEqual([200, 401, 401]);
      const wsLogin = await rpc(client, "rpc", "auth", { username: "admin", password: ADMIN_PASSWORD });
      const badToken = "B".repeat(43);
      expect((await rpc(client, "rpc", "auth_token", { token: badToken })).status).toBe(401);
      expect((await rest(server, "POST", "/api/auth/logout", { token: wsLogin.result[0] })).status).toBe(200);

      const { text, entries } = await auditLog(server, admin);
      const seen = entries.map((e) => `${e.action} ${e.outcome}`);
      expect(seen).toEqual([
        "user.bootstrap success",
        // The first start also makes the root CA and the mTLS listener's certificate.
        "ca.generate success",
        "cert.issue success",
        "auth.password success",
        "auth.scram success",
        "auth.scram failure",
        "auth.scram failure",
        "auth.password success",
        "auth.token failure",
        "auth.logout success",
      ]);
      const secrets = [ADMIN_PASSWORD, WRONG, admin, ok.finished.result.token, wsLogin.result[0], badToken];
      for (const secret of secrets) expect(text).not.toContain(secret);
    } finally {
      client.close();
      await server.close();
    }
  });
});
