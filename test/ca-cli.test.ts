/**
 * `latchkey ca`, `latchkey host` and `latchkey cert`, run as separate processes (SPEC §1, §5): on
 * the data directory of a server that was started once and stopped, and on that of a running
 * server, which sees their changes at once (a host added by the CLI is listed by the API, a
 * bundle's certificate is taken by the mTLS listener, a revocation refuses it, an imported root
 * gives the listener a new certificate). Roots to import are made by `openssl req -x509`; bundles
 * are checked with `openssl verify`. Usage errors exit 2 with a sentence that says what to do, echoing
 * a flag as it was typed; failures of the operation exit 1.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, call, eventually, login, ROOT, runLatchkey, startTestServer, tempDir, TEST_ENV, type TestServer } from "./support.ts";

const mode = (path: string) => statSync(path).mode & 0o777;
/** What a file created with `wanted` gets under this process's umask (the CLI it spawns has the same). */
const underUmask = (wanted: number) => wanted & ~process.umask();

function openssl(args: string[], cwd: string): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

function opensslFingerprint(pemFile: string): string {
  const res = openssl(["x509", "-noout", "-fingerprint", "-sha256", "-in", pemFile], "/");
  expect(res.code).toBe(0);
  return res.out.trim().replace(/^sha256 Fingerprint=/i, "");
}

/** Runs the curl command `host bundle` printed, with SERVER:9443 replaced by the mTLS listener's URL; it fails on a 4xx or 5xx. */
async function curl(printed: string, mtlsUrl: string): Promise<{ code: number; out: string; err: string }> {
  const command = /^ {2}curl [\s\S]+?\n(?! )/m.exec(printed)?.[0];
  if (!command) throw new Error(`no curl command in:\n${printed}`);
  const p = Bun.spawn(["sh", "-c", `${command.trim().replace("https://SERVER:9443", mtlsUrl)} -sS --fail-with-body`], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * A database as a server's first start leaves it (root CA, listener certificate), the server
 * stopped: where the admin commands find it (`--data-dir DIR`, and `--database URL` on PostgreSQL).
 */
async function stoppedDataDir(): Promise<string[]> {
  const server = await startTestServer();
  await server.stop("the data directory is made");
  cleanups.push(() => rmSync(server.dataDir, { recursive: true, force: true }));
  return server.storageArgs;
}

const on =
  (storage: readonly string[]) =>
  (...args: string[]) =>
    runLatchkey([...args, ...storage]);
async function okOn(dataDir: readonly string[], ...args: string[]) {
  const res = await on(dataDir)(...args);
  if (res.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  expect(res.stderr).toBe("");
  return res;
}

/** Roots and a leaf made by openssl, the way an operator brings their own. */
let roots: string;
beforeAll(() => {
  const dir = tempDir("latchkey-roots-");
  cleanups.push(dir.remove);
  roots = dir.path;
  const ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
  const made = [
    openssl(
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ec.key", "-out", "ec.pem"].concat([
        "-days",
        "365",
        "-subj",
        "/C=DE/O=Example/CN=Example EC Root",
        ...ca,
      ]),
      roots,
    ),
    openssl(
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-out", "rsa.pem", "-days", "365"].concat([
        "-subj",
        "/CN=Example RSA Root",
        ...ca,
      ]),
      roots,
    ),
    openssl(
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key", "-out", "leaf.pem"].concat([
        "-days",
        "365",
        "-subj",
        "/CN=not a CA",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
      ]),
      roots,
    ),
  ];
  for (const res of made) if (res.code !== 0) throw new Error(`openssl failed: ${res.err}`);
});

describe("help", () => {
  test.each([
    ["ca", ["latchkey ca show [--json | --pem]", "latchkey ca import CERT.pem KEY.pem [--force]", "start the server once"]],
    ["host", ["latchkey host add HOSTNAME", "latchkey host bundle HOSTNAME [--out DIR] [--force]", "_https.key (mode 0600"]],
    ["cert", ["latchkey cert list", "latchkey cert revoke SERIAL [--reason REASON]", "keyCompromise"]],
  ])("latchkey %s --help (and -help) describes the command and its flags, exit 0", async (command, expected) => {
    for (const flag of ["--help", "-help"]) {
      const res = await runLatchkey([command, flag]);
      expect(res.code).toBe(0);
      expect(res.stderr).toBe("");
      for (const text of [...expected, "--data-dir DIR", "--help"]) expect(res.stdout).toContain(text);
    }
    // A subcommand's --help is the command's.
    expect((await runLatchkey([command, "list", "--help"])).code).toBe(0);
  });

  test("without a subcommand: the help, exit 2; an unknown one: exit 2 with the remedy", async () => {
    for (const command of ["ca", "host", "cert"]) {
      const bare = await runLatchkey([command]);
      expect(bare.code).toBe(2);
      expect(bare.stdout).toContain(`Usage: latchkey ${command}`);
      const unknown = await runLatchkey([command, "frobnicate"]);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toBe(`latchkey: unknown ${command} command "frobnicate"; see latchkey ${command} --help\n`);
    }
  });

  test("the top-level help lists ca, host and cert", async () => {
    const res = await runLatchkey(["--help"]);
    expect(res.stdout).toMatch(/^ {2}ca {8}\S/m);
    expect(res.stdout).toMatch(/^ {2}host {6}\S/m);
    expect(res.stdout).toMatch(/^ {2}cert {6}\S/m);
  });
});

describe("latchkey ca show", () => {
  let dataDir: string[];
  beforeAll(async () => {
    dataDir = await stoppedDataDir();
  });

  test("the generated root: subject, key, serial, the SHA-256 fingerprint as openssl prints it, validity, source", async () => {
    const pem = (await okOn(dataDir, "ca", "show", "--pem")).stdout;
    expect(pem).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/);
    expect(pem).not.toContain("PRIVATE KEY");
    const pemFile = join(roots, "generated-root.pem");
    writeFileSync(pemFile, pem);
    const text = (await okOn(dataDir, "ca", "show")).stdout;
    expect(text).toContain("subject      O=latchkey, CN=latchkey root CA\n");
    expect(text).toContain("key          EC P-256\n");
    expect(text).toContain(`fingerprint  ${opensslFingerprint(pemFile)} (SHA-256)\n`);
    expect(text).toMatch(/^valid {8}\d{4}-\d\d-\d\dT[\d:.]+Z to \d{4}-\d\d-\d\dT[\d:.]+Z$/m);
    expect(text).toMatch(/^source {7}generated by system at /m);
    const serial = openssl(["x509", "-noout", "-serial", "-in", pemFile], "/").out.trim().replace("serial=", "").toLowerCase();
    expect(text).toContain(`serial       ${serial.replace(/^(00)+/, "")}\n`);
  });

  test("--json: the same facts for scripts, the certificate's PEM but never a key", async () => {
    const json = JSON.parse((await okOn(dataDir, "ca", "show", "--json")).stdout);
    const pem = (await okOn(dataDir, "ca", "show", "-pem")).stdout;
    expect(json.fingerprint_colon).toBe(String(json.fingerprint).toUpperCase().match(/../g)!.join(":"));
    expect(json).toMatchObject({
      subject: "O=latchkey, CN=latchkey root CA",
      key_type: "EC P-256",
      source: "generated",
      fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/),
      certificate: pem,
    });
    expect(JSON.stringify(json)).not.toContain("PRIVATE");
  });

  test("--json with --pem, an argument, or a flag of import: usage errors, exit 2", async () => {
    const cli = on(dataDir);
    expect(await cli("ca", "show", "--json", "-pem")).toMatchObject({ code: 2, stderr: "latchkey: give --json or -pem, not both\n" });
    expect((await cli("ca", "show", "extra")).code).toBe(2);
    expect(await cli("ca", "show", "-force")).toMatchObject({
      code: 2,
      stderr: "latchkey: ca show does not take -force; see latchkey ca --help\n",
    });
  });

  test("a data directory without a database: exit 1, start the server once", async () => {
    const empty = tempDir();
    cleanups.push(empty.remove);
    const res = await on(["--data-dir", empty.path])("ca", "show");
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("start the server once");
    expect(existsSync(join(empty.path, "latchkey.db"))).toBe(false);
  });
});

describe("latchkey ca import", () => {
  test("an openssl-made EC root replaces the generated one; bundles then chain to it", async () => {
    const dataDir = await stoppedDataDir();
    const before = JSON.parse((await okOn(dataDir, "ca", "show", "--json")).stdout);
    const res = await okOn(dataDir, "ca", "import", join(roots, "ec.pem"), join(roots, "ec.key"));
    const fingerprint = opensslFingerprint(join(roots, "ec.pem"));
    expect(res.stdout).toContain("imported the root CA:\n  subject      C=DE, O=Example, CN=Example EC Root\n  key          EC P-256\n");
    expect(res.stdout).toContain(`  fingerprint  ${fingerprint} (SHA-256)\n`);
    expect(res.stdout).toContain(`replaced the generated root ${before.fingerprint_colon}; it signs nothing more\n`);
    // The listener's own certificate is the only one in use after a first start: no --force needed.
    expect(res.stdout).toContain("revoked 1 certificate of the old root (1 server)\n");
    expect(res.stdout).toContain("the mTLS listener takes a certificate from the new root");
    const shown = JSON.parse((await okOn(dataDir, "ca", "show", "--json")).stdout);
    expect(shown).toMatchObject({ source: "imported", fingerprint_colon: fingerprint, created_by: expect.stringMatching(/^cli:/) });
    expect(shown.certificate).toBe(readFileSync(join(roots, "ec.pem"), "utf8").replace(/\r/g, ""));

    await okOn(dataDir, "host", "add", "ec-host.example");
    const out = tempDir("latchkey-bundle-");
    cleanups.push(out.remove);
    await okOn(dataDir, "host", "bundle", "ec-host.example", "--out", out.path);
    const verify = openssl(["verify", "-CAfile", join(roots, "ec.pem"), "ec-host.example_https.pem"], out.path);
    expect(verify.out).toBe("ec-host.example_https.pem: OK\n");

    // Again: the current root, nothing changes.
    const again = await okOn(dataDir, "ca", "import", join(roots, "ec.pem"), join(roots, "ec.key"));
    expect(again.stdout).toBe(`${join(roots, "ec.pem")} is already the root CA (${fingerprint}); nothing changed\n`);
    const certs = JSON.parse((await okOn(dataDir, "cert", "list", "--json", "--host", "ec-host.example")).stdout);
    expect(certs.map((c: any) => c.status)).toEqual(["valid"]);
  });

  test("while host certificates are in use: refused (exit 1, naming --force); --force revokes them", async () => {
    const dataDir = await stoppedDataDir();
    await okOn(dataDir, "host", "add", "busy.example");
    const out = tempDir("latchkey-bundle-");
    cleanups.push(out.remove);
    await okOn(dataDir, "host", "bundle", "busy.example", "--out", out.path);
    const args = ["ca", "import", join(roots, "rsa.pem"), join(roots, "rsa.key")];
    const refused = await on(dataDir)(...args);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("1 host");
    expect(refused.stderr).toContain("(add --force)");
    expect(JSON.parse((await okOn(dataDir, "ca", "show", "--json")).stdout).source).toBe("generated");

    const forced = await okOn(dataDir, ...args, "--force");
    expect(forced.stdout).toContain("  key          RSA 2048\n");
    expect(forced.stdout).toMatch(/^revoked 2 certificates of the old root \((1 host, 1 server|1 server, 1 host)\)$/m);
    expect(forced.stdout).toContain("hosts need new bundles from the new root: latchkey host bundle HOSTNAME --force\n");
    const certs = JSON.parse((await okOn(dataDir, "cert", "list", "--json", "--host", "busy.example")).stdout);
    expect(certs).toMatchObject([{ status: "revoked", revocation_reason: "superseded", current_root: false }]);
  });

  test("refusals with the core's reasons, naming the file: not a CA, another certificate's key, a certificate as key", async () => {
    const dataDir = await stoppedDataDir();
    const cli = on(dataDir);
    const file = (name: string) => join(roots, name);
    const cases: [string[], string][] = [
      [
        [file("leaf.pem"), file("leaf.key")],
        `latchkey: ${file("leaf.pem")} is not a CA certificate (BasicConstraints CA:TRUE is missing)\n`,
      ],
      [
        [file("ec.pem"), file("rsa.key")],
        `latchkey: ${file("rsa.key")} does not belong to the certificate (its public key is not the certificate's)\n`,
      ],
      [[file("ec.key"), file("ec.key")], `latchkey: ${file("ec.key")} must be a PEM certificate (-----BEGIN CERTIFICATE-----)\n`],
      [
        [file("ec.pem"), file("ec.pem")],
        `latchkey: ${file("ec.pem")} must be a PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)\n`,
      ],
    ];
    for (const [files, stderr] of cases) {
      const res = await cli("ca", "import", ...files);
      expect(res).toMatchObject({ code: 1, stdout: "", stderr });
    }
    expect(JSON.parse((await okOn(dataDir, "ca", "show", "--json")).stdout).source).toBe("generated");
  });

  test("files that are not there or not files, or a missing argument: exit 2 with the remedy", async () => {
    const dataDir = await stoppedDataDir();
    const cli = on(dataDir);
    expect(await cli("ca", "import", join(roots, "missing.pem"), join(roots, "ec.key"))).toMatchObject({
      code: 2,
      stderr: `latchkey: no such file: ${join(roots, "missing.pem")}; give the path of the root certificate (PEM)\n`,
    });
    expect(await cli("ca", "import", join(roots, "ec.pem"), join(roots, "missing.key"))).toMatchObject({
      code: 2,
      stderr: `latchkey: no such file: ${join(roots, "missing.key")}; give the path of the root's private key (PEM)\n`,
    });
    expect(await cli("ca", "import", roots, join(roots, "ec.key"))).toMatchObject({
      code: 2,
      stderr: `latchkey: ${roots} is not a file; give the path of the root certificate (PEM)\n`,
    });
    const one = await cli("ca", "import", join(roots, "ec.pem"));
    expect(one.code).toBe(2);
    expect(one.stderr).toContain("ca import takes two files");
    expect((await cli("ca", "import", join(roots, "ec.pem"), join(roots, "ec.key"), "--json")).code).toBe(2);
  });

  test("a key file this user may not read (0600, someone else's): exit 1, saying whose it is and what to do", async () => {
    const dir = tempDir("latchkey-perm-");
    cleanups.push(dir.remove);
    chmodSync(dir.path, 0o755);
    const cert = join(dir.path, "rootCA.pem");
    const key = join(dir.path, "rootCA.key");
    writeFileSync(cert, readFileSync(join(roots, "ec.pem")), { mode: 0o644 });
    writeFileSync(key, readFileSync(join(roots, "ec.key")), { mode: 0o600 });
    // As root, the key is someone else's to the user nobody; otherwise a key its owner may not read stands in.
    const asRoot = process.getuid?.() === 0;
    if (!asRoot) chmodSync(key, 0o000);
    const cmd = [BUN, join(ROOT, "src/main.ts"), "ca", "import", cert, key, "--data-dir", dir.path];
    const proc = Bun.spawn(asRoot ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...cmd] : cmd, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/tmp", ...TEST_ENV },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    expect(code).toBe(1);
    expect(stderr).toContain(`latchkey: cannot read ${key}: permission denied (mode ${asRoot ? "0600, owner uid 0" : "0000"}`);
    expect(stderr).toContain("run latchkey as a user who can read it (e.g. with sudo), or give a copy you can read");
  });
});

describe("on a running server", () => {
  let server: TestServer;
  let admin: string;
  let out: ReturnType<typeof tempDir>;
  const cli = (...args: string[]) => on(server.storageArgs)(...args);
  const ok = (...args: string[]) => okOn(server.storageArgs, ...args);
  /** Runs the curl command `host bundle` printed, against this server's mTLS listener (asynchronously: the server is in this process). */
  const runPrintedCurl = (printed: string) => curl(printed, server.mtlsUrl);

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    out = tempDir("latchkey-bundles-");
  });
  afterAll(async () => {
    await server.close();
    out.remove();
  });

  test("host add: listed by GET /api/hosts at once; twice: exit 1; list, --group, --json", async () => {
    const added = await ok("host", "add", "Web1.Example.COM", "--group", "lab");
    expect(added.stdout).toBe(
      "registered host web1.example.com in group lab; give it its files with latchkey host bundle web1.example.com\n",
    );
    const api = await call(server.url, "GET", "/api/hosts?group=lab", { token: admin });
    expect(api.body.items).toMatchObject([{ hostname: "web1.example.com", group: "lab", created_by: expect.stringMatching(/^cli:/) }]);
    expect(await cli("host", "add", "web1.example.com")).toMatchObject({
      code: 1,
      stderr: "latchkey: host web1.example.com is already registered; see latchkey host list\n",
    });
    await ok("host", "add", "db1.example.com");
    const table = (await ok("host", "list")).stdout.split("\n");
    expect(table[0]).toMatch(/^HOSTNAME\s+GROUP\s+STATUS\s+LAST REPORT\s+ADDRESS\s+VERSION\s+CERTIFICATE\s+EXPIRES$/);
    expect(table.find((l) => l.startsWith("web1.example.com "))).toMatch(/^web1\.example\.com\s+lab\s+offline\s+never\s+-/);
    const lab = JSON.parse((await ok("host", "list", "--group", "lab", "--json")).stdout);
    expect(lab.map((h: any) => h.hostname)).toEqual(["web1.example.com"]);
  });

  test("host bundle: the woodstock files, their modes, openssl verifies, the key matches; the printed curl reports", async () => {
    await ok("host", "add", "report.example.com");
    const dir = join(out.path, "new", "report");
    const res = await ok("host", "bundle", "REPORT.example.com", "--out", dir);
    const files = {
      key: join(dir, "report.example.com_https.key"),
      certificate: join(dir, "report.example.com_https.pem"),
      ca: join(dir, "rootCA.pem"),
    };
    const serial = /^issued certificate ([0-9a-f]+) for report\.example\.com, valid until \S+$/m.exec(res.stdout)?.[1];
    expect(serial).toBeDefined();
    expect(res.stdout).toContain(
      `wrote ${files.key} (0600: the host's private key, kept nowhere else)\nwrote ${files.certificate}\nwrote ${files.ca}\n`,
    );
    expect(res.stdout).toContain(
      `  curl --cert ${files.certificate} --key ${files.key} --cacert ${files.ca} \\\n` +
        "    -X POST https://SERVER:9443/api/hosts/report.example.com/client -H 'content-type: application/json' \\\n" +
        `    -d '{"interfaces":[],"port":0,"version":"curl"}'\n`,
    );
    expect(mode(dir)).toBe(underUmask(0o700));
    expect(mode(files.key)).toBe(0o600);
    expect(mode(files.certificate)).toBe(underUmask(0o644));
    expect(mode(files.ca)).toBe(underUmask(0o644));
    expect(readFileSync(files.ca, "utf8")).toBe((await call(server.url, "GET", "/api/ca.pem")).text);

    expect(openssl(["verify", "-CAfile", files.ca, files.certificate], "/").out).toBe(`${files.certificate}: OK\n`);
    const certKey = openssl(["x509", "-noout", "-pubkey", "-in", files.certificate], "/").out;
    const keyKey = openssl(["pkey", "-pubout", "-in", files.key], "/").out;
    expect(keyKey).toContain("BEGIN PUBLIC KEY");
    expect(keyKey).toBe(certKey);
    expect(openssl(["x509", "-noout", "-subject", "-in", files.certificate], "/").out.trim()).toBe("subject=CN = report.example.com");

    const report = await runPrintedCurl(res.stdout);
    expect(report).toMatchObject({ code: 0, out: '{"ok":true,"hostname":"report.example.com"}' });
    // The server writes reports about once a second: another process sees them soon after.
    const online = await eventually(
      async () => {
        const list = JSON.parse((await ok("host", "list", "--status", "online", "--json")).stdout) as unknown[];
        return list.length > 0 ? list : null;
      },
      { what: "the report in the CLI's host list" },
    );
    expect(online).toMatchObject([{ hostname: "report.example.com", certificate: { serial }, report: { version: "curl" } }]);
  });

  test("host bundle does not overwrite without --force; an identical rootCA.pem is no obstacle", async () => {
    await ok("host", "add", "twice.example.com");
    await ok("host", "add", "neighbour.example.com");
    const dir = join(out.path, "twice");
    await ok("host", "bundle", "twice.example.com", "--out", dir);
    const keyFile = join(dir, "twice.example.com_https.key");
    const key = readFileSync(keyFile, "utf8");
    const certsBefore = JSON.parse((await ok("cert", "list", "--host", "twice.example.com", "--json")).stdout).length;
    const refused = await cli("host", "bundle", "twice.example.com", "--out", dir);
    expect(refused).toMatchObject({
      code: 2,
      stderr:
        `latchkey: ${keyFile}, ${join(dir, "twice.example.com_https.pem")} already exist; ` +
        "add --force to replace, or choose another --out DIR\n",
    });
    expect(readFileSync(keyFile, "utf8")).toBe(key);
    // Nothing is issued for a bundle that is not written.
    expect(JSON.parse((await ok("cert", "list", "--host", "twice.example.com", "--json")).stdout)).toHaveLength(certsBefore);

    await ok("host", "bundle", "neighbour.example.com", "--out", dir);
    await ok("host", "bundle", "twice.example.com", "--out", dir, "--force");
    expect(readFileSync(keyFile, "utf8")).not.toBe(key);
    expect(mode(keyFile)).toBe(0o600);
    expect(readdirSync(dir).sort()).toEqual([
      "neighbour.example.com_https.key",
      "neighbour.example.com_https.pem",
      "rootCA.pem",
      "twice.example.com_https.key",
      "twice.example.com_https.pem",
    ]);
  });

  test("host bundle without --out writes into the current directory", async () => {
    await ok("host", "add", "here.example.com");
    const cwd = join(out.path, "here");
    mkdirSync(cwd);
    const res = await runLatchkey(["host", "bundle", "here.example.com", ...server.storageArgs], { cwd });
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("  curl --cert here.example.com_https.pem --key here.example.com_https.key --cacert rootCA.pem \\\n");
    expect(readdirSync(cwd).sort()).toEqual(["here.example.com_https.key", "here.example.com_https.pem", "rootCA.pem"]);
  });

  test("host bundle refusals: an unregistered host (exit 1), --out a file (exit 2)", async () => {
    expect(await cli("host", "bundle", "stranger.example.com", "--out", join(out.path, "stranger"))).toMatchObject({
      code: 1,
      stderr:
        "latchkey: no host stranger.example.com is registered; see latchkey host list, or add it: latchkey host add stranger.example.com\n",
    });
    expect(existsSync(join(out.path, "stranger"))).toBe(false);
    await ok("host", "add", "file.example.com");
    const file = join(out.path, "a-file");
    writeFileSync(file, "");
    expect(await cli("host", "bundle", "file.example.com", "--out", file)).toMatchObject({
      code: 2,
      stderr: `latchkey: ${file} is not a directory; give --out a directory to write the files in\n`,
    });
  });

  test("bad hostnames and flags: exit 2, nothing written, the flag echoed as typed", async () => {
    const dir = join(out.path, "bad");
    mkdirSync(dir);
    for (const name of ["a/b", "..", "../etc", "web1..example.com", "-", "web 1"]) {
      for (const sub of ["add", "remove", "bundle"]) {
        const res = await cli("host", sub, name, ...(sub === "bundle" ? ["--out", dir] : []));
        expect(res).toMatchObject({ code: 2, stderr: "latchkey: HOSTNAME must be a hostname (letters, digits, - and . between labels)\n" });
      }
    }
    expect(readdirSync(dir)).toEqual([]);
    expect(await cli("host", "list", "-bogus")).toMatchObject({
      code: 2,
      stderr: "latchkey: unknown flag -bogus; run with --help to see the flags this command takes\n",
    });
    expect((await cli("host", "list", "--Status=online")).stderr).toContain("unknown flag --Status;");
    expect(await cli("host", "list", "-status", "away")).toMatchObject({
      code: 2,
      stderr: "latchkey: -status must be online or offline\n",
    });
    expect(await cli("host", "add", "x.example.com", "--group", "no/slash")).toMatchObject({ code: 2 });
    expect(await cli("host", "add", "x.example.com", "-out", dir)).toMatchObject({
      code: 2,
      stderr: "latchkey: host add does not take -out; see latchkey host --help\n",
    });
    expect((await cli("host", "add")).code).toBe(2);
    expect((await cli("host", "add", "a.example.com", "b.example.com")).code).toBe(2);
    expect((await cli("host", "list", "extra")).code).toBe(2);
  });

  test("cert list, revoke: the API sees it at once, the listener refuses the certificate, a second revoke exits 1", async () => {
    await ok("host", "add", "revoked.example.com");
    const dir = join(out.path, "revoked");
    const bundle = await ok("host", "bundle", "revoked.example.com", "--out", dir);
    const serial = /^issued certificate ([0-9a-f]+)/m.exec(bundle.stdout)![1]!;
    expect((await runPrintedCurl(bundle.stdout)).code).toBe(0);

    const listed = JSON.parse((await ok("cert", "list", "--host", "revoked.example.com", "--json")).stdout);
    expect(listed).toMatchObject([{ serial, kind: "host", common_name: "revoked.example.com", status: "valid", usages: ["clientAuth"] }]);
    const table = (await ok("cert", "list", "--kind", "host", "--status", "valid")).stdout;
    expect(table).toMatch(
      new RegExp(`^${serial}\\s+host\\s+revoked\\.example\\.com\\s+revoked\\.example\\.com\\s+valid\\s+\\S+\\s+current$`, "m"),
    );
    expect((await ok("cert", "list", "--kind", "server")).stdout).not.toContain(serial);

    // Typed as openssl prints it: upper case, with colons.
    const typed = serial.toUpperCase().match(/../g)!.join(":");
    const revoked = await ok("cert", "revoke", typed, "-reason", "keyCompromise");
    expect(revoked.stdout).toBe(
      `revoked certificate ${serial} (host CN=revoked.example.com, host revoked.example.com): keyCompromise; the CRL lists it\n`,
    );
    const api = await call(server.url, "GET", `/api/certs/${serial}`, { token: admin });
    expect(api.body).toMatchObject({ serial, status: "revoked", revocation_reason: "keyCompromise" });
    expect((await ok("cert", "list", "--status", "revoked")).stdout).toMatch(new RegExp(`^${serial}\\s.*revoked \\(keyCompromise\\)`, "m"));
    const refused = await eventually(
      async () => {
        const res = await runPrintedCurl(bundle.stdout);
        return res.code !== 0 ? res : null;
      },
      { what: "the listener to refuse the revoked certificate" },
    );
    expect(refused.out).toContain("revoked");

    expect(await cli("cert", "revoke", serial)).toMatchObject({ code: 1, stderr: `latchkey: certificate ${serial} is already revoked\n` });
    expect(await cli("cert", "revoke", "0badc0de")).toMatchObject({
      code: 1,
      stderr: "latchkey: no certificate with serial 0badc0de; see latchkey cert list\n",
    });
  });

  test("cert usage errors: exit 2, the flag echoed as typed", async () => {
    expect(await cli("cert", "revoke", "not-hex")).toMatchObject({
      code: 2,
      stderr: 'latchkey: SERIAL "not-hex" is not a serial number in hex; see latchkey cert list\n',
    });
    expect((await cli("cert", "revoke", "0a", "--reason", "boredom")).stderr).toStartWith(
      "latchkey: --reason must be one of unspecified, ",
    );
    expect((await cli("cert", "revoke")).code).toBe(2);
    expect(await cli("cert", "list", "-kind", "root")).toMatchObject({
      code: 2,
      stderr: "latchkey: -kind must be one of server, host, client, user\n",
    });
    expect((await cli("cert", "list", "--host", "../etc")).code).toBe(2);
    expect(await cli("cert", "list", "--reason", "x")).toMatchObject({
      code: 2,
      stderr: "latchkey: cert list does not take --reason; see latchkey cert --help\n",
    });
    expect(await cli("cert", "list", "--frob")).toMatchObject({
      code: 2,
      stderr: "latchkey: unknown flag --frob; run with --help to see the flags this command takes\n",
    });
  });

  test("host remove: gone from the API, its certificates revoked; an unknown host exits 1", async () => {
    await ok("host", "add", "gone.example.com");
    const bundle = await ok("host", "bundle", "gone.example.com", "--out", join(out.path, "gone"));
    const serial = /^issued certificate ([0-9a-f]+)/m.exec(bundle.stdout)![1]!;
    expect((await ok("host", "remove", "GONE.example.com")).stdout).toBe(
      "removed host gone.example.com; revoked its 1 valid certificate\n",
    );
    expect((await call(server.url, "GET", "/api/hosts/gone.example.com", { token: admin })).status).toBe(404);
    expect((await call(server.url, "GET", `/api/certs/${serial}`, { token: admin })).body).toMatchObject({
      status: "revoked",
      revocation_reason: "cessationOfOperation",
    });
    expect(await cli("host", "remove", "gone.example.com")).toMatchObject({
      code: 1,
      stderr: "latchkey: no host gone.example.com is registered; see latchkey host list, or add it: latchkey host add gone.example.com\n",
    });
  });
});

test("ca import on a running server: the API serves the new root and the mTLS listener takes a certificate from it", async () => {
  const server = await startTestServer();
  cleanups.push(() => server.close());
  const cli = (...args: string[]) => okOn(server.storageArgs, ...args);
  await cli("ca", "import", join(roots, "rsa.pem"), join(roots, "rsa.key"));
  expect((await call(server.url, "GET", "/api/ca.pem")).text).toBe(readFileSync(join(roots, "rsa.pem"), "utf8"));
  await cli("host", "add", "after-import.example.com");
  const dir = tempDir("latchkey-bundle-");
  cleanups.push(dir.remove);
  const bundle = await cli("host", "bundle", "after-import.example.com", "--out", dir.path);
  expect(readFileSync(join(dir.path, "rootCA.pem"), "utf8")).toBe(readFileSync(join(roots, "rsa.pem"), "utf8"));
  // curl checks the listener's certificate against the new root: it passes once the listener has switched.
  const reported = await eventually(
    async () => {
      const res = await curl(bundle.stdout, server.mtlsUrl);
      return res.code === 0 ? res.out : null;
    },
    { what: "the mTLS listener to present a certificate from the imported root" },
  );
  expect(reported).toBe('{"ok":true,"hostname":"after-import.example.com"}');
});
