/**
 * The access-control matrix, generated from the app's own route list and RPC registry:
 * anonymous, viewer and admin against every REST route and every RPC. A route or RPC that has
 * no entry in the policy (src/http/access.ts) or no sample request here fails this file, and
 * the server itself refuses an unlisted route for everybody.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { routeAccess, type Access } from "../src/http/access.ts";
import { call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

type Who = "anonymous" | "viewer" | "admin";
const everyone: Who[] = ["anonymous", "viewer", "admin"];

/** A harmless request per route; path parameters name things that do not exist. */
const samples: Record<string, { path?: string; body?: unknown }> = {
  "GET /": {},
  "GET /panel/*": { path: "/panel/app.css" },
  "GET /healthz": {},
  "GET /metrics": {},
  "GET /openapi/json": {},
  "GET /swagger/json": {},
  "GET /swagger": {},
  "GET /swagger/*": { path: "/swagger/init.js" },
  "POST /api/auth/login": { body: { username: "nobody", password: "wrong-password" } },
  "POST /api/auth/scram/start": { body: { client_first: "n,,n=nobody,r=abcdefghijklmnop" } },
  "POST /api/auth/scram/finish": { body: { client_final: "c=biws,r=unknownnonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" } },
  "POST /api/auth/challenge": { body: { username: "nobody" } },
  "POST /api/auth/logout": {},
  "GET /api/auth/session": {},
  "GET /api/users": {},
  "POST /api/users": { body: { username: "matrix-new", password: "matrix-password", role: "viewer" } },
  "GET /api/users/:username": { path: "/api/users/nobody-here" },
  "PATCH /api/users/:username": { path: "/api/users/nobody-here", body: { role: "viewer" } },
  "DELETE /api/users/:username": { path: "/api/users/nobody-here" },
  "GET /api/audit": {},
  "POST /api/activate": { body: { token: "NOSUCHTOKEN", hwid: "matrix" } },
  "GET /api/check": { path: "/api/check?token=NOSUCHTOKEN&hwid=matrix" },
  "POST /api/deactivate": { body: { token: "NOSUCHTOKEN", hwid: "matrix" } },
  "GET /api/license/public-key": {},
  "GET /api/apps": {},
  "POST /api/apps": { body: { name: "matrix app" } },
  "GET /api/apps/:id": { path: "/api/apps/999999" },
  "PATCH /api/apps/:id": { path: "/api/apps/999999", body: { support_message: "x" } },
  "DELETE /api/apps/:id": { path: "/api/apps/999999" },
  "GET /api/licenses": {},
  "POST /api/licenses": { body: { app_id: 999999, activations: 1 } },
  "GET /api/licenses/:id": { path: "/api/licenses/999999" },
  "PATCH /api/licenses/:id": { path: "/api/licenses/999999", body: { memo: "x" } },
  "DELETE /api/licenses/:id": { path: "/api/licenses/999999" },
  "GET /api/licenses/:id/activations": { path: "/api/licenses/999999/activations" },
  "DELETE /api/licenses/:id/activations/:hwid": { path: "/api/licenses/999999/activations/matrix" },
  "GET /api/settings": {},
  "PATCH /api/settings": { body: {} },
  "GET /api/keys": {},
  "POST /api/keys": { body: { quantity: 1, label: "matrix" } },
  "GET /api/keys/:id": { path: "/api/keys/999999" },
  "POST /api/keys/:id/revoke": { path: "/api/keys/999999/revoke" },
  "POST /api/keys/:id/reset": { path: "/api/keys/999999/reset" },
  "DELETE /api/keys/:id": { path: "/api/keys/999999" },
  "GET /api/keys/:id/install-command": { path: "/api/keys/999999/install-command" },
  "GET /api/clients": {},
  "GET /api/clients/:uuid": { path: "/api/clients/00000000-0000-4000-8000-000000000000" },
  "DELETE /api/clients/:uuid": { path: "/api/clients/00000000-0000-4000-8000-000000000000" },
  "GET /ws": {},
  "PUT /:namespace/:name": { path: "/rpc/query", body: {} },
};

/** A harmless call per RPC, at the "read" level where the handler has levels. */
const rpcSamples: Record<string, unknown> = {
  "rpc/auth": { username: "nobody", password: "wrong-password" },
  "rpc/auth_token": { token: "not-a-token" },
  "rpc/auth_scram": { client_first: "n,,n=nobody,r=abcdefghijklmnop" },
  "rpc/auth_clear": "junk argument",
  "rpc/query": { junk: "junk" },
  "latchkey/users": { action: "list" },
  "latchkey/audit": { action: "list" },
  "latchkey/licenses": { action: "list" },
  "latchkey/keys": { action: "list" },
  "latchkey/settings": { action: "get" },
  "latchkey/clients": { action: "list" },
  "client/register": { uuid: "00000000-0000-4000-8000-000000000001", name: "matrix", hostname: "matrix.example" },
  "client/heartbeat": {},
};

function allowed(access: Access, who: Who): boolean {
  switch (access) {
    case "public":
      return true;
    case "session":
    case "viewer":
      return who !== "anonymous";
    case "admin":
      return who === "admin";
    case "rpc":
      return true;
  }
}

let server: TestServer;
const tokens: Partial<Record<Who, string>> = {};

beforeAll(async () => {
  server = await startTestServer();
  tokens.admin = await login(server.url);
  await createUser(server.url, tokens.admin, { username: "matrix-viewer", password: "viewer-password", role: "viewer", allowed_groups: ["g1"] });
  tokens.viewer = await login(server.url, "matrix-viewer", "viewer-password");
});
afterAll(() => server.close());

function routeKeys(): string[] {
  return server.app.routes.map((r) => `${r.method === "WS" ? "GET" : r.method} ${r.path}`);
}

describe("the policy covers exactly the app's routes", () => {
  test("every route has an access entry and a sample request", () => {
    const missing = routeKeys().filter((k) => !(k in routeAccess));
    expect(missing).toEqual([]);
    expect(routeKeys().filter((k) => !(k in samples))).toEqual([]);
  });

  test("no stale entries name a route that does not exist", () => {
    const keys = new Set(routeKeys());
    expect(Object.keys(routeAccess).filter((k) => !keys.has(k))).toEqual([]);
  });
});

describe("REST matrix", () => {
  const cases = Object.entries(routeAccess)
    .filter(([key]) => key !== "GET /ws")
    .flatMap(([key, access]) => everyone.map((who) => ({ key, access, who })));

  test.each(cases)("$who → $key ($access)", async ({ key, access, who }) => {
    const [method, pattern] = key.split(" ") as [string, string];
    const sample = samples[key]!;
    const path = sample.path ?? pattern;
    // logout would end the shared session: use a fresh one for it.
    const token = who === "anonymous" ? undefined : key === "POST /api/auth/logout" ? await login(server.url, who === "admin" ? "admin" : "matrix-viewer", who === "admin" ? undefined : "viewer-password") : tokens[who];
    const res = await call(server.url, method, path, { ...(token ? { token } : {}), ...(sample.body !== undefined ? { body: sample.body } : {}) });
    if (allowed(access, who)) {
      if (access !== "public" && access !== "rpc") expect([401, 403]).not.toContain(res.status);
      else expect(res.status).not.toBe(403);
    } else {
      expect(res.status).toBe(who === "anonymous" ? 401 : 403);
      expect(res.body?.error?.code).toBe(who === "anonymous" ? "unauthorized" : "forbidden");
    }
    if (key === "POST /api/users" && res.status === 201) await call(server.url, "DELETE", "/api/users/matrix-new", { token: tokens.admin! });
    if (key === "POST /api/apps" && res.status === 201) await call(server.url, "DELETE", `/api/apps/${res.body.id}`, { token: tokens.admin! });
  });
});

describe("RPC matrix", () => {
  test("every registered RPC has a sample call", () => {
    expect(server.registry.entries().map(([k]) => k).filter((k) => !(k in rpcSamples))).toEqual([]);
  });

  const cases = Object.keys(rpcSamples).flatMap((call) => everyone.map((who) => ({ call, who })));

  test.each(cases)("$who → $call over /ws", async ({ call: name, who }) => {
    const handler = server.registry.entries().find(([k]) => k === name)?.[1];
    expect(handler).toBeDefined();
    const rpc = await RpcClient.connect(server.wsUrl);
    try {
      if (who !== "anonymous") {
        // A session of its own: rpc/auth_clear ends it.
        const token = await login(server.url, who === "admin" ? "admin" : "matrix-viewer", who === "admin" ? undefined : "viewer-password");
        const auth = await rpc.request("rpc", "auth_token", { token });
        expect(auth.name).toBe("response");
      }
      const [namespace, rpcName] = name.split("/") as [string, string];
      const reply = await rpc.request(namespace, rpcName, rpcSamples[name]);
      const code = reply.name === "error" ? reply.args.code : 200;
      if (handler!.access === "public") {
        expect([403, 404]).not.toContain(code);
      } else if (who === "anonymous") {
        expect(reply.args).toEqual({ code: 401, message: "Unauthorized" });
      } else if (handler!.roles && !handler!.roles.read.includes(who)) {
        expect(code).toBe(403);
      } else {
        expect(code).toBe(200);
      }
    } finally {
      rpc.close();
    }
  });

  test("rpc/query lists exactly the subsystems each role may use", async () => {
    for (const who of ["viewer", "admin"] as const) {
      const res = await call(server.url, "PUT", "/rpc/query", { token: tokens[who]!, body: { junk: "junk" } });
      expect(res.status).toBe(200);
      const expected: Record<string, string> = {};
      for (const [key, h] of server.registry.entries()) {
        if (!h.roles) continue;
        if (h.roles.write.includes(who)) expected[key] = "read/write";
        else if (h.roles.read.includes(who)) expected[key] = "read";
      }
      expect(res.body.args).toEqual(expected);
    }
  });
});

describe("default deny", () => {
  test("a route added without a policy entry is refused for everybody", async () => {
    const { createApp } = await import("../src/app.ts");
    const { silentLogger } = await import("../src/log.ts");
    const { app } = createApp(server.services, silentLogger, {
      tls: false,
      maxFrameBytes: 1024,
      trustedProxies: null,
      connections: { idleSeconds: 600, authTimeoutSeconds: 10, unidentifiedPerAddress: 64, maxConnections: 1000, maxSendBuffer: 1 << 20 },
    });
    const extended = app.get("/api/not-in-policy", () => "secret");
    for (const token of [undefined, tokens.viewer, tokens.admin]) {
      const res = await extended.handle(
        new Request("http://localhost/api/not-in-policy", { headers: token ? { authorization: `Bearer ${token}` } : {} }),
      );
      expect(res.status).toBe(403);
      expect(await res.json()).toEqual({ error: { code: "forbidden", message: "this route has no access policy" } });
    }
  });
});
