/**
 * The admin panel as people use it, audited in a real browser (Debian's headless Chromium through
 * playwright-core): every page and its main dialogs pass axe-core with no serious or critical
 * violation, in the light and the dark colour scheme, with rows in every table; and an admin does
 * the main actions with the keyboard alone (sign in, every page through the navigation, a create
 * dialog, Escape back to the opener, row actions, sign out).
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { type Browser, type BrowserContext, type Locator, type Page } from "playwright-core";
import { ADMIN_PASSWORD, call, createUser, eventually, login, ROOT, RpcClient, startTestServer, type TestServer } from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage } from "./browser.ts";

setDefaultTimeout(120_000);

const AXE = join(ROOT, "node_modules/axe-core/axe.min.js");
/** The session probe before signing in; Chromium logs each refused fetch as a console error. */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of 401 /;
const HOST = "web-01.example.com";
const APP = "Acme Editor";
const CLIENT = "reception-pc";

let server: TestServer;
let browser: Browser;
let admin: string;
let enrollmentKey: string;
let licenseId: number;
const rpcClients: RpcClient[] = [];
const contexts: BrowserContext[] = [];
const problems: string[] = [];

/**
 * Rows for every table: a viewer, keys (one bound to an online client), a host with a certificate,
 * a user certificate, licenses in use.
 */
async function seed(): Promise<void> {
  const post = async (path: string, body: unknown) => {
    const reply = await call(server.url, "POST", path, { token: admin, body });
    if (reply.status !== 201) throw new Error(`POST ${path}: ${reply.status} ${reply.text}`);
    return reply.body;
  };
  await createUser(server.url, admin, { username: "dora", password: "dora-password-1", role: "viewer", allowed_groups: ["berlin"] });
  const keys = (await post("/api/keys", { quantity: 3, label: "Berlin office", group: "berlin" })).items as { key: string }[];
  enrollmentKey = keys[0]!.key;
  // With the setting on, the client is bound to its key (active, with a Reset action).
  expect((await call(server.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: true } })).status).toBe(200);
  const client = await RpcClient.connect(server.wsUrl);
  rpcClients.push(client);
  const registered = await client.request("client", "register", {
    uuid: randomUUID(),
    name: CLIENT,
    hostname: "reception-pc.example",
    version: "1.2.3",
    os: "linux",
    auth_key: keys[1]!.key,
  });
  if (registered.name !== "response") throw new Error(`client/register: ${JSON.stringify(registered)}`);
  await post("/api/hosts", { hostname: HOST, group: "berlin" });
  await post(`/api/hosts/${HOST}/bundle`, {});
  await post("/api/users/admin/certificates/issue", { nickname: "laptop", email: "admin@example.com" });
  const app = await post("/api/apps", { name: APP, support_message: "Write to support@acme.example" });
  const license = await post("/api/licenses", { app_id: app.id, activations: 2, memo: "order 1234" });
  licenseId = license.id;
  await post("/api/licenses", { app_id: app.id, activations: -1, memo: "site license" });
  const activated = await fetch(`${server.url}/api/activate`, {
    method: "POST",
    body: new URLSearchParams({ token: license.token, hwid: "hw-alpha", machine: "alpha", user: "ann" }),
  });
  if (activated.status !== 201) throw new Error(`activate: ${activated.status} ${await activated.text()}`);
  await (await fetch(`${server.url}/api/check?${new URLSearchParams({ token: license.token, hwid: "hw-alpha" })}`)).body?.cancel();
}

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  await seed();
  browser = await launchChromium();
});

afterAll(async () => {
  for (const client of rpcClients) client.close();
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

/** A fresh browser context on the panel in a colour scheme, recording console errors. */
async function openPanel(colorScheme: "light" | "dark"): Promise<Page> {
  // axe is injected as a script of the page, which the panel's CSP (script-src 'self') would refuse.
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, colorScheme, bypassCSP: true });
  contexts.push(context);
  context.setDefaultTimeout(10_000);
  await reportCspViolations(context);
  const page = await context.newPage();
  watchPage(page, problems, EXPECTED_REFUSAL);
  await page.goto(server.url);
  await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  targets: string[];
}

/**
 * Runs axe on the whole document and returns its serious and critical violations, one line each:
 * where, the rule, its impact, what it asks, and the selectors of the offending elements.
 */
async function audit(page: Page, where: string): Promise<string[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: AXE });
  // Let transitions and live refreshes settle so that axe sees the final colours.
  await page.waitForTimeout(250);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(context: Document, options: object): Promise<{ violations: any[] }> } }).axe;
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v): Violation => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n: any) => (n.target as string[]).join(" ")),
    }));
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => {
      const shown = v.targets.slice(0, 6).join(" | ");
      const more = v.targets.length > 6 ? ` (and ${v.targets.length - 6} more)` : "";
      return `${where}: ${v.id} (${v.impact}) ${v.help} → ${shown}${more}`;
    });
}

/** Clicks `opener` and waits for the dialog named `name`. */
async function opens(page: Page, opener: Locator, name: string | RegExp): Promise<Locator> {
  await opener.click();
  const dialog = page.getByRole("dialog", { name });
  await dialog.waitFor();
  return dialog;
}

/** Escape closes the topmost dialog. */
async function escape(page: Page, dialog: Locator): Promise<void> {
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
}

/** A table row by CSS (while a modal dialog is open the table is inert to role locators). */
function row(page: Page, text: string): Locator {
  return page.locator(".listing tbody tr", { hasText: text });
}

/**
 * The dialogs worth auditing on each page: each scene opens one (or a dialog over another),
 * audits what is open at each step, and closes everything it opened.
 */
type Scene = (page: Page, check: (what: string) => Promise<void>) => Promise<void>;

function simple(what: string, opener: (page: Page) => Locator, name: string | RegExp): Scene {
  return async (page, check) => {
    const dialog = await opens(page, opener(page), name);
    await check(what);
    await escape(page, dialog);
  };
}

/** The scenes of each page, by page id (made once the data they name exists). */
const scenes = (): Record<string, Scene[]> => ({
  dashboard: [],
  keys: [
    simple("Generate keys dialog", (p) => p.getByRole("button", { name: "Generate keys" }), "Generate keys"),
    simple("revoke confirmation", (p) => p.getByRole("button", { name: `Revoke key ${enrollmentKey}` }), `Revoke key ${enrollmentKey}?`),
  ],
  clients: [simple("delete confirmation", (p) => p.getByRole("button", { name: `Delete client ${CLIENT}` }), `Delete client ${CLIENT}?`)],
  hosts: [
    simple("Register host dialog", (p) => p.getByRole("button", { name: "Register host" }), "Register host"),
    simple("remove confirmation", (p) => p.getByRole("button", { name: `Remove ${HOST}` }), `Remove host ${HOST}?`),
    async (page, check) => {
      const ask = await opens(page, page.getByRole("button", { name: `Download bundle for ${HOST}` }), `Download a bundle for ${HOST}?`);
      await check("bundle confirmation");
      await ask.getByRole("button", { name: "Issue bundle" }).click();
      const bundle = page.getByRole("dialog", { name: `Bundle for ${HOST}` });
      await bundle.waitFor();
      await check("issued bundle");
      await escape(page, bundle);
    },
  ],
  certificates: [
    simple(
      "revoke dialog",
      (p) =>
        row(p, HOST)
          .getByRole("button", { name: /^Revoke certificate / })
          .first(),
      /^Revoke certificate /,
    ),
  ],
  applications: [
    simple("Create application dialog", (p) => p.getByRole("button", { name: "Create application" }), "Create application"),
    simple("edit dialog", (p) => p.getByRole("button", { name: `Edit ${APP}` }), `Edit ${APP}`),
    simple("delete confirmation", (p) => p.getByRole("button", { name: `Delete ${APP}` }), `Delete ${APP}?`),
  ],
  licenses: [
    simple("Cut keys dialog", (p) => p.getByRole("button", { name: "Cut keys" }), "Cut license keys"),
    async (page, check) => {
      const drawer = await opens(page, page.getByRole("button", { name: `Details of key #${licenseId}` }), `Key #${licenseId}`);
      await drawer.getByRole("row").filter({ hasText: "alpha" }).waitFor();
      await check("details drawer");
      const confirm = await opens(page, drawer.getByRole("button", { name: "Remove the activation of alpha" }), "Remove alpha?");
      await check("remove-activation confirmation over the drawer");
      await escape(page, confirm);
      await escape(page, drawer);
    },
  ],
  users: [
    simple("Create user dialog", (p) => p.getByRole("button", { name: "Create user" }), "Create user"),
    simple("edit dialog", (p) => p.getByRole("button", { name: "Edit dora" }), "Edit dora"),
    simple("reset-password dialog", (p) => p.getByRole("button", { name: "Reset password of dora" }), "Reset the password of dora"),
    simple("delete confirmation", (p) => p.getByRole("button", { name: "Delete dora" }), "Delete dora?"),
  ],
  "my-certificates": [
    simple("Register certificate dialog", (p) => p.getByRole("button", { name: "Register certificate" }), "Register a certificate"),
    simple("Issue certificate dialog", (p) => p.getByRole("button", { name: "Issue certificate" }), "Issue a certificate"),
    simple("revoke confirmation", (p) => p.getByRole("button", { name: /^Revoke / }).first(), /^Revoke /),
  ],
  audit: [],
});

/** What shows that each page has loaded its rows. */
const loaded: Record<string, (page: Page) => Locator> = {
  dashboard: (p) => p.locator(".card").first(),
  keys: (p) => p.locator(".listing tbody tr").first(),
  clients: (p) => row(p, CLIENT),
  hosts: (p) => row(p, HOST),
  certificates: (p) => row(p, HOST).first(),
  applications: (p) => p.getByRole("row").filter({ hasText: APP }),
  licenses: (p) => row(p, "order 1234"),
  users: (p) => p.getByRole("row").filter({ hasText: "dora" }),
  "my-certificates": (p) => p.locator("tbody tr").first(),
  audit: (p) => p.locator("tbody tr").first(),
};

describe("accessibility audit (axe-core: no serious or critical violations)", () => {
  for (const scheme of ["light", "dark"] as const) {
    test(`every page and its main dialogs, ${scheme} colour scheme`, async () => {
      const page = await openPanel(scheme);
      const found: string[] = [];
      const check = async (what: string) => void found.push(...(await audit(page, `${scheme} · ${what}`)));
      // The panel follows the system's scheme unless told otherwise: the dark run must audit dark colours.
      expect(await page.evaluate(() => getComputedStyle(document.documentElement).colorScheme)).toBe(scheme);
      await check("sign-in page");
      await signIn(page, "admin", ADMIN_PASSWORD);

      const ids = await nav(page)
        .getByRole("link")
        .evaluateAll((links) => links.map((a) => a.getAttribute("data-page") ?? ""));
      const byPage = scenes();
      expect(ids.toSorted()).toEqual(Object.keys(byPage).toSorted());
      for (const id of ids) {
        const link = nav(page).locator(`a[data-page="${id}"]`);
        const title = (await link.textContent()) ?? id;
        await link.click();
        await page.getByRole("heading", { level: 1, name: title }).waitFor();
        await loaded[id]!(page).waitFor();
        await check(title);
        for (const scene of byPage[id]!) await scene(page, (what) => check(`${title} · ${what}`));
      }
      if (found.length > 0) throw new Error(`${found.length} serious or critical accessibility violations:\n${found.join("\n")}`);
    });
  }
});

/** The name of the focused element (aria-label, else its label, else its text), or null on the body. */
function focusedName(page: Page): Promise<string | null> {
  return page.evaluate(() => {
    const active = document.activeElement;
    if (!active || active === document.body) return null;
    const label = "labels" in active ? (active.labels as NodeListOf<HTMLLabelElement> | null)?.[0] : undefined;
    return active.getAttribute("aria-label") ?? label?.textContent?.trim() ?? active.textContent?.trim() ?? null;
  });
}

/** Presses Tab (or Shift+Tab) until the focus is on `name`; fails if it never gets there. */
async function tabTo(page: Page, name: string | RegExp, { back = false, max = 80 } = {}): Promise<void> {
  const seen: (string | null)[] = [];
  for (let i = 0; i < max; i++) {
    const current = await focusedName(page);
    if (current !== null && (typeof name === "string" ? current === name : name.test(current))) return;
    seen.push(current);
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
  }
  throw new Error(`${back ? "Shift+Tab" : "Tab"} never reached ${String(name)}; it went through: ${seen.join(" → ")}`);
}

async function focusMovesTo(page: Page, name: string): Promise<void> {
  let focused: string | null = null;
  await eventually(async () => (focused = await focusedName(page)) === name, {
    timeoutMs: 5000,
    what: () => `the focus to move to ${JSON.stringify(name)} (it is on ${JSON.stringify(focused)})`,
  });
}

describe("keyboard only", () => {
  test("an admin signs in, visits every page, generates keys, closes with Escape and uses row actions", async () => {
    const page = await openPanel("light");
    // The sign-in form focuses the username; Tab to the password, Enter to send.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("signin-username");
    await page.keyboard.type("admin");
    await page.keyboard.press("Tab");
    await page.keyboard.type(ADMIN_PASSWORD);
    await page.keyboard.press("Enter");
    await page.getByRole("button", { name: "Sign out" }).waitFor();
    await page.getByRole("heading", { level: 1, name: "Dashboard" }).waitFor();

    // Every page through the navigation: Tab to its link, Enter; the focus lands on the page.
    const titles = await nav(page).getByRole("link").allTextContents();
    for (const title of titles) {
      await tabTo(page, title);
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { level: 1, name: title }).waitFor();
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("page");
      // Back into the navigation for the next link: it comes before the page.
      await tabTo(page, "Dashboard", { back: true });
    }

    // Generate two keys: Enter on the button, type in the dialog, Enter submits.
    const keysTitle = (await nav(page).locator('a[data-page="keys"]').textContent()) ?? "";
    await tabTo(page, keysTitle);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: keysTitle }).waitFor();
    await row(page, "Berlin office").first().waitFor();
    await tabTo(page, "Generate keys");
    await page.keyboard.press("Enter");
    const generate = page.getByRole("dialog", { name: "Generate keys" });
    await generate.waitFor();
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("quantity");
    await page.keyboard.press("Control+A");
    await page.keyboard.type("2");
    await page.keyboard.press("Tab");
    await page.keyboard.type("Keyboard batch");
    await page.keyboard.press("Enter");
    await generate.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("2 keys generated.").waitFor();
    await row(page, "Keyboard batch").nth(1).waitFor();
    await focusMovesTo(page, "Generate keys");

    // Space opens it too; Escape closes it and the focus is back on the opener.
    await page.keyboard.press("Space");
    await generate.waitFor();
    await page.keyboard.press("Escape");
    await generate.waitFor({ state: "detached" });
    await focusMovesTo(page, "Generate keys");

    // The settings switch toggles with Space.
    await tabTo(page, "Require Authentication Key", { back: true });
    const before = await page.getByRole("switch", { name: "Require Authentication Key" }).isChecked();
    await page.keyboard.press("Space");
    await page
      .getByRole("status")
      .getByText(before ? /is off/ : /is on/)
      .waitFor();
    expect(await page.getByRole("switch", { name: "Require Authentication Key" }).isChecked()).toBe(!before);

    // A row action: revoke a pending key. The confirmation starts on Cancel; Tab to the action, Enter.
    const key = ((await row(page, "Keyboard batch").first().locator("code.token").textContent()) ?? "").trim();
    await tabTo(page, `Revoke key ${key}`);
    await page.keyboard.press("Enter");
    const revoke = page.getByRole("dialog", { name: `Revoke key ${key}?` });
    await revoke.waitFor();
    expect(await focusedName(page)).toBe("Cancel");
    await page.keyboard.press("Tab");
    expect(await focusedName(page)).toBe("Revoke key");
    await page.keyboard.press("Enter");
    await revoke.waitFor({ state: "detached" });
    await page.getByRole("status").getByText(`Key ${key} revoked.`).waitFor();
    await row(page, key).locator(".badge-revoked").waitFor();
    expect(await focusedName(page)).not.toBeNull();

    // A license's details drawer opens with Enter and closes with Escape, back on its opener.
    const licensesTitle = (await nav(page).locator('a[data-page="licenses"]').textContent()) ?? "";
    await tabTo(page, licensesTitle, { back: true });
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: licensesTitle }).waitFor();
    await row(page, "order 1234").waitFor();
    await tabTo(page, `Details of key #${licenseId}`);
    await page.keyboard.press("Enter");
    const drawer = page.getByRole("dialog", { name: `Key #${licenseId}` });
    await drawer.getByRole("row").filter({ hasText: "alpha" }).waitFor();
    expect(await focusedName(page)).toBe("Close the details");
    await page.keyboard.press("Escape");
    await drawer.waitFor({ state: "detached" });
    await focusMovesTo(page, `Details of key #${licenseId}`);

    // Disable a key from its row with Space; the focus stays on the row's (now Enable) button.
    await tabTo(page, `Disable key #${licenseId}`);
    await page.keyboard.press("Space");
    await page.getByRole("status").getByText(`Key #${licenseId} disabled.`).waitFor();
    await focusMovesTo(page, `Enable key #${licenseId}`);
    await page.keyboard.press("Enter");
    await page.getByRole("status").getByText(`Key #${licenseId} enabled.`).waitFor();
    await focusMovesTo(page, `Disable key #${licenseId}`);

    // Sign out from the header.
    await tabTo(page, "Sign out", { back: true });
    await page.keyboard.press("Enter");
    await page.getByText("You have signed out.").waitFor();
  });
});
