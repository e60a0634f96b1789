/**
 * End to end through the compiled binary: `npm run build`, copy dist/latchkey to an empty
 * directory (no Bun, no node_modules next to it), start it as a process, use it as a user
 * would over REST and /ws, and stop it with SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, ROOT, RpcClient, call, eventually, runLatchkey, spawnLatchkey, tempDir, waitForListening } from "./support.ts";

let dir: { path: string; remove(): void };
let binary: string;

beforeAll(async () => {
  const build = Bun.spawnSync([BUN, "scripts/build.ts"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`);
  dir = tempDir("latchkey-e2e-");
  binary = join(dir.path, "latchkey");
  copyFileSync(join(ROOT, "dist/latchkey"), binary);
});
afterAll(() => dir?.remove());

/** An environment with no Bun and no project around: only the system PATH. */
const bareEnv = () => ({ PATH: "/usr/bin:/bin", HOME: dir.path });

type LogEntry = Record<string, unknown>;

/** Reads a process's output stream to its end, keeping the text and the JSON lines seen so far. */
function collect(stream: ReadableStream<Uint8Array>) {
  let text = "";
  const decoder = new TextDecoder();
  let ended = false;
  const done = (async () => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    ended = true;
  })();
  const entries = (): LogEntry[] =>
    text
      .split("\n")
      .slice(0, -1)
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as LogEntry];
        } catch {
          return [];
        }
      });
  return { text: () => text, entries, done, ended: () => ended };
}

/** Waits for the first complete JSON line that matches, until the stream ends. */
async function waitForLine(
  output: ReturnType<typeof collect>,
  matches: (entry: LogEntry) => boolean,
  timeoutMs = 15_000,
): Promise<LogEntry> {
  return eventually(
    () => {
      const found = output.entries().find(matches);
      if (!found && output.ended()) throw new Error(`no such log line; output:\n${output.text()}`);
      return found;
    },
    { timeoutMs, what: () => `a matching log line; output:\n${output.text()}` },
  );
}

/** The lines of `text` that are not a JSON object each; the newline that ends the text starts no line. */
function notJsonObjects(text: string): string[] {
  return text
    .split("\n")
    .filter((line, i, lines) => line !== "" || i < lines.length - 1)
    .filter((line) => {
      try {
        const value: unknown = JSON.parse(line);
        return typeof value !== "object" || value === null || Array.isArray(value);
      } catch {
        return true;
      }
    });
}

describe("the compiled binary", () => {
  test("prints its stamped version", async () => {
    const res = await runLatchkey(["version"], { binary, cwd: dir.path, env: bareEnv() });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^latchkey \d+\.\d+\.\d+\n$/);
  });

  test("first start, REST and WebSocket login, panel and docs from inside itself, SIGTERM", async () => {
    const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0"], { binary, cwd: dir.path, env: bareEnv() });
    try {
      const { url, log } = await waitForListening(proc);
      const password = /password: (\S+)/.exec(log())?.[1];
      expect(password).toBeDefined();
      expect(existsSync(join(dir.path, "data/latchkey.db"))).toBe(true);

      const login = await call(url, "POST", "/api/auth/login", { body: { username: "admin", password } });
      expect(login.status).toBe(200);
      expect(login.body).toMatchObject({ role: "admin", expires_in: 300 });
      const token = login.body.token as string;
      expect(token.length).toBeGreaterThanOrEqual(43);

      const query = await call(url, "PUT", "/rpc/query", { token, rawBody: '{"junk":"junk"}' });
      expect(query.body).toEqual({
        args: {
          "latchkey/audit": "read",
          "latchkey/certs": "read/write",
          "latchkey/clients": "read/write",
          "latchkey/hosts": "read/write",
          "latchkey/keys": "read/write",
          "latchkey/licenses": "read/write",
          "latchkey/settings": "read/write",
          "latchkey/users": "read/write",
          "rpc/settings": "read/write",
        },
      });

      const rpc = await RpcClient.connect(url.replace(/^http/, "ws") + "/ws");
      const auth = await rpc.request("rpc", "auth", { username: "admin", password });
      expect(auth).toMatchObject({ namespace: "rpc", name: "response", args: [expect.any(String), 300] });
      const users = await rpc.request("latchkey", "users", { action: "list" });
      expect(users.args.items.map((u: { username: string }) => u.username)).toEqual(["admin"]);

      const panel = await fetch(url + "/");
      expect(panel.status).toBe(200);
      expect(await panel.text()).toContain('<script type="module" src="/panel/app.js"></script>');
      const js = await fetch(url + "/panel/app.js");
      expect(js.headers.get("content-type")).toStartWith("text/javascript");
      expect((await js.text()).length).toBeGreaterThan(10_000);
      const swagger = await fetch(url + "/swagger/swagger-ui-bundle.js");
      expect(swagger.status).toBe(200);
      expect((await swagger.arrayBuffer()).byteLength).toBeGreaterThan(1_000_000);
      const doc = await call(url, "GET", "/openapi/json");
      expect(Object.keys(doc.body.paths)).toContain("/api/users");

      // The admin CLI works on the same data directory while the server runs.
      const list = await runLatchkey(["user", "list"], { binary, cwd: dir.path, env: bareEnv() });
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/^admin\s+admin/m);

      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      expect(await rpc.closed).toMatchObject({ code: 1001 });
      expect(log()).toContain('shutting down reason="received SIGTERM"');
      expect(log()).toContain("INFO  stopped");
      // The WAL was checkpointed into the database on the way out.
      const wal = join(dir.path, "data/latchkey.db-wal");
      expect(!existsSync(wal) || statSync(wal).size === 0).toBe(true);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("a second start keeps the admin and prints no new password", async () => {
    const proc = spawnLatchkey(["server", "-listen", "127.0.0.1:0"], { binary, cwd: dir.path, env: bareEnv() });
    try {
      const { url, log } = await waitForListening(proc);
      expect(log()).not.toContain("password:");
      const health = await call(url, "GET", "/healthz");
      expect(health.body).toMatchObject({ status: "ok", database: "ok" });
      expect(health.body.version).toMatch(/^\d+\.\d+\.\d+$/);
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("the mini-key-server seed's flow: CLI-made key, curl -d activation and check, receipt verified offline", async () => {
    const dataDir = join(dir.path, "seed-flow");
    const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dataDir], { binary, cwd: dir.path, env: bareEnv() });
    /** curl as its own process, without blocking this one; the body, then the status on the last line. */
    const curl = async (...args: string[]) => {
      const run = Bun.spawn(["curl", "-s", "-w", "\n%{http_code}", ...args], { stdout: "pipe", stderr: "pipe", env: bareEnv() });
      const [out, code] = await Promise.all([new Response(run.stdout).text(), run.exited]);
      expect(code).toBe(0);
      const lines = out.split("\n");
      return { status: Number(lines.pop()), text: lines.join("\n") };
    };
    const cli = (...args: string[]) => runLatchkey([...args, "--data-dir", dataDir], { binary, cwd: dir.path, env: bareEnv() });
    try {
      const { url } = await waitForListening(proc);
      // The seed's "Key Creation": an application, then a key, made with the binary's CLI on the server's data directory.
      const app = await cli(
        "app",
        "create",
        "Ice Breaker",
        "--support-message",
        "call 555-555-5555 for support or email support@example.com",
      );
      expect(app).toMatchObject({ code: 0, stdout: 'created application 1 "Ice Breaker"\n' });
      const key = await cli("license", "create", "--app", "1", "--activations", "10");
      expect(key.code).toBe(0);
      expect(key.stdout).toMatch(/^[A-Z0-9]{25}\n$/);
      const token = key.stdout.trim();

      // Exactly the seed's example: curl localhost:5001/api/activate -X POST -d token=... -d machine=ICEBREAKER -d user=sam
      const activated = await curl(
        `${url}/api/activate`,
        "-X",
        "POST",
        "-d",
        `token=${token}`,
        "-d",
        "machine=ICEBREAKER",
        "-d",
        "user=sam",
      );
      expect(activated.status).toBe(201);
      const body = JSON.parse(activated.text);
      expect(body).toEqual({ result: "ok", remainingActivations: 9, receipt: expect.any(String) });

      const checked = await curl(
        "-G",
        `${url}/api/check`,
        "-d",
        `token=${token}`,
        "-d",
        "app_id=1",
        "-d",
        "machine=ICEBREAKER",
        "-d",
        "user=sam",
      );
      expect(checked.status).toBe(201);
      const check = JSON.parse(checked.text);
      expect(check).toEqual({ result: "ok", receipt: expect.any(String) });
      const refused = await curl(
        `${url}/api/activate`,
        "-X",
        "POST",
        "-d",
        "token=2SZRHXZBNB3GUCHM375FTB8DJ",
        "-d",
        "app_id=1",
        "-d",
        "machine=ICEBREAKER",
        "-d",
        "user=sam",
      );
      expect(refused.status).toBe(404);
      expect(JSON.parse(refused.text)).toEqual({
        result: "failure",
        error: "invalid activation token",
        support_message: "call 555-555-5555 for support or email support@example.com",
      });

      // Offline verification with the binary and the public key saved from the server.
      const keyFile = join(dir.path, "seed-flow.pem");
      const saved = await curl("-o", keyFile, `${url}/api/license/public-key?format=pem`);
      expect(saved.status).toBe(200);
      for (const receipt of [body.receipt, check.receipt]) {
        const verified = await cli("license", "verify", receipt, "--public-key", keyFile, "--hwid", "machine:ICEBREAKER");
        expect(verified.code).toBe(0);
        expect(verified.stdout).toStartWith('valid: application 1, license 1, hwid "machine:ICEBREAKER"');
      }
      const otherMachine = await cli("license", "verify", body.receipt, "--public-key", keyFile, "--hwid", "LAPTOP");
      expect(otherMachine.code).toBe(1);
      expect(otherMachine.stderr).toContain("receipt rejected: issued for another machine");

      // The CLI's view agrees: one of ten seats used.
      const list = await cli("license", "list");
      expect(list.stdout).toMatch(new RegExp(`^1\\s+Ice Breaker\\s+${token}\\s+1/10\\s+enabled`, "m"));
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("--log-format json: every line it writes, the first start's password included, is a JSON object", async () => {
    const dataDir = join(dir.path, "json-logs");
    const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"], {
      binary,
      cwd: dir.path,
      env: bareEnv(),
    });
    const stdout = collect(proc.stdout);
    const stderr = collect(proc.stderr);
    try {
      const listening = await waitForLine(stderr, (entry) => entry.msg === "latchkey listening");
      const url = listening.url as string;
      // The first start's password, as a log line of its own (read before toMatchObject, which
      // in Bun 1.4 overwrites matched fields of the object it checks: oven-sh/bun#3521).
      const bootstrap = stderr.entries().find((entry) => typeof entry.password === "string");
      const password = bootstrap?.password as string;
      expect(password).toBeString();
      expect(bootstrap).toMatchObject({ level: "warn", username: "admin" });

      // REST: a login that fails and one that works, a few calls, a 404, bad requests.
      expect((await call(url, "POST", "/api/auth/login", { body: { username: "admin", password: "wrong password" } })).status).toBe(401);
      const login = await call(url, "POST", "/api/auth/login", { body: { username: "admin", password } });
      expect(login.status).toBe(200);
      const token = login.body.token as string;
      expect((await call(url, "GET", "/api/users", { token })).status).toBe(200);
      expect(
        (
          await call(url, "POST", "/api/users", {
            token,
            body: { username: "json-logs", password: "another long password", role: "viewer" },
          })
        ).status,
      ).toBe(201);
      expect((await call(url, "GET", "/api/audit", { token })).status).toBe(200);
      expect((await call(url, "GET", "/api/users")).status).toBe(401);
      expect((await call(url, "GET", "/api/no-such-route", { token })).status).toBe(404);
      expect((await call(url, "POST", "/api/users", { token, rawBody: "{", headers: { "content-type": "application/json" } })).status).toBe(
        400,
      );
      expect((await call(url, "POST", "/api/users", { token, body: { username: 5 } })).status).toBe(400);

      // WebSocket: the first connection is when Elysia analyses the /ws hooks.
      const rpc = await RpcClient.connect(url.replace(/^http/, "ws") + "/ws");
      expect(await rpc.request("rpc", "auth", { username: "admin", password })).toMatchObject({ name: "response" });
      expect(await rpc.request("latchkey", "users", { action: "list" })).toMatchObject({ name: "response" });
      expect(await rpc.sendRaw("not json")).toMatchObject({ name: "error" });
      rpc.close();
      await rpc.closed;

      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      await Promise.all([stdout.done, stderr.done]);
      expect(notJsonObjects(stdout.text())).toEqual([]);
      expect(notJsonObjects(stderr.text())).toEqual([]);
      expect(stderr.text()).toEndWith("\n");
      expect(stderr.entries().map((entry) => entry.msg)).toEqual(
        expect.arrayContaining(["latchkey listening", "shutting down", "stopped"]),
      );
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test(
    "a port that is taken stops the start before anything is created: " + "no data directory, no password; the next start prints it",
    async () => {
      const blocker = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("busy") });
      const dataDir = join(dir.path, "never-made");
      const port = blocker.port!;
      try {
        const res = await runLatchkey(["server", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
          binary,
          cwd: dir.path,
          env: bareEnv(),
        });
        expect(res.code).toBe(1);
        expect(res.stderr).toBe(
          `latchkey: cannot listen on 127.0.0.1:${port} (--listen): ` +
            "the address is in use by another program; stop it or choose another --listen\n",
        );
        expect(res.stdout).toBe("");
        expect(existsSync(dataDir)).toBe(false);
        // In JSON mode the refusal is a JSON line too.
        const json = await runLatchkey(["server", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--log-format", "json"], {
          binary,
          cwd: dir.path,
          env: bareEnv(),
        });
        expect(json.code).toBe(1);
        expect(JSON.parse(json.stderr)).toMatchObject({ level: "error", msg: "cannot start" });
        expect(existsSync(dataDir)).toBe(false);
      } finally {
        blocker.stop(true);
      }
      // The port is free now: this start is the first one, and shows the password.
      const proc = spawnLatchkey(["server", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
        binary,
        cwd: dir.path,
        env: bareEnv(),
      });
      try {
        const { log } = await waitForListening(proc);
        expect(log()).toContain('created the bootstrap account "admin" with password: ');
        proc.kill("SIGTERM");
        expect(await proc.exited).toBe(0);
      } finally {
        proc.kill("SIGKILL");
      }
    },
  );

  test("security events reach the server log as one line each, without secrets; a flood of refusals is summarised", async () => {
    const dataDir = join(dir.path, "security-log");
    const adminPassword = "security log admin password";
    const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json", "--require-auth-key"], {
      binary,
      cwd: dir.path,
      env: { ...bareEnv(), LATCHKEY_ADMIN_PASSWORD: adminPassword },
    });
    const stderr = collect(proc.stderr);
    try {
      const url = (await waitForLine(stderr, (entry) => entry.msg === "latchkey listening")).url as string;
      // Logins: one wrong password, then a burst on one account that the throttle stops.
      expect((await call(url, "POST", "/api/auth/login", { body: { username: "admin", password: "wrong password 1" } })).status).toBe(401);
      const burst = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          call(url, "POST", "/api/auth/login", { body: { username: "admin", password: `wrong password ${i + 2}` } }),
        ),
      );
      expect(burst.filter((r) => r.status === 429).length).toBeGreaterThan(20);
      // Enrollment: a key, a registration, a clone refused, the key revoked.
      const cli = (...args: string[]) => runLatchkey([...args, "--data-dir", dataDir], { binary, cwd: dir.path, env: bareEnv() });
      const generated = await cli("key", "generate");
      const key = generated.stdout.trim();
      const id = /created key (\d+)/.exec(generated.stderr)![1]!;
      const uuid = crypto.randomUUID();
      const first = await RpcClient.connect(url.replace(/^http/, "ws") + "/ws");
      const args = { uuid, name: "logged", hostname: "logged.example", auth_key: key };
      expect((await first.request("client", "register", args)).name).toBe("response");
      const clone = await RpcClient.connect(url.replace(/^http/, "ws") + "/ws");
      expect((await clone.request("client", "register", args)).args.message).toBe("AUTH_FAILED: Client already connected");
      clone.close();
      expect((await cli("key", "revoke", id)).code).toBe(0);
      expect((await first.closed).code).toBe(4003);

      const event = (action: string, outcome: string) =>
        stderr.entries().filter((e) => e.msg === "security event" && e.action === action && e.outcome === outcome);
      await waitForLine(stderr, (e) => e.msg === "security event" && e.action === "client.register" && e.outcome === "failure");
      expect(event("auth.password", "failure").length).toBe(5);
      // The throttled burst: ten lines, the rest counted (and the count logged with the next such line).
      expect(event("auth.password", "denied")).toHaveLength(10);
      expect(event("auth.password", "denied")[0]).toMatchObject({
        level: "warn",
        actor: "admin",
        address: "127.0.0.1",
        reason: "throttled (account)",
      });
      expect(event("client.register", "success")).toHaveLength(1);
      expect(event("client.register", "failure")[0]).toMatchObject({ target: uuid, reason: "AUTH_FAILED: Client already connected" });
      // The revocation was made by the CLI in another process: the server logs the clients it disconnected.
      await waitForLine(stderr, (e) => e.msg === "client disconnected" && e.uuid === uuid);
      const text = stderr.text();
      for (const secret of [adminPassword, "wrong password 1", key, key.replaceAll("-", "")]) expect(text).not.toContain(secret);
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("woodstock: a host reports with curl and its bundle, and with certificates made by openssl under an imported root", async () => {
    const dataDir = join(dir.path, "woodstock");
    const work = join(dir.path, "woodstock-files");
    mkdirSync(work);
    const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0", "--data-dir", dataDir], {
      binary,
      cwd: dir.path,
      env: bareEnv(),
    });
    const cli = (...args: string[]) => runLatchkey([...args, "--data-dir", dataDir], { binary, cwd: work, env: bareEnv() });
    const sh = async (cmd: string[]) => {
      const p = Bun.spawn(cmd, { cwd: work, stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { out, err, code };
    };
    const report = async (hostname: string, cert: string, key: string, ca = "rootCA.pem") => {
      const body = JSON.stringify({ interfaces: [{ name: "eth0", addresses: ["192.0.2.10"] }], port: 8080, version: "woodstock 1.0" });
      const args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cert", cert, "--key", key, "--cacert", ca, "-X", "POST"];
      const url = `https://localhost:${mtlsPort}/api/hosts/${hostname}/client`;
      return Number((await sh(["curl", ...args, "-H", "content-type: application/json", "-d", body, url])).out);
    };
    let mtlsPort = 0;
    try {
      const { log } = await waitForListening(proc);
      mtlsPort = Number(/mtls=https:\/\/[^:]+:(\d+)/.exec(log())?.[1]);
      expect(mtlsPort).toBeGreaterThan(0);

      // A bundle from the binary's CLI, used exactly as a woodstock client uses it.
      expect((await cli("host", "add", "web-01.example", "--group", "lab")).code).toBe(0);
      expect((await cli("host", "add", "db-01.example")).code).toBe(0);
      expect((await cli("host", "bundle", "web-01.example", "--out", work)).code).toBe(0);
      expect(await report("web-01.example", "web-01.example_https.pem", "web-01.example_https.key")).toBe(200);
      expect(await report("db-01.example", "web-01.example_https.pem", "web-01.example_https.key")).toBe(403);
      // The server writes reports about once a second: the CLI, another process, sees it soon after.
      await eventually(
        async () => {
          const hosts = JSON.parse((await cli("host", "list", "--json")).stdout) as { hostname: string; online: boolean; report: any }[];
          const web = hosts.find((h) => h.hostname === "web-01.example");
          return web?.online === true && web.report?.version === "woodstock 1.0";
        },
        { what: "the report in the CLI's host list" },
      );

      // Revoked by the CLI: refused from then on.
      const certs = JSON.parse((await cli("cert", "list", "--host", "web-01.example", "--json")).stdout) as { serial: string }[];
      expect((await cli("cert", "revoke", certs[0]!.serial)).code).toBe(0);
      expect(await report("web-01.example", "web-01.example_https.pem", "web-01.example_https.key")).toBe(401);

      // An outside root imported while the server runs: openssl-made certificates under it are accepted.
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
      const root = [
        "openssl",
        "req",
        "-x509",
        ...ec,
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "365",
        "-subj",
        "/CN=Outside Root",
      ];
      expect(
        (await sh([...root, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])).code,
      ).toBe(0);
      const imported = await cli("ca", "import", "root.pem", "root.key", "--force");
      expect(imported.code).toBe(0);
      writeFileSync(
        join(work, "client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
      );
      const leaf = async (name: string, cn: string) => {
        expect(
          (await sh(["openssl", "req", "-new", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`])).code,
        ).toBe(0);
        const sign = ["openssl", "x509", "-req", "-in", `${name}.csr`, "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial"];
        expect((await sh([...sign, "-out", `${name}.pem`, "-days", "30", "-extfile", "client.ext"])).code).toBe(0);
      };
      await leaf("web", "web-01.example");
      await leaf("stranger", "nobody.example");
      // The listener takes a certificate from the new root within a second or so.
      await eventually(async () => (await report("web-01.example", "web.pem", "web.key", "root.pem")) === 200, {
        what: "a report under the imported root",
      });
      expect(await report("nobody.example", "stranger.pem", "stranger.key", "root.pem")).toBe(401);
      expect(await report("db-01.example", "web.pem", "web.key", "root.pem")).toBe(403);
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });
});
