/** The admin command line, run as a separate process against a real data directory. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { silentLogger } from "../src/log.ts";
import { startServer, type RunningServer } from "../src/server.ts";
import { ADMIN_PASSWORD, runLatchkey, tempDir } from "./support.ts";

const sha256hex = (s: string) => createHash("sha256").update(s).digest("hex");

let dir: { path: string; remove(): void };
let dataDir: string;

async function ok(args: string[], input?: string) {
  const res = await runLatchkey([...args, "--data-dir", dataDir], input === undefined ? {} : { input });
  if (res.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  return res;
}

beforeAll(async () => {
  dir = tempDir();
  dataDir = join(dir.path, "data");
  // A first server start creates the database; the CLI never creates one by accident.
  const { startServer } = await import("../src/server.ts");
  const { loadConfig, serverFlags } = await import("../src/config.ts");
  const { parseArgs } = await import("../src/cli/args.ts");
  const { silentLogger } = await import("../src/log.ts");
  const server = await startServer(loadConfig(parseArgs(["--data-dir", dataDir, "--listen", "127.0.0.1:0"], serverFlags), {}), {
    log: silentLogger,
    adminPassword: "first admin password",
  });
  await server.stop();
});
afterAll(() => dir.remove());

describe("help, version and errors", () => {
  test("version", async () => {
    const res = await runLatchkey(["version"]);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe("latchkey dev\n");
  });

  test.each([
    [["--help"]],
    [["server", "--help"]],
    [["user", "--help"]],
    [["backup", "--help"]],
    [["server", "-help"]],
    [["health", "--help"]],
    [["version", "--help"]],
  ])("%p prints usage", async (argv: string[]) => {
    const res = await runLatchkey(argv);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("Usage: latchkey");
  });

  test.each([
    [["frobnicate"], 2, /unknown command "frobnicate"; run 'latchkey --help'/],
    [["server", "--bogus"], 2, /unknown flag --bogus; run with --help/],
    [["server", "-bogus=1"], 2, /unknown flag -bogus; run with --help/],
    [["version", "extra"], 2, /version takes no arguments/],
    [["user", "delete"], 2, /takes exactly one NAME/],
    [["user", "create", "../etc/passwd", "--password-stdin"], 2, /NAME may hold letters, digits/],
    [["user", "list", "--data-dir", "/nonexistent/latchkey"], 1, /no latchkey database in \/nonexistent\/latchkey; start the server once/],
  ])("%p fails with exit %d and a remedy on stderr", async (argv, code, message) => {
    const res = await runLatchkey(argv as string[]);
    expect(res.code).toBe(code as number);
    expect(res.stderr).toMatch(message as RegExp);
    expect(res.stdout).toBe("");
  });
});

describe("user commands", () => {
  test("create, list, passwd, delete", async () => {
    expect(
      (await ok(["user", "create", "alice", "--role", "viewer", "--groups", "red,blue", "--password-stdin"], "alice password\n")).stdout,
    ).toBe("created viewer alice\n");
    const listed = JSON.parse((await ok(["user", "list", "--json"])).stdout) as {
      username: string;
      role: string;
      allowed_groups: string[];
    }[];
    expect(listed.find((u) => u.username === "alice")).toMatchObject({ role: "viewer", allowed_groups: ["red", "blue"] });
    expect((await ok(["user", "list"])).stdout).toMatch(/^alice\s+viewer\s+red,blue\s+never/m);

    const db = new Database(join(dataDir, "latchkey.db"), { readonly: true });
    const before = db.query("SELECT password_hash FROM users WHERE username = 'alice'").get() as { password_hash: string };
    expect(before.password_hash).toStartWith("$argon2id$v=19$m=19456,t=2,");
    expect(await Bun.password.verify("alice password", before.password_hash)).toBe(true);
    await ok(["user", "passwd", "alice", "--password-stdin"], "alice new password\n");
    const after = db.query("SELECT password_hash FROM users WHERE username = 'alice'").get() as { password_hash: string };
    expect(await Bun.password.verify("alice new password", after.password_hash)).toBe(true);
    db.close();

    expect((await ok(["user", "delete", "alice"])).stdout).toContain("deleted alice");
    expect((await ok(["user", "list"])).stdout).not.toContain("alice");
  });

  test.each([
    [["user", "create", "bob", "--password-stdin"], "short\n", /password must be at least 8 characters/],
    [["user", "create", "bob", "--password-stdin", "--role", "root"], "long enough\n", /--role must be admin or viewer/],
    [["user", "create", "admin", "--password-stdin"], "long enough\n", /a user named "admin" already exists/],
    [["user", "delete", "admin"], undefined, /the bootstrap account admin cannot be deleted/],
    [["user", "delete", "ghost"], undefined, /no user named "ghost"/],
    [["user", "passwd", "ghost", "--password-stdin"], "long enough\n", /no user named "ghost"/],
    [["user", "create", "bob"], undefined, /no terminal to ask for the password on: pipe it in with --password-stdin/],
  ])("%p is refused", async (argv, input, message) => {
    const res = await runLatchkey([...(argv as string[]), "--data-dir", dataDir], input === undefined ? {} : { input: input as string });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(message as RegExp);
  });
});

describe("wsauth users.json import and export", () => {
  // Hashes computed here, independently of the server: SHA256(password + salt), lowercase hex.
  const legacy = [
    { username: "carol", password: "carol's password", salt: "a1b2c3d4e5f60718", role: "viewer", allowed_groups: ["lab"] },
    { username: "dave", password: "dave's password!", salt: "0011223344556677", role: "admin", allowed_groups: [] },
  ];
  const file = () => join(dir.path, "users.json");
  const usersJson = (entries: unknown[]) => JSON.stringify({ users: entries });
  const entries = legacy.map(({ password, ...u }) => ({ ...u, password_hash: sha256hex(password + u.salt) }));

  test.each([
    ["not JSON", "{nope", /users file is not valid JSON/],
    ["no users list", JSON.stringify({ people: [] }), /users file: users Invalid type|users file: users/],
    [
      "a bad hash in the second entry",
      usersJson([entries[0], { ...entries[1], password_hash: "XYZ" }]),
      /users\.1\.password_hash must be 64 lowercase hex digits/,
    ],
    ["a hostile username", usersJson([{ ...entries[0], username: "../../etc/passwd" }]), /users\.0\.username may hold letters/],
    ["a duplicate", usersJson([entries[0], entries[0]]), /appears twice/],
    ["a bad role", usersJson([{ ...entries[0], role: "root" }]), /users\.0\.role must be admin or viewer/],
  ])("a file with %s imports nothing", async (_, text, message) => {
    writeFileSync(file(), text as string);
    const res = await runLatchkey(["user", "import", file(), "--data-dir", dataDir]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(message as RegExp);
    const names = (JSON.parse((await ok(["user", "list", "--json"])).stdout) as { username: string }[]).map((u) => u.username);
    expect(names).toEqual(["admin"]);
  });

  test("import keeps no legacy hash by default, and the password still verifies", async () => {
    writeFileSync(file(), usersJson(entries));
    expect((await ok(["user", "import", file()])).stdout).toBe("imported 2 users\n");
    const db = new Database(join(dataDir, "latchkey.db"), { readonly: true });
    for (const u of legacy) {
      const row = db.query("SELECT * FROM users WHERE username = ?").get(u.username) as Record<string, unknown>;
      const h = sha256hex(u.password + u.salt);
      expect(Object.values(row)).not.toContain(h);
      expect(row.legacy_hash).toBeNull();
      expect(row.legacy_salt).toBe(u.salt);
      expect(await Bun.password.verify(h, row.password_hash as string)).toBe(true);
    }
    db.close();
    // Nothing to export: no account keeps its wsauth hash.
    expect(JSON.parse((await ok(["user", "export"])).stdout)).toEqual({ users: [] });
    for (const u of legacy) await ok(["user", "delete", u.username]);
  });

  test("an import that collides with an existing user applies nothing", async () => {
    await ok(["user", "create", "dave", "--password-stdin"], "existing dave pw\n");
    writeFileSync(file(), usersJson(entries));
    const res = await runLatchkey(["user", "import", file(), "--data-dir", dataDir]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('user "dave" already exists (use --replace to overwrite it); nothing was imported');
    expect((await ok(["user", "list"])).stdout).not.toContain("carol");
    await ok(["user", "delete", "dave"]);
  });

  test("as wsauth reads the file: an empty role is viewer, an entry without a password hash is skipped and named", async () => {
    writeFileSync(
      file(),
      usersJson([
        { ...entries[0], role: "" },
        { username: "erin", password_hash: "", salt: "", role: "admin", allowed_groups: [] },
        { username: "", password_hash: entries[1]!.password_hash, salt: "", role: "viewer" },
      ]),
    );
    const res = await ok(["user", "import", file()]);
    expect(res.stdout).toBe("imported 1 user\n");
    expect(res.stderr).toContain("skipped erin: its password_hash is empty");
    expect(res.stderr).toContain("skipped users.2: it has no username");
    const listed = JSON.parse((await ok(["user", "list", "--json"])).stdout) as { username: string; role: string }[];
    expect(listed.map((u) => [u.username, u.role])).toEqual([
      ["admin", "admin"],
      ["carol", "viewer"],
    ]);
    await ok(["user", "delete", "carol"]);
  });

  test(
    "--replace overwrites an existing account with the file's hash, role and groups, " + "in one transaction, ending its sessions",
    async () => {
      await ok(["user", "create", "dave", "--role", "viewer", "--password-stdin"], "existing dave pw\n");
      writeFileSync(file(), usersJson(entries));
      const res = await ok(["user", "import", file(), "--replace"]);
      expect(res.stdout).toBe("imported 2 users (1 replaced, their sessions ended)\n");
      const db = new Database(join(dataDir, "latchkey.db"), { readonly: true });
      const dave = db.query("SELECT * FROM users WHERE username = 'dave'").get() as Record<string, unknown>;
      db.close();
      expect(dave.role).toBe("admin");
      expect(dave.legacy_salt).toBe(legacy[1]!.salt);
      expect(dave.credential_version).toBe(1);
      expect(await Bun.password.verify(sha256hex(legacy[1]!.password + legacy[1]!.salt), dave.password_hash as string)).toBe(true);
      // Again: both exist now, both are replaced; a file with a bad entry still changes nothing.
      expect((await ok(["user", "import", file(), "--replace"])).stdout).toBe("imported 2 users (2 replaced, their sessions ended)\n");
      writeFileSync(
        file(),
        usersJson([
          { ...entries[0], role: "viewer", allowed_groups: ["other"] },
          { ...entries[1], password_hash: "bad" },
        ]),
      );
      expect((await runLatchkey(["user", "import", file(), "--replace", "--data-dir", dataDir])).code).not.toBe(0);
      const carol = (JSON.parse((await ok(["user", "list", "--json"])).stdout) as { username: string; allowed_groups: string[] }[]).find(
        (u) => u.username === "carol",
      );
      expect(carol?.allowed_groups).toEqual(["lab"]);
      for (const u of legacy) await ok(["user", "delete", u.username]);
    },
  );

  test("round trip with --legacy-challenge-login: export writes back the same file, atomically, mode 0600", async () => {
    const withAdmin = [{ username: "admin", password_hash: sha256hex("x"), salt: "", role: "admin", allowed_groups: [] }, ...entries];
    writeFileSync(file(), usersJson(withAdmin));
    const res = await ok(["user", "import", file(), "--legacy-challenge-login"]);
    expect(res.stdout).toBe("imported 2 users (wsauth challenge login kept)\n");
    expect(res.stderr).toContain("skipped admin");
    expect((await ok(["user", "list"])).stdout).toMatch(/^carol\s+viewer\s+lab\s+never\s+wsauth \(challenge login\)$/m);
    const out = join(dir.path, "exported.json");
    await ok(["user", "export", out]);
    expect(JSON.parse(readFileSync(out, "utf8"))).toEqual({ users: [...entries].sort((a, b) => a.username.localeCompare(b.username)) });
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const listing = (await ok(["user", "list", "--json"])).stdout;
    expect(JSON.parse(listing).find((u: { username: string }) => u.username === "carol")).toMatchObject({
      legacy: true,
      legacy_challenge: true,
    });
  });
});

describe("backup", () => {
  test("writes a consistent, openable copy and refuses to overwrite", async () => {
    const target = join(dir.path, "backup.db");
    expect((await ok(["backup", target])).stdout).toBe(`wrote ${target}\n`);
    const copy = new Database(target, { readonly: true });
    expect((copy.query("SELECT count(*) AS n FROM users WHERE username = 'admin'").get() as { n: number }).n).toBe(1);
    expect((copy.query("PRAGMA integrity_check").get() as { integrity_check: string }).integrity_check).toBe("ok");
    copy.close();
    const again = await runLatchkey(["backup", target, "--data-dir", dataDir]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("already exists");
    expect(existsSync(target)).toBe(true);
  });
});

describe("latchkey health", () => {
  // Servers in this process, asked by a separate latchkey process, as a container's HEALTHCHECK does.
  let plain: RunningServer;
  let tls: RunningServer;
  let dir: ReturnType<typeof tempDir>;
  let cert: string;
  let otherCert: string;
  let key: string;
  let deadPort: number;
  const health = (args: string[], env: Record<string, string> = {}) => runLatchkey(["health", ...args], { env });
  const at = (port: number, scheme = "http") => `${scheme}://127.0.0.1:${port}/healthz`;

  async function start(dataDir: string, flags: string[]): Promise<RunningServer> {
    const config = loadConfig(parseArgs(["--data-dir", dataDir, "--mtls-listen", "127.0.0.1:0", ...flags], serverFlags), {});
    return startServer(config, { log: silentLogger, adminPassword: ADMIN_PASSWORD });
  }
  function selfSigned(name: string): { cert: string; key: string } {
    const paths = { cert: join(dir.path, `${name}.pem`), key: join(dir.path, `${name}.key`) };
    // Named for a public host only: a loopback check cannot match it by name.
    const made = Bun.spawnSync([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      paths.key,
      "-out",
      paths.cert,
      "-days",
      "1",
      "-subj",
      `/CN=${name}`,
      "-addext",
      `subjectAltName=DNS:${name}`,
    ]);
    expect(made.exitCode).toBe(0);
    return paths;
  }

  beforeAll(async () => {
    dir = tempDir();
    ({ cert, key } = selfSigned("keys.example.com"));
    otherCert = selfSigned("other.example.com").cert;
    plain = await start(join(dir.path, "plain"), ["--listen", "0.0.0.0:0"]);
    tls = await start(join(dir.path, "tls"), ["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]);
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    deadPort = probe.port;
    probe.stop(true);
  });
  afterAll(async () => {
    await Promise.all([plain?.stop(), tls?.stop()]);
    dir?.remove();
  });

  test("healthy: finds the listener in latchkey.json, checks a wildcard address on loopback, exits 0", async () => {
    const dataDir = join(dir.path, "plain");
    writeFileSync(join(dataDir, "latchkey.json"), JSON.stringify({ listen: `0.0.0.0:${plain.port}` }));
    expect(await health(["--data-dir", dataDir])).toEqual({
      code: 0,
      stdout: `healthy: ${at(plain.port)} (latchkey dev, database ok)\n`,
      stderr: "",
    });
  });

  test("settings are read as the server reads them: flags, then LATCHKEY_* variables, then latchkey.json", async () => {
    const dataDir = join(dir.path, "precedence");
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, "latchkey.json"), JSON.stringify({ listen: `127.0.0.1:${deadPort}` }));
    const live = `127.0.0.1:${plain.port}`;
    const dead = `127.0.0.1:${deadPort}`;
    expect((await health(["--data-dir", dataDir], { LATCHKEY_LISTEN: live })).code).toBe(0);
    expect((await health(["--data-dir", dataDir, "--listen", live], { LATCHKEY_LISTEN: dead })).code).toBe(0);
    const fileLoses = await health(["--data-dir", dataDir], { LATCHKEY_LISTEN: dead });
    expect(fileLoses.code).toBe(1);
    const portZero = await health(["--data-dir", dataDir, "--listen", "127.0.0.1:0"]);
    expect(portZero).toEqual({
      code: 1,
      stdout: "",
      stderr: "latchkey: unhealthy: cannot tell: the server listens on port 0 (a random port); pass --url\n",
    });
    const badSetting = await health(["--data-dir", dataDir], { LATCHKEY_SESSION_IDLE: "soon" });
    expect(badSetting.code).toBe(1);
    expect(badSetting.stderr).toStartWith("latchkey: unhealthy: cannot tell: invalid configuration: --session-idle");
  });

  test("nothing listening: exit 1 with one line saying so", async () => {
    expect(await health(["--listen", `127.0.0.1:${deadPort}`])).toEqual({
      code: 1,
      stdout: "",
      stderr: `latchkey: unhealthy: nothing answers at ${at(deadPort)} (connection refused)\n`,
    });
  });

  test("a listener that never answers: exit 1 after --timeout", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const started = Date.now();
      expect(await health(["--listen", `127.0.0.1:${silent.port}`, "--timeout", "0.5"])).toEqual({
        code: 1,
        stdout: "",
        stderr: `latchkey: unhealthy: no answer from ${at(silent.port)} within 0.5 s\n`,
      });
      // Not a speed check: the only sign that --timeout 0.5 was used rather than the default 5 s is
      // that it gave up before the default would have (0.5 s of waiting, plus a process start).
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      silent.stop(true);
    }
  });

  test("a 503 from /healthz, or a 200 that is not latchkey's reply, is unhealthy", async () => {
    const fake = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) =>
        new URL(req.url).pathname === "/healthz"
          ? Response.json({ status: "unavailable", database: "error: disk I/O error", version: "dev" }, { status: 503 })
          : new Response("<h1>some other server</h1>", { headers: { "content-type": "text/html" } }),
    });
    try {
      expect(await health(["--listen", `127.0.0.1:${fake.port}`])).toEqual({
        code: 1,
        stdout: "",
        stderr: `latchkey: unhealthy: ${at(fake.port!)} answered 503: database error: disk I/O error\n`,
      });
      expect(await health(["--url", `http://127.0.0.1:${fake.port}/other`])).toEqual({
        code: 1,
        stdout: "",
        stderr: `latchkey: unhealthy: http://127.0.0.1:${fake.port}/other answered 200: not a latchkey health reply\n`,
      });
    } finally {
      fake.stop(true);
    }
  });

  test("--url: the given address, /healthz by default", async () => {
    expect(await health(["--url", `http://127.0.0.1:${plain.port}`])).toEqual({
      code: 0,
      stdout: `healthy: ${at(plain.port)} (latchkey dev, database ok)\n`,
      stderr: "",
    });
  });

  test("with --tls-cert: HTTPS on loopback, accepting exactly the configured certificate", async () => {
    const listen = `127.0.0.1:${tls.port}`;
    const viaEnv = await health(["--listen", listen], { LATCHKEY_TLS_CERT: cert, LATCHKEY_TLS_KEY: key });
    expect(viaEnv).toEqual({ code: 0, stdout: `healthy: ${at(tls.port, "https")} (latchkey dev, database ok)\n`, stderr: "" });
    // The file names another certificate than the one served (replaced without a restart).
    const replaced = await health(["--listen", listen, "--tls-cert", otherCert, "--tls-key", key]);
    expect(replaced).toEqual({
      code: 1,
      stdout: "",
      stderr:
        `latchkey: unhealthy: ${at(tls.port, "https")} presents a certificate other than ${otherCert} ` +
        "(was the file replaced without restarting the server?)\n",
    });
    // --url gets the usual checks, which a self-signed certificate does not pass.
    const checked = await health(["--url", `https://127.0.0.1:${tls.port}`]);
    expect(checked.code).toBe(1);
    expect(checked.stderr).toStartWith(`latchkey: unhealthy: cannot reach ${at(tls.port, "https")}: `);
    // Plain HTTP to the HTTPS listener is not healthy either.
    expect((await health(["--listen", listen])).code).toBe(1);
  });

  test("a bad command line exits 2; the top-level help lists the command", async () => {
    for (const args of [["now"], ["--timeout", "0"], ["--url", "ftp://example.com/"], ["--bogus"]]) {
      const res = await health(args);
      expect(res.code).toBe(2);
      expect(res.stderr).toStartWith("latchkey: ");
    }
    expect((await runLatchkey(["--help"])).stdout).toMatch(/^  health {4}ask the running server whether it is healthy/m);
  });
});
