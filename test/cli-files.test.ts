/**
 * Files the command line writes that hold secrets are mode 0600 whatever the umask, and never
 * exist with a wider mode (SPEC §9): the backup (a copy of every secret the server keeps), the
 * users.json export, the client agent's state, and the data directory the server creates (0700).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ADMIN_PASSWORD, BUN, ROOT, call, login, startTestServer, tempDir, waitForListening, type TestServer } from "./support.ts";

const mode = (path: string) => statSync(path).mode & 0o777;

/** Runs `latchkey` from source under the given umask (a shell sets it, then execs). */
function spawnWithUmask(umask: string, args: string[], env: Record<string, string> = {}) {
  return Bun.spawn(["sh", "-c", 'umask "$0" && exec "$@"', umask, BUN, join(ROOT, "src/main.ts"), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

async function runWithUmask(umask: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawnWithUmask(umask, args);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

let server: TestServer;
let admin: string;
let out: ReturnType<typeof tempDir>;
beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  out = tempDir("latchkey-files-");
});
afterAll(async () => {
  await server.close();
  out.remove();
});

describe("latchkey backup", () => {
  test.each(["022", "000"])(
    "with umask %s: the copy is 0600, consistent while the server writes, and no temporary file stays",
    async (umask) => {
      const target = join(out.path, `backup-${umask}.db`);
      const count = async () => (await server.services.storage.sql.get<{ n: number }>("SELECT count(*) AS n FROM enrollment_keys"))!.n;
      const before = await count();
      // The server keeps writing while the copy is taken.
      let writing = true;
      const writer = (async () => {
        while (writing)
          expect(
            (await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 5, label: "during backup" } })).status,
          ).toBe(201);
      })();
      const res = await runWithUmask(umask, ["backup", target, "--data-dir", server.dataDir]);
      writing = false;
      await writer;
      expect(res).toEqual({ code: 0, stdout: `wrote ${target}\n`, stderr: "" });
      expect(mode(target)).toBe(0o600);
      expect(readdirSync(out.path).filter((name) => name.includes(`backup-${umask}`))).toEqual([`backup-${umask}.db`]);

      const copy = new Database(target, { readonly: true });
      try {
        expect(copy.query("PRAGMA integrity_check").all()).toEqual([{ integrity_check: "ok" }]);
        expect(copy.query("PRAGMA foreign_key_check").all()).toEqual([]);
        expect(copy.query("SELECT username FROM users WHERE username = 'admin'").all()).toEqual([{ username: "admin" }]);
        // A snapshot: whole batches of five, between the count before and the count after.
        const copied = (copy.query("SELECT count(*) AS n FROM enrollment_keys").get() as { n: number }).n;
        expect(copied).toBeGreaterThanOrEqual(before);
        expect(copied).toBeLessThanOrEqual(await count());
        expect((copied - before) % 5).toBe(0);
      } finally {
        copy.close();
      }
    },
  );

  test("refuses an existing FILE (left as it was) and a FILE in a missing directory", async () => {
    const existing = join(out.path, "existing.db");
    writeFileSync(existing, "keep me");
    chmodSync(existing, 0o644);
    const again = await runWithUmask("022", ["backup", existing, "--data-dir", server.dataDir]);
    expect(again).toEqual({ code: 2, stdout: "", stderr: `latchkey: ${existing} already exists; choose a new file name\n` });
    expect(mode(existing)).toBe(0o644);
    const missing = join(out.path, "no-such-dir", "backup.db");
    const res = await runWithUmask("022", ["backup", missing, "--data-dir", server.dataDir]);
    expect(res).toEqual({
      code: 2,
      stdout: "",
      stderr: `latchkey: no directory ${join(out.path, "no-such-dir")} to write backup.db in; create it first\n`,
    });
    expect(existsSync(join(out.path, "no-such-dir"))).toBe(false);
  });
});

describe("other files that hold secrets", () => {
  test("user export FILE is 0600 under umask 000, also when it replaces a wider file", async () => {
    const target = join(out.path, "users.json");
    writeFileSync(target, "{}");
    chmodSync(target, 0o644);
    const res = await runWithUmask("000", ["user", "export", target, "--data-dir", server.dataDir]);
    expect(res).toEqual({ code: 0, stdout: "", stderr: `wrote ${target}\n` });
    expect(mode(target)).toBe(0o600);
    expect(readdirSync(out.path).filter((name) => name.includes("users.json"))).toEqual(["users.json"]);
  });

  test("client install under umask 000: state directory 0700, key and settings 0600", async () => {
    const state = join(out.path, "client-state");
    const res = await runWithUmask("000", [
      "client",
      "install",
      "-server",
      "127.0.0.1:9000",
      "-key",
      "ABCD-EFGH-JKMN",
      "--no-service",
      "--state-dir",
      state,
    ]);
    expect(res.code).toBe(0);
    expect(mode(state)).toBe(0o700);
    expect(mode(join(state, "auth_key"))).toBe(0o600);
    expect(mode(join(state, "client.json"))).toBe(0o600);
  });

  test("a first server start under umask 022 creates the data directory 0700 and the database files 0600", async () => {
    const dataDir = join(out.path, "fresh", "data");
    const proc = spawnWithUmask("022", ["server", "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0", "--data-dir", dataDir], {
      LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD,
    });
    try {
      await waitForListening(proc);
      expect(mode(dataDir)).toBe(0o700);
      const files = readdirSync(dataDir);
      expect(files).toContain("latchkey.db");
      for (const name of files) expect([name, mode(join(dataDir, name))]).toEqual([name, 0o600]);
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
    }
  });
});
