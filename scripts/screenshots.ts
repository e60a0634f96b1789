/**
 * The screenshots in docs/screenshots/: starts a server over a temporary data directory, fills it
 * with demo data through the REST API (users, pre-shared keys and enrolled clients, hosts that
 * report over mutual TLS, certificates, applications with license keys, activations and checks),
 * and photographs the admin panel in Debian's Chromium (playwright-core) on a 1366×900 screen and
 * a 390×844 phone, light, and a few dark. Builds nothing: it runs the source, or a binary if given.
 *
 *   bun scripts/screenshots.ts                        # from src/main.ts
 *   bun scripts/screenshots.ts --binary dist/latchkey # from a compiled binary (build it first)
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

const ROOT = join(import.meta.dir, "..");
const OUT = join(ROOT, "docs", "screenshots");
const PASSWORD = "demo-password-1";
const SCREENS = [
  { name: "1366", viewport: { width: 1366, height: 900 }, deviceScaleFactor: 1 },
  // At a phone's pixel density, as people see it there.
  { name: "390", viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 },
] as const;

function option(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at === -1 ? undefined : process.argv[at + 1];
}

// ---- the server ----

interface Server {
  url: string;
  mtlsUrl: string;
  stop(): Promise<void>;
}

/** `latchkey server` on free loopback ports over a fresh data directory, with admin's password set. */
async function startServer(binary: string | undefined): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), "latchkey-screenshots-"));
  const command = binary ? [resolve(binary)] : [process.execPath, join(ROOT, "src/main.ts")];
  const proc = Bun.spawn([...command, "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LATCHKEY_ADMIN_PASSWORD: PASSWORD, LATCHKEY_MTLS_LISTEN: "127.0.0.1:0" },
    stdout: "ignore",
    stderr: "pipe",
  });
  const stop = async () => {
    proc.kill();
    await proc.exited;
    rmSync(dataDir, { recursive: true, force: true });
  };
  // Read the log to the end, so that a full pipe never blocks the server.
  let log = "";
  let ended = false;
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) log += decoder.decode(chunk, { stream: true });
    ended = true;
  })();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && !ended) {
    const listening = /url=(\S+) mtls=(\S+)/.exec(log);
    if (listening) return { url: listening[1]!, mtlsUrl: listening[2]!.replace("127.0.0.1", "localhost"), stop };
    await Bun.sleep(50);
  }
  await stop();
  throw new Error(`the server did not start; its log:\n${log}`);
}

// ---- demo data ----

async function request<T = any>(server: Server, method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

/** An enrolled client: registered over the WebSocket like the agent, online while its socket is open. */
async function enroll(server: Server, key: string, name: string, hostname: string, os: string): Promise<WebSocket> {
  const socket = new WebSocket(`${server.url.replace(/^http/, "ws")}/ws`);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error("cannot open the WebSocket"));
  });
  const reply = new Promise<any>((resolve) => {
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      if (message.id === "1") resolve(message);
    };
  });
  const args = { uuid: crypto.randomUUID(), name, hostname, version: "1.4.2", os, auth_key: key };
  socket.send(JSON.stringify({ namespace: "client", name: "register", id: "1", args }));
  const answer = await reply;
  if (answer.name !== "response") throw new Error(`client/register: ${JSON.stringify(answer)}`);
  return socket;
}

/** A woodstock host's report over mutual TLS, with the bundle the server issued it. */
async function hostReport(server: Server, bundle: { hostname: string; key: string; certificate: string; ca: string }, addresses: string[]) {
  const res = await fetch(`${server.mtlsUrl}/api/hosts/${bundle.hostname}/client`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ interfaces: [{ name: "eth0", addresses }], port: 8080, version: "2.3.1" }),
    tls: { cert: bundle.certificate, key: bundle.key, ca: bundle.ca },
  });
  if (!res.ok) throw new Error(`report of ${bundle.hostname}: ${res.status} ${await res.text()}`);
}

async function activate(server: Server, token: string, hwid: string, machine: string, user: string): Promise<void> {
  const res = await fetch(`${server.url}/api/activate`, { method: "POST", body: new URLSearchParams({ token, hwid, machine, user }) });
  if (res.status !== 201) throw new Error(`activation of ${machine}: ${res.status} ${await res.text()}`);
}

async function check(server: Server, token: string, hwid: string): Promise<void> {
  await (await fetch(`${server.url}/api/check?${new URLSearchParams({ token, hwid })}`)).body?.cancel();
}

/** Fills the server; returns the open client sockets and the license whose details are shown. */
async function seed(server: Server): Promise<{ sockets: WebSocket[]; featured: number }> {
  const login = (username: string, password: string) =>
    request<{ token: string }>(server, "POST", "/api/auth/login", null, { username, password }).then((r) => r.token);
  const admin = await login("admin", PASSWORD);
  const post = <T = any>(path: string, body: unknown = {}) => request<T>(server, "POST", path, admin, body);

  for (const user of [
    { username: "maria.schmidt", password: "maria-demo-pass", role: "admin", allowed_groups: [] },
    { username: "jonas", password: "jonas-demo-pass", role: "viewer", allowed_groups: ["berlin"] },
    { username: "support", password: "support-demo-pass", role: "viewer", allowed_groups: ["berlin", "lab"] },
  ])
    await post("/api/users", user);
  await login("jonas", "jonas-demo-pass");
  await login("maria.schmidt", "maria-demo-pass");
  await fetch(`${server.url}/api/auth/login`, { method: "POST", body: JSON.stringify({ username: "jonas", password: "wrong" }) });

  const inDays = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);
  type Key = { id: number; key: string };
  const berlin = (await post<{ items: Key[] }>("/api/keys", { quantity: 5, label: "Berlin office – front desk", group: "berlin" })).items;
  const lab = (await post<{ items: Key[] }>("/api/keys", { quantity: 3, label: "Lab machines", group: "lab", expires_at: inDays(30) }))
    .items;
  await post("/api/keys", { quantity: 2, label: "Spare keys", expires_at: inDays(7) });
  // With the setting on, each client is bound to its key (active); off, keys are ignored.
  await request(server, "PATCH", "/api/settings", admin, { require_auth_key: true });
  const sockets = [
    await enroll(server, berlin[0]!.key, "FRONTDESK-01", "frontdesk-01.berlin.example", "windows"),
    await enroll(server, berlin[1]!.key, "FRONTDESK-02", "frontdesk-02.berlin.example", "windows"),
    await enroll(server, lab[0]!.key, "lab-build-3", "lab-build-3.lab.example", "linux"),
  ];
  const offline = await enroll(server, berlin[2]!.key, "MEETING-ROOM", "meeting-room.berlin.example", "windows");
  offline.close();
  await post(`/api/keys/${berlin[4]!.id}/revoke`);

  type Bundle = { hostname: string; key: string; certificate: string; ca: string; serial: string };
  const hosts = [
    { hostname: "web-01.example.com", group: "berlin", addresses: ["192.0.2.10", "2001:db8::10"] },
    { hostname: "db-01.example.com", group: "berlin", addresses: ["192.0.2.20"] },
    { hostname: "build-02.lab.example", group: "lab", addresses: ["198.51.100.7"] },
  ];
  for (const host of hosts) {
    await post("/api/hosts", { hostname: host.hostname, group: host.group });
    const bundle = await post<Bundle>(`/api/hosts/${host.hostname}/bundle`);
    await hostReport(server, bundle, host.addresses);
  }
  await post("/api/hosts", { hostname: "backup-01.example.com" });
  const replaced = await post<Bundle>("/api/hosts/db-01.example.com/bundle");
  await post(`/api/certs/${replaced.serial}/revoke`, { reason: "superseded" });
  await post("/api/users/admin/certificates/issue", { nickname: "Laptop", email: "admin@example.com" });
  await post("/api/users/maria.schmidt/certificates/issue", { nickname: "YubiKey", email: "maria.schmidt@example.com", days: 365 });

  type App = { id: number };
  type License = { id: number; token: string };
  const editor = await post<App>("/api/apps", { name: "Acme Editor", support_message: "Questions? Write to support@acme.example." });
  const sync = await post<App>("/api/apps", { name: "Acme Sync" });
  const license = (app: App, activations: number, memo: string, expires_at?: string) =>
    post<License>("/api/licenses", { app_id: app.id, activations, memo, ...(expires_at ? { expires_at } : {}) });
  const muller = await license(editor, 5, "Müller GmbH – order 1042");
  for (const [hwid, machine, user] of [
    ["5f1c-9a", "MUELLER-PC01", "anna"],
    ["7b2e-41", "MUELLER-PC02", "ben"],
    ["c9d0-13", "MUELLER-LAPTOP", "carla"],
  ] as const) {
    await activate(server, muller.token, hwid, machine, user);
    for (let i = 0; i < 3; i++) await check(server, muller.token, hwid);
  }
  const trial = await license(editor, 1, "Trial – Jonas K.", inDays(14));
  await activate(server, trial.token, "e4a1-77", "JK-NOTEBOOK", "jonas");
  const site = await license(editor, -1, "Site license – university lab");
  for (let i = 1; i <= 7; i++) await activate(server, site.token, `lab-${i}`, `LAB-PC-${String(i).padStart(2, "0")}`, "student");
  const full = await license(sync, 2, "Order 1077");
  await activate(server, full.token, "aa01", "SYNC-SERVER", "ops");
  await activate(server, full.token, "aa02", "SYNC-STANDBY", "ops");
  const refunded = await license(sync, 1, "Refunded – order 1080");
  await request(server, "PATCH", `/api/licenses/${refunded.id}`, admin, { enabled: false });
  await license(sync, 3, "Lapsed subscription", "2025-06-30");
  return { sockets, featured: muller.id };
}

// ---- the pictures ----

/** Waits until nothing on the page is loading, and the last transitions have ended. */
async function settle(page: Page): Promise<void> {
  await page.waitForFunction(() => document.querySelector('[aria-busy="true"]') === null);
  await page.waitForTimeout(400);
}

async function shoot(page: Page, file: string): Promise<void> {
  await settle(page);
  const path = join(OUT, `${file}.png`);
  // The dashboard whole (its charts are below the cards); the other pages as the window shows them.
  await page.screenshot({ path, animations: "disabled", caret: "hide", fullPage: file.startsWith("dashboard") });
  console.log(`${relative(ROOT, path)}  ${Math.round(statSync(path).size / 1024)} KB`);
}

async function visit(page: Page, server: Server, id: string, ready: string): Promise<void> {
  await page.goto(`${server.url}/#/${id}`);
  await page.locator(ready).first().waitFor();
  // The page takes the focus on arrival, for screen readers; a picture needs no focus ring.
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
}

async function photograph(browser: Browser, server: Server, featured: number): Promise<void> {
  const openDetails = async (page: Page) => {
    await page.getByRole("button", { name: `Details of key #${featured}` }).click();
    await page
      .getByRole("dialog", { name: `Key #${featured}` })
      .getByRole("row")
      .nth(1)
      .waitFor();
  };
  const shots: { id: string; file: string; ready: string; dark?: boolean; after?: (page: Page) => Promise<void> }[] = [
    { id: "dashboard", file: "dashboard", ready: ".card" },
    { id: "keys", file: "keys", ready: ".listing tbody tr" },
    { id: "clients", file: "clients", ready: ".listing tbody tr" },
    { id: "hosts", file: "hosts", ready: ".listing tbody tr" },
    { id: "certificates", file: "certificates", ready: ".listing tbody tr" },
    { id: "licenses", file: "licenses", ready: ".listing tbody tr", after: openDetails },
    { id: "audit", file: "audit", ready: "tbody tr" },
    { id: "dashboard", file: "dashboard-dark", ready: ".card", dark: true },
    { id: "licenses", file: "licenses-dark", ready: ".listing tbody tr", dark: true, after: openDetails },
  ];
  for (const screen of SCREENS) {
    for (const dark of [false, true]) {
      const context = await browser.newContext({
        viewport: screen.viewport,
        deviceScaleFactor: screen.deviceScaleFactor,
        colorScheme: dark ? "dark" : "light",
      });
      const page = await context.newPage();
      await page.goto(server.url);
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("button", { name: "Sign out" }).waitFor();
      for (const shot of shots.filter((s) => Boolean(s.dark) === dark)) {
        await visit(page, server, shot.id, shot.ready);
        await shot.after?.(page);
        await shoot(page, `${shot.file}-${screen.name}`);
        if (shot.after) await page.keyboard.press("Escape");
      }
      await context.close();
    }
  }
}

mkdirSync(OUT, { recursive: true });
const server = await startServer(option("--binary"));
let browser: Browser | undefined;
let sockets: WebSocket[] = [];
try {
  const seeded = await seed(server);
  sockets = seeded.sockets;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-color-profile=srgb"],
  });
  await photograph(browser, server, seeded.featured);
} finally {
  for (const socket of sockets) socket.close();
  await browser?.close();
  await server.stop();
}
