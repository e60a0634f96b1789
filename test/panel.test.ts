/**
 * The admin panel in a real browser (Debian's headless Chromium through playwright-core) against a
 * real server: sign-in and its errors, roles in the navigation, the Users and Audit pages, and
 * sessions that end under an open page. Every page must run without console errors or CSP
 * violations. The server runs on a manual clock so that throttling and idle expiry are exact.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { ADMIN_PASSWORD, call, createUser, login, manualClock, startTestServer, type TestServer } from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage, ACTION_TIMEOUT_MS } from "./browser.ts";

setDefaultTimeout(30_000);

/** API refusals the scenarios provoke on purpose; Chromium logs each failed fetch as a console error. */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of (401|403|409|429) /;
const SESSION_ENDED = "Your session has ended; sign in again.";

let server: TestServer;
let browser: Browser;
const clock = manualClock(Date.now());
const contexts: BrowserContext[] = [];
const problems: string[] = [];

beforeAll(async () => {
  // Sockets idle for 5 s of the manual clock are closed: the panel must pause and come back.
  server = await startTestServer({ clock, flags: ["--ws-idle", "5"] });
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

/** A fresh browser context on the panel, recording console errors and CSP violations. */
async function openPanel(hash = "", base = server.url): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  contexts.push(context);
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  await reportCspViolations(context);
  const page = await context.newPage();
  watchPage(page, problems, EXPECTED_REFUSAL);
  const response = await page.goto(`${base}/${hash}`);
  expect(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
  await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

async function fillSignIn(page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

async function signOut(page: Page): Promise<void> {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("You have signed out.").waitFor();
}

function row(page: Page, username: string) {
  return page.getByRole("row").filter({ has: page.locator(".name-cell strong", { hasText: new RegExp(`^${username}$`) }) });
}

async function adminToken(): Promise<string> {
  return login(server.url, "admin", ADMIN_PASSWORD);
}

describe("admin panel", () => {
  test("sign-in shows a wrong password and throttling clearly", async () => {
    const page = await openPanel();
    expect(await page.title()).toBe("Sign in · latchkey");
    await fillSignIn(page, "admin", "not the password");
    const alert = page.locator(".signin-card [role=alert]");
    await alert.getByText(/invalid username or password/i).waitFor();
    expect(await page.getByLabel("Password").inputValue()).toBe("");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("signin-password");

    // Five free failures for an account, then it must wait: the panel says for how long.
    for (let i = 0; i < 5; i++)
      expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "ghost", password: `wrong ${i}` } })).status).toBe(401);
    await fillSignIn(page, "ghost", "still wrong");
    await alert.getByText(/too many failed logins for this account; retry in 1 s/i).waitFor();
    await page.getByRole("button", { name: /Sign in \(wait \d+ s\)/ }).waitFor();
    await page.screenshot({ path: "/tmp/panel-signin.png" });
    clock.advance(1000);
  });

  test("admin creates a viewer, who sees no Users page and is refused at #/users", async () => {
    const page = await openPanel();
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.locator(".who").getByText("admin", { exact: true }).first().waitFor();
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
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    await page.locator(".card", { hasText: "Server" }).locator(".badge-success", { hasText: "ok" }).waitFor();
    await page.locator(".live-live").waitFor();

    await nav(page).getByRole("link", { name: "Users" }).click();
    await page.getByRole("heading", { name: "Users" }).waitFor();
    expect(page.url()).toEndWith("#/users");
    await page.getByRole("button", { name: "Create user" }).click();
    const dialog = page.getByRole("dialog", { name: "Create user" });
    await dialog.waitFor();
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("username");
    await dialog.getByLabel("Username").fill("carol");
    await dialog.getByLabel("Password").fill("carol-password-1");
    await dialog.getByLabel("Role").selectOption("viewer");
    await dialog.getByLabel("Groups").fill("berlin, lab");
    await dialog.getByRole("button", { name: "Create user" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("User carol created.").waitFor();
    const carol = row(page, "carol");
    await carol.getByText("viewer", { exact: true }).waitFor();
    await carol.getByText("berlin", { exact: true }).waitFor();
    await carol.getByText("never", { exact: true }).waitFor();

    // The server's refusal lands next to the field it names.
    await page.getByRole("button", { name: "Create user" }).click();
    await dialog.getByLabel("Username").fill("carol");
    await dialog.getByLabel("Password").fill("another-password");
    await dialog.getByRole("button", { name: "Create user" }).click();
    await dialog.locator('[data-field="username"] .field-error').getByText('A user named "carol" already exists.').waitFor();
    expect(await dialog.getByLabel("Username").getAttribute("aria-invalid")).toBe("true");
    await page.screenshot({ path: "/tmp/panel-create-error.png" });
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Create user");
    await signOut(page);

    await signIn(page, "carol", "carol-password-1");
    await page.locator(".who").getByText("viewer", { exact: true }).waitFor();
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
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    await page.getByText("berlin", { exact: true }).waitFor();
    await page.evaluate(() => (location.hash = "#/users"));
    await page.getByRole("heading", { name: "You do not have access to this page" }).waitFor();
    await page.getByText("The Users page is for admins only.", { exact: false }).waitFor();
    await page.screenshot({ path: "/tmp/panel-refusal.png" });
    await page.evaluate(() => (location.hash = "#/audit"));
    await page.getByRole("heading", { name: "You do not have access to this page" }).waitFor();
    // The server agrees.
    const token = await login(server.url, "carol", "carol-password-1");
    expect((await call(server.url, "GET", "/api/users", { token })).status).toBe(403);
    await signOut(page);
  });

  test("admin edits a role, resets a password and deletes a user after confirming", async () => {
    const token = await adminToken();
    await createUser(server.url, token, { username: "dave", password: "dave-password-1", role: "viewer" });
    await server.services.accounts.importLegacy(
      { name: "test", address: null },
      [{ username: "lee", password_hash: "a".repeat(64), salt: "salt", role: "viewer", allowed_groups: ["lab"] }],
      true,
    );
    const page = await openPanel("#/users");
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Users" }).waitFor();
    await row(page, "lee").getByText("wsauth import").waitFor();
    await row(page, "lee").getByText("challenge login").waitFor();
    expect(await row(page, "dave").getByText("wsauth import").count()).toBe(0);

    await page.getByRole("button", { name: "Edit dave" }).click();
    const edit = page.getByRole("dialog", { name: "Edit dave" });
    await edit.getByLabel("Role").selectOption("admin");
    await edit.getByLabel("Groups").fill("ops");
    await edit.getByRole("button", { name: "Save changes" }).click();
    await edit.waitFor({ state: "detached" });
    await row(page, "dave").getByText("admin", { exact: true }).waitFor();
    await row(page, "dave").getByText("ops", { exact: true }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Edit dave");
    expect((await call(server.url, "GET", "/api/users/dave", { token })).body.role).toBe("admin");

    await page.getByRole("button", { name: "Reset password of dave" }).click();
    const reset = page.getByRole("dialog", { name: "Reset the password of dave" });
    await reset.getByLabel("New password").fill("dave-password-2");
    await reset.getByRole("button", { name: "Set password" }).click();
    await reset.waitFor({ state: "detached" });
    await page.getByText("New password set for dave.").waitFor();
    await login(server.url, "dave", "dave-password-2");

    // Escape cancels; the bootstrap admin offers no Delete (the server refuses it); dave goes.
    await page.getByRole("button", { name: "Delete dave" }).click();
    const confirm = page.getByRole("dialog", { name: "Delete dave?" });
    await confirm.waitFor();
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await page.screenshot({ path: "/tmp/panel-users-confirm.png" });
    await page.keyboard.press("Escape");
    await confirm.waitFor({ state: "detached" });
    expect(await row(page, "dave").count()).toBe(1);

    expect(await page.getByRole("button", { name: "Delete admin" }).count()).toBe(0);
    expect((await call(server.url, "DELETE", "/api/users/admin", { token })).status).toBe(403);

    await page.getByRole("button", { name: "Delete dave" }).click();
    await confirm.getByRole("button", { name: "Delete user" }).click();
    await confirm.waitFor({ state: "detached" });
    await page.getByText("User dave deleted.").waitFor();
    await row(page, "dave").waitFor({ state: "detached" });
    expect((await call(server.url, "GET", "/api/users/dave", { token })).status).toBe(404);
    await page.screenshot({ path: "/tmp/panel-users.png" });
  });

  test("a session ended on the server sends the open page back to sign-in at once", async () => {
    const token = await adminToken();
    await createUser(server.url, token, { username: "erin", password: "erin-password-1" });
    const page = await openPanel();
    await signIn(page, "erin", "erin-password-1");
    await page.locator(".live-live").waitFor();

    // Deleting the user ends her sessions; her live socket closes with 4001.
    expect((await call(server.url, "DELETE", "/api/users/erin", { token })).status).toBe(204);
    await page.getByRole("status").getByText(SESSION_ENDED).waitFor();
    expect(await page.getByLabel("Username").inputValue()).toBe("erin");
    expect(await page.getByRole("button", { name: "Sign out" }).count()).toBe(0);
  });

  test("an idle-expired session returns to sign-in, and afterwards to the same route", async () => {
    const page = await openPanel();
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.evaluate(() => (location.hash = "#/audit?actor=admin"));
    await page.getByRole("heading", { name: "Audit log" }).waitFor();
    await page.getByRole("row").filter({ hasText: "auth.password" }).first().waitFor();

    // The server closes the idle live socket; the panel reopens it when the user is back.
    await page.locator(".live-live").waitFor();
    clock.advance(6000);
    await page.locator(".live-paused").waitFor();
    await page.getByLabel("Actor").click();
    await page.locator(".live-live").waitFor();

    clock.advance(301_000);
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.getByText(SESSION_ENDED).waitFor();
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Audit log" }).waitFor();
    expect(page.url()).toEndWith("#/audit?actor=admin");
    expect(await page.getByLabel("Actor").inputValue()).toBe("admin");
  });

  test("the audit page lists sign-ins and filters them", async () => {
    const page = await openPanel();
    await signIn(page, "admin", ADMIN_PASSWORD);
    await nav(page).getByRole("link", { name: "Audit log" }).click();
    await page.getByRole("heading", { name: "Audit log" }).waitFor();
    const logins = page.getByRole("row").filter({ hasText: "auth.password" });
    await logins.filter({ hasText: "success" }).first().waitFor();
    await page
      .getByRole("row")
      .filter({ hasText: "user.create" })
      .filter({ hasText: "role viewer" })
      .filter({ hasText: "carol" })
      .waitFor();

    await page.getByLabel("Outcome").selectOption("failure");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/#\/audit\?outcome=failure$/);
    await page.getByRole("row").filter({ hasText: "ghost" }).first().waitFor();
    expect(await page.getByRole("row").filter({ hasText: "success" }).count()).toBe(0);
    await page.screenshot({ path: "/tmp/panel-audit.png" });

    await page.getByLabel("Actor").fill("nobody-at-all");
    await page.getByLabel("Actor").press("Enter");
    await page.getByText("No entries match these filters.").waitFor();
    await page.getByRole("button", { name: "Clear" }).click();
    await logins.first().waitFor();
    expect(await page.getByLabel("Outcome").inputValue()).toBe("");

    await nav(page).getByRole("link", { name: "Dashboard" }).click();
    await page.locator(".card", { hasText: "Recent activity" }).getByText("auth.password").first().waitFor();
    await page.screenshot({ path: "/tmp/panel-dashboard.png" });
  });

  test("admin's password from LATCHKEY_ADMIN_PASSWORD: the Users page says so and offers no change of it", async () => {
    const token = await adminToken();
    await createUser(server.url, token, { username: "frank", password: "frank-password-1" });
    expect((await call(server.url, "GET", "/api/users/admin", { token })).body.password_from_env).toBe(true);
    const page = await openPanel("#/users");
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Users" }).waitFor();
    const note = row(page, "admin").getByText("Password set by LATCHKEY_ADMIN_PASSWORD");
    await note.waitFor();
    expect(await note.getAttribute("title")).toContain("change the variable and restart the server");
    await page.getByRole("button", { name: "Reset password of frank" }).waitFor();
    expect(await row(page, "frank").getByText("LATCHKEY_ADMIN_PASSWORD").count()).toBe(0);
    expect(await page.getByRole("button", { name: "Reset password of admin" }).count()).toBe(0);

    // From the keyboard, admin's row has only Edit (the bootstrap account stays); Edit says where the password is set.
    await page.getByRole("button", { name: "Edit admin" }).focus();
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.closest("tr")?.querySelector(".name-cell strong")?.textContent)).not.toBe(
      "admin",
    );
    await page.keyboard.press("Shift+Tab");
    await page.keyboard.press("Enter");
    const edit = page.getByRole("dialog", { name: "Edit admin" });
    await edit.getByText("change the variable and restart the server", { exact: false }).waitFor();
    expect(await edit.getByLabel(/password/i).count()).toBe(0);
    await edit.getByLabel("Groups").fill("ops");
    await page.keyboard.press("Enter");
    await edit.waitFor({ state: "detached" });
    await row(page, "admin").getByText("ops", { exact: true }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Edit admin");

    // On a 390 px phone the note stays readable and the page does not scroll sideways.
    await page.setViewportSize({ width: 390, height: 800 });
    await note.scrollIntoViewIfNeeded();
    expect(await note.isVisible()).toBe(true);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: "/tmp/panel-users-env-phone.png", fullPage: true });
    expect((await call(server.url, "PATCH", "/api/users/admin", { token, body: { allowed_groups: [] } })).status).toBe(200);
  });

  test("without LATCHKEY_ADMIN_PASSWORD admin's password is changed on the Users page; a refusal shows the server's reason", async () => {
    // A first start without the variable generates admin's password; the test sets a known one.
    const plain = await startTestServer({ adminPassword: null, flags: ["--log-format", "json"] });
    try {
      await plain.services.accounts.change({ name: "test", address: null }, "admin", { password: ADMIN_PASSWORD });
      const token = await login(plain.url);
      expect((await call(plain.url, "GET", "/api/users/admin", { token })).body.password_from_env).toBe(false);
      const page = await openPanel("#/users", plain.url);
      await signIn(page, "admin", ADMIN_PASSWORD);
      await page.getByRole("heading", { name: "Users" }).waitFor();
      const reset = page.getByRole("button", { name: "Reset password of admin" });
      await reset.waitFor();
      expect(await row(page, "admin").getByText("LATCHKEY_ADMIN_PASSWORD").count()).toBe(0);

      // The server restarts with the variable under this open page: its refusal is shown as it is.
      await plain.services.settings.set("admin_password_from_env", true);
      await reset.click();
      const dialog = page.getByRole("dialog", { name: "Reset the password of admin" });
      await dialog.getByLabel("New password").fill("another-password-1");
      await dialog.getByRole("button", { name: "Set password" }).click();
      await dialog
        .getByRole("alert")
        .getByText(
          "The password of admin is LATCHKEY_ADMIN_PASSWORD, applied at every start of the server: change that variable and restart.",
        )
        .waitFor();
      await login(plain.url);
      await page.keyboard.press("Escape");
      await dialog.waitFor({ state: "detached" });
      await page.reload();
      await row(page, "admin").getByText("Password set by LATCHKEY_ADMIN_PASSWORD").waitFor();
      expect(await reset.count()).toBe(0);
    } finally {
      for (const context of contexts.splice(0)) await context.close();
      await plain.close();
    }
  });
});
