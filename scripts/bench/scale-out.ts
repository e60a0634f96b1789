/**
 * Several nodes on PostgreSQL, measured against one node on SQLite and one on PostgreSQL, in one
 * run on loopback (docs/benchmarks.md, "Several nodes on PostgreSQL"):
 *
 *   bun scripts/bench/scale-out.ts [--build] [--duration 10] [--warmup 2] [--clients 10000] [--ws-concurrency 64]
 *                                  [--max-wait-minutes 20] [--load-below 1.0] [--keep]
 *
 * Configurations: (A) one node on SQLite in its data directory, (B) one node on PostgreSQL, (C) three
 * nodes on one PostgreSQL behind nginx (a minimal upstream config written here, round robin,
 * keep-alive to the nodes, WebSockets upgraded). PostgreSQL is a throwaway cluster (Debian's server,
 * run as the postgres user) with fsync=on and synchronous_commit=on: an acknowledged activation is on
 * disk. Each configuration starts from nothing: a new data directory, and for B and C a new cluster.
 *
 * Per configuration:
 *  - `GET /api/check` of one activated machine (wrk -t2 -c64; the node's receipt cache serves it),
 *    compared with the bare Bun.serve of baseline.ts under the same wrk load (same path), measured
 *    right before it; for C also with that Bun.serve through the same nginx (a second port);
 *  - `POST /api/activate` with a new hwid on every request (activate.lua) on a key with unlimited
 *    activations; afterwards the activations stored, read through the API, are compared with the 2xx
 *    wrk counted and with every hwid whose receipt came back. Then, as a diagnostic, the same spread
 *    over 64 unlimited keys (a wrk script written into the work directory), checked against the keys'
 *    seat counters;
 *  - `--clients` (10,000) registrations over WebSockets (ws-clients.ts, a separate Bun process), each
 *    client with its own pre-shared key made through `POST /api/keys` (100 per call), with
 *    `require_auth_key` on (`PATCH /api/settings`), `--ws-concurrency` (64) in flight; through nginx for C;
 *  - host reports (`POST /api/hosts/{host}/client`) over keep-alive mutual TLS, 64 connections, to
 *    each node's own mTLS listener (mtls-load.ts, one per node: mTLS is not proxied), one host
 *    registered and issued a bundle through the API.
 *
 * CPU per request: utime + stime (+ the reaped children's) from /proc/PID/stat of every latchkey node,
 * of nginx (master and workers) and of the PostgreSQL cluster (the postmaster and every process under
 * it), each read before and after the measured window and divided by the requests in it. On PostgreSQL,
 * what the nodes' busy connections wait for during the write scenarios is sampled from pg_stat_activity.
 *
 * Before measuring, it waits (polling every 15 s, at most --max-wait-minutes) for the 1-minute load
 * average to drop below --load-below, and prints the load average at the start and at the end. Every
 * process and temporary directory it makes is removed at the end, also on failure and on Ctrl-C
 * (--keep leaves the work directory with the logs). --only B,C measures only the configurations named.
 */
import type { Subprocess } from "bun";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { postgresBin } from "../../test/postgres.ts";
import { issueHostBundles } from "./mtls.ts";
import {
  freePort,
  HOST,
  ROOT,
  spawnTracked,
  stopAll,
  stopOnSignals,
  stopProcess,
  tail,
  waitUntilServing,
  wasInterrupted,
} from "./processes.ts";
import type { LoadReport } from "./mtls-load.ts";

const BINARY = join(ROOT, "dist", "latchkey");
const BASELINE_SCRIPT = join(import.meta.dir, "baseline.ts");
const ACTIVATE_SCRIPT = join(import.meta.dir, "activate.lua");
const WS_CLIENTS_SCRIPT = join(import.meta.dir, "ws-clients.ts");
const MTLS_LOAD_SCRIPT = join(import.meta.dir, "mtls-load.ts");
/** The host whose reports the `reports` scenario sends (registered through the API, its bundle issued). */
const REPORT_HOST = "reports.bench.test";
const WRK = "/usr/bin/wrk";
const NGINX = "/usr/sbin/nginx";
const WRK_THREADS = 2;
const WRK_CONNECTIONS = 64;
const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

interface Options {
  build: boolean;
  duration: number;
  warmup: number;
  clients: number;
  wsConcurrency: number;
  maxWaitMinutes: number;
  loadBelow: number;
  keep: boolean;
  /** The configurations to measure (A, B, C), all by default. */
  only: Set<string>;
}

function readOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      build: { type: "boolean" },
      duration: { type: "string" },
      warmup: { type: "string" },
      clients: { type: "string" },
      "ws-concurrency": { type: "string" },
      "max-wait-minutes": { type: "string" },
      "load-below": { type: "string" },
      keep: { type: "boolean" },
      only: { type: "string" },
    },
    strict: true,
  });
  const number = (name: string, raw: string | undefined, fallback: number, min: number, max: number, integer = true) => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      throw new Error(`--${name} must be a ${integer ? "whole " : ""}number from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    }
    return value;
  };
  return {
    build: values.build ?? false,
    duration: number("duration", values.duration, 10, 1, 120),
    warmup: number("warmup", values.warmup, 2, 0, 30),
    clients: number("clients", values.clients, 10_000, 100, 18_000),
    wsConcurrency: number("ws-concurrency", values["ws-concurrency"], 64, 1, 1000),
    maxWaitMinutes: number("max-wait-minutes", values["max-wait-minutes"], 20, 0, 120),
    loadBelow: number("load-below", values["load-below"], 1.0, 0.01, 64, false),
    keep: values.keep ?? false,
    only: configurationsNamed(values.only),
  };
}

/** `--only B,C`: the configurations named, each once (default: all three). */
function configurationsNamed(raw: string | undefined): Set<string> {
  if (raw === undefined) return new Set(["A", "B", "C"]);
  const named = new Set(raw.split(",").map((part) => part.trim().toUpperCase()));
  for (const id of named)
    if (!["A", "B", "C"].includes(id)) throw new Error(`--only takes A, B and C, comma-separated (got ${JSON.stringify(raw)})`);
  return named;
}

// ---------------------------------------------------------------------------------------------
// Processes and temporary directories: everything goes through these, so that `cleanUp` ends it.

/** Run in reverse order by cleanUp: stopping PostgreSQL, removing directories. */
const cleanups: Array<() => Promise<void> | void> = [];
/** Nodes get longer to stop than run.ts's servers: they give their lease up on the way out. */
const GRACE_MS = 5000;
/** Between two looks at a starting server. */
const POLL_MS = 50;

let cleanedUp = false;
async function cleanUp(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  await stopAll(GRACE_MS);
  for (const step of cleanups.reverse()) {
    try {
      await step();
    } catch (error) {
      process.stderr.write(`scale-out: clean-up step failed: ${(error as Error).message}\n`);
    }
  }
}

stopOnSignals("scale-out", cleanUp);

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function run(cmd: string[], what: string): Promise<string> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${what} failed (exit ${code}): ${err || out}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc.

interface ProcEntry {
  ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks: a process's own time and that of its reaped children. */
  ticks: number;
}

function readProcesses(): Map<number, ProcEntry> {
  const table = new Map<number, ProcEntry>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // The fields after the command name, which is in parentheses and may hold spaces.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      table.set(Number(name), { ppid: Number(fields[1]), ticks });
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

/**
 * CPU microseconds of the processes `roots` and everything under them. Summing utime + stime +
 * cutime + cstime over the whole tree stays right when a process in it exits between two readings:
 * its time moves into its parent's cutime/cstime once reaped.
 */
function treeCpuUs(table: Map<number, ProcEntry>, roots: number[]): number {
  const childrenOf = new Map<number, number[]>();
  for (const [pid, entry] of table) {
    const list = childrenOf.get(entry.ppid);
    if (list) list.push(pid);
    else childrenOf.set(entry.ppid, [pid]);
  }
  let ticks = 0;
  const seen = new Set<number>();
  const stack = [...roots];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    const entry = table.get(pid);
    if (entry) ticks += entry.ticks;
    stack.push(...(childrenOf.get(pid) ?? []));
  }
  return (ticks / CLOCK_TICKS) * 1e6;
}

/** Busy CPU time of the whole machine (all cores, /proc/stat), in microseconds. */
function machineBusyUs(): number {
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return ((user + nice + system + irq + softirq + steal) / CLOCK_TICKS) * 1e6;
}

/** The processes whose CPU a configuration is charged with. */
interface Charged {
  nodes: number[];
  nginx: number | null;
  postgres: number | null;
  /** The load generator (wrk or ws-clients.ts), whose CPU is not "other work". */
  generator?: number;
}

/**
 * What a process of the PostgreSQL cluster does, from its title (`postgres: walwriter`, or for a
 * connection `postgres: USER DATABASE HOST(PORT) STATE`); the postmaster's own time includes that
 * of its children that exited (autovacuum workers, connections closed).
 */
function postgresKind(pid: number, postmaster: number): string {
  if (pid === postmaster) return "postmaster and exited processes";
  let title: string;
  try {
    title = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
  } catch {
    return "gone";
  }
  const kind = title.replace(/^postgres:\s*/, "");
  if (
    /^(checkpointer|background writer|walwriter|autovacuum launcher|autovacuum worker|logical replication launcher|stats collector)/.test(
      kind,
    )
  )
    return kind.replace(/^(autovacuum worker).*/, "$1");
  return "connections";
}

/** CPU microseconds of the cluster's processes by kind (postgresKind). */
function postgresParts(table: Map<number, ProcEntry>, postmaster: number): Map<string, number> {
  const parts = new Map<string, number>();
  const add = (kind: string, us: number) => parts.set(kind, (parts.get(kind) ?? 0) + us);
  add(postgresKind(postmaster, postmaster), ((table.get(postmaster)?.ticks ?? 0) / CLOCK_TICKS) * 1e6);
  for (const [pid, entry] of table) if (entry.ppid === postmaster) add(postgresKind(pid, postmaster), treeCpuUs(table, [pid]));
  return parts;
}

interface CpuReading {
  nodesUs: number;
  nginxUs: number;
  postgresUs: number;
  postgresParts: Map<string, number>;
  generatorUs: number;
  machineUs: number;
  at: number;
}

function readCpu(charged: Charged): CpuReading {
  const table = readProcesses();
  return {
    nodesUs: treeCpuUs(table, charged.nodes),
    nginxUs: charged.nginx === null ? 0 : treeCpuUs(table, [charged.nginx]),
    postgresUs: charged.postgres === null ? 0 : treeCpuUs(table, [charged.postgres]),
    postgresParts: charged.postgres === null ? new Map() : postgresParts(table, charged.postgres),
    generatorUs: charged.generator === undefined ? 0 : treeCpuUs(table, [charged.generator]),
    machineUs: machineBusyUs(),
    at: performance.now(),
  };
}

interface CpuPerRequest {
  nodesUs: number;
  nginxUs: number | null;
  postgresUs: number | null;
  /** CPU used by nothing this script started, in % of all cores over the window. */
  otherPercent: number;
  /** Each node's share of the nodes' CPU (C only). */
  nodeShares: number[];
  /** PostgreSQL only: the share of its CPU each kind of process took (postgresKind), largest first. */
  postgresShares: [string, number][];
}

function cpuPerRequest(
  before: CpuReading,
  after: CpuReading,
  requests: number,
  charged: Charged,
  generatorUs: number | null,
  perNodeBefore: number[],
  perNodeAfter: number[],
): CpuPerRequest {
  const nodes = after.nodesUs - before.nodesUs;
  const nginx = after.nginxUs - before.nginxUs;
  const postgres = after.postgresUs - before.postgresUs;
  const generator = generatorUs ?? after.generatorUs - before.generatorUs;
  const wallUs = (after.at - before.at) * 1000;
  const other = after.machineUs - before.machineUs - nodes - nginx - postgres - generator;
  const n = Math.max(1, requests);
  const perNode = perNodeAfter.map((value, i) => value - perNodeBefore[i]!);
  const total = perNode.reduce((a, b) => a + b, 0);
  return {
    nodesUs: nodes / n,
    nginxUs: charged.nginx === null ? null : nginx / n,
    postgresUs: charged.postgres === null ? null : postgres / n,
    otherPercent: Math.max(0, (other / (wallUs * availableParallelism())) * 100),
    nodeShares: total > 0 ? perNode.map((value) => value / total) : [],
    postgresShares:
      postgres > 0
        ? [...after.postgresParts]
            .map(([kind, us]): [string, number] => [kind, (us - (before.postgresParts.get(kind) ?? 0)) / postgres])
            .filter(([, share]) => share >= 0.005)
            .sort((a, b) => b[1] - a[1])
        : [],
  };
}

function perNodeCpu(nodes: number[]): number[] {
  const table = readProcesses();
  return nodes.map((pid) => treeCpuUs(table, [pid]));
}

// ---------------------------------------------------------------------------------------------
// wrk.

interface WrkResult {
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: string | null;
  scriptLines: string[];
  cpu: CpuPerRequest;
}

const TIME_UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function parseMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!match) throw new Error(`wrk printed a time this script cannot read: ${JSON.stringify(text)}`);
  return Number(match[1]) * TIME_UNITS[match[2]!]!;
}

async function runWrk(url: string, seconds: number, charged: Charged, script?: { path: string; args: string[] }): Promise<WrkResult> {
  const cmd = [
    WRK,
    "-t",
    String(WRK_THREADS),
    "-c",
    String(WRK_CONNECTIONS),
    "-d",
    `${seconds}s`,
    "--latency",
    "--timeout",
    "5s",
    ...(script ? ["-s", script.path] : []),
    url,
    ...(script ? ["--", ...script.args] : []),
  ];
  const perNodeBefore = perNodeCpu(charged.nodes);
  const before = readCpu(charged);
  const child = spawnTracked(cmd, { stdout: "pipe" });
  const killer = setTimeout(() => child.kill("SIGKILL"), (seconds + 30) * 1000);
  const output = await new Response(child.stdout as ReadableStream<Uint8Array>).text();
  const code = await child.exited;
  clearTimeout(killer);
  const after = readCpu(charged);
  const perNodeAfter = perNodeCpu(charged.nodes);
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`);
  const need = (pattern: RegExp, what: string): RegExpExecArray => {
    const match = pattern.exec(output);
    if (!match) throw new Error(`wrk's report has no ${what}:\n${output}`);
    return match;
  };
  const totals = need(/(\d+) requests in ([\d.]+)(us|ms|s|m),/, "request count");
  const requests = Number(totals[1]);
  const errors = /Socket errors: (.*)/.exec(output)?.[1] ?? null;
  const wrkUs = Number(child.resourceUsage()?.cpuTime.total ?? 0);
  return {
    requests,
    seconds: parseMs(`${totals[2]}${totals[3]}`) / 1000,
    requestsPerSecond: Number(need(/Requests\/sec:\s+([\d.]+)/, "Requests/sec")[1]),
    p50Ms: parseMs(need(/^\s+50%\s+(\S+)/m, "50% latency")[1]!),
    p99Ms: parseMs(need(/^\s+99%\s+(\S+)/m, "99% latency")[1]!),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
    socketErrors: errors,
    scriptLines: output.split("\n").filter((line) => /^[\w-]+\.lua: /.test(line)),
    cpu: cpuPerRequest(before, after, requests, charged, wrkUs, perNodeBefore, perNodeAfter),
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL with fsync on, and nginx.

interface Cluster {
  url: (database: string) => string;
  postmasterPid: number;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  const bin = postgresBin();
  if (bin === null) throw new Error("PostgreSQL's server is not installed: apt-get install -y postgresql");
  const dir = tempDir("latchkey-scale-out-pg-");
  const user = Number(Bun.spawnSync(["id", "-u", "postgres"]).stdout.toString().trim());
  const group = Number(Bun.spawnSync(["id", "-g", "postgres"]).stdout.toString().trim());
  chownSync(dir, user, group);
  const asPostgres = (args: string[]) => (process.getuid?.() === 0 ? ["runuser", "-u", "postgres", "--", ...args] : args);
  const data = join(dir, "data");
  const port = freePort();
  await run(asPostgres([join(bin, "initdb"), "-D", data, "-U", "latchkey", "-A", "trust", "-E", "UTF8"]), "initdb");
  const settings = [
    `-p ${port}`,
    `-k ${dir}`,
    "-c listen_addresses=127.0.0.1",
    "-c fsync=on",
    "-c synchronous_commit=on",
    "-c full_page_writes=on",
    "-c max_connections=200",
  ].join(" ");
  const pgCtl = join(bin, "pg_ctl");
  const stop = async () => {
    await run(asPostgres([pgCtl, "-D", data, "-m", "fast", "-w", "stop"]), "pg_ctl stop").catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.push(stop);
  await run(asPostgres([pgCtl, "-D", data, "-o", settings, "-l", join(dir, "server.log"), "-w", "start"]), "pg_ctl start");
  // Should this script be killed outright, the cluster still goes once it is gone.
  const watchdog = Bun.spawn(
    [
      "setsid",
      "sh",
      "-c",
      `while kill -0 ${process.pid} 2>/dev/null && [ -d '${data}' ]; do sleep 1; done; ` +
        `runuser -u postgres -- '${pgCtl}' -D '${data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '${dir}'`,
    ],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
  );
  watchdog.unref();
  const postmasterPid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n", 1)[0]);
  if (!Number.isInteger(postmasterPid) || postmasterPid <= 0) throw new Error("no postmaster pid in postmaster.pid");
  const url = (database: string) => `postgres://latchkey@${HOST}:${port}/${database}`;
  return {
    url,
    postmasterPid,
    async createDatabase(name) {
      const admin = new Bun.SQL(url("postgres"), { max: 1 });
      try {
        await admin.unsafe(`CREATE DATABASE ${name}`);
      } finally {
        await admin.close();
      }
    },
    stop,
  };
}

/**
 * nginx in front of `nodes`, and on a second port in front of `baseline` (the bare Bun.serve) with
 * the same settings: what the same proxy lets a service that does nothing reach on this machine.
 */
async function startNginx(
  work: string,
  nodes: string[],
  baseline: string,
): Promise<{ child: Subprocess; url: string; baselineUrl: string }> {
  const prefix = join(work, "nginx");
  mkdirSync(join(prefix, "temp"), { recursive: true });
  const port = freePort();
  const baselinePort = freePort();
  // In every location: a location that sets a header of its own inherits none from its server.
  const forwarded = "proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;";
  // Two workers (one a core), each taking connections of its own through reuseport; room for every
  // WebSocket twice (client side and node side) within the machine's 20,000 open files a process.
  const config = `
worker_processes 2;
worker_rlimit_nofile 19500;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path ${prefix}/temp/body;
  proxy_temp_path ${prefix}/temp/proxy;
  fastcgi_temp_path ${prefix}/temp/fastcgi;
  uwsgi_temp_path ${prefix}/temp/uwsgi;
  scgi_temp_path ${prefix}/temp/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; "" ""; }
  upstream latchkey { ${nodes.map((node) => `server ${node};`).join(" ")} keepalive 64; }
  upstream baseline { server ${baseline}; keepalive 64; }
  server {
    listen ${HOST}:${baselinePort} reuseport backlog=4096;
    proxy_http_version 1.1;
    location / { proxy_pass http://baseline; ${forwarded} proxy_set_header Connection ""; }
  }
  server {
    listen ${HOST}:${port} reuseport backlog=4096;
    proxy_http_version 1.1;
    location / { proxy_pass http://latchkey; ${forwarded} proxy_set_header Connection ""; }
    location = /ws {
      proxy_pass http://latchkey;
      ${forwarded}
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_buffering off;
    }
  }
}
`;
  writeFileSync(join(prefix, "nginx.conf"), config);
  const log = join(work, "nginx.log");
  const child = spawnTracked([NGINX, "-p", prefix, "-c", join(prefix, "nginx.conf")], { log });
  const url = `http://${HOST}:${port}`;
  await waitUntilServing(`${url}/healthz`, child, 10_000, log, POLL_MS);
  return { child, url, baselineUrl: `http://${HOST}:${baselinePort}` };
}

// ---------------------------------------------------------------------------------------------
// latchkey and its API.

async function startNode(
  dataDir: string,
  password: string,
  log: string,
  extra: string[],
): Promise<{ child: Subprocess; url: string; mtlsUrl: string }> {
  mkdirSync(dataDir, { recursive: true });
  // A port that was free a moment ago can be taken meanwhile (it is from the ephemeral range, where
  // outgoing connections get theirs): the node then refuses to start, and another pair is tried.
  for (let attempt = 1; ; attempt++) {
    const port = freePort();
    const mtlsPort = freePort();
    const child = spawnTracked(
      [BINARY, "server", "--listen", `${HOST}:${port}`, "--mtls-listen", `${HOST}:${mtlsPort}`, "--data-dir", dataDir, ...extra],
      { env: { ...process.env, LATCHKEY_ADMIN_PASSWORD: password }, log },
    );
    const url = `http://${HOST}:${port}`;
    try {
      await waitUntilServing(`${url}/healthz`, child, 60_000, log, POLL_MS);
      return { child, url, mtlsUrl: `https://${HOST}:${mtlsPort}` };
    } catch (error) {
      await stopProcess(child, "SIGTERM", GRACE_MS);
      if (attempt >= 3 || !tail(log, 3).includes("cannot listen on")) throw error;
    }
  }
}

async function api<T>(
  base: string,
  token: string | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: T }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text === "" ? null : JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, json: json as T };
}

async function apiOk<T>(base: string, token: string | null, method: string, path: string, body?: unknown): Promise<T> {
  const { status, json } = await api<T>(base, token, method, path, body);
  if (status < 200 || status > 299) throw new Error(`${method} ${path} answered ${status}: ${JSON.stringify(json).slice(0, 300)}`);
  return json;
}

/**
 * Samples, every 0.5 s, what the nodes' PostgreSQL connections that are not idle are doing
 * (pg_stat_activity: a wait event, running, or inside a transaction waiting for the node's next
 * statement), and sums the counts over the window: where the time of a write goes.
 */
function sampleWaits(url: string | null): { stop(): Promise<string> } {
  if (url === null) return { stop: async () => "" };
  const client = new Bun.SQL(url, { max: 1, connection: { application_name: "scale-out-sampler" } });
  const counts = new Map<string, number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const rows = (await client.unsafe(
          `SELECT CASE WHEN state = 'idle in transaction' THEN 'in a transaction, waiting for the node'
                       WHEN wait_event IS NULL THEN 'running' ELSE wait_event_type || '/' || wait_event END AS what,
                  left(regexp_replace(query, '\\s+', ' ', 'g'), 40) AS query, count(*)::int AS n
             FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE 'latchkey-%'
              AND application_name NOT LIKE '%-listen' AND state <> 'idle'
            GROUP BY 1, 2`,
        )) as Array<{ what: string; query: string; n: number }>;
        for (const row of rows) {
          const key = row.what.startsWith("Lock/") ? `${row.what} (${row.query})` : row.what;
          counts.set(key, (counts.get(key) ?? 0) + row.n);
        }
      } catch {
        // a sample lost is no matter
      }
      await Bun.sleep(500);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await client.close();
      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      return [...counts.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 5)
        .map(([what, n]) => `${what} ${((n / Math.max(1, total)) * 100).toFixed(0)}%`)
        .join(", ");
    },
  };
}

/** wrk script for activations spread over several keys: key by request number, a new hwid each. */
const SPREAD_SCRIPT = `-- written by scripts/bench/scale-out.ts: wrk -s spread.lua URL -- KEYS_FILE RUN
local count = 0
function setup(thread)
  count = count + 1
  thread:set("thread_number", count)
end
function init(args)
  keys = {}
  for line in io.lines(args[1]) do if #line > 0 then keys[#keys + 1] = line end end
  run, counter = args[2], 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
function request()
  counter = counter + 1
  local key = keys[(counter * 7 + thread_number) % #keys + 1]
  local hwid = "spread-" .. run .. "-" .. thread_number .. "-" .. counter
  return wrk.format(nil, nil, nil, "token=" .. key .. "&hwid=" .. hwid .. "&machine=BENCH-PC&user=bench")
end
`;
const SPREAD_KEYS = 64;

// ---------------------------------------------------------------------------------------------
// One configuration.

interface Configuration {
  id: "A" | "B" | "C";
  label: string;
  nodes: number;
  postgres: boolean;
  nginx: boolean;
}

const CONFIGURATIONS: Configuration[] = [
  { id: "A", label: "A: 1 node, SQLite", nodes: 1, postgres: false, nginx: false },
  { id: "B", label: "B: 1 node, PostgreSQL", nodes: 1, postgres: true, nginx: false },
  { id: "C", label: "C: 3 nodes, PostgreSQL, nginx", nodes: 3, postgres: true, nginx: true },
];

interface Durability {
  acknowledged2xx: number;
  createdByScript: number;
  receiptsRecorded: number;
  storedForRun: number;
  missing: number;
  extra: number;
  storedTotal: number;
  activationsUsed: number;
  rowsTotal: number;
}

interface Registration {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  activeKeys: number;
  pendingKeys: number;
  cpu: CpuPerRequest;
  keysSeconds: number;
}

interface Spread {
  keys: number;
  result: WrkResult;
  acknowledged2xx: number;
  /** Sum of the keys' seat counters, read through the API afterwards. */
  stored: number;
}

/**
 * Host reports (`POST /api/hosts/{host}/client`, the woodstock seed's agent call) over keep-alive
 * mutual TLS to every node's own listener at once: mTLS is not proxied (the node must see the client
 * certificate), so one mtls-load.ts per node, the 64 connections shared out. One host, registered
 * and issued a bundle through the API. A warm-up round, then the measured one; CPU is read around
 * the generators (their connection set-up included, as with wrk). p50 is the generators' weighted
 * by their answers, p99 the highest.
 */
async function measureHostReports(
  options: Options,
  dir: string,
  base: string,
  token: string,
  listeners: string[],
  charged: Charged,
): Promise<WrkResult> {
  const bundle = join(dir, "report-bundle");
  await issueHostBundles(base, token, [REPORT_HOST], bundle);
  const load = async (seconds: number): Promise<WrkResult> => {
    const perNodeBefore = perNodeCpu(charged.nodes);
    const before = readCpu(charged);
    const generators = listeners.map((listener, i) => {
      const connections = Math.floor(WRK_CONNECTIONS / listeners.length) + (i < WRK_CONNECTIONS % listeners.length ? 1 : 0);
      return spawnTracked(
        [
          process.execPath,
          MTLS_LOAD_SCRIPT,
          ...["--url", `${listener}/api/hosts/${REPORT_HOST}/client`, "--ca", join(bundle, "rootCA.pem")],
          ...["--cert", join(bundle, `${REPORT_HOST}_https.pem`), "--key", join(bundle, `${REPORT_HOST}_https.key`)],
          ...["--connections", String(connections), "--duration", String(seconds)],
        ],
        { stdout: "pipe" },
      );
    });
    const outputs = await Promise.all(generators.map((g) => new Response(g.stdout as ReadableStream<Uint8Array>).text()));
    const codes = await Promise.all(generators.map((g) => g.exited));
    const after = readCpu(charged);
    const perNodeAfter = perNodeCpu(charged.nodes);
    const reports = outputs.map((output, i) => {
      if (codes[i] !== 0) throw new Error(`mtls-load.ts for ${listeners[i]} exited with ${codes[i]}:\n${output}`);
      return JSON.parse(output.trim().split("\n").at(-1)!) as LoadReport;
    });
    const requests = reports.reduce((sum, r) => sum + r.requests, 0);
    const errors = reports.flatMap((r) => Object.entries(r.errors).map(([kind, n]) => `${kind}: ${n}`));
    const generatorUs = generators.reduce((sum, g) => sum + Number(g.resourceUsage()?.cpuTime.total ?? 0), 0);
    return {
      requests,
      seconds: Math.max(...reports.map((r) => r.seconds)),
      requestsPerSecond: reports.reduce((sum, r) => sum + r.requestsPerSecond, 0),
      p50Ms: reports.reduce((sum, r) => sum + r.latencyMs.p50 * r.requests, 0) / Math.max(1, requests),
      p99Ms: Math.max(...reports.map((r) => r.latencyMs.p99)),
      non2xx: reports.reduce((sum, r) => sum + r.non2xx, 0),
      socketErrors: errors.length > 0 ? errors.join(", ") : null,
      scriptLines: [],
      cpu: cpuPerRequest(before, after, requests, charged, generatorUs, perNodeBefore, perNodeAfter),
    };
  };
  if (options.warmup > 0) await load(options.warmup);
  return load(options.duration);
}

interface ConfigurationResult {
  configuration: Configuration;
  baseline: WrkResult;
  /** Behind nginx: the bare Bun.serve through the same nginx. */
  proxiedBaseline: WrkResult | null;
  check: WrkResult;
  activate: WrkResult;
  durability: Durability;
  spread: Spread;
  registration: Registration;
  reports: WrkResult;
  /** PostgreSQL only: what the nodes' busy connections waited for, per scenario. */
  waits: Record<string, string>;
  problems: string[];
}

async function measureConfiguration(
  configuration: Configuration,
  options: Options,
  work: string,
  password: string,
  baselineUrl: string,
  baselinePid: number,
): Promise<ConfigurationResult> {
  const problems: string[] = [];
  const dir = join(work, configuration.id);
  mkdirSync(dir);
  const extra: string[] = [];
  let databaseUrl: string | null = null;
  // A cluster of its own for each configuration on PostgreSQL, so that none is charged with another's
  // background work (autovacuum after the writes of the one before).
  if (configuration.postgres)
    process.stdout.write(`scale-out: ${configuration.label}: starting PostgreSQL (fsync=on, synchronous_commit=on)\n`);
  const cluster = configuration.postgres ? await startCluster() : null;
  if (cluster) {
    await cluster.createDatabase("bench");
    databaseUrl = cluster.url("bench");
    extra.push("--database", databaseUrl);
  }
  const waits: Record<string, string> = {};
  if (configuration.nginx) extra.push("--trusted-proxy", `${HOST}/32`);
  const nodes: Array<{ child: Subprocess; url: string; mtlsUrl: string }> = [];
  // One after the other: the first applies the migrations and makes the admin account.
  for (let i = 1; i <= configuration.nodes; i++) {
    nodes.push(await startNode(join(dir, `node${i}`), password, join(dir, `node${i}.log`), extra));
  }
  let lb: { child: Subprocess; url: string; baselineUrl: string } | null = null;
  if (configuration.nginx)
    lb = await startNginx(
      dir,
      nodes.map((node) => node.url.replace("http://", "")),
      baselineUrl.replace("http://", ""),
    );
  const base = lb?.url ?? nodes[0]!.url;
  const charged: Charged = {
    nodes: nodes.map((node) => node.child.pid),
    nginx: lb?.child.pid ?? null,
    postgres: cluster?.postmasterPid ?? null,
  };

  try {
    const { token } = await apiOk<{ token: string }>(base, null, "POST", "/api/auth/login", { username: "admin", password });
    const app = await apiOk<{ id: number }>(base, token, "POST", "/api/apps", { name: `scale-out ${configuration.id}` });
    const checkKey = await apiOk<{ id: number; token: string }>(base, token, "POST", "/api/licenses", { app_id: app.id, activations: 1 });
    const activateKey = await apiOk<{ id: number; token: string }>(base, token, "POST", "/api/licenses", {
      app_id: app.id,
      activations: -1,
    });

    // GET /api/check of one activated machine, right after the bare Bun.serve under the same load.
    const hwid = `check-${configuration.id}`;
    await apiOk(base, null, "POST", "/api/activate", { token: checkKey.token, hwid });
    const checkPath = `/api/check?token=${checkKey.token}&hwid=${hwid}`;
    const first = await api<{ result?: string }>(base, null, "GET", checkPath);
    if (first.status !== 201 || first.json.result !== "ok") throw new Error(`a check by hand answered ${first.status}`);
    process.stdout.write(`scale-out: ${configuration.label}: GET /api/check (and the baseline)\n`);
    const baselineCharged: Charged = { nodes: [baselinePid], nginx: null, postgres: null };
    if (options.warmup > 0) await runWrk(`${baselineUrl}${checkPath}`, options.warmup, baselineCharged);
    const baseline = await runWrk(`${baselineUrl}${checkPath}`, options.duration, baselineCharged);
    // Behind nginx, the bare Bun.serve through the same nginx too (charged with nginx's CPU).
    let proxiedBaseline: WrkResult | null = null;
    if (lb) {
      const proxiedCharged: Charged = { nodes: [baselinePid], nginx: lb.child.pid, postgres: null };
      if (options.warmup > 0) await runWrk(`${lb.baselineUrl}${checkPath}`, options.warmup, proxiedCharged);
      proxiedBaseline = await runWrk(`${lb.baselineUrl}${checkPath}`, options.duration, proxiedCharged);
    }
    if (options.warmup > 0) await runWrk(`${base}${checkPath}`, options.warmup, charged);
    const check = await runWrk(`${base}${checkPath}`, options.duration, charged);
    for (const [name, result] of [
      ["baseline", baseline],
      ["baseline through nginx", proxiedBaseline],
      ["check", check],
    ] as const) {
      if (result === null) continue;
      if (result.non2xx > 0) problems.push(`${configuration.id} ${name}: ${result.non2xx} non-2xx replies`);
      if (result.socketErrors) problems.push(`${configuration.id} ${name}: socket errors ${result.socketErrors}`);
    }

    // POST /api/activate, a new hwid every request.
    process.stdout.write(`scale-out: ${configuration.label}: POST /api/activate, a new hwid each\n`);
    const ackDir = join(dir, "acked");
    mkdirSync(ackDir);
    const runId = `${configuration.id}${Date.now().toString(36)}`;
    const activateUrl = `${base}/api/activate`;
    if (options.warmup > 0) {
      await runWrk(activateUrl, options.warmup, charged, { path: ACTIVATE_SCRIPT, args: [activateKey.token, `${runId}w`, ackDir] });
    }
    const activateSampler = sampleWaits(databaseUrl);
    const activate = await runWrk(activateUrl, options.duration, charged, {
      path: ACTIVATE_SCRIPT,
      args: [activateKey.token, `${runId}m`, ackDir],
    });
    waits.activate = await activateSampler.stop();
    if (activate.non2xx > 0) problems.push(`${configuration.id} activate: ${activate.non2xx} non-2xx replies`);
    if (activate.socketErrors) problems.push(`${configuration.id} activate: socket errors ${activate.socketErrors}`);
    // Requests still in flight when wrk stopped may commit after it: give them a moment.
    await Bun.sleep(1500);
    const durability = await readActivations(base, token, activateKey.id, `bench-${runId}m-`, ackDir, `${runId}m`, activate);
    if (durability.missing > 0) problems.push(`${configuration.id} activate: ${durability.missing} acknowledged activations not stored`);
    if (durability.storedForRun !== durability.acknowledged2xx) {
      const note =
        `${configuration.id} activate: ${durability.storedForRun} stored for the measured run, ` +
        `wrk counted ${durability.acknowledged2xx} 2xx`;
      // Rows committed for requests whose reply wrk no longer waited for are expected, at most one a connection.
      if (durability.extra > WRK_CONNECTIONS || durability.storedForRun < durability.acknowledged2xx) problems.push(note);
    }
    if (durability.activationsUsed !== durability.rowsTotal) {
      problems.push(`${configuration.id} activate: seat counter ${durability.activationsUsed} but ${durability.rowsTotal} rows`);
    }

    // The same, spread over several keys of their own: what is left when no two requests in flight share a key's row.
    process.stdout.write(`scale-out: ${configuration.label}: POST /api/activate over ${SPREAD_KEYS} keys\n`);
    const spreadApp = await apiOk<{ id: number }>(base, token, "POST", "/api/apps", { name: `scale-out ${configuration.id} spread` });
    const spreadTokens: string[] = [];
    for (let i = 0; i < SPREAD_KEYS; i++) {
      const key = await apiOk<{ token: string }>(base, token, "POST", "/api/licenses", { app_id: spreadApp.id, activations: -1 });
      spreadTokens.push(key.token);
    }
    const spreadKeys = join(dir, "spread-keys.txt");
    writeFileSync(spreadKeys, `${spreadTokens.join("\n")}\n`);
    const spreadScript = join(dir, "spread.lua");
    writeFileSync(spreadScript, SPREAD_SCRIPT);
    const spreadSampler = sampleWaits(databaseUrl);
    const spreadResult = await runWrk(activateUrl, options.duration, charged, { path: spreadScript, args: [spreadKeys, runId] });
    waits.spread = await spreadSampler.stop();
    await Bun.sleep(1500);
    const spreadList = await apiOk<{ items: Array<{ activations_used: number }> }>(
      base,
      token,
      "GET",
      `/api/licenses?app_id=${spreadApp.id}&limit=100`,
    );
    const spread: Spread = {
      keys: SPREAD_KEYS,
      result: spreadResult,
      acknowledged2xx: spreadResult.requests - spreadResult.non2xx,
      stored: spreadList.items.reduce((sum, item) => sum + item.activations_used, 0),
    };
    if (spreadResult.non2xx > 0)
      problems.push(`${configuration.id} activate over ${SPREAD_KEYS} keys: ${spreadResult.non2xx} non-2xx replies`);
    if (spread.stored < spread.acknowledged2xx || spread.stored > spread.acknowledged2xx + WRK_CONNECTIONS) {
      problems.push(
        `${configuration.id} activate over ${SPREAD_KEYS} keys: ${spread.stored} stored, wrk counted ${spread.acknowledged2xx} 2xx`,
      );
    }

    // Registrations over WebSockets, each client with its own pre-shared key.
    process.stdout.write(`scale-out: ${configuration.label}: ${options.clients} registrations over WebSockets\n`);
    const registerSampler = { current: null as { stop(): Promise<string> } | null };
    const registration = await measureRegistrations(options, dir, base, token, charged, {
      started: () => void (registerSampler.current = sampleWaits(databaseUrl)),
      answered: async () => void (waits.register = (await registerSampler.current?.stop()) ?? ""),
    });
    if (registration.failed > 0)
      problems.push(`${configuration.id} register: ${registration.failed} failed ${JSON.stringify(registration.errors)}`);
    if (registration.activeKeys !== registration.ok) {
      problems.push(`${configuration.id} register: ${registration.ok} acknowledged but ${registration.activeKeys} keys active`);
    }
    // Host reports over mutual TLS, straight to the nodes.
    process.stdout.write(`scale-out: ${configuration.label}: host reports over mTLS\n`);
    const reportSampler = sampleWaits(databaseUrl);
    const reports = await measureHostReports(
      options,
      dir,
      base,
      token,
      nodes.map((node) => node.mtlsUrl),
      charged,
    );
    waits.reports = await reportSampler.stop();
    if (reports.non2xx > 0) problems.push(`${configuration.id} reports: ${reports.non2xx} non-2xx replies`);
    if (reports.socketErrors) problems.push(`${configuration.id} reports: ${reports.socketErrors}`);
    return { configuration, baseline, proxiedBaseline, check, activate, durability, spread, registration, reports, waits, problems };
  } catch (error) {
    for (const [i, node] of nodes.entries()) {
      if (node.child.exitCode !== null || node.child.signalCode !== null) {
        process.stderr.write(
          `scale-out: node ${i + 1} of ${configuration.id} exited; its log ends:\n${tail(join(dir, `node${i + 1}.log`))}\n`,
        );
      }
    }
    throw error;
  } finally {
    if (lb) await stopProcess(lb.child, "SIGQUIT", GRACE_MS);
    await Promise.all(nodes.map((node) => stopProcess(node.child, "SIGTERM", GRACE_MS)));
    await cluster?.stop();
  }
}

async function readActivations(
  base: string,
  token: string,
  licenseId: number,
  prefix: string,
  ackDir: string,
  run: string,
  result: WrkResult,
): Promise<Durability> {
  const list = await apiOk<{ items: Array<{ hwid: string }>; total: number }>(base, token, "GET", `/api/licenses/${licenseId}/activations`);
  const license = await apiOk<{ activations_used: number }>(base, token, "GET", `/api/licenses/${licenseId}`);
  const stored = new Set(list.items.map((item) => item.hwid).filter((hwid) => hwid.startsWith(prefix)));
  const acked = new Set<string>();
  for (const name of readdirSync(ackDir)) {
    if (!name.startsWith(`acked-${run}-`)) continue;
    for (const line of readFileSync(join(ackDir, name), "utf8").split("\n")) if (line) acked.add(line);
  }
  let missing = 0;
  for (const hwid of acked) if (!stored.has(hwid)) missing++;
  let extra = 0;
  for (const hwid of stored) if (!acked.has(hwid)) extra++;
  const created = Number(/created (\d+)/.exec(result.scriptLines.join("\n"))?.[1] ?? NaN);
  return {
    acknowledged2xx: result.requests - result.non2xx,
    createdByScript: created,
    receiptsRecorded: acked.size,
    storedForRun: stored.size,
    missing,
    extra,
    storedTotal: list.items.length,
    activationsUsed: license.activations_used,
    rowsTotal: list.total,
  };
}

async function measureRegistrations(
  options: Options,
  dir: string,
  base: string,
  token: string,
  charged: Charged,
  hooks: { started(): void; answered(): Promise<void> },
): Promise<Registration> {
  await apiOk(base, token, "PATCH", "/api/settings", { require_auth_key: true });
  const keysStarted = performance.now();
  const keys: string[] = [];
  while (keys.length < options.clients) {
    const quantity = Math.min(100, options.clients - keys.length);
    const made = await apiOk<{ items: Array<{ key: string }> }>(base, token, "POST", "/api/keys", { quantity, label: "scale-out" });
    keys.push(...made.items.map((item) => item.key));
  }
  const keysSeconds = (performance.now() - keysStarted) / 1000;
  const keysFile = join(dir, "keys.txt");
  writeFileSync(keysFile, `${keys.join("\n")}\n`);
  await Bun.sleep(1000);

  const wsUrl = `${base.replace("http://", "ws://")}/ws`;
  const log = join(dir, "ws-clients.log");
  const perNodeBefore = perNodeCpu(charged.nodes);
  const before = readCpu(charged);
  hooks.started();
  const generator = spawnTracked(
    [
      process.execPath,
      WS_CLIENTS_SCRIPT,
      "--url",
      wsUrl,
      "--keys",
      keysFile,
      "--out",
      join(dir, "registered.txt"),
      "--concurrency",
      String(options.wsConcurrency),
      "--timeout",
      "180",
    ],
    { log, stdout: "pipe" },
  );
  const reader = (generator.stdout as ReadableStream<Uint8Array>).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const chunk = await Promise.race([reader.read(), Bun.sleep(240_000).then(() => null)]);
    if (chunk === null || chunk.done) throw new Error(`ws-clients.ts printed no result:\n${tail(log)}`);
    text += new TextDecoder().decode(chunk.value);
  }
  reader.releaseLock();
  const after = readCpu({ ...charged, generator: generator.pid });
  const perNodeAfter = perNodeCpu(charged.nodes);
  await hooks.answered();
  const summary = JSON.parse(text.split("\n", 1)[0]!) as {
    ok: number;
    failed: number;
    errors: Record<string, number>;
    seconds: number;
    latencyMs: { p50: number; p99: number };
  };
  // The generator started after `before`: all of its CPU so far falls in the window.
  const cpu = cpuPerRequest({ ...before, generatorUs: 0 }, after, summary.ok, charged, null, perNodeBefore, perNodeAfter);
  const active = await apiOk<{ total: number }>(base, token, "GET", "/api/keys?status=active&limit=1");
  const pending = await apiOk<{ total: number }>(base, token, "GET", "/api/keys?status=pending&limit=1");
  await stopProcess(generator, "SIGTERM", GRACE_MS);
  // Let the nodes release the 10,000 closed clients before the next measurement.
  await Bun.sleep(3000);
  return {
    ok: summary.ok,
    failed: summary.failed,
    errors: summary.errors,
    seconds: summary.seconds,
    p50Ms: summary.latencyMs.p50,
    p99Ms: summary.latencyMs.p99,
    activeKeys: active.total,
    pendingKeys: pending.total,
    cpu,
    keysSeconds,
  };
}

// ---------------------------------------------------------------------------------------------
// Output.

const thousands = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0));
const us = (n: number | null) => (n === null ? "–" : n < 10 ? n.toFixed(1) : thousands(n));
const cpuCell = (cpu: CpuPerRequest) => `${us(cpu.nodesUs)} / ${us(cpu.nginxUs)} / ${us(cpu.postgresUs)}`;

function renderTable(header: string[], rows: string[][]): string {
  const align = header.map((_, i) => (i >= 2 ? "--:" : "---"));
  return [header, align, ...rows].map((row) => `| ${row.join(" | ")} |`).join("\n");
}

/** HEAD and how many files under src/ and assets/ differ from it (read-only git, as run.ts does). */
function describeTree(): string {
  const head = Bun.spawnSync(["git", "rev-parse", "--short", "HEAD"], { cwd: ROOT }).stdout.toString().trim() || "unknown";
  const dirty = Bun.spawnSync(["git", "status", "--porcelain", "--", "src", "assets"], { cwd: ROOT })
    .stdout.toString()
    .split("\n")
    .filter(Boolean).length;
  return dirty === 0 ? head : `${head} with ${dirty} changed file(s) under src/ and assets/`;
}

function loadAverage(): number {
  return Number(readFileSync("/proc/loadavg", "utf8").split(" ", 1)[0]);
}

async function waitForQuiet(options: Options): Promise<{ waitedSeconds: number; quiet: boolean }> {
  const started = performance.now();
  const deadline = started + options.maxWaitMinutes * 60_000;
  for (;;) {
    const load = loadAverage();
    if (load < options.loadBelow) return { waitedSeconds: (performance.now() - started) / 1000, quiet: true };
    if (performance.now() >= deadline) return { waitedSeconds: (performance.now() - started) / 1000, quiet: false };
    process.stdout.write(`scale-out: load average ${readFileSync("/proc/loadavg", "utf8").trim()}; waiting for < ${options.loadBelow}\n`);
    await Bun.sleep(15_000);
  }
}

async function main(): Promise<number> {
  const options = readOptions(process.argv.slice(2));
  for (const [path, what] of [
    [WRK, "wrk (apt-get install wrk)"],
    [NGINX, "nginx (apt-get install nginx-light)"],
  ] as const) {
    if (!existsSync(path)) throw new Error(`${path} is missing: install ${what}`);
  }
  if (options.build || !existsSync(BINARY)) {
    process.stdout.write("scale-out: building dist/latchkey\n");
    const build = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "build.ts")], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
    if (build.exitCode !== 0) throw new Error("the build failed");
    Bun.spawnSync(["sync"]);
  }

  const waited = options.maxWaitMinutes > 0 ? await waitForQuiet(options) : { waitedSeconds: 0, quiet: false };
  const loadAtStart = readFileSync("/proc/loadavg", "utf8").trim();
  const startedAt = new Date();
  process.stdout.write(
    `scale-out: load average at start ${loadAtStart}` +
      (options.maxWaitMinutes > 0
        ? waited.quiet
          ? ` (waited ${Math.round(waited.waitedSeconds)} s for < ${options.loadBelow})\n`
          : ` (NOT below ${options.loadBelow} after ${Math.round(waited.waitedSeconds)} s: running anyway)\n`
        : " (no wait)\n"),
  );

  const work = tempDir("latchkey-scale-out-");
  if (options.keep) cleanups.splice(cleanups.length - 1, 1);
  const password = `bench-${crypto.randomUUID()}`;
  const baselineLog = join(work, "baseline.log");
  const baseline = spawnTracked([process.execPath, BASELINE_SCRIPT], { log: baselineLog, stdout: "pipe" });
  const reader = (baseline.stdout as ReadableStream<Uint8Array>).getReader();
  const first = await Promise.race([reader.read(), Bun.sleep(10_000).then(() => null)]);
  reader.releaseLock();
  const baselinePort = first && !first.done ? Number(new TextDecoder().decode(first.value).trim()) : NaN;
  if (!Number.isInteger(baselinePort)) throw new Error(`the baseline printed no port:\n${tail(baselineLog)}`);
  const baselineUrl = `http://${HOST}:${baselinePort}`;
  await waitUntilServing(`${baselineUrl}/`, baseline, 10_000, baselineLog, POLL_MS);

  const results: ConfigurationResult[] = [];
  for (const configuration of CONFIGURATIONS.filter((c) => options.only.has(c.id))) {
    results.push(await measureConfiguration(configuration, options, work, password, baselineUrl, baseline.pid));
  }
  const loadAtEnd = readFileSync("/proc/loadavg", "utf8").trim();
  const endedAt = new Date();

  const rows: string[][] = [];
  for (const r of results) {
    const label = r.configuration.label;
    rows.push([
      label,
      "bare Bun.serve (baseline), same wrk load",
      thousands(r.baseline.requestsPerSecond),
      `${ms(r.baseline.p50Ms)} ms`,
      `${ms(r.baseline.p99Ms)} ms`,
      "100%",
      `${us(r.baseline.cpu.nodesUs)} (Bun.serve)`,
      `${r.baseline.cpu.otherPercent.toFixed(0)}%`,
    ]);
    const proxied = r.proxiedBaseline;
    if (proxied) {
      rows.push([
        label,
        "bare Bun.serve through the same nginx",
        thousands(proxied.requestsPerSecond),
        `${ms(proxied.p50Ms)} ms`,
        `${ms(proxied.p99Ms)} ms`,
        `${((proxied.requestsPerSecond / r.baseline.requestsPerSecond) * 100).toFixed(0)}%`,
        `${us(proxied.cpu.nodesUs)} (Bun.serve) / ${us(proxied.cpu.nginxUs)} / –`,
        `${proxied.cpu.otherPercent.toFixed(0)}%`,
      ]);
    }
    rows.push([
      label,
      "GET /api/check (one machine, cached)",
      thousands(r.check.requestsPerSecond),
      `${ms(r.check.p50Ms)} ms`,
      `${ms(r.check.p99Ms)} ms`,
      `**${((r.check.requestsPerSecond / r.baseline.requestsPerSecond) * 100).toFixed(0)}%**`,
      cpuCell(r.check.cpu),
      `${r.check.cpu.otherPercent.toFixed(0)}%`,
    ]);
    rows.push([
      label,
      "POST /api/activate (new hwid each), durable",
      `${thousands(r.durability.acknowledged2xx / r.activate.seconds)}/s`,
      `${ms(r.activate.p50Ms)} ms`,
      `${ms(r.activate.p99Ms)} ms`,
      "n/a",
      cpuCell(r.activate.cpu),
      `${r.activate.cpu.otherPercent.toFixed(0)}%`,
    ]);
    rows.push([
      label,
      `POST /api/activate over ${r.spread.keys} keys (diagnostic), durable`,
      `${thousands(r.spread.acknowledged2xx / r.spread.result.seconds)}/s`,
      `${ms(r.spread.result.p50Ms)} ms`,
      `${ms(r.spread.result.p99Ms)} ms`,
      "n/a",
      cpuCell(r.spread.result.cpu),
      `${r.spread.result.cpu.otherPercent.toFixed(0)}%`,
    ]);
    rows.push([
      label,
      `${thousands(r.registration.ok)} registrations over WebSockets, ${options.wsConcurrency} in flight`,
      `${r.registration.seconds.toFixed(2)} s (${thousands(r.registration.ok / r.registration.seconds)}/s)`,
      `${ms(r.registration.p50Ms)} ms`,
      `${ms(r.registration.p99Ms)} ms`,
      "n/a",
      cpuCell(r.registration.cpu),
      `${r.registration.cpu.otherPercent.toFixed(0)}%`,
    ]);
    rows.push([
      label,
      `host reports over mTLS, keep-alive, to ${r.configuration.nodes === 1 ? "the node" : "each node"}`,
      thousands(r.reports.requestsPerSecond),
      `${ms(r.reports.p50Ms)} ms`,
      `${ms(r.reports.p99Ms)} ms`,
      "n/a",
      cpuCell(r.reports.cpu),
      `${r.reports.cpu.otherPercent.toFixed(0)}%`,
    ]);
  }
  const lines: string[] = [
    "",
    `scale-out: ${startedAt.toISOString()} – ${endedAt.toISOString()}; load average at start ${loadAtStart}, at end ${loadAtEnd}` +
      (options.maxWaitMinutes > 0 && !waited.quiet ? ` (the load never dropped below ${options.loadBelow})` : ""),
    `dist/latchkey built ${statSync(BINARY).mtime.toISOString()}; HEAD ${describeTree()}; Bun ${Bun.version}; ` +
      `${readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown CPU"}`,
    `wrk -t${WRK_THREADS} -c${WRK_CONNECTIONS} -d${options.duration}s (after ${options.warmup} s of warm-up), ` +
      `${options.clients} WebSocket clients, ${availableParallelism()} cores`,
    "",
    renderTable(
      [
        "configuration",
        "scenario",
        "req/s (or seconds)",
        "p50",
        "p99",
        "ratio to baseline",
        "CPU µs/req: nodes / nginx / PostgreSQL",
        "other CPU",
      ],
      rows,
    ),
    "",
  ];
  for (const r of results) {
    const d = r.durability;
    const g = r.registration;
    lines.push(
      `${r.configuration.id} activate: wrk ${thousands(r.activate.requests)} requests, ${thousands(d.acknowledged2xx)} 2xx ` +
        `(activate.lua counted ${thousands(d.createdByScript)} 201s, ${thousands(d.receiptsRecorded)} receipts) ` +
        `in ${r.activate.seconds.toFixed(2)} s; ` +
        `stored for the run through the API: ${thousands(d.storedForRun)} (${d.missing} acknowledged missing, ` +
        `${d.extra} stored without a reply wrk counted); key: ${thousands(d.rowsTotal)} rows, seat counter ${thousands(d.activationsUsed)}`,
      `${r.configuration.id} register: ${thousands(g.ok)} ok, ${g.failed} failed; keys active ${thousands(g.activeKeys)}, ` +
        `pending ${thousands(g.pendingKeys)}; ${options.clients / 100} POST /api/keys took ${g.keysSeconds.toFixed(1)} s`,
    );
    lines.push(
      `${r.configuration.id} activate over ${r.spread.keys} keys: ${thousands(r.spread.acknowledged2xx)} 2xx in ` +
        `${r.spread.result.seconds.toFixed(2)} s; the keys' seat counters through the API: ${thousands(r.spread.stored)}`,
    );
    const parts = (cpu: CpuPerRequest) => cpu.postgresShares.map(([kind, share]) => `${kind} ${(share * 100).toFixed(0)}%`).join(", ");
    if (r.configuration.postgres) {
      lines.push(
        `${r.configuration.id} PostgreSQL's CPU by process: activate: ${parts(r.activate.cpu)}; ` +
          `register: ${parts(r.registration.cpu)}; reports: ${parts(r.reports.cpu)}`,
      );
    }
    for (const [scenario, text] of Object.entries(r.waits)) {
      if (text) lines.push(`${r.configuration.id} ${scenario}: the nodes' busy PostgreSQL connections, sampled every 0.5 s: ${text}`);
    }
    if (r.configuration.nodes > 1) {
      const share = (cpu: CpuPerRequest) => cpu.nodeShares.map((s) => `${(s * 100).toFixed(0)}%`).join(" / ");
      lines.push(
        `${r.configuration.id} nodes' shares of the nodes' CPU: check ${share(r.check.cpu)}, activate ${share(r.activate.cpu)}, ` +
          `register ${share(r.registration.cpu)}, reports ${share(r.reports.cpu)}`,
      );
    }
  }
  const byId = new Map(results.map((r) => [r.configuration.id, r]));
  const ratio = (r: ConfigurationResult) => r.check.requestsPerSecond / r.baseline.requestsPerSecond;
  const activationRate = (r: ConfigurationResult) => r.durability.acknowledged2xx / r.activate.seconds;
  const targets: Array<[string, string, boolean]> = [];
  // Only for the configurations measured (--only).
  const measured = (["B", "C"] as const).filter((id) => byId.has(id));
  for (const id of measured) {
    const r = byId.get(id)!;
    targets.push([
      `${id}: /api/check ≥ 50% of bare Bun.serve`,
      `${(ratio(r) * 100).toFixed(0)}% (${thousands(r.check.requestsPerSecond)} vs ${thousands(r.baseline.requestsPerSecond)} req/s)`,
      ratio(r) >= 0.5,
    ]);
    if (r.proxiedBaseline) {
      // What the same proxy leaves to any service on this machine is the fair ceiling here.
      const proxiedRatio = r.check.requestsPerSecond / r.proxiedBaseline.requestsPerSecond;
      const rates = `${thousands(r.check.requestsPerSecond)} vs ${thousands(r.proxiedBaseline.requestsPerSecond)} req/s`;
      targets.push([
        `${id}: /api/check ≥ 50% of bare Bun.serve through the same nginx`,
        `${(proxiedRatio * 100).toFixed(0)}% (${rates})`,
        proxiedRatio >= 0.5,
      ]);
    }
  }
  for (const id of measured) {
    const r = byId.get(id)!;
    targets.push([`${id}: ≥ 1,000 durable activations/s`, `${thousands(activationRate(r))}/s`, activationRate(r) >= 1000]);
  }
  const c = byId.get("C");
  if (c) {
    targets.push([
      `C: ${thousands(options.clients)} registrations across three nodes in < 15 s`,
      `${c.registration.seconds.toFixed(2)} s, ${c.registration.failed} failed`,
      c.registration.seconds < 15 && c.registration.failed === 0 && options.clients >= 10_000,
    ]);
  }
  lines.push(
    "",
    renderTable(
      ["target", "measured", "status"],
      targets.map(([t, m, met]) => [t, m, met ? "met" : "MISSED"]),
    ),
    "",
  );
  const problems = results.flatMap((r) => r.problems);
  for (const problem of problems) lines.push(`WARNING ${problem}`);
  if (options.keep) lines.push(`scale-out: logs kept in ${work}`);
  process.stdout.write(`${lines.join("\n")}\n`);
  return problems.length > 0 ? 1 : 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (error) {
  if (!wasInterrupted()) process.stderr.write(`scale-out: ${(error as Error).stack ?? (error as Error).message}\n`);
} finally {
  await cleanUp();
}
process.exit(exitCode);
