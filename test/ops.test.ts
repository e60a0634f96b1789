import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, startTestServer, TEST_BACKEND, type TestServer } from "./support.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

describe("operations endpoints", () => {
  test("GET /healthz reports the database", async () => {
    const res = await call(server.url, "GET", "/healthz");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: "ok", database: "ok", backend: TEST_BACKEND, version: "dev" });
  });

  test("GET /metrics is Prometheus text and counts requests", async () => {
    await call(server.url, "GET", "/healthz");
    const res = await call(server.url, "GET", "/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
    expect(res.text).toMatch(/^latchkey_http_requests_total\{method="GET",route="\/healthz",status="200"\} [1-9]\d*$/m);
    expect(res.text).toContain("# TYPE latchkey_ws_connections gauge");
  });

  test("every response carries the security headers", async () => {
    const res = await call(server.url, "GET", "/healthz");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'self'");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("strict-transport-security")).toBeNull();
  });

  test("unknown routes are a JSON 404", async () => {
    const res = await call(server.url, "GET", "/nope");
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { code: "not_found", message: "no such route" } });
  });
});
