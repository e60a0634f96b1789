/**
 * The My certificates page in a real browser (Debian's headless Chromium through playwright-core)
 * against a real server: a viewer pastes the PEM of a certificate from latchkey's CA and registers
 * it, is refused a self-signed one and a paste that is no certificate (each said where it belongs),
 * revokes hers with a confirmation and finds it under Revoked; the certificate signs in over the
 * WebSocket before and not after. An admin sees everyone's and registers a self-signed certificate
 * for the viewer. No console errors or CSP violations are allowed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createSign } from "node:crypto";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { launchChromium, nav, reportCspViolations, signIn, watchPage } from "./browser.ts";
import { ADMIN_PASSWORD, call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

setDefaultTimeout(60_000);

/** Refusals the scenarios provoke on purpose (the session probe before signing in, a self-signed certificate, a bad paste). */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of (400|401|403) /;

let server: TestServer;
let browser: Browser;
let admin: string;
const contexts: BrowserContext[] = [];
const problems: string[] = [];

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  await createUser(server.url, admin, { username: "vera", password: "vera-password", role: "viewer" });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  expect(problems.splice(0)).toEqual([]);
});

async function openPanel(hash: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  contexts.push(context);
  context.setDefaultTimeout(5000);
  await reportCspViolations(context);
  const page = await context.newPage();
  watchPage(page, problems, EXPECTED_REFUSAL);
  await page.goto(`${server.url}/${hash}`);
  await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

function row(page: Page, text: string) {
  return page.locator(".listing tbody tr", { hasText: text });
}

/** A certificate login over /ws with the key's PEM: whether it signed in. */
async function signsIn(keyPem: string): Promise<boolean> {
  const socket = await RpcClient.connect(server.wsUrl);
  try {
    const testString = (await socket.request("rpc", "auth_ssl", "")).args.test_string;
    const proof = createSign("sha256").update(testString).sign(keyPem).toString("base64");
    return (await socket.request("rpc", "auth_ssl", { encrypted_string: proof })).name === "response";
  } finally {
    socket.close();
  }
}

/** A self-signed certificate made by openssl (its key goes nowhere). */
function selfSignedPem(cn: string): string {
  const made = Bun.spawnSync(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null"].concat([
      "-subj",
      `/CN=${cn}`,
      "-days",
      "30",
    ]),
  );
  return made.stdout.toString();
}

describe("My certificates", () => {
  test("a viewer registers a certificate of the server's CA, is refused a self-signed one, and revokes hers", async () => {
    const issued = await server.services.ca.issue(
      { name: "test", address: null },
      { kind: "user", commonName: "vera-laptop", usages: ["clientAuth"], days: 30, key: "generate" },
    );
    const page = await openPanel("#/my-certificates");
    await signIn(page, "vera", "vera-password");
    await page.getByRole("heading", { name: "My certificates" }).waitFor();
    expect((await nav(page).getByRole("link").allTextContents()).at(-1)).toBe("My certificates");
    await page.getByText("No certificates registered yet.").waitFor();

    // Not a certificate: the server's word lands next to the field.
    await page.getByRole("button", { name: "Register certificate" }).click();
    const dialog = page.getByRole("dialog", { name: "Register a certificate" });
    expect(await dialog.getByLabel("User").count()).toBe(0);
    await dialog.getByLabel("Certificate (PEM)").fill("hello");
    await dialog.getByRole("button", { name: "Register certificate" }).click();
    await dialog.locator(".field-error", { hasText: /must be a PEM certificate/i }).waitFor();
    expect(await dialog.getByLabel("Certificate (PEM)").getAttribute("aria-invalid")).toBe("true");

    // Self-signed: for admins only, said at the top of the form.
    await dialog.getByLabel("Certificate (PEM)").fill(selfSignedPem("vera-self"));
    await dialog.getByRole("button", { name: "Register certificate" }).click();
    await dialog
      .getByRole("alert")
      .getByText(/only an admin may register a self-signed certificate/i)
      .waitFor();

    // Hers from the server's CA: registered, and it signs in.
    await dialog.getByLabel("Certificate (PEM)").fill(issued.pem);
    await dialog.getByLabel("Nickname").fill("laptop");
    await dialog.getByLabel("E-mail").fill("vera@example.com");
    await dialog.getByRole("button", { name: "Register certificate" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("Certificate registered.").waitFor();
    const laptop = row(page, "vera-laptop");
    await laptop.getByText("laptop", { exact: true }).waitFor();
    await laptop.locator(".badge-valid", { hasText: "this server's CA" }).waitFor();
    await laptop.locator(".badge-active").waitFor();
    await page.screenshot({ path: "/tmp/my-certificates.png" });
    expect(await signsIn(issued.key!)).toBe(true);

    // Revoke, confirmed: it leaves the active list, shows under Revoked, and signs in no more.
    await laptop.getByRole("button", { name: /^Revoke vera-laptop/ }).click();
    const confirm = page.getByRole("dialog", { name: "Revoke vera-laptop?" });
    expect(await confirm.textContent()).toContain("It no longer signs in to your account");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await confirm.getByRole("button", { name: "Revoke certificate" }).click();
    await confirm.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("Certificate revoked.").waitFor();
    await laptop.waitFor({ state: "detached" });
    await page.getByLabel("Status").selectOption("revoked");
    await row(page, "vera-laptop").locator(".badge-revoked").waitFor();
    expect(
      await page
        .locator(".listing")
        .getByRole("button", { name: /^Revoke/ })
        .count(),
    ).toBe(0);
    expect(await signsIn(issued.key!)).toBe(false);
    const mine = await call(server.url, "GET", "/api/me/certificates", { token: await login(server.url, "vera", "vera-password") });
    expect(mine.body.items.map((c: { status: string }) => c.status)).toEqual(["revoked"]);
  });

  test("an admin sees everyone's certificates and registers a self-signed one for a viewer", async () => {
    const page = await openPanel("#/my-certificates");
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "My certificates" }).waitFor();
    await page.getByText("As an admin you see and manage everyone's.", { exact: false }).waitFor();
    await page.getByRole("button", { name: "Register certificate" }).click();
    const dialog = page.getByRole("dialog", { name: "Register a certificate" });
    expect(await dialog.getByLabel("User").inputValue()).toBe("admin");
    await dialog.getByLabel("User").fill("vera");
    await dialog.getByLabel("Certificate (PEM)").fill(selfSignedPem("vera-desk"));
    await dialog.getByRole("button", { name: "Register certificate" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("Certificate registered for vera.").waitFor();
    const desk = row(page, "vera-desk");
    await desk.getByText("vera", { exact: true }).waitFor();
    await desk.locator(".badge-legacy", { hasText: "self-signed" }).waitFor();
    expect(await page.getByRole("columnheader", { name: "User" }).count()).toBe(1);
    // The server agrees: it is vera's, registered by admin.
    const hers = await call(server.url, "GET", "/api/users/vera/certificates?status=active", { token: admin });
    expect(hers.body.items).toMatchObject([{ subject: "vera-desk", self_signed: true, registered_by: "admin" }]);
  });
});
