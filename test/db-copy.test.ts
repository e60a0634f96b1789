/**
 * `latchkey db copy`: a SQLite deployment with something in every table moves into an empty
 * PostgreSQL database, and a server started on it carries on where the SQLite one stopped (same
 * accounts, keys, licenses and activations, same CA and receipt signing key); a non-empty target
 * and bad flags are refused with a clear error.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { startPostgres, type PostgresCluster } from "./postgres.ts";
import { ADMIN_PASSWORD, call, createUser, login, RpcClient, runLatchkey, spawnLatchkey, tempDir, waitForListening } from "./support.ts";

setDefaultTimeout(120_000);

let cluster: PostgresCluster;
const data = tempDir("latchkey-copy-");

beforeAll(async () => {
  cluster = await startPostgres();
});

afterAll(async () => {
  await cluster?.stop();
  data.remove();
});

async function createDatabase(name: string): Promise<string> {
  const admin = new Bun.SQL(cluster.url, { max: 1 });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.close();
  }
  return cluster.url.replace(/\/postgres$/, `/${name}`);
}

/** A server process on `storage` flags; stopped by the caller. */
async function serve(storage: string[]) {
  const proc = spawnLatchkey(["server", ...storage, "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0"], {
    env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD },
  });
  const { url } = await waitForListening(proc);
  return { url, proc };
}

describe("latchkey db copy", () => {
  test("moves every table of a SQLite deployment into an empty PostgreSQL database; a server on it carries on", async () => {
    // A SQLite deployment with accounts, keys, a client, licenses, activations, certificates and audit.
    const sqlite = await serve(["--data-dir", data.path]);
    let before: unknown;
    let licenseToken: string;
    let enrollmentKey: string;
    try {
      const admin = await login(sqlite.url);
      await createUser(sqlite.url, admin, { username: "vera", password: "viewer password", role: "viewer", allowed_groups: ["lab"] });
      const app = (await call(sqlite.url, "POST", "/api/apps", { token: admin, body: { name: "Moved" } })).body;
      const license = (await call(sqlite.url, "POST", "/api/licenses", { token: admin, body: { app_id: app.id, activations: 2 } })).body;
      licenseToken = license.token;
      expect((await call(sqlite.url, "POST", "/api/activate", { body: { token: licenseToken, hwid: "hw-1" } })).status).toBe(201);
      const keys = (await call(sqlite.url, "POST", "/api/keys", { token: admin, body: { quantity: 2, label: "batch", group: "lab" } }))
        .body;
      enrollmentKey = keys.items?.[0]?.key ?? keys[0].key;
      expect((await call(sqlite.url, "PATCH", "/api/settings", { token: admin, body: { require_auth_key: true } })).status).toBe(200);
      const client = await RpcClient.connect(sqlite.url.replace(/^http/, "ws") + "/ws");
      const registered = await client.request("client", "register", {
        uuid: "11111111-2222-4333-8444-555555555555",
        name: "moved-01",
        hostname: "moved-01.example",
        auth_key: enrollmentKey,
      });
      expect(registered.name).toBe("response");
      client.close();
      expect((await call(sqlite.url, "POST", "/api/hosts", { token: admin, body: { hostname: "web-01.example" } })).status).toBe(201);
      before = {
        ca: (await call(sqlite.url, "GET", "/api/ca.pem")).text,
        users: (await call(sqlite.url, "GET", "/api/users", { token: admin })).body.items.map((u: { username: string }) => u.username),
        keys: (await call(sqlite.url, "GET", "/api/keys", { token: admin })).body.items.map((k: { key: string; status: string }) => [
          k.key,
          k.status,
        ]),
        license: (await call(sqlite.url, "GET", `/api/licenses/${license.id}`, { token: admin })).body.activations_used,
        hosts: (await call(sqlite.url, "GET", "/api/hosts", { token: admin })).body.items.map((h: { hostname: string }) => h.hostname),
      };
    } finally {
      sqlite.proc.kill();
      await sqlite.proc.exited;
    }

    const url = await createDatabase("copied");
    const copied = await runLatchkey(["db", "copy", "--data-dir", data.path, "--to", url]);
    expect(copied.code).toBe(0);
    expect(copied.stdout).toContain("start the nodes with --database");
    // Every table arrived whole: the counts the command printed are the source's.
    const source = new Database(join(data.path, "latchkey.db"), { readonly: true });
    const tables = source
      .query<{ name: string }, []>(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '_migrations'",
      )
      .all()
      .map((t) => t.name);
    const target = new Bun.SQL(url, { max: 1, bigint: true });
    try {
      for (const table of tables) {
        const [{ n }] = await target.unsafe(`SELECT count(*) AS n FROM "${table}"`);
        const expected = (source.query(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n;
        expect({ table, rows: Number(n) }).toEqual({ table, rows: expected });
        expect(copied.stdout).toMatch(new RegExp(`^${table}\\s+${expected}$`, "m"));
      }
      expect(tables.length).toBeGreaterThan(15);
    } finally {
      await target.close();
      source.close();
    }

    // A server on PostgreSQL: the same CA, accounts, keys, license state; the client key still bound.
    const pg = await serve(["--database", url, "--data-dir", tempDir("latchkey-copy-node-").path]);
    try {
      const admin = await login(pg.url);
      expect(await login(pg.url, "vera", "viewer password")).toBeString();
      expect<unknown>({
        ca: (await call(pg.url, "GET", "/api/ca.pem")).text,
        users: (await call(pg.url, "GET", "/api/users", { token: admin })).body.items.map((u: { username: string }) => u.username),
        keys: (await call(pg.url, "GET", "/api/keys", { token: admin })).body.items.map((k: { key: string; status: string }) => [
          k.key,
          k.status,
        ]),
        license: (await call(pg.url, "GET", "/api/licenses", { token: admin })).body.items[0].activations_used,
        hosts: (await call(pg.url, "GET", "/api/hosts", { token: admin })).body.items.map((h: { hostname: string }) => h.hostname),
      }).toEqual(before);
      // The activation is there (a check passes) and new rows get new ids after the copied ones.
      expect((await call(pg.url, "GET", `/api/check?token=${licenseToken!}&hwid=hw-1`)).status).toBe(201);
      const app = await call(pg.url, "POST", "/api/apps", { token: admin, body: { name: "After the move" } });
      expect(app.status).toBe(201);
      expect(app.body.id).toBeGreaterThan(1);
      // The setting came along, and the key bound on SQLite stays bound to its client.
      expect((await call(pg.url, "GET", "/api/settings", { token: admin })).body).toEqual({ require_auth_key: true });
      const other = await RpcClient.connect(pg.url.replace(/^http/, "ws") + "/ws");
      const refused = await other.request("client", "register", {
        uuid: "99999999-2222-4333-8444-555555555555",
        name: "thief",
        hostname: "thief.example",
        auth_key: enrollmentKey!,
      });
      // Within ten seconds of its binding the key is "in use", later "bound to a different client".
      expect(JSON.stringify(refused)).toMatch(/AUTH_FAILED: Key already (in use|bound to a different client)/);
      other.close();
    } finally {
      pg.proc.kill();
      await pg.proc.exited;
    }

    // Again into the now non-empty database: refused, nothing changed.
    const again = await runLatchkey(["db", "copy", "--data-dir", data.path, "--to", url]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not empty \(table \w+ has rows\); copy into an empty database/);
  });

  test("bad flags: a usage error that says what to give", async () => {
    const noTo = await runLatchkey(["db", "copy", "--data-dir", data.path]);
    expect(noTo).toMatchObject({ code: 2 });
    expect(noTo.stderr).toContain("db copy needs --to postgres://");
    const notPostgres = await runLatchkey(["db", "copy", "--data-dir", data.path, "--to", "mysql://x@y/z"]);
    expect(notPostgres.code).toBe(2);
    expect(notPostgres.stderr).toContain("--to must be a PostgreSQL URL");
    const unknown = await runLatchkey(["db", "move"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown db command "move"');
    const missing = await runLatchkey(["db", "copy", "--data-dir", join(data.path, "nowhere"), "--to", "postgres://u@127.0.0.1:1/x"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no latchkey database in");
    const unreachable = await runLatchkey(["db", "copy", "--data-dir", data.path, "--to", "postgres://u:secret@127.0.0.1:1/x"]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain("cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/x");
    expect(unreachable.stderr).toContain("check the URL, that the server runs");
    expect(unreachable.stderr).not.toContain("secret");
    // The admin commands and the server say the same of an unreachable database, without its password.
    const listing = await runLatchkey(["user", "list", "--database", "postgres://u:secret@127.0.0.1:1/x"]);
    expect(listing.code).toBe(1);
    expect(listing.stderr).toContain("cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/x");
    expect(listing.stderr).not.toContain("secret");
    // backup is for SQLite; with PostgreSQL it points to pg_dump.
    const backup = await runLatchkey(["backup", join(data.path, "copy.db"), "--database", "postgres://u@127.0.0.1:1/x"]);
    expect(backup.code).toBe(2);
    expect(backup.stderr).toContain("with PostgreSQL use pg_dump");
  });
});
