/**
 * The Pre-shared keys and Clients pages in a real browser (Debian's headless Chromium through
 * playwright-core) against a real server: an admin turns on Require Authentication Key, generates
 * keys, copies a key's install command; a client registers with that key and both open pages
 * follow live (key active, client online); revoking the key in the page disconnects the client
 * and the Clients page shows it offline, all without a reload. A viewer sees masked keys of their
 * group and no write controls. No console errors or CSP violations are allowed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { KEY_IN_USE_WINDOW_MS } from "../src/core/enrollment/index.ts";
import { VERSION } from "../src/version.ts";
import {
  ADMIN_PASSWORD,
  call,
  createUser,
  eventually,
  login,
  RpcClient,
  runLatchkey,
  spawnLatchkey,
  startTestServer,
  tempDir,
  type TestServer,
} from "./support.ts";
import { launchChromium, nav, reportCspViolations, signIn, watchPage, ACTION_TIMEOUT_MS } from "./browser.ts";

setDefaultTimeout(30_000);

/** The session probe before signing in; Chromium logs each failed fetch as a console error. */
const EXPECTED_REFUSAL = /^Failed to load resource: the server responded with a status of 401 /;
const KEY = /^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$/;
const LABEL = "berlin-lab";
/** The agent names its client after the machine's hostname (the label is the key's). */
const MACHINE = hostname();

let server: TestServer;
/** The server's clock runs with real time plus this, to age a key's binding past the "in use" window. */
let skew = 0;
let browser: Browser;
const contexts: BrowserContext[] = [];
const clients: RpcClient[] = [];
const cleanups: (() => void)[] = [];
const problems: string[] = [];

beforeAll(async () => {
  server = await startTestServer({ clock: () => Date.now() + skew });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const cleanup of cleanups.splice(0)) cleanup();
  for (const context of contexts.splice(0)) await context.close();
  const seen = problems.splice(0);
  expect(seen).toEqual([]);
});

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 }, permissions: ["clipboard-read", "clipboard-write"] });
  contexts.push(context);
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  await reportCspViolations(context);
  return context;
}

/**
 * A page of `context` on the panel, recording console errors and CSP violations. Its timers run
 * on Playwright's clock, so that a test can stop the periodic refresh and see that what changes
 * arrived through the live socket.
 */
async function openPanel(context: BrowserContext, hash = "", options: { signedIn?: boolean } = {}): Promise<Page> {
  const page = await context.newPage();
  await page.clock.install();
  watchPage(page, problems, EXPECTED_REFUSAL);
  const response = await page.goto(`${server.url}/${hash}`);
  expect(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
  if (options.signedIn) await page.getByRole("button", { name: "Sign out" }).waitFor();
  else await page.getByRole("heading", { name: "latchkey" }).waitFor();
  return page;
}

/** The keys table's row of a key. */
function keyRow(page: Page, key: string) {
  return page.locator(".listing tbody tr", { has: page.locator("code.token", { hasText: key }) });
}

function clientRow(page: Page, uuid: string) {
  return page.locator(".listing tbody tr", { has: page.locator(`code[title="${uuid}"]`) });
}

/** Registers like the agent does: `client/register` over /ws, the socket being its presence. */
async function register(uuid: string, key: string): Promise<{ client: RpcClient; reply: any }> {
  const client = await RpcClient.connect(server.wsUrl);
  clients.push(client);
  const reply = await client.request("client", "register", {
    uuid,
    name: LABEL,
    hostname: "lab-01.example",
    version: "1.2.3",
    os: "linux",
    auth_key: key,
  });
  return { client, reply };
}

describe("enrollment pages", () => {
  test("admin requires keys, copies an install command, sees the client enroll live and revokes it", async () => {
    const context = await newContext();
    const page = await openPanel(context, "#/keys");
    await signIn(page, "admin", ADMIN_PASSWORD);
    await page.getByRole("heading", { name: "Pre-shared keys" }).waitFor();
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
    await page.getByText("No pre-shared keys yet.").waitFor();
    await page.locator(".live-live").waitFor();

    // General Settings: the switch takes effect at once, on the server too.
    const toggle = page.getByRole("switch", { name: "Require Authentication Key" });
    expect(await toggle.isChecked()).toBe(false);
    await toggle.click();
    await page.getByRole("status").getByText("Require Authentication Key is on: clients must present a valid key.").waitFor();
    expect(await toggle.isChecked()).toBe(true);
    const adminToken = await login(server.url);
    expect((await call(server.url, "GET", "/api/settings", { token: adminToken })).body).toEqual({ require_auth_key: true });
    // With the setting on, a client without a key is refused.
    const keyless = await RpcClient.connect(server.wsUrl);
    clients.push(keyless);
    const refused = await keyless.request("client", "register", { uuid: randomUUID(), name: "nokey", hostname: "nokey.example" });
    expect(JSON.stringify(refused)).toContain("AUTH_REQUIRED");

    // Generate three keys with a label.
    await page.getByRole("button", { name: "Generate keys" }).click();
    const generate = page.getByRole("dialog", { name: "Generate keys" });
    await generate.getByLabel("Quantity").fill("3");
    await generate.getByLabel("Label").fill(LABEL);
    await page.screenshot({ path: "/tmp/enrollment-generate.png" });
    await generate.getByRole("button", { name: "Generate" }).click();
    await generate.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("3 keys generated.").waitFor();
    await page.locator(".listing tbody tr").nth(2).waitFor();
    expect(await page.locator(".listing tbody tr").count()).toBe(3);
    const keys = await page.locator(".listing code.token").allTextContents();
    for (const key of keys) expect(key).toMatch(KEY);
    expect(await page.locator(".listing .badge-pending").count()).toBe(3);
    expect(await page.locator(".listing td.memo", { hasText: LABEL }).count()).toBe(3);

    // Copy: exactly the server's install command for that key.
    const key = keys[1]!;
    const row = keyRow(page, key);
    const copy = row.getByRole("button", { name: `Copy the install command of key ${key}` });
    await copy.click();
    await copy.getByText("Copied").waitFor();
    const command = await page.evaluate(() => navigator.clipboard.readText());
    const port = new URL(server.url).port;
    const pin = await server.services.ca.caFingerprint();
    expect(command).toBe(
      `latchkey client install -server 127.0.0.1:${port} -ca-fingerprint ${pin} -mtls-port ${server.mtlsPort} -key ${key}`,
    );
    const id: number = (await call(server.url, "GET", "/api/keys", { token: adminToken })).body.items.find(
      (k: { key: string }) => k.key === key,
    ).id;
    expect((await call(server.url, "GET", `/api/keys/${id}/install-command`, { token: adminToken })).body.command).toBe(command);
    await page.screenshot({ path: "/tmp/enrollment-keys.png" });

    // A second tab on the Clients page (same session): nothing enrolled yet.
    const clientsPage = await openPanel(context, "#/clients", { signedIn: true });
    await clientsPage.getByRole("heading", { name: "Clients" }).waitFor();
    await clientsPage.getByText("No clients yet.").waitFor();
    await clientsPage.locator(".live-live").waitFor();

    // From here on both pages' timers stand still: whatever changes comes over the live socket.
    await page.clock.pauseAt(Date.now() + 1000);
    await clientsPage.clock.pauseAt(Date.now() + 1000);

    // The machine owner runs the copied command (without the systemd unit, in a temp state
    // directory), then the agent: it registers with the key and stays connected.
    const state = tempDir("latchkey-agent-");
    cleanups.push(state.remove);
    const argv = command.split(" ");
    expect(argv.slice(0, 3)).toEqual(["latchkey", "client", "install"]);
    const installed = await runLatchkey([...argv.slice(1), "--no-service", "--state-dir", state.path]);
    expect(installed.code).toBe(0);
    const uuid = (JSON.parse(readFileSync(join(state.path, "client.json"), "utf8")) as { uuid: string }).uuid;
    expect(uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const agent = spawnLatchkey(["client", "run", "--state-dir", state.path]);
    cleanups.push(() => agent.kill());
    const agentLog = new Response(agent.stderr).text();
    const agentOut = new Response(agent.stdout).text();

    await row.locator(".badge-active", { hasText: "active" }).waitFor();
    await row.getByRole("link", { name: MACHINE }).waitFor();
    // Two uses: the registration over TLS that bound the key, then the agent's reconnection over
    // mTLS with its new certificate. (Waiting for "1" raced the reconnection.)
    await row.locator("td.num", { hasText: /^2$/ }).waitFor();
    expect(await page.locator(".listing .badge-pending").count()).toBe(2);
    await page.screenshot({ path: "/tmp/enrollment-keys-active.png" });

    const onlineRow = clientRow(clientsPage, uuid);
    await onlineRow.locator(".badge-online", { hasText: "online" }).waitFor();
    await onlineRow.getByText(`${process.platform}-${process.arch}`).waitFor();
    await onlineRow.getByText(VERSION, { exact: true }).waitFor();
    await onlineRow.getByRole("link", { name: `#${id}` }).waitFor();
    await clientsPage.screenshot({ path: "/tmp/enrollment-clients-online.png" });

    // A second machine with the same key is refused: within 10 s of the binding the key is "in
    // use" (two machines raced for it), later it is bound to a different client.
    const { reply: racing } = await register(randomUUID(), key);
    expect(JSON.stringify(racing)).toContain("AUTH_FAILED: Key already in use");
    skew += KEY_IN_USE_WINDOW_MS;
    const { reply: reuse } = await register(randomUUID(), key);
    expect(JSON.stringify(reuse)).toContain("AUTH_FAILED: Key already bound to a different client");

    // Revoke in the page: confirmation, then the client is disconnected and shows offline.
    await row.getByRole("button", { name: `Revoke key ${key}` }).click();
    const confirmRevoke = page.getByRole("dialog", { name: `Revoke key ${key}?` });
    await confirmRevoke.getByText(`${MACHINE} is disconnected at once`).waitFor();
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Cancel");
    await page.screenshot({ path: "/tmp/enrollment-revoke.png" });
    await confirmRevoke.getByRole("button", { name: "Revoke key" }).click();
    await confirmRevoke.waitFor({ state: "detached" });
    await page.getByRole("status").getByText(`Key ${key} revoked.`).waitFor();
    await row.locator(".badge-revoked", { hasText: "revoked" }).waitFor();
    expect(await row.getByRole("button", { name: /^Copy/ }).count()).toBe(0);
    // The agent is disconnected, registers again, is refused and stops for an operator (exit 3).
    let exitCode: number | undefined;
    void agent.exited.then((code) => (exitCode = code));
    await eventually(() => exitCode !== undefined, { what: "the revoked agent to exit" });
    const logged = (await Promise.all([agentLog, agentOut])).join("");
    expect({ exited: exitCode, logged }).toMatchObject({
      exited: 3,
      logged: expect.stringContaining("AUTH_FAILED: Invalid or revoked key"),
    });
    await onlineRow.locator(".badge-offline", { hasText: "offline" }).waitFor();
    await clientsPage.screenshot({ path: "/tmp/enrollment-clients-offline.png" });
    // It is refused when it comes back.
    const { reply: again } = await register(uuid, key);
    expect(JSON.stringify(again)).toContain("AUTH_FAILED: Invalid or revoked key");

    // Reset brings the key back to pending; Delete removes another key for good.
    await row.getByRole("button", { name: `Reset key ${key}` }).click();
    const confirmReset = page.getByRole("dialog", { name: `Reset key ${key}?` });
    await confirmReset.getByRole("button", { name: "Reset key" }).click();
    await confirmReset.waitFor({ state: "detached" });
    await row.locator(".badge-pending", { hasText: "pending" }).waitFor();
    const other = keys[0]!;
    await keyRow(page, other)
      .getByRole("button", { name: `Delete key ${other}` })
      .click();
    const confirmDelete = page.getByRole("dialog", { name: `Delete key ${other}?` });
    await confirmDelete.getByText("This cannot be undone").waitFor();
    await confirmDelete.getByRole("button", { name: "Delete key" }).click();
    await confirmDelete.waitFor({ state: "detached" });
    await keyRow(page, other).waitFor({ state: "detached" });
    expect(await page.locator(".listing tbody tr").count()).toBe(2);

    // Filters on the Clients page, then Delete (it would revoke the key).
    await clientsPage.clock.resume();
    await clientsPage.getByLabel("Status").selectOption("online");
    await clientsPage.getByText("No clients match these filters.").waitFor();
    await clientsPage.waitForURL(/#\/clients\?status=online$/);
    await clientsPage.getByLabel("Status").selectOption("offline");
    await onlineRow.waitFor();
    await clientsPage.getByRole("button", { name: "Clear" }).click();
    await clientsPage.waitForURL(/#\/clients$/);
    await onlineRow.getByRole("button", { name: `Delete client ${MACHINE}` }).click();
    const confirmClient = clientsPage.getByRole("dialog", { name: `Delete client ${MACHINE}?` });
    await confirmClient.getByText("Its key and certificates are revoked and it is disconnected.").waitFor();
    await confirmClient.getByRole("button", { name: "Delete client" }).click();
    await confirmClient.waitFor({ state: "detached" });
    await clientsPage.getByText("No clients yet.").waitFor();

    // The dashboard counts clients and keys by state, and follows the setting live.
    await nav(clientsPage).getByRole("link", { name: "Dashboard" }).click();
    const clientsCard = clientsPage.locator(".card", { has: clientsPage.getByRole("heading", { name: "Clients" }) });
    const keysCard = clientsPage.locator(".card", { has: clientsPage.getByRole("heading", { name: "Pre-shared keys" }) });
    await clientsCard.getByText("of 0 enrolled clients").waitFor();
    expect(await clientsCard.locator(".stat").textContent()).toBe("0 online");
    await keysCard.locator("dt:has(.badge-pending) + dd", { hasText: "2" }).waitFor();
    await keysCard.locator("dt:has(.badge-active) + dd", { hasText: "0" }).waitFor();
    await keysCard.locator("dt:has(.badge-revoked) + dd", { hasText: "0" }).waitFor();
    await keysCard.locator("dt", { hasText: "Key required" }).locator("+ dd", { hasText: "yes" }).waitFor();

    // The setting turns off again from the page.
    await toggle.click();
    await page.getByRole("status").getByText("Require Authentication Key is off: clients register without a key.").waitFor();
    await keysCard.locator("dt", { hasText: "Key required" }).locator("+ dd", { hasText: "no" }).waitFor();
    await clientsPage.screenshot({ path: "/tmp/enrollment-dashboard.png" });
    expect((await call(server.url, "GET", "/api/settings", { token: adminToken })).body).toEqual({ require_auth_key: false });
  });

  test("a viewer sees the masked keys of their group, read-only", async () => {
    const adminToken = await login(server.url);
    await createUser(server.url, adminToken, { username: "vera", password: "viewer password", role: "viewer", allowed_groups: ["berlin"] });
    const made = await call(server.url, "POST", "/api/keys", {
      token: adminToken,
      body: { quantity: 2, label: "berlin batch", group: "berlin" },
    });
    expect(made.status).toBe(201);
    const context = await newContext();
    const page = await openPanel(context, "#/keys");
    await signIn(page, "vera", "viewer password");
    await page.getByRole("heading", { name: "Pre-shared keys" }).waitFor();
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
    expect(await page.getByRole("switch", { name: "Require Authentication Key" }).isDisabled()).toBe(true);
    await page.locator(".listing tbody tr").nth(1).waitFor();
    expect(await page.locator(".listing tbody tr").count()).toBe(2);
    for (const text of await page.locator(".listing code.token").allTextContents()) {
      expect(text).toMatch(/^[A-Z2-9]{4}-••••-••••$/);
    }
    expect(await page.getByRole("button", { name: "Generate keys" }).count()).toBe(0);
    expect(await page.locator(".listing").getByRole("button").count()).toBe(0);
    await page.screenshot({ path: "/tmp/enrollment-viewer.png" });
  });
});
