/**
 * The agent's certificate identity end to end: the CSR it builds, pinned TLS enrollment on the
 * mutual-TLS listener, the certificate it stores, the reconnect over mTLS with it, woodstock host
 * reports, revocation and fallback, a server whose root is not the pinned one, and renewal with an
 * injected clock. Agents run from source as real processes (the renewal one in this process, for
 * its clock) against real servers over real sockets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { runAgent } from "../src/client/agent.ts";
import { machineHostname, normalizeFingerprint } from "../src/client/config.ts";
import { createCertificateRequest } from "../src/client/csr.ts";
import { machineInterfaces } from "../src/client/report.ts";
import { call, eventually, login, runLatchkey, spawnLatchkey, startTestServer, tempDir, type TestServer } from "./support.ts";

type Proc = ReturnType<typeof spawnLatchkey>;

/** Collects a process's output as it comes, so tests can wait for a line. */
function watch(proc: Proc) {
  let out = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) out += decoder.decode(chunk, { stream: true });
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  return {
    proc,
    text: () => out,
    count: (needle: string) => out.split(needle).length - 1,
    async waitFor(needle: string, timeoutMs = 10_000, times = 1): Promise<void> {
      await eventually(() => out.split(needle).length - 1 >= times, {
        timeoutMs,
        what: () => `${JSON.stringify(needle)} ×${times} in the agent's output; output so far:\n${out}`,
      });
    },
  };
}

async function sh(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out, err };
}

/** The CN the agent asks for: the hostname it registers with, in lower case. */
const HOSTNAME = machineHostname().toLowerCase();

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir("latchkey-client-mtls-");
});
afterAll(() => dir?.remove());

const address = (server: TestServer) => server.url.replace(/^http:\/\//, "");

async function generateKey(server: TestServer, token: string): Promise<{ id: number; key: string }> {
  const res = await call(server.url, "POST", "/api/keys", { token, body: { quantity: 1, label: "mtls test" } });
  expect(res.status).toBe(201);
  return res.body.items[0];
}

async function install(state: string, args: string[]): Promise<void> {
  const res = await runLatchkey(["client", "install", ...args, "--no-service", "--state-dir", state]);
  expect(res.stderr).toBe("");
  expect(res.code).toBe(0);
}

const agent = (state: string, ...flags: string[]) =>
  watch(spawnLatchkey(["client", "run", "--state-dir", state, "--retry-max", "1", "--heartbeat", "1", ...flags]));

describe("the certificate request", () => {
  test("is a PKCS#10 request openssl verifies, for CN = the hostname, with a P-256 key kept apart", async () => {
    const request = await createCertificateRequest("web-01.example");
    const path = join(dir.path, "request.pem");
    writeFileSync(path, request.csrPem);
    const checked = await sh(["openssl", "req", "-in", path, "-verify", "-noout", "-text"]);
    expect(checked.code).toBe(0);
    expect(checked.err + checked.out).toContain("verify OK");
    expect(checked.out).toMatch(/Subject: CN\s?=\s?web-01\.example\n/);
    expect(checked.out).toContain("ASN1 OID: prime256v1");
    expect(checked.out).toContain("Signature Algorithm: ecdsa-with-SHA256");
    expect(request.csrPem).not.toContain("PRIVATE KEY");
    // The key openssl reads is the one whose public half the request carries.
    writeFileSync(join(dir.path, "request.key"), request.keyPem, { mode: 0o600 });
    const fromKey = await sh(["openssl", "pkey", "-in", join(dir.path, "request.key"), "-pubout"]);
    const fromRequest = await sh(["openssl", "req", "-in", path, "-noout", "-pubkey"]);
    expect(fromKey.out).toBe(fromRequest.out);
  });

  test("fingerprints are taken as people copy them: with or without colons, any case", () => {
    const hex = "c670f332b8619aa8eb2b7206ef22a795cc351d06c7bfff544cda8a7194572299";
    expect(normalizeFingerprint(hex)).toBe(hex);
    expect(normalizeFingerprint(hex.toUpperCase().replace(/(..)(?=.)/g, "$1:"))).toBe(hex);
    expect(normalizeFingerprint(` ${hex.slice(0, 10)}:${hex.slice(10)} `)).toBe(hex);
    expect(normalizeFingerprint(hex.slice(1))).toBeNull();
    expect(normalizeFingerprint(`${hex.slice(1)}g`)).toBeNull();
  });

  test("install refuses a malformed fingerprint or port, and names the machine after its hostname", async () => {
    const state = join(dir.path, "install-flags");
    const bad = await runLatchkey(["client", "install", "-server", "example.com:9000", "-ca-fingerprint", "abc", "--state-dir", state]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("-ca-fingerprint must be the SHA-256 fingerprint of the server's root CA");
    const badPort = await runLatchkey(["client", "install", "-server", "example.com:9000", "-mtls-port", "0", "--state-dir", state]);
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toContain("-mtls-port must be a port number");
    const pin = "AB:".repeat(31) + "CD";
    await install(state, ["-server", "example.com:9000", "-ca-fingerprint", pin, "-mtls-port", "10443"]);
    expect(JSON.parse(readFileSync(join(state, "client.json"), "utf8"))).toEqual({
      server: "example.com:9000",
      name: machineHostname(),
      uuid: expect.any(String),
      ca_fingerprint: "ab".repeat(31) + "cd",
      mtls_port: 10443,
    });
    // A reinstall with a new key only (the woho remedy) keeps the pin and the port.
    await install(state, ["-server", "example.com:9000", "-key", "ABCD-EFGH-JKMN"]);
    expect(JSON.parse(readFileSync(join(state, "client.json"), "utf8"))).toMatchObject({
      ca_fingerprint: "ab".repeat(31) + "cd",
      mtls_port: 10443,
    });
    const status = await runLatchkey(["client", "status", "--state-dir", state]);
    expect(status.stdout).toMatch(/ca pin:\s+AB:AB:.*:CD \(SHA-256 of the server's root CA\)/);
    expect(status.stdout).toMatch(/certificate:\s+none/);
    expect(status.stdout).toMatch(/mtls:\s+not yet: registers with the key at wss:\/\/example\.com:10443\/ws/);
    expect(status.stdout).toMatch(/last report:\s+never/);
  });
});

describe("pinned enrollment, mTLS and host reports (require_auth_key on)", () => {
  let server: TestServer;
  let token: string;
  beforeAll(async () => {
    server = await startTestServer({ flags: ["--require-auth-key"] });
    token = await login(server.url);
  });
  afterAll(() => server?.close());

  test("the install command carries the pin and the mTLS port, and names no machine", async () => {
    const { id, key } = await generateKey(server, token);
    const res = await call(server.url, "GET", `/api/keys/${id}/install-command`, { token });
    expect(res.status).toBe(200);
    const command: string = res.body.command;
    expect(command).toContain(`-ca-fingerprint ${await server.services.ca.caFingerprint()}`);
    expect(command).toContain(`-mtls-port ${server.mtlsPort}`);
    expect(command).toContain(`-key ${key}`);
    expect(command).not.toContain("-name");
  });

  test(
    "install with a pin → register over TLS → certificate → mTLS → host reports → revoked certificate: " +
      "new one with the key → revoked key: refused, exit 3",
    async () => {
      const { id, key } = await generateKey(server, token);
      const state = join(dir.path, "journey");
      const pin = await server.services.ca.caFingerprint();
      await install(state, ["-server", address(server), "-key", key, "-ca-fingerprint", pin, "-mtls-port", String(server.mtlsPort)]);
      const mtls = `wss://127.0.0.1:${server.mtlsPort}/ws`;
      const run = agent(state, "--report-interval", "1");
      try {
        // The first registration, with the key, already goes over TLS to the pinned root.
        await run.waitFor(`registered with ${mtls} as `);
        expect(run.text()).toContain("is the pinned one");
        expect(run.text()).not.toContain(`ws://${address(server)}`);
        await run.waitFor("client certificate ");
        expect(run.text()).toMatch(/no certificate yet: asking wss:\/\/\S+ for one \(client\/csr, CN=/);

        // What is on disk: the key (0600, never sent), the certificate for CN = hostname, the root.
        expect(statSync(join(state, "client.key")).mode & 0o777).toBe(0o600);
        expect(readFileSync(join(state, "client.key"), "utf8")).toStartWith("-----BEGIN PRIVATE KEY-----");
        expect(readFileSync(join(state, "ca.pem"), "utf8")).toBe(await server.services.ca.caPem());
        const first = new X509Certificate(readFileSync(join(state, "client.pem"), "utf8"));
        expect(first.subject).toBe(`CN=${HOSTNAME}`);
        const verified = await sh([
          "openssl",
          "verify",
          "-purpose",
          "sslclient",
          "-CAfile",
          join(state, "ca.pem"),
          join(state, "client.pem"),
        ]);
        expect(verified.out.trim()).toBe(`${join(state, "client.pem")}: OK`);
        const lifetime = first.validToDate.getTime() - first.validFromDate.getTime();
        expect(Math.round(lifetime / 86_400_000)).toBe(30);

        // A host report arrives: the host is online with this machine's interfaces.
        await run.waitFor("host report accepted");
        const host = await eventually(
          async () => {
            const res = await call(server.url, "GET", `/api/hosts/${HOSTNAME}`, { token });
            return res.status === 200 && res.body.report !== null ? res.body : null;
          },
          { what: "the host's first report" },
        );
        expect(host).toMatchObject({ hostname: HOSTNAME, online: true });
        expect(host.report).toEqual({ interfaces: machineInterfaces(), port: 0, version: expect.any(String) });
        expect(host.certificate.serial.toUpperCase()).toBe(first.serialNumber.toUpperCase());

        const status = await runLatchkey(["client", "status", "--state-dir", state]);
        expect(status.stdout).toContain(
          `serial ${first.serialNumber.toUpperCase()}, CN=${HOSTNAME}, expires ${first.validToDate.toISOString()}`,
        );
        expect(status.stdout).toMatch(new RegExp(`mtls:\\s+yes: connects to ${mtls.replaceAll(".", "\\.")} with the certificate`));
        expect(status.stdout).toMatch(/last report:\s+\d{4}-\S+ ok \(200\)/);
        expect(status.stdout).toMatch(/last contact:\s+\d{4}-\S+ wss:\S+ \(client certificate\)/);

        // Revoking the certificate closes the connection within a second; the agent registers
        // with its key (the key is good), gets a new certificate and is back on mTLS with it.
        // The server says why as it closes (4003), and the agent logs it.
        const closed = run.count("the server closed the connection: client certificate revoked");
        const certifiedRegistrations = run.count(", client certificate ");
        const revoked = await call(server.url, "POST", `/api/certs/${first.serialNumber.toLowerCase()}/revoke`, { token, body: {} });
        expect(revoked.status).toBe(200);
        await run.waitFor("the server closed the connection: client certificate revoked", 1000, closed + 1);
        await run.waitFor("does not admit this machine by its certificate");
        await run.waitFor(", client certificate ", 15_000, certifiedRegistrations + 1);
        const second = new X509Certificate(readFileSync(join(state, "client.pem"), "utf8"));
        expect(second.serialNumber).not.toBe(first.serialNumber);

        // Revoking the key closes it within a second and revokes the certificate: the agent falls
        // back to its key, which is refused with the woho hint, and stops (exit 3).
        const closedAgain = run.count(`connection to ${mtls} closed`) + run.count("the server closed the connection");
        expect((await call(server.url, "POST", `/api/keys/${id}/revoke`, { token })).status).toBe(200);
        await eventually(() => run.count(`connection to ${mtls} closed`) + run.count("the server closed the connection") > closedAgain, {
          timeoutMs: 1000,
          what: () => `the agent to be disconnected; output so far:\n${run.text()}`,
        });
        expect(await run.proc.exited).toBe(3);
        expect(run.text()).toContain("AUTH_FAILED: Invalid or revoked key: the key was revoked or deleted");
        expect(existsSync(join(state, "client.pem"))).toBe(false);
        expect(existsSync(join(state, "client.key"))).toBe(false);
      } finally {
        run.proc.kill("SIGTERM");
        await run.proc.exited;
      }
    },
    60_000,
  );
});

describe("a server whose root is not the pinned one", () => {
  let pinned: TestServer;
  let other: TestServer;
  let token: string;
  beforeAll(async () => {
    [pinned, other] = await Promise.all([startTestServer(), startTestServer({ flags: ["--require-auth-key"] })]);
    token = await login(other.url);
  });
  afterAll(async () => {
    await Promise.all([pinned?.close(), other?.close()]);
  });

  test("is refused with what to check, exit 3, before the key is sent", async () => {
    const { key } = await generateKey(other, token);
    const state = join(dir.path, "other-ca");
    const pin = await pinned.services.ca.caFingerprint();
    await install(state, ["-server", address(other), "-key", key, "-ca-fingerprint", pin, "-mtls-port", String(other.mtlsPort)]);
    const run = agent(state);
    expect(await run.proc.exited).toBe(3);
    const colon = (hex: string) => hex.toUpperCase().replace(/(..)(?=.)/g, "$1:");
    expect(run.text()).toContain(
      `refusing the server at https://127.0.0.1:${other.mtlsPort}: its root CA has the SHA-256 fingerprint ` +
        `${colon(await other.services.ca.caFingerprint())}, but this machine pins ${colon(pin)} (-ca-fingerprint); the key was not sent`,
    );
    expect(run.text()).toContain("`latchkey ca show`");
    expect(run.text()).not.toContain("registered with");
    // Nothing was trusted or kept from it, and it saw no registration attempt at all.
    expect(existsSync(join(state, "ca.pem"))).toBe(false);
    const audit = await call(other.url, "GET", "/api/audit?action=client.register", { token });
    expect(audit.status).toBe(200);
    expect(audit.body.items).toEqual([]);
    const keys = await call(other.url, "GET", "/api/keys", { token });
    expect(keys.body.items[0]).toMatchObject({ status: "pending", usage_count: 0 });
  });
});

/** A root CA made by openssl (P-256, CA:TRUE) in `where`, for `latchkey ca import`: the paths of its certificate and key. */
async function opensslRoot(where: string): Promise<{ cert: string; key: string }> {
  const config = join(where, "ca.cnf");
  const paths = { cert: join(where, "rootCA.pem"), key: join(where, "rootCA.key") };
  writeFileSync(
    config,
    "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = Replacement Root CA\n" +
      "[ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
  );
  expect((await sh(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", paths.key])).code).toBe(0);
  const made = await sh([
    "openssl",
    "req",
    "-x509",
    "-new",
    "-key",
    paths.key,
    "-sha256",
    "-days",
    "30",
    "-config",
    config,
    "-out",
    paths.cert,
  ]);
  expect(made.code).toBe(0);
  return paths;
}

describe("without a pin (require_auth_key off)", () => {
  let server: TestServer;
  let token: string;
  beforeAll(async () => {
    server = await startTestServer();
    token = await login(server.url);
  });
  afterAll(() => server?.close());

  test("enrolls over the plain port; a certificate the server no longer takes (401 on a report) is replaced through it", async () => {
    const state = join(dir.path, "unpinned");
    await install(state, ["-server", address(server), "-mtls-port", String(server.mtlsPort)]);
    const run = agent(state, "--report-interval", "1");
    const mtls = `wss://127.0.0.1:${server.mtlsPort}/ws`;
    try {
      await run.waitFor(`registered with ws://${address(server)}/ws as `);
      await run.waitFor("host report accepted");
      expect(run.text()).toContain(`registered with ${mtls} as `);
      expect(readFileSync(join(state, "ca.pem"), "utf8")).toBe(await server.services.ca.caPem());
      const first = new X509Certificate(readFileSync(join(state, "client.pem"), "utf8"));

      // Without a key required, the revoked certificate's connection registers again without it;
      // the next report's 401 tells the agent, which gets a new certificate through the plain port.
      expect((await call(server.url, "POST", `/api/certs/${first.serialNumber.toLowerCase()}/revoke`, { token, body: {} })).status).toBe(
        200,
      );
      await run.waitFor("host report failed: 401 ");
      await run.waitFor(`the server refused the certificate ${first.serialNumber.toUpperCase()} (401: `);
      await run.waitFor(`registered with ws://${address(server)}/ws as `, 10_000, 2);
      await run.waitFor("host report accepted", 10_000, 2);
      expect(new X509Certificate(readFileSync(join(state, "client.pem"), "utf8")).serialNumber).not.toBe(first.serialNumber);
    } finally {
      run.proc.kill("SIGTERM");
      await run.proc.exited;
    }
    // uninstall --purge takes the certificate identity and the last report with the rest.
    expect((await runLatchkey(["client", "uninstall", "--purge", "--state-dir", state])).code).toBe(0);
    for (const file of ["client.json", "client.key", "client.pem", "ca.pem", "last_contact", "last_report"])
      expect(existsSync(join(state, file))).toBe(false);
  }, 30_000);

  test("an mTLS listener that does not answer: presence over the plain port meanwhile, reports failing with the reason", async () => {
    // A port nothing listens on.
    const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = closed.port;
    closed.stop(true);
    const state = join(dir.path, "no-mtls");
    await install(state, ["-server", address(server), "-mtls-port", String(port)]);
    const run = agent(state, "--report-interval", "1");
    try {
      await run.waitFor(`registered with ws://${address(server)}/ws as `, 10_000, 2);
      expect(run.text()).toContain(`cannot connect to wss://127.0.0.1:${port}/ws: ` /* the reason follows */);
      expect(run.text()).toContain(
        `registering over ws://${address(server)}/ws meanwhile ` +
          "(host reports need the mTLS listener: check -mtls-port, and that the port is open)",
      );
      await run.waitFor(`host report failed: cannot reach https://127.0.0.1:${port}/api/hosts/`);
      // It stays: no reconnection loop.
      await Bun.sleep(1500);
      expect(run.count("registered with")).toBe(2);
      const uuid = JSON.parse(readFileSync(join(state, "client.json"), "utf8")).uuid;
      const online = await call(server.url, "GET", "/api/clients?status=online", { token });
      expect(online.body.items.map((c: { uuid: string }) => c.uuid)).toContain(uuid);
      const status = await runLatchkey(["client", "status", "--state-dir", state]);
      expect(status.stdout).toMatch(/last report:\s+\d{4}-\S+ failed: cannot reach https:/);
    } finally {
      run.proc.kill("SIGTERM");
      await run.proc.exited;
    }
  }, 30_000);
});

describe("the server's root CA replaced after enrollment", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  test("an agent without a pin gets a certificate from the new root; a pinned one refuses the server (exit 3)", async () => {
    const plain = join(dir.path, "replaced-plain");
    const pinned = join(dir.path, "replaced-pinned");
    const oldPin = await server.services.ca.caFingerprint();
    await install(plain, ["-server", address(server), "-mtls-port", String(server.mtlsPort)]);
    await install(pinned, ["-server", address(server), "-mtls-port", String(server.mtlsPort), "-ca-fingerprint", oldPin]);
    const runs = [agent(plain, "--report-interval", "1"), agent(pinned, "--report-interval", "1")];
    const [unpinnedRun, pinnedRun] = runs as [ReturnType<typeof agent>, ReturnType<typeof agent>];
    try {
      await Promise.all(runs.map((run) => run.waitFor("host report accepted")));
      const accepted = unpinnedRun.count("host report accepted");
      // Replaced as an operator does it: `latchkey ca import` in another process, which the server sees at once.
      const root = await opensslRoot(dir.path);
      const imported = await runLatchkey(["ca", "import", root.cert, root.key, "--force", ...server.storageArgs]);
      expect(imported.code).toBe(0);
      const newPin = await server.services.ca.caFingerprint();
      expect(newPin).not.toBe(oldPin);

      expect(await pinnedRun.proc.exited).toBe(3);
      expect(pinnedRun.text()).toContain(
        `refusing the server at https://127.0.0.1:${server.mtlsPort}: its root CA has the SHA-256 fingerprint ` +
          `${newPin.toUpperCase().replace(/(..)(?=.)/g, "$1:")}`,
      );

      // Whichever way it learns (the listener's new certificate does not verify, or a 401 from the
      // old one before it restarts), it ends with a certificate from the new root, reporting.
      await eventually(async () => readFileSync(join(plain, "ca.pem"), "utf8") === (await server.services.ca.caPem()), {
        what: () => `the new root in ca.pem; output so far:\n${unpinnedRun.text()}`,
      });
      await unpinnedRun.waitFor("host report accepted", 15_000, accepted + 1);
      const verified = await sh(["openssl", "verify", "-CAfile", join(plain, "ca.pem"), join(plain, "client.pem")]);
      expect(verified.code).toBe(0);
    } finally {
      for (const run of runs) run.proc.kill("SIGTERM");
      await Promise.all(runs.map((run) => run.proc.exited));
    }
  }, 30_000);
});

describe("renewal, with the agent's and the server's clocks moved together", () => {
  const DAY = 86_400_000;
  let skew = 0;
  const clock = () => Date.now() + skew;
  let server: TestServer;
  let token: string;
  beforeAll(async () => {
    server = await startTestServer({ flags: ["--require-auth-key"], clock });
    token = await login(server.url);
  });
  afterAll(() => server?.close());

  /** The agent in this process, with the test's clock, until `stop` is called. */
  function inProcess(state: string) {
    const lines: string[] = [];
    const stop = new AbortController();
    const exited = runAgent({
      stateDir: state,
      heartbeatSeconds: 1,
      retryMaxSeconds: 1,
      reportIntervalSeconds: 60,
      interactive: false,
      clock,
      signal: stop.signal,
      log: (line) => void lines.push(line),
    });
    return {
      lines,
      exited,
      stop: () => stop.abort(),
      waitFor: (needle: string, times = 1) =>
        eventually(() => lines.filter((l) => l.includes(needle)).length >= times, {
          what: () => `${JSON.stringify(needle)} ×${times} in the agent's log:\n${lines.join("\n")}`,
        }),
    };
  }

  test("renewed at 2/3 of its lifetime over mTLS, then used; after an outage past its end, the key gets a new one", async () => {
    const { key } = await generateKey(server, token);
    const state = join(dir.path, "renewal");
    await install(state, [
      "-server",
      address(server),
      "-key",
      key,
      "-ca-fingerprint",
      await server.services.ca.caFingerprint(),
      "-mtls-port",
      String(server.mtlsPort),
    ]);
    const serial = () => new X509Certificate(readFileSync(join(state, "client.pem"), "utf8")).serialNumber;
    const first = inProcess(state);
    try {
      await first.waitFor("client certificate ");
      const original = serial();
      // Just short of 2/3 of 30 days: nothing happens.
      skew = 19 * DAY;
      await Bun.sleep(1500);
      expect(serial()).toBe(original);
      // Past it: renewed on the connection it has (no key needed), then back with the new one.
      skew = 21 * DAY;
      await first.waitFor("is 2/3 through its lifetime");
      await first.waitFor("stored in", 2);
      // (The server's moved clock may also close the socket as idle: the agent just registers again.)
      await first.waitFor(`, client certificate ${serial().toUpperCase()})`);
      // In this order: the request, the new certificate, the reconnection, the registration with it.
      const at = (test: (line: string) => boolean, from: number) => first.lines.findIndex((l, i) => i > from && test(l));
      const asked = at((l) => /^the certificate \w+ is 2\/3 through its lifetime .*\(client\/csr, CN=/.test(l), -1);
      const stored = at((l) => /^certificate \w+ for CN=\S+ stored in /.test(l), asked);
      const reconnecting = at(
        (l) => l === `reconnecting over mTLS (wss://127.0.0.1:${server.mtlsPort}/ws) with the new certificate`,
        stored,
      );
      const back = at((l) => l.includes(`, client certificate ${serial().toUpperCase()})`), reconnecting);
      // (The log comes with a failure, to say what happened instead.)
      expect({ order: [asked, stored, reconnecting, back].every((i) => i >= 0), log: first.lines }).toEqual({
        order: true,
        log: first.lines,
      });
      expect(serial()).not.toBe(original);
    } finally {
      first.stop();
      expect(await first.exited).toBe(0);
    }

    // Offline for longer than the certificate lives: the next start registers with the key (over
    // TLS to the pinned root) and gets a new certificate by itself.
    const renewed = serial();
    skew += 40 * DAY;
    const second = inProcess(state);
    try {
      await second.waitFor("client certificate ");
      expect(second.lines.some((l) => /cannot be used: it expired at/.test(l))).toBe(true);
      expect(second.lines[0]).toStartWith(`registered with wss://127.0.0.1:${server.mtlsPort}/ws as `);
      expect(second.lines[0]).not.toContain("client certificate");
      expect(serial()).not.toBe(renewed);
    } finally {
      second.stop();
      expect(await second.exited).toBe(0);
    }
  }, 30_000);
});
