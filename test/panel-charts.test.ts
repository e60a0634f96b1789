/**
 * The charts in a real browser (Debian's headless Chromium through playwright-core) against a real
 * server: after real checks, activations, a registration over the WebSocket, failed sign-ins and a
 * host report over mutual TLS, the dashboard draws its charts and says their totals in words; the
 * range switches with the keyboard; a live activation and a theme change redraw them; a license
 * key's drawer and the Applications page show the key's and the application's use over time; a
 * viewer sees her groups only; on a 390 px phone nothing scrolls sideways. No console errors or
 * CSP violations are allowed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { launchChromium, reportCspViolations, signIn, watchPage } from "./browser.ts";
import { ADMIN_PASSWORD, call, createUser, eventually, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

setDefaultTimeout(60_000);

/** The session probe before signing in, and the wrong passwords of the setup, are refused on purpose. */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of 401 /;

let server: TestServer;
let browser: Browser;
let socket: RpcClient;
const contexts: BrowserContext[] = [];
const problems: string[] = [];
const keys: { id: number; token: string }[] = [];

async function activate(token: string, hwid: string): Promise<number> {
  const res = await fetch(`${server.url}/api/activate`, { method: "POST", body: new URLSearchParams({ token, hwid }) });
  await res.body?.cancel();
  return res.status;
}

async function check(token: string, hwid: string): Promise<number> {
  const res = await fetch(`${server.url}/api/check?${new URLSearchParams({ token, hwid })}`);
  await res.body?.cancel();
  return res.status;
}

beforeAll(async () => {
  server = await startTestServer();
  browser = await launchChromium();
  const admin = await login(server.url);
  await createUser(server.url, admin, { username: "vera", password: "vera-password", role: "viewer", allowed_groups: ["g1"] });
  const app = (await call(server.url, "POST", "/api/apps", { token: admin, body: { name: "Charted" } })).body.id;
  for (const activations of [2, -1]) {
    const key = (await call(server.url, "POST", "/api/licenses", { token: admin, body: { app_id: app, activations } })).body;
    keys.push({ id: key.id, token: key.token });
  }
  const [seats, unlimited] = keys as [{ id: number; token: string }, { id: number; token: string }];
  // The first key: 2 activations pass, 1 fails (no seat left); 5 checks pass, 1 fails (a machine it does not know).
  for (const hwid of ["m1", "m2"]) expect(await activate(seats.token, hwid)).toBe(201);
  expect(await activate(seats.token, "m3")).toBe(410);
  for (let i = 0; i < 5; i++) expect(await check(seats.token, "m1")).toBe(201);
  expect(await check(seats.token, "ghost")).toBe(404);
  // The second: 1 activation, 3 checks.
  expect(await activate(unlimited.token, "d1")).toBe(201);
  for (let i = 0; i < 3; i++) expect(await check(unlimited.token, "d1")).toBe(201);
  // Two wrong passwords.
  for (let i = 0; i < 2; i++)
    expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "mallory", password: "wrong-password" } })).status).toBe(
      401,
    );
  // A client registers (no key needed) and stays online.
  socket = await RpcClient.connect(server.wsUrl);
  const registered = await socket.request("client", "register", {
    uuid: "00000000-0000-4000-8000-0000000000c1",
    name: "charted",
    hostname: "charted.example",
  });
  expect(registered.name).toBe("response");
  // A host reports over mutual TLS with its bundle.
  await server.services.hosts.registerHost({ name: "test", address: null }, "web-01.example", null);
  const bundle = await server.services.hosts.hostBundle({ name: "test", address: null }, "web-01.example");
  const report = await fetch(`https://localhost:${server.mtlsPort}/api/hosts/web-01.example/client`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ interfaces: [{ name: "eth0", addresses: ["192.0.2.1"] }], port: 8080, version: "1.0.0" }),
    tls: { ca: bundle.ca, cert: bundle.certificate, key: bundle.key },
  });
  expect(report.status).toBe(200);
});

afterAll(async () => {
  socket?.close();
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

async function openPanel(hash: string, user: [string, string], width = 1366): Promise<Page> {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  contexts.push(context);
  context.setDefaultTimeout(10_000);
  await reportCspViolations(context);
  const page = await context.newPage();
  watchPage(page, problems, EXPECTED_REFUSAL);
  await page.goto(`${server.url}/${hash}`);
  await signIn(page, ...user);
  return page;
}

/** A chart, by its heading, and the sentence that says what it shows. */
function chart(scope: Page | ReturnType<Page["getByRole"]>, name: string) {
  return scope.getByRole("region", { name, exact: true });
}

async function says(scope: Page | ReturnType<Page["getByRole"]>, name: string, sentence: string): Promise<void> {
  await chart(scope, name).getByText(sentence, { exact: true }).waitFor();
}

async function focusedName(page: Page): Promise<string | null | undefined> {
  return page.evaluate(() => document.activeElement?.textContent);
}

async function pressed(page: Page, group: string): Promise<string[]> {
  return page.getByRole("group", { name: group }).locator('button[aria-pressed="true"]').allTextContents();
}

/** The colour of a chart's first series, as its legend marker shows it (the plot draws with the same). */
async function seriesColor(page: Page, name: string): Promise<string> {
  return chart(page, name)
    .locator(".u-legend .u-series")
    .nth(1)
    .locator(".u-marker")
    .evaluate((marker) => getComputedStyle(marker).borderColor);
}

describe("charts", () => {
  test("the dashboard draws what happened, says it in words, and switches ranges with the keyboard", async () => {
    const page = await openPanel("", ["admin", ADMIN_PASSWORD]);
    await page.getByRole("heading", { name: "Activity over time" }).waitFor();
    await says(page, "License checks", "9 license checks, 1 failed in the last 24 hours.");
    await says(page, "Activations", "4 activations, 1 failed in the last 24 hours.");
    await says(page, "Client registrations", "1 registration, 0 refused in the last 24 hours.");
    await says(page, "Failed sign-ins", "2 failed sign-ins and 0 throttled in the last 24 hours.");
    await says(page, "Clients online", "At most 1 client online at once in the last 24 hours.");
    await says(page, "Host reports", "1 host report in the last 24 hours.");
    // Six plots, drawn: each canvas spans its chart's width.
    const canvases = page.locator(".activity-charts .chart-plot canvas");
    expect(await canvases.count()).toBe(6);
    for (const box of await canvases.evaluateAll((all) =>
      all.map((c) => [c.getBoundingClientRect().width, c.closest(".chart")!.clientWidth]),
    ))
      expect(box[0]!).toBeGreaterThan(box[1]! * 0.8);
    // The last bucket (this hour) holds the checks: the legend shows it when the pointer is over it.
    const checksPlot = chart(page, "License checks").locator(".u-over");
    await checksPlot.scrollIntoViewIfNeeded();
    const over = (await checksPlot.boundingBox())!;
    await checksPlot.hover({ position: { x: over.width - 2, y: over.height / 2 } });
    const legend = chart(page, "License checks").locator(".u-legend .u-series .u-value");
    const series = (await call(server.url, "GET", "/api/stats", { token: await login(server.url) })).body.series;
    const shown = `${series.checks_ok.at(-1)} passed, ${series.checks_failed.at(-1)} failed`;
    let legendText = "";
    await eventually(
      async () => {
        legendText = `${await legend.nth(1).textContent()} passed, ${await legend.nth(2).textContent()} failed`;
        return legendText === shown;
      },
      { what: () => `the legend to show the last hour's ${shown} (it shows ${legendText})` },
    );
    await page.screenshot({ path: "/tmp/charts-dashboard.png", fullPage: true });

    // The range switch: Tab to the next range, Enter or Space to choose it.
    const range = "Time range of the charts";
    expect(await pressed(page, range)).toEqual(["24 hours"]);
    await page.getByRole("group", { name: range }).getByRole("button", { name: "24 hours" }).focus();
    await page.keyboard.press("Tab");
    expect(await focusedName(page)).toBe("7 days");
    await page.keyboard.press("Enter");
    await says(page, "License checks", "9 license checks, 1 failed in the last 7 days.");
    expect(await pressed(page, range)).toEqual(["7 days"]);
    expect(new URL(page.url()).hash).toBe("#/dashboard?range=7d");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Space");
    await says(page, "Host reports", "1 host report in the last 30 days.");
    expect(await pressed(page, range)).toEqual(["30 days"]);
    // A reload keeps the range.
    await page.reload();
    await says(page, "Activations", "4 activations, 1 failed in the last 30 days.");

    // An activation is pushed to the panel: the charts follow within seconds.
    expect(await activate(keys[0]!.token, "m1")).toBe(201);
    await chart(page, "Activations").getByText("5 activations, 1 failed in the last 30 days.").waitFor({ timeout: 15_000 });
  });

  test("the charts are drawn in the theme's colours, again when the theme changes", async () => {
    const page = await openPanel("#/dashboard", ["admin", ADMIN_PASSWORD]);
    await says(page, "License checks", "9 license checks, 1 failed in the last 24 hours.");
    // The theme's accent as a computed colour (rgb(…)), as the legend marker reports its own.
    const accent = () =>
      page.evaluate(() => {
        const probe = document.createElement("span");
        probe.style.color = getComputedStyle(document.documentElement).getPropertyValue("--accent");
        document.body.append(probe);
        const color = getComputedStyle(probe).color;
        probe.remove();
        return color;
      });
    const light = await accent();
    expect(await seriesColor(page, "License checks")).toBe(light);
    await page.evaluate(() => {
      document.documentElement.dataset.theme = "dark";
      document.dispatchEvent(new Event("themechange"));
    });
    const dark = await accent();
    expect(dark).not.toBe(light);
    await eventually(async () => (await seriesColor(page, "License checks")) === dark, {
      what: "the checks chart to be drawn in the dark theme's accent",
    });
    await page.screenshot({ path: "/tmp/charts-dark.png", fullPage: true });
  });

  test("a license key's drawer shows its checks and activations over time", async () => {
    const [seats, unlimited] = keys as [{ id: number; token: string }, { id: number; token: string }];
    const page = await openPanel(`#/licenses?key=${unlimited.id}`, ["admin", ADMIN_PASSWORD]);
    const drawer = page.getByRole("dialog", { name: `Key #${unlimited.id}` });
    await says(drawer, "Checks", "3 checks, 0 failed in the last 7 days.");
    await says(drawer, "Activations", "1 activation, 0 failed in the last 7 days.");
    expect(await drawer.locator(".chart-plot canvas").count()).toBe(2);
    const range = "Time range of use over time";
    await drawer.getByRole("group", { name: range }).getByRole("button", { name: "24 hours" }).focus();
    await page.keyboard.press("Enter");
    await says(drawer, "Checks", "3 checks, 0 failed in the last 24 hours.");
    expect(await pressed(page, range)).toEqual(["24 hours"]);
    await page.screenshot({ path: "/tmp/charts-drawer.png" });

    // Another key's drawer: its own counts.
    await drawer.getByRole("button", { name: "Close the details" }).click();
    await page.getByRole("button", { name: `Details of key #${seats.id}` }).click();
    const other = page.getByRole("dialog", { name: `Key #${seats.id}` });
    await says(other, "Checks", "6 checks, 1 failed in the last 7 days.");
    await says(other, "Activations", "4 activations, 1 failed in the last 7 days.");
  });

  test("the Applications page shows the use of all the keys of the application chosen", async () => {
    const page = await openPanel("#/applications", ["admin", ADMIN_PASSWORD]);
    await page.getByRole("heading", { name: "Use over time" }).waitFor();
    expect(await page.getByLabel("Application", { exact: true }).inputValue()).toBe("1");
    await says(page, "Checks", "9 checks, 1 failed in the last 7 days.");
    await says(page, "Activations", "5 activations, 1 failed in the last 7 days.");
  });

  test("a viewer sees the clients and hosts of her groups, and no sign-ins", async () => {
    const page = await openPanel("", ["vera", "vera-password"]);
    await says(page, "License checks", "9 license checks, 1 failed in the last 24 hours.");
    await says(page, "Client registrations", "0 registrations, 0 refused in the last 24 hours in your groups.");
    await says(page, "Host reports", "0 host reports in the last 24 hours in your groups.");
    expect(await page.getByRole("heading", { name: "Failed sign-ins" }).count()).toBe(0);
  });

  test("on a 390 px phone the charts follow the screen's width without sideways scrolling", async () => {
    const page = await openPanel("", ["admin", ADMIN_PASSWORD]);
    await says(page, "Host reports", "1 host report in the last 24 hours.");
    const widest = () =>
      page.locator(".activity-charts canvas").evaluateAll((all) => Math.max(...all.map((c) => c.getBoundingClientRect().right)));
    expect(await widest()).toBeGreaterThan(390);
    await page.setViewportSize({ width: 390, height: 800 });
    await eventually(async () => (await widest()) <= 390, { what: "the charts to shrink to a 390 px screen" });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: "/tmp/charts-390.png", fullPage: true });

    // Opened on the phone, too.
    const phone = await openPanel("#/dashboard?range=30d", ["admin", ADMIN_PASSWORD], 390);
    await says(phone, "License checks", "9 license checks, 1 failed in the last 30 days.");
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    for (const right of await phone
      .locator(".activity-charts canvas")
      .evaluateAll((all) => all.map((c) => c.getBoundingClientRect().right)))
      expect(right).toBeLessThanOrEqual(390);
  });
});
