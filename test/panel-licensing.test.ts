/**
 * The Applications and License keys pages in a real browser (Debian's headless Chromium through
 * playwright-core) against a real server: an admin creates an application and cuts keys, clients
 * activate them over the public API and the open page follows live, an activation is removed,
 * a key disabled; a viewer sees masked keys and no write controls. No console errors or CSP
 * violations are allowed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { ADMIN_PASSWORD, call, createUser, eventually, login, startTestServer, type TestServer } from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage, ACTION_TIMEOUT_MS } from "./browser.ts";

setDefaultTimeout(30_000);

/**
 * Refusals that are part of the scenarios (the session probe before signing in, deleting an
 * application that has keys); Chromium logs each failed fetch as a console error.
 */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of (401|409) /;
const TOKEN = /^[A-Z0-9]{25}$/;

let server: TestServer;
let browser: Browser;
const contexts: BrowserContext[] = [];
const problems: string[] = [];

beforeAll(async () => {
  server = await startTestServer();
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

/**
 * A fresh browser context on the panel, recording console errors and CSP violations. With
 * `fakeClock` the page's timers run on Playwright's clock, so that a test can stop the periodic
 * refresh and see that what changes arrived through the live socket.
 */
async function openPanel(hash = "", options: { fakeClock?: boolean } = {}): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 }, permissions: ["clipboard-read", "clipboard-write"] });
  contexts.push(context);
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  await reportCspViolations(context);
  const page = await context.newPage();
  if (options.fakeClock) await page.clock.install();
  watchPage(page, problems, EXPECTED_REFUSAL);
  const response = await page.goto(`${server.url}/${hash}`);
  expect(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
  await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

/** The license table's row of a key (by CSS: while the drawer is open the table is inert). */
function keyRow(page: Page, token: string) {
  return page.locator(".listing tbody tr", { has: page.locator("code.token", { hasText: token }) });
}

/**
 * Waits until the focused element's accessible name (aria-label, else text) is `name`: a role
 * locator counts a closing dialog as gone before its close handler has moved the focus.
 */
async function focusMovesTo(page: Page, name: string): Promise<void> {
  let focused: string | null | undefined;
  await eventually(
    async () => {
      focused = await page.evaluate(() => {
        const active = document.activeElement;
        return active?.closest("dialog:not([open])") ? null : (active?.getAttribute("aria-label") ?? active?.textContent);
      });
      return focused === name;
    },
    { timeoutMs: 5000, what: () => `the focus to move to ${JSON.stringify(name)} (it is on ${JSON.stringify(focused)})` },
  );
}

/** What a licensed application sends: form fields, no session. */
async function activate(token: string, hwid: string, machine: string, user: string) {
  const res = await fetch(`${server.url}/api/activate`, { method: "POST", body: new URLSearchParams({ token, hwid, machine, user }) });
  return { status: res.status, body: (await res.json()) as { result: string; remainingActivations?: number } };
}

async function check(token: string, hwid: string): Promise<number> {
  const res = await fetch(`${server.url}/api/check?${new URLSearchParams({ token, hwid })}`);
  await res.body?.cancel();
  return res.status;
}

describe("licensing pages", () => {
  test("admin cuts keys, sees activations arrive live, frees a seat and disables a key", async () => {
    const page = await openPanel("#/applications", { fakeClock: true });
    const pushed: string[] = [];
    page.on("websocket", (socket) =>
      socket.on("framereceived", ({ payload }) => {
        const name = (JSON.parse(String(payload)) as { namespace?: string; name?: string }).name;
        if (name?.startsWith("licenses.")) pushed.push(name);
      }),
    );
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Applications" }).waitFor();
    expect(await nav(page).getByRole("link").allTextContents()).toEqual([
      "Dashboard",
      "Pre-shared keys",
      "Clients",
      "Hosts",
      "Certificates",
      "Applications",
      "License keys",
      "Users",
      "My certificates",
      "Audit log",
    ]);
    await page.getByText("No applications yet.").waitFor();

    await page.getByRole("button", { name: "Create application" }).click();
    const create = page.getByRole("dialog", { name: "Create application" });
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("name");
    await create.getByLabel("Name").fill("Acme Editor");
    await create.getByLabel("Support message").fill("Write to support@acme.test");
    await create.getByRole("button", { name: "Create application" }).click();
    await create.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("Application Acme Editor created.").waitFor();
    const appRow = page.getByRole("row").filter({ hasText: "Acme Editor" });
    await appRow.getByText("Write to support@acme.test").waitFor();
    await appRow.getByText("none", { exact: true }).waitFor();
    await page.screenshot({ path: "/tmp/licensing-apps.png" });

    await nav(page).getByRole("link", { name: "License keys" }).click();
    await page.getByRole("heading", { name: "License keys" }).waitFor();
    await page.getByText("No license keys yet.").waitFor();
    await page.locator(".live-live").waitFor();

    // Cut two keys with two seats each; the dialog then shows them with Copy buttons.
    await page.getByRole("button", { name: "Cut keys" }).click();
    const cut = page.getByRole("dialog", { name: "Cut license keys" });
    await cut.getByLabel("Application").selectOption({ label: "Acme Editor" });
    await cut.getByLabel("Activations per key").fill("2");
    await cut.getByLabel("Memo").fill("order 1234");
    await cut.getByLabel("Quantity").fill("2");
    await page.screenshot({ path: "/tmp/licensing-cut.png" });
    await cut.getByRole("button", { name: "Cut keys" }).click();
    const result = page.getByRole("dialog", { name: "2 keys cut for Acme Editor" });
    await result.waitFor();
    await cut.waitFor({ state: "detached" });
    const tokens = await result.locator("code.token").allTextContents();
    expect(tokens).toHaveLength(2);
    for (const token of tokens) expect(token).toMatch(TOKEN);
    const token = tokens[0]!;
    const copy = result.getByRole("button", { name: /^Copy key #\d+$/ }).first();
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toMatch(/^Copy key #\d+$/);
    await copy.click();
    await copy.getByText("Copied").waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(token);
    await page.screenshot({ path: "/tmp/licensing-cut-result.png" });
    await result.getByRole("button", { name: "Done" }).click();
    await result.waitFor({ state: "detached" });
    await focusMovesTo(page, "Cut keys");

    const row = keyRow(page, token);
    await row.getByText("order 1234").waitFor();
    await row.getByText("0 / 2").waitFor();
    await row.locator(".badge-enabled", { hasText: "enabled" }).waitFor();
    expect(await page.locator(".listing tbody tr").count()).toBe(2);
    const id = Number(/^#(\d+) · Acme Editor$/.exec((await row.locator("td.key .muted").textContent()) ?? "")?.[1]);
    expect(id).toBeGreaterThan(0);

    // From here on the page's timers stand still: whatever changes comes over the live socket.
    await page.clock.pauseAt(Date.now() + 1000);
    const first = await activate(token, "hw-alpha", "alpha", "ann");
    expect(first).toEqual({ status: 201, body: expect.objectContaining({ result: "ok", remainingActivations: 1 }) });
    await row.getByText("1 / 2").waitFor();
    await row.getByRole("button", { name: `Details of key #${id}` }).click();
    const drawer = page.getByRole("dialog", { name: `Key #${id}` });
    await drawer.getByRole("row").filter({ hasText: "alpha" }).filter({ hasText: "ann" }).waitFor();

    const second = await activate(token, "hw-beta", "beta", "bob");
    expect(second).toEqual({ status: 201, body: expect.objectContaining({ result: "ok", remainingActivations: 0 }) });
    await drawer.getByRole("row").filter({ hasText: "beta" }).filter({ hasText: "bob" }).waitFor();
    await drawer.getByText("Activated machines (2)").waitFor();
    await drawer.locator(".seats-full", { hasText: "2 / 2" }).waitFor();
    await row.locator(".seats-full", { hasText: "2 / 2" }).waitFor();
    expect(pushed.filter((name) => name === "licenses.activated")).toHaveLength(2);
    expect((await activate(token, "hw-gamma", "gamma", "gus")).status).toBe(410);
    await page.screenshot({ path: "/tmp/licensing-drawer.png" });

    // Removing an activation frees its seat, in the drawer, in the list and on the server.
    await drawer.getByRole("button", { name: "Remove the activation of alpha" }).click();
    const confirmRemove = page.getByRole("dialog", { name: "Remove alpha?" });
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await confirmRemove.getByRole("button", { name: "Remove activation" }).click();
    await confirmRemove.waitFor({ state: "detached" });
    await drawer.getByText("Activated machines (1)").waitFor();
    expect(await drawer.getByRole("row").filter({ hasText: "alpha" }).count()).toBe(0);
    await row.getByText("1 / 2").waitFor();
    const adminToken = await login(server.url);
    expect((await call(server.url, "GET", `/api/licenses/${id}`, { token: adminToken })).body).toMatchObject({
      activations_used: 1,
      remaining_activations: 1,
    });
    await page.keyboard.press("Escape");
    await drawer.waitFor({ state: "detached" });
    await focusMovesTo(page, `Details of key #${id}`);

    // Check counters are not pushed: the periodic refresh brings them.
    expect(await check(token, "hw-beta")).toBe(201);
    await page.clock.runFor(5000);
    await row.getByText("1 check", { exact: true }).waitFor();

    // Nobody at the keyboard for two minutes: the page loads nothing (every request would extend
    // the session) until the user is back.
    await page.clock.runFor(125_000);
    // Loads that the last "present" ticks started are still on the wire in real time; let them land
    // (the listing is busy while one runs) before the activation, or one could carry the new seat count.
    await page.locator(".listing:not([aria-busy])").waitFor();
    expect((await activate(token, "hw-gamma", "gamma", "gus")).status).toBe(201);
    await eventually(() => pushed.filter((name) => name === "licenses.activated").length >= 3, {
      what: "the third licenses.activated push",
    });
    // Part of what is tested, not a synchronisation: for half a second after the push nothing loads.
    await Bun.sleep(500);
    expect(pushed.filter((name) => name === "licenses.activated")).toHaveLength(3);
    expect(await page.locator(".listing[aria-busy]").count()).toBe(0);
    await row.getByText("1 / 2").waitFor();
    await page.getByRole("heading", { name: "License keys" }).click();
    await row.locator(".seats-full", { hasText: "2 / 2" }).waitFor();

    // A disabled key shows so, and clients' checks fail.
    await row.getByRole("button", { name: `Disable key #${id}` }).click();
    await row.locator(".badge-disabled", { hasText: "disabled" }).waitFor();
    await page.getByRole("status").getByText(`Key #${id} disabled.`).waitFor();
    await focusMovesTo(page, `Enable key #${id}`);
    expect(await check(token, "hw-beta")).toBe(404);
    await page.clock.resume();
    await page.screenshot({ path: "/tmp/licensing-keys.png" });

    // Filters: the disabled key only; a memo that matches nothing; the start of a key, in any case.
    await page.getByLabel("State").selectOption("false");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/#\/licenses\?enabled=false$/);
    await page.locator(".listing tbody tr").nth(1).waitFor({ state: "detached" });
    await row.waitFor();
    await page.getByLabel("Search").fill("no such memo");
    await page.getByLabel("Search").press("Enter");
    await page.getByText("No license keys match these filters.").waitFor();
    await page.getByLabel("State").selectOption("");
    await page.getByLabel("Search").fill(tokens[1]!.slice(0, 8).toLowerCase());
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/#\/licenses\?q=[a-z0-9]{8}$/);
    await keyRow(page, tokens[1]!).waitFor();
    expect(await page.locator(".listing tbody tr").count()).toBe(1);
    await page.getByRole("button", { name: "Clear" }).click();
    await page.locator(".listing tbody tr").nth(1).waitFor();

    // The other key goes after confirming; the application refuses deletion while it has keys.
    const other = keyRow(page, tokens[1]!);
    await other.getByRole("button", { name: /^Delete key #\d+$/ }).click();
    const confirmDelete = page.getByRole("dialog", { name: /^Delete key #\d+\?$/ });
    await confirmDelete.getByRole("button", { name: "Delete key" }).click();
    await confirmDelete.waitFor({ state: "detached" });
    await other.waitFor({ state: "detached" });

    await nav(page).getByRole("link", { name: "Applications" }).click();
    await page.getByRole("heading", { name: "Applications" }).waitFor();
    await appRow.getByRole("link", { name: "1 key" }).waitFor();
    await appRow.getByRole("button", { name: "Delete Acme Editor" }).click();
    const refuse = page.getByRole("dialog", { name: "Delete Acme Editor?" });
    await refuse.getByRole("button", { name: "Delete application" }).click();
    await refuse
      .getByRole("alert")
      .getByText(/^Application \d+ still has 1 license key; delete them first\.$/)
      .waitFor();
    await page.screenshot({ path: "/tmp/licensing-app-refused.png" });
    await refuse.getByRole("button", { name: "Cancel" }).click();
    await refuse.waitFor({ state: "detached" });

    await appRow.getByRole("button", { name: "Edit Acme Editor" }).click();
    const edit = page.getByRole("dialog", { name: "Edit Acme Editor" });
    await edit.getByLabel("Name").fill("Acme Writer");
    await edit.getByRole("button", { name: "Save changes" }).click();
    await edit.waitFor({ state: "detached" });
    await page.getByRole("row").filter({ hasText: "Acme Writer" }).getByRole("link", { name: "1 key" }).click();
    await page.waitForURL(/#\/licenses\?app=\d+$/);
    await row.getByText("Acme Writer").waitFor();
  });

  test("a viewer sees masked keys and no write controls", async () => {
    const token = await login(server.url);
    await createUser(server.url, token, { username: "vera", password: "vera-password-1", role: "viewer" });
    const app = (await call(server.url, "POST", "/api/apps", { token, body: { name: "Viewer Suite" } })).body as { id: number };
    const key = (await call(server.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: -1, memo: "for vera" } }))
      .body as { id: number; token: string };
    expect((await activate(key.token, "hw-v", "vmachine", "vic")).body.remainingActivations).toBe(-1);
    expect(
      (await call(server.url, "POST", "/api/licenses", { token, body: { app_id: app.id, memo: "lapsed", expires_at: "2020-01-01" } }))
        .status,
    ).toBe(201);

    const page = await openPanel("#/licenses");
    await signIn(page, "vera", "vera-password-1");
    await page.getByRole("heading", { name: "License keys" }).waitFor();
    expect(await nav(page).getByRole("link").allTextContents()).toEqual([
      "Dashboard",
      "Pre-shared keys",
      "Clients",
      "Hosts",
      "Certificates",
      "Applications",
      "License keys",
      "My certificates",
    ]);
    const row = page.getByRole("row").filter({ hasText: "for vera" });
    await row.getByText("1 / unlimited").waitFor();
    const shown = (await row.locator("code.token").textContent()) ?? "";
    expect(shown).toContain("•");
    expect(shown).not.toBe(key.token);
    expect(key.token.startsWith(shown.replaceAll("•", ""))).toBe(true);
    await page.getByRole("row").filter({ hasText: "lapsed" }).locator(".badge-expired", { hasText: "expired" }).waitFor();
    expect(await page.getByRole("button", { name: "Cut keys" }).count()).toBe(0);
    expect(await page.getByRole("button", { name: /^(Copy|Disable|Enable|Delete) key/ }).count()).toBe(0);
    await page.screenshot({ path: "/tmp/licensing-viewer.png" });

    await row.getByRole("button", { name: `Details of key #${key.id}` }).click();
    const drawer = page.getByRole("dialog", { name: `Key #${key.id}` });
    await drawer.getByRole("row").filter({ hasText: "vmachine" }).waitFor();
    // No write control: Close, and the range of the key's charts.
    expect(await drawer.getByRole("button").allTextContents()).toEqual(["Close", "24 hours", "7 days", "30 days"]);
    await drawer.getByRole("button", { name: "Close the details" }).click();
    await drawer.waitFor({ state: "detached" });
    await page.waitForURL(/#\/licenses$/);

    await nav(page).getByRole("link", { name: "Applications" }).click();
    await page.getByRole("heading", { name: "Applications" }).waitFor();
    await page.getByRole("row").filter({ hasText: "Viewer Suite" }).getByText("2 keys").waitFor();
    expect(await page.getByRole("button", { name: /Create application|^Edit |^Delete / }).count()).toBe(0);

    // The server agrees.
    const viewer = await login(server.url, "vera", "vera-password-1");
    expect((await call(server.url, "POST", "/api/licenses", { token: viewer, body: { app_id: app.id } })).status).toBe(403);
    expect((await call(server.url, "GET", `/api/licenses/${key.id}`, { token: viewer })).body.token).toBe(shown);
  });
});
