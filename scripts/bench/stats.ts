/**
 * `GET /api/stats` over a year of roll-ups and 10 million audit rows (docs/benchmarks.md, "Charts").
 *
 *   npm run build                    # dist/latchkey with the charts (or pass --build)
 *   bun scripts/bench/stats.ts [--keys 1000] [--audit 10000000] [--calls 200] [--duration 10] [--connections 16] [--build]
 *
 * Fills a fresh data directory through the server's own migrations: 10 applications and `--keys`
 * license keys; a year of hourly roll-ups (every metric overall; checks, activations and their
 * failures for each application; registrations, clients online and host reports for 10 client
 * groups; for each key its passed checks every hour and its failures and activations once a day);
 * `--audit` audit rows spread over the same year. Then it starts the compiled binary on it and
 * measures, on the same server, `GET /healthz` and `GET /api/auth/session` (the baselines: a
 * database ping, and the cheapest signed-in JSON route) against `/api/stats` for each range, a
 * viewer's (three groups), one key's and one application's series: the first call after the
 * start, then p50/p99 of `--calls` sequential calls after 20 unmeasured ones, then requests per
 * second with wrk (`--connections`, `--duration`). The server's process is stopped at the end, on
 * error and on Ctrl-C; the data directory is removed.
 */
import type { Subprocess } from "bun";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../../src/db/open.ts";

const ROOT = join(import.meta.dir, "../..");
const BINARY = join(ROOT, "dist/latchkey");
const WRK = "/usr/bin/wrk";
const HOST = "127.0.0.1";
const HOUR_MS = 3_600_000;
const HOURS = 365 * 24;

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} takes a positive whole number`);
  return value;
}

const options = {
  keys: flag("keys", 1000),
  audit: flag("audit", 10_000_000),
  calls: flag("calls", 200),
  duration: flag("duration", 10),
  connections: flag("connections", 16),
  build: process.argv.includes("--build"),
};

const children: Subprocess[] = [];
const dataDir = mkdtempSync(join(tmpdir(), "latchkey-bench-stats-"));
function cleanUp(): void {
  for (const child of children) child.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
}
process.on("SIGINT", () => {
  cleanUp();
  process.exit(130);
});

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}

/** A year of data, written straight into a database the server's migrations made. */
function fill(): { rollups: number; audit: number; bytes: number } {
  const started = performance.now();
  const db = openDatabase(dataDir, { create: true });
  // The fill only: no journal, no fsync (the server opens it again in WAL with its own pragmas).
  db.run("PRAGMA journal_mode = DELETE");
  db.run("PRAGMA synchronous = OFF");
  const now = Date.now();
  const lastHour = now - (now % HOUR_MS);
  const first = lastHour - (HOURS - 1) * HOUR_MS;
  db.transaction(() => {
    db.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
       INSERT INTO applications (name, created_at) SELECT 'Bench app ' || i, ? FROM n`,
      [first],
    );
    db.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
       INSERT INTO licenses (app_id, token, token_hash, activations_allowed, created_at)
       SELECT 1 + (i - 1) % 10, upper(substr(hex(randomblob(13)), 1, 25)), lower(hex(randomblob(32))), -1, ? FROM n`,
      [options.keys, first],
    );
  })();
  const hours = `hours(h) AS (SELECT 0 UNION ALL SELECT h + 1 FROM hours WHERE h < ${HOURS - 1})`;
  const rollups = (sql: string, params: (string | number)[] = []) => db.transaction(() => db.run(sql, params).changes)();
  let rows = 0;
  // Everything: ten metrics, every hour.
  rows += rollups(
    `WITH RECURSIVE ${hours}, metrics(m, most) AS (VALUES
       ('activations_failed', 20), ('activations_ok', 200), ('checks_failed', 500), ('checks_ok', 50000),
       ('clients_online', 5000), ('host_reports', 6000), ('logins_failed', 30), ('logins_throttled', 10),
       ('registrations_ok', 300), ('registrations_refused', 20))
     INSERT INTO stats_hourly (scope, metric, hour, value) SELECT '', m, ? + h * ${HOUR_MS}, abs(random()) % most FROM metrics, hours`,
    [first],
  );
  // Each application's and each group's series, every hour.
  rows += rollups(
    `WITH RECURSIVE ${hours}, apps(a) AS (SELECT 1 UNION ALL SELECT a + 1 FROM apps WHERE a < 10),
       metrics(m, most) AS (VALUES ('activations_failed', 5), ('activations_ok', 20), ('checks_failed', 50), ('checks_ok', 5000))
     INSERT INTO stats_hourly (scope, metric, hour, value)
     SELECT 'app:' || a, m, ? + h * ${HOUR_MS}, abs(random()) % most FROM apps, metrics, hours`,
    [first],
  );
  rows += rollups(
    `WITH RECURSIVE ${hours}, groups(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM groups WHERE g < 10),
       metrics(m, most) AS (VALUES ('clients_online', 500), ('host_reports', 600), ('registrations_ok', 30), ('registrations_refused', 2))
     INSERT INTO stats_hourly (scope, metric, hour, value)
     SELECT 'group:g' || g, m, ? + h * ${HOUR_MS}, abs(random()) % most FROM groups, metrics, hours`,
    [first],
  );
  // Each key: passed checks every hour; failed checks and activations once a day.
  rows += rollups(
    `WITH RECURSIVE ${hours}
     INSERT INTO stats_hourly (scope, metric, hour, value)
     SELECT 'license:' || id, 'checks_ok', ? + h * ${HOUR_MS}, 1 + abs(random()) % 100 FROM licenses, hours`,
    [first],
  );
  rows += rollups(
    `WITH RECURSIVE ${hours}, metrics(m) AS (VALUES ('activations_failed'), ('activations_ok'), ('checks_failed'))
     INSERT INTO stats_hourly (scope, metric, hour, value)
     SELECT 'license:' || id, m, ? + h * ${HOUR_MS}, 1 + abs(random()) % 3 FROM licenses, metrics, hours WHERE h % 24 = id % 24`,
    [first],
  );
  console.log(`roll-ups: ${rows.toLocaleString("en")} rows (${seconds(started)})`);

  const auditStarted = performance.now();
  const spacing = Math.floor((HOURS * HOUR_MS) / options.audit);
  const audit = db.transaction(
    () =>
      db.run(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO audit (at, actor, address, action, target, outcome, reason)
         SELECT ? + i * ?, CASE i % 7 WHEN 0 THEN 'admin' WHEN 1 THEN 'cli:root' ELSE NULL END,
                '10.' || (i % 200) || '.' || (i % 250) || '.' || (i % 97),
                CASE i % 6 WHEN 0 THEN 'license.activate' WHEN 1 THEN 'client.register' WHEN 2 THEN 'auth.password'
                  WHEN 3 THEN 'license.deactivate' WHEN 4 THEN 'auth.scram' ELSE 'key.generate' END,
                'license ' || (1 + i % ?), CASE WHEN i % 10 = 0 THEN 'failure' WHEN i % 31 = 0 THEN 'denied' ELSE 'success' END,
                CASE WHEN i % 10 = 0 THEN 'unknown token' ELSE NULL END
         FROM n`,
        [options.audit, first, spacing, options.keys],
      ).changes,
  )();
  console.log(`audit: ${audit.toLocaleString("en")} rows (${seconds(auditStarted)})`);
  // What the roll-ups spare: 30 days of activations by hour and outcome, counted from the audit log
  // (through its (action, at) index). Checks are not audited at all: they could not be counted so.
  db.run("PRAGMA journal_mode = WAL");
  const fromAudit = db.query(
    `SELECT at / ${HOUR_MS} AS h, outcome, count(*) AS n FROM audit WHERE action = 'license.activate' AND at >= ? GROUP BY h, outcome`,
  );
  const since = lastHour - 719 * HOUR_MS;
  fromAudit.all(since);
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t = performance.now();
    fromAudit.all(since);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  console.log(`30 days of activations counted from the audit log instead: ${times[5]!.toFixed(1)} ms (median of 10, warm)`);
  db.close();
  const bytes = statSync(join(dataDir, "latchkey.db")).size;
  return { rollups: rows, audit, bytes };
}

function freePort(): number {
  const probe = Bun.serve({ hostname: HOST, port: 0, fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

async function startServer(password: string): Promise<{ url: string; child: Subprocess; startedMs: number }> {
  const port = freePort();
  const started = performance.now();
  const child = Bun.spawn([BINARY, "server", "--listen", `${HOST}:${port}`, "--data-dir", dataDir], {
    env: { ...process.env, LATCHKEY_ADMIN_PASSWORD: password, LATCHKEY_MTLS_LISTEN: `${HOST}:0` },
    stdout: "ignore",
    stderr: "pipe",
  });
  children.push(child);
  const url = `http://${HOST}:${port}`;
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await Bun.sleep(20)) {
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return { url, child, startedMs: performance.now() - started };
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`the server exited: ${await new Response(child.stderr as ReadableStream).text()}`);
  }
  throw new Error("the server did not answer /healthz within 60 s");
}

async function post(url: string, path: string, body: unknown, token?: string): Promise<any> {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** One call's wall time, in ms, and its status and size. */
async function timed(url: string, token: string | null): Promise<{ ms: number; status: number; bytes: number }> {
  const started = performance.now();
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const text = await res.text();
  return { ms: performance.now() - started, status: res.status, bytes: text.length };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Server CPU (user + system) in µs, from /proc. */
function cpuMicroseconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1_000_000) / 100;
}

async function wrk(url: string, token: string | null): Promise<{ rps: number; p99: string }> {
  const args = [WRK, "-t2", `-c${options.connections}`, `-d${options.duration}s`, "--latency", "--timeout", "5s"];
  if (token) args.push("-H", `authorization: Bearer ${token}`);
  const proc = Bun.spawn([...args, url], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(proc.stdout).text();
  if ((await proc.exited) !== 0) throw new Error(`wrk failed:\n${out}`);
  if (/Non-2xx|Socket errors/.test(out)) throw new Error(`wrk saw errors against ${url}:\n${out}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p99 = /99%\s+(\S+)/.exec(out)?.[1] ?? "?";
  return { rps, p99 };
}

async function main(): Promise<void> {
  if (options.build) {
    const built = Bun.spawnSync([process.execPath, "scripts/build.ts"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
    if (built.exitCode !== 0) throw new Error("the build failed");
  }
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const version = Bun.spawnSync([BINARY, "version"]).stdout.toString().trim();
  console.log(
    `${new Date().toISOString()} · ${availableParallelism()} × ${cpu} · bun ${Bun.version} · ${version} ` +
      `(built ${statSync(BINARY).mtime.toISOString()})`,
  );
  console.log(`options: ${JSON.stringify(options)}`);
  const filled = fill();
  // The fill wrote without fsync: the server's first checkpoint would otherwise write it all back.
  Bun.spawnSync(["sync"]);
  console.log(`database: ${(filled.bytes / 2 ** 20).toFixed(0)} MiB`);

  const password = "bench-password-stats";
  const server = await startServer(password);
  console.log(`server up in ${server.startedMs.toFixed(0)} ms`);
  const token = (await post(server.url, "/api/auth/login", { username: "admin", password })).token as string;
  await post(
    server.url,
    "/api/users",
    { username: "viewer", password: "viewer-password", role: "viewer", allowed_groups: ["g1", "g2", "g3"] },
    token,
  );
  const viewer = (await post(server.url, "/api/auth/login", { username: "viewer", password: "viewer-password" })).token as string;
  const middleKey = Math.ceil(options.keys / 2);

  const targets: { name: string; path: string; token: string | null }[] = [
    { name: "GET /healthz (baseline)", path: "/healthz", token: null },
    { name: "GET /api/auth/session (baseline)", path: "/api/auth/session", token },
    { name: "GET /api/stats?range=24h", path: "/api/stats?range=24h", token },
    { name: "GET /api/stats?range=7d", path: "/api/stats?range=7d", token },
    { name: "GET /api/stats?range=30d", path: "/api/stats?range=30d", token },
    { name: "GET /api/stats?range=30d (viewer, 3 groups)", path: "/api/stats?range=30d", token: viewer },
    { name: `GET /api/licenses/${middleKey}/stats?range=30d`, path: `/api/licenses/${middleKey}/stats?range=30d`, token },
    { name: "GET /api/apps/5/stats?range=30d", path: "/api/apps/5/stats?range=30d", token },
  ];
  const rows: string[] = [];
  for (const target of targets) {
    const url = `${server.url}${target.path}`;
    const first = await timed(url, target.token);
    if (first.status !== 200) throw new Error(`${target.name}: ${first.status}`);
    for (let i = 0; i < 20; i++) await timed(url, target.token);
    const cpuBefore = cpuMicroseconds(server.child.pid);
    const samples: number[] = [];
    for (let i = 0; i < options.calls; i++) samples.push((await timed(url, target.token)).ms);
    const cpu = (cpuMicroseconds(server.child.pid) - cpuBefore) / options.calls;
    samples.sort((a, b) => a - b);
    const load = await wrk(url, target.token);
    const row =
      `| ${target.name} | ${(first.bytes / 1024).toFixed(1)} KiB | ${first.ms.toFixed(2)} | ${percentile(samples, 50).toFixed(2)} | ` +
      `${percentile(samples, 99).toFixed(2)} | ${cpu.toFixed(0)} | ${Math.round(load.rps).toLocaleString("en")} | ${load.p99} |`;
    rows.push(row);
    console.log(row);
  }
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, "utf8"))?.[1]) / 1024;
  console.log(`\nserver RSS afterwards: ${rss.toFixed(0)} MiB\n`);
  console.log("| request | reply | first call ms | p50 ms | p99 ms | server CPU µs/call | wrk req/s | wrk p99 |");
  console.log("|---|--:|--:|--:|--:|--:|--:|--:|");
  for (const row of rows) console.log(row);
}

try {
  await main();
} finally {
  cleanUp();
}
