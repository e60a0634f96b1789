/**
 * Enrollment ends with a certificate (SPEC §4), seen from the server: `client/csr` with requests
 * made by `openssl req`, the certificate `openssl` reads back, the host registered with it; the
 * certificate admitting its client on the mTLS listener with no key; and its revocation with the
 * client's identity (key revoked or reset, client deleted, host removed), closing the sockets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { call, eventually, login, RpcClient, startTestServer, tempDir, type TestServer } from "./support.ts";

async function sh(cmd: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const proc = Bun.spawn(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out, err };
}

let server: TestServer;
let admin: string;
let dir: ReturnType<typeof tempDir>;
let ca: string;
let counter = 0;

/** A key pair and a CSR for `cn`, made by openssl; `keyArgs` picks the key type (EC P-256 unless given). */
async function opensslCsr(cn: string, keyArgs = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]) {
  const name = `req-${++counter}`;
  const made = await sh(
    ["openssl", "req", "-new", ...keyArgs, "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`],
    dir.path,
  );
  expect(made.code).toBe(0);
  return { name, csr: await Bun.file(join(dir.path, `${name}.csr`)).text(), key: await Bun.file(join(dir.path, `${name}.key`)).text() };
}

async function generateKey(body: Record<string, unknown> = { quantity: 1 }): Promise<{ id: number; key: string }> {
  const res = await call(server.url, "POST", "/api/keys", { token: admin, body });
  expect(res.status).toBe(201);
  return res.body.items[0];
}

async function setRequire(on: boolean) {
  expect((await call(server.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: on } })).status).toBe(200);
}

/** A client registered on the main listener, with a fresh key (in `group`, if given). */
async function enrolled(hostname: string, group?: string) {
  const key = await generateKey({ quantity: 1, ...(group ? { group } : {}) });
  const uuid = crypto.randomUUID();
  const socket = await RpcClient.connect(server.wsUrl);
  const reply = await socket.request("client", "register", { uuid, name: hostname, hostname, auth_key: key.key });
  expect(reply.name).toBe("response");
  return { uuid, key, socket, hostname };
}

/** A WebSocket to the mTLS listener, presenting `files` (a client certificate and its key) if given. */
function mtlsSocket(files?: { cert: string; key: string }) {
  return RpcClient.connect(`wss://localhost:${server.mtlsPort}/ws`, undefined, { ca, ...(files ?? {}) });
}

async function csr(socket: RpcClient, pem: unknown) {
  return socket.request("client", "csr", { csr: pem });
}

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  dir = tempDir();
  ca = await server.services.ca.caPem();
  await setRequire(true);
});

afterAll(async () => {
  await server.close();
  dir.remove();
});

describe("client/csr", () => {
  test("a registered client gets a clientAuth certificate for its hostname, and its host is registered in its group", async () => {
    const client = await enrolled("Web-01.Example", "shop");
    const request = await opensslCsr("WEB-01.example");
    const reply = await csr(client.socket, request.csr);
    expect(reply.name).toBe("response");
    const issued = reply.args;
    expect(Object.keys(issued).sort()).toEqual(["ca", "ca_fingerprint", "certificate", "not_after", "not_before", "serial"]);
    expect(issued.ca).toBe(ca);
    expect(issued.ca_fingerprint).toBe(await server.services.ca.caFingerprint());
    // 30 days unless --client-cert-days says otherwise.
    expect(Date.parse(issued.not_after) - Date.parse(issued.not_before)).toBe(30 * 86_400_000 + 5 * 60_000);

    writeFileSync(join(dir.path, `${request.name}.pem`), issued.certificate);
    writeFileSync(join(dir.path, "root.pem"), ca);
    const verified = await sh(["openssl", "verify", "-CAfile", "root.pem", "-purpose", "sslclient", `${request.name}.pem`], dir.path);
    expect(verified.out.trim()).toBe(`${request.name}.pem: OK`);
    const text = (await sh(["openssl", "x509", "-in", `${request.name}.pem`, "-noout", "-text", "-subject"], dir.path)).out;
    expect(text).toContain("subject=CN = web-01.example");
    expect(text).toContain("DNS:web-01.example");
    expect(text).toContain("TLS Web Client Authentication");
    expect(text).not.toContain("TLS Web Server Authentication");
    // The certificate certifies the key the client generated and kept.
    const certKey = await sh(["openssl", "x509", "-in", `${request.name}.pem`, "-noout", "-pubkey"], dir.path);
    const ownKey = await sh(["openssl", "pkey", "-in", `${request.name}.key`, "-pubout"], dir.path);
    expect(certKey.out).toBe(ownKey.out);

    const host = await call(server.url, "GET", "/api/hosts/web-01.example", { token: admin });
    expect(host.body).toMatchObject({ hostname: "web-01.example", group: "shop", certificate: { serial: issued.serial } });
    const cert = await call(server.url, "GET", `/api/certs/${issued.serial}`, { token: admin });
    expect(cert.body).toMatchObject({ kind: "client", hostname: "web-01.example", client_uuid: client.uuid, status: "valid" });
    client.socket.close();
  });

  test("refused: before registering (401), a subject that is not the client (403), a request not signed by its key (400)", async () => {
    const anonymous = await RpcClient.connect(server.wsUrl);
    const request = await opensslCsr("lonely.example");
    expect((await csr(anonymous, request.csr)).args).toEqual({ code: 401, message: "Unauthorized" });
    anonymous.close();

    const client = await enrolled("db-02.example");
    const other = await opensslCsr("web-01.example");
    const wrong = await csr(client.socket, other.csr);
    expect(wrong.args.code).toBe(403);
    expect(wrong.args.field).toBe("csr");
    expect(wrong.args.message).toContain("CN=db-02.example");
    const noCn = await sh(
      ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "nocn.key", "-subj", "/O=x"],
      dir.path,
    );
    expect((await csr(client.socket, noCn.out)).args).toMatchObject({ code: 403, field: "csr" });

    // The subject changed after signing: the signature no longer verifies with the key it carries.
    const mine = await opensslCsr("DB-02.example");
    const der = Buffer.from(mine.csr.replace(/-----[^-]+-----/g, "").replace(/\s/g, ""), "base64");
    der[der.indexOf(Buffer.from("DB-02"))] = "d".charCodeAt(0);
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    const forged = await csr(client.socket, tampered);
    expect(forged.args).toMatchObject({ code: 400, field: "csr" });
    expect(forged.args.message).toContain("signature does not verify");
    expect((await server.services.ca.list(null, { hostname: "db-02.example" }, 10, 0)).total).toBe(0);
    client.socket.close();
  });

  test("malformed, oversized, missing and hostile requests get a 400 naming the field; nothing is issued", async () => {
    const client = await enrolled("bad-input.example");
    const rsa1024 = await opensslCsr("bad-input.example", ["-newkey", "rsa:1024"]);
    // The schema names the argument (args.csr); reading the request names what it holds (csr).
    const cases: [unknown, string][] = [
      [undefined, "args.csr"],
      [null, "args.csr"],
      [42, "args.csr"],
      ["", "args.csr"],
      ["not a pem", "csr"],
      [`-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n`, "csr"],
      [`-----BEGIN CERTIFICATE REQUEST-----\n${"A".repeat(17_000)}\n-----END CERTIFICATE REQUEST-----\n`, "args.csr"],
      [ca, "csr"],
      [rsa1024.csr, "csr"],
      [rsa1024.csr + rsa1024.csr, "csr"],
    ];
    for (const [pem, field] of cases) {
      const reply = await client.socket.request("client", "csr", pem === undefined ? {} : { csr: pem });
      expect({ pem: String(pem).slice(0, 40), code: reply.args.code, field: reply.args.field }).toEqual({
        pem: String(pem).slice(0, 40),
        code: 400,
        field,
      });
    }
    const extra = await client.socket.request("client", "csr", { csr: rsa1024.csr, days: 3650 });
    expect(extra.args).toMatchObject({ code: 400, field: "args.days" });
    expect((await client.socket.request("client", "csr", "x")).args.code).toBe(400);
    // RSA of a proper size, and Ed25519, are certified as well.
    expect((await csr(client.socket, (await opensslCsr("bad-input.example", ["-newkey", "rsa:2048"])).csr)).name).toBe("response");
    expect((await csr(client.socket, (await opensslCsr("bad-input.example", ["-newkey", "ed25519"])).csr)).name).toBe("response");
    client.socket.close();
  });

  test("renewals never pile up: a client keeps its two newest certificates, older ones are revoked as superseded", async () => {
    const client = await enrolled("renew.example");
    const serials: string[] = [];
    for (let i = 0; i < 4; i++) serials.push((await csr(client.socket, (await opensslCsr("renew.example")).csr)).args.serial);
    const states = await Promise.all(serials.map(async (s) => (await call(server.url, "GET", `/api/certs/${s}`, { token: admin })).body));
    expect(states.map((c) => [c.status, c.revocation_reason])).toEqual([
      ["revoked", "superseded"],
      ["revoked", "superseded"],
      ["valid", null],
      ["valid", null],
    ]);
    client.socket.close();
  });

  test("many requests at once from one client: every one answered, two certificates left valid", async () => {
    const client = await enrolled("burst.example");
    const requests = await Promise.all(Array.from({ length: 12 }, () => opensslCsr("burst.example")));
    const replies = await Promise.all(requests.map((r) => csr(client.socket, r.csr)));
    expect(replies.map((r) => r.name)).toEqual(requests.map(() => "response"));
    const valid = await server.services.ca.list(null, { hostname: "burst.example", status: "valid" }, 100, 0);
    expect(valid.total).toBe(2);
    client.socket.close();
  });

  test("many clients of one hostname enroll at once: one host, every client its certificate", async () => {
    const clients = await Promise.all(Array.from({ length: 10 }, () => enrolled("shared.example")));
    const requests = await Promise.all(clients.map(() => opensslCsr("shared.example")));
    const replies = await Promise.all(clients.map((c, i) => csr(c.socket, requests[i]!.csr)));
    expect(replies.map((r) => r.name)).toEqual(clients.map(() => "response"));
    const hosts = await call(server.url, "GET", "/api/hosts?limit=500", { token: admin });
    expect(hosts.body.items.filter((h: { hostname: string }) => h.hostname === "shared.example")).toHaveLength(1);
    for (const c of clients) c.socket.close();
  });
});

describe("the certificate on the mTLS listener", () => {
  /** An enrolled client with its certificate files. */
  async function certified(hostname: string) {
    const client = await enrolled(hostname);
    const request = await opensslCsr(hostname);
    const issued = (await csr(client.socket, request.csr)).args;
    client.socket.close();
    await eventually(() => client.socket.closedWith !== null, { what: "the plain socket closed" });
    return { ...client, files: { cert: issued.certificate as string, key: request.key }, serial: issued.serial as string };
  }

  test("admits its client with no key, even with the key expired; another UUID is refused; the client's own calls work", async () => {
    const client = await certified("agent-1.example");
    // Its key ran out meanwhile: a restart is not a re-enrollment.
    await server.services.storage.sql.run("UPDATE enrollment_keys SET expires_at = ? WHERE id = ?", [Date.now() - 60_000, client.key.id]);
    expect((await call(server.url, "GET", `/api/keys/${client.key.id}`, { token: admin })).body.expired).toBe(true);
    const socket = await mtlsSocket(client.files);
    const registered = await socket.request("client", "register", { uuid: client.uuid, name: "agent-1", hostname: "agent-1.example" });
    expect(registered.args).toEqual({ registered: true, uuid: client.uuid, group: null, reconnect: true });
    expect((await socket.request("client", "heartbeat", {})).args).toBe("ok");
    const listed = await call(server.url, "GET", `/api/clients/${client.uuid}`, { token: admin });
    expect(listed.body).toMatchObject({ online: true, key_id: client.key.id });
    expect((await call(server.url, "GET", `/api/keys/${client.key.id}`, { token: admin })).body.usage_count).toBe(2);
    socket.close();

    const thief = await mtlsSocket(client.files);
    const other = await thief.request("client", "register", { uuid: crypto.randomUUID(), name: "x", hostname: "agent-1.example" });
    expect(other.args).toMatchObject({ code: 403, field: "uuid" });
    thief.close();

    // Without the certificate, the same client on the same listener needs its key like anywhere else.
    const bare = await mtlsSocket();
    const refused = await bare.request("client", "register", { uuid: client.uuid, name: "agent-1", hostname: "agent-1.example" });
    expect(refused.args).toMatchObject({ code: 403, reason: "auth_required" });
    bare.close();
  });

  test("a clone of a connected client is refused even with its certificate", async () => {
    const client = await certified("agent-2.example");
    const first = await mtlsSocket(client.files);
    const args = { uuid: client.uuid, name: "agent-2", hostname: "agent-2.example" };
    expect((await first.request("client", "register", args)).name).toBe("response");
    const clone = await mtlsSocket(client.files);
    expect((await clone.request("client", "register", args)).args).toMatchObject({ code: 409, reason: "already_connected" });
    clone.close();
    first.close();
  });

  const revocations: [string, (c: Awaited<ReturnType<typeof certified>>) => Promise<number>][] = [
    ["revoking its key", async (c) => (await call(server.url, "POST", `/api/keys/${c.key.id}/revoke`, { token: admin })).status],
    ["resetting its key", async (c) => (await call(server.url, "POST", `/api/keys/${c.key.id}/reset`, { token: admin })).status],
    ["deleting its key", async (c) => (await call(server.url, "DELETE", `/api/keys/${c.key.id}`, { token: admin })).status],
    ["deleting the client", async (c) => (await call(server.url, "DELETE", `/api/clients/${c.uuid}`, { token: admin })).status],
    ["removing its host", async (c) => (await call(server.url, "DELETE", `/api/hosts/${c.hostname}`, { token: admin })).status],
  ];
  for (const [what, revoke] of revocations) {
    test(`${what} revokes its certificate and closes its sockets on both listeners`, async () => {
      const hostname = `gone-${what.split(" ")[0]}-${what.split(" ").at(-1)}.example`;
      const client = await certified(hostname);
      // Registered on the main listener with its key, and holding a connection on the mTLS one with its certificate.
      const plain = await RpcClient.connect(server.wsUrl);
      const args = { uuid: client.uuid, name: hostname, hostname };
      expect((await plain.request("client", "register", { ...args, auth_key: client.key.key })).name).toBe("response");
      const overMtls = await mtlsSocket(client.files);
      expect((await overMtls.request("client", "heartbeat", {})).args).toEqual({ code: 401, message: "Unauthorized" });
      expect([200, 204]).toContain(await revoke(client));
      await eventually(() => plain.closedWith !== null && overMtls.closedWith !== null, {
        what: () => `the sockets closed (plain ${JSON.stringify(plain.closedWith)}, mTLS ${JSON.stringify(overMtls.closedWith)})`,
        timeoutMs: 1000,
      });
      // Both are told why (4003): the mTLS one before its TLS connection is cut.
      expect(plain.closedWith!.code).toBe(4003);
      expect(overMtls.closedWith).toEqual({ code: 4003, reason: "client certificate revoked" });
      const cert = await call(server.url, "GET", `/api/certs/${client.serial}`, { token: admin });
      expect(cert.body.status).toBe("revoked");
      const crl = await server.services.ca.crl();
      writeFileSync(join(dir.path, "current.crl"), crl.der);
      const text = await sh(["openssl", "crl", "-inform", "DER", "-in", "current.crl", "-noout", "-text"], dir.path);
      expect(text.out.toLowerCase()).toContain(client.serial.toLowerCase());
      // The certificate no longer admits anyone on the mTLS listener.
      const again = await mtlsSocket(client.files);
      expect((await again.request("client", "register", args)).name).toBe("error");
      again.close();
    });
  }

  test("a revoked key that the client since replaced leaves its new certificate alone", async () => {
    const client = await certified("moved.example");
    // The machine is reinstalled with a second key (the same UUID): its old key is revoked.
    const second = await generateKey();
    const socket = await RpcClient.connect(server.wsUrl);
    expect((await call(server.url, "POST", `/api/keys/${client.key.id}/revoke`, { token: admin })).status).toBe(200);
    await eventually(
      async () => (await call(server.url, "GET", `/api/certs/${client.serial}`, { token: admin })).body.status === "revoked",
      {
        what: "the first certificate revoked",
      },
    );
    const args = { uuid: client.uuid, name: "moved", hostname: "moved.example", auth_key: second.key };
    expect((await socket.request("client", "register", args)).name).toBe("response");
    const fresh = (await csr(socket, (await opensslCsr("moved.example")).csr)).args;
    // Deleting the old key now concerns nobody: the client was admitted with the second.
    expect((await call(server.url, "DELETE", `/api/keys/${client.key.id}`, { token: admin })).status).toBe(204);
    await Bun.sleep(200);
    expect((await call(server.url, "GET", `/api/certs/${fresh.serial}`, { token: admin })).body.status).toBe("valid");
    expect(socket.closedWith).toBeNull();
    socket.close();
  });
});

describe("--client-cert-days", () => {
  test("sets the validity of client certificates", async () => {
    const own = await startTestServer({ flags: ["--client-cert-days", "7"] });
    try {
      const socket = await RpcClient.connect(own.wsUrl);
      const uuid = crypto.randomUUID();
      expect((await socket.request("client", "register", { uuid, name: "short", hostname: "short.example" })).name).toBe("response");
      const issued = (await csr(socket, (await opensslCsr("short.example")).csr)).args;
      expect(Date.parse(issued.not_after) - Date.parse(issued.not_before)).toBe(7 * 86_400_000 + 5 * 60_000);
      socket.close();
    } finally {
      await own.close();
    }
  });
});
