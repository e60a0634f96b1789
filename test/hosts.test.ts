/**
 * Hosts of the woodstock seed (SPEC §5): registered by name (case-insensitive, kept lower-case),
 * given a bundle (`<hostname>_https.key/.pem` + `rootCA.pem`) that `openssl` verifies and that
 * completes a real mutual-TLS handshake with the listener's certificate, reporting, online while
 * their reports are recent, seen by viewers only within their groups, and removed with their
 * certificates revoked.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import * as tls from "node:tls";
import { AuditStore } from "../src/db/audit.ts";
import { CertificateStore } from "../src/db/certificates.ts";
import { openSqliteStorage, sqliteHandle } from "../src/db/storage.ts";
import { Audit } from "../src/core/audit.ts";
import { CertificateAuthority } from "../src/core/ca/authority.ts";
import { readCertificate } from "../src/core/ca/x509.ts";
import { AppError } from "../src/core/errors.ts";
import { EventHub, type EventMap, type Push } from "../src/core/events.ts";
import { Hosts } from "../src/core/hosts.ts";
import type { Principal } from "../src/core/sessions.ts";
import { manualClock, tempDir } from "./support.ts";

const ADMIN = { name: "admin", address: "10.0.0.1" };
const LAB_VIEWER: Principal = { sessionId: "s", userId: 2, username: "viewer", role: "viewer", groups: ["lab"] };
const REPORT = { interfaces: [{ name: "eth0", addresses: ["192.0.2.5", "2001:db8::5"] }], port: 3657, version: "1.2.3" };
const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function setup() {
  const dir = tempDir("latchkey-hosts-");
  const storage = openSqliteStorage(dir.path, { create: true });
  const db = sqliteHandle(storage)!;
  const sql = storage.sql;
  cleanups.push(async () => {
    await storage.close();
    dir.remove();
  });
  const clock = manualClock(Date.now());
  const events = new EventHub();
  const pushes: Push[] = [];
  const revoked: EventMap["certificates.revoked"][] = [];
  events.on("push", (p) => pushes.push(p));
  events.on("certificates.revoked", (e) => revoked.push(e));
  const audit = new Audit(new AuditStore(sql), clock);
  const store = new CertificateStore(sql);
  const ca = new CertificateAuthority(sql, store, audit, events, clock, { machineHostname: () => "server-host" });
  await ca.ensureRoot();
  const hosts = new Hosts(sql, store, ca, audit, clock, { otherWriters: storage.watchOtherWriters(), reportIntervalSeconds: 60 });
  return { db, clock, ca, hosts, pushes, revoked, files: dir.path };
}

function openssl(args: string[], cwd: string): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

async function refusal(fn: () => unknown): Promise<AppError> {
  try {
    await fn();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("registering", () => {
  test("hostnames are case-insensitive: kept lower-case, found in any case, registered once", async () => {
    const { hosts, db, clock } = await setup();
    const view = await hosts.registerHost(ADMIN, "Web1.Example.COM", "lab");
    expect(view).toEqual({
      hostname: "web1.example.com",
      group: "lab",
      created_at: new Date(clock()).toISOString(),
      created_by: "admin",
      online: false,
      last_report_at: null,
      last_address: null,
      report: null,
      certificate: null,
    });
    expect(await hosts.getHost(null, "WEB1.example.com")).toEqual(view);
    expect(await hosts.isRegistered("web1.EXAMPLE.com")).toBe(true);
    expect(await hosts.isRegistered("web2.example.com")).toBe(false);
    expect(await hosts.isRegistered("not a host")).toBe(false);
    expect(await refusal(() => hosts.registerHost(ADMIN, "WEB1.example.com", null))).toMatchObject({
      code: "conflict",
      field: "hostname",
      message: "host web1.example.com is already registered",
    });
    expect(db.query("SELECT outcome, target, reason FROM audit WHERE action = 'host.register' ORDER BY id").all()).toEqual([
      { outcome: "success", target: "web1.example.com", reason: "lab" },
      { outcome: "failure", target: "web1.example.com", reason: "exists" },
    ]);
    // The table itself refuses a name that is not lower-case.
    expect(() => db.run("INSERT INTO hosts (hostname, created_at, created_by) VALUES ('Upper', 0, 'x')")).toThrow(/CHECK/);
  });

  test("names and groups are validated", async () => {
    const { hosts } = await setup();
    for (const bad of ["", "bad_host", "-lead.example", "a..b", "trailing.", "x".repeat(64), "ünïcode.example", "../etc/passwd"]) {
      expect(await refusal(() => hosts.registerHost(ADMIN, bad, null))).toMatchObject({ code: "bad_request", field: "hostname" });
    }
    expect(await refusal(() => hosts.registerHost(ADMIN, "ok.example", "bad/group"))).toMatchObject({
      code: "bad_request",
      field: "group",
    });
    expect(await refusal(() => hosts.getHost(null, "nowhere.example"))).toMatchObject({
      code: "not_found",
      message: "no host nowhere.example",
    });
  });
});

describe("bundles", () => {
  test("a bundle is the woodstock files: a clientAuth certificate (CN = SAN = hostname), its key and the root; it verifies", async () => {
    const { hosts, ca, files, pushes, db } = await setup();
    await hosts.registerHost(ADMIN, "Backup-Client.lan", "lab");
    const bundle = await hosts.hostBundle(ADMIN, "BACKUP-CLIENT.lan");
    expect(bundle.ca).toBe(await ca.caPem());
    writeFileSync(join(files, "backup-client.lan_https.pem"), bundle.certificate);
    writeFileSync(join(files, "backup-client.lan_https.key"), bundle.key);
    writeFileSync(join(files, "rootCA.pem"), bundle.ca);
    const text = openssl(["x509", "-in", "backup-client.lan_https.pem", "-noout", "-text"], files).out;
    expect(text).toContain("Subject: CN = backup-client.lan");
    expect(text).toMatch(/X509v3 Subject Alternative Name:\s*\n\s+DNS:backup-client.lan\n/);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s*\n\s+TLS Web Client Authentication\n/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", "rootCA.pem", "backup-client.lan_https.pem"], files).code).toBe(0);
    expect(openssl(["x509", "-in", "backup-client.lan_https.pem", "-noout", "-pubkey"], files).out).toBe(
      openssl(["pkey", "-in", "backup-client.lan_https.key", "-pubout"], files).out,
    );
    expect(Math.round((Date.parse(bundle.not_after) - Date.now()) / 86_400_000)).toBe(365);
    expect((await hosts.getHost(null, "backup-client.lan")).certificate).toEqual({ serial: bundle.serial, not_after: bundle.not_after });
    expect(await ca.get(null, bundle.serial)).toMatchObject({
      kind: "host",
      hostname: "backup-client.lan",
      common_name: "backup-client.lan",
    });
    // Pushed to the host's group; a lab viewer sees it, others do not.
    expect(pushes.at(-1)).toEqual({
      topic: "certificates.changed",
      args: { serials: [bundle.serial], change: "issued", hostname: "backup-client.lan" },
      groups: ["lab"],
    });
    expect((await ca.list(LAB_VIEWER, {}, 10, 0)).total).toBe(1);
    expect((await ca.list({ ...LAB_VIEWER, groups: ["other"] }, {}, 10, 0)).total).toBe(0);
    // The key is in the reply only.
    const keyLine = bundle.key.split("\n")[1]!;
    const everything = db
      .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all()
      .map(({ name }) => JSON.stringify(db.query(`SELECT * FROM "${name}"`).all()))
      .join("");
    expect(everything).not.toContain(keyLine);
    // Another bundle is another certificate; the first stays valid.
    expect((await hosts.hostBundle(ADMIN, "backup-client.lan")).serial).not.toBe(bundle.serial);
    expect((await ca.get(null, bundle.serial)).status).toBe("valid");
  });

  test("a bundle completes a real mutual-TLS handshake with the listener's certificate; another root's client is refused", async () => {
    const { hosts, ca } = await setup();
    await hosts.registerHost(ADMIN, "tls-client", null);
    const bundle = await hosts.hostBundle(ADMIN, "tls-client");
    const server = await ca.serverCertificate();
    const peers: string[] = [];
    const listener = tls.createServer(
      { cert: server.certificate, key: server.key, ca: server.ca, requestCert: true, rejectUnauthorized: true },
      (socket) => {
        peers.push(String(socket.getPeerCertificate().subject?.CN));
        socket.end("hello");
      },
    );
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    const port = (listener.address() as { port: number }).port;
    try {
      const greeting = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect(
          { host: "127.0.0.1", port, servername: "localhost", cert: bundle.certificate, key: bundle.key, ca: bundle.ca },
          () => {
            socket.once("data", (d) => resolve(String(d)));
          },
        );
        socket.on("error", reject);
      });
      expect(greeting).toBe("hello");
      expect(peers).toEqual(["tls-client"]);

      const stranger = await setup();
      await stranger.hosts.registerHost(ADMIN, "tls-client", null);
      const foreign = await stranger.hosts.hostBundle(ADMIN, "tls-client");
      const outcome = await new Promise<string>((resolve) => {
        const socket = tls.connect(
          { host: "127.0.0.1", port, servername: "localhost", cert: foreign.certificate, key: foreign.key, ca: bundle.ca },
          () => {
            socket.once("data", () => resolve("accepted"));
          },
        );
        socket.on("error", () => resolve("refused"));
        socket.on("close", () => resolve("refused"));
      });
      expect(outcome).toBe("refused");
      expect(peers).toEqual(["tls-client"]);
    } finally {
      listener.close();
    }
  });

  test("no bundle for a host that is not registered", async () => {
    const { hosts } = await setup();
    const error = await hosts.hostBundle(ADMIN, "ghost.example").catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "not_found", message: "no host ghost.example; register it first" });
  });
});

describe("reports and listing", () => {
  test("a report is stored with the address; the host is online for three intervals", async () => {
    const { hosts, clock } = await setup();
    await hosts.registerHost(ADMIN, "reporter", null);
    await hosts.recordReport("REPORTER", REPORT, "192.0.2.5");
    expect(await hosts.getHost(null, "reporter")).toMatchObject({
      online: true,
      report: REPORT,
      last_address: "192.0.2.5",
      last_report_at: new Date(clock()).toISOString(),
    });
    clock.advance(180_000);
    expect((await hosts.getHost(null, "reporter")).online).toBe(true);
    clock.advance(1);
    expect((await hosts.getHost(null, "reporter")).online).toBe(false);
    expect(await refusal(() => hosts.recordReport("stranger", REPORT, null))).toMatchObject({ code: "not_found" });
  });

  test("lists page by name, filter by group and status, and viewers see only their groups", async () => {
    const { hosts, clock } = await setup();
    for (const [name, group] of [
      ["c-host", "lab"],
      ["a-host", "lab"],
      ["b-host", "office"],
      ["d-host", null],
    ] as const) {
      await hosts.registerHost(ADMIN, name, group);
    }
    await hosts.recordReport("a-host", REPORT, null);
    await hosts.recordReport("b-host", REPORT, null);
    const names = (r: { items: { hostname: string }[]; total: number }) => [r.items.map((h) => h.hostname), r.total];
    expect(names(await hosts.listHosts(null, {}, 10, 0))).toEqual([["a-host", "b-host", "c-host", "d-host"], 4]);
    expect(names(await hosts.listHosts(null, {}, 2, 1))).toEqual([["b-host", "c-host"], 4]);
    expect(names(await hosts.listHosts(null, { group: "lab" }, 10, 0))).toEqual([["a-host", "c-host"], 2]);
    expect(names(await hosts.listHosts(null, { status: "online" }, 10, 0))).toEqual([["a-host", "b-host"], 2]);
    expect(names(await hosts.listHosts(null, { status: "offline" }, 10, 0))).toEqual([["c-host", "d-host"], 2]);
    expect(names(await hosts.listHosts(LAB_VIEWER, {}, 10, 0))).toEqual([["a-host", "c-host"], 2]);
    expect(names(await hosts.listHosts(LAB_VIEWER, { status: "online" }, 10, 0))).toEqual([["a-host"], 1]);
    expect((await hosts.getHost(LAB_VIEWER, "a-host")).hostname).toBe("a-host");
    expect(await refusal(() => hosts.getHost(LAB_VIEWER, "b-host"))).toMatchObject({ code: "not_found" });
    expect(await refusal(() => hosts.getHost(LAB_VIEWER, "d-host"))).toMatchObject({ code: "not_found" });
    clock.advance(10 * 60_000);
    expect(names(await hosts.listHosts(null, { status: "online" }, 10, 0))).toEqual([[], 0]);
  });
});

describe("removing", () => {
  test("removing a host revokes its certificates (CRL, openssl refuses them); a new host of that name does not revive them", async () => {
    const { hosts, ca, db, revoked, files } = await setup();
    await hosts.registerHost(ADMIN, "old-box", "lab");
    const first = await hosts.hostBundle(ADMIN, "old-box");
    const second = await hosts.hostBundle(ADMIN, "old-box");
    const unrelated = await ca.issue(ADMIN, { kind: "user", commonName: "u", usages: ["clientAuth"], days: 5, key: "generate" });
    await hosts.removeHost(ADMIN, "OLD-BOX");
    expect(await refusal(() => hosts.getHost(null, "old-box"))).toMatchObject({ code: "not_found" });
    expect(revoked.at(-1)!.serials.sort()).toEqual([first.serial, second.serial].sort());
    for (const serial of [first.serial, second.serial]) {
      expect(await ca.get(null, serial)).toMatchObject({ status: "revoked", revocation_reason: "cessationOfOperation" });
    }
    expect((await ca.get(null, unrelated.certificate.serial)).status).toBe("valid");
    expect(db.query("SELECT action, target FROM audit WHERE action IN ('cert.revoke', 'host.remove') ORDER BY id").all()).toEqual([
      { action: "cert.revoke", target: "old-box" },
      { action: "host.remove", target: "old-box" },
    ]);

    const crl = await ca.crl();
    writeFileSync(join(files, "crl.pem"), crl.pem);
    writeFileSync(join(files, "root.pem"), await ca.caPem());
    writeFileSync(join(files, "first.pem"), first.certificate);
    const check = openssl(["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "root.pem", "first.pem"], files);
    expect(check.out + check.err).toContain("certificate revoked");

    await hosts.registerHost(ADMIN, "old-box", null);
    expect((await hosts.getHost(null, "old-box")).certificate).toBeNull();
    expect((await ca.get(null, first.serial)).status).toBe("revoked");
    expect(await hosts.removeHost(ADMIN, "old-box")).toBeUndefined();
    expect(await hosts.removeHost(ADMIN, "old-box").catch((e: unknown) => e)).toMatchObject({ code: "not_found" });
    expect(readCertificate(first.certificate).commonName).toBe("old-box");
  });
});
