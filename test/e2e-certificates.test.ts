/**
 * Certificate identities end to end through the compiled binary, as an operator and a machine
 * use it: the server and the agent are both `dist/latchkey`, copied to an empty directory and run
 * with only the system PATH. The journey: a key and its install command (with the root's pin) from
 * the REST API → `client install` → `client run` registers over TLS to the pinned root, asks for a
 * certificate, reconnects over mutual TLS with it and sends host reports → revoking the key closes
 * it within a second and revokes the certificate → a reinstall with the same key is refused until
 * the key is reset. Then an agent pinned to one server's root refusing another server, and renewal
 * with the clocks of both processes moved together by libfaketime (Debian's `faketime`).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { BUN, ROOT, call, eventually, runLatchkey, spawnLatchkey, tempDir, waitForListening } from "./support.ts";

let dir: { path: string; remove(): void };
let binary: string;

beforeAll(async () => {
  const build = Bun.spawnSync([BUN, "scripts/build.ts"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`);
  dir = tempDir("latchkey-e2e-certs-");
  binary = join(dir.path, "latchkey");
  copyFileSync(join(ROOT, "dist/latchkey"), binary);
});
afterAll(() => dir?.remove());

/** An environment with no Bun and no project around: only the system PATH (plus `extra`). */
const bareEnv = (extra: Record<string, string> = {}) => ({ PATH: "/usr/bin:/bin", HOME: dir.path, ...extra });

/** The agent names the machine and asks for CN = its hostname, in lower case. */
const MACHINE = hostname().toLowerCase();
const ADMIN_PASSWORD = "e2e-admin-password-1";

/** A process's output (stdout and stderr together) as it comes, to wait for lines in. */
function watch(proc: ReturnType<typeof spawnLatchkey>) {
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
    waitFor: (needle: string, times = 1, timeoutMs = 15_000) =>
      eventually(() => out.split(needle).length - 1 >= times, {
        timeoutMs,
        what: () => `${JSON.stringify(needle)} ×${times} in the output; so far:\n${out}`,
      }),
  };
}

/**
 * The compiled server on free ports with its own data directory and an admin made by its CLI;
 * `env` goes to the server process (libfaketime's variables for the renewal test).
 */
async function startServer(name: string, flags: string[] = [], env: Record<string, string> = {}) {
  const dataDir = join(dir.path, name);
  const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0", "--data-dir", dataDir, ...flags], {
    binary,
    cwd: dir.path,
    env: bareEnv(env),
  });
  const { url, log } = await waitForListening(proc);
  const mtlsPort = Number(/mtls=https:\/\/[^:]+:(\d+)/.exec(log())?.[1]);
  expect(mtlsPort).toBeGreaterThan(0);
  const made = await runLatchkey(["user", "create", "ops", "--role", "admin", "--password-stdin", "--data-dir", dataDir], {
    binary,
    cwd: dir.path,
    env: bareEnv(),
    input: `${ADMIN_PASSWORD}\n`,
  });
  expect(made.code).toBe(0);
  const signIn = async () => {
    const login = await call(url, "POST", "/api/auth/login", { body: { username: "ops", password: ADMIN_PASSWORD } });
    expect(login.status).toBe(200);
    return login.body.token as string;
  };
  return {
    url,
    mtlsPort,
    log,
    token: await signIn(),
    /** A new session: after the clock has moved by days, the first one has long expired. */
    signIn,
    async stop() {
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    },
  };
}
type Server = Awaited<ReturnType<typeof startServer>>;

/** One new key and the install command the panel's Copy button gives for it. */
async function keyWithCommand(server: Server): Promise<{ id: number; key: string; command: string[] }> {
  const made = await call(server.url, "POST", "/api/keys", { token: server.token, body: { quantity: 1, label: "e2e batch" } });
  expect(made.status).toBe(201);
  const { id, key } = made.body.items[0] as { id: number; key: string };
  const res = await call(server.url, "GET", `/api/keys/${id}/install-command`, { token: server.token });
  expect(res.status).toBe(200);
  return { id, key, command: (res.body.command as string).split(" ") };
}

/** Runs an install command as printed (its first word is `latchkey`), here without the systemd unit. */
async function install(command: string[], state: string, env: Record<string, string> = {}) {
  expect(command[0]).toBe("latchkey");
  const res = await runLatchkey([...command.slice(1), "--no-service", "--state-dir", state], { binary, cwd: dir.path, env: bareEnv(env) });
  expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
  return res;
}

const agent = (state: string, env: Record<string, string> = {}, ...flags: string[]) =>
  watch(
    spawnLatchkey(["client", "run", "--state-dir", state, "--heartbeat", "1", "--retry-max", "1", "--report-interval", "1", ...flags], {
      binary,
      cwd: dir.path,
      env: bareEnv(env),
    }),
  );

const serialOf = (state: string) => new X509Certificate(readFileSync(join(state, "client.pem"), "utf8")).serialNumber;

describe("the compiled server and agent", () => {
  test("pinned install, TLS registration, CSR, mTLS reports; key revoked: closed in 1 s; reinstall refused until reset", async () => {
    const server = await startServer("journey", ["--require-auth-key"]);
    const state = join(dir.path, "journey-agent");
    try {
      // The install command carries the root's pin and the listener's port, and names no machine.
      const root = await fetch(`${server.url}/api/ca.pem`).then((r) => r.text());
      const pin = new X509Certificate(root).fingerprint256.replaceAll(":", "").toLowerCase();
      const { id, key, command } = await keyWithCommand(server);
      expect(command).toEqual([
        "latchkey",
        "client",
        "install",
        "-server",
        server.url.replace("http://", ""),
        "-ca-fingerprint",
        pin,
        "-mtls-port",
        String(server.mtlsPort),
        "-key",
        key,
      ]);
      await install(command, state);
      expect(statSync(join(state, "client.json")).isFile()).toBe(true);

      const run = agent(state);
      const mtls = `wss://127.0.0.1:${server.mtlsPort}/ws`;
      try {
        // First with the key over TLS to the pinned root, then with the certificate over mutual TLS.
        await run.waitFor(`registered with ${mtls} as ${hostname()} (uuid `);
        await run.waitFor(", client certificate ");
        await run.waitFor("host report accepted");
        const first = new X509Certificate(readFileSync(join(state, "client.pem"), "utf8"));
        expect(first.subject).toBe(`CN=${MACHINE}`);
        expect(first.verify(new X509Certificate(root).publicKey)).toBe(true);
        expect(statSync(join(state, "client.key")).mode & 0o777).toBe(0o600);
        expect(run.text()).not.toContain(key);

        // What the operator sees: the client online, its certificate, the host and its report.
        const clients = await call(server.url, "GET", "/api/clients", { token: server.token });
        const uuid = JSON.parse(readFileSync(join(state, "client.json"), "utf8")).uuid as string;
        expect(clients.body.items).toEqual([expect.objectContaining({ uuid, name: hostname(), online: true, key_id: id })]);
        const certs = await call(server.url, "GET", "/api/certs?kind=client", { token: server.token });
        expect(certs.body.items).toEqual([
          expect.objectContaining({ serial: first.serialNumber.toLowerCase(), client_uuid: uuid, status: "valid", common_name: MACHINE }),
        ]);
        const host = await eventually(
          async () => {
            const res = await call(server.url, "GET", `/api/hosts/${MACHINE}`, { token: server.token });
            return res.status === 200 && res.body.report !== null ? res.body : null;
          },
          { what: "the host's first report" },
        );
        expect(host).toMatchObject({ hostname: MACHINE, online: true });
        expect(host.report.interfaces.length).toBeGreaterThan(0);

        const status = await runLatchkey(["client", "status", "--state-dir", state], { binary, cwd: dir.path, env: bareEnv() });
        expect(status.code).toBe(0);
        expect(status.stdout).toContain(`serial ${first.serialNumber.toUpperCase()}, CN=${MACHINE}`);
        expect(status.stdout).toMatch(/last report:\s+\d{4}-\S+ ok \(200\)/);

        // Revoking the key: the connection is closed within a second, the certificate revoked, the agent stops (exit 3).
        const closedBefore = run.count("the server closed the connection") + run.count(`connection to ${mtls} closed`);
        expect((await call(server.url, "POST", `/api/keys/${id}/revoke`, { token: server.token })).status).toBe(200);
        await eventually(() => run.count("the server closed the connection") + run.count(`connection to ${mtls} closed`) > closedBefore, {
          timeoutMs: 1000,
          what: () => `the agent to be disconnected within a second; output:\n${run.text()}`,
        });
        expect(await run.proc.exited).toBe(3);
        expect(run.text()).toContain("AUTH_FAILED: Invalid or revoked key");
        const after = await call(server.url, "GET", `/api/certs/${first.serialNumber.toLowerCase()}`, { token: server.token });
        expect(after.body).toMatchObject({ status: "revoked", revocation_reason: "privilegeWithdrawn" });
        // The revoked certificate no longer opens the mutual-TLS listener.
        expect(existsSync(join(state, "client.pem"))).toBe(false);
      } finally {
        run.proc.kill("SIGTERM");
        await run.proc.exited;
      }

      // The same install command again: refused (exit 3) until an admin resets the key.
      await install(command, state);
      const refused = agent(state);
      expect(await refused.proc.exited).toBe(3);
      expect(refused.text()).toContain("AUTH_FAILED");
      expect(refused.text()).not.toContain("registered with");

      expect((await call(server.url, "POST", `/api/keys/${id}/reset`, { token: server.token })).status).toBe(200);
      const again = agent(state);
      try {
        await again.waitFor(", client certificate ");
        await again.waitFor("host report accepted");
        const certs = await call(server.url, "GET", "/api/certs?kind=client&status=valid", { token: server.token });
        expect(certs.body.items).toHaveLength(1);
        expect(certs.body.items[0].serial).toBe(serialOf(state).toLowerCase());
      } finally {
        again.proc.kill("SIGTERM");
        expect(await again.proc.exited).toBe(0);
      }
    } finally {
      await server.stop();
    }
  }, 90_000);

  test("an agent pinned to one server's root refuses another server, and sends it no key", async () => {
    const [pinned, other] = await Promise.all([startServer("pinned"), startServer("other", ["--require-auth-key"])]);
    try {
      const { command: pinnedCommand } = await keyWithCommand(pinned);
      const pin = pinnedCommand[pinnedCommand.indexOf("-ca-fingerprint") + 1]!;
      const { key, command } = await keyWithCommand(other);
      // The other server's command, with the first server's pin in place of its own.
      const forged = command.map((word, i) => (command[i - 1] === "-ca-fingerprint" ? pin : word));
      const state = join(dir.path, "pinned-agent");
      await install(forged, state);
      const run = agent(state);
      expect(await run.proc.exited).toBe(3);
      expect(run.text()).toContain(`refusing the server at https://127.0.0.1:${other.mtlsPort}: its root CA has the SHA-256 fingerprint`);
      expect(run.text()).toContain("(-ca-fingerprint); the key was not sent");
      expect(run.text()).not.toContain(key);
      const keys = await call(other.url, "GET", "/api/keys", { token: other.token });
      expect(keys.body.items[0]).toMatchObject({ status: "pending", usage_count: 0 });
      const audit = await call(other.url, "GET", "/api/audit?action=client.register", { token: other.token });
      expect(audit.body.items).toEqual([]);
    } finally {
      await Promise.all([pinned.stop(), other.stop()]);
    }
  }, 60_000);

  test("renewal: both clocks moved by libfaketime; renewed at 2/3 of the lifetime, and after an outage past its end", async () => {
    const library = readdirSync("/usr/lib")
      .map((arch) => join("/usr/lib", arch, "faketime/libfaketime.so.1"))
      .find((path) => existsSync(path));
    if (library === undefined) throw new Error("libfaketime is missing: apt-get install faketime (npm test's pretest does it as root)");
    const offsetFile = join(dir.path, "faketime-offset");
    const setOffset = (days: number) => writeFileSync(offsetFile, `+${days}d\n`);
    setOffset(0);
    // Both processes read the offset from one file, at most a second old; timers keep real time.
    const faked = {
      LD_PRELOAD: library,
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_CACHE_DURATION: "1",
      DONT_FAKE_MONOTONIC: "1",
    };
    const server = await startServer("renewal", ["--require-auth-key"], faked);
    const state = join(dir.path, "renewal-agent");
    try {
      const { command } = await keyWithCommand(server);
      await install(command, state, faked);
      const first = agent(state, faked);
      let renewed: string;
      try {
        await first.waitFor(", client certificate ");
        const original = serialOf(state);
        // 19 days into 30: nothing to do yet.
        setOffset(19);
        await Bun.sleep(2500); // over two report intervals and heartbeats, with the clocks re-read
        expect(serialOf(state)).toBe(original);
        expect(first.text()).not.toContain("2/3 through its lifetime");
        // 21 days: renewed over the mutual-TLS connection it has, then back with the new certificate.
        setOffset(21);
        await first.waitFor("is 2/3 through its lifetime");
        await first.waitFor("stored in", 2);
        renewed = serialOf(state);
        expect(renewed).not.toBe(original);
        await first.waitFor(`, client certificate ${renewed.toUpperCase()})`);
        const old = await call(server.url, "GET", `/api/certs/${original.toLowerCase()}`, { token: await server.signIn() });
        expect(old.body.status).toBe("valid"); // the previous one stays valid: a client keeps its two newest
      } finally {
        first.proc.kill("SIGTERM");
        expect(await first.proc.exited).toBe(0);
      }

      // Off for longer than the new certificate lives (issued at +21 days, for 30): the next start
      // registers with its key over TLS to the pinned root and gets a new certificate by itself.
      setOffset(21 + 31);
      await Bun.sleep(1100);
      const second = agent(state, faked);
      try {
        await second.waitFor(", client certificate ");
        expect(second.text()).toMatch(/cannot be used: it expired at/);
        expect(second.text()).toContain(`registered with wss://127.0.0.1:${server.mtlsPort}/ws as `);
        expect(serialOf(state)).not.toBe(renewed);
        const fresh = new X509Certificate(readFileSync(join(state, "client.pem"), "utf8"));
        expect(fresh.validFromDate.getTime()).toBeGreaterThan(Date.now() + 50 * 86_400_000);
      } finally {
        second.proc.kill("SIGTERM");
        expect(await second.proc.exited).toBe(0);
      }
    } finally {
      await server.stop();
    }
  }, 90_000);
});
