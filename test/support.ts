/**
 * Shared test support: a real server on a free port over a temp data directory, in-process
 * (with an injectable clock) or as a separate process (source or compiled binary).
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { silentLogger } from "../src/log.ts";
import { startServer, type RunningServer } from "../src/server.ts";
import { freshDatabase } from "./postgres.ts";
import { Database } from "bun:sqlite";
import { DATABASE_FILE } from "../src/db/open.ts";
import { PostgresSql, SqliteSql, type Param, type Sql } from "../src/db/sql.ts";

export const ROOT = join(import.meta.dir, "..");
export const BUN = process.execPath;
export const ADMIN_PASSWORD = "correct horse battery";

/**
 * Settings every server a test starts gets unless the test says otherwise: its mutual-TLS
 * listener on a free loopback port, so that servers running at once never fight over 9443.
 */
export const TEST_ENV: Record<string, string> = { LATCHKEY_MTLS_LISTEN: "127.0.0.1:0" };

/**
 * The backend test servers use: SQLite in their temp data directory, or with
 * LATCHKEY_TEST_BACKEND=postgres a fresh database each in one throwaway PostgreSQL cluster
 * (`npm test` runs the storage tests both ways).
 */
export const TEST_BACKEND: "sqlite" | "postgres" = process.env.LATCHKEY_TEST_BACKEND === "postgres" ? "postgres" : "sqlite";

/**
 * A connection of its own to a test server's database, as another process (the admin CLI, another
 * node) would have: the SQLite file, or the PostgreSQL database (whose writes the server hears of
 * through its change feed). Runs each statement as it comes; close it when done.
 */
export async function anotherConnection(server: TestServer): Promise<Sql & { close(): Promise<void> }> {
  const url = server.storageArgs[server.storageArgs.indexOf("--database") + 1];
  if (server.storageArgs.includes("--database") && url !== undefined) {
    const client = new Bun.SQL(url, { bigint: true, max: 2, connection: { application_name: "latchkey-test-other" } });
    return Object.assign(new PostgresSql(client), { close: () => client.close() });
  }
  return Object.assign(new OtherSqlite(join(server.dataDir, DATABASE_FILE)), { close: async () => undefined });
}

/**
 * Everything a test server keeps at rest: the files of its data directory (the database, its WAL,
 * anything else) and, on PostgreSQL, every row of every table (as JSON text, bytea as hex).
 * `includes` searches both. The files are read by another process: opening and closing the
 * database's files in this one would drop the server's SQLite locks (POSIX advisory locks belong
 * to the process).
 */
export async function storedData(server: TestServer): Promise<{ includes(what: Uint8Array | string): boolean }> {
  const files = readdirSync(server.dataDir, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
  const read = Bun.spawnSync(["cat", ...files.map((entry) => join(entry.parentPath, entry.name))], { stdout: "pipe" });
  if (read.exitCode !== 0) throw new Error(`reading ${server.dataDir} failed`);
  const bytes = read.stdout;
  let rows = "";
  if (TEST_BACKEND === "postgres") {
    const db = await anotherConnection(server);
    try {
      const tables = await db.all<{ name: string }>(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()",
      );
      for (const { name } of tables)
        rows += (await db.all<{ j: string }>(`SELECT row_to_json(t)::text AS j FROM "${name}" t`)).map((r) => r.j).join("\n");
    } finally {
      await db.close();
    }
  }
  return {
    includes: (what) =>
      typeof what === "string"
        ? bytes.includes(what) || rows.includes(what)
        : bytes.includes(what) || rows.includes(Buffer.from(what).toString("hex")),
  };
}

/**
 * Another process's view of a SQLite file: a connection per statement (or per transaction), since
 * one kept open between statements can hold a read snapshot that its next write then trips over.
 */
class OtherSqlite implements Sql {
  readonly dialect = "sqlite";
  private inTransaction: SqliteSql | null = null;

  constructor(private readonly path: string) {}

  private open(): Database {
    const db = new Database(this.path, { strict: true });
    db.run("PRAGMA busy_timeout = 5000");
    db.run("PRAGMA foreign_keys = ON");
    return db;
  }

  private async each<T>(fn: (sql: SqliteSql) => Promise<T>): Promise<T> {
    if (this.inTransaction !== null) return fn(this.inTransaction);
    const db = this.open();
    try {
      return await fn(new SqliteSql(db));
    } finally {
      db.close();
    }
  }

  get<T>(text: string, params?: readonly Param[]): Promise<T | null> {
    return this.each((sql) => sql.get<T>(text, params));
  }

  all<T>(text: string, params?: readonly Param[]): Promise<T[]> {
    return this.each((sql) => sql.all<T>(text, params));
  }

  run(text: string, params?: readonly Param[]): Promise<number> {
    return this.each((sql) => sql.run(text, params));
  }

  /** Commits through this view are durable (SQLite): nothing waits. */
  async flush(): Promise<void> {}

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    const db = this.open();
    const sql = new SqliteSql(db);
    this.inTransaction = sql;
    try {
      return await sql.transaction(fn);
    } finally {
      this.inTransaction = null;
      db.close();
    }
  }
}

/** `["--database", URL]` of a fresh PostgreSQL database when testing on PostgreSQL, else nothing. */
export async function databaseFlags(): Promise<string[]> {
  return TEST_BACKEND === "postgres" ? ["--database", await freshDatabase()] : [];
}

export function tempDir(prefix = "latchkey-test-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A clock tests can move. */
export function manualClock(start = Date.parse("2026-01-01T00:00:00Z")) {
  let now = start;
  const clock = () => now;
  clock.advance = (ms: number) => void (now += ms);
  clock.set = (ms: number) => void (now = ms);
  return clock;
}

/**
 * Polls `check` until it returns something truthy, and resolves with that; past `timeoutMs`
 * (10 s unless given) fails with "timed out after N ms waiting for <what>". For what the server
 * or another process does in its own time (a sweep on a real timer, a socket closing, a line in
 * a log), in place of a fixed sleep. `what` may be a function, to describe the state at the time
 * of failure (the output so far). An error thrown by `check` fails at once.
 */
export async function eventually<T>(
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, what }: { timeoutMs?: number; what: string | (() => string) },
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() >= deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}`);
    await Bun.sleep(20);
  }
}

export interface TestServer extends RunningServer {
  dataDir: string;
  /** Where the admin CLI finds this server's data: `--data-dir DIR`, and `--database URL` on PostgreSQL. */
  storageArgs: string[];
  wsUrl: string;
  close(): Promise<void>;
}

/**
 * Starts the server in this process on 127.0.0.1:0 with a fresh data directory. admin's password
 * comes as if from LATCHKEY_ADMIN_PASSWORD (`adminPassword`, ADMIN_PASSWORD unless given); `null`
 * starts without it, as a first start that generates one (printed unless `--log-format json`).
 */
export async function startTestServer(
  options: { flags?: string[]; clock?: () => number; env?: Record<string, string>; adminPassword?: string | null } = {},
): Promise<TestServer> {
  const dir = tempDir();
  const database = await databaseFlags();
  const args = parseArgs(["--data-dir", dir.path, "--listen", "127.0.0.1:0", ...database, ...(options.flags ?? [])], serverFlags);
  const config = loadConfig(args, { ...TEST_ENV, ...options.env });
  const server = await startServer(config, {
    log: silentLogger,
    adminPassword: options.adminPassword === undefined ? ADMIN_PASSWORD : (options.adminPassword ?? undefined),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  return {
    ...server,
    dataDir: dir.path,
    storageArgs: ["--data-dir", dir.path, ...database],
    wsUrl: server.url.replace(/^http/, "ws") + "/ws",
    async close() {
      await server.stop("test finished");
      dir.remove();
    },
  };
}

export async function login(baseUrl: string, username = "admin", password = ADMIN_PASSWORD): Promise<string> {
  const res = await fetch(`${baseUrl}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (res.status !== 200) throw new Error(`login as ${username} failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}

export async function createUser(
  baseUrl: string,
  adminToken: string,
  user: { username: string; password: string; role?: "admin" | "viewer"; allowed_groups?: string[] },
): Promise<void> {
  const res = await fetch(`${baseUrl}/api/users`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
    body: JSON.stringify(user),
  });
  if (res.status !== 201) throw new Error(`create ${user.username} failed: ${res.status} ${await res.text()}`);
}

/** A JSON request with an optional bearer token; returns status, headers and parsed body. */
export async function call(
  baseUrl: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Headers; body: any; text: string }> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(`${baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** The value of an unlabelled gauge or counter in the server's `/metrics`. */
export async function metric(baseUrl: string, name: string): Promise<number> {
  const text = (await call(baseUrl, "GET", "/metrics")).text;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no metric ${name} in /metrics`);
  return Number(line.slice(name.length + 1));
}

/** A WebSocket client that sends RPC envelopes and awaits replies by id. */
export class RpcClient {
  private nextId = 1;
  private readonly waiting = new Map<string, (msg: any) => void>();
  readonly events: any[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** How the socket closed, once it has (for `eventually`); null while it is open. */
  closedWith: { code: number; reason: string } | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.onmessage = (e) => {
      const msg = JSON.parse(String(e.data));
      if (msg.namespace === "events") {
        this.events.push(msg);
        return;
      }
      const resolve = this.waiting.get(String(msg.id));
      if (resolve) {
        this.waiting.delete(String(msg.id));
        resolve(msg);
      }
    };
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (e) => resolve((this.closedWith = { code: e.code, reason: e.reason })));
    });
  }

  /** `tls`: Bun's client TLS options for a wss:// URL (`ca`, and `cert` + `key` to present a client certificate). */
  static async connect(
    url: string,
    headers?: Record<string, string>,
    tls?: { ca?: string; cert?: string; key?: string },
  ): Promise<RpcClient> {
    const options = { ...(headers ? { headers } : {}), ...(tls ? { tls } : {}) };
    const ws = new WebSocket(url, headers || tls ? (options as unknown as string[]) : undefined);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
    return new RpcClient(ws);
  }

  /** Sends {namespace, name, id, args} and resolves with the whole reply envelope. */
  request(namespace: string, name: string, args?: unknown): Promise<any> {
    const id = `r${this.nextId++}`;
    const reply = new Promise<any>((resolve) => this.waiting.set(id, resolve));
    this.ws.send(JSON.stringify({ namespace, name, id, args }));
    return reply;
  }

  /** Sends a raw frame and resolves with the next reply that has no matching id (id null). */
  sendRaw(frame: string, id: string | null = null): Promise<any> {
    const key = String(id);
    const reply = new Promise<any>((resolve) => this.waiting.set(key, resolve));
    this.ws.send(frame);
    return reply;
  }

  close(): void {
    this.ws.close();
  }
}

/** Spawns `latchkey` as a separate process: the compiled binary if asked, else the source. */
export function spawnLatchkey(
  args: string[],
  options: { binary?: string; env?: Record<string, string>; cwd?: string; stdin?: "pipe" | "ignore" } = {},
) {
  const cmd = options.binary ? [options.binary, ...args] : [BUN, join(ROOT, "src/main.ts"), ...args];
  return Bun.spawn(cmd, {
    cwd: options.cwd ?? ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...TEST_ENV, ...(options.env ?? {}) },
    stdin: options.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

/** Runs a latchkey CLI command to completion. */
export async function runLatchkey(
  args: string[],
  options: { binary?: string; env?: Record<string, string>; cwd?: string; input?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawnLatchkey(args, { ...options, stdin: options.input === undefined ? "ignore" : "pipe" });
  if (options.input !== undefined && proc.stdin) {
    proc.stdin.write(options.input);
    await proc.stdin.end();
  }
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** Waits until the server process logs its URL, and returns it with the log so far (which keeps growing). */
export async function waitForListening(
  proc: ReturnType<typeof spawnLatchkey>,
  timeoutMs = 15000,
): Promise<{ url: string; log: () => string }> {
  let log = "";
  let ended = false;
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) log += decoder.decode(chunk, { stream: true });
    ended = true;
  })();
  const url = await eventually(
    () => {
      const found = /url=(https?:\/\/\S+)/.exec(log)?.[1];
      if (!found && ended) throw new Error(`server exited before listening; log:\n${log}`);
      return found;
    },
    { timeoutMs, what: () => `the server to log its URL; log:\n${log}` },
  );
  return { url, log: () => log };
}
