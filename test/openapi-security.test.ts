/**
 * The OpenAPI document says who may call each operation, as its route declares it: a route with
 * `access` needs the bearer token, a `public: true` one nothing, an `rpc: true` one a token or none.
 * Swagger UI then shows the lock on exactly the operations that need a token.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Browser } from "playwright-core";
import { declarationOf, type Declaration } from "../src/http/session.ts";
import { launchChromium } from "./browser.ts";
import { call, startTestServer, type TestServer } from "./support.ts";

setDefaultTimeout(90_000);

interface Operation {
  method: string;
  path: string;
  security: unknown;
  declared: Declaration | null;
}

/** What each declaration must show in the document, written out rather than read from session.ts. */
const EXPECTED_SECURITY: Record<Declaration, unknown> = {
  admin: [{ bearer: [] }],
  viewer: [{ bearer: [] }],
  session: [{ bearer: [] }],
  public: [],
  rpc: [{ bearer: [] }, {}],
};

let server: TestServer;
let document: { components: { securitySchemes: unknown }; paths: Record<string, Record<string, { security?: unknown }>> };
let operations: Operation[];

beforeAll(async () => {
  server = await startTestServer();
  document = (await call(server.url, "GET", "/openapi/json")).body;
  operations = Object.entries(document.paths).flatMap(([path, byMethod]) =>
    Object.entries(byMethod).map(([method, operation]) => {
      const routePath = path.replace(/\{([^}]+)\}/g, ":$1");
      const route = server.app.routes.find((r) => r.method.toLowerCase() === method && r.path === routePath);
      return { method: method.toUpperCase(), path, security: operation.security, declared: route ? declarationOf(route) : null };
    }),
  );
});
afterAll(() => server?.close());

describe("the OpenAPI document's security follows each route's access declaration", () => {
  test("the bearer scheme is declared once, as HTTP bearer", () => {
    expect(document.components.securitySchemes).toEqual({ bearer: { type: "http", scheme: "bearer" } });
  });

  test("every operation comes from a route that declares its access", () => {
    expect(operations.length).toBeGreaterThan(50);
    expect(operations.filter((o) => o.declared === null).map((o) => `${o.method} ${o.path}`)).toEqual([]);
  });

  test("every operation's security is what its declaration means", () => {
    const wrong = operations
      .filter((o) => o.declared !== null && !Bun.deepEquals(o.security, EXPECTED_SECURITY[o.declared]))
      .map((o) => `${o.method} ${o.path}: declares ${o.declared}, documents ${JSON.stringify(o.security)}`);
    expect(wrong).toEqual([]);
  });

  test("the calls clients make without a session are documented as public", () => {
    const publicOperations = operations.filter((o) => o.declared === "public").map((o) => `${o.method} ${o.path}`);
    for (const key of [
      "POST /api/activate",
      "GET /api/check",
      "POST /api/deactivate",
      "POST /api/auth/login",
      "POST /api/auth/scram/start",
      "GET /healthz",
      "GET /api/ca.pem",
      "GET /api/crl",
    ])
      expect(publicOperations).toContain(key);
    const byKey = new Map(operations.map((o) => [`${o.method} ${o.path}`, o.security]));
    expect(byKey.get("POST /api/activate")).toEqual([]);
    expect(byKey.get("GET /api/users")).toEqual([{ bearer: [] }]);
    expect(byKey.get("POST /api/keys")).toEqual([{ bearer: [] }]);
  });

  test("an operation documented as needing the token answers 401 without one", async () => {
    const wrong: string[] = [];
    for (const o of operations.filter((o) => Bun.deepEquals(o.security, [{ bearer: [] }]))) {
      const path = o.path.replace(/\{[^}]+\}/g, "x");
      const { status } = await call(server.url, o.method, path, o.method === "GET" || o.method === "DELETE" ? {} : { body: {} });
      if (status !== 401) wrong.push(`${o.method} ${o.path}: ${status}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe("Swagger UI", () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(() => browser?.close());

  test("shows a lock on the operations that need the token, and none on public ones", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/swagger`);
    await page.waitForSelector(".opblock-summary-path", { timeout: 60_000 });
    const locks = await page.$$eval(".opblock", (blocks) =>
      Object.fromEntries(
        blocks.map((block) => {
          const method = block.querySelector(".opblock-summary-method")?.textContent ?? "";
          const path = block.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? "";
          return [`${method} ${path}`, block.querySelector(".authorization__btn") !== null];
        }),
      ),
    );
    for (const key of ["POST /api/activate", "GET /api/check", "POST /api/auth/login", "GET /healthz", "GET /api/ca.pem", "GET /api/crl"])
      expect({ key, lock: locks[key] }).toEqual({ key, lock: false });
    for (const key of ["GET /api/users", "POST /api/keys", "GET /api/licenses/{id}", "POST /api/auth/logout"])
      expect({ key, lock: locks[key] }).toEqual({ key, lock: true });
    // Every operation (but the WebSocket, which Swagger UI does not show): a lock exactly where the document asks for security.
    const documented = Object.fromEntries(
      operations.filter((o) => o.method !== "WS").map((o) => [`${o.method} ${o.path}`, Array.isArray(o.security) && o.security.length > 0]),
    );
    const shown = Object.fromEntries(Object.keys(documented).map((key) => [key, locks[key]]));
    expect(shown).toEqual(documented);
    await context.close();
  });
});
