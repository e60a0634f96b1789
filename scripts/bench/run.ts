/**
 * `npm run bench`: measures the compiled binary against a bare Bun.serve hello-world started in
 * the same run, so that SPEC §10's ratios compare like with like on this machine.
 *
 *   bun scripts/bench/run.ts [--duration 10] [--connections 64] [--threads 2] [--repeat 1]
 *                            [--warmup 2] [--cold-runs 10] [--keys 100000]
 *                            [--clients 10000] [--ws-concurrency 500] [--idle-seconds 10] [--mtls-certs 3000]
 *                            [--csr-clients 1000]
 *                            [--only cold-start,healthz,rpc-query,login,check,activate,register,idle,mtls,enroll-csr] [--build]
 *
 * Load comes from Debian's `wrk` on 127.0.0.1 only (WebSocket clients for `register`, `idle` and
 * `enroll-csr` come from `ws-clients.ts`, a separate Bun process; mTLS host reports and new
 * connections for `mtls` from `mtls-load.ts`, see `mtls.ts`). The server and the baseline are measured one
 * after the other, never at once, so that they do not fight over the cores. Every process this
 * script starts is stopped before it exits, on error and on Ctrl-C too. The results (and the
 * processes' logs) go to a fresh temporary directory whose path is printed at the end.
 */
import type { Subprocess } from "bun";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { seedLicenses, verifyActivations, writePairs, type DurabilityReport } from "./licensing.ts";
import {
  seedEnrollmentKeys,
  verifyBindings,
  verifyCertificates,
  writeClientRequests,
  type BindingReport,
  type CertificateReport,
} from "./enrollment.ts";
import { issueHostBundles, measureMtls, type MtlsMeasurement, type MtlsRunResult } from "./mtls.ts";
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

const BINARY = join(ROOT, "dist", "latchkey");
const BASELINE_SCRIPT = join(import.meta.dir, "baseline.ts");
const PUT_SCRIPT = join(import.meta.dir, "put-json.lua");
const LOGIN_SCRIPT = join(import.meta.dir, "login.lua");
const CHECK_SCRIPT = join(import.meta.dir, "check.lua");
const ACTIVATE_SCRIPT = join(import.meta.dir, "activate.lua");
const WS_CLIENTS_SCRIPT = join(import.meta.dir, "ws-clients.ts");
const WS_BASELINE_SCRIPT = join(import.meta.dir, "ws-baseline.ts");
const WRK = "/usr/bin/wrk";

const SCENARIOS = ["cold-start", "healthz", "rpc-query", "login", "check", "activate", "register", "idle", "mtls", "enroll-csr"] as const;
type ScenarioName = (typeof SCENARIOS)[number];

interface Options {
  duration: number;
  connections: number;
  threads: number;
  repeat: number;
  warmup: number;
  coldRuns: number;
  /** License keys in the database for `check`. */
  keys: number;
  /** WebSocket clients for `register` and `idle`, each with its own pending enrollment key. */
  clients: number;
  /** Registrations in flight at once (sockets opened but not yet answered). */
  wsConcurrency: number;
  /** Seconds the connected clients idle before RSS is read again. */
  idleSeconds: number;
  /** `mtls`: client certificates (one host each) per cold-cache run, issued before the runs. */
  mtlsCerts: number;
  /** `enroll-csr`: clients per run, each with its own pending key and its own pre-made CSR. */
  csrClients: number;
  only: Set<ScenarioName>;
  build: boolean;
}

function boundedInt(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`--${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(raw)})`);
  }
  return value;
}

function readOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: "string" },
      connections: { type: "string" },
      threads: { type: "string" },
      repeat: { type: "string" },
      warmup: { type: "string" },
      "cold-runs": { type: "string" },
      keys: { type: "string" },
      clients: { type: "string" },
      "ws-concurrency": { type: "string" },
      "idle-seconds": { type: "string" },
      "mtls-certs": { type: "string" },
      "csr-clients": { type: "string" },
      only: { type: "string", multiple: true },
      build: { type: "boolean" },
    },
    strict: true,
  });
  const only = new Set<ScenarioName>();
  for (const name of (values.only ?? []).flatMap((v) => v.split(","))) {
    if (!(SCENARIOS as readonly string[]).includes(name)) {
      throw new Error(`--only takes ${SCENARIOS.join(", ")} (got ${JSON.stringify(name)})`);
    }
    only.add(name as ScenarioName);
  }
  const options: Options = {
    duration: boundedInt("duration", values.duration, 10, 1, 120),
    connections: boundedInt("connections", values.connections, 64, 1, 1024),
    threads: boundedInt("threads", values.threads, 2, 1, 16),
    repeat: boundedInt("repeat", values.repeat, 1, 1, 10),
    warmup: boundedInt("warmup", values.warmup, 2, 0, 30),
    coldRuns: boundedInt("cold-runs", values["cold-runs"], 10, 1, 50),
    keys: boundedInt("keys", values.keys, 100_000, CHECK_SEED.activatedKeys, 1_000_000),
    clients: boundedInt("clients", values.clients, 10_000, 1, 18_000),
    wsConcurrency: boundedInt("ws-concurrency", values["ws-concurrency"], 500, 1, 5_000),
    idleSeconds: boundedInt("idle-seconds", values["idle-seconds"], 10, 0, 600),
    mtlsCerts: boundedInt("mtls-certs", values["mtls-certs"], 3_000, 100, 20_000),
    csrClients: boundedInt("csr-clients", values["csr-clients"], 1_000, 10, 10_000),
    only: only.size > 0 ? only : new Set(SCENARIOS),
    build: values.build ?? false,
  };
  if (options.threads > options.connections) throw new Error("--threads cannot exceed --connections (wrk needs a connection per thread)");
  return options;
}

stopOnSignals("bench");

// ---------------------------------------------------------------------------------------------
// The two servers under test.

interface Running {
  child: Subprocess;
  url: string;
}

async function startLatchkey(
  dataDir: string,
  password: string,
  log: string,
  port = freePort(),
  extraArgs: string[] = [],
): Promise<Running> {
  const child = spawnTracked([BINARY, "server", "--listen", `${HOST}:${port}`, "--data-dir", dataDir, ...extraArgs], {
    env: { ...process.env, LATCHKEY_ADMIN_PASSWORD: password },
    log,
  });
  const url = `http://${HOST}:${port}`;
  await waitUntilServing(`${url}/healthz`, child, 30_000, log);
  return { child, url };
}

async function startBaseline(log: string, script = BASELINE_SCRIPT): Promise<Running> {
  const child = spawnTracked([process.execPath, script], { log, stdout: "pipe" });
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  const first = await Promise.race([reader.read(), Bun.sleep(10_000).then(() => null)]);
  reader.releaseLock();
  const port = first && !first.done ? Number(new TextDecoder().decode(first.value).trim()) : NaN;
  if (!Number.isInteger(port) || port <= 0) throw new Error(`the baseline did not print its port:\n${tail(log)}`);
  const url = `http://${HOST}:${port}`;
  await waitUntilServing(`${url}/`, child, 10_000, log);
  return { child, url };
}

async function login(url: string, password: string): Promise<string> {
  const response = await fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password }),
  });
  const body = (await response.json()) as { token?: string };
  if (!response.ok || typeof body.token !== "string") throw new Error(`login failed: ${response.status} ${JSON.stringify(body)}`);
  return body.token;
}

// ---------------------------------------------------------------------------------------------
// wrk: run it, then read its report.

interface WrkResult {
  requestsPerSecond: number;
  requests: number;
  seconds: number;
  p50Ms: number;
  p75Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** CPU time (user + system) the server spent per request: steadier than req/s on shared cores. */
  serverCpuUsPerRequest: number | null;
  /** What the Lua script printed from done(), e.g. activate.lua's count of 201s. */
  scriptLines: string[];
  /**
   * CPU that neither the server nor wrk used during the run, in % of all cores: other work on
   * the machine, which makes req/s and tail latency of that run unreliable.
   */
  otherCpuPercent: number | null;
}

const TIME_UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function parseMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!match) throw new Error(`wrk printed a time bench cannot read: ${JSON.stringify(text)}`);
  return Number(match[1]) * TIME_UNITS[match[2]!]!;
}

function parseWrk(output: string): WrkResult {
  const need = (pattern: RegExp, what: string): RegExpExecArray => {
    const match = pattern.exec(output);
    if (!match) throw new Error(`wrk's report has no ${what}:\n${output}`);
    return match;
  };
  const percentile = (p: number) => parseMs(need(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m"), `${p}% latency`)[1]!);
  const totals = need(/(\d+) requests in ([\d.]+)(us|ms|s|m),/, "request count");
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    requestsPerSecond: Number(need(/Requests\/sec:\s+([\d.]+)/, "Requests/sec")[1]),
    requests: Number(totals[1]),
    seconds: parseMs(`${totals[2]}${totals[3]}`) / 1000,
    p50Ms: percentile(50),
    p75Ms: percentile(75),
    p90Ms: percentile(90),
    p99Ms: percentile(99),
    maxMs: parseMs(need(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m, "latency max")[1]!),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
    socketErrors: {
      connect: Number(errors?.[1] ?? 0),
      read: Number(errors?.[2] ?? 0),
      write: Number(errors?.[3] ?? 0),
      timeout: Number(errors?.[4] ?? 0),
    },
    serverCpuUsPerRequest: null,
    scriptLines: output.split("\n").filter((line) => /^[\w-]+\.lua: /.test(line)),
    otherCpuPercent: null,
  };
}

interface WrkRun {
  url: string;
  /** The process under load, whose CPU time is read before and after. */
  server: Subprocess;
  seconds: number;
  connections: number;
  threads: number;
  script?: string;
  scriptArgs?: string[];
}

async function runWrk(run: WrkRun): Promise<WrkResult> {
  const cmd = [
    WRK,
    "-t",
    String(run.threads),
    "-c",
    String(run.connections),
    "-d",
    `${run.seconds}s`,
    "--latency",
    "--timeout",
    "5s",
    ...(run.script ? ["-s", run.script] : []),
    run.url,
    ...(run.scriptArgs ? ["--", ...run.scriptArgs] : []),
  ];
  const cpuBefore = cpuMicroseconds(run.server.pid);
  const machineBefore = machineBusyMicroseconds();
  const startedAt = performance.now();
  const child = spawnTracked(cmd, { stdout: "pipe" });
  const killer = setTimeout(() => child.kill("SIGKILL"), (run.seconds + 30) * 1000);
  const output = await new Response(child.stdout as ReadableStream<Uint8Array>).text();
  const code = await child.exited;
  clearTimeout(killer);
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`);
  const cpuAfter = cpuMicroseconds(run.server.pid);
  const machineAfter = machineBusyMicroseconds();
  const wallUs = (performance.now() - startedAt) * 1000;
  const result = parseWrk(output);
  if (cpuBefore !== null && cpuAfter !== null && result.requests > 0) {
    result.serverCpuUsPerRequest = (cpuAfter - cpuBefore) / result.requests;
  }
  const wrkUs = child.resourceUsage()?.cpuTime.total;
  if (cpuBefore !== null && cpuAfter !== null && machineBefore !== null && machineAfter !== null && wrkUs !== undefined) {
    const other = machineAfter - machineBefore - (cpuAfter - cpuBefore) - Number(wrkUs);
    result.otherCpuPercent = Math.max(0, (other / (wallUs * availableParallelism())) * 100);
  }
  return result;
}

/** Busy CPU time of the whole machine (all cores, /proc/stat), in microseconds. */
function machineBusyMicroseconds(): number | null {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return ((user + nice + system + irq + softirq + steal) / CLOCK_TICKS) * 1e6;
  } catch {
    return null;
  }
}

const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** utime + stime of a process from /proc, in microseconds; null where /proc is missing. */
function cpuMicroseconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which sits in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1e6;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

interface ThroughputRow {
  scenario: string;
  description: string;
  runs: WrkResult[];
  baselineRuns: WrkResult[];
}

interface ColdStartRow {
  scenario: string;
  samplesMs: number[];
  baselines: { name: string; samplesMs: number[] }[];
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Runs the same load against latchkey and then the baseline, `repeat` times, alternating. */
async function compareWithBaseline(
  options: Options,
  scenario: string,
  description: string,
  target: Omit<WrkRun, "seconds" | "connections" | "threads">,
  baseline: Omit<WrkRun, "seconds" | "connections" | "threads">,
): Promise<ThroughputRow> {
  const shape = { connections: options.connections, threads: options.threads };
  const row: ThroughputRow = { scenario, description, runs: [], baselineRuns: [] };
  for (let i = 0; i < options.repeat; i++) {
    for (const [load, results] of [
      [target, row.runs],
      [baseline, row.baselineRuns],
    ] as const) {
      if (options.warmup > 0 && i === 0) await runWrk({ ...load, ...shape, seconds: options.warmup });
      results.push(await runWrk({ ...load, ...shape, seconds: options.duration }));
    }
  }
  return row;
}

async function measureLogins(options: Options, server: Running, password: string): Promise<ThroughputRow> {
  // argon2id is meant to be slow: a few connections keep Bun's hashing threads busy, and a
  // short run is enough to count a few hundred logins.
  const connections = Math.min(options.connections, 4);
  const load = {
    url: `${server.url}/api/auth/login`,
    server: server.child,
    script: LOGIN_SCRIPT,
    scriptArgs: ["admin", password],
    connections,
    threads: 1,
  };
  const row: ThroughputRow = {
    scenario: "POST /api/auth/login",
    description: `correct password, ${connections} connections`,
    runs: [],
    baselineRuns: [],
  };
  for (let i = 0; i < options.repeat; i++) row.runs.push(await runWrk({ ...load, seconds: Math.min(options.duration, 5) }));
  return row;
}

// ---------------------------------------------------------------------------------------------
// Licensing: GET /api/check over a large key table, and durable POST /api/activate.

/** What `check` seeds besides the `--keys` keys: a few thousand activated machines to look up. */
const CHECK_SEED = { activatedKeys: 4_000, multiMachineKeys: 500, extraMachines: 2 };

/** Runs an admin command of the binary on the data directory (SQLite is shared with the server). */
function latchkeyCli(args: string[], dataDir: string): string {
  const result = Bun.spawnSync([BINARY, ...args, "--data-dir", dataDir], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`latchkey ${args.join(" ")} exited with ${result.exitCode}:\n${result.stderr.toString()}`);
  return result.stdout.toString().trim();
}

interface CheckSeed {
  keys: number;
  activations: number;
  seconds: number;
}

async function measureChecks(
  options: Options,
  server: Running,
  baseline: Running,
  dataDir: string,
  appId: number,
  work: string,
): Promise<{ row: ThroughputRow; seed: CheckSeed }> {
  const seeded = seedLicenses(dataDir, { appId, keys: options.keys, ...CHECK_SEED });
  const pairsFile = join(work, "check-pairs.txt");
  writePairs(pairsFile, seeded.pairs);
  const seed = { keys: seeded.keys, activations: seeded.activations, seconds: seeded.seconds };
  process.stdout.write(
    `bench: seeded ${thousands(seed.keys)} keys and ${thousands(seed.activations)} activations in ${seed.seconds.toFixed(1)} s\n`,
  );
  // One check by hand first: a failure here means the seed and the server disagree, which a run
  // full of fast 404s must not hide.
  const first = seeded.pairs[0]!;
  const probe = await fetch(`${server.url}/api/check?token=${first.token}&hwid=${encodeURIComponent(first.hwid)}`);
  const body = (await probe.json()) as { result?: unknown; receipt?: unknown };
  if (probe.status !== 201 || body.result !== "ok" || typeof body.receipt !== "string") {
    throw new Error(`a seeded key does not check: ${probe.status} ${JSON.stringify(body)}`);
  }
  const row = await compareWithBaseline(
    options,
    `GET /api/check (${thousands(seed.keys)} keys)`,
    `${thousands(seeded.pairs.length)} activated (token, hwid) pairs, cycled`,
    { url: `${server.url}/`, server: server.child, script: CHECK_SCRIPT, scriptArgs: [pairsFile] },
    { url: `${baseline.url}/`, server: baseline.child, script: CHECK_SCRIPT, scriptArgs: [pairsFile] },
  );
  return { row, seed };
}

interface ActivateLoad {
  row: ThroughputRow;
  token: string;
  ackDir: string;
  /** 2xx replies that wrk counted over every run, the warm-up included. */
  acknowledgedByWrk: number;
  /** Runs made, the warm-up included: each may leave up to --connections requests in flight. */
  runs: number;
}

async function measureActivations(options: Options, server: Running, dataDir: string, appId: number, work: string): Promise<ActivateLoad> {
  const token = latchkeyCli(["license", "create", "--app", String(appId), "--activations", "-1", "--memo", "bench: activate"], dataDir);
  const ackDir = join(work, "activate-acks");
  mkdirSync(ackDir);
  const load = (run: string) => ({
    url: `${server.url}/api/activate`,
    server: server.child,
    script: ACTIVATE_SCRIPT,
    scriptArgs: [token, run, ackDir],
    connections: options.connections,
    threads: options.threads,
  });
  const row: ThroughputRow = {
    scenario: "POST /api/activate (new hwid)",
    description: `form body, a new machine on an unlimited key every request, ${options.connections} connections`,
    runs: [],
    baselineRuns: [],
  };
  const all: WrkResult[] = [];
  if (options.warmup > 0) all.push(await runWrk({ ...load("warmup"), seconds: options.warmup }));
  for (let i = 0; i < options.repeat; i++) {
    const result = await runWrk({ ...load(`run${i + 1}`), seconds: options.duration });
    row.runs.push(result);
    all.push(result);
  }
  return { row, token, ackDir, acknowledgedByWrk: all.reduce((sum, r) => sum + r.requests - r.non2xx, 0), runs: all.length };
}

interface Durability extends DurabilityReport {
  acknowledgedByWrk: number;
  /** `missing` keeps at most ten examples; this is how many there were. */
  missingCount: number;
  /** What went wrong, if anything: an acknowledged activation missing is a broken promise. */
  problems: string[];
}

/** Kills the server with SIGKILL (no shutdown, no checkpoint), then reads what was committed. */
async function checkDurability(server: Running, dataDir: string, load: ActivateLoad, connections: number): Promise<Durability> {
  server.child.kill("SIGKILL");
  await server.child.exited;
  const report = verifyActivations(dataDir, load.token, load.ackDir);
  const problems: string[] = [];
  if (report.missing.length > 0) {
    problems.push(
      `${report.missing.length} acknowledged activation(s) missing after kill -9, e.g. ${report.missing.slice(0, 3).join(", ")}`,
    );
  }
  if (report.acknowledged !== load.acknowledgedByWrk) {
    problems.push(`wrk counted ${load.acknowledgedByWrk} 2xx but activate.lua recorded ${report.acknowledged} receipts`);
  }
  if (report.activationsUsed !== report.rows)
    problems.push(`the key's seat counter says ${report.activationsUsed} but it has ${report.rows} activation rows`);
  if (report.unacknowledged > connections * load.runs) {
    problems.push(
      `${report.unacknowledged} activation rows were never acknowledged: ` +
        `more than the ${connections * load.runs} requests that can be in flight when runs end`,
    );
  }
  return {
    ...report,
    missing: report.missing.slice(0, 10),
    missingCount: report.missing.length,
    acknowledgedByWrk: load.acknowledgedByWrk,
    problems,
  };
}

// ---------------------------------------------------------------------------------------------
// Enrollment: many WebSocket clients registering with pending keys, then staying connected.

interface ClientsReport {
  keys: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  seconds: number;
  open: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  /** Seconds each tenth of the answers took (older generators: absent). */
  tenthsSeconds?: number[];
}

/** One server under ws-clients.ts: its registrations, CPU and memory. */
interface ClientsLoad {
  /** What ws-clients.ts printed once every key had its answer. */
  generator: ClientsReport;
  /** Server CPU time (user + system) over the registrations, in seconds. */
  serverCpuSeconds: number | null;
  /** ws-clients.ts's CPU time over the registrations (its start-up included), in seconds. */
  generatorCpuSeconds: number | null;
  /** CPU that neither the server nor ws-clients.ts used during the registrations, in % of all cores. */
  otherCpuPercent: number | null;
  /**
   * Server VmRSS in MB: before any client connects, once all are connected and settled, after
   * `--idle-seconds` more of idling, and 3 s after they all left.
   */
  rssMb: { before: number; connected: number; afterIdle: number; afterClose: number };
  settleSeconds: number;
  idleSeconds: number;
  /** Open file descriptors of the server with every client connected (≈ one per socket). */
  serverFds: number | null;
  /** Registered sockets the server closed while the clients idled (ws-clients.ts logs each one). */
  unexpectedCloses: number;
}

interface EnrollmentRun {
  clients: number;
  concurrency: number;
  seedSeconds: number;
  latchkey: ClientsLoad;
  /** The same clients against ws-baseline.ts (a bare Bun.serve WebSocket), keys ignored. */
  baseline: ClientsLoad;
  bindings: BindingReport;
  problems: string[];
}

function rssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

function fdCount(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Waits until RSS moves by less than 1 MB over 3 s (at most `maxSeconds`); returns the seconds waited. */
async function settleRss(pid: number, maxSeconds: number): Promise<number> {
  const started = performance.now();
  const samples: number[] = [];
  while ((performance.now() - started) / 1000 < maxSeconds) {
    await Bun.sleep(500);
    samples.push(rssKb(pid));
    const window = samples.slice(-7);
    if (window.length === 7 && Math.max(...window) - Math.min(...window) < 1024) break;
  }
  return (performance.now() - started) / 1000;
}

/** Reads lines from a child's piped stdout until one parses as JSON, or the time runs out. */
async function firstJsonLine(child: Subprocess, timeoutMs: number, log: string): Promise<unknown> {
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const deadline = performance.now() + timeoutMs;
  try {
    while (performance.now() < deadline) {
      const chunk = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - performance.now())).then(() => null)]);
      if (chunk === null) break;
      if (chunk.done) throw new Error(`ws-clients.ts exited (${child.exitCode ?? child.signalCode}) without a report:\n${tail(log)}`);
      buffer += decoder.decode(chunk.value, { stream: true });
      const newline = buffer.indexOf("\n");
      if (newline >= 0) return JSON.parse(buffer.slice(0, newline));
    }
  } finally {
    reader.releaseLock();
  }
  throw new Error(`ws-clients.ts printed no report within ${timeoutMs / 1000} s:\n${tail(log)}`);
}

/**
 * Runs ws-clients.ts against `server` (one socket and one `client/register` per key, at most
 * --ws-concurrency in flight, every registered socket kept open), measures, calls
 * `whileConnected` with every client still connected, then lets the clients go.
 */
async function driveClients(
  options: Options,
  server: Running,
  keysFile: string,
  assignmentsFile: string,
  generatorLog: string,
  whileConnected: () => void = () => {},
): Promise<ClientsLoad> {
  const pid = server.child.pid;
  await Bun.sleep(1000);
  const before = rssKb(pid);
  const cpuBefore = cpuMicroseconds(pid);
  const machineBefore = machineBusyMicroseconds();
  const startedAt = performance.now();
  const timeoutSeconds = 120;
  const generator = spawnTracked(
    [
      process.execPath,
      WS_CLIENTS_SCRIPT,
      "--url",
      `${server.url.replace(/^http/, "ws")}/ws`,
      "--keys",
      keysFile,
      "--out",
      assignmentsFile,
      "--concurrency",
      String(options.wsConcurrency),
      "--timeout",
      String(timeoutSeconds),
    ],
    { log: generatorLog, stdout: "pipe" },
  );
  try {
    const generatorReport = (await firstJsonLine(generator, (timeoutSeconds + 30) * 1000, generatorLog)) as ClientsReport;
    const cpuAfter = cpuMicroseconds(pid);
    const generatorCpu = cpuMicroseconds(generator.pid);
    const machineAfter = machineBusyMicroseconds();
    const wallUs = (performance.now() - startedAt) * 1000;
    const otherCpuPercent =
      cpuBefore !== null && cpuAfter !== null && generatorCpu !== null && machineBefore !== null && machineAfter !== null
        ? Math.max(0, ((machineAfter - machineBefore - (cpuAfter - cpuBefore) - generatorCpu) / (wallUs * availableParallelism())) * 100)
        : null;
    const settleSeconds = await settleRss(pid, 30);
    const connected = rssKb(pid);
    const serverFds = fdCount(pid);
    await Bun.sleep(options.idleSeconds * 1000);
    const afterIdle = rssKb(pid);
    whileConnected();
    let unexpectedCloses = 0;
    try {
      unexpectedCloses = readFileSync(generatorLog, "utf8")
        .split("\n")
        .filter((line) => line.includes('"event":"closed"')).length;
    } catch {
      // no log: nothing was closed
    }
    await stopProcess(generator);
    await Bun.sleep(3000);
    const afterClose = rssKb(pid);
    return {
      generator: generatorReport,
      serverCpuSeconds: cpuBefore !== null && cpuAfter !== null ? (cpuAfter - cpuBefore) / 1e6 : null,
      generatorCpuSeconds: generatorCpu === null ? null : generatorCpu / 1e6,
      otherCpuPercent,
      rssMb: { before: before / 1024, connected: connected / 1024, afterIdle: afterIdle / 1024, afterClose: afterClose / 1024 },
      settleSeconds,
      idleSeconds: options.idleSeconds,
      serverFds,
      unexpectedCloses,
    };
  } finally {
    await stopProcess(generator);
  }
}

/**
 * Every key must be used, and every client comes from 127.0.0.1: a fleet comes from many
 * addresses, so the cap on one address's not-yet-registered sockets (64 by default) is raised to
 * the registrations in flight, which is all this benchmark holds unregistered at once.
 */
function enrollmentServerArgs(options: Options): string[] {
  return ["--require-auth-key", "--ws-unauth-per-address", String(options.wsConcurrency)];
}

/**
 * latchkey started with --require-auth-key and `--clients` pending keys inserted into its
 * database; ws-clients.ts registers a client on each key over /ws and keeps every socket open.
 * The database is read back while they are still connected. Then the same clients against
 * ws-baseline.ts, one after the other, never both at once.
 */
async function measureEnrollment(options: Options, work: string, password: string): Promise<EnrollmentRun> {
  const dataDir = join(work, "enrollment-data");
  mkdirSync(dataDir);
  const keysFile = join(work, "enrollment-keys.txt");
  const assignmentsFile = join(work, "enrollment-assignments.txt");
  const server = await startLatchkey(dataDir, password, join(work, "latchkey-enrollment.log"), freePort(), enrollmentServerArgs(options));
  let latchkey: ClientsLoad;
  let bindings: BindingReport | undefined;
  let seedSeconds: number;
  try {
    const seeded = seedEnrollmentKeys(dataDir, options.clients, keysFile);
    seedSeconds = seeded.seconds;
    process.stdout.write(`bench: seeded ${thousands(seeded.keys)} pending enrollment keys in ${seeded.seconds.toFixed(2)} s; latchkey\n`);
    latchkey = await driveClients(options, server, keysFile, assignmentsFile, join(work, "ws-clients-latchkey.log"), () => {
      bindings = verifyBindings(dataDir, keysFile, assignmentsFile);
    });
  } finally {
    await stopProcess(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
  process.stdout.write("bench: the same clients against ws-baseline.ts\n");
  const baselineServer = await startBaseline(join(work, "ws-baseline.log"), WS_BASELINE_SCRIPT);
  let baseline: ClientsLoad;
  try {
    baseline = await driveClients(
      options,
      baselineServer,
      keysFile,
      join(work, "baseline-assignments.txt"),
      join(work, "ws-clients-baseline.log"),
    );
  } finally {
    await stopProcess(baselineServer.child);
  }

  const b = bindings!;
  const report = latchkey.generator;
  const problems: string[] = [];
  if (report.ok !== options.clients)
    problems.push(`register: ${options.clients - report.ok} of ${options.clients} registrations failed: ${JSON.stringify(report.errors)}`);
  if (b.acknowledged !== report.ok)
    problems.push(`register: ws-clients.ts counted ${report.ok} registrations but recorded ${b.acknowledged}`);
  if (b.wrongBindings > 0)
    problems.push(`register: ${b.wrongBindings} acknowledged key(s) not active for their UUID, e.g. ${b.examples.join("; ")}`);
  if (b.doubleBound > 0) problems.push(`register: ${b.doubleBound} UUID(s) bound to more than one key`);
  if (b.active !== b.keys || b.distinctUuids !== b.keys)
    problems.push(`register: ${b.active} of ${b.keys} keys active, ${b.distinctUuids} distinct client UUIDs`);
  if (latchkey.unexpectedCloses > 0) problems.push(`idle: latchkey closed ${latchkey.unexpectedCloses} idle registered socket(s)`);
  if (report.open !== report.ok) problems.push(`idle: ${report.open} sockets open for ${report.ok} registrations`);
  if (baseline.generator.ok !== options.clients)
    problems.push(`ws-baseline: ${options.clients - baseline.generator.ok} clients failed: ${JSON.stringify(baseline.generator.errors)}`);
  return { clients: options.clients, concurrency: options.wsConcurrency, seedSeconds, latchkey, baseline, bindings: b, problems };
}

// ---------------------------------------------------------------------------------------------
// Enrollment with certificates: client/register, then client/csr on the same socket, as the agent does.

/** What ws-clients.ts printed; with --requests (and no --register-only) also the certificates. */
interface CsrClientsReport extends ClientsReport {
  certificates?: number;
  /** From `client/csr` sent to the certificate. */
  csrLatencyMs?: ClientsReport["latencyMs"];
  /** From the socket's opening to the certificate. */
  enrolledLatencyMs?: ClientsReport["latencyMs"];
}

type CsrMode = "register only" | "register + csr";

interface CsrRunResult {
  mode: CsrMode;
  run: number;
  generator: CsrClientsReport;
  /** Server CPU time (user + system) from the generator's start to its report, in seconds. */
  serverCpuSeconds: number | null;
  /** ws-clients.ts's CPU time (its start-up included), in seconds. */
  generatorCpuSeconds: number | null;
  /** CPU that neither the server nor ws-clients.ts used meanwhile, in % of all cores. */
  otherCpuPercent: number | null;
  /** The window those CPU times were read over: the generator's start to its report, in seconds. */
  wallSeconds: number;
  bindings: BindingReport;
  certificates: CertificateReport | null;
}

interface EnrollCsrRun {
  clients: number;
  concurrency: number;
  /** Making the agents' keys and requests, before any clock started. */
  requestsSeconds: number;
  runs: CsrRunResult[];
  problems: string[];
}

/**
 * `enroll-csr`: `--csr-clients` agents, each with its own pending key, register over /ws and then
 * send `client/csr` on the same socket with a request made before the clock starts (a P-256 key,
 * CN = the client's hostname `bench-NNNNNN`, `createCertificateRequest` as the agent makes it). The
 * baseline is the same clients (same keys count, hostnames, concurrency) registering only. Keys
 * are single-use, so each run gets a fresh server and data directory; register-only first, then
 * both steps, `repeat` times, never at once. The database is read back after every run.
 */
async function measureEnrollCsr(options: Options, work: string, password: string): Promise<EnrollCsrRun> {
  const requestsFile = join(work, "enroll-csr-requests.jsonl");
  const made = await writeClientRequests(options.csrClients, requestsFile);
  process.stdout.write(`bench: made ${thousands(made.requests)} P-256 keys and CSRs in ${made.seconds.toFixed(1)} s (not measured)\n`);
  const runs: CsrRunResult[] = [];
  for (let run = 1; run <= options.repeat; run++) {
    for (const mode of ["register only", "register + csr"] as const) {
      const result = await runCsrClients(options, mode, run, requestsFile, work, password);
      const g = result.generator;
      process.stdout.write(
        `bench: enroll-csr run ${run}, ${mode}: ${thousands(g.ok)} registered` +
          `${g.certificates === undefined ? "" : `, ${thousands(g.certificates)} certificates`} in ${g.seconds.toFixed(2)} s\n`,
      );
      runs.push(result);
    }
  }
  return {
    clients: options.csrClients,
    concurrency: options.wsConcurrency,
    requestsSeconds: made.seconds,
    runs,
    problems: runs.flatMap(csrProblems),
  };
}

async function runCsrClients(
  options: Options,
  mode: CsrMode,
  run: number,
  requestsFile: string,
  work: string,
  password: string,
): Promise<CsrRunResult> {
  const name = `enroll-csr-${run}-${mode === "register only" ? "register" : "csr"}`;
  const dataDir = join(work, `${name}-data`);
  mkdirSync(dataDir);
  const keysFile = join(work, `${name}-keys.txt`);
  const assignmentsFile = join(work, `${name}-assignments.txt`);
  const issuedFile = join(work, `${name}-issued.jsonl`);
  const generatorLog = join(work, `ws-clients-${name}.log`);
  const server = await startLatchkey(dataDir, password, join(work, `latchkey-${name}.log`), freePort(), enrollmentServerArgs(options));
  try {
    seedEnrollmentKeys(dataDir, options.csrClients, keysFile);
    // The seed's pages go to disk now rather than during the run, as after the build.
    Bun.spawnSync(["sync"]);
    await Bun.sleep(1000);
    const pid = server.child.pid;
    const cpuBefore = cpuMicroseconds(pid);
    const machineBefore = machineBusyMicroseconds();
    const startedAt = performance.now();
    const timeoutSeconds = 120 + Math.ceil(options.csrClients / 50);
    const generator = spawnTracked(
      [
        process.execPath,
        WS_CLIENTS_SCRIPT,
        "--url",
        `${server.url.replace(/^http/, "ws")}/ws`,
        "--keys",
        keysFile,
        "--out",
        assignmentsFile,
        "--concurrency",
        String(options.wsConcurrency),
        "--timeout",
        String(timeoutSeconds),
        "--requests",
        requestsFile,
        ...(mode === "register only" ? ["--register-only"] : ["--issued", issuedFile]),
      ],
      { log: generatorLog, stdout: "pipe" },
    );
    try {
      const report = (await firstJsonLine(generator, (timeoutSeconds + 30) * 1000, generatorLog)) as CsrClientsReport;
      const cpuAfter = cpuMicroseconds(pid);
      const generatorCpu = cpuMicroseconds(generator.pid);
      const machineAfter = machineBusyMicroseconds();
      const wallUs = (performance.now() - startedAt) * 1000;
      const serverUs = cpuBefore !== null && cpuAfter !== null ? cpuAfter - cpuBefore : null;
      const otherCpuPercent =
        serverUs !== null && generatorCpu !== null && machineBefore !== null && machineAfter !== null
          ? Math.max(0, ((machineAfter - machineBefore - serverUs - generatorCpu) / (wallUs * availableParallelism())) * 100)
          : null;
      return {
        mode,
        run,
        generator: report,
        serverCpuSeconds: serverUs === null ? null : serverUs / 1e6,
        generatorCpuSeconds: generatorCpu === null ? null : generatorCpu / 1e6,
        otherCpuPercent,
        wallSeconds: wallUs / 1e6,
        bindings: verifyBindings(dataDir, keysFile, assignmentsFile),
        certificates: mode === "register + csr" ? verifyCertificates(dataDir, issuedFile, requestsFile) : null,
      };
    } finally {
      await stopProcess(generator);
    }
  } finally {
    await stopProcess(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** A run's broken promises: a failed step, a key not bound to its client, a certificate missing or wrong. */
function csrProblems(result: CsrRunResult): string[] {
  const who = `enroll-csr run ${result.run} (${result.mode})`;
  const g = result.generator;
  const b = result.bindings;
  const c = result.certificates;
  const problems: string[] = [];
  if (g.ok !== g.keys) problems.push(`${who}: ${g.keys - g.ok} of ${g.keys} registrations failed: ${JSON.stringify(g.errors)}`);
  if (b.acknowledged !== g.ok) problems.push(`${who}: ws-clients.ts counted ${g.ok} registrations but recorded ${b.acknowledged}`);
  if (b.wrongBindings > 0)
    problems.push(`${who}: ${b.wrongBindings} acknowledged key(s) not active for their UUID, e.g. ${b.examples.join("; ")}`);
  if (b.doubleBound > 0) problems.push(`${who}: ${b.doubleBound} UUID(s) bound to more than one key`);
  if (b.active !== b.keys || b.distinctUuids !== b.keys)
    problems.push(`${who}: ${b.active} of ${b.keys} keys active, ${b.distinctUuids} distinct client UUIDs`);
  if (result.mode === "register + csr") {
    const issued = g.certificates ?? 0;
    if (issued !== g.keys) problems.push(`${who}: ${g.keys - issued} of ${g.keys} clients got no certificate: ${JSON.stringify(g.errors)}`);
    if (!c || c.acknowledged !== issued)
      problems.push(`${who}: ws-clients.ts counted ${issued} certificates but recorded ${c?.acknowledged ?? "none"}`);
    if (c && c.distinctSerials !== c.acknowledged) problems.push(`${who}: ${c.acknowledged - c.distinctSerials} repeated serial(s)`);
    if (c && c.rows !== c.acknowledged)
      problems.push(`${who}: ${c.rows} client certificates in the database for ${c.acknowledged} acknowledged`);
    if (c && c.wrong > 0) problems.push(`${who}: ${c.wrong} certificate(s) wrong, e.g. ${c.examples.join("; ")}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// mTLS: woodstock host reports over keep-alive connections, and new connections with a warm and a
// cold certificate cache, against a bare Bun.serve TLS server with requestCert (mtls.ts).

/** The host of the keep-alive and warm runs; its bundle comes from the binary's CLI, as an operator's would. */
const MTLS_WARM_HOST = "warm.bench.test";

interface MtlsRun extends MtlsMeasurement {
  /** The cold runs' bundles: how many, and how long latchkey took to register the hosts and issue them. */
  issued: { bundles: number; seconds: number; perSecond: number };
}

/** The URL the server logged for its mTLS listener ("latchkey listening ... mtls=https://HOST:PORT"). */
async function mtlsListenerUrl(log: string, child: Subprocess): Promise<string> {
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const url = /"?latchkey listening"?.*\bmtls=(https:\/\/\S+)/.exec(readFileSync(log, "utf8"))?.[1];
    if (url !== undefined) return url.replace(/[",]+$/, "");
    if (child.exitCode !== null) break;
    await Bun.sleep(50);
  }
  throw new Error(`the server logged no mTLS listener ("latchkey listening ... mtls=..."):\n${tail(log)}`);
}

/**
 * latchkey with `--mtls-listen 127.0.0.1:PORT`; one host registered and its bundle written with the
 * binary's CLI (`host add`, `host bundle`) for the keep-alive and warm runs; `--mtls-certs` more
 * hosts per cold run registered and issued a bundle each over the REST API (the CLI is a process
 * start per call); then measureMtls against mtls-baseline.ts.
 */
async function measureMtlsHosts(options: Options, work: string, password: string): Promise<MtlsRun> {
  const dataDir = join(work, "mtls-data");
  mkdirSync(dataDir);
  const log = join(work, "latchkey-mtls.log");
  const server = await startLatchkey(dataDir, password, log, freePort(), ["--mtls-listen", `${HOST}:${freePort()}`]);
  try {
    const listener = await mtlsListenerUrl(log, server.child);
    latchkeyCli(["host", "add", MTLS_WARM_HOST], dataDir);
    const warm = join(work, "mtls-warm");
    latchkeyCli(["host", "bundle", MTLS_WARM_HOST, "--out", warm], dataDir);

    const token = await login(server.url, password);
    const coldDirs: string[] = [];
    let seconds = 0;
    for (let run = 1; run <= options.repeat; run++) {
      const dir = join(work, `mtls-cold-${run}`);
      const hosts = Array.from({ length: options.mtlsCerts }, (_, i) => `cold-${run}-${String(i).padStart(5, "0")}.bench.test`);
      seconds += await issueHostBundles(server.url, token, hosts, dir);
      coldDirs.push(dir);
    }
    const bundles = options.mtlsCerts * options.repeat;
    process.stdout.write(
      `bench: mTLS on ${listener}: registered ${thousands(bundles)} hosts and issued each a bundle in ${seconds.toFixed(1)} s ` +
        `(${thousands(bundles / seconds)}/s) for the cold runs\n`,
    );
    // What the issuing wrote, written back now rather than during the first runs.
    Bun.spawnSync(["sync"]);

    const measured = await measureMtls(
      { duration: options.duration, connections: options.connections, repeat: options.repeat, warmup: options.warmup, workers: 1 },
      {
        url: `${listener}/api/hosts/${MTLS_WARM_HOST}/client`,
        child: server.child,
        certs: {
          ca: join(warm, "rootCA.pem"),
          cert: join(warm, `${MTLS_WARM_HOST}_https.pem`),
          key: join(warm, `${MTLS_WARM_HOST}_https.key`),
        },
        coldCerts: coldDirs,
      },
      { work, spawn: spawnTracked, stop: stopProcess, log: (line) => process.stdout.write(`bench: ${line}\n`) },
    );
    return { ...measured, issued: { bundles, seconds, perSecond: bundles / seconds } };
  } finally {
    await stopProcess(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Spawn → first 2xx from `path`, `runs` times, each in a fresh copy of `templateDir` when given. */
async function coldStarts(
  runs: number,
  command: (port: number, dataDir: string) => { cmd: string[]; env?: Record<string, string | undefined> },
  path: string,
  work: string,
  templateDir?: string,
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const dataDir = join(work, `cold-${i}`);
    if (templateDir) cpSync(templateDir, dataDir, { recursive: true });
    const port = freePort();
    const { cmd, env } = command(port, dataDir);
    const log = join(work, `cold-${i}.log`);
    const started = performance.now();
    const child = spawnTracked(cmd, { log, ...(env ? { env } : {}) });
    await waitUntilServing(`http://${HOST}:${port}${path}`, child, 10_000, log);
    samples.push(performance.now() - started);
    await stopProcess(child);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(log, { force: true });
  }
  return samples;
}

async function measureColdStart(options: Options, work: string, password: string): Promise<ColdStartRow> {
  const env = { ...process.env, LATCHKEY_ADMIN_PASSWORD: password };
  // A database from a previous start: the first start's one-time work (migrations, hashing the
  // bootstrap password) is not what a restart pays.
  const template = join(work, "cold-template");
  const first = await startLatchkey(template, password, join(work, "cold-template.log"));
  await stopProcess(first.child);

  const compiledBaseline = join(work, "baseline-compiled");
  const compile = Bun.spawnSync(
    [
      process.execPath,
      "build",
      "--compile",
      BASELINE_SCRIPT,
      "--outfile",
      compiledBaseline,
      "--minify-syntax",
      "--minify-identifiers",
      "--bytecode",
      "--no-compile-autoload-dotenv",
      "--no-compile-autoload-bunfig",
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, BUN_BE_BUN: "1" } },
  );
  if (compile.exitCode !== 0) throw new Error(`compiling the baseline failed:\n${compile.stderr.toString()}`);

  const latchkey = await coldStarts(
    options.coldRuns,
    (port, dataDir) => ({ cmd: [BINARY, "server", "--listen", `${HOST}:${port}`, "--data-dir", dataDir], env }),
    "/healthz",
    work,
    template,
  );
  rmSync(template, { recursive: true, force: true });
  const compiled = await coldStarts(options.coldRuns, (port) => ({ cmd: [compiledBaseline, "--port", String(port)] }), "/", work);
  rmSync(compiledBaseline, { force: true });
  const script = await coldStarts(
    options.coldRuns,
    (port) => ({ cmd: [process.execPath, BASELINE_SCRIPT, "--port", String(port)] }),
    "/",
    work,
  );
  return {
    scenario: "cold start to first /healthz",
    samplesMs: latchkey,
    baselines: [
      { name: "compiled baseline (bun build --compile --bytecode)", samplesMs: compiled },
      { name: "bun scripts/bench/baseline.ts", samplesMs: script },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Report.

const thousands = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1));

function spread(values: number[], format: (n: number) => string): string {
  const med = format(median(values));
  if (values.length < 2) return med;
  return `${med} (${format(Math.min(...values))}–${format(Math.max(...values))})`;
}

function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function throughputCells(row: ThroughputRow): string[] {
  const rps = row.runs.map((r) => r.requestsPerSecond);
  const base = row.baselineRuns.map((r) => r.requestsPerSecond);
  const ratio = base.length > 0 ? `${((median(rps) / median(base)) * 100).toFixed(0)}%` : "n/a";
  const cpu = (runs: WrkResult[]) => {
    const values = runs.flatMap((r) => (r.serverCpuUsPerRequest === null ? [] : [r.serverCpuUsPerRequest]));
    if (values.length === 0) return "n/a";
    const value = median(values);
    return value < 1000 ? value.toFixed(1) : thousands(value);
  };
  return [
    row.scenario,
    spread(rps, thousands),
    `${ms(median(row.runs.map((r) => r.p50Ms)))} ms`,
    `${ms(median(row.runs.map((r) => r.p99Ms)))} ms`,
    base.length > 0 ? spread(base, thousands) : "n/a",
    ratio,
    base.length > 0 ? `${cpu(row.runs)} / ${cpu(row.baselineRuns)}` : cpu(row.runs),
    otherCpu([...row.runs, ...row.baselineRuns]),
  ];
}

/** The worst interference of a row's runs: a high value means its numbers are not to be trusted. */
function otherCpu(runs: WrkResult[]): string {
  const values = runs.flatMap((r) => (r.otherCpuPercent === null ? [] : [r.otherCpuPercent]));
  return values.length === 0 ? "n/a" : `${Math.max(...values).toFixed(0)}%`;
}

function failures(row: ThroughputRow): string[] {
  return [...row.runs.map((r) => ["", r] as const), ...row.baselineRuns.map((r) => [" (baseline)", r] as const)].flatMap(([who, r]) => {
    const socket = r.socketErrors.connect + r.socketErrors.read + r.socketErrors.write + r.socketErrors.timeout;
    // mtls-load.ts tells the kinds (e.g. "handshake timeout": no handshake within its 5 s).
    const kinds = "generator" in r ? Object.entries((r as MtlsRunResult).generator.errors).map(([kind, n]) => `${n} ${kind}`) : [];
    return r.non2xx > 0 || socket > 0
      ? [`${row.scenario}${who}: ${r.non2xx} non-2xx replies, ${socket} socket errors${kinds.length > 0 ? ` (${kinds.join(", ")})` : ""}`]
      : [];
  });
}

/** `enroll-csr`'s report: every run, then the medians, the ratio and what a certificate costs the server. */
function enrollCsrLines(e: EnrollCsrRun): string[] {
  const pair = (latency: ClientsReport["latencyMs"] | undefined) => (latency ? `${ms(latency.p50)} / ${ms(latency.p99)} ms` : "–");
  const percentOfWall = (seconds: number | null, r: CsrRunResult) =>
    seconds === null ? "n/a" : `${((seconds / r.wallSeconds) * 100).toFixed(0)}%`;
  const completed = (r: CsrRunResult) => (r.mode === "register + csr" ? (r.generator.certificates ?? 0) : r.generator.ok);
  const cpuPerClient = (r: CsrRunResult) => (r.serverCpuSeconds === null ? null : (r.serverCpuSeconds * 1e6) / Math.max(1, completed(r)));
  const rows = e.runs.map((r) => {
    const g = r.generator;
    const cpu = cpuPerClient(r);
    return [
      String(r.run),
      r.mode,
      `${thousands(g.ok)} / ${g.certificates === undefined ? "–" : thousands(g.certificates)} / ${thousands(g.keys - completed(r))}`,
      `${g.seconds.toFixed(2)} s`,
      `${thousands(g.ok / g.seconds)}/s`,
      g.certificates === undefined ? "–" : `${thousands(g.certificates / g.seconds)}/s`,
      pair(g.latencyMs),
      pair(g.csrLatencyMs),
      pair(g.enrolledLatencyMs),
      cpu === null ? "n/a" : `${thousands(cpu)} µs`,
      percentOfWall(r.serverCpuSeconds, r),
      percentOfWall(r.generatorCpuSeconds, r),
      r.otherCpuPercent === null ? "n/a" : `${r.otherCpuPercent.toFixed(0)}%`,
    ];
  });
  const of = (mode: CsrMode) => e.runs.filter((r) => r.mode === mode);
  const rates = (mode: CsrMode) => of(mode).map((r) => completed(r) / r.generator.seconds);
  const cpus = (mode: CsrMode) => of(mode).flatMap((r) => cpuPerClient(r) ?? []);
  const registerOnly = rates("register only");
  const combined = rates("register + csr");
  const cpuPerCertificate =
    cpus("register only").length > 0 && cpus("register + csr").length > 0
      ? median(cpus("register + csr")) - median(cpus("register only"))
      : null;
  return [
    `Enrollment with certificates: ${thousands(e.clients)} clients, each its own pending key and CSR (made in ` +
      `${e.requestsSeconds.toFixed(1)} s before the clock), ${e.concurrency} in flight; each run on a fresh server`,
    renderTable(
      [
        "run",
        "mode",
        "registered / certificates / failed",
        "all done in",
        "registrations/s",
        "certificates/s",
        "p50 / p99 register",
        "p50 / p99 csr",
        "p50 / p99 open→certificate",
        "server CPU per client",
        "server busy",
        "generator busy",
        "other CPU",
      ],
      rows,
    ),
    `median: register only ${spread(registerOnly, thousands)} registrations/s; register + csr ${spread(combined, thousands)} clients/s ` +
      `(each a registration and a certificate): ${((median(combined) / median(registerOnly)) * 100).toFixed(0)}% of register only; ` +
      `server CPU per certificate (per client, register + csr minus register only): ` +
      `${cpuPerCertificate === null ? "n/a" : `${thousands(cpuPerCertificate)} µs`}`,
    ...of("register + csr").map((r) => {
      const c = r.certificates;
      return c
        ? `certificates after run ${r.run}: ${thousands(c.acknowledged)} acknowledged, ` +
            `${thousands(c.rows)} client certificates in the database, ${thousands(c.distinctSerials)} distinct serials, ` +
            `${c.wrong} wrong (row, root, signature, subject, clientAuth or key)`
        : `certificates after run ${r.run}: not read`;
    }),
  ];
}

interface Verdict {
  target: string;
  measured: string;
  met: boolean;
}

/**
 * SPEC §10's numbers for what this run measured. A missed target is reported, not an error: the
 * exit code stays for broken runs (non-2xx, socket errors, lost activations).
 */
function specTargets(
  check: ThroughputRow | undefined,
  activate: ThroughputRow | undefined,
  durability: Durability | undefined,
  cold: ColdStartRow | undefined,
  enrollment: EnrollmentRun | undefined,
  options: Options,
): Verdict[] {
  const verdicts: Verdict[] = [];
  // SPEC §10 counts 10,000 clients: a smaller --clients run says nothing about the targets.
  const fullEnrollment = enrollment !== undefined && enrollment.clients >= 10_000;
  if (enrollment && fullEnrollment && options.only.has("register")) {
    const e = enrollment;
    const b = e.bindings;
    verdicts.push(
      {
        target: `${thousands(e.clients)} WebSocket registrations with own keys < 10 s`,
        measured: `${thousands(e.latchkey.generator.ok)} in ${e.latchkey.generator.seconds.toFixed(2)} s`,
        met: e.latchkey.generator.ok === e.clients && e.latchkey.generator.seconds < 10,
      },
      {
        target: "every key active, bound to its UUID, none double-bound",
        measured:
          `${thousands(b.active)} active, ${thousands(b.distinctUuids)} distinct UUIDs, ` +
          `${b.wrongBindings} wrong, ${b.doubleBound} double`,
        met: b.active === e.clients && b.distinctUuids === e.clients && b.wrongBindings === 0 && b.doubleBound === 0,
      },
    );
  }
  if (enrollment && fullEnrollment && options.only.has("idle")) {
    const load = enrollment.latchkey;
    const growth = Math.max(load.rssMb.connected, load.rssMb.afterIdle) - load.rssMb.before;
    verdicts.push({
      target: `${thousands(enrollment.clients)} idle connected clients < 150 MB server RSS growth`,
      measured: `${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MB (${thousands(load.generator.open)} open)`,
      met: growth < 150 && load.generator.open === enrollment.clients && load.unexpectedCloses === 0,
    });
  }
  if (check) {
    const ratio = median(check.runs.map((r) => r.requestsPerSecond)) / median(check.baselineRuns.map((r) => r.requestsPerSecond));
    const p99 = median(check.runs.map((r) => r.p99Ms));
    verdicts.push(
      { target: "GET /api/check ≥ 60% of bare Bun.serve req/s", measured: `${(ratio * 100).toFixed(0)}%`, met: ratio >= 0.6 },
      { target: "GET /api/check p99 < 5 ms", measured: `${ms(p99)} ms`, met: p99 < 5 },
    );
  }
  if (activate) {
    const rate = median(activate.runs.map((r) => r.requestsPerSecond));
    verdicts.push({ target: "POST /api/activate ≥ 2,000 activations/s", measured: `${thousands(rate)}/s`, met: rate >= 2000 });
  }
  if (durability) {
    verdicts.push({
      target: "every acknowledged activation durable",
      measured: `${thousands(durability.acknowledged - durability.missingCount)} of ${thousands(durability.acknowledged)} after kill -9`,
      met: durability.problems.length === 0,
    });
  }
  if (cold) {
    const med = median(cold.samplesMs);
    verdicts.push({ target: "cold start to first served request < 100 ms", measured: `${ms(med)} ms (median)`, met: med < 100 });
  }
  return verdicts;
}

function machine() {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const wrk = /^wrk \S+/.exec(Bun.spawnSync([WRK, "--version"]).stdout.toString())?.[0] ?? "wrk";
  const latchkey = Bun.spawnSync([BINARY, "version"]).stdout.toString().trim();
  const commit = Bun.spawnSync(["git", "rev-parse", "--short", "HEAD"], { cwd: ROOT }).stdout.toString().trim();
  // HEAD may be newer than the binary when it was not rebuilt, so the binary's age goes along.
  const binaryBuiltAt = statSync(BINARY).mtime.toISOString();
  return { nproc: availableParallelism(), cpu, bun: Bun.version, wrk, latchkey, binaryBuiltAt, commit: commit || null };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const options = readOptions(process.argv.slice(2));
  if (!existsSync(WRK)) throw new Error(`${WRK} is missing; install Debian's wrk (apt-get install wrk)`);
  if (options.build || !existsSync(BINARY)) {
    process.stdout.write("bench: building dist/latchkey\n");
    const build = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "build.ts")], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
    if (build.exitCode !== 0) throw new Error("npm run build failed");
    // The build leaves ~115 MB for the kernel to write back; flush it now rather than during the
    // first measurements, where it would slow every fsync the server makes.
    Bun.spawnSync(["sync"]);
  }

  const work = mkdtempSync(join(tmpdir(), "latchkey-bench-"));
  const password = `bench-${crypto.randomUUID()}`;
  const host = machine();
  process.stdout.write(
    `bench: ${host.latchkey} on ${host.nproc} × ${host.cpu}, Bun ${host.bun}, ${host.wrk}\n` +
      `bench: ${options.duration} s per run, ${options.connections} connections, ${options.threads} wrk threads, ` +
      `${options.repeat} repeat(s), scenarios ${[...options.only].join(", ")}\nbench: work dir ${work}\n`,
  );

  const throughput: ThroughputRow[] = [];
  let coldStart: ColdStartRow | undefined;

  if (options.only.has("cold-start")) {
    process.stdout.write(`bench: cold start, ${options.coldRuns} runs each\n`);
    coldStart = await measureColdStart(options, work, password);
  }

  const needsBaseline = options.only.has("healthz") || options.only.has("rpc-query") || options.only.has("check");
  const baseline = needsBaseline ? await startBaseline(join(work, "baseline.log")) : undefined;

  const needsServers = options.only.has("healthz") || options.only.has("rpc-query") || options.only.has("login");
  if (needsServers) {
    const dataDir = join(work, "data");
    mkdirSync(dataDir);
    const server = await startLatchkey(dataDir, password, join(work, "latchkey.log"));
    if (baseline && options.only.has("healthz")) {
      process.stdout.write("bench: GET /healthz\n");
      throughput.push(
        await compareWithBaseline(
          options,
          "GET /healthz",
          "liveness with a SELECT 1",
          { url: `${server.url}/healthz`, server: server.child },
          { url: `${baseline.url}/`, server: baseline.child },
        ),
      );
    }
    if (baseline && options.only.has("rpc-query")) {
      process.stdout.write("bench: PUT /rpc/query\n");
      const token = await login(server.url, password);
      throughput.push(
        await compareWithBaseline(
          options,
          "PUT /rpc/query (bearer)",
          "session lookup + RPC dispatch",
          { url: `${server.url}/rpc/query`, server: server.child, script: PUT_SCRIPT, scriptArgs: [token] },
          { url: `${baseline.url}/rpc/query`, server: baseline.child, script: PUT_SCRIPT, scriptArgs: [token] },
        ),
      );
    }
    if (options.only.has("login")) {
      process.stdout.write("bench: POST /api/auth/login\n");
      throughput.push(await measureLogins(options, server, password));
    }
    await stopProcess(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }

  // The licensing scenarios get a server of their own: a table of 100,000 keys, and a SIGKILL at
  // the end to check that what was acknowledged was committed.
  let checkSeed: CheckSeed | undefined;
  let checkRow: ThroughputRow | undefined;
  let activateRow: ThroughputRow | undefined;
  let durability: Durability | undefined;
  if (options.only.has("check") || options.only.has("activate")) {
    const dataDir = join(work, "licensing-data");
    mkdirSync(dataDir);
    const server = await startLatchkey(dataDir, password, join(work, "latchkey-licensing.log"));
    const created = latchkeyCli(["app", "create", "latchkey bench", "--support-message", "benchmark"], dataDir);
    const appId = Number(/^created application (\d+)/.exec(created)?.[1]);
    if (!Number.isInteger(appId)) throw new Error(`latchkey app create printed no id: ${created}`);
    if (baseline && options.only.has("check")) {
      process.stdout.write(`bench: GET /api/check, seeding ${thousands(options.keys)} license keys\n`);
      const measured = await measureChecks(options, server, baseline, dataDir, appId, work);
      throughput.push(measured.row);
      checkRow = measured.row;
      checkSeed = measured.seed;
    }
    if (options.only.has("activate")) {
      process.stdout.write("bench: POST /api/activate, then kill -9 and read the database\n");
      const load = await measureActivations(options, server, dataDir, appId, work);
      throughput.push(load.row);
      activateRow = load.row;
      durability = await checkDurability(server, dataDir, load, options.connections);
    } else {
      await stopProcess(server.child);
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
  if (baseline) await stopProcess(baseline.child);

  let mtls: MtlsRun | undefined;
  if (options.only.has("mtls")) {
    process.stdout.write(
      `bench: mTLS host reports (keep-alive) and new connections (warm and cold certificate cache), ` +
        `${thousands(options.mtlsCerts)} new certificates per cold run\n`,
    );
    mtls = await measureMtlsHosts(options, work, password);
    throughput.push(mtls.keepalive, mtls.handshakes, ...(mtls.coldHandshakes ? [mtls.coldHandshakes] : []));
  }

  let enrollment: EnrollmentRun | undefined;
  if (options.only.has("register") || options.only.has("idle")) {
    process.stdout.write(
      `bench: WebSocket client/register, ${thousands(options.clients)} clients with their own pending keys, ` +
        `${options.wsConcurrency} in flight, then idle\n`,
    );
    enrollment = await measureEnrollment(options, work, password);
  }

  let enrollCsr: EnrollCsrRun | undefined;
  if (options.only.has("enroll-csr")) {
    process.stdout.write(
      `bench: WebSocket client/register then client/csr, ${thousands(options.csrClients)} clients with their own pending keys, ` +
        `${options.wsConcurrency} in flight, against the same clients registering only\n`,
    );
    enrollCsr = await measureEnrollCsr(options, work, password);
  }

  const lines: string[] = [""];
  if (throughput.length > 0) {
    lines.push(
      renderTable(
        ["scenario", "req/s", "p50", "p99", "baseline req/s", "ratio", "CPU µs/req (vs baseline)", "other CPU (max)"],
        throughput.map(throughputCells),
      ),
      "",
    );
  }
  if (coldStart) {
    const med = median(coldStart.samplesMs);
    lines.push(
      renderTable(
        ["cold start (spawn → first 2xx)", "median", "min–max", "latchkey ÷ this"],
        [
          [
            "latchkey binary, existing database",
            `${ms(med)} ms`,
            `${ms(Math.min(...coldStart.samplesMs))}–${ms(Math.max(...coldStart.samplesMs))} ms`,
            "1.00×",
          ],
          ...coldStart.baselines.map((b) => [
            b.name,
            `${ms(median(b.samplesMs))} ms`,
            `${ms(Math.min(...b.samplesMs))}–${ms(Math.max(...b.samplesMs))} ms`,
            `${(med / median(b.samplesMs)).toFixed(2)}×`,
          ]),
        ],
      ),
      "",
    );
  }
  if (durability) {
    lines.push(
      `activate durability (after kill -9): ${thousands(durability.acknowledged)} acknowledged ` +
        `(wrk counted ${thousands(durability.acknowledgedByWrk)} 2xx), ` +
        `${thousands(durability.rows)} rows, ${durability.missingCount === 0 ? "none" : thousands(durability.missingCount)} missing, ` +
        `${durability.unacknowledged} committed but unacknowledged (in flight at the end of a run), ` +
        `seat counter ${thousands(durability.activationsUsed)}`,
      "",
    );
  }
  if (enrollment) {
    const e = enrollment;
    const b = e.bindings;
    const cells = (load: ClientsLoad): string[] => {
      const g = load.generator;
      const growth = load.rssMb.connected - load.rssMb.before;
      return [
        `${thousands(g.ok)} / ${thousands(g.failed)}`,
        `${g.seconds.toFixed(2)} s`,
        `${thousands(g.ok / g.seconds)}/s`,
        `${ms(g.latencyMs.p50)} / ${ms(g.latencyMs.p99)} ms`,
        load.serverCpuSeconds === null ? "n/a" : `${((load.serverCpuSeconds * 1e6) / Math.max(1, g.ok)).toFixed(0)} µs`,
        load.serverCpuSeconds === null ? "n/a" : `${((load.serverCpuSeconds / g.seconds) * 100).toFixed(0)}%`,
        load.otherCpuPercent === null ? "n/a" : `${load.otherCpuPercent.toFixed(0)}%`,
        `${load.rssMb.before.toFixed(1)} → ${load.rssMb.connected.toFixed(1)} MB`,
        `${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MB`,
        `${((growth * 1024) / Math.max(1, g.open)).toFixed(1)} KB`,
        `${load.rssMb.afterIdle.toFixed(1)} MB`,
        `${load.rssMb.afterClose.toFixed(1)} MB`,
        `${load.serverFds ?? "n/a"}`,
        String(load.unexpectedCloses),
      ];
    };
    lines.push(
      `WebSocket enrollment: ${thousands(e.clients)} clients, each its own pending key, ` +
        `${e.concurrency} registrations in flight, every registered socket kept open`,
      renderTable(
        [
          "server",
          "registered / failed",
          "all done in",
          "rate",
          "p50 / p99 open→answer",
          "CPU per registration",
          "server busy",
          "other CPU",
          "RSS before → all connected",
          "growth",
          "per client",
          `RSS after ${e.latchkey.idleSeconds} s idle`,
          "RSS 3 s after all left",
          "open fds",
          "idle sockets closed",
        ],
        [
          ["latchkey (--require-auth-key)", ...cells(e.latchkey)],
          ["ws-baseline.ts (bare Bun.serve)", ...cells(e.baseline)],
        ],
      ),
      "seconds per tenth of the registrations, latchkey: " +
        `${(e.latchkey.generator.tenthsSeconds ?? []).map((t) => t.toFixed(2)).join(" ")}; ` +
        `baseline: ${(e.baseline.generator.tenthsSeconds ?? []).map((t) => t.toFixed(2)).join(" ")}`,
      `keys after the run: ${thousands(b.active)} active, ${thousands(b.pending)} pending, ${thousands(b.revoked)} revoked; ` +
        `${thousands(b.distinctUuids)} distinct client_uuid on active keys; ${b.wrongBindings} acknowledged but not bound to their UUID; ` +
        `${b.doubleBound} UUIDs bound to more than one key; ${thousands(b.clients)} client rows`,
      "",
    );
  }
  if (enrollCsr) lines.push(...enrollCsrLines(enrollCsr), "");
  if (mtls) {
    // Which side was the limit of each mTLS run: a process near 100% of a core was (both are single-threaded
    // event loops, the generator's TLS included), read from /proc by mtls-load.ts over the measured window.
    const runs = [mtls.keepalive, mtls.handshakes, ...(mtls.coldHandshakes ? [mtls.coldHandshakes] : [])].flatMap((row) =>
      [...row.runs.map((r) => ["latchkey", r] as const), ...row.baselineRuns.map((r) => ["baseline", r] as const)].map(
        ([who, r]) => [row.scenario, who, r] as const,
      ),
    );
    const percent = (value: number | null) => (value === null ? "n/a" : `${value.toFixed(0)}%`);
    const us = (value: number | null) => (value === null ? "n/a" : value.toFixed(1));
    lines.push(
      `mTLS runs: server and generator (mtls-load.ts, one process) CPU in % of one core over each measured window; ` +
        `cold runs' bundles issued at ${thousands(mtls.issued.perSecond)}/s ` +
        `(${thousands(mtls.issued.bundles)} in ${mtls.issued.seconds.toFixed(1)} s)`,
      renderTable(
        [
          "mTLS row",
          "server",
          "req/s",
          "p50 / p99",
          "server CPU",
          "server µs/req",
          "generator CPU",
          "generator µs/req",
          "other CPU",
          "new certs",
        ],
        runs.map(([scenario, who, r]) => {
          const g = r.generator;
          return [
            scenario,
            who,
            thousands(r.requestsPerSecond),
            `${ms(r.p50Ms)} / ${ms(r.p99Ms)} ms`,
            percent(g.cpu.serverPercent),
            us(g.cpu.serverUsPerRequest),
            percent(g.cpu.generatorPercent),
            us(g.cpu.generatorUsPerRequest),
            percent(g.cpu.otherPercent),
            g.certs
              ? `${thousands(g.certs.used)} / ${thousands(g.certs.total)}${g.certs.exhausted ? ", all used" : ""} in ${g.seconds} s`
              : "",
          ];
        }),
      ),
      ...mtls.notes.map((note) => `note: ${note}`),
      "",
    );
  }
  const verdicts = [...specTargets(checkRow, activateRow, durability, coldStart, enrollment, options), ...(mtls?.targets ?? [])];
  if (verdicts.length > 0) {
    lines.push(
      renderTable(
        ["SPEC §10 target", "measured", "status"],
        verdicts.map((v) => [v.target, v.measured, v.met ? "met" : "MISSED"]),
      ),
      "",
    );
  }
  const problems = [
    ...throughput.flatMap(failures),
    ...(durability?.problems ?? []),
    ...(enrollment?.problems ?? []),
    ...(enrollCsr?.problems ?? []),
    ...(mtls?.problems ?? []),
  ];
  for (const problem of problems) lines.push(`WARNING ${problem}`);

  const resultFile = join(work, "results.json");
  const results = {
    date: new Date().toISOString(),
    machine: host,
    options: { ...options, only: [...options.only] },
    throughput,
    coldStart: coldStart ?? null,
    checkSeed: checkSeed ?? null,
    durability: durability ?? null,
    enrollment: enrollment ?? null,
    enrollCsr: enrollCsr ?? null,
    mtls: mtls ? { issued: mtls.issued, notes: mtls.notes } : null,
    targets: verdicts,
    problems,
  };
  writeFileSync(resultFile, `${JSON.stringify(results, null, 2)}\n`);
  lines.push(`bench: results in ${resultFile}`);
  process.stdout.write(`${lines.join("\n")}\n`);
  return problems.length > 0 ? 1 : 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (error) {
  // After Ctrl-C the children die mid-run; their errors are expected, not news.
  if (!wasInterrupted()) process.stderr.write(`bench: ${(error as Error).message}\n`);
} finally {
  await stopAll();
}
process.exit(exitCode);
