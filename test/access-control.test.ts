/**
 * The access-control matrix: anonymous, viewer and admin against every REST route and every RPC,
 * each with the exact status it must get. The expectations are written here, by hand, from the
 * SPEC (§2: viewers read, admins write; logins and the licensing wire API are public); they are
 * compared with what the routes declare and with what the server answers. A route or RPC that is
 * missing here, or listed here but gone from the app, fails this file; the server itself refuses
 * a route that declares no access, at start-up and per request.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { declarationOf, assertAccessDeclared, type Declaration } from "../src/http/session.ts";
import { call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

type Who = "anonymous" | "viewer" | "admin";
const everyone: Who[] = ["anonymous", "viewer", "admin"];

interface RouteCase {
  /** What the route must declare. */
  declares: Declaration;
  /** A request per caller; path parameters name things that do not exist. */
  path?: string;
  body?: (who: Who) => unknown;
  /** The exact status each caller gets. */
  status: Record<Who, number>;
}

const all = (status: number): Record<Who, number> => ({ anonymous: status, viewer: status, admin: status });
/** Signed-in callers get `status`, anonymous ones 401. */
const signedIn = (status: number): Record<Who, number> => ({ anonymous: 401, viewer: status, admin: status });
/** Admins get `status`, viewers 403, anonymous callers 401. */
const adminOnly = (status: number): Record<Who, number> => ({ anonymous: 401, viewer: 403, admin: status });

const NO_UUID = "00000000-0000-4000-8000-000000000000";
/** A serial no certificate has. */
const NO_SERIAL = "00ff";
/** A SHA-256 fingerprint no registered certificate has. */
const NO_FINGERPRINT = "00".repeat(32);

const routes: Record<string, RouteCase> = {
  "GET /": { declares: "public", status: all(200) },
  "GET /panel/*": { declares: "public", path: "/panel/app.css", status: all(200) },
  "GET /healthz": { declares: "public", status: all(200) },
  "GET /metrics": { declares: "public", status: all(200) },
  "GET /openapi/json": { declares: "public", status: all(200) },
  "GET /swagger/json": { declares: "public", status: all(200) },
  "GET /swagger": { declares: "public", status: all(200) },
  "GET /swagger/*": { declares: "public", path: "/swagger/init.js", status: all(200) },
  // Each caller guesses a name of its own, so that no throttle is reached within this file.
  "POST /api/auth/login": {
    declares: "public",
    body: (who) => ({ username: `nobody-${who}`, password: "wrong-password" }),
    status: all(401),
  },
  "POST /api/auth/scram/start": { declares: "public", body: () => ({ client_first: "n,,n=nobody,r=abcdefghijklmnop" }), status: all(200) },
  "POST /api/auth/scram/finish": {
    declares: "public",
    body: () => ({ client_final: "c=biws,r=unknownnonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }),
    status: all(401),
  },
  // Off unless the server runs with --legacy-challenge-login.
  "POST /api/auth/challenge": { declares: "public", body: () => ({ username: "nobody" }), status: all(404) },
  "POST /api/auth/logout": { declares: "session", status: signedIn(200) },
  "GET /api/auth/session": { declares: "session", status: signedIn(200) },
  "GET /api/users": { declares: "admin", status: adminOnly(200) },
  "POST /api/users": {
    declares: "admin",
    body: () => ({ username: "matrix-new", password: "matrix-password", role: "viewer" }),
    status: adminOnly(201),
  },
  "GET /api/users/:username": { declares: "admin", path: "/api/users/nobody-here", status: adminOnly(404) },
  "PATCH /api/users/:username": {
    declares: "admin",
    path: "/api/users/nobody-here",
    body: () => ({ role: "viewer" }),
    status: adminOnly(404),
  },
  "DELETE /api/users/:username": { declares: "admin", path: "/api/users/nobody-here", status: adminOnly(404) },
  // Certificates for certificate login: everyone their own (a session), admins anyone's. These
  // paths name another user, one that does not exist: a viewer is refused before it is looked up.
  "GET /api/me/certificates": { declares: "session", status: signedIn(200) },
  "GET /api/user-certificates": { declares: "admin", status: adminOnly(200) },
  "GET /api/users/:username/certificates": { declares: "session", path: "/api/users/nobody-here/certificates", status: adminOnly(404) },
  "POST /api/users/:username/certificates": {
    declares: "session",
    path: "/api/users/nobody-here/certificates",
    body: () => ({ certificate: "not a certificate" }),
    status: adminOnly(404),
  },
  // Issuing, too: a viewer's own only (and only for a request of hers); an admin's `{}` has a key generated.
  "POST /api/users/:username/certificates/issue": {
    declares: "session",
    path: "/api/users/nobody-here/certificates/issue",
    body: () => ({}),
    status: adminOnly(404),
  },
  "POST /api/users/:username/certificates/:fingerprint/revoke": {
    declares: "session",
    path: `/api/users/nobody-here/certificates/${NO_FINGERPRINT}/revoke`,
    status: adminOnly(404),
  },
  "GET /api/audit": { declares: "admin", status: adminOnly(200) },
  "POST /api/activate": { declares: "public", body: () => ({ token: "NOSUCHTOKEN", hwid: "matrix" }), status: all(404) },
  "GET /api/check": { declares: "public", path: "/api/check?token=NOSUCHTOKEN&hwid=matrix", status: all(404) },
  "POST /api/deactivate": { declares: "public", body: () => ({ token: "NOSUCHTOKEN", hwid: "matrix" }), status: all(404) },
  "GET /api/license/public-key": { declares: "public", status: all(200) },
  "GET /api/apps": { declares: "viewer", status: signedIn(200) },
  "POST /api/apps": { declares: "admin", body: () => ({ name: "matrix app" }), status: adminOnly(201) },
  "GET /api/apps/:id": { declares: "viewer", path: "/api/apps/999999", status: signedIn(404) },
  "PATCH /api/apps/:id": { declares: "admin", path: "/api/apps/999999", body: () => ({ support_message: "x" }), status: adminOnly(404) },
  "DELETE /api/apps/:id": { declares: "admin", path: "/api/apps/999999", status: adminOnly(404) },
  "GET /api/licenses": { declares: "viewer", status: signedIn(200) },
  "POST /api/licenses": { declares: "admin", body: () => ({ app_id: 999999, activations: 1 }), status: adminOnly(404) },
  "GET /api/licenses/:id": { declares: "viewer", path: "/api/licenses/999999", status: signedIn(404) },
  "PATCH /api/licenses/:id": { declares: "admin", path: "/api/licenses/999999", body: () => ({ memo: "x" }), status: adminOnly(404) },
  "DELETE /api/licenses/:id": { declares: "admin", path: "/api/licenses/999999", status: adminOnly(404) },
  "GET /api/licenses/:id/activations": { declares: "viewer", path: "/api/licenses/999999/activations", status: signedIn(404) },
  "DELETE /api/licenses/:id/activations/:hwid": {
    declares: "admin",
    path: "/api/licenses/999999/activations/matrix",
    status: adminOnly(404),
  },
  // The charts: every signed-in user (viewers see their groups' clients and hosts, and no sign-ins).
  "GET /api/stats": { declares: "viewer", status: signedIn(200) },
  "GET /api/licenses/:id/stats": { declares: "viewer", path: "/api/licenses/999999/stats", status: signedIn(404) },
  "GET /api/apps/:id/stats": { declares: "viewer", path: "/api/apps/999999/stats", status: signedIn(404) },
  "GET /api/settings": { declares: "viewer", status: signedIn(200) },
  "PATCH /api/settings": { declares: "admin", body: () => ({}), status: adminOnly(200) },
  "GET /api/keys": { declares: "viewer", status: signedIn(200) },
  "POST /api/keys": { declares: "admin", body: () => ({ quantity: 1, label: "matrix" }), status: adminOnly(201) },
  "GET /api/keys/:id": { declares: "viewer", path: "/api/keys/999999", status: signedIn(404) },
  "POST /api/keys/:id/revoke": { declares: "admin", path: "/api/keys/999999/revoke", status: adminOnly(404) },
  "POST /api/keys/:id/reset": { declares: "admin", path: "/api/keys/999999/reset", status: adminOnly(404) },
  "DELETE /api/keys/:id": { declares: "admin", path: "/api/keys/999999", status: adminOnly(404) },
  "GET /api/keys/:id/install-command": { declares: "admin", path: "/api/keys/999999/install-command", status: adminOnly(404) },
  "GET /api/clients": { declares: "viewer", status: signedIn(200) },
  "GET /api/clients/:uuid": { declares: "viewer", path: `/api/clients/${NO_UUID}`, status: signedIn(404) },
  "DELETE /api/clients/:uuid": { declares: "admin", path: `/api/clients/${NO_UUID}`, status: adminOnly(404) },
  "GET /api/hosts": { declares: "viewer", status: signedIn(200) },
  "POST /api/hosts": { declares: "admin", body: () => ({ hostname: "matrix-host.example" }), status: adminOnly(201) },
  "GET /api/hosts/:hostname": { declares: "viewer", path: "/api/hosts/no-such-host.example", status: signedIn(404) },
  "DELETE /api/hosts/:hostname": { declares: "admin", path: "/api/hosts/no-such-host.example", status: adminOnly(404) },
  "POST /api/hosts/:hostname/bundle": { declares: "admin", path: "/api/hosts/no-such-host.example/bundle", status: adminOnly(404) },
  // The public root and CRL: what a client needs before it has any credential.
  "GET /api/ca.pem": { declares: "public", status: all(200) },
  "GET /api/crl": { declares: "public", status: all(200) },
  "GET /api/ca": { declares: "viewer", status: signedIn(200) },
  "GET /api/certs": { declares: "viewer", status: signedIn(200) },
  "GET /api/certs/:serial": { declares: "viewer", path: `/api/certs/${NO_SERIAL}`, status: signedIn(404) },
  "POST /api/certs/:serial/revoke": {
    declares: "admin",
    path: `/api/certs/${NO_SERIAL}/revoke`,
    body: () => ({ reason: "keyCompromise" }),
    status: adminOnly(404),
  },
  // The registry decides per call: rpc/query needs a session.
  "PUT /:namespace/:name": { declares: "rpc", path: "/rpc/query", body: () => ({}), status: signedIn(200) },
  // Anyone may open the socket (and then sign in or register on it).
  "GET /ws": { declares: "rpc", status: all(101) },
};

interface RpcCase {
  args: (who: Who) => unknown;
  /** The exact code of the reply (200 for a response) each caller gets. */
  code: Record<Who, number>;
}

/** A well-formed certificate request (made by openssl): only who asks decides the answer. */
const MATRIX_CSR = Bun.spawnSync([
  "openssl",
  "req",
  "-new",
  "-newkey",
  "ec",
  "-pkeyopt",
  "ec_paramgen_curve:P-256",
  "-nodes",
  "-keyout",
  "/dev/null",
  "-subj",
  "/CN=matrix.example",
]).stdout.toString();

const rpcs: Record<string, RpcCase> = {
  "rpc/auth": { args: (who) => ({ username: `rpc-nobody-${who}`, password: "wrong-password" }), code: all(401) },
  "rpc/auth_token": { args: () => ({ token: "not-a-token" }), code: all(401) },
  "rpc/auth_scram": { args: () => ({ client_first: "n,,n=nobody,r=abcdefghijklmnop" }), code: all(200) },
  // Stage 1 hands anyone a test string.
  "rpc/auth_ssl": { args: () => "", code: all(200) },
  "rpc/auth_clear": { args: () => "junk argument", code: all(200) },
  "rpc/query": { args: () => ({ junk: "junk" }), code: signedIn(200) },
  // Certificates for rpc/auth_ssl: everyone lists their own (admins everyone's); `settings/sysadm` is the seed's name for it.
  "rpc/settings": { args: () => ({ action: "list_ssl_certs" }), code: signedIn(200) },
  "settings/sysadm": { args: () => ({ action: "list_ssl_certs" }), code: signedIn(200) },
  "latchkey/users": { args: () => ({ action: "list" }), code: adminOnly(200) },
  "latchkey/audit": { args: () => ({ action: "list" }), code: adminOnly(200) },
  "latchkey/licenses": { args: () => ({ action: "list" }), code: signedIn(200) },
  "latchkey/keys": { args: () => ({ action: "list" }), code: signedIn(200) },
  "latchkey/settings": { args: () => ({ action: "get" }), code: signedIn(200) },
  "latchkey/clients": { args: () => ({ action: "list" }), code: signedIn(200) },
  "latchkey/hosts": { args: () => ({ action: "list" }), code: signedIn(200) },
  "latchkey/certs": { args: () => ({ action: "list" }), code: signedIn(200) },
  "client/register": {
    args: () => ({ uuid: "00000000-0000-4000-8000-000000000001", name: "matrix", hostname: "matrix.example" }),
    code: all(200),
  },
  // Only a registered client may send heartbeats or ask for a certificate, whoever else the socket is.
  "client/heartbeat": { args: () => ({}), code: all(401) },
  "client/csr": { args: () => ({ csr: MATRIX_CSR }), code: all(401) },
};

/** What each role may use, as `rpc/query` must report it (SPEC §3). */
const subsystems: Record<"viewer" | "admin", Record<string, string>> = {
  viewer: {
    "latchkey/certs": "read",
    "latchkey/clients": "read",
    "latchkey/hosts": "read",
    "latchkey/keys": "read",
    "latchkey/licenses": "read",
    "latchkey/settings": "read",
    "rpc/settings": "read/write",
  },
  admin: {
    "latchkey/audit": "read",
    "latchkey/certs": "read/write",
    "latchkey/clients": "read/write",
    "latchkey/hosts": "read/write",
    "latchkey/keys": "read/write",
    "latchkey/licenses": "read/write",
    "latchkey/settings": "read/write",
    "latchkey/users": "read/write",
    "rpc/settings": "read/write",
  },
};

let server: TestServer;
const tokens: Partial<Record<Who, string>> = {};

/** A session of its own for a caller (logout and rpc/auth_clear end the one they use). */
async function freshToken(who: Who): Promise<string | undefined> {
  if (who === "anonymous") return undefined;
  return who === "admin" ? login(server.url) : login(server.url, "matrix-viewer", "viewer-password");
}

beforeAll(async () => {
  server = await startTestServer();
  tokens.admin = await login(server.url);
  await createUser(server.url, tokens.admin, {
    username: "matrix-viewer",
    password: "viewer-password",
    role: "viewer",
    allowed_groups: ["g1"],
  });
  tokens.viewer = await login(server.url, "matrix-viewer", "viewer-password");
});
afterAll(() => server.close());

const routeKey = (r: { method: string; path: string }) => `${r.method === "WS" ? "GET" : r.method} ${r.path}`;

describe("every route declares its access, as this table says", () => {
  test("the table lists exactly the app's routes", () => {
    const app = new Set(server.app.routes.map(routeKey));
    expect([...app].filter((k) => !(k in routes))).toEqual([]);
    expect(Object.keys(routes).filter((k) => !app.has(k))).toEqual([]);
  });

  test("each route declares what the table says", () => {
    const declared = Object.fromEntries(server.app.routes.map((r) => [routeKey(r), declarationOf(r)]));
    const expected = Object.fromEntries(Object.entries(routes).map(([k, r]) => [k, r.declares]));
    expect(declared).toEqual(expected);
  });
});

describe("REST matrix", () => {
  const cases = Object.entries(routes).flatMap(([key, route]) => everyone.map((who) => ({ key, route, who, expected: route.status[who] })));

  test.each(cases)("$who → $key: $expected", async ({ key, route, who, expected }) => {
    const [method, pattern] = key.split(" ") as [string, string];
    const path = route.path ?? pattern;
    const token = key === "POST /api/auth/logout" ? await freshToken(who) : tokens[who];
    if (key === "GET /ws") {
      // 101: the upgrade is accepted and the socket opens.
      const socket = await RpcClient.connect(server.wsUrl, token ? { authorization: `Bearer ${token}` } : undefined);
      socket.close();
      expect(expected).toBe(101);
      return;
    }
    const body = route.body?.(who);
    const res = await call(server.url, method, path, { ...(token ? { token } : {}), ...(body !== undefined ? { body } : {}) });
    expect(res.status).toBe(expected);
    if (expected === 401 || expected === 403) expect(res.body?.error?.code).toBe(expected === 401 ? "unauthorized" : "forbidden");
    if (key === "POST /api/users" && res.status === 201)
      await call(server.url, "DELETE", "/api/users/matrix-new", { token: tokens.admin! });
    if (key === "POST /api/apps" && res.status === 201)
      await call(server.url, "DELETE", `/api/apps/${res.body.id}`, { token: tokens.admin! });
    if (key === "POST /api/hosts" && res.status === 201)
      await call(server.url, "DELETE", `/api/hosts/${res.body.hostname}`, { token: tokens.admin! });
  });
});

describe("RPC matrix", () => {
  test("the table lists exactly the registered RPCs", () => {
    const registered = server.registry.entries().map(([k]) => k);
    expect(registered.filter((k) => !(k in rpcs))).toEqual([]);
    expect(Object.keys(rpcs).filter((k) => !registered.includes(k))).toEqual([]);
  });

  const cases = Object.entries(rpcs).flatMap(([name, rpc]) => everyone.map((who) => ({ name, rpc, who, expected: rpc.code[who] })));

  test.each(cases)("$who → $name over /ws: $expected", async ({ name, rpc, who, expected }) => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      const token = await freshToken(who);
      if (token) expect((await socket.request("rpc", "auth_token", { token })).name).toBe("response");
      const [namespace, rpcName] = name.split("/") as [string, string];
      const reply = await socket.request(namespace, rpcName, rpc.args(who));
      expect(reply.name === "error" ? reply.args.code : 200).toBe(expected);
      if (expected === 401 && name !== "client/heartbeat") expect(reply.args).toEqual({ code: 401, message: "Unauthorized" });
    } finally {
      socket.close();
    }
  });

  test("rpc/query lists exactly the subsystems each role may use", async () => {
    for (const who of ["viewer", "admin"] as const) {
      const res = await call(server.url, "PUT", "/rpc/query", { token: tokens[who]!, body: { junk: "junk" } });
      expect(res.status).toBe(200);
      expect(res.body.args).toEqual(subsystems[who]);
    }
  });
});

describe("default deny", () => {
  test("a route added without a declaration is refused for everybody, and an app with one does not start", async () => {
    const { createApp } = await import("../src/app.ts");
    const { silentLogger } = await import("../src/log.ts");
    const { app } = createApp(server.services, silentLogger, {
      tls: false,
      maxFrameBytes: 1024,
      trustedProxies: null,
      connections: { idleSeconds: 600, authTimeoutSeconds: 10, unidentifiedPerAddress: 64, maxConnections: 1000, maxSendBuffer: 1 << 20 },
    });
    const extended = app.get("/api/not-declared", () => "secret");
    for (const token of [undefined, tokens.viewer, tokens.admin]) {
      const res = await extended.handle(
        new Request("http://localhost/api/not-declared", { headers: token ? { authorization: `Bearer ${token}` } : {} }),
      );
      expect(res.status).toBe(403);
      expect(await res.json()).toEqual({ error: { code: "forbidden", message: "this route has no access policy" } });
    }
    expect(() => assertAccessDeclared(extended.routes)).toThrow(
      'routes without an access declaration (access: "admin" | "viewer" | "session", public: true or rpc: true): GET /api/not-declared',
    );
  });
});
