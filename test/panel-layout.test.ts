/**
 * The admin panel as people see it, in a real browser (Debian's headless Chromium through
 * playwright-core) against a real server with a little of everything in it: both colour themes
 * readable on every page and dialog (WCAG contrast, computed), a phone's 390 px without sideways
 * scrolling and with the navigation as a menu, a laptop's 1366 px showing the license drawer's whole
 * table, one content width, pages that fit without scrolling, the bootstrap account's row, the
 * warning before an idle session ends, and the audit log's filters, long identifiers and export.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { ADMIN_PASSWORD, call, createUser, login, manualClock, RpcClient, startTestServer, tempDir, type TestServer } from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage, ACTION_TIMEOUT_MS } from "./browser.ts";

setDefaultTimeout(60_000);

/** The session probe before signing in, the session that ends on purpose, a user created twice. */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of (401|409) /;
const PAGES = ["dashboard", "keys", "clients", "hosts", "certificates", "applications", "licenses", "users", "my-certificates", "audit"];
const THEMES = ["light", "dark"] as const;
/** A machine with long names, checked in (so that its Last check has seconds). */
const MACHINE = {
  hwid: `hw-${"9f".repeat(30)}`,
  machine: "design-workstation-with-a-long-name",
  user: "ann.long-surname@corp.example.com",
};
const HOSTNAME = "build-server-01.lab.example.com";

let server: TestServer;
let browser: Browser;
let adminToken: string;
let licenseId: number;
const sockets: RpcClient[] = [];
const contexts: BrowserContext[] = [];
const problems: string[] = [];

beforeAll(async () => {
  server = await startTestServer();
  browser = await launchChromium();
  adminToken = await login(server.url);
  const token = adminToken;
  await createUser(server.url, token, {
    username: "carol",
    password: "carol-password-1",
    role: "viewer",
    allowed_groups: ["berlin", "lab"],
  });
  expect(
    (await call(server.url, "POST", "/api/keys", { token, body: { quantity: 2, label: "berlin batch", group: "berlin" } })).status,
  ).toBe(201);
  const keys = (await call(server.url, "GET", "/api/keys", { token })).body.items as { key: string }[];
  const socket = await RpcClient.connect(server.wsUrl);
  sockets.push(socket);
  await socket.request("client", "register", {
    uuid: randomUUID(),
    name: "lab-client-with-a-long-name",
    hostname: "lab-01.example.internal",
    version: "1.2.3",
    os: "linux",
    auth_key: keys[0]!.key,
  });
  expect((await call(server.url, "POST", "/api/hosts", { token, body: { hostname: HOSTNAME, group: "lab" } })).status).toBe(201);
  expect((await call(server.url, "POST", `/api/hosts/${HOSTNAME}/bundle`, { token })).status).toBe(201);
  expect((await call(server.url, "POST", "/api/users/admin/certificates/issue", { token, body: { nickname: "laptop" } })).status).toBe(201);
  const app = (await call(server.url, "POST", "/api/apps", { token, body: { name: "Suite" } })).body as { id: number };
  const cut = (await call(server.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 5, memo: "for ann" } })).body;
  const license = (Array.isArray(cut) ? cut[0] : (cut.items?.[0] ?? cut)) as { id: number; token: string };
  licenseId = license.id;
  for (const machine of [MACHINE, { hwid: "hw-b", machine: "beta", user: "bob" }]) {
    const res = await fetch(`${server.url}/api/activate`, {
      method: "POST",
      body: new URLSearchParams({ token: license.token, ...machine }),
    });
    expect(res.status).toBe(201);
  }
  await (await fetch(`${server.url}/api/check?${new URLSearchParams({ token: license.token, hwid: MACHINE.hwid })}`)).body?.cancel();
});

afterAll(async () => {
  for (const socket of sockets) socket.close();
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

async function openPanel(
  options: { width?: number; height?: number; colorScheme?: "light" | "dark"; base?: string; hash?: string; fakeClock?: boolean } = {},
): Promise<Page> {
  const context = await browser.newContext({
    viewport: { width: options.width ?? 1366, height: options.height ?? 800 },
    colorScheme: options.colorScheme ?? "light",
    timezoneId: "UTC",
    permissions: ["clipboard-read", "clipboard-write"],
  });
  contexts.push(context);
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  await reportCspViolations(context);
  const page = await context.newPage();
  if (options.fakeClock) await page.clock.install();
  watchPage(page, problems, EXPECTED_REFUSAL);
  await page.goto(`${options.base ?? server.url}/${options.hash ?? ""}`);
  await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

/** Opens `#/<id>` and waits until it has loaded (nothing busy, no "Loading…"). */
async function visit(page: Page, id: string): Promise<void> {
  await page.evaluate((id) => (location.hash = `#/${id}`), id);
  await page.locator("#page h1").first().waitFor();
  await page.waitForFunction(() => {
    const main = document.getElementById("page");
    return main !== null && !main.querySelector('[aria-busy="true"]') && !main.textContent?.includes("Loading…");
  });
}

interface ContrastFailure {
  text: string;
  color: string;
  background: string;
  ratio: number;
  needed: number;
}

/**
 * The WCAG 2 contrast of every visible text (text nodes, form control values and placeholders,
 * generated labels) against the background it is drawn on: the colours of the element and its
 * ancestors composited, with their opacity. Inside an open modal dialog only the dialog counts:
 * the rest is behind its backdrop. Disabled controls are exempt (WCAG 1.4.3).
 */
function contrastFailures(page: Page): Promise<ContrastFailure[]> {
  return page.evaluate(() => {
    type RGBA = [number, number, number, number];
    const parse = (text: string): RGBA => {
      const m = text.match(/rgba?\(([^)]+)\)/);
      if (!m) throw new Error(`unexpected colour ${text}`);
      const parts = m[1]!
        .split(/[\s,/]+/)
        .filter(Boolean)
        .map(Number);
      return [parts[0]!, parts[1]!, parts[2]!, parts[3] ?? 1];
    };
    const over = (top: RGBA, below: RGBA): RGBA => {
      const a = top[3] + below[3] * (1 - top[3]);
      if (a === 0) return [0, 0, 0, 0];
      const mix = (i: number) => (top[i]! * top[3] + below[i]! * below[3] * (1 - top[3])) / a;
      return [mix(0), mix(1), mix(2), a];
    };
    const luminance = ([r, g, b]: RGBA) => {
      const channel = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    };
    const ratio = (a: RGBA, b: RGBA) => {
      const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
      return (hi + 0.05) / (lo + 0.05);
    };
    const opacity = (element: Element) => {
      let value = 1;
      for (let e: Element | null = element; e; e = e.parentElement) value *= Number(getComputedStyle(e).opacity);
      return value;
    };
    const background = (element: Element): RGBA => {
      const layers: RGBA[] = [];
      for (let e: Element | null = element; e; e = e.parentElement) {
        const layer = parse(getComputedStyle(e).backgroundColor);
        if (layer[3] > 0) layers.push(layer);
        if (layer[3] >= 1) break;
      }
      let color: RGBA = [255, 255, 255, 1];
      for (const layer of layers.reverse()) color = over(layer, color);
      return color;
    };
    const dialogs = [...document.querySelectorAll("dialog[open]")];
    const scope: Element = dialogs.at(-1) ?? document.body;
    const failures: ContrastFailure[] = [];
    const check = (element: Element, text: string, colorText: string, style: CSSStyleDeclaration) => {
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      const needed = large ? 3 : 4.5;
      const bg = background(element);
      const fg = parse(colorText);
      const drawn = over([fg[0], fg[1], fg[2], fg[3] * opacity(element)], bg);
      const value = ratio(drawn, bg);
      if (value < needed)
        failures.push({
          text: text.slice(0, 60),
          color: colorText,
          background: `rgb(${bg.slice(0, 3).map(Math.round).join(", ")})`,
          ratio: value,
          needed,
        });
    };
    for (const element of [scope, ...scope.querySelectorAll("*")]) {
      if (element.closest("[hidden], [inert], [aria-disabled='true'], :disabled, .visually-hidden, script, style, datalist, option"))
        continue;
      const rect = element.getBoundingClientRect();
      const style = getComputedStyle(element);
      if (rect.width <= 1 || rect.height <= 1 || style.visibility !== "visible" || opacity(element) === 0) continue;
      const own = [...element.childNodes]
        .filter((n) => n.nodeType === Node.TEXT_NODE)
        .map((n) => n.textContent ?? "")
        .join("")
        .trim();
      if (own) check(element, own, style.color, style);
      if (element instanceof HTMLInputElement || element instanceof HTMLTextAreaElement || element instanceof HTMLSelectElement) {
        if (element.value) check(element, element.value, style.color, style);
        const placeholder = element.getAttribute("placeholder");
        if (placeholder && !element.value) check(element, placeholder, getComputedStyle(element, "::placeholder").color, style);
      }
      const before = getComputedStyle(element, "::before");
      if (/^".+"$/.test(before.content)) check(element, before.content, before.color, before);
    }
    return failures;
  });
}

async function expectReadable(page: Page, where: string): Promise<void> {
  expect({ where, failures: await contrastFailures(page) }).toEqual({ where, failures: [] });
}

/** What scrolls sideways: the document, and any dialog or table frame that is not a focusable scrolling region. */
function sidewaysOverflow(page: Page) {
  return page.evaluate(() => {
    const wide: string[] = [];
    if (document.documentElement.scrollWidth > window.innerWidth) wide.push(`document ${document.documentElement.scrollWidth}px`);
    for (const element of document.querySelectorAll<HTMLElement>("dialog[open], .table-wrap")) {
      if (element.scrollWidth <= element.clientWidth + 1) continue;
      if (element.matches(".table-wrap[role=region][tabindex='0'][aria-label]")) continue;
      wide.push(`${element.tagName.toLowerCase()}.${element.className} ${element.scrollWidth}px in ${element.clientWidth}px`);
    }
    return wide;
  });
}

/** Every row action on screen lies inside the window, wide enough to show its text. */
function rowActionsOutside(page: Page) {
  return page.evaluate(() => {
    const scope = [...document.querySelectorAll("dialog[open]")].at(-1) ?? document;
    const outside: string[] = [];
    for (const button of scope.querySelectorAll<HTMLElement>("td.actions button")) {
      const rect = button.getBoundingClientRect();
      if (rect.left < 0 || rect.right > window.innerWidth || button.scrollWidth > button.clientWidth + 1)
        outside.push(`${button.getAttribute("aria-label") ?? button.textContent} at ${Math.round(rect.left)}–${Math.round(rect.right)}`);
    }
    return outside;
  });
}

describe("themes", () => {
  test("the theme follows the system, is chosen in the header, is remembered, and announces changes", async () => {
    const page = await openPanel({ colorScheme: "dark" });
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.evaluate(() => {
      (window as unknown as { themeChanges: number }).themeChanges = 0;
      document.addEventListener("themechange", () => (window as unknown as { themeChanges: number }).themeChanges++);
    });
    const changes = () => page.evaluate(() => (window as unknown as { themeChanges: number }).themeChanges);
    const theme = page.getByRole("banner").getByLabel("Theme", { exact: true });
    expect(await theme.inputValue()).toBe("system");
    expect(await theme.locator("option").allTextContents()).toEqual(["System theme", "Light theme", "Dark theme"]);

    // The system changes its mind: so does the panel.
    await page.emulateMedia({ colorScheme: "light" });
    await page.waitForFunction(() => document.documentElement.dataset.theme === "light");
    expect(await changes()).toBe(1);
    const background = () => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    expect(await background()).toBe("rgb(245, 246, 248)");

    await theme.selectOption("dark");
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
    expect(await changes()).toBe(2);
    expect(await background()).toBe("rgb(18, 21, 27)");
    expect(await page.evaluate(() => localStorage.getItem("latchkey.theme"))).toBe("dark");

    // Remembered across a reload, against the system's light.
    await page.reload();
    await page.getByRole("button", { name: "Sign out" }).waitFor();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
    expect(await page.getByRole("banner").getByLabel("Theme", { exact: true }).inputValue()).toBe("dark");

    await page.getByRole("banner").getByLabel("Theme", { exact: true }).selectOption("system");
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("light");
    expect(await page.evaluate(() => localStorage.getItem("latchkey.theme"))).toBeNull();
  });

  for (const colorScheme of THEMES) {
    test(`every page and dialog is readable in the ${colorScheme} theme (WCAG contrast)`, async () => {
      const page = await openPanel({ colorScheme });
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill("not the password");
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.locator(".signin-card [role=alert]").waitFor();
      await expectReadable(page, "sign-in with an error");
      await signIn(page, "admin", ADMIN_PASSWORD);
      expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe(colorScheme);

      for (const width of [1366, 390]) {
        await page.setViewportSize({ width, height: 800 });
        for (const id of PAGES) {
          await visit(page, id);
          await expectReadable(page, `${id} at ${width} px`);
        }
      }
      await page.setViewportSize({ width: 1366, height: 800 });

      const dialogs: [string, string, string][] = [
        ["users", "Create user", "Create user"],
        ["users", "Delete carol", "Delete carol?"],
        ["keys", "Generate keys", "Generate keys"],
        ["clients", "Delete client lab-client-with-a-long-name", "Delete client lab-client-with-a-long-name?"],
        ["hosts", "Register host", "Register host"],
        ["certificates", "Revoke certificate", "Revoke certificate"],
        ["applications", "Create application", "Create application"],
        ["licenses", "Cut keys", "Cut license keys"],
        ["licenses", `Details of key #${licenseId}`, `Key #${licenseId}`],
        ["my-certificates", "Register certificate", "Register a certificate"],
        ["my-certificates", "Issue certificate", "Issue a certificate"],
      ];
      for (const [id, button, title] of dialogs) {
        await visit(page, id);
        await page.getByRole("button", { name: button }).first().click();
        const dialog = page.getByRole("dialog", { name: title });
        await dialog.waitFor();
        await page.waitForFunction(() => !document.querySelector("dialog[open] [aria-busy='true']"));
        await expectReadable(page, `the ${title} dialog`);
        await page.keyboard.press("Escape");
        await dialog.waitFor({ state: "detached" });
      }

      // A refusal in a dialog, and the toast.
      await visit(page, "users");
      await page.getByRole("button", { name: "Create user" }).click();
      const create = page.getByRole("dialog", { name: "Create user" });
      await create.getByLabel("Username").fill("carol");
      await create.getByLabel("Password").fill("another-password");
      await create.getByRole("button", { name: "Create user" }).click();
      await create.locator(".field-error").getByText("already exists").waitFor();
      await expectReadable(page, "a field error");
      await page.keyboard.press("Escape");
      await page.getByRole("button", { name: "Edit carol" }).click();
      await page.getByRole("dialog", { name: "Edit carol" }).getByRole("button", { name: "Save changes" }).click();
      await page.locator(".toast-visible").getByText("carol updated.").waitFor();
      await page.waitForFunction(() => getComputedStyle(document.querySelector(".toast")!).opacity === "1");
      await expectReadable(page, "the toast");
      await page.screenshot({ path: `/tmp/layout-users-${colorScheme}.png` });
    });
  }
});

describe("narrow screens", () => {
  test("at 390 px no page scrolls sideways, the navigation is a menu and row actions stay reachable", async () => {
    const page = await openPanel({ width: 390, height: 800 });
    await signIn(page, "admin", ADMIN_PASSWORD);
    const menu = page.getByRole("button", { name: "Menu" });
    const links = nav(page).getByRole("link");

    // The menu: a disclosure button, closed at first, keyboard operable, closed by Escape and by choosing a page.
    expect(await menu.getAttribute("aria-expanded")).toBe("false");
    expect(await menu.getAttribute("aria-controls")).toBe(await page.locator("nav.nav").getAttribute("id"));
    expect(await links.first().isVisible()).toBe(false);
    await menu.focus();
    await page.keyboard.press("Enter");
    expect(await menu.getAttribute("aria-expanded")).toBe("true");
    await links.first().waitFor();
    expect(await links.count()).toBe(PAGES.length);
    await page.keyboard.press("Escape");
    expect(await menu.getAttribute("aria-expanded")).toBe("false");
    expect(await links.first().isVisible()).toBe(false);
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Menu");
    await page.keyboard.press("Space");
    await links.first().waitFor();
    await links.filter({ hasText: "Users" }).focus();
    await page.keyboard.press("Escape");
    expect(await menu.getAttribute("aria-expanded")).toBe("false");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Menu");
    await menu.click();
    await links.filter({ hasText: "Users" }).click();
    await page.getByRole("heading", { name: "Users" }).waitFor();
    expect(await menu.getAttribute("aria-expanded")).toBe("false");
    // The header keeps Sign out and the theme on screen.
    for (const control of [page.getByRole("button", { name: "Sign out" }), page.getByLabel("Theme", { exact: true }), menu]) {
      const box = (await control.boundingBox())!;
      expect(box.x >= 0 && box.x + box.width <= 390).toBe(true);
    }
    await page.screenshot({ path: "/tmp/layout-phone-users.png", fullPage: true });

    for (const id of PAGES) {
      await visit(page, id);
      expect({ id, wide: await sidewaysOverflow(page), outside: await rowActionsOutside(page) }).toEqual({ id, wide: [], outside: [] });
    }
    await page.screenshot({ path: "/tmp/layout-phone-audit.png", fullPage: true });

    // Row actions work from their cards.
    await visit(page, "users");
    await page.getByRole("button", { name: "Edit carol" }).click();
    const edit = page.getByRole("dialog", { name: "Edit carol" });
    await edit.waitFor();
    expect(await sidewaysOverflow(page)).toEqual([]);
    await page.keyboard.press("Escape");
    await edit.waitFor({ state: "detached" });

    await visit(page, "licenses");
    await page.getByRole("button", { name: `Details of key #${licenseId}` }).click();
    const drawer = page.getByRole("dialog", { name: `Key #${licenseId}` });
    await drawer.locator("td.machine", { hasText: MACHINE.machine }).waitFor();
    expect(await sidewaysOverflow(page)).toEqual([]);
    expect(await rowActionsOutside(page)).toEqual([]);
    const remove = drawer.getByRole("button", { name: `Remove the activation of ${MACHINE.machine}` });
    await remove.scrollIntoViewIfNeeded();
    expect(await remove.isVisible()).toBe(true);
    await page.screenshot({ path: "/tmp/layout-phone-drawer.png" });
    await remove.click();
    const confirm = page.getByRole("dialog", { name: `Remove ${MACHINE.machine}?` });
    await confirm.waitFor();
    expect(await sidewaysOverflow(page)).toEqual([]);
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });
  });

  test("at 1366 px the license drawer shows its whole activations table", async () => {
    const page = await openPanel({ hash: "#/licenses" });
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("button", { name: `Details of key #${licenseId}` }).click();
    const drawer = page.getByRole("dialog", { name: `Key #${licenseId}` });
    await drawer.locator("td.machine", { hasText: MACHINE.machine }).waitFor();
    await page.screenshot({ path: "/tmp/layout-drawer.png" });
    const table = await drawer.locator(".table-wrap").evaluate((wrap) => {
      const frame = wrap.getBoundingClientRect();
      const cut = [...wrap.querySelectorAll<HTMLElement>("th, td, td button")]
        .filter((cell) => cell.scrollWidth > cell.clientWidth + 1)
        .map((cell) => cell.textContent);
      const buttons = [...wrap.querySelectorAll<HTMLElement>("td.actions button")].map((button) => {
        const box = button.getBoundingClientRect();
        return { text: button.textContent, inside: box.left >= frame.left && box.right <= frame.right };
      });
      return { scrolls: wrap.scrollWidth > wrap.clientWidth, cut, buttons };
    });
    expect(table).toEqual({
      scrolls: false,
      cut: [],
      buttons: [
        { text: "Remove", inside: true },
        { text: "Remove", inside: true },
      ],
    });
    expect(await sidewaysOverflow(page)).toEqual([]);
  });
});

describe("fit and finish", () => {
  test("a page whose content fits does not scroll, every page has one content width, the navigation is in sentence case", async () => {
    const page = await openPanel();
    expect(await page.evaluate(() => document.documentElement.scrollHeight <= window.innerHeight)).toBe(true);
    await signIn(page, "admin", ADMIN_PASSWORD);
    for (const id of ["users", "my-certificates", "hosts"]) {
      await visit(page, id);
      const { scrollHeight, innerHeight } = await page.evaluate(() => ({
        scrollHeight: document.documentElement.scrollHeight,
        innerHeight: window.innerHeight,
      }));
      expect({ id, scrollHeight }).toEqual({ id, scrollHeight: innerHeight });
    }

    const titles = await nav(page).getByRole("link").allTextContents();
    expect(titles).toEqual([
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
    for (const title of titles) expect(title).toMatch(/^[A-Z][^A-Z]*$/);

    await page.setViewportSize({ width: 1920, height: 1000 });
    const widths: Record<string, number> = {};
    for (const id of PAGES) {
      await visit(page, id);
      widths[id] = await page.locator(".page-body").evaluate((body) => Math.round(body.getBoundingClientRect().width));
    }
    expect(new Set(Object.values(widths)).size).toBe(1);
  });

  test("the bootstrap admin's row offers no Delete and no role change", async () => {
    const page = await openPanel({ hash: "#/users" });
    await signIn(page, "admin", ADMIN_PASSWORD);
    const adminRow = page.getByRole("row").filter({ has: page.locator(".name-cell strong", { hasText: /^admin$/ }) });
    await adminRow.getByText("bootstrap account").waitFor();
    expect(await adminRow.getByText("bootstrap account").getAttribute("title")).toContain("always stays an admin and cannot be deleted");
    expect(await page.getByRole("button", { name: "Delete admin" }).count()).toBe(0);
    await page.getByRole("button", { name: "Delete carol" }).waitFor();

    await page.getByRole("button", { name: "Edit admin" }).click();
    const edit = page.getByRole("dialog", { name: "Edit admin" });
    await edit.getByText("it always stays an admin").waitFor();
    expect(await edit.getByLabel("Role").count()).toBe(0);
    await edit.getByLabel("Groups").fill("ops");
    await edit.getByRole("button", { name: "Save changes" }).click();
    await edit.waitFor({ state: "detached" });
    expect((await call(server.url, "GET", "/api/users/admin", { token: adminToken })).body).toMatchObject({
      role: "admin",
      allowed_groups: ["ops"],
    });
    expect((await call(server.url, "PATCH", "/api/users/admin", { token: adminToken, body: { allowed_groups: [] } })).status).toBe(200);

    await page.getByRole("button", { name: "Edit carol" }).click();
    await page.getByRole("dialog", { name: "Edit carol" }).getByLabel("Role").waitFor();
    await page.keyboard.press("Escape");
  });
});

describe("idle sessions", () => {
  test("a minute before the idle limit the panel offers to stay signed in; ignored, it signs out at the limit", async () => {
    const clock = manualClock(Date.now());
    const idle = await startTestServer({ clock, flags: ["--session-idle", "120"] });
    try {
      const page = await openPanel({ base: idle.url, hash: "#/users", fakeClock: true });
      await signIn(page, "admin", ADMIN_PASSWORD);
      await page.getByRole("heading", { name: "Users" }).waitFor();
      await page.clock.pauseAt(Date.now() + 1000);
      // Both clocks move together from here: the server's (session expiry) and the page's (its timers).
      const pass = async (ms: number) => {
        clock.advance(ms);
        await page.clock.runFor(ms);
      };
      const warning = page.getByRole("dialog", { name: "Your session is about to end" });
      const secondsLeft = async () => Number((await warning.locator("strong").textContent())?.match(/^in (\d+) seconds$/)?.[1]);

      await pass(57_000);
      expect(await warning.count()).toBe(0);
      await pass(4000);
      await warning.getByText("You have not used the panel for a while. For safety you will be signed out in").waitFor();
      const left = await secondsLeft();
      expect(left).toBeGreaterThan(55);
      expect(left).toBeLessThan(60);
      expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Stay signed in");
      for (const colorScheme of THEMES) {
        await page.emulateMedia({ colorScheme });
        await expectReadable(page, `the idle warning, ${colorScheme}`);
      }
      await pass(10_000);
      expect(await secondsLeft()).toBe(left - 10);

      // Staying signed in is a request, which the server counts as use: at 71 s the session then lasts until 191 s.
      await warning.getByRole("button", { name: "Stay signed in" }).click();
      await warning.waitFor({ state: "detached" });
      await pass(100_000);
      await warning.waitFor();
      expect(await secondsLeft()).toBe(20);
      // Without that, the session would have ended at 120 s: staying signed in again works at 171 s.
      await warning.getByRole("button", { name: "Stay signed in" }).click();
      await warning.waitFor({ state: "detached" });
      expect(await page.getByRole("button", { name: "Sign out" }).isVisible()).toBe(true);

      // Left alone, the session ends at its limit (291 s) and the panel says so.
      await pass(60_000);
      await warning.waitFor();
      await pass(62_000);
      await page.getByRole("status").getByText("Your session has ended; sign in again.").waitFor();
      expect(await page.getByRole("button", { name: "Sign out" }).count()).toBe(0);
      expect(await warning.count()).toBe(0);
    } finally {
      for (const context of contexts.splice(0)) await context.close();
      await idle.close();
    }
  });

  test("the warning's Sign out signs out at once", async () => {
    const clock = manualClock(Date.now());
    const idle = await startTestServer({ clock, flags: ["--session-idle", "10"] });
    try {
      const page = await openPanel({ base: idle.url, hash: "#/users", fakeClock: true });
      await signIn(page, "admin", ADMIN_PASSWORD);
      await page.getByRole("heading", { name: "Users" }).waitFor();
      await page.clock.pauseAt(Date.now() + 1000);
      // With the shortest idle limit the warning comes at half of it.
      await page.clock.runFor(5500);
      const warning = page.getByRole("dialog", { name: "Your session is about to end" });
      await warning.getByText(/^in [1-5] seconds?$/).waitFor();
      await warning.getByRole("button", { name: "Sign out" }).click();
      await page.getByText("You have signed out.").waitFor();
    } finally {
      for (const context of contexts.splice(0)) await context.close();
      await idle.close();
    }
  });
});

describe("audit log", () => {
  test("filters by actor, action and time, shortens long identifiers, and exports what it shows as JSON lines", async () => {
    const start = Date.parse("2026-03-02T08:00:00Z");
    const clock = manualClock(start);
    const audited = await startTestServer({ clock });
    const files = tempDir("latchkey-audit-export-");
    try {
      /** Moves the server's clock to `minutes` past 08:00 and signs in there (a session idles out in 5 minutes). */
      const at = (minutes: number) => {
        clock.set(start + minutes * 60_000);
        return login(audited.url);
      };
      await createUser(audited.url, await at(5), { username: "early", password: "early-password" });
      const token = await at(65);
      await createUser(audited.url, token, { username: "middle", password: "middle-password" });
      expect((await call(audited.url, "POST", "/api/hosts", { token, body: { hostname: HOSTNAME } })).status).toBe(201);
      const bundle = (await call(audited.url, "POST", `/api/hosts/${HOSTNAME}/bundle`, { token })).body as { serial: string };
      await createUser(audited.url, await at(125), { username: "late", password: "late-password" });

      const page = await openPanel({ base: audited.url, hash: "#/audit" });
      await signIn(page, "admin", ADMIN_PASSWORD);
      await page.getByRole("heading", { name: "Audit log" }).waitFor();

      // A serial is shortened, whole in its tooltip and its Copy button.
      const issued = page.getByRole("row").filter({ hasText: "cert.issue" }).filter({ hasText: bundle.serial });
      const shown = issued.locator("td[data-label=Target] .identifier > [title]");
      expect(await shown.getAttribute("title")).toBe(bundle.serial);
      expect(await shown.locator("[aria-hidden=true]").textContent()).toBe(`${bundle.serial.slice(0, 16)}…`);
      expect(await shown.evaluate((e) => e.getBoundingClientRect().width)).toBeLessThan(200);
      await issued.getByRole("button", { name: `Copy ${bundle.serial}` }).click();
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(bundle.serial);

      // A To before From is refused next to To.
      const form = page.getByRole("search", { name: "Filter the audit log" });
      await form.getByLabel("From", { exact: true }).fill("2026-03-02T10:00");
      await form.getByLabel("To", { exact: true }).fill("2026-03-02T09:00");
      await form.getByRole("button", { name: "Filter" }).click();
      await form.locator('[data-field="until"] .field-error').getByText("Must be later than From.").waitFor();

      // Admin's user.create between 09:00 and 09:59 (To includes its minute): middle only.
      await form.getByLabel("Actor", { exact: true }).fill("admin");
      await form.getByLabel("Action", { exact: true }).fill("user.create");
      await form.getByLabel("From", { exact: true }).fill("2026-03-02T09:00");
      await form.getByLabel("To", { exact: true }).fill("2026-03-02T09:59");
      await form.getByRole("button", { name: "Filter" }).click();
      await page.waitForURL(/since=/);
      const rows = page.locator(".listing tbody tr");
      await rows.filter({ hasText: "middle" }).waitFor();
      expect(await rows.count()).toBe(1);
      const query = new URL(page.url().replace("#/audit", "")).searchParams;
      expect(Object.fromEntries(query)).toEqual({
        actor: "admin",
        action: "user.create",
        since: "2026-03-02T09:00:00.000Z",
        until: "2026-03-02T10:00:00.000Z",
      });
      const reader = await login(audited.url);
      const api = await call(audited.url, "GET", `/api/audit?${query}`, { token: reader });
      expect(api.body.items.map((e: { target: string }) => e.target)).toEqual(["middle"]);

      // The export: exactly the server's JSON lines for these filters.
      const [download] = await Promise.all([
        page.waitForEvent("download"),
        page.getByRole("button", { name: "Export JSON lines" }).click(),
      ]);
      expect(download.suggestedFilename()).toMatch(/^audit-\d{4}-\d\d-\d\d\.jsonl$/);
      const saved = `${files.path}/export.jsonl`;
      await download.saveAs(saved);
      const expected = (await call(audited.url, "GET", `/api/audit?${query}&format=jsonl`, { token: reader })).text;
      expect(readFileSync(saved, "utf8")).toBe(expected);
      expect(
        expected
          .trim()
          .split("\n")
          .map((line) => JSON.parse(line).target),
      ).toEqual(["middle"]);
      await page.getByText("The matching entries were exported as JSON lines.").waitFor();

      // Reloaded, the filters come back from the address, To as it was typed.
      await page.reload();
      await rows.filter({ hasText: "middle" }).waitFor();
      expect(await form.getByLabel("To", { exact: true }).inputValue()).toBe("2026-03-02T09:59");
      expect(await form.getByLabel("From", { exact: true }).inputValue()).toBe("2026-03-02T09:00");
      await form.getByRole("button", { name: "Clear" }).click();
      await rows.filter({ hasText: "late" }).first().waitFor();
      expect(await rows.count()).toBeGreaterThan(5);
    } finally {
      for (const context of contexts.splice(0)) await context.close();
      await audited.close();
      files.remove();
    }
  });
});
