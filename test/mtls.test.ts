/**
 * The mutual-TLS listener and woodstock host reports, driven by outside clients: `curl` with the
 * files of a host bundle (as a woodstock client sends them), certificates made by `openssl`, and a
 * raw TLS socket for a live connection that a revocation must close.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { silentLogger } from "../src/log.ts";
import { startServer, type RunningServer } from "../src/server.ts";
import { ADMIN_PASSWORD, eventually, runLatchkey, TEST_ENV, tempDir } from "./support.ts";

const actor = { name: "test", address: null };
const REPORT = { interfaces: [{ name: "eth0", addresses: ["192.0.2.10", "2001:db8::10/64"] }], port: 8080, version: "1.4.2" };

async function sh(cmd: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const proc = Bun.spawn(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out, err };
}

/** A woodstock client's report with curl: `-w` appends the status on a line of its own. */
async function curlReport(
  server: RunningServer,
  dir: string,
  hostname: string,
  files: { cert?: string; key?: string } = {},
  body: string = JSON.stringify(REPORT),
  extra: string[] = [],
): Promise<{ status: number; body: any }> {
  const args = ["curl", "-s", "-w", "\n%{http_code}", "--cacert", "rootCA.pem", "-X", "POST", "-H", "content-type: application/json"];
  if (files.cert) args.push("--cert", files.cert, "--key", files.key!);
  const res = await sh(
    [...args, ...extra, "--data-binary", body, `https://localhost:${server.mtlsPort}/api/hosts/${hostname}/client`],
    dir,
  );
  const lines = res.out.split("\n");
  const status = Number(lines.pop());
  const text = lines.join("\n");
  return { status, body: text ? JSON.parse(text) : null };
}

async function start(dataDir: string): Promise<RunningServer> {
  const args = parseArgs(["--data-dir", dataDir, "--listen", "127.0.0.1:0"], serverFlags);
  return startServer(loadConfig(args, TEST_ENV), { log: silentLogger, adminPassword: ADMIN_PASSWORD });
}

/** Writes a host bundle's files as `latchkey host bundle` would: `<hostname>_https.key/.pem` and `rootCA.pem`. */
async function bundle(server: RunningServer, dir: string, hostname: string): Promise<{ cert: string; key: string }> {
  const files = await server.services.hosts.hostBundle(actor, hostname);
  writeFileSync(join(dir, `${hostname}_https.key`), files.key, { mode: 0o600 });
  writeFileSync(join(dir, `${hostname}_https.pem`), files.certificate);
  writeFileSync(join(dir, "rootCA.pem"), files.ca);
  return { cert: `${hostname}_https.pem`, key: `${hostname}_https.key` };
}

describe("woodstock host reports with a bundle", () => {
  let server: RunningServer;
  let dir: ReturnType<typeof tempDir>;
  let files: { cert: string; key: string };

  beforeAll(async () => {
    dir = tempDir("latchkey-mtls-");
    server = await start(join(dir.path, "data"));
    await server.services.hosts.registerHost(actor, "web-01.example", null);
    await server.services.hosts.registerHost(actor, "db-01.example", null);
    files = await bundle(server, dir.path, "web-01.example");
  });
  afterAll(async () => {
    await server.stop("test finished");
    dir.remove();
  });

  test("a report with the host's certificate is stored: 200, latest state and last seen", async () => {
    const res = await curlReport(server, dir.path, "web-01.example", files);
    expect(res).toEqual({ status: 200, body: { ok: true, hostname: "web-01.example" } });
    const host = await server.services.hosts.getHost(null, "web-01.example");
    expect(host.report).toEqual(REPORT);
    expect(host.online).toBe(true);
    expect(host.last_address).toBe("127.0.0.1");
    // The path's hostname in another case is the same host.
    expect((await curlReport(server, dir.path, "WEB-01.example", files)).status).toBe(200);
  });

  test("the certificate's CN is registered but differs from the path: 403", async () => {
    const res = await curlReport(server, dir.path, "db-01.example", files);
    expect(res.status).toBe(403);
    expect(res.body.error).toEqual({ code: "forbidden", message: "this certificate is for web-01.example, not db-01.example" });
  });

  test("no certificate: 401; a certificate in a header is not one", async () => {
    const none = await curlReport(server, dir.path, "web-01.example");
    expect(none.status).toBe(401);
    expect(none.body.error.message).toBe("a client certificate issued by this server's CA is required");
    const pem = (await Bun.file(join(dir.path, files.cert)).text()).replaceAll("\n", "");
    for (const header of ["X-SSL-Client-Cert", "X-Client-Cert", "X-Forwarded-Client-Cert", "SSL_CLIENT_CERT"]) {
      expect((await curlReport(server, dir.path, "web-01.example", {}, JSON.stringify(REPORT), ["-H", `${header}: ${pem}`])).status).toBe(
        401,
      );
    }
  });

  test.each([
    ["a hostname that is not one", "bad_host!", JSON.stringify(REPORT), "hostname"],
    ["a body that is not JSON", "web-01.example", "{", "body"],
    ["a missing field", "web-01.example", JSON.stringify({ interfaces: [], port: 1 }), "version"],
    ["a port out of range", "web-01.example", JSON.stringify({ ...REPORT, port: 70000 }), "port"],
    [
      "an address that is not one",
      "web-01.example",
      JSON.stringify({ ...REPORT, interfaces: [{ name: "eth0", addresses: ["10.0.0.300"] }] }),
      "interfaces.0.addresses.0",
    ],
    ["an unknown field", "web-01.example", JSON.stringify({ ...REPORT, extra: 1 }), "extra"],
    [
      "an interface without a name",
      "web-01.example",
      JSON.stringify({ ...REPORT, interfaces: [{ name: "", addresses: [] }] }),
      "interfaces.0.name",
    ],
  ])("%s: 400 naming the field", async (_, hostname, body, field) => {
    const res = await curlReport(server, dir.path, hostname, files, body);
    expect(res.status).toBe(400);
    expect(res.body.error.field).toBe(field);
  });

  test("a revoked certificate: 401 on the next connection; a live connection is closed within a second", async () => {
    await server.services.hosts.registerHost(actor, "gone.example", null);
    const gone = await bundle(server, dir.path, "gone.example");
    expect((await curlReport(server, dir.path, "gone.example", gone)).status).toBe(200);
    // A keep-alive connection held open over a raw TLS socket.
    let received = "";
    let closed = false;
    const body = JSON.stringify(REPORT);
    const request =
      "POST /api/hosts/gone.example/client HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
      `Content-Length: ${body.length}\r\n\r\n${body}`;
    await Bun.connect({
      hostname: "127.0.0.1",
      port: server.mtlsPort,
      tls: {
        cert: await Bun.file(join(dir.path, gone.cert)).text(),
        key: await Bun.file(join(dir.path, gone.key)).text(),
        ca: await Bun.file(join(dir.path, "rootCA.pem")).text(),
        serverName: "localhost",
      },
      socket: {
        // Written once the handshake is done: Bun's TLS client loses what is written before it.
        handshake: (socket) => void socket.write(request),
        data: (_, chunk) => void (received += chunk.toString()),
        close: () => void (closed = true),
      },
    });
    await eventually(() => received.includes("HTTP/1.1 200"), { what: "the first report's answer" });
    const serial = (await server.services.hosts.getHost(null, "gone.example")).certificate!.serial;
    await server.services.ca.revoke(actor, serial, "keyCompromise");
    await eventually(() => closed, { timeoutMs: 1000, what: "the live connection to close after the revocation" });
    const after = await curlReport(server, dir.path, "gone.example", gone);
    expect(after.status).toBe(401);
    expect(after.body.error.message).toBe("the client certificate was refused (revoked)");
  });

  test("a revocation by the CLI in another process closes a live connection within a second too", async () => {
    await server.services.hosts.registerHost(actor, "cli.example", null);
    const cli = await bundle(server, dir.path, "cli.example");
    let closed = false;
    let received = "";
    const body = JSON.stringify(REPORT);
    const request = `POST /api/hosts/cli.example/client HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    await Bun.connect({
      hostname: "127.0.0.1",
      port: server.mtlsPort,
      tls: {
        cert: await Bun.file(join(dir.path, cli.cert)).text(),
        key: await Bun.file(join(dir.path, cli.key)).text(),
        ca: await Bun.file(join(dir.path, "rootCA.pem")).text(),
        serverName: "localhost",
      },
      socket: {
        handshake: (socket) => void socket.write(request),
        data: (_, chunk) => void (received += chunk.toString()),
        close: () => void (closed = true),
      },
    });
    await eventually(() => received.includes("HTTP/1.1 200"), { what: "the first report's answer" });
    const serial = (await server.services.hosts.getHost(null, "cli.example")).certificate!.serial;
    const res = await runLatchkey(["cert", "revoke", serial, "--data-dir", join(dir.path, "data")]);
    expect(res.code).toBe(0);
    await eventually(() => closed, { timeoutMs: 1500, what: "the live connection to close after the CLI's revocation" });
  });

  test("the front answers reports itself and hands everything else to a full HTTP server", async () => {
    // A body over 1 KiB: curl asks `Expect: 100-continue` first and waits to be told to go on.
    const big = { ...REPORT, interfaces: Array.from({ length: 40 }, (_, i) => ({ name: `eth${i}`, addresses: [`192.0.2.${i}`] })) };
    expect((await curlReport(server, dir.path, "web-01.example", files, JSON.stringify(big))).status).toBe(200);
    expect((await server.services.hosts.getHost(null, "web-01.example")).report?.interfaces).toHaveLength(40);
    // A chunked body is not read by the front: the full server takes the connection and answers.
    const chunked = await curlReport(server, dir.path, "web-01.example", files, JSON.stringify(REPORT), [
      "-H",
      "Transfer-Encoding: chunked",
    ]);
    expect(chunked.status).toBe(200);
    // HTTP/1.0: answered, and the connection closed after it.
    expect((await curlReport(server, dir.path, "web-01.example", files, JSON.stringify(REPORT), ["--http1.0"])).status).toBe(200);
    // Another path goes to the full server, which answers in latchkey's error shape.
    const other = await sh(
      ["curl", "-s", "-w", "\n%{http_code}", "--cacert", "rootCA.pem", `https://localhost:${server.mtlsPort}/api/nothing-here`],
      dir.path,
    );
    expect(other.out).toBe('{"error":{"code":"not_found","message":"no such route"}}\n404');
    // Three reports written at once on one connection are answered in order, on that connection.
    const body = JSON.stringify(REPORT);
    const one = (host: string) =>
      `POST /api/hosts/${host}/client HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    let received = "";
    await Bun.connect({
      hostname: "127.0.0.1",
      port: server.mtlsPort,
      tls: {
        cert: await Bun.file(join(dir.path, files.cert)).text(),
        key: await Bun.file(join(dir.path, files.key)).text(),
        ca: await Bun.file(join(dir.path, "rootCA.pem")).text(),
        serverName: "localhost",
      },
      socket: {
        handshake: (socket) => void socket.write(one("web-01.example") + one("db-01.example") + one("web-01.example")),
        data: (_, chunk) => void (received += chunk.toString()),
      },
    });
    await eventually(() => received.match(/HTTP\/1\.1 \d+/g)?.length === 3, { what: "three answers" });
    expect(received.match(/HTTP\/1\.1 \d+/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 403", "HTTP/1.1 200"]);
  });

  test("an oversized report is refused (400 naming the body), whichever way it comes", async () => {
    const huge = JSON.stringify({ ...REPORT, version: "x".repeat(70 * 1024) });
    const res = await curlReport(server, dir.path, "web-01.example", files, huge);
    expect(res.status).toBe(400);
    expect(res.body.error.field).toBe("body");
  });

  test("/metrics counts reports by result and the mTLS connections", async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(/^latchkey_host_reports_total\{result="ok"\} [1-9]\d*$/m);
    expect(text).toMatch(/^latchkey_host_reports_total\{result="forbidden"\} [1-9]\d*$/m);
    expect(text).toMatch(/^latchkey_host_reports_total\{result="no_certificate"\} [1-9]\d*$/m);
    expect(text).toMatch(/^latchkey_host_reports_total\{result="bad_request"\} [1-9]\d*$/m);
    expect(text).toMatch(/^latchkey_mtls_connections \d+$/m);
  });

  test("the RPC WebSocket over mutual TLS: without a certificate only client/register and client/csr are open", async () => {
    const open = async (tls: Record<string, string>) => {
      const ws = new WebSocket(`wss://localhost:${server.mtlsPort}/ws`, { tls } as never);
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error("no WebSocket over mTLS"));
      });
      const replies = new Map<string, any>();
      ws.onmessage = (event) => {
        const reply = JSON.parse(String(event.data));
        replies.set(reply.id, reply);
      };
      const call = async (namespace: string, name: string, args: unknown) => {
        const id = crypto.randomUUID();
        ws.send(JSON.stringify({ namespace, name, id, args }));
        return eventually(() => replies.get(id), { what: `the reply to ${namespace}/${name}` });
      };
      return { ws, call };
    };
    const ca = await Bun.file(join(dir.path, "rootCA.pem")).text();
    const anonymous = await open({ ca });
    const refused = await anonymous.call("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD });
    expect(refused.args).toEqual({ code: 401, message: "Unauthorized" });
    const registered = await anonymous.call("client", "register", {
      uuid: crypto.randomUUID(),
      name: "over-mtls",
      hostname: "over-mtls.example",
    });
    expect(registered.name).toBe("response");
    anonymous.ws.close();
    // With a valid certificate the rest is open too: a password login, then a call.
    const certified = await open({
      ca,
      cert: await Bun.file(join(dir.path, files.cert)).text(),
      key: await Bun.file(join(dir.path, files.key)).text(),
    });
    expect((await certified.call("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
    expect((await certified.call("rpc", "query", {})).name).toBe("response");
    certified.ws.close();
  });

  test("the root and the CRL are served on the mTLS listener to clients without a certificate", async () => {
    const ca = await sh(["curl", "-s", "--cacert", "rootCA.pem", `https://localhost:${server.mtlsPort}/api/ca.pem`], dir.path);
    expect(ca.out).toBe(await server.services.ca.caPem());
    const crl = await sh(
      ["sh", "-c", `curl -s --cacert rootCA.pem https://localhost:${server.mtlsPort}/api/crl | openssl crl -inform DER -noout -text`],
      dir.path,
    );
    expect(crl.code).toBe(0);
    expect(crl.out).toContain("Certificate Revocation List");
  });

  test("the listener's certificate names localhost, the loopback addresses and the machine", async () => {
    const text = await sh(
      [
        "sh",
        "-c",
        `openssl s_client -connect 127.0.0.1:${server.mtlsPort} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -text`,
      ],
      dir.path,
    );
    expect(text.out).toContain("DNS:localhost");
    expect(text.out).toContain("IP Address:127.0.0.1");
    expect(text.out).toContain("IP Address:0:0:0:0:0:0:0:1");
    expect(text.out).toContain("TLS Web Server Authentication");
  });
});

describe("certificates made by openssl, under a root imported into latchkey", () => {
  let server: RunningServer;
  let dir: ReturnType<typeof tempDir>;
  const ext = (name: string, lines: string[]) => writeFileSync(join(dir.path, name), lines.join("\n") + "\n");

  /** A leaf for `cn` signed by the imported root with `openssl ca` (which can date it in the past or the future). */
  async function leaf(name: string, cn: string, extfile: string, dates: string[] = ["-days", "30"]) {
    const cwd = dir.path;
    const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`];
    expect(
      await sh(["openssl", "req", "-new", "-config", "openssl.cnf", ...key, "-out", `${name}.csr`, "-subj", `/CN=${cn}`], cwd),
    ).toMatchObject({ code: 0 });
    const ca = [
      "openssl",
      "ca",
      "-config",
      "openssl.cnf",
      "-batch",
      "-notext",
      "-rand_serial",
      "-cert",
      "root.pem",
      "-keyfile",
      "root.key",
    ];
    expect(await sh([...ca, "-in", `${name}.csr`, "-out", `${name}.pem`, "-extfile", extfile, ...dates], cwd)).toMatchObject({ code: 0 });
    return { cert: `${name}.pem`, key: `${name}.key` };
  }

  beforeAll(async () => {
    dir = tempDir("latchkey-mtls-openssl-");
    const cwd = dir.path;
    const root = await sh(
      [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "365",
        "-subj",
        "/CN=Outside Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ],
      cwd,
    );
    expect(root.code).toBe(0);
    const data = join(cwd, "data");
    mkdirSync(data);
    // A first start makes the database; the root is imported while the server is down, so that
    // the next start serves the listener with a certificate from the imported root.
    const first = await start(data);
    await first.services.ca.importRoot(actor, await Bun.file(join(cwd, "root.pem")).text(), await Bun.file(join(cwd, "root.key")).text(), {
      force: true,
    });
    await first.stop("import done");
    server = await start(data);
    await server.services.hosts.registerHost(actor, "host1.example", null);
    writeFileSync(join(cwd, "rootCA.pem"), await server.services.ca.caPem());
    // What `openssl ca` needs to sign: a database, and a policy that takes the CN as given.
    writeFileSync(
      join(cwd, "openssl.cnf"),
      [
        "[ req ]",
        "distinguished_name = dn",
        "prompt = no",
        "[ dn ]",
        "CN = unused",
        "[ ca ]",
        "default_ca = issuer",
        "[ issuer ]",
        `database = ${cwd}/index.txt`,
        `new_certs_dir = ${cwd}`,
        `serial = ${cwd}/serial`,
        "default_md = sha256",
        "policy = policy_any",
        "unique_subject = no",
        "default_days = 30",
        "[ policy_any ]",
        "commonName = supplied",
      ].join("\n") + "\n",
    );
    writeFileSync(join(cwd, "index.txt"), "");
    ext("client.ext", ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]);
    ext("server-only.ext", ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=serverAuth"]);
    ext("ca-leaf.ext", [
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,digitalSignature,keyCertSign",
      "extendedKeyUsage=clientAuth",
    ]);
  });
  afterAll(async () => {
    await server?.stop("test finished");
    dir.remove();
  });

  test("a good openssl-made clientAuth certificate: 200", async () => {
    const good = await leaf("good", "host1.example", "client.ext");
    expect((await curlReport(server, dir.path, "host1.example", good)).status).toBe(200);
  });

  test("CN not a registered host: 401", async () => {
    const stranger = await leaf("stranger", "nobody.example", "client.ext");
    const res = await curlReport(server, dir.path, "nobody.example", stranger);
    expect(res.status).toBe(401);
    expect(res.body.error.message).toBe('the certificate\'s CN "nobody.example" is not a registered host');
  });

  test.each([
    ["expired", "expired", ["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"], "client.ext"],
    ["not yet valid", "not yet valid", ["-startdate", "20450101000000Z", "-enddate", "20460101000000Z"], "client.ext"],
    ["a CA:TRUE leaf", "leaf is ca", ["-days", "30"], "ca-leaf.ext"],
    ["serverAuth only", "eku", ["-days", "30"], "server-only.ext"],
  ])("%s: 401 (%s)", async (name, reason, dates, extfile) => {
    const bad = await leaf(name.replaceAll(" ", "-").replaceAll(":", ""), "host1.example", extfile as string, dates as string[]);
    const res = await curlReport(server, dir.path, "host1.example", bad);
    expect(res.status).toBe(401);
    expect(res.body.error.message).toBe(`the client certificate was refused (${reason})`);
  });

  test("self-signed, not by the CA: 401 (unknown issuer)", async () => {
    const cwd = dir.path;
    await sh(
      [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
        "-days",
        "30",
        "-subj",
        "/CN=host1.example",
        "-addext",
        "extendedKeyUsage=clientAuth",
      ],
      cwd,
    );
    expect((await curlReport(server, cwd, "host1.example", { cert: "self.pem", key: "self.key" })).body.error.message).toBe(
      "the client certificate was refused (unknown issuer)",
    );
  });
});
