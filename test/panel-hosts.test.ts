/**
 * The Hosts and Certificates pages in a real browser (Debian's headless Chromium through
 * playwright-core) against a real server: an admin registers a host, downloads its bundle (the
 * files are checked with openssl), the host reports with curl over mutual TLS and the open page
 * shows it online without a reload; a certificate is revoked (and a second revocation refused),
 * the CRL served by the page's link lists it; hosts removed elsewhere leave the list live. A
 * viewer sees the hosts and certificates of their group only, with no write controls. The pages
 * fit a 390 px phone. No console errors or CSP violations are allowed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Browser, type BrowserContext, type Download, type Page } from "playwright-core";
import { ADMIN_PASSWORD, call, createUser, eventually, login, startTestServer, tempDir, type TestServer } from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage, ACTION_TIMEOUT_MS } from "./browser.ts";

setDefaultTimeout(60_000);

/**
 * Refusals that are part of the scenarios (the session probe before signing in, a malformed and
 * a duplicate hostname, a second revocation); Chromium logs each failed fetch as a console error.
 */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of (400|401|409) /;
const HOST = "web-01.example.com";
const OTHER = "db-02.example.com";
const REPORT = { interfaces: [{ name: "eth0", addresses: ["192.0.2.1"] }], port: 8080, version: "1.0" };

let server: TestServer;
let browser: Browser;
let admin: string;
const contexts: BrowserContext[] = [];
const cleanups: (() => void)[] = [];
const problems: string[] = [];

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

/**
 * A fresh browser context on the panel, recording console errors and CSP violations. With
 * `fakeClock` the page's timers run on Playwright's clock, so that a test can stop the periodic
 * refresh and see that what changes arrived through the live socket.
 */
async function openPanel(hash = "", options: { fakeClock?: boolean; width?: number } = {}): Promise<Page> {
  const context = await browser.newContext({
    viewport: { width: options.width ?? 1366, height: 800 },
    permissions: ["clipboard-read", "clipboard-write"],
    acceptDownloads: true,
  });
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

/** A listing's row, by CSS (while a modal dialog is open the table is inert to role locators). */
function row(page: Page, text: string) {
  return page.locator(".listing tbody tr", { hasText: text });
}

/** Waits until the focused element's accessible name (aria-label, else text) is `name`. */
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

/** Clicks `link` and saves what it downloads into `dir`, under the name the page gave it. */
async function download(page: Page, link: ReturnType<Page["locator"]>, dir: string): Promise<{ name: string; text: string }> {
  const [file]: [Download, void] = await Promise.all([page.waitForEvent("download"), link.click()]);
  const name = file.suggestedFilename();
  await file.saveAs(join(dir, name));
  return { name, text: readFileSync(join(dir, name), "utf8") };
}

function run(argv: string[], cwd = "/"): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

/** `run` for a command that talks to the in-process server, which must keep running meanwhile. */
async function runAsync(argv: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** What a woodstock host sends, with curl, from the directory holding its bundle. */
function report(dir: string, hostname: string, body: unknown): Promise<{ code: number; out: string; err: string }> {
  return runAsync(
    [
      "curl",
      "-sS",
      "--fail-with-body",
      "--cert",
      `${hostname}_https.pem`,
      "--key",
      `${hostname}_https.key`,
      "--cacert",
      "rootCA.pem",
      "-X",
      "POST",
      `https://localhost:${server.mtlsPort}/api/hosts/${hostname}/client`,
      "-H",
      "content-type: application/json",
      "-d",
      JSON.stringify(body),
    ],
    dir,
  );
}

async function noHorizontalScroll(page: Page): Promise<void> {
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
}

describe("hosts and certificates pages", () => {
  test("admin registers a host, downloads its bundle, sees it report live, revokes its certificate and removes hosts", async () => {
    const files = tempDir("latchkey-panel-bundle-");
    cleanups.push(files.remove);
    const page = await openPanel("#/hosts", { fakeClock: true });
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Hosts" }).waitFor();
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
    // The empty list says what a host is and how it reports.
    const empty = page.locator(".listing .empty");
    await empty.getByText("No hosts yet.").waitFor();
    expect(await empty.textContent()).toContain("client certificate from this server's CA");
    expect(await empty.locator("pre").textContent()).toContain(
      "curl --cert web-01.example.com_https.pem --key web-01.example.com_https.key --cacert rootCA.pem",
    );
    await page.locator(".live-live").waitFor();
    await page.screenshot({ path: "/tmp/hosts-empty.png" });

    // Register: the server's refusal of a malformed name lands next to the field.
    const registerButton = page.getByRole("button", { name: "Register host" });
    await registerButton.click();
    const register = page.getByRole("dialog", { name: "Register host" });
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("hostname");
    await register.getByLabel("Hostname").fill("not a host!");
    await register.getByRole("button", { name: "Register host" }).click();
    await register.locator(".field-error", { hasText: /must be a hostname/i }).waitFor();
    expect(await register.getByLabel("Hostname").getAttribute("aria-invalid")).toBe("true");
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("hostname");
    await register.getByLabel("Hostname").fill(HOST.toUpperCase());
    await register.getByLabel("Group").fill("lab");
    await page.screenshot({ path: "/tmp/hosts-register.png" });
    await register.getByRole("button", { name: "Register host" }).click();
    await register.waitFor({ state: "detached" });
    await page.getByRole("status").getByText(`Host ${HOST} registered.`, { exact: false }).waitFor();
    const web = row(page, HOST);
    await web.locator(".badge-offline").waitFor();
    await web.locator(".badge-group", { hasText: "lab" }).waitFor();
    await web.getByText("never", { exact: true }).waitFor();
    await web.getByText("none", { exact: true }).waitFor();

    // A second registration of the same name: the 409 stays in the dialog; Escape closes it.
    await registerButton.click();
    await register.getByLabel("Hostname").fill(HOST);
    await register.getByRole("button", { name: "Register host" }).click();
    await register.getByText(`Host ${HOST} is already registered.`).waitFor();
    await page.keyboard.press("Escape");
    await register.waitFor({ state: "detached" });
    await focusMovesTo(page, "Register host");

    // From here on the page's timers stand still: whatever changes comes over the live socket.
    await page.clock.pauseAt(Date.now() + 1000);

    // Download bundle: asked first, then the three files, the key warning and the curl line.
    await web.getByRole("button", { name: `Download bundle for ${HOST}` }).click();
    const issue = page.getByRole("dialog", { name: `Download a bundle for ${HOST}?` });
    await issue.getByRole("button", { name: "Issue bundle" }).click();
    const bundle = page.getByRole("dialog", { name: `Bundle for ${HOST}` });
    await bundle.waitFor();
    await issue.waitFor({ state: "detached" });
    expect(await bundle.getByRole("note").textContent()).toContain("latchkey never stores it");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe(`${HOST}_https.key`);
    const serial = (await bundle.locator(".dialog-intro code").textContent()) ?? "";
    expect(serial).toMatch(/^[0-9a-f]{16,40}$/);
    await page.screenshot({ path: "/tmp/hosts-bundle.png" });
    const saved = new Map<string, string>();
    for (const name of [`${HOST}_https.key`, `${HOST}_https.pem`, "rootCA.pem"]) {
      const file = await download(page, bundle.getByRole("link", { name }), files.path);
      expect(file.name).toBe(name);
      saved.set(name, file.text);
    }
    expect(saved.get(`${HOST}_https.key`)).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    expect(saved.get(`${HOST}_https.pem`)).toStartWith("-----BEGIN CERTIFICATE-----\n");
    expect(saved.get("rootCA.pem")).toBe((await call(server.url, "GET", "/api/ca.pem")).text);
    // The key is the certificate's, the certificate is the root's, for this host, with the serial shown.
    const keyFile = join(files.path, `${HOST}_https.key`);
    const certFile = join(files.path, `${HOST}_https.pem`);
    const publicKey = run(["openssl", "pkey", "-pubout", "-in", keyFile]).out;
    expect(publicKey).toContain("BEGIN PUBLIC KEY");
    expect(run(["openssl", "x509", "-noout", "-pubkey", "-in", certFile]).out).toBe(publicKey);
    expect(run(["openssl", "verify", "-CAfile", join(files.path, "rootCA.pem"), certFile]).out).toBe(`${certFile}: OK\n`);
    expect(run(["openssl", "x509", "-noout", "-subject", "-serial", "-in", certFile]).out).toBe(
      `subject=CN = ${HOST}\nserial=${serial.toUpperCase()}\n`,
    );

    const port = new URL(server.url).port;
    expect(port).not.toBe("9443");
    await bundle.getByRole("button", { name: "Copy the curl command" }).click();
    await bundle.getByRole("button", { name: "Copy the curl command" }).getByText("Copied").waitFor();
    const command = await page.evaluate(() => navigator.clipboard.readText());
    expect(command).toBe(
      `curl --cert ${HOST}_https.pem --key ${HOST}_https.key --cacert rootCA.pem \\\n` +
        `  -X POST https://127.0.0.1:9443/api/hosts/${HOST}/client -H 'content-type: application/json' \\\n` +
        `  -d '{"interfaces":[],"port":0,"version":"curl"}'`,
    );
    await bundle.getByRole("button", { name: "Done" }).click();
    await bundle.waitFor({ state: "detached" });
    await focusMovesTo(page, `Download bundle for ${HOST}`);
    // The new certificate reached the row through certificates.changed; a year away, no warning.
    await web.locator(`a[title="${serial}"]`, { hasText: `${serial.slice(0, 8)}…` }).waitFor();
    await web.getByText("until", { exact: false }).waitFor();
    expect(await web.locator(".expiry-soon").count()).toBe(0);

    // The host reports with curl over mutual TLS: online, with its interfaces, without a reload.
    expect(await report(files.path, HOST, REPORT)).toMatchObject({ code: 0, out: `{"ok":true,"hostname":"${HOST}"}` });
    await web.locator(".badge-online", { hasText: "online" }).waitFor();
    await web.locator(".interface-name", { hasText: "eth0" }).waitFor();
    await web.getByText("192.0.2.1", { exact: true }).waitFor();
    await web.getByText("port 8080").waitFor();
    await web.getByText("1.0", { exact: true }).waitFor();
    await web.getByText("from 127.0.0.1").waitFor();
    const reported = web.locator("time", { hasText: "just now" });
    expect(await reported.getAttribute("title")).toMatch(/\d{1,2}:\d{2}:\d{2}/);
    // The copied command works as given, once pointed at this server's listener.
    const copied = await runAsync(
      ["sh", "-c", `${command.replace("https://127.0.0.1:9443", server.mtlsUrl)} -sS --fail-with-body`],
      files.path,
    );
    expect(copied).toMatchObject({ code: 0, out: `{"ok":true,"hostname":"${HOST}"}` });
    await page.screenshot({ path: "/tmp/hosts-online.png" });

    // Another host, registered elsewhere, with a certificate that runs out in 10 days: flagged.
    expect((await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: OTHER, group: "lab" } })).status).toBe(201);
    const db = row(page, OTHER);
    await db.locator(".badge-offline").waitFor();
    const soon = await server.services.ca.issue(
      { name: "test", address: null },
      { kind: "host", commonName: OTHER, sans: [OTHER], usages: ["clientAuth"], days: 10, key: "generate", hostname: OTHER },
    );
    // Counted from the page's (stopped) clock, which may lag real time by a few seconds.
    const pageNow = await page.evaluate(() => Date.now());
    const days = Math.ceil((Date.parse(soon.certificate.not_after) - pageNow) / 86_400_000);
    expect(days === 10 || days === 11).toBe(true);
    await db.locator(".expiry-soon", { hasText: `expires in ${days} days` }).waitFor();
    expect(await web.locator(".expiry-soon").count()).toBe(0);
    const otherFiles = tempDir("latchkey-panel-other-");
    cleanups.push(otherFiles.remove);
    writeFileSync(join(otherFiles.path, `${OTHER}_https.key`), soon.key!);
    writeFileSync(join(otherFiles.path, `${OTHER}_https.pem`), soon.pem);
    writeFileSync(join(otherFiles.path, "rootCA.pem"), await server.services.ca.caPem());
    const interfaces = [
      { name: "eth0", addresses: ["10.0.0.2", "fe80::2"] },
      { name: "wg0", addresses: ["10.9.0.2"] },
    ];
    expect((await report(otherFiles.path, OTHER, { interfaces, port: 5432, version: "2.1" })).code).toBe(0);
    // More than one interface folds into a disclosure, opened with the keyboard, kept open across live updates.
    const summary = db.locator("summary", { hasText: "2 interfaces, 3 addresses" });
    await summary.waitFor();
    expect(await db.getByText("wg0", { exact: true }).isVisible()).toBe(false);
    await summary.focus();
    await page.keyboard.press("Enter");
    await db.getByText("wg0", { exact: true }).waitFor();
    expect((await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: "spare.example.com" } })).status).toBe(201);
    const spare = row(page, "spare.example.com");
    await spare.waitFor();
    expect(await db.getByText("wg0", { exact: true }).isVisible()).toBe(true);
    expect(await page.evaluate(() => document.activeElement?.tagName)).toBe("SUMMARY");

    // Filters: online hosts only, kept in the address.
    await page.getByLabel("Status").selectOption("online");
    await page.waitForURL(/#\/hosts\?status=online$/);
    await spare.waitFor({ state: "detached" });
    expect(await page.locator(".listing tbody tr").count()).toBe(2);
    await page.getByLabel("Group").fill("nobody");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByText("No hosts match these filters.").waitFor();
    await page.getByRole("button", { name: "Clear" }).click();
    await spare.waitFor();

    // The row's serial leads to the Certificates page, filtered to the host.
    await web.getByRole("link", { name: `Certificate ${serial.slice(0, 8)}…` }).click();
    await page.getByRole("heading", { name: "Certificates", exact: true }).waitFor();
    await page.waitForURL(new RegExp(`#/certificates\\?hostname=${HOST.replaceAll(".", "\\.")}$`));
    expect(await page.getByLabel("Host", { exact: true }).inputValue()).toBe(HOST);
    const root = (await call(server.url, "GET", "/api/ca", { token: admin })).body as { fingerprint_colon: string };
    const rootCard = page.getByRole("region", { name: "Root CA" });
    await rootCard.getByText(root.fingerprint_colon).waitFor();
    await rootCard.getByRole("button", { name: "Copy the root's SHA-256 fingerprint" }).click();
    await rootCard.getByText("Copied").waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(root.fingerprint_colon);
    const certificate = row(page, serial.slice(0, 8));
    await certificate.locator(".badge-valid", { hasText: "valid" }).waitFor();
    expect(await page.locator(".listing tbody tr").count()).toBe(1);
    expect(await certificate.locator("code").getAttribute("title")).toBe(serial);
    const ca = await download(page, rootCard.getByRole("link", { name: "Download rootCA.pem" }), files.path);
    expect(ca).toEqual({ name: "rootCA.pem", text: saved.get("rootCA.pem")! });
    await page.screenshot({ path: "/tmp/certificates.png" });

    // Revoke with a reason; Cancel has the focus first.
    await certificate.getByRole("button", { name: `Revoke certificate ${serial}` }).click();
    const revoke = page.getByRole("dialog", { name: `Revoke certificate ${serial.slice(0, 8)}…?` });
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await revoke.getByLabel("Reason").selectOption("keyCompromise");
    await page.screenshot({ path: "/tmp/certificates-revoke.png" });
    await revoke.getByRole("button", { name: "Revoke certificate" }).click();
    await revoke.waitFor({ state: "detached" });
    await certificate.locator(".badge-revoked", { hasText: "revoked" }).waitFor();
    await certificate.getByText("Key compromise").waitFor();
    expect(await certificate.getByRole("button").count()).toBe(0);
    expect((await call(server.url, "GET", `/api/certs/${serial}`, { token: admin })).body).toMatchObject({
      status: "revoked",
      revocation_reason: "keyCompromise",
    });
    // The host's certificate no longer works.
    expect((await report(files.path, HOST, REPORT)).code).not.toBe(0);

    // The CRL behind the page's link lists it.
    const crl = await download(page, rootCard.getByRole("link", { name: "CRL (PEM)" }), files.path);
    expect(crl.text).toStartWith("-----BEGIN X509 CRL-----\n");
    const crlText = run(["openssl", "crl", "-noout", "-text", "-in", join(files.path, crl.name)]).out;
    expect(crlText).toContain(`Serial Number: ${serial.toUpperCase()}`);
    expect(crlText).toContain("Key Compromise");
    const der = await download(page, rootCard.getByRole("link", { name: "CRL (DER)" }), files.path);
    expect(run(["openssl", "crl", "-inform", "DER", "-noout", "-text", "-in", join(files.path, der.name)]).out).toBe(crlText);

    // A second revocation (another admin was quicker) shows the server's 409 in the dialog.
    await page.getByRole("button", { name: "Clear" }).click();
    await page.waitForURL(/#\/certificates$/);
    const other = row(page, soon.certificate.serial.slice(0, 8));
    await other.getByRole("button", { name: `Revoke certificate ${soon.certificate.serial}` }).click();
    const again = page.getByRole("dialog", { name: `Revoke certificate ${soon.certificate.serial.slice(0, 8)}…?` });
    await again.waitFor();
    const elsewhere = await call(server.url, "POST", `/api/certs/${soon.certificate.serial}/revoke`, {
      token: admin,
      body: { reason: "superseded" },
    });
    expect(elsewhere.status).toBe(200);
    await other.locator(".badge-revoked").waitFor();
    await again.getByRole("button", { name: "Revoke certificate" }).click();
    await again.getByRole("alert").getByText(`Certificate ${soon.certificate.serial} is already revoked.`).waitFor();
    await page.screenshot({ path: "/tmp/certificates-409.png" });
    await page.keyboard.press("Escape");
    await again.waitFor({ state: "detached" });
    await other.getByText("Superseded").waitFor();
    // A load the server refuses shows why in place of the table.
    await page.getByLabel("Host", { exact: true }).fill("not a host!");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator(".listing .callout-error", { hasText: /^The certificates could not be loaded\. .*hostname/i }).waitFor();
    expect(await page.locator(".listing table").count()).toBe(0);
    await page.getByRole("button", { name: "Clear" }).click();
    await other.waitFor();

    // Back on Hosts: the revoked certificate left the row.
    await nav(page).getByRole("link", { name: "Hosts" }).click();
    await page.getByRole("heading", { name: "Hosts" }).waitFor();
    await web.getByText("none", { exact: true }).waitFor();

    // Remove: confirmed, saying what happens to its certificates.
    await web.getByRole("button", { name: `Remove ${HOST}` }).click();
    const remove = page.getByRole("dialog", { name: `Remove host ${HOST}?` });
    expect(await remove.textContent()).toContain("Its certificates are revoked");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await remove.getByRole("button", { name: "Remove host" }).click();
    await remove.waitFor({ state: "detached" });
    await web.waitFor({ state: "detached" });
    await page.getByRole("status").getByText(`Host ${HOST} removed; its certificates are revoked.`).waitFor();
    expect((await call(server.url, "GET", `/api/hosts/${HOST}`, { token: admin })).status).toBe(404);
    // A host removed elsewhere leaves the list live too.
    expect((await call(server.url, "DELETE", "/api/hosts/spare.example.com", { token: admin })).status).toBe(204);
    await spare.waitFor({ state: "detached" });
    expect(await page.locator(".listing tbody tr").count()).toBe(1);
  });

  test("a viewer sees the hosts and certificates of their group only, and no write controls", async () => {
    for (const [hostname, group] of [
      ["alpha-01.example.com", "alpha"],
      ["beta-01.example.com", "beta"],
    ]) {
      expect((await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname, group } })).status).toBe(201);
      expect((await call(server.url, "POST", `/api/hosts/${hostname}/bundle`, { token: admin })).status).toBe(201);
    }
    await createUser(server.url, admin, { username: "vic", password: "vic-password-1", role: "viewer", allowed_groups: ["alpha"] });

    const page = await openPanel("#/hosts", { fakeClock: true });
    await signIn(page, "vic", "vic-password-1");
    await page.getByRole("heading", { name: "Hosts" }).waitFor();
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
    await row(page, "alpha-01.example.com").waitFor();
    expect(await page.locator(".listing tbody tr td.host-name").allTextContents()).toEqual(["alpha-01.example.com"]);
    expect(await page.getByText("You see the hosts of your groups.").count()).toBe(1);
    expect(await page.getByRole("button", { name: /^Register host|^Download bundle|^Remove / }).count()).toBe(0);
    expect(await page.getByRole("columnheader", { name: "Actions" }).count()).toBe(0);
    await page.locator(".live-live").waitFor();
    await page.clock.pauseAt(Date.now() + 1000);
    await page.screenshot({ path: "/tmp/hosts-viewer.png" });

    // Live, and still scoped: a host of another group stays out when one of theirs arrives.
    await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: "beta-02.example.com", group: "beta" } });
    await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: "alpha-02.example.com", group: "alpha" } });
    await row(page, "alpha-02.example.com").waitFor();
    expect(await page.locator(".listing tbody tr td.host-name").allTextContents()).toEqual([
      "alpha-01.example.com",
      "alpha-02.example.com",
    ]);

    await nav(page).getByRole("link", { name: "Certificates", exact: true }).click();
    await page.getByRole("heading", { name: "Certificates", exact: true }).waitFor();
    await page.getByRole("region", { name: "Root CA" }).getByText("SHA-256 fingerprint").waitFor();
    await page.locator(".listing tbody tr").first().waitFor();
    expect(await page.locator(".listing tbody tr td:nth-child(4)").allTextContents()).toEqual(["alpha-01.example.com"]);
    expect(await page.getByRole("button", { name: /^Revoke/ }).count()).toBe(0);

    // The server agrees.
    const viewer = await login(server.url, "vic", "vic-password-1");
    expect((await call(server.url, "POST", "/api/hosts", { token: viewer, body: { hostname: "mine.example.com" } })).status).toBe(403);
  });

  test("on a 390 px phone the pages and the bundle dialog fit without sideways scrolling", async () => {
    const page = await openPanel("#/hosts", { width: 390 });
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Hosts" }).waitFor();
    const alpha = row(page, "alpha-01.example.com");
    await alpha.waitFor();
    await noHorizontalScroll(page);
    // Each host is a card: nothing scrolls sideways and its actions are on screen.
    const frame = await page.locator(".listing .table-wrap").evaluate((e) => ({ scroll: e.scrollWidth, client: e.clientWidth }));
    expect(frame.scroll).toBeLessThanOrEqual(frame.client);
    expect(frame.client).toBeLessThanOrEqual(390);
    const download = (await alpha.getByRole("button", { name: "Download bundle for alpha-01.example.com" }).boundingBox())!;
    expect(download.x).toBeGreaterThanOrEqual(0);
    expect(download.x + download.width).toBeLessThanOrEqual(390);
    await page.screenshot({ path: "/tmp/hosts-390.png", fullPage: true });

    await alpha.getByRole("button", { name: "Download bundle for alpha-01.example.com" }).click();
    await page
      .getByRole("dialog", { name: "Download a bundle for alpha-01.example.com?" })
      .getByRole("button", { name: "Issue bundle" })
      .click();
    const bundle = page.getByRole("dialog", { name: "Bundle for alpha-01.example.com" });
    await bundle.waitFor();
    const box = await bundle.boundingBox();
    expect(box!.x).toBeGreaterThanOrEqual(0);
    expect(box!.x + box!.width).toBeLessThanOrEqual(390);
    expect(await bundle.evaluate((e) => e.scrollWidth <= e.clientWidth)).toBe(true);
    await page.screenshot({ path: "/tmp/hosts-bundle-390.png" });
    await page.keyboard.press("Escape");
    await bundle.waitFor({ state: "detached" });
    await focusMovesTo(page, "Download bundle for alpha-01.example.com");

    // The navigation is a menu here.
    await page.getByRole("button", { name: "Menu" }).click();
    await nav(page).getByRole("link", { name: "Certificates", exact: true }).click();
    await page.getByRole("heading", { name: "Certificates", exact: true }).waitFor();
    await page.getByRole("region", { name: "Root CA" }).getByText("SHA-256 fingerprint").waitFor();
    await page.locator(".listing tbody tr").first().waitFor();
    await noHorizontalScroll(page);
    await page.screenshot({ path: "/tmp/certificates-390.png", fullPage: true });
  });
});
