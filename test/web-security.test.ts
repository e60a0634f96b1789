/** The panel's cookie, CSRF and Origin rules, and the response headers, over HTTP and HTTPS. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ADMIN_PASSWORD, call, RpcClient, startTestServer, tempDir, type TestServer } from "./support.ts";

async function cookieLogin(base: string, init: RequestInit = {}) {
  const res = await fetch(`${base}/api/auth/login`, {
    ...init,
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password: ADMIN_PASSWORD, cookie: true }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { token: string; csrf_token: string };
  const setCookie = res.headers.get("set-cookie")!;
  return { body, setCookie, cookie: setCookie.split(";")[0]! };
}

describe("over plain HTTP", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server.close());

  test("login with cookie:true sets an HttpOnly SameSite=Strict cookie and returns a CSRF token", async () => {
    const { body, setCookie } = await cookieLogin(server.url);
    expect(setCookie).toMatch(/^latchkey_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=86400$/);
    expect(body.csrf_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  test("a cookie login keeps the bearer token out of the body", async () => {
    const { body } = await cookieLogin(server.url);
    expect(body.token).toBeUndefined();
    expect(Object.keys(body).sort()).toEqual(["csrf_token", "expires_in", "role"]);
  });

  test("a WebSocket upgrade with a stale session cookie is refused, not made anonymous", async () => {
    await expect(RpcClient.connect(server.wsUrl, { cookie: "latchkey_session=stale-or-forged" })).rejects.toThrow();
    const res = await fetch(server.url + "/ws", {
      headers: {
        cookie: "latchkey_session=stale",
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    expect(res.status).toBe(401);
  });

  test("a login without cookie:true sets no cookie", async () => {
    const res = await call(server.url, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } });
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(res.body.csrf_token).toBeUndefined();
  });

  test("the cookie authenticates reads; writes need the CSRF header and this Origin", async () => {
    const { body, cookie } = await cookieLogin(server.url);
    const session = await call(server.url, "GET", "/api/auth/session", { headers: { cookie } });
    expect(session.status).toBe(200);
    expect(session.body).toMatchObject({ username: "admin", role: "admin", csrf_token: body.csrf_token });

    const user = { username: "csrf-target", password: "a fine password" };
    const cases: [string, Record<string, string>, number][] = [
      ["no CSRF header", { cookie }, 403],
      ["a wrong CSRF header", { cookie, "x-csrf-token": "x".repeat(43) }, 403],
      ["a foreign Origin", { cookie, "x-csrf-token": body.csrf_token, origin: "https://evil.example" }, 403],
      ["the CSRF header and no Origin", { cookie, "x-csrf-token": body.csrf_token }, 201],
    ];
    for (const [what, headers, status] of cases) {
      const res = await call(server.url, "POST", "/api/users", { headers, body: user });
      expect(`${what}: ${res.status}`).toBe(`${what}: ${status}`);
      if (status === 403) expect(res.body.error.message).toContain("cross-site request refused");
    }
    const sameOrigin = await call(server.url, "DELETE", "/api/users/csrf-target", {
      headers: { cookie, "x-csrf-token": body.csrf_token, origin: server.url },
    });
    expect(sameOrigin.status).toBe(204);
    // The REST mirror is a write too.
    const mirror = await call(server.url, "PUT", "/rpc/query", { headers: { cookie }, rawBody: "{}" });
    expect(mirror.status).toBe(403);
  });

  test("logout clears the cookie and ends the session", async () => {
    const { body, cookie } = await cookieLogin(server.url);
    const out = await call(server.url, "POST", "/api/auth/logout", { headers: { cookie, "x-csrf-token": body.csrf_token } });
    expect(out.status).toBe(200);
    expect(out.headers.get("set-cookie")).toStartWith("latchkey_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    expect((await call(server.url, "GET", "/api/auth/session", { headers: { cookie } })).status).toBe(401);
  });

  test("a WebSocket from another origin is refused; from this origin the cookie signs it in", async () => {
    const { cookie } = await cookieLogin(server.url);
    await expect(RpcClient.connect(server.wsUrl, { origin: "https://evil.example", cookie })).rejects.toThrow();
    const rpc = await RpcClient.connect(server.wsUrl, { origin: server.url, cookie });
    const reply = await rpc.request("rpc", "query", {});
    expect(reply.name).toBe("response");
    expect(reply.args["latchkey/users"]).toBe("read/write");
    rpc.close();
  });

  test("headers: CSP, nosniff, Referrer-Policy, frame denial; no HSTS over HTTP", async () => {
    // /api/check is served by Bun's router, outside Elysia's hooks (check-route.ts): same headers.
    for (const path of ["/", "/healthz", "/api/users", "/nope", "/api/check?token=NOSUCHKEY&hwid=h", "/api/check?hwid=h"]) {
      const res = await fetch(server.url + path);
      expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
      expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      expect(res.headers.get("strict-transport-security")).toBeNull();
    }
  });
});

describe("over HTTPS (--tls-cert/--tls-key)", () => {
  let server: TestServer;
  let dir: { path: string; remove(): void };
  beforeAll(async () => {
    dir = tempDir();
    const key = join(dir.path, "key.pem");
    const cert = join(dir.path, "cert.pem");
    const made = Bun.spawnSync([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]);
    expect(made.exitCode).toBe(0);
    server = await startTestServer({ flags: ["--tls-cert", cert, "--tls-key", key] });
  });
  afterAll(async () => {
    await server.close();
    dir.remove();
  });

  test("serves HTTPS with HSTS and a __Host- Secure cookie", async () => {
    expect(server.url).toStartWith("https://");
    const tls = { tls: { rejectUnauthorized: false } } as RequestInit;
    const health = await fetch(`${server.url}/healthz`, tls);
    expect(health.status).toBe(200);
    expect(health.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");
    const check = await fetch(`${server.url}/api/check?token=NOSUCHKEY&hwid=h`, tls);
    expect(check.status).toBe(404);
    expect(check.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");
    const { setCookie } = await cookieLogin(server.url, tls);
    expect(setCookie).toMatch(/^__Host-latchkey_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=86400; Secure$/);
  });
});
