/** Swagger UI renders in a real browser from the embedded assets, under the strict CSP. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Browser } from "playwright-core";
import { launchChromium } from "./browser.ts";
import { startTestServer, type TestServer } from "./support.ts";

let server: TestServer;
let browser: Browser;

beforeAll(async () => {
  server = await startTestServer();
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
});

test("GET /swagger shows every documented operation, loading nothing from outside", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems: string[] = [];
  const outside: string[] = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("request", (r) => !r.url().startsWith(server.url) && outside.push(r.url()));
  page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
  await page.goto(`${server.url}/swagger`);
  await page.waitForSelector(".opblock-summary-path", { timeout: 20_000 });
  const paths = await page.$$eval(".opblock-summary-path", (els) => els.map((e) => e.getAttribute("data-path")));
  expect(paths).toContain("/api/auth/login");
  expect(paths).toContain("/api/users/{username}");
  expect(paths).toContain("/{namespace}/{name}");
  expect(outside).toEqual([]);
  expect(problems).toEqual([]);
  await context.close();
});
