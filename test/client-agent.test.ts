/**
 * The client agent end to end: `latchkey client install/run/status/uninstall` as real processes
 * against a real server, over real sockets, with temp state and unit directories.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { authHint, registerErrorOutcome } from "../src/client/agent.ts";
import { resolveStateDir, stateDirFlag } from "../src/client/config.ts";
import { KEY_IN_USE_WINDOW_MS } from "../src/core/enrollment/index.ts";
import {
  ADMIN_PASSWORD,
  BUN,
  ROOT,
  call,
  eventually,
  login,
  runLatchkey,
  spawnLatchkey,
  startTestServer,
  tempDir,
  waitForListening,
  type TestServer,
} from "./support.ts";

type Proc = {
  stdout: ReadableStream<Uint8Array>;
  stderr: ReadableStream<Uint8Array>;
  exited: Promise<number>;
  kill(signal?: string | number): void;
};

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
    async waitFor(needle: string | RegExp, timeoutMs = 10_000, times = 1): Promise<void> {
      const seen = () => (typeof needle === "string" ? out.split(needle).length - 1 >= times : needle.test(out));
      await eventually(seen, { timeoutMs, what: () => `${needle} in the output; output so far:\n${out}` });
    },
  };
}

const client = (args: string[]) => runLatchkey(["client", ...args]);
const agent = (stateDir: string, ...flags: string[]) =>
  watch(spawnLatchkey(["client", "run", "--state-dir", stateDir, "--retry-max", "1", ...flags]));

async function onlineUuids(baseUrl: string, token: string): Promise<string[]> {
  const res = await call(baseUrl, "GET", "/api/clients?status=online", { token });
  expect(res.status).toBe(200);
  return (res.body.items as { uuid: string }[]).map((c) => c.uuid);
}

async function waitOnline(baseUrl: string, token: string, uuid: string, online = true): Promise<void> {
  await eventually(async () => (await onlineUuids(baseUrl, token)).includes(uuid) === online, {
    what: `client ${uuid} to be ${online ? "online" : "offline"}`,
  });
}

/** Words quoted for a POSIX shell where they need it, as the install and status hints print them. */
function shell(words: string[]): string {
  return words.map((w) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`)).join(" ");
}

function uuidOf(stateDir: string): string {
  return JSON.parse(readFileSync(join(stateDir, "client.json"), "utf8")).uuid;
}

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir("latchkey-client-");
});
afterAll(() => dir?.remove());

describe("install, status, uninstall", () => {
  test("saves config, a 0600 key and a stable UUID; writes the unit exactly; reinstall replaces the key", async () => {
    const state = join(dir.path, "install-state");
    const units = join(dir.path, "units");
    const first = await client([
      "install",
      "-server",
      "example.com:9000",
      "-name",
      "My-Server",
      "-key",
      "ABCD-EFGH-JKMN",
      "--state-dir",
      state,
      "--unit-dir",
      units,
    ]);
    expect(first.code).toBe(0);
    const config = JSON.parse(readFileSync(join(state, "client.json"), "utf8"));
    expect(config).toEqual({
      server: "example.com:9000",
      name: "My-Server",
      uuid: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
    });
    expect(readFileSync(join(state, "auth_key"), "utf8")).toBe("ABCD-EFGH-JKMN\n");
    expect(statSync(join(state, "auth_key")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(units, "latchkey-client.service"), "utf8")).toBe(`[Unit]
Description=latchkey client agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=${BUN} ${join(ROOT, "src/main.ts")} client run --state-dir ${state}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=3

[Install]
WantedBy=multi-user.target
`);

    // The woho remedy: install again with a new key. The UUID (the machine's identity) stays.
    const again = await client([
      "install",
      "--server=example.com:9000",
      "-key",
      "PQRS-TUVW-XYZ2",
      "--state-dir",
      state,
      "--unit-dir",
      units,
    ]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`uuid ${config.uuid}, kept`);
    expect(JSON.parse(readFileSync(join(state, "client.json"), "utf8"))).toEqual({ ...config, name: "My-Server" });
    expect(readFileSync(join(state, "auth_key"), "utf8")).toBe("PQRS-TUVW-XYZ2\n");
    expect(statSync(join(state, "auth_key")).mode & 0o777).toBe(0o600);

    const status = await client(["status", "--state-dir", state, "--unit-dir", units]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain("example.com:9000 (ws://example.com:9000/ws)");
    expect(status.stdout).toContain(config.uuid);
    expect(status.stdout).toContain("PQRS-••••-••••");
    expect(status.stdout).not.toContain("TUVW");
    expect(status.stdout).toMatch(/last contact:\s+never/);
    expect(status.stdout).toContain(`installed (${join(units, "latchkey-client.service")})`);

    const uninstalled = await client(["uninstall", "--state-dir", state, "--unit-dir", units]);
    expect(uninstalled.code).toBe(0);
    expect(existsSync(join(units, "latchkey-client.service"))).toBe(false);
    expect(uuidOf(state)).toBe(config.uuid);

    const purged = await client(["uninstall", "--purge", "--state-dir", state, "--unit-dir", units]);
    expect(purged.code).toBe(0);
    expect(existsSync(join(state, "client.json"))).toBe(false);
    expect(existsSync(join(state, "auth_key"))).toBe(false);
    const gone = await client(["status", "--state-dir", state, "--unit-dir", units]);
    expect(gone.code).toBe(1);
    expect(gone.stdout).toContain("not installed");
  });

  test("--no-service writes no unit; the state dir also comes from LATCHKEY_CLIENT_DIR; bad input says what to do", async () => {
    const state = join(dir.path, "env-state");
    const units = join(dir.path, "no-units");
    const res = await runLatchkey(["client", "install", "-server", "127.0.0.1:9000", "--no-service", "--unit-dir", units], {
      env: { LATCHKEY_CLIENT_DIR: state },
    });
    expect(res.code).toBe(0);
    expect(existsSync(join(units, "latchkey-client.service"))).toBe(false);
    expect(existsSync(join(state, "auth_key"))).toBe(false);
    expect(JSON.parse(readFileSync(join(state, "client.json"), "utf8")).server).toBe("127.0.0.1:9000");

    const noServer = await client(["install", "--state-dir", state]);
    expect(noServer.code).toBe(2);
    expect(noServer.stderr).toContain("latchkey client install -server HOST:PORT");
    const badServer = await client(["install", "-server", "not a server", "--state-dir", state]);
    expect(badServer.code).toBe(2);
    expect(badServer.stderr).toContain("must be HOST:PORT");
    const help = await client(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("latchkey client install -server HOST:PORT");
  });

  test("the next steps printed by install and status carry --state-dir, quoted for the shell; none for the default", async () => {
    const state = join(dir.path, "state with 'quotes' and spaces");
    const units = join(dir.path, "hint-units");
    const self = shell([BUN, join(ROOT, "src/main.ts")]);
    const fresh = await client(["status", "--state-dir", state]);
    expect(fresh.code).toBe(1);
    expect(fresh.stdout).toContain(`not installed (run ${self} client install -server HOST:PORT --state-dir ${shell([state])})`);
    const res = await client(["install", "-server", "example.com:9000", "--state-dir", state, "--unit-dir", units]);
    expect(res.code).toBe(0);
    expect(res.stdout.trimEnd().split("\n").at(-1)).toBe(
      `systemd unit written to ${join(units, "latchkey-client.service")}, not enabled (${units} is not /etc/systemd/system); ` +
        `start the agent with: ${self} client run --state-dir ${shell([state])}`,
    );
    // The default state directory needs no flag; one named by LATCHKEY_CLIENT_DIR does, as another shell may not have it.
    const env = { HOME: join(dir.path, "home") };
    expect(stateDirFlag(resolveStateDir(undefined, env), env)).toEqual([]);
    expect(
      stateDirFlag(resolveStateDir(undefined, { ...env, LATCHKEY_CLIENT_DIR: state }), { ...env, LATCHKEY_CLIENT_DIR: state }),
    ).toEqual(["--state-dir", state]);
  });
});

describe("run against a server process", () => {
  test("registers, enrolls, heartbeats outlast --ws-idle over mTLS, and it comes back by itself after a server restart", async () => {
    const data = join(dir.path, "server-data");
    const env = { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD };
    let server = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", data, "--ws-idle", "5"], { env });
    const state = join(dir.path, "run-state");
    let running: ReturnType<typeof agent> | undefined;
    try {
      const { url, log } = await waitForListening(server);
      const port = new URL(url).port;
      const mtlsPort = /mtls=https:\/\/[^\s]+:(\d+)/.exec(log())![1]!;
      expect(
        (
          await client([
            "install",
            "-server",
            `127.0.0.1:${port}`,
            "-mtls-port",
            mtlsPort,
            "-name",
            "runner",
            "--no-service",
            "--state-dir",
            state,
          ])
        ).code,
      ).toBe(0);
      const uuid = uuidOf(state);
      running = agent(state, "--heartbeat", "2");
      // Registered over the plain port with no certificate, then again over mTLS with the one it got.
      await running.waitFor(`registered with wss://127.0.0.1:${mtlsPort}/ws as runner`);
      expect(running.text()).toMatch(/registered with ws:\/\/127\.0\.0\.1:\d+\/ws as runner[^\n]*\n[^\n]*no certificate yet/);
      let token = await login(url);
      await waitOnline(url, token, uuid);
      expect(readFileSync(join(state, "last_contact"), "utf8")).toMatch(/^\d{4}-\d{2}-\d{2}T\S+ wss:\S+ \(client certificate\)\n$/);

      // Past the server's 5 s idle limit: heartbeats kept the same connection open. The wait is what
      // is tested (real time in two other processes: no clock to move), not a synchronisation.
      const registrations = running.count("registered with");
      await Bun.sleep(6500);
      expect(running.count("registered with")).toBe(registrations);
      expect(running.text()).not.toContain("closed");
      expect(await onlineUuids(url, token)).toContain(uuid);

      server.kill("SIGTERM");
      await server.exited;
      await running.waitFor(/connection to wss:\S+ closed/);
      server = spawnLatchkey(
        ["server", "--listen", `127.0.0.1:${port}`, "--mtls-listen", `127.0.0.1:${mtlsPort}`, "--data-dir", data, "--ws-idle", "5"],
        { env },
      );
      await waitForListening(server);
      await running.waitFor(`registered with wss://127.0.0.1:${mtlsPort}/ws as runner`, 15_000, 2);
      token = await login(url);
      await waitOnline(url, token, uuid);
      const status = await client(["status", "--state-dir", state]);
      expect(status.stdout).toMatch(/last contact:\s+\d{4}-/);
      expect(running.text()).toMatch(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z latchkey client: registered with ws:\/\/127\.0\.0\.1:\d+\/ws as runner/m);
    } finally {
      running?.proc.kill("SIGTERM");
      server.kill("SIGTERM");
      await Promise.all([running?.proc.exited, server.exited]);
    }
  }, 30_000);
});

describe("pre-shared keys (require_auth_key on)", () => {
  let server: TestServer;
  let token: string;
  /** The server's clock runs with real time plus this, to age a binding past the "in use" window. */
  let skew = 0;
  beforeAll(async () => {
    server = await startTestServer({ flags: ["--require-auth-key"], clock: () => Date.now() + skew });
    token = await login(server.url);
  });
  afterAll(() => server?.close());

  const address = () => server.url.replace(/^http:\/\//, "");
  async function generateKey(): Promise<{ id: number; key: string }> {
    const res = await call(server.url, "POST", "/api/keys", { token, body: { quantity: 1, label: "agent test" } });
    expect(res.status).toBe(201);
    return res.body.items[0];
  }
  async function installed(name: string, key?: string): Promise<string> {
    const state = join(dir.path, name);
    const res = await client([
      "install",
      "-server",
      address(),
      "-mtls-port",
      String(server.mtlsPort),
      "-name",
      name,
      "--no-service",
      "--state-dir",
      state,
      ...(key ? ["-key", key] : []),
    ]);
    expect(res.code).toBe(0);
    return state;
  }
  /** Runs the agent inside a real pseudo-terminal (util-linux script), its stdin being the keyboard. */
  function inTerminal(state: string) {
    const command = [BUN, join(ROOT, "src/main.ts"), "client", "run", "--state-dir", state].map((w) => `'${w}'`).join(" ");
    const proc = Bun.spawn(["script", "-qfec", command, "/dev/null"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", TERM: "dumb" },
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    return { ...watch(proc), type: (s: string) => void proc.stdin.write(s) };
  }

  test("install --no-service prints a start command that works when pasted into a shell", async () => {
    const { key } = await generateKey();
    const state = join(dir.path, "pasted state's dir");
    const res = await client(["install", "-server", address(), "-name", "pasted", "-key", key, "--no-service", "--state-dir", state]);
    expect(res.code).toBe(0);
    const last = res.stdout.trimEnd().split("\n").at(-1)!;
    const prefix = "no systemd unit (--no-service); start the agent with: ";
    expect(last).toStartWith(prefix);
    const run = watch(
      Bun.spawn(["sh", "-c", `exec ${last.slice(prefix.length)}`], {
        cwd: dir.path,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: join(dir.path, "elsewhere") },
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
    try {
      await run.waitFor("registered with");
      expect(run.text()).toContain(" as pasted (uuid ");
    } finally {
      run.proc.kill("SIGTERM");
      await run.proc.exited;
    }
  });

  test("no key and no terminal: exits non-zero with the reinstall-with-key remedy", async () => {
    const state = await installed("no-key");
    const run = agent(state);
    expect(await run.proc.exited).toBe(3);
    expect(run.text()).toContain("AUTH_REQUIRED");
    // The remedy is runnable as printed: this program, with the state directory it was given.
    expect(run.text()).toContain(
      `reinstall with -key: ${BUN} ${join(ROOT, "src/main.ts")} ` +
        `client install -server ${address()} -key XXXX-XXXX-XXXX --state-dir ${state}`,
    );
    expect(existsSync(join(state, "auth_key"))).toBe(false);
  });

  test("no key on a terminal: prompts, and the typed key registers and is saved 0600", async () => {
    const { key } = await generateKey();
    const state = await installed("prompted");
    const tty = inTerminal(state);
    try {
      await tty.waitFor("Enter the authentication key (empty to exit): ");
      tty.type(`${key}\r`);
      await tty.waitFor("registered with");
      expect(tty.text()).toContain("key bound to this client");
      expect(readFileSync(join(state, "auth_key"), "utf8")).toBe(`${key}\n`);
      expect(statSync(join(state, "auth_key")).mode & 0o777).toBe(0o600);
      await waitOnline(server.url, token, uuidOf(state));
    } finally {
      tty.proc.kill("SIGTERM");
      await tty.proc.exited;
    }
    await waitOnline(server.url, token, uuidOf(state), false);

    // The same key on another machine (another UUID), 10 s or more after the binding: bound
    // elsewhere, with the Reset hint.
    skew += KEY_IN_USE_WINDOW_MS;
    const other = await installed("other-machine", key);
    const run = agent(other);
    expect(await run.proc.exited).toBe(3);
    expect(run.text()).toContain("AUTH_FAILED: Key already bound to a different client");
    expect(run.text()).toContain("ask the admin to Reset the key in the panel");
  });

  test(
    "two machines started with one pending key: " + "one registers, the other stops with Key already in use and the separate-key hint",
    async () => {
      const { id, key } = await generateKey();
      const states = [await installed("twin-1", key), await installed("twin-2", key)];
      const runs = states.map((state) => agent(state));
      try {
        const first = await Promise.race(runs.map((run, i) => run.proc.exited.then((code) => ({ i, code }))));
        expect(first.code).toBe(3);
        const [loser, winner] = [runs[first.i]!, runs[1 - first.i]!];
        await loser.waitFor("AUTH_FAILED: Key already in use");
        expect(loser.text()).toContain(
          "AUTH_FAILED: Key already in use: another machine claimed this pending key at the same moment: " +
            "generate a separate key per machine",
        );
        expect(loser.text()).not.toContain("Reset the key");
        // The winner registers with the key, then again over mTLS by the certificate it got: two uses of the key.
        await winner.waitFor("client certificate ");
        expect(loser.count("registered with")).toBe(0);
        const bound = await call(server.url, "GET", `/api/keys/${id}`, { token });
        expect(bound.body).toMatchObject({ status: "active", client_uuid: uuidOf(states[1 - first.i]!), usage_count: 2 });
      } finally {
        for (const run of runs) run.proc.kill("SIGTERM");
        await Promise.all(runs.map((run) => run.proc.exited));
      }
    },
    30_000,
  );

  test("on a terminal: a refused key is explained and asked for again; an empty line exits non-zero", async () => {
    const state = await installed("prompted-empty");
    const tty = inTerminal(state);
    await tty.waitFor("Enter the authentication key (empty to exit): ");
    tty.type("ABCD-EFGH-JKMN\r");
    await tty.waitFor("AUTH_FAILED: Invalid or revoked key: the key was revoked or deleted");
    await tty.waitFor("Enter the authentication key (empty to exit): ", 10_000, 2);
    tty.type("\r");
    expect(await tty.proc.exited).toBe(3);
    expect(tty.text()).toContain("no key entered");
    expect(readFileSync(join(state, "auth_key"), "utf8")).toBe("ABCD-EFGH-JKMN\n");
  });

  test("an unknown key: AUTH_FAILED with the generate-a-new-key hint", async () => {
    const state = await installed("unknown-key", "ABCD-EFGH-JKMN");
    const run = agent(state);
    expect(await run.proc.exited).toBe(3);
    expect(run.text()).toContain("AUTH_FAILED: Invalid or revoked key: the key was revoked or deleted");
    expect(run.text()).toContain("reinstall with -key");
  });

  test("a clone is refused while the original is online; revoking the key disconnects the agent, which stops with the hint", async () => {
    const { id, key } = await generateKey();
    const state = await installed("revoked", key);
    const run = agent(state, "--heartbeat", "1");
    const clone = join(dir.path, "revoked-clone");
    // The copy (certificate included) starts once the original is online over mTLS, so that it is the copy that is refused.
    await run.waitFor("client certificate ");
    cpSync(state, clone, { recursive: true });
    const registrations = run.count("registered with");
    const copy = agent(clone);
    try {
      await copy.waitFor("AUTH_FAILED: Client already connected");
      expect(copy.text()).toContain("a cloned machine or a copied state directory");
    } finally {
      copy.proc.kill("SIGTERM");
      await copy.proc.exited;
    }
    expect(run.count("registered with")).toBe(registrations);

    // Revoking the key revokes the certificate with it: the agent falls back to the key, which is refused.
    const revoked = await call(server.url, "POST", `/api/keys/${id}/revoke`, { token });
    expect(revoked.status).toBe(200);
    expect(await run.proc.exited).toBe(3);
    expect(run.text()).toContain("the server does not admit this machine by its certificate");
    expect(run.text()).toContain("AUTH_FAILED: Invalid or revoked key: the key was revoked or deleted");
    expect(run.text()).toContain("generate a new key in the admin panel and reinstall with -key");
  }, 30_000);

  test("every refusal reason has its woho hint", () => {
    const config = { server: "s:9000", name: "n", uuid: "00000000-0000-4000-8000-000000000000" };
    expect(authHint("auth_required", config)).toContain("reinstall with -key");
    expect(authHint("key_in_use", config)).toContain("generate a separate key per machine");
    expect(authHint("bound_elsewhere", config)).toContain("Reset the key in the panel");
    expect(authHint("invalid_key", config)).toContain("generate a new key");
    expect(authHint("already_connected", config)).toContain(config.uuid);
    expect(authHint("a_reason_from_a_newer_server", config)).toBe("the server refused the registration; its audit log has the details");
  });
});

describe("what the agent does about a refused registration", () => {
  const config = { server: "s:9000", name: "n", uuid: "00000000-0000-4000-8000-000000000000" };
  const refused = (reason: string | undefined, message: string) =>
    registerErrorOutcome({ code: 403, message, ...(reason === undefined ? {} : { reason: reason as never }) }, false, config);

  test("it goes by the reason, whatever the message says", () => {
    expect(refused("auth_required", "Bitte einen Schlüssel angeben")).toEqual({
      kind: "auth_required",
      message: "Bitte einen Schlüssel angeben",
    });
    expect(refused("key_in_use", "AUTH_FAILED: Invalid or revoked key")).toEqual({
      kind: "auth_failed",
      reason: "key_in_use",
      message: "AUTH_FAILED: Invalid or revoked key",
    });
    expect(refused("bound_elsewhere", "reworded")).toMatchObject({ kind: "auth_failed", reason: "bound_elsewhere" });
    expect(refused("invalid_key", "reworded")).toMatchObject({ kind: "auth_failed", reason: "invalid_key" });
    // A clone may be this machine's own previous connection: retried, with the clone hint.
    const clone = refused("already_connected", "reworded");
    expect(clone).toMatchObject({ kind: "retry", registered: false });
    expect(clone.kind === "retry" && clone.message).toContain(config.uuid);
    // A reason this agent does not know still needs an operator, with the general hint.
    expect(refused("key_expired", "AUTH_FAILED: Key expired")).toEqual({
      kind: "auth_failed",
      reason: "key_expired",
      message: "AUTH_FAILED: Key expired",
    });
  });

  test("without a reason, only a seed message matched whole counts (a server from before the field)", () => {
    expect(refused(undefined, "AUTH_REQUIRED")).toMatchObject({ kind: "auth_required" });
    expect(refused(undefined, "AUTH_FAILED: Key already in use")).toMatchObject({ kind: "auth_failed", reason: "key_in_use" });
    // No prefix matching: anything else is an error to retry after.
    expect(refused(undefined, "AUTH_FAILED: Key already in use, or something")).toMatchObject({
      kind: "retry",
      message: "client/register failed: AUTH_FAILED: Key already in use, or something",
    });
    expect(registerErrorOutcome({ code: 429, message: "slow down", retry_after: 7 }, true, config)).toEqual({
      kind: "retry",
      registered: true,
      message: "client/register failed: slow down",
      retryAfterSeconds: 7,
    });
  });
});
