/**
 * Hosts and certificates over REST and RPC (SPEC §3, §5; woodstock seed), against a real server:
 * registering hosts (kept lower-case), lists with filters and pages, viewers scoped to their
 * groups, certificate bundles checked with `openssl` (chain, key pair, and the key stored nowhere),
 * revocation and the CRL, removing a host, the audit log, the live `events` pushes, the gauges in
 * /metrics, and the OpenAPI document.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createPrivateKey } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPORT_PUSH_INTERVAL_MS, type HostReport } from "../src/core/hosts.ts";
import { call, createUser, eventually, login, RpcClient, startTestServer, storedData, tempDir, type TestServer } from "./support.ts";

const DAY_MS = 86_400_000;
const REPORT: HostReport = { interfaces: [{ name: "eth0", addresses: ["192.0.2.10/24"] }], port: 3657, version: "1.0.0" };

let server: TestServer;
/** The server's clock: real time, plus whatever a test adds. */
let skew = 0;
let admin: string;
/** Viewers of the groups east and west. */
let east: string;
let west: string;
/** Signed-in sockets that collect the pushes each role hears. */
let adminSocket: RpcClient;
let eastSocket: RpcClient;
let westSocket: RpcClient;
const files = tempDir("latchkey-hosts-api-");

const api = (method: string, path: string, options: { token?: string; body?: unknown } = {}) =>
  call(server.url, method, path, { token: admin, ...options });

async function register(hostname: string, group?: string): Promise<any> {
  const res = await api("POST", "/api/hosts", { body: { hostname, ...(group ? { group } : {}) } });
  expect(res.status).toBe(201);
  return res.body;
}

async function bundle(hostname: string): Promise<any> {
  const res = await api("POST", `/api/hosts/${hostname}/bundle`);
  expect(res.status).toBe(201);
  return res.body;
}

/** Runs openssl in the test's temp directory. */
function openssl(...args: string[]): { code: number; stdout: string; stderr: string } {
  const run = Bun.spawnSync(["openssl", ...args], { cwd: files.path, stdout: "pipe", stderr: "pipe" });
  return { code: run.exitCode, stdout: run.stdout.toString(), stderr: run.stderr.toString() };
}

async function signedInSocket(token: string): Promise<RpcClient> {
  const socket = await RpcClient.connect(server.wsUrl);
  expect((await socket.request("rpc", "auth_token", { token })).name).toBe("response");
  return socket;
}

function waitForEvent(socket: RpcClient, topic: string, match: (args: any) => boolean): Promise<any> {
  return eventually(() => socket.events.find((e) => e.name === topic && match(e.args)), { what: `the event ${topic}` });
}

/** A round trip on each socket: every push sent to it before now has arrived. */
async function settle(...sockets: RpcClient[]): Promise<void> {
  for (const socket of sockets) expect((await socket.request("rpc", "query", {})).name).toBe("response");
}

/** The pushes of one topic about one host that a socket heard. */
function heard(socket: RpcClient, topic: string, hostname: string): any[] {
  return socket.events.filter((e) => e.name === topic && e.args.hostname === hostname).map((e) => e.args);
}

async function audit(action: string, target: string): Promise<any[]> {
  const res = await api("GET", `/api/audit?action=${encodeURIComponent(action)}&limit=1000`);
  return res.body.items.filter((e: { target: string }) => e.target === target);
}

async function gauge(name: string, state: string): Promise<number> {
  const text = (await call(server.url, "GET", "/metrics")).text;
  const prefix = `${name}{state="${state}"} `;
  const line = text.split("\n").find((l) => l.startsWith(prefix));
  if (line === undefined) throw new Error(`no ${prefix.trim()} in /metrics`);
  return Number(line.slice(prefix.length));
}

beforeAll(async () => {
  server = await startTestServer({ clock: () => Date.now() + skew });
  admin = await login(server.url);
  await createUser(server.url, admin, { username: "east-viewer", password: "viewer-password", role: "viewer", allowed_groups: ["east"] });
  await createUser(server.url, admin, { username: "west-viewer", password: "viewer-password", role: "viewer", allowed_groups: ["west"] });
  east = await login(server.url, "east-viewer", "viewer-password");
  west = await login(server.url, "west-viewer", "viewer-password");
  adminSocket = await signedInSocket(admin);
  eastSocket = await signedInSocket(east);
  westSocket = await signedInSocket(west);
});
afterAll(async () => {
  for (const socket of [adminSocket, eastSocket, westSocket]) socket?.close();
  await server?.close();
  files.remove();
});

describe("hosts", () => {
  test("a host is registered once, lower-case; audited, and pushed to admins and its group's viewers only", async () => {
    const created = await register("Web1.East.Example", "east");
    expect(created).toMatchObject({ hostname: "web1.east.example", group: "east", online: false, report: null, certificate: null });
    const again = await api("POST", "/api/hosts", { body: { hostname: "WEB1.east.example" } });
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({ code: "conflict", field: "hostname" });
    expect((await api("GET", "/api/hosts/WEB1.EAST.EXAMPLE")).body.hostname).toBe("web1.east.example");

    const change = { hostname: "web1.east.example", change: "registered" };
    await waitForEvent(adminSocket, "hosts.changed", (a) => a.hostname === change.hostname);
    await waitForEvent(eastSocket, "hosts.changed", (a) => a.hostname === change.hostname);
    await settle(westSocket);
    expect(heard(adminSocket, "hosts.changed", change.hostname)).toEqual([change]);
    expect(heard(eastSocket, "hosts.changed", change.hostname)).toEqual([change]);
    expect(heard(westSocket, "hosts.changed", change.hostname)).toEqual([]);

    const entries = await audit("host.register", "web1.east.example");
    expect(entries.map((e) => [e.actor, e.outcome, e.reason])).toEqual([
      ["admin", "failure", "exists"],
      ["admin", "success", "east"],
    ]);
  });

  test("GET /api/hosts filters by group and status, and pages; viewers see only their groups' hosts", async () => {
    for (const name of ["c.list-a.example", "a.list-a.example", "b.list-a.example"]) await register(name, "list-a");
    await register("d.list-b.example", "list-b");
    await register("e.nogroup.example");
    const page = async (query: string, token = admin) => {
      const res = await api("GET", `/api/hosts?${query}`, { token });
      expect(res.status).toBe(200);
      return { names: res.body.items.map((h: { hostname: string }) => h.hostname), total: res.body.total };
    };
    expect(await page("group=list-a")).toEqual({ names: ["a.list-a.example", "b.list-a.example", "c.list-a.example"], total: 3 });
    expect(await page("group=list-a&limit=2")).toEqual({ names: ["a.list-a.example", "b.list-a.example"], total: 3 });
    expect(await page("group=list-a&limit=2&offset=2")).toEqual({ names: ["c.list-a.example"], total: 3 });

    await server.services.hosts.recordReport("b.list-a.example", REPORT, "192.0.2.10");
    expect(await page("group=list-a&status=online")).toEqual({ names: ["b.list-a.example"], total: 1 });
    expect(await page("group=list-a&status=offline")).toEqual({ names: ["a.list-a.example", "c.list-a.example"], total: 2 });
    const reported = (await api("GET", "/api/hosts/b.list-a.example")).body;
    expect(reported).toMatchObject({ online: true, report: REPORT, last_address: "192.0.2.10" });

    await createUser(server.url, admin, {
      username: "list-a-viewer",
      password: "viewer-password",
      role: "viewer",
      allowed_groups: ["list-a"],
    });
    const viewer = await login(server.url, "list-a-viewer", "viewer-password");
    expect(await page("limit=1000", viewer)).toEqual({ names: ["a.list-a.example", "b.list-a.example", "c.list-a.example"], total: 3 });
    expect(await page("group=list-b", viewer)).toEqual({ names: [], total: 0 });
    expect((await api("GET", "/api/hosts/a.list-a.example", { token: viewer })).status).toBe(200);
    for (const other of ["d.list-b.example", "e.nogroup.example"]) {
      const res = await api("GET", `/api/hosts/${other}`, { token: viewer });
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe("not_found");
    }
    expect((await api("POST", "/api/hosts", { token: viewer, body: { hostname: "f.list-a.example" } })).status).toBe(403);
  });
});

describe("bundles", () => {
  test("key, certificate and root as PEM and as the woodstock files; openssl verifies the chain and the key pair", async () => {
    await register("bundle.east.example", "east");
    const res = await api("POST", "/api/hosts/Bundle.East.Example/bundle");
    expect(res.status).toBe(201);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const b = res.body;
    expect(Object.keys(b).sort()).toEqual(["ca", "certificate", "files", "hostname", "key", "not_after", "serial"]);
    expect(b.hostname).toBe("bundle.east.example");
    expect(b.files).toEqual({ "bundle.east.example_https.key": b.key, "bundle.east.example_https.pem": b.certificate, "rootCA.pem": b.ca });
    expect(b.key).toStartWith("-----BEGIN PRIVATE KEY-----");
    for (const [name, pem] of Object.entries(b.files as Record<string, string>)) writeFileSync(join(files.path, name), pem);

    const verified = openssl("verify", "-CAfile", "rootCA.pem", "-purpose", "sslclient", "bundle.east.example_https.pem");
    expect(verified).toMatchObject({ code: 0, stdout: "bundle.east.example_https.pem: OK\n" });
    const certificateKey = openssl("x509", "-noout", "-pubkey", "-in", "bundle.east.example_https.pem");
    const privateKey = openssl("pkey", "-pubout", "-in", "bundle.east.example_https.key");
    expect(certificateKey.code).toBe(0);
    expect(privateKey.stdout).toBe(certificateKey.stdout);
    const names = openssl("x509", "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage", "-in", "bundle.east.example_https.pem");
    expect(names.stdout).toContain("CN = bundle.east.example");
    expect(names.stdout).toContain("DNS:bundle.east.example");
    expect(names.stdout).toContain("TLS Web Client Authentication");
    expect(names.stdout).not.toContain("TLS Web Server Authentication");
    const serial = openssl("x509", "-noout", "-serial", "-in", "bundle.east.example_https.pem").stdout.trim();
    expect(serial).toBe(`serial=${b.serial.toUpperCase()}`);

    // The host shows its certificate; the issue is audited and pushed to the host's group.
    expect((await api("GET", "/api/hosts/bundle.east.example")).body.certificate).toEqual({ serial: b.serial, not_after: b.not_after });
    expect((await audit("cert.issue", b.serial)).map((e) => [e.actor, e.outcome])).toEqual([["admin", "success"]]);
    for (const socket of [adminSocket, eastSocket])
      await waitForEvent(socket, "certificates.changed", (a) => a.change === "issued" && a.serials.includes(b.serial));
    await settle(westSocket);
    expect(westSocket.events.filter((e) => e.name === "certificates.changed" && e.args.serials.includes(b.serial))).toEqual([]);
  });

  test("the bundle's private key is stored nowhere in the data directory", async () => {
    await register("secret.example");
    const b = await bundle("secret.example");
    const key = createPrivateKey(b.key);
    const der = key.export({ format: "der", type: "pkcs8" });
    const scalar = Buffer.from(key.export({ format: "jwk" }).d!, "base64url");
    const pemLine = b.key.split("\n")[1];
    expect(scalar.length).toBe(32);
    const stored = await storedData(server);
    expect({ found: stored.includes(scalar) || stored.includes(der) || stored.includes(pemLine!) }).toEqual({ found: false });
    // The search finds what is stored: the certificate itself is on record.
    expect(stored.includes(Buffer.from(b.certificate.replace(/-----[^-]+-----|\s/g, ""), "base64"))).toBe(true);
    expect((await api("GET", `/api/certs/${b.serial}`)).body.pem).toBe(b.certificate);
  });

  test("GET /api/ca.pem is the root the bundle chains to; GET /api/ca describes it, without its key", async () => {
    await register("root-check.example");
    const b = await bundle("root-check.example");
    const pem = await call(server.url, "GET", "/api/ca.pem");
    expect(pem.status).toBe(200);
    expect(pem.headers.get("content-type")).toBe("application/x-pem-file");
    expect(pem.headers.get("content-disposition")).toBe('attachment; filename="rootCA.pem"');
    expect(pem.text).toBe(b.ca);

    const root = await api("GET", "/api/ca", { token: east });
    expect(root.status).toBe(200);
    expect(root.body).toMatchObject({ source: "generated", certificate: b.ca, common_name: expect.any(String) });
    expect(root.text).not.toContain("PRIVATE KEY");
    writeFileSync(join(files.path, "served-root.pem"), pem.text);
    const fingerprint = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", "served-root.pem").stdout.trim().split("=")[1];
    expect(root.body.fingerprint_colon).toBe(fingerprint);
    expect(root.body.fingerprint).toBe(fingerprint!.replaceAll(":", "").toLowerCase());
    const dates = openssl("x509", "-noout", "-enddate", "-in", "served-root.pem").stdout.trim().replace("notAfter=", "");
    expect(Date.parse(root.body.not_after)).toBe(Date.parse(dates));
  });

  test("a bundle for a host that is not registered is a 404; viewers may not ask for one", async () => {
    expect((await api("POST", "/api/hosts/unregistered.example/bundle")).status).toBe(404);
    await register("viewer-bundle.east.example", "east");
    const refused = await api("POST", "/api/hosts/viewer-bundle.east.example/bundle", { token: east });
    expect(refused.status).toBe(403);
    expect((await api("GET", "/api/certs?hostname=viewer-bundle.east.example")).body.total).toBe(0);
  });
});

describe("certificates", () => {
  test("list with filters and pages, and read by serial in any form; viewers see their groups' hosts' certificates only", async () => {
    await register("certs.east.example", "east");
    await register("certs.west.example", "west");
    const first = await bundle("certs.east.example");
    const second = await bundle("certs.east.example");
    const western = await bundle("certs.west.example");

    const list = async (query: string, token = admin) => {
      const res = await api("GET", `/api/certs?${query}`, { token });
      expect(res.status).toBe(200);
      return { serials: res.body.items.map((c: { serial: string }) => c.serial), total: res.body.total, items: res.body.items };
    };
    // Newest first.
    const mine = await list("hostname=CERTS.east.example");
    expect(mine.serials).toEqual([second.serial, first.serial]);
    expect(mine.items[0]).toMatchObject({
      kind: "host",
      status: "valid",
      expired: false,
      usages: ["clientAuth"],
      hostname: "certs.east.example",
    });
    expect(await list("hostname=certs.east.example&limit=1&offset=1")).toMatchObject({ serials: [first.serial], total: 2 });
    expect((await list("kind=host&status=valid&limit=1000")).serials).toEqual(expect.arrayContaining([first.serial, western.serial]));
    // The mTLS listener's own certificate, an admin's to see.
    const servers = await list("kind=server");
    expect(servers.total).toBe(1);
    expect(servers.items[0]).toMatchObject({ kind: "server", hostname: null, usages: ["serverAuth"] });

    const colons = first.serial.toUpperCase().replace(/(..)(?=.)/g, "$1:");
    for (const form of [first.serial, first.serial.toUpperCase(), colons]) {
      const res = await api("GET", `/api/certs/${form}`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ serial: first.serial, pem: first.certificate });
    }

    const eastern = await list("limit=1000", east);
    expect(eastern.serials).toEqual(expect.arrayContaining([first.serial, second.serial]));
    expect(eastern.serials).not.toContain(western.serial);
    expect(eastern.items.every((c: { kind: string }) => c.kind === "host")).toBe(true);
    expect((await list("kind=server", east)).total).toBe(0);
    expect((await list("hostname=certs.west.example", east)).total).toBe(0);
    expect((await api("GET", `/api/certs/${first.serial}`, { token: east })).status).toBe(200);
    for (const hidden of [western.serial, servers.serials[0]]) {
      const res = await api("GET", `/api/certs/${hidden}`, { token: east });
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe("not_found");
    }
    expect((await api("GET", "/api/certs/00ff")).status).toBe(404);
  });

  test("revoke: 200 with the view, 409 on repeat; the CRL lists it (DER and PEM, signed by the root); audited and pushed", async () => {
    await register("revoke.east.example", "east");
    const b = await bundle("revoke.east.example");
    const bad = await api("POST", `/api/certs/${b.serial}/revoke`, { body: { reason: "certificateHold" } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe("reason");
    expect((await api("POST", `/api/certs/${b.serial}/revoke`, { token: east, body: {} })).status).toBe(403);

    const revoked = await api("POST", `/api/certs/${b.serial.toUpperCase()}/revoke`, { body: { reason: "keyCompromise" } });
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ serial: b.serial, status: "revoked", revocation_reason: "keyCompromise" });
    expect(revoked.body.revoked_at).toEqual(expect.any(String));
    const again = await api("POST", `/api/certs/${b.serial}/revoke`, { body: { reason: "superseded" } });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("conflict");
    expect((await api("GET", `/api/certs/${b.serial}`)).body).toMatchObject({ status: "revoked", revocation_reason: "keyCompromise" });
    expect((await api("GET", "/api/hosts/revoke.east.example")).body.certificate).toBeNull();

    const der = await call(server.url, "GET", "/api/crl");
    expect(der.status).toBe(200);
    expect(der.headers.get("content-type")).toBe("application/pkix-crl");
    const bytes = new Uint8Array(await (await fetch(`${server.url}/api/crl`)).arrayBuffer());
    writeFileSync(join(files.path, "crl.der"), bytes);
    writeFileSync(join(files.path, "rootCA.pem"), b.ca);
    const text = openssl("crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text");
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`Serial Number: ${b.serial.toUpperCase()}`);
    expect(text.stdout).toContain("Key Compromise");
    const signed = openssl("crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "rootCA.pem", "-noout");
    expect(`${signed.stdout}${signed.stderr}`).toContain("verify OK");
    const pem = await call(server.url, "GET", "/api/crl?format=pem");
    expect(pem.headers.get("content-type")).toBe("application/x-pem-file");
    expect(pem.text).toStartWith("-----BEGIN X509 CRL-----");
    writeFileSync(join(files.path, "crl.pem"), pem.text);
    expect(openssl("crl", "-in", "crl.pem", "-noout", "-text").stdout).toContain(`Serial Number: ${b.serial.toUpperCase()}`);

    // Left out, the reason is unspecified.
    const other = await bundle("revoke.east.example");
    const plain = await api("POST", `/api/certs/${other.serial}/revoke`);
    expect(plain.status).toBe(200);
    expect(plain.body.revocation_reason).toBe("unspecified");

    expect((await audit("cert.revoke", b.serial)).map((e) => [e.actor, e.outcome, e.reason])).toEqual([
      ["admin", "success", "keyCompromise"],
    ]);
    const pushed = (a: any) => a.change === "revoked" && a.serials.includes(b.serial);
    await waitForEvent(adminSocket, "certificates.changed", pushed);
    await waitForEvent(eastSocket, "certificates.changed", pushed);
    await settle(westSocket);
    expect(westSocket.events.filter((e) => e.name === "certificates.changed" && pushed(e.args))).toEqual([]);
  });

  test("removing a host revokes its certificates (cessationOfOperation); audited and pushed; then 404", async () => {
    await register("remove.east.example", "east");
    const [one, two] = [await bundle("remove.east.example"), await bundle("remove.east.example")];
    expect((await api("DELETE", "/api/hosts/remove.east.example", { token: east })).status).toBe(403);
    const removed = await api("DELETE", "/api/hosts/Remove.East.Example");
    expect(removed.status).toBe(204);
    expect((await api("GET", "/api/hosts/remove.east.example")).status).toBe(404);
    expect((await api("DELETE", "/api/hosts/remove.east.example")).status).toBe(404);
    for (const serial of [one.serial, two.serial]) {
      expect((await api("GET", `/api/certs/${serial}`)).body).toMatchObject({
        status: "revoked",
        revocation_reason: "cessationOfOperation",
      });
    }
    writeFileSync(join(files.path, "after-remove.der"), new Uint8Array(await (await fetch(`${server.url}/api/crl`)).arrayBuffer()));
    const crl = openssl("crl", "-inform", "DER", "-in", "after-remove.der", "-noout", "-text").stdout;
    for (const serial of [one.serial, two.serial]) expect(crl).toContain(`Serial Number: ${serial.toUpperCase()}`);
    expect(crl).toContain("Cessation Of Operation");

    const [entry] = await audit("host.remove", "remove.east.example");
    expect(entry).toMatchObject({ actor: "admin", outcome: "success" });
    expect(entry.reason).toContain(one.serial);
    expect(entry.reason).toContain(two.serial);
    const gone = { hostname: "remove.east.example", change: "removed" };
    for (const socket of [adminSocket, eastSocket]) {
      await waitForEvent(socket, "hosts.changed", (a) => a.hostname === gone.hostname && a.change === "removed");
      await waitForEvent(socket, "certificates.changed", (a) => a.change === "revoked" && a.serials.includes(one.serial));
    }
    await settle(westSocket);
    expect(heard(westSocket, "hosts.changed", gone.hostname)).toEqual([]);
    expect(heard(westSocket, "certificates.changed", gone.hostname)).toEqual([]);
    // The name is free again.
    await register("remove.east.example", "east");
  });

  test(`reports are pushed at most once per host every ${REPORT_PUSH_INTERVAL_MS / 1000} s, to admins and its viewers`, async () => {
    await register("reporter.east.example", "east");
    const reported = () => [adminSocket, eastSocket, westSocket].map((s) => heard(s, "hosts.changed", "reporter.east.example").length);
    const report = () => server.services.hosts.recordReport("reporter.east.example", REPORT, "192.0.2.20");
    for (let i = 0; i < 5; i++) await report();
    await settle(adminSocket, eastSocket, westSocket);
    // registered, then one report.
    expect(reported()).toEqual([2, 2, 0]);
    skew += REPORT_PUSH_INTERVAL_MS - 1000;
    await report();
    await settle(adminSocket, eastSocket, westSocket);
    expect(reported()).toEqual([2, 2, 0]);
    skew += 1000;
    await report();
    await report();
    await settle(adminSocket, eastSocket, westSocket);
    expect(reported()).toEqual([3, 3, 0]);
    expect(heard(adminSocket, "hosts.changed", "reporter.east.example").map((a) => a.change)).toEqual([
      "registered",
      "reported",
      "reported",
    ]);
  });
});

describe("RPC", () => {
  test("latchkey/hosts and latchkey/certs do what REST does; viewers read their groups' only", async () => {
    const rpc = await signedInSocket(admin);
    const viewer = await signedInSocket(east);
    try {
      const ok = async (socket: RpcClient, name: string, args: unknown) => {
        const reply = await socket.request("latchkey", name, args);
        expect(reply).toMatchObject({ namespace: "rpc", name: "response" });
        return reply.args;
      };
      const refused = async (socket: RpcClient, name: string, args: unknown) => (await socket.request("latchkey", name, args)).args.code;

      expect(await ok(rpc, "hosts", { action: "register", hostname: "RPC.East.Example", group: "east" })).toMatchObject({
        hostname: "rpc.east.example",
        group: "east",
      });
      expect(await refused(rpc, "hosts", { action: "register", hostname: "rpc.east.example" })).toBe(409);
      await ok(rpc, "hosts", { action: "register", hostname: "rpc.west.example", group: "west" });
      expect(await ok(rpc, "hosts", { action: "get", hostname: "RPC.EAST.EXAMPLE" })).toMatchObject({ hostname: "rpc.east.example" });
      const listed = await ok(rpc, "hosts", { action: "list", group: "east", limit: 1000 });
      expect(listed.items.map((h: { hostname: string }) => h.hostname)).toContain("rpc.east.example");

      const b = await ok(rpc, "hosts", { action: "bundle", hostname: "rpc.east.example" });
      expect(b.files).toEqual({ "rpc.east.example_https.key": b.key, "rpc.east.example_https.pem": b.certificate, "rootCA.pem": b.ca });
      expect(await ok(rpc, "certs", { action: "get", serial: b.serial.toUpperCase() })).toMatchObject({
        serial: b.serial,
        pem: b.certificate,
      });
      expect((await ok(rpc, "certs", { action: "list", hostname: "rpc.east.example" })).items[0].serial).toBe(b.serial);
      expect(await ok(rpc, "certs", { action: "ca" })).toEqual((await api("GET", "/api/ca")).body);

      // A viewer reads its group's hosts and certificates, and changes nothing.
      const seen = await ok(viewer, "hosts", { action: "list", limit: 1000 });
      expect(seen.items.every((h: { group: string }) => h.group === "east")).toBe(true);
      expect(await refused(viewer, "hosts", { action: "get", hostname: "rpc.west.example" })).toBe(404);
      expect(await ok(viewer, "certs", { action: "get", serial: b.serial })).toMatchObject({ serial: b.serial });
      for (const [name, args] of [
        ["hosts", { action: "register", hostname: "viewer.east.example", group: "east" }],
        ["hosts", { action: "bundle", hostname: "rpc.east.example" }],
        ["hosts", { action: "remove", hostname: "rpc.east.example" }],
        ["certs", { action: "revoke", serial: b.serial }],
      ] as const) {
        expect(await refused(viewer, name, args)).toBe(403);
      }

      expect(await ok(rpc, "certs", { action: "revoke", serial: b.serial, reason: "superseded" })).toMatchObject({
        status: "revoked",
        revocation_reason: "superseded",
      });
      expect(await refused(rpc, "certs", { action: "revoke", serial: b.serial })).toBe(409);
      expect(await ok(rpc, "hosts", { action: "remove", hostname: "rpc.east.example" })).toBe("ok");
      expect(await refused(rpc, "hosts", { action: "get", hostname: "rpc.east.example" })).toBe(404);
      expect((await audit("host.remove", "rpc.east.example")).length).toBe(1);
    } finally {
      rpc.close();
      viewer.close();
    }
  });
});

describe("documentation and metrics", () => {
  test("the OpenAPI document describes the routes, the bundle's reply included", async () => {
    const doc = (await call(server.url, "GET", "/openapi/json")).body;
    const operations: [string, string, string][] = [
      ["/api/hosts", "get", "hosts"],
      ["/api/hosts", "post", "hosts"],
      ["/api/hosts/{hostname}", "get", "hosts"],
      ["/api/hosts/{hostname}", "delete", "hosts"],
      ["/api/hosts/{hostname}/bundle", "post", "hosts"],
      ["/api/crl", "get", "ca"],
      ["/api/ca", "get", "ca"],
      ["/api/certs", "get", "ca"],
      ["/api/certs/{serial}", "get", "ca"],
      ["/api/certs/{serial}/revoke", "post", "ca"],
    ];
    for (const [path, method, tag] of operations) {
      expect({ path, method, tags: doc.paths[path]?.[method]?.tags }).toEqual({ path, method, tags: [tag] });
      expect(doc.paths[path][method].summary).toEqual(expect.any(String));
    }
    const reply = doc.paths["/api/hosts/{hostname}/bundle"].post.responses["201"].content["application/json"].schema;
    expect(Object.keys(reply.properties).sort()).toEqual(["ca", "certificate", "files", "hostname", "key", "not_after", "serial"]);
    expect(doc.paths["/api/certs/{serial}/revoke"].post.requestBody.content["application/json"].schema.properties.reason.enum).toContain(
      "keyCompromise",
    );
  });

  // The OpenAPI generator would leave out a path with a dot in it as a static file, but for
  // `staticFile: false` in src/http/docs.ts.
  test("the OpenAPI document describes GET /api/ca.pem", async () => {
    const doc = (await call(server.url, "GET", "/openapi/json")).body;
    expect(doc.paths["/api/ca.pem"]?.get?.tags).toEqual(["ca"]);
  });

  test("/metrics: latchkey_hosts and latchkey_certificates by state, as the API counts them; expired ones when they expire", async () => {
    const count = async (path: string) => (await api("GET", path)).body.total as number;
    const certificates = (await api("GET", "/api/certs?limit=1000")).body.items as { status: string; expired: boolean }[];
    const valid = certificates.filter((c) => c.status === "valid" && !c.expired).length;
    expect(valid).toBeGreaterThan(0);
    expect(await gauge("latchkey_hosts", "online")).toBe(await count("/api/hosts?status=online"));
    expect(await gauge("latchkey_hosts", "offline")).toBe(await count("/api/hosts?status=offline"));
    expect(await gauge("latchkey_hosts", "online")).toBeGreaterThan(0);
    expect(await gauge("latchkey_certificates", "valid")).toBe(valid);
    expect(await gauge("latchkey_certificates", "revoked")).toBe(await count("/api/certs?status=revoked"));
    expect(await gauge("latchkey_certificates", "expired")).toBe(0);
    const text = (await call(server.url, "GET", "/metrics")).text;
    expect(text.split("\n").filter((l) => l === "# TYPE latchkey_certificates gauge" || l === "# TYPE latchkey_hosts gauge")).toHaveLength(
      2,
    );

    // A year and more later (the last test: sessions end too), every certificate not revoked has expired, no host is online.
    skew += 400 * DAY_MS;
    expect(await gauge("latchkey_certificates", "valid")).toBe(0);
    expect(await gauge("latchkey_certificates", "expired")).toBe(valid);
    expect(await gauge("latchkey_hosts", "online")).toBe(0);
  });
});
