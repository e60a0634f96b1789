/**
 * The built-in CA (SPEC §5, §9), with `openssl` as the outside judge of what it builds: the root
 * and leaves as `openssl x509 -text` reads them, chains as `openssl verify` accepts or refuses
 * them, the CRL as `openssl crl` lists it and `verify -crl_check` applies it; roots made by openssl
 * imported (EC P-256, RSA 2048) or refused with a sentence that says why; one root when two
 * processes start at once; unique serials under concurrency; exactly one winner of a revocation
 * race; the CRL rebuilt on revocation and when due; the CA key in no view, log or event.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { createPrivateKey } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AuditStore } from "../src/db/audit.ts";
import { CertificateStore } from "../src/db/certificates.ts";
import { openDatabase } from "../src/db/open.ts";
import { openSqliteStorage, sqliteHandle, type Storage } from "../src/db/storage.ts";
import { Audit } from "../src/core/audit.ts";
import { CertificateAuthority, type CertificateAuthorityOptions } from "../src/core/ca/authority.ts";
import { identifyCertificate } from "../src/core/ca/identity.ts";
import { CertificateVerifier } from "../src/core/ca/verify.ts";
import {
  CaSigner,
  certificateDer,
  colonFingerprint,
  createRootCertificate,
  generateKeyPair,
  ipFromBytes,
  ipToBytes,
  normalizeSerial,
  publicKeyDer,
  publicKeyPem,
  readCertificate,
} from "../src/core/ca/x509.ts";
import { AppError } from "../src/core/errors.ts";
import { EventHub, type EventMap, type Push } from "../src/core/events.ts";
import { Hosts } from "../src/core/hosts.ts";
import { BUN, manualClock, ROOT, tempDir } from "./support.ts";

const DAY = 86_400_000;
const ADMIN = { name: "admin", address: "127.0.0.1" };
const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function scratch(): string {
  const dir = tempDir("latchkey-ca-files-");
  cleanups.push(dir.remove);
  return dir.path;
}

function openssl(args: string[], cwd: string): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

/** A CA over one connection to a data directory, with the events it emits collected. */
function authorityOn(storage: Storage, clock: () => number, options: CertificateAuthorityOptions = {}) {
  const sql = storage.sql;
  const db = sqliteHandle(storage)!;
  const events = new EventHub();
  const pushes: Push[] = [];
  const revoked: EventMap["certificates.revoked"][] = [];
  events.on("push", (p) => pushes.push(p));
  events.on("certificates.revoked", (e) => revoked.push(e));
  const audit = new Audit(new AuditStore(sql), clock);
  const store = new CertificateStore(sql);
  const ca = new CertificateAuthority(sql, store, audit, events, clock, {
    organization: "Acme",
    machineHostname: () => "build-host",
    ...options,
  });
  const hosts = new Hosts(sql, store, ca, audit, clock, { otherWriters: storage.watchOtherWriters() });
  return { db, ca, hosts, store, pushes, revoked };
}

/**
 * A separate process on the same data directory that waits until `startAt`, then makes sure there
 * is a root (`ensure`), revokes the serials it is given one after the other (`revoke`), issues
 * that many user certificates at once (`issue COUNT`) or gets the listener's certificate
 * (`server`), and prints what happened as JSON. Its CA is set up as `setup()`'s.
 */
function childScript(): string {
  const dir = scratch();
  const src = (path: string) => JSON.stringify(join(ROOT, "src", path));
  const script = `
    import { AuditStore } from ${src("db/audit.ts")};
    import { CertificateStore } from ${src("db/certificates.ts")};
    import { openSqliteStorage } from ${src("db/storage.ts")};
    import { Audit } from ${src("core/audit.ts")};
    import { CertificateAuthority } from ${src("core/ca/authority.ts")};
    import { EventHub } from ${src("core/events.ts")};
    const [dataDir, mode, startAt, ...serials] = process.argv.slice(2);
    const storage = openSqliteStorage(dataDir, { create: false });
    const sql = storage.sql;
    const clock = () => Date.now();
    const ca = new CertificateAuthority(sql, new CertificateStore(sql), new Audit(new AuditStore(sql), clock), new EventHub(), clock, {
      organization: "Acme",
      machineHostname: () => "build-host",
    });
    await Bun.sleep(Number(startAt) - Date.now());
    if (mode === "ensure") {
      console.log(JSON.stringify(await ca.ensureRoot()));
    } else if (mode === "issue") {
      const policy = (i) => ({ kind: "user", commonName: "child" + i, usages: ["clientAuth"], days: 30, key: "generate" });
      const child = { name: "child", address: null };
      const issued = await Promise.all(Array.from({ length: Number(serials[0]) }, (_, i) => ca.issue(child, policy(i))));
      console.log(JSON.stringify(issued.map((r) => r.certificate)));
    } else if (mode === "server") {
      console.log(JSON.stringify(await ca.serverCertificate()));
    } else {
      const outcome = {};
      for (const serial of serials) {
        try {
          await ca.revoke({ name: "child", address: null }, serial, "keyCompromise");
          outcome[serial] = "revoked";
        } catch (error) {
          outcome[serial] = error.code ?? String(error);
        }
      }
      console.log(JSON.stringify(outcome));
    }
    await storage.close();
  `;
  const path = join(dir, "ca-child.ts");
  writeFileSync(path, script);
  return path;
}

async function runChildren(args: string[][]): Promise<string[]> {
  const script = childScript();
  const procs = args.map((a) => Bun.spawn([BUN, script, ...a], { stdout: "pipe", stderr: "pipe" }));
  const results = await Promise.all(
    procs.map(async (p) => ({ code: await p.exited, out: await new Response(p.stdout).text(), err: await new Response(p.stderr).text() })),
  );
  for (const r of results) expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
  return results.map((r) => r.out);
}

function setup(options: CertificateAuthorityOptions = {}) {
  const dir = tempDir("latchkey-ca-");
  const storage = openSqliteStorage(dir.path, { create: true });
  const clock = manualClock(Date.now());
  const others: Storage[] = [];
  cleanups.push(async () => {
    for (const other of others) await other.close();
    await storage.close();
    dir.remove();
  });
  return {
    dir: dir.path,
    clock,
    ...authorityOn(storage, clock, options),
    /**
     * Another CA over a second connection to the same database, as another process has. Not for
     * transactions at once with this one's: a transaction awaits between its statements, and a
     * second connection of the same process waiting for its lock would block the thread the first
     * needs to finish (another process does not); `runChildren` runs those.
     */
    second() {
      const other = openSqliteStorage(dir.path, { create: false });
      others.push(other);
      return authorityOn(other, clock, options);
    },
  };
}

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

/** Text lines of every row of every table: to search for what must not be stored. */
function databaseText(db: Database): string {
  const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all();
  return tables
    .map(({ name }) =>
      JSON.stringify(db.query(`SELECT * FROM "${name}"`).all(), (_, v) =>
        v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v,
      ),
    )
    .join("\n");
}

/**
 * Pieces of a PEM key that must never show up elsewhere: its private number (EC scalar or RSA
 * exponent) as base64url, base64 and hex, the whole PKCS#8 body, and its first line (which holds
 * the start of the private number; the later lines hold the public key, which certificates carry).
 */
function keyMarkers(keyPem: string): string[] {
  const body = keyPem.split("\n").filter((l) => l && !l.startsWith("-----"));
  const d = createPrivateKey(keyPem).export({ format: "jwk" }).d!;
  const bytes = Buffer.from(d, "base64url");
  return [body.join(""), body[0]!, d, bytes.toString("base64"), bytes.toString("hex")];
}

describe("x509, read by openssl", () => {
  test("the root: self-signed ECDSA P-256, CA:TRUE critical, keyCertSign + cRLSign, 10 years, a positive serial of ≥ 64 bits", async () => {
    const dir = scratch();
    const now = new Date();
    const root = await createRootCertificate({ organization: "Acme Backup", now });
    writeFileSync(join(dir, "root.pem"), root.pem);
    const text = openssl(["x509", "-in", "root.pem", "-noout", "-text"], dir).out;
    expect(text).toContain("Subject: O = Acme Backup, CN = latchkey root CA");
    expect(text).toContain("Issuer: O = Acme Backup, CN = latchkey root CA");
    expect(text).toContain("Signature Algorithm: ecdsa-with-SHA256");
    expect(text).toContain("NIST CURVE: P-256");
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(text).toMatch(/X509v3 Subject Key Identifier:/);
    const serial = openssl(["x509", "-in", "root.pem", "-noout", "-serial"], dir).out.trim().replace("serial=", "");
    expect(serial.length).toBeGreaterThanOrEqual(16);
    expect(parseInt(serial.slice(0, 2), 16)).toBeLessThan(0x80);
    expect(normalizeSerial(serial)).toBe(root.info.serial);
    const start = Date.parse(openssl(["x509", "-in", "root.pem", "-noout", "-startdate"], dir).out.trim().replace("notBefore=", ""));
    const end = Date.parse(openssl(["x509", "-in", "root.pem", "-noout", "-enddate"], dir).out.trim().replace("notAfter=", ""));
    expect(Math.abs(start - (now.getTime() - 5 * 60_000))).toBeLessThan(1000);
    const tenYears = new Date(now);
    tenYears.setUTCFullYear(tenYears.getUTCFullYear() + 10);
    expect(Math.abs(end - tenYears.getTime())).toBeLessThan(1000);
    expect(openssl(["verify", "-CAfile", "root.pem", "root.pem"], dir).code).toBe(0);
    const fp = openssl(["x509", "-in", "root.pem", "-noout", "-fingerprint", "-sha256"], dir).out.trim();
    expect(fp).toBe(`sha256 Fingerprint=${colonFingerprint(root.info.fingerprint)}`);
    expect(root.keyPem).toStartWith("-----BEGIN PRIVATE KEY-----\n");
  });

  test("a leaf: CA:FALSE, digitalSignature only, the EKU asked for, DNS and IPv4/IPv6 SANs, AKI = root's SKI; it verifies", async () => {
    const dir = scratch();
    const now = new Date();
    const root = await createRootCertificate({ organization: "", now });
    const signer = await CaSigner.load(root.pem, root.keyPem);
    const pair = await generateKeyPair();
    const leaf = await signer.issue({
      commonName: "web1",
      sans: ["web1.example.com", "10.1.2.3", "2001:db8::7", "::1", "WEB1.example.com"],
      usages: ["clientAuth", "serverAuth"],
      publicKey: pair.spki,
      now,
      days: 30,
    });
    writeFileSync(join(dir, "root.pem"), root.pem);
    writeFileSync(join(dir, "leaf.pem"), leaf.pem);
    const text = openssl(["x509", "-in", "leaf.pem", "-noout", "-text"], dir).out;
    expect(text).toContain("Subject: CN = web1");
    expect(text).toContain("Issuer: CN = latchkey root CA");
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s*\n\s+TLS Web Client Authentication, TLS Web Server Authentication\n/);
    expect(text).toContain("DNS:web1.example.com, IP Address:10.1.2.3, IP Address:2001:DB8:0:0:0:0:0:7, IP Address:0:0:0:0:0:0:0:1\n");
    const rootSki = /Subject Key Identifier:\s*\n\s+([0-9A-F:]+)/.exec(
      openssl(["x509", "-in", "root.pem", "-noout", "-text"], dir).out,
    )![1];
    expect(text).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${rootSki}`));
    const serial = openssl(["x509", "-in", "leaf.pem", "-noout", "-serial"], dir).out.trim().replace("serial=", "");
    expect(serial.length).toBeGreaterThanOrEqual(16);
    expect(parseInt(serial.slice(0, 2), 16)).toBeLessThan(0x80);
    expect(normalizeSerial(serial)).toBe(leaf.info.serial);
    const start = Date.parse(openssl(["x509", "-in", "leaf.pem", "-noout", "-startdate"], dir).out.trim().slice("notBefore=".length));
    const end = Date.parse(openssl(["x509", "-in", "leaf.pem", "-noout", "-enddate"], dir).out.trim().slice("notAfter=".length));
    expect(Math.abs(start - (now.getTime() - 5 * 60_000))).toBeLessThan(1000);
    expect(Math.abs(end - (now.getTime() + 30 * DAY))).toBeLessThan(1000);
    const verified = openssl(["verify", "-CAfile", "root.pem", "leaf.pem"], dir);
    expect(verified.out + verified.err).toBe("leaf.pem: OK\n");
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", "root.pem", "leaf.pem"], dir).code).toBe(0);

    // What latchkey reads back agrees with openssl.
    expect(leaf.info).toMatchObject({
      commonName: "web1",
      dnsNames: ["web1.example.com"],
      ipAddresses: ["10.1.2.3", "2001:db8::7", "::1"],
      isCA: false,
      keyUsage: ["digitalSignature"],
      extendedKeyUsage: ["clientAuth", "serverAuth"],
    });
  });

  test("a leaf for an RSA key also gets keyEncipherment; an openssl public key PEM is taken as is", async () => {
    const dir = scratch();
    const root = await createRootCertificate({ organization: "Acme", now: new Date() });
    const signer = await CaSigner.load(root.pem, root.keyPem);
    openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key"], dir);
    openssl(["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"], dir);
    const spki = publicKeyDer(await Bun.file(join(dir, "rsa.pub")).text());
    const leaf = await signer.issue({
      commonName: "rsa-host",
      sans: [],
      usages: ["clientAuth"],
      publicKey: spki,
      now: new Date(),
      days: 1,
    });
    writeFileSync(join(dir, "leaf.pem"), leaf.pem);
    writeFileSync(join(dir, "root.pem"), root.pem);
    const text = openssl(["x509", "-in", "leaf.pem", "-noout", "-text"], dir).out;
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n/);
    expect(text).not.toContain("Subject Alternative Name");
    expect(openssl(["verify", "-CAfile", "root.pem", "leaf.pem"], dir).code).toBe(0);
    // The certificate carries that very key, and its PEM is the one openssl writes.
    expect(openssl(["x509", "-in", "leaf.pem", "-noout", "-pubkey"], dir).out).toBe(await Bun.file(join(dir, "rsa.pub")).text());
    expect(publicKeyPem(spki)).toBe(await Bun.file(join(dir, "rsa.pub")).text());
  });

  test("a leaf never outlives its root, and a leaf of another root does not verify", async () => {
    const dir = scratch();
    const now = new Date();
    const root = await createRootCertificate({ organization: "Acme", now, years: 1 });
    const other = await createRootCertificate({ organization: "Acme", now });
    const signer = await CaSigner.load(root.pem, root.keyPem);
    const pair = await generateKeyPair();
    const leaf = await signer.issue({
      commonName: "long",
      sans: ["long.example"],
      usages: ["clientAuth"],
      publicKey: pair.spki,
      now,
      days: 3650,
    });
    expect(leaf.info.notAfter.getTime()).toBe(root.info.notAfter.getTime());
    writeFileSync(join(dir, "root.pem"), root.pem);
    writeFileSync(join(dir, "other.pem"), other.pem);
    writeFileSync(join(dir, "leaf.pem"), leaf.pem);
    expect(openssl(["verify", "-CAfile", "root.pem", "leaf.pem"], dir).code).toBe(0);
    const refused = openssl(["verify", "-CAfile", "other.pem", "leaf.pem"], dir);
    expect(refused.code).not.toBe(0);
    expect(refused.out + refused.err).toContain("unable to get local issuer certificate");
  });

  test("a certificate made by openssl reads the same through latchkey (serial, names, IPv6, usages, fingerprint)", () => {
    const dir = scratch();
    const made = openssl(
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-days",
        "2",
        "-subj",
        "/O=Elsewhere/CN=outside",
        "-addext",
        "subjectAltName=DNS:a.example,IP:fe80::1:2,IP:192.168.0.9",
        "-addext",
        "extendedKeyUsage=clientAuth",
      ],
      dir,
    );
    expect(made.code).toBe(0);
    const pem = readFileSync(join(dir, "c.pem"), "utf8") as string;
    const info = readCertificate(pem);
    const serial = openssl(["x509", "-in", "c.pem", "-noout", "-serial"], dir).out.trim().replace("serial=", "");
    expect(info.serial).toBe(normalizeSerial(serial)!);
    expect(info).toMatchObject({
      commonName: "outside",
      organization: "Elsewhere",
      dnsNames: ["a.example"],
      ipAddresses: ["fe80::1:2", "192.168.0.9"],
      extendedKeyUsage: ["clientAuth"],
      selfIssued: true,
    });
    const fp = openssl(["x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha256"], dir).out.trim();
    expect(fp).toBe(`sha256 Fingerprint=${colonFingerprint(info.fingerprint)}`);
    expect(certificateDer(pem)).toEqual(new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64")));
  });

  test("IP addresses: text to the 4 or 16 SAN bytes and back (RFC 5952 text)", () => {
    const cases: [string, string][] = [
      ["127.0.0.1", "127.0.0.1"],
      ["::", "::"],
      ["::1", "::1"],
      ["2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:db8:0:0:0:0:2:1", "2001:db8::2:1"],
      ["fe80::", "fe80::"],
      ["::ffff:192.0.2.1", "::ffff:c000:201"],
      ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ];
    for (const [input, text] of cases) {
      const bytes = ipToBytes(input)!;
      expect(bytes.length).toBe(input.includes(":") ? 16 : 4);
      expect(ipFromBytes(bytes)).toBe(text);
    }
    expect(ipToBytes("host.example")).toBeNull();
    expect(ipToBytes("fe80::1%eth0")).toBeNull();
    expect(ipToBytes("1.2.3")).toBeNull();
  });
});

describe("the root", () => {
  test("two CAs on two connections starting at once end with one root", async () => {
    const { ca, second, db } = setup();
    const other = second();
    const [a, b] = await Promise.all([ca.ensureRoot(), other.ca.ensureRoot()]);
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(db.query("SELECT count(*) AS n FROM ca_roots").get()).toEqual({ n: 1 });
    expect(db.query("SELECT count(*) AS n FROM audit WHERE action = 'ca.generate'").get()).toEqual({ n: 1 });
    expect(await ca.ensureRoot()).toEqual(a);
    expect(await ca.caFingerprint()).toBe(a.fingerprint);
    expect(await ca.caPem()).toBe(a.certificate);
    expect(a).toMatchObject({ common_name: "latchkey root CA", organization: "Acme", source: "generated", created_by: "system" });
    expect(a.fingerprint_colon).toBe(colonFingerprint(a.fingerprint));
  });

  test("two processes starting at once end with one root", async () => {
    for (let round = 0; round < 3; round++) {
      const dir = tempDir("latchkey-ca-procs-");
      cleanups.push(dir.remove);
      openDatabase(dir.path, { create: true }).close();
      const startAt = String(Date.now() + 1500);
      const outputs = await runChildren([
        [dir.path, "ensure", startAt],
        [dir.path, "ensure", startAt],
      ]);
      const fingerprints = outputs.map((o) => JSON.parse(o).fingerprint);
      expect(fingerprints[0]).toBe(fingerprints[1]);
      const db = openDatabase(dir.path, { create: false });
      expect(db.query("SELECT fingerprint FROM ca_roots").all()).toEqual([{ fingerprint: fingerprints[0] }]);
      db.close();
    }
  });

  test("the database allows one current root, whatever the code does", async () => {
    const { ca, db } = setup();
    await ca.ensureRoot();
    expect(() =>
      db.run(
        "INSERT INTO ca_roots (certificate_pem, key_pem, fingerprint, source, created_at, created_by) " +
          "VALUES ('x', 'y', 'z', 'generated', 0, 't')",
      ),
    ).toThrow(/UNIQUE/);
  });

  test("before ensureRoot, the CA says it has no root (unavailable)", async () => {
    const { ca } = setup();
    await expect(ca.caPem()).rejects.toThrow(/no root yet/);
    expect(
      (await rejection(ca.issue(ADMIN, { kind: "user", commonName: "x", usages: ["clientAuth"], days: 1, key: "generate" }))).code,
    ).toBe("unavailable");
  });
});

describe("issuing", () => {
  test("200 concurrent issues in two processes give 200 distinct serials and fingerprints, all recorded", async () => {
    const { ca, db, dir } = setup();
    await ca.ensureRoot();
    const pair = await generateKeyPair();
    const startAt = Date.now() + 1500;
    const [child, results] = await Promise.all([
      runChildren([[dir, "issue", String(startAt), "100"]]),
      Bun.sleep(startAt - Date.now()).then(() =>
        Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            ca.issue(ADMIN, { kind: "user", commonName: `user${i}`, usages: ["clientAuth"], days: 30, key: { spki: pair.spki } }),
          ),
        ),
      ),
    ]);
    const certificates = [...results.map((r) => r.certificate), ...(JSON.parse(child[0]!) as { serial: string; fingerprint: string }[])];
    const serials = new Set(certificates.map((c) => c.serial));
    expect(serials.size).toBe(200);
    expect(new Set(certificates.map((c) => c.fingerprint)).size).toBe(200);
    for (const serial of serials) expect(serial).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(db.query("SELECT count(*) AS n FROM certificates").get()).toEqual({ n: 200 });
    expect(db.query("SELECT count(*) AS n FROM audit WHERE action = 'cert.issue'").get()).toEqual({ n: 200 });
  });

  test("the view and PEM of an issued certificate; the list and get; a generated key is returned once and never stored", async () => {
    const { ca, db, pushes, clock } = setup();
    await ca.ensureRoot();
    const issued = await ca.issue(ADMIN, {
      kind: "client",
      commonName: "laptop-7",
      sans: ["laptop-7.corp", "192.0.2.7"],
      usages: ["clientAuth"],
      days: 30,
      key: "generate",
    });
    expect(issued.certificate).toEqual({
      serial: readCertificate(issued.pem).serial,
      fingerprint: readCertificate(issued.pem).fingerprint,
      kind: "client",
      common_name: "laptop-7",
      sans: ["laptop-7.corp", "192.0.2.7"],
      usages: ["clientAuth"],
      hostname: null,
      client_uuid: null,
      not_before: new Date(Math.floor((clock() - 5 * 60_000) / 1000) * 1000).toISOString(),
      not_after: new Date(Math.floor((clock() + 30 * DAY) / 1000) * 1000).toISOString(),
      status: "valid",
      expired: false,
      current_root: true,
      revoked_at: null,
      revocation_reason: null,
      created_at: new Date(clock()).toISOString(),
      created_by: "admin",
    });
    expect(issued.key).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    // The key matches the certificate.
    const dir = scratch();
    writeFileSync(join(dir, "c.pem"), issued.pem);
    writeFileSync(join(dir, "k.pem"), issued.key!);
    expect(openssl(["x509", "-in", "c.pem", "-noout", "-pubkey"], dir).out).toBe(openssl(["pkey", "-in", "k.pem", "-pubout"], dir).out);
    for (const marker of keyMarkers(issued.key!)) expect(databaseText(db)).not.toContain(marker);

    expect(await ca.get(null, issued.certificate.serial)).toEqual({ ...issued.certificate, pem: issued.pem });
    expect(await ca.get(null, colonFingerprint(issued.certificate.serial))).toMatchObject({ serial: issued.certificate.serial });
    expect(await ca.list(null, { kind: "client" }, 10, 0)).toEqual({ items: [issued.certificate], total: 1 });
    expect(await ca.list(null, { kind: "host" }, 10, 0)).toEqual({ items: [], total: 0 });
    expect(await ca.byFingerprint(issued.certificate.fingerprint)).toEqual(issued.certificate);
    expect(await ca.byFingerprint(colonFingerprint(issued.certificate.fingerprint))).toEqual(issued.certificate);
    expect(await ca.byFingerprint("00".repeat(32))).toBeNull();
    expect(pushes).toContainEqual({
      topic: "certificates.changed",
      args: { serials: [issued.certificate.serial], change: "issued" },
      groups: [],
    });
    // A viewer sees only certificates of hosts in their groups.
    const viewer = { sessionId: "s", userId: 2, username: "v", role: "viewer" as const, groups: ["lab"] };
    expect(await ca.list(viewer, {}, 10, 0)).toEqual({ items: [], total: 0 });
    await expect(ca.get(viewer, issued.certificate.serial)).rejects.toThrow(/no certificate/);
  });

  test("the CA enforces the policy: serverAuth only for server certificates, days, names, keys, a registered host", async () => {
    const { ca } = setup();
    await ca.ensureRoot();
    const base = { kind: "host" as const, commonName: "h", usages: ["clientAuth" as const], days: 30, key: "generate" as const };
    const refusals: [object, string, string][] = [
      [{ usages: ["serverAuth"] }, "usages", "serverAuth is only for server certificates"],
      [{ usages: [] }, "usages", "must be serverAuth, clientAuth or both"],
      [{ days: 0 }, "days", "must be a whole number from 1 to 3650"],
      [{ days: 1.5 }, "days", "must be a whole number from 1 to 3650"],
      [{ sans: ["bad name!"] }, "sans", '"bad name!" is neither a DNS name nor an IP address'],
      [{ commonName: "x".repeat(65) }, "common_name", "the common name must be 1 to 64 characters"],
      [{ commonName: "a\u0000b" }, "common_name", "the common name may not hold control or format characters"],
      [{ key: { spki: new Uint8Array([1, 2, 3]) } }, "public_key", "is not a valid public key (DER SubjectPublicKeyInfo)"],
      [{ hostname: "nowhere.example" }, "", "no host nowhere.example; register it first"],
    ];
    for (const [change, field, message] of refusals) {
      const error = await rejection(ca.issue(ADMIN, { ...base, ...change }));
      expect({ field: error.field ?? "", message: error.message }).toEqual({ field, message });
    }
    const dir = scratch();
    openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "small.key"], dir);
    openssl(["pkey", "-in", "small.key", "-pubout", "-out", "small.pub"], dir);
    const small = publicKeyDer(await Bun.file(join(dir, "small.pub")).text());
    expect((await rejection(ca.issue(ADMIN, { ...base, key: { spki: small } }))).message).toBe(
      "is a 1024-bit RSA key; RSA keys must have 2048 to 16384 bits",
    );
  });
});

describe("revocation and the CRL", () => {
  test("revoking: the CRL lists the serial with its reason, openssl refuses the revoked leaf and accepts the others", async () => {
    const { ca, revoked, pushes, db } = setup();
    await ca.ensureRoot();
    const first = await ca.crl();
    const a = await ca.issue(ADMIN, { kind: "user", commonName: "a", usages: ["clientAuth"], days: 30, key: "generate" });
    const b = await ca.issue(ADMIN, { kind: "user", commonName: "b", usages: ["clientAuth"], days: 30, key: "generate" });
    const view = await ca.revoke(ADMIN, a.certificate.serial.toUpperCase(), "keyCompromise");
    expect(view).toMatchObject({ serial: a.certificate.serial, status: "revoked", revocation_reason: "keyCompromise" });
    expect(view.revoked_at).not.toBeNull();
    expect(revoked).toEqual([{ serials: [a.certificate.serial] }]);
    expect(pushes.at(-1)).toEqual({
      topic: "certificates.changed",
      args: { serials: [a.certificate.serial], change: "revoked" },
      groups: [],
    });
    expect(db.query("SELECT actor, target, outcome, reason FROM audit WHERE action = 'cert.revoke'").all()).toEqual([
      { actor: "admin", target: a.certificate.serial, outcome: "success", reason: "keyCompromise" },
    ]);

    const crl = await ca.crl();
    expect(crl.number).toBeGreaterThan(first.number);
    const dir = scratch();
    writeFileSync(join(dir, "crl.der"), crl.der);
    writeFileSync(join(dir, "crl.pem"), crl.pem);
    writeFileSync(join(dir, "root.pem"), await ca.caPem());
    writeFileSync(join(dir, "a.pem"), a.pem);
    writeFileSync(join(dir, "b.pem"), b.pem);
    const text = openssl(["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], dir).out;
    expect(text).toContain("Version 2 (0x1)");
    expect(text).toContain("Issuer: O = Acme, CN = latchkey root CA");
    expect(text).toMatch(new RegExp(`X509v3 CRL Number:\\s*\\n\\s+${crl.number}\\n`));
    expect(text).toContain("X509v3 Authority Key Identifier");
    expect(text).toContain(`Serial Number: ${a.certificate.serial.toUpperCase()}`);
    expect(text).toMatch(/X509v3 CRL Reason Code:\s*\n\s+Key Compromise/);
    expect(text).not.toContain(b.certificate.serial.toUpperCase());
    expect(openssl(["crl", "-in", "crl.pem", "-CAfile", "root.pem", "-noout"], dir).err).toContain("verify OK");
    const refused = openssl(["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "root.pem", "a.pem"], dir);
    expect(refused.code).not.toBe(0);
    expect(refused.out + refused.err).toContain("certificate revoked");
    expect(openssl(["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "root.pem", "b.pem"], dir).code).toBe(0);

    // Unknown, already revoked, not a serial.
    expect((await rejection(ca.revoke(ADMIN, "abcdef", "unspecified"))).code).toBe("not_found");
    expect(await rejection(ca.revoke(ADMIN, a.certificate.serial, "unspecified"))).toMatchObject({
      code: "conflict",
      message: `certificate ${a.certificate.serial} is already revoked`,
    });
    expect((await rejection(ca.revoke(ADMIN, "xyz", "unspecified"))).field).toBe("serial");
    expect((await rejection(ca.revoke(ADMIN, b.certificate.serial, "cACompromise" as never))).field).toBe("reason");
  });

  test("an empty CRL has no revoked list, and openssl accepts it", async () => {
    const { ca } = setup();
    await ca.ensureRoot();
    const crl = await ca.crl();
    const dir = scratch();
    writeFileSync(join(dir, "crl.pem"), crl.pem);
    writeFileSync(join(dir, "root.pem"), await ca.caPem());
    const text = openssl(["crl", "-in", "crl.pem", "-CAfile", "root.pem", "-noout", "-text"], dir);
    expect(text.err).toContain("verify OK");
    expect(text.out).toContain("No Revoked Certificates.");
    expect(Date.parse(crl.next_update) - Date.parse(crl.this_update)).toBe(7 * DAY);
  });

  test("revocation races across two connections and two processes: exactly one winner per certificate", async () => {
    const { ca, second, dir } = setup();
    await ca.ensureRoot();
    const other = second();
    for (let round = 0; round < 10; round++) {
      const { certificate } = await ca.issue(ADMIN, {
        kind: "user",
        commonName: `r${round}`,
        usages: ["clientAuth"],
        days: 1,
        key: "generate",
      });
      const outcomes = await Promise.allSettled([
        ca.revoke(ADMIN, certificate.serial, "superseded"),
        other.ca.revoke(ADMIN, certificate.serial, "keyCompromise"),
        ca.revoke(ADMIN, certificate.serial, "unspecified"),
      ]);
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      for (const o of outcomes) if (o.status === "rejected") expect((o.reason as AppError).code).toBe("conflict");
    }

    const serials: string[] = [];
    for (let i = 0; i < 20; i++) {
      serials.push(
        (await ca.issue(ADMIN, { kind: "user", commonName: `p${i}`, usages: ["clientAuth"], days: 1, key: "generate" })).certificate.serial,
      );
    }
    const startAt = String(Date.now() + 1500);
    const outputs = await runChildren([
      [dir, "revoke", startAt, ...serials],
      [dir, "revoke", startAt, ...[...serials].reverse()],
    ]);
    const won = outputs.map((o) => JSON.parse(o) as Record<string, string>);
    for (const serial of serials) {
      expect([won[0]![serial], won[1]![serial]].sort()).toEqual(["conflict", "revoked"]);
    }
    // Both processes' revocations are in the CRL this process serves: it notices the others' writes.
    const crl = await ca.crl();
    const crlDir = scratch();
    writeFileSync(join(crlDir, "crl.der"), crl.der);
    const text = openssl(["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], crlDir).out;
    for (const serial of serials) expect(text).toContain(`Serial Number: ${serial.toUpperCase()}`);
  });

  test("the CRL is rebuilt when a revocation happened elsewhere, and when it is within a day of nextUpdate", async () => {
    const { ca, second, clock } = setup();
    await ca.ensureRoot();
    const other = second();
    const first = await ca.crl();
    expect((await ca.crl()).number).toBe(first.number);
    expect(await ca.refreshCrlIfDue()).toBe(false);

    const { certificate } = await ca.issue(ADMIN, { kind: "user", commonName: "x", usages: ["clientAuth"], days: 30, key: "generate" });
    await other.ca.revoke(ADMIN, certificate.serial, "unspecified");
    const afterRevoke = await ca.crl();
    expect(afterRevoke.number).toBeGreaterThan(first.number);
    expect(readCrlSerials(afterRevoke.der)).toEqual([certificate.serial.toUpperCase()]);

    clock.advance(5 * DAY);
    expect((await ca.crl()).number).toBe(afterRevoke.number);
    expect(await ca.refreshCrlIfDue()).toBe(false);
    clock.advance(DAY);
    expect(await ca.refreshCrlIfDue()).toBe(true);
    const refreshed = await ca.crl();
    expect(refreshed.number).toBe(afterRevoke.number + 1);
    expect(refreshed.this_update).toBe(new Date(clock()).toISOString());
    clock.advance(6 * DAY + 1);
    expect((await ca.crl()).number).toBe(refreshed.number + 1);
  });

  test("concurrent CRL builds in one process share the waiting build; numbers only grow", async () => {
    const { ca, second } = setup();
    await ca.ensureRoot();
    const other = second();
    const certs = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        ca.issue(ADMIN, { kind: "user", commonName: `c${i}`, usages: ["clientAuth"], days: 1, key: "generate" }),
      ),
    );
    await Promise.all(certs.map((c, i) => (i % 2 ? other.ca : ca).revoke(ADMIN, c.certificate.serial, "unspecified")));
    const [a, b] = await Promise.all([ca.crl(), other.ca.crl()]);
    expect(readCrlSerials(a.der).sort()).toEqual(certs.map((c) => c.certificate.serial.toUpperCase()).sort());
    expect(readCrlSerials(b.der).sort()).toEqual(readCrlSerials(a.der).sort());
  });
});

/** The revoked serials of a DER CRL, as openssl prints them. */
function readCrlSerials(der: Uint8Array): string[] {
  const dir = scratch();
  writeFileSync(join(dir, "crl.der"), der);
  const text = openssl(["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], dir).out;
  return [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!);
}

describe("importing a root made by openssl", () => {
  const CONFIG = (extensions: string) =>
    "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n" +
    `[dn]\nO = Woodstock\nCN = Woodstock Root CA\n[ext]\n${extensions}\n`;

  function opensslCa(
    dir: string,
    key: "ec" | "rsa" | "rsa1024" | "p384",
    extensions = "basicConstraints = critical,CA:TRUE\nsubjectKeyIdentifier = hash",
  ) {
    writeFileSync(join(dir, "ca.cnf"), CONFIG(extensions));
    if (key === "ec") openssl(["ecparam", "-name", "prime256v1", "-genkey", "-out", "ca.key"], dir);
    if (key === "p384") openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "ca.key"], dir);
    if (key === "rsa") openssl(["genrsa", "-traditional", "-out", "ca.key", "2048"], dir);
    if (key === "rsa1024") openssl(["genrsa", "-traditional", "-out", "ca.key", "1024"], dir);
    const made = openssl(["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "30", "-config", "ca.cnf", "-out", "ca.pem"], dir);
    expect(made.err).toBe("");
    const read = (f: string) => readFileSync(join(dir, f), "utf8") as string;
    return { cert: read("ca.pem"), key: read("ca.key") };
  }

  async function importsAndIssues(key: "ec" | "rsa" | "p384", label: string, signature: string) {
    const { ca, db } = setup();
    await ca.ensureRoot();
    const dir = scratch();
    const made = opensslCa(dir, key);
    expect(made.key).toContain(`-----BEGIN ${label}-----`);
    const root = await ca.importRoot(ADMIN, made.cert, made.key);
    const fp = openssl(["x509", "-in", "ca.pem", "-noout", "-fingerprint", "-sha256"], dir).out.trim();
    expect(fp).toBe(`sha256 Fingerprint=${root.fingerprint_colon}`);
    expect(root).toMatchObject({ source: "imported", common_name: "Woodstock Root CA", organization: "Woodstock", created_by: "admin" });
    expect(await ca.caFingerprint()).toBe(root.fingerprint);
    const leaf = await ca.issue(ADMIN, { kind: "user", commonName: "after-import", usages: ["clientAuth"], days: 5, key: "generate" });
    writeFileSync(join(dir, "leaf.pem"), leaf.pem);
    expect(openssl(["x509", "-in", "leaf.pem", "-noout", "-text"], dir).out).toContain(`Signature Algorithm: ${signature}`);
    expect(openssl(["verify", "-CAfile", "ca.pem", "leaf.pem"], dir)).toMatchObject({ code: 0, out: "leaf.pem: OK\n" });
    const crl = await ca.crl();
    writeFileSync(join(dir, "crl.pem"), crl.pem);
    expect(openssl(["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "ca.pem", "leaf.pem"], dir).code).toBe(0);
    // The imported key is stored as PKCS#8 and appears in no view or audit entry.
    const stored = db.query<{ key_pem: string }, []>("SELECT key_pem FROM ca_roots WHERE retired_at IS NULL").get()!.key_pem;
    expect(stored).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    const audit = JSON.stringify(db.query("SELECT * FROM audit").all());
    for (const marker of keyMarkers(stored)) expect(JSON.stringify([root, leaf, await ca.root(), crl.pem]) + audit).not.toContain(marker);
  }

  test("an EC P-256 root with its SEC1 key (EC PARAMETERS + EC PRIVATE KEY, no KeyUsage) imports, and its leaves verify", async () => {
    await importsAndIssues("ec", "EC PRIVATE KEY", "ecdsa-with-SHA256");
  });

  test("an RSA 2048 root with its PKCS#1 key (RSA PRIVATE KEY) imports, and its leaves verify", async () => {
    await importsAndIssues("rsa", "RSA PRIVATE KEY", "sha256WithRSAEncryption");
  });

  test("an EC P-384 root with a PKCS#8 key imports and signs with SHA-384", async () => {
    await importsAndIssues("p384", "PRIVATE KEY", "ecdsa-with-SHA384");
  });

  test("refusals say what is wrong: not a CA, no keyCertSign, a key that does not match, encrypted, weak, not PEM", async () => {
    const { ca, db } = setup();
    const before = await ca.ensureRoot();
    const refused = async (cert: string, key: string) => rejection(ca.importRoot(ADMIN, cert, key));

    const leafDir = scratch();
    const leaf = opensslCa(leafDir, "ec", "basicConstraints = critical,CA:FALSE");
    expect(await refused(leaf.cert, leaf.key)).toMatchObject({
      code: "bad_request",
      field: "certificate",
      message: "is not a CA certificate (BasicConstraints CA:TRUE is missing)",
    });
    const noBasic = opensslCa(scratch(), "ec", "subjectKeyIdentifier = hash");
    expect((await refused(noBasic.cert, noBasic.key)).message).toBe("is not a CA certificate (BasicConstraints CA:TRUE is missing)");

    const signOnly = opensslCa(scratch(), "ec", "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,digitalSignature");
    expect((await refused(signOnly.cert, signOnly.key)).message).toBe(
      "is a CA certificate whose KeyUsage does not allow signing certificates (keyCertSign)",
    );
    const noCrl = opensslCa(scratch(), "ec", "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign");
    expect((await refused(noCrl.cert, noCrl.key)).message).toContain("does not allow signing CRLs (cRLSign)");

    const good = opensslCa(scratch(), "ec", "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign");
    const otherKey = opensslCa(scratch(), "ec").key;
    expect(await refused(good.cert, otherKey)).toMatchObject({
      field: "key",
      message: "does not belong to the certificate (its public key is not the certificate's)",
    });
    const rsaKey = opensslCa(scratch(), "rsa").key;
    expect((await refused(good.cert, rsaKey)).message).toBe("does not belong to the certificate (its public key is not the certificate's)");

    const encDir = scratch();
    writeFileSync(join(encDir, "plain.key"), good.key);
    openssl(["pkcs8", "-topk8", "-in", "plain.key", "-passout", "pass:secret", "-out", "enc.key"], encDir);
    const encrypted = readFileSync(join(encDir, "enc.key"), "utf8") as string;
    expect(encrypted).toContain("ENCRYPTED PRIVATE KEY");
    expect((await refused(good.cert, encrypted)).message).toBe(
      "is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem) and import the plain key",
    );
    openssl(["ec", "-in", "plain.key", "-aes256", "-passout", "pass:secret", "-out", "legacy.key"], encDir);
    const legacy = readFileSync(join(encDir, "legacy.key"), "utf8");
    expect(legacy).toContain("Proc-Type: 4,ENCRYPTED");
    expect((await refused(good.cert, legacy)).message).toBe(
      "is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem) and import the plain key",
    );

    const weak = opensslCa(scratch(), "rsa1024");
    expect(await refused(weak.cert, weak.key)).toMatchObject({
      field: "certificate",
      message: "the CA key must be ECDSA P-256, ECDSA P-384 or RSA of at least 2048 bits",
    });

    expect(await refused("not a pem", good.key)).toMatchObject({
      field: "certificate",
      message: "must be a PEM certificate (-----BEGIN CERTIFICATE-----)",
    });
    expect((await refused(good.cert + good.cert, good.key)).message).toBe("holds 2 certificates; give exactly one");
    expect((await refused(good.cert, "nothing")).message).toBe(
      "must be a PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
    );
    const garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    expect((await refused(garbage, good.key)).message).toBe("is not a valid X.509 certificate");

    // Nothing changed, and every refusal is in the audit log.
    expect(await ca.caFingerprint()).toBe(before.fingerprint);
    expect(db.query("SELECT count(*) AS n FROM audit WHERE action = 'ca.import' AND outcome = 'failure'").get()).toEqual({ n: 13 });
    // The sanity of the good pair: it does import.
    expect((await ca.importRoot(ADMIN, good.cert, good.key)).source).toBe("imported");
  });

  test("an expired root and an intermediate (not self-signed) are refused", async () => {
    const { ca } = setup();
    await ca.ensureRoot();
    const dir = scratch();
    const root = opensslCa(dir, "ec", "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign");
    writeFileSync(join(dir, "int.cnf"), CONFIG("basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign"));
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-out", "int.key"], dir);
    openssl(["req", "-new", "-key", "int.key", "-config", "int.cnf", "-subj", "/CN=Intermediate", "-out", "int.csr"], dir);
    const signed = openssl(
      [
        "x509",
        "-req",
        "-in",
        "int.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "5",
        "-extfile",
        "int.cnf",
        "-extensions",
        "ext",
        "-out",
        "int.pem",
      ],
      dir,
    );
    expect(signed.code).toBe(0);
    const read = (f: string) => readFileSync(join(dir, f), "utf8") as string;
    expect((await rejection(ca.importRoot(ADMIN, read("int.pem"), read("int.key")))).message).toBe(
      "is not a self-signed root CA; import the root, not an intermediate",
    );
    const later = setup();
    await later.ca.ensureRoot();
    later.clock.advance(40 * DAY);
    expect((await rejection(later.ca.importRoot(ADMIN, root.cert, root.key))).message).toMatch(/^expired on /);
  });

  test("while the current root has certificates in use, import is refused; with force they are revoked, the old key erased", async () => {
    const { ca, hosts, db, revoked } = setup();
    const old = await ca.ensureRoot();
    await ca.serverCertificate();
    await hosts.registerHost(ADMIN, "web1", null);
    const bundle = await hosts.hostBundle(ADMIN, "web1");
    const user = await ca.issue(ADMIN, { kind: "user", commonName: "u", usages: ["clientAuth"], days: 5, key: "generate" });
    const made = opensslCa(scratch(), "ec");

    const refusal = await rejection(ca.importRoot(ADMIN, made.cert, made.key));
    expect(refusal).toMatchObject({ code: "conflict" });
    expect(db.query("SELECT reason FROM audit WHERE action = 'ca.import' AND outcome = 'failure'").get()).toEqual({
      reason: refusal.message,
    });
    expect(refusal.message).toBe(
      "the current root CA has 2 certificates in use (1 host, 1 user), which stop working with a new root; " +
        "revoke them (or remove their hosts) first, or import with force to revoke them all",
    );
    expect(await ca.caFingerprint()).toBe(old.fingerprint);

    const root = await ca.importRoot(ADMIN, made.cert, made.key, { force: true });
    expect(await ca.caFingerprint()).toBe(root.fingerprint);
    expect(revoked.at(-1)!.serials.sort()).toEqual(
      [
        bundle.serial,
        user.certificate.serial,
        db.query<{ serial: string }, []>("SELECT serial FROM ca_server_certificates").get()!.serial,
      ].sort(),
    );
    expect(await ca.get(null, user.certificate.serial)).toMatchObject({
      status: "revoked",
      revocation_reason: "superseded",
      current_root: false,
    });
    expect(db.query("SELECT source, key_pem IS NULL AS erased, retired_at IS NOT NULL AS retired FROM ca_roots ORDER BY id").all()).toEqual(
      [
        { source: "generated", erased: 1, retired: 1 },
        { source: "imported", erased: 0, retired: 0 },
      ],
    );
    expect(db.query("SELECT reason FROM audit WHERE action = 'ca.import' AND outcome = 'success'").get()).toEqual({
      reason: `replaced ${old.fingerprint}; revoked 3 certificates`,
    });
    // The old certificates do not verify against the new root; importing the same root again changes nothing.
    const dir = scratch();
    writeFileSync(join(dir, "root.pem"), await ca.caPem());
    writeFileSync(join(dir, "old.pem"), bundle.certificate);
    expect(openssl(["verify", "-CAfile", "root.pem", "old.pem"], dir).code).not.toBe(0);
    expect(await ca.importRoot(ADMIN, made.cert, made.key)).toEqual(root);
    expect(db.query("SELECT count(*) AS n FROM ca_roots").get()).toEqual({ n: 2 });
    // With no certificate in use (only the listener's), import goes through without force.
    const next = opensslCa(scratch(), "rsa");
    await ca.serverCertificate();
    expect((await ca.importRoot(ADMIN, next.cert, next.key)).common_name).toBe("Woodstock Root CA");
  });
});

describe("the mTLS listener's certificate", () => {
  test("issued by the root for localhost, 127.0.0.1, ::1, the machine and the extra names; serverAuth; reused while fresh", async () => {
    const { ca, clock } = setup({ machineHostname: () => "Build-Host" });
    await ca.ensureRoot();
    const server = await ca.serverCertificate({ sans: ["latchkey.example.org", "192.0.2.10", "2001:db8::10"] });
    expect(server.sans).toEqual(["build-host", "latchkey.example.org", "localhost", "127.0.0.1", "192.0.2.10", "2001:db8::10", "::1"]);
    expect(server.ca).toBe(await ca.caPem());
    const dir = scratch();
    writeFileSync(join(dir, "server.pem"), server.certificate);
    writeFileSync(join(dir, "server.key"), server.key);
    writeFileSync(join(dir, "root.pem"), await ca.caPem());
    const text = openssl(["x509", "-in", "server.pem", "-noout", "-text"], dir).out;
    expect(text).toContain("Subject: CN = build-host");
    expect(text).toMatch(/X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication\n/);
    expect(text).toContain(
      "DNS:build-host, DNS:latchkey.example.org, DNS:localhost, IP Address:127.0.0.1, IP Address:192.0.2.10, " +
        "IP Address:2001:DB8:0:0:0:0:0:10, IP Address:0:0:0:0:0:0:0:1",
    );
    expect(openssl(["verify", "-purpose", "sslserver", "-CAfile", "root.pem", "server.pem"], dir).code).toBe(0);
    expect(openssl(["x509", "-in", "server.pem", "-noout", "-pubkey"], dir).out).toBe(
      openssl(["pkey", "-in", "server.key", "-pubout"], dir).out,
    );
    const days = (Date.parse(server.not_after) - clock()) / DAY;
    expect(Math.round(days)).toBe(365);

    // The same names in another order: the same certificate.
    const again = await ca.serverCertificate({ sans: ["2001:db8::10", "LATCHKEY.example.org", "192.0.2.10"] });
    expect(again).toEqual(server);
    // Other names: another certificate, the first one kept for its own names.
    const other = await ca.serverCertificate({ sans: [] });
    expect(other.serial).not.toBe(server.serial);
    // Until a third of its life is left it is reused; then it is renewed.
    clock.advance(240 * DAY);
    expect((await ca.serverCertificate({ sans: ["latchkey.example.org", "192.0.2.10", "2001:db8::10"] })).serial).toBe(server.serial);
    clock.advance(10 * DAY);
    const renewed = await ca.serverCertificate({ sans: ["latchkey.example.org", "192.0.2.10", "2001:db8::10"] });
    expect(renewed.serial).not.toBe(server.serial);
    // Revoked: renewed.
    await ca.revoke(ADMIN, renewed.serial, "keyCompromise");
    expect((await ca.serverCertificate({ sans: ["latchkey.example.org", "192.0.2.10", "2001:db8::10"] })).serial).not.toBe(renewed.serial);
  });

  test("two calls at once, in two processes, end with one stored certificate that both return", async () => {
    for (let round = 0; round < 3; round++) {
      const { ca, db, dir } = setup();
      await ca.ensureRoot();
      const startAt = Date.now() + 1500;
      const [child, a] = await Promise.all([
        runChildren([[dir, "server", String(startAt)]]),
        Bun.sleep(startAt - Date.now()).then(() => ca.serverCertificate()),
      ]);
      expect(a).toEqual(JSON.parse(child[0]!));
      expect(db.query("SELECT count(*) AS n FROM certificates WHERE kind = 'server'").get()).toEqual({ n: 1 });
    }
  });

  test("a machine name that is not a DNS name is left out", async () => {
    const { ca } = setup({ machineHostname: () => "my_box" });
    await ca.ensureRoot();
    const server = await ca.serverCertificate();
    expect(server.sans).toEqual(["localhost", "127.0.0.1", "::1"]);
    expect(readCertificate(server.certificate).commonName).toBe("localhost");
  });
});

describe("a TLS client's certificate, identified", () => {
  /** The listener's identification of `der` with a verifier of its own, whose counters tell whether PKIjs saw it. */
  async function identifier(ca: CertificateAuthority, clock: () => number) {
    const roots = [await ca.caPem()];
    const verifier = new CertificateVerifier({ roots, extendedKeyUsage: "clientAuth", keyUsage: ["digitalSignature"] });
    return { verifier, identify: (der: Uint8Array) => identifyCertificate({ verifier: async () => verifier, ca, clock }, der) };
  }

  test("one this CA issued is judged by its issuance record (no PKIjs), as the verifier would judge it", async () => {
    const { ca, clock } = setup();
    await ca.ensureRoot();
    const { verifier, identify } = await identifier(ca, clock);
    const issued = await ca.issue(ADMIN, { kind: "user", commonName: "alice", usages: ["clientAuth"], days: 30, key: "generate" });
    const der = certificateDer(issued.pem);
    const identity = await identify(der);
    expect(verifier.counters.analyses).toBe(0);
    const checked = await verifier.verify(der, { time: clock() });
    if (!checked.ok) throw new Error(`the verifier refused it: ${checked.reason}`);
    expect(identity).toEqual({
      kind: "valid",
      serial: checked.leaf.serial,
      fingerprint: checked.leaf.fingerprint,
      commonName: "alice",
      notAfter: checked.leaf.notAfter.getTime(),
      der,
    });

    // The listener's own certificate (serverAuth only) does not sign a client in: the verifier's reason.
    const server = certificateDer((await ca.serverCertificate()).certificate);
    expect(await identify(server)).toEqual({ kind: "invalid", reason: "eku" });
    expect(await verifier.verify(server, { time: clock() })).toMatchObject({ ok: false, reason: "eku" });

    // Validity is read at each connection: a second past notAfter it is expired, as the verifier says.
    const notAfter = checked.leaf.notAfter.getTime();
    clock.set(notAfter + 1000);
    expect(await identify(der)).toEqual({ kind: "invalid", reason: "expired" });
    expect(await verifier.verify(der, { time: clock() })).toMatchObject({ ok: false, reason: "expired" });
    clock.set(notAfter - 1000);
    expect((await identify(der)).kind).toBe("valid");

    await ca.revoke(ADMIN, checked.leaf.serial, "keyCompromise");
    expect(await identify(der)).toEqual({ kind: "invalid", reason: "revoked" });
    expect(verifier.counters.analyses).toBe(2); // the two direct calls above, not the identifications
  });

  test("one it did not issue, or issued under a replaced root, goes through the verifier", async () => {
    const { ca, clock } = setup();
    await ca.ensureRoot();
    const old = await ca.issue(ADMIN, { kind: "user", commonName: "bob", usages: ["clientAuth"], days: 30, key: "generate" });
    const stranger = await createRootCertificate({ organization: "Elsewhere", now: new Date(clock()) });
    const signer = await CaSigner.load(stranger.pem, stranger.keyPem);
    const pair = await generateKeyPair();
    const foreign = await signer.issue({
      commonName: "eve",
      sans: [],
      usages: ["clientAuth"],
      publicKey: pair.spki,
      now: new Date(clock()),
      days: 30,
    });
    const { verifier, identify } = await identifier(ca, clock);
    expect(await identify(certificateDer(foreign.pem))).toEqual({ kind: "invalid", reason: "unknown_issuer" });
    expect(verifier.counters.analyses).toBe(1);

    // A root imported in place of the first: the old root's certificates are no longer known.
    await ca.importRoot(ADMIN, stranger.pem, stranger.keyPem, { force: true });
    const after = await identifier(ca, clock);
    expect(await after.identify(certificateDer(old.pem))).toEqual({ kind: "invalid", reason: "unknown_issuer" });
    expect(after.verifier.counters.analyses).toBe(1);
  });
});

test("the CA key appears in no view, audit entry or event", async () => {
  const { ca, hosts, db, pushes, revoked } = setup();
  const root = await ca.ensureRoot();
  const outputs: unknown[] = [root, await ca.root(), await ca.caPem(), await ca.caFingerprint()];
  outputs.push(await ca.serverCertificate({ sans: ["x.example"] }));
  await hosts.registerHost(ADMIN, "h1", "lab");
  outputs.push(await hosts.hostBundle(ADMIN, "h1"));
  const issued = await ca.issue(ADMIN, { kind: "user", commonName: "u", usages: ["clientAuth"], days: 1, key: "generate" });
  outputs.push(issued, await ca.revoke(ADMIN, issued.certificate.serial, "unspecified"));
  outputs.push(await ca.list(null, {}, 100, 0), await ca.get(null, issued.certificate.serial), await hosts.listHosts(null, {}, 10, 0));
  const crl = await ca.crl();
  outputs.push({ ...crl, der: Buffer.from(crl.der).toString("base64") });
  await hosts.removeHost(ADMIN, "h1");
  outputs.push(pushes, revoked, db.query("SELECT * FROM audit").all());
  const text = JSON.stringify(outputs);
  const key = db.query<{ key_pem: string }, []>("SELECT key_pem FROM ca_roots").get()!.key_pem;
  for (const marker of keyMarkers(key)) expect(text).not.toContain(marker);
});
