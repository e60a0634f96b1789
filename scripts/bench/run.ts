/**
 * `npm run bench`: measures the compiled binary against a bare Bun.serve hello-world started in
 * the same run, so that SPEC §10's ratios compare like with like on this machine.
 *
 *   bun scripts/bench/run.ts [--duration 10] [--connections 64] [--threads 2] [--repeat 1]
 *                            [--warmup 2] [--cold-runs 10] [--only healthz,rpc-query,login,cold-start]
 *                            [--build]
 *
 * Load comes from Debian's `wrk` on 127.0.0.1 only. The server and the baseline are measured one
 * after the other, never at once, so that they do not fight over the cores. Every process this
 * script starts is stopped before it exits, on error and on Ctrl-C too. The results (and the
 * processes' logs) go to a fresh temporary directory whose path is printed at the end.
 */
import type { Subprocess } from "bun";
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const ROOT = join(import.meta.dir, "..", "..");
const BINARY = join(ROOT, "dist", "latchkey");
const BASELINE_SCRIPT = join(import.meta.dir, "baseline.ts");
const PUT_SCRIPT = join(import.meta.dir, "put-json.lua");
const LOGIN_SCRIPT = join(import.meta.dir, "login.lua");
const WRK = "/usr/bin/wrk";
const HOST = "127.0.0.1";

const SCENARIOS = ["cold-start", "healthz", "rpc-query", "login"] as const;
type ScenarioName = (typeof SCENARIOS)[number];

interface Options {
  duration: number;
  connections: number;
  threads: number;
  repeat: number;
  warmup: number;
  coldRuns: number;
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
    only: only.size > 0 ? only : new Set(SCENARIOS),
    build: values.build ?? false,
  };
  if (options.threads > options.connections) throw new Error("--threads cannot exceed --connections (wrk needs a connection per thread)");
  return options;
}

// ---------------------------------------------------------------------------------------------
// Processes: every child goes through `spawnTracked`, so that `stopAll` can always end them.

const children = new Set<Subprocess>();
let interrupted = false;

function spawnTracked(cmd: string[], options: { env?: Record<string, string | undefined>; log?: string; stdout?: "pipe" }): Subprocess {
  // One descriptor for both streams, so that stdout and stderr append to the log in order.
  const log = options.log === undefined ? undefined : openSync(options.log, "a");
  const child = Bun.spawn(cmd, {
    cwd: ROOT,
    env: options.env ?? process.env,
    stdin: "ignore",
    stdout: options.stdout ?? log ?? "ignore",
    stderr: log ?? "ignore",
  });
  if (log !== undefined) closeSync(log);
  children.add(child);
  void child.exited.then(() => children.delete(child));
  return child;
}

async function stopProcess(child: Subprocess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!exited) {
    child.kill("SIGKILL");
    await child.exited;
  }
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((child) => stopProcess(child)));
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    interrupted = true;
    process.stderr.write(`\nbench: ${signal}, stopping the processes it started\n`);
    void stopAll().finally(() => process.exit(130));
  });
}

/** A port that was free a moment ago; the binary takes a fixed --listen, so it cannot use port 0. */
function freePort(): number {
  const probe = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Polls `url` until it answers 2xx, with no pause between attempts (cold start measures this). */
async function waitUntilServing(url: string, child: Subprocess, timeoutMs: number, log?: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the process serving ${url} exited (${child.exitCode ?? child.signalCode}) before answering${log ? `:\n${tail(log)}` : ""}`);
    }
    try {
      const response = await fetch(url, { keepalive: false });
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // Not listening yet: try again at once.
    }
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms${log ? `:\n${tail(log)}` : ""}`);
}

// ---------------------------------------------------------------------------------------------
// The two servers under test.

interface Running {
  child: Subprocess;
  url: string;
}

async function startLatchkey(dataDir: string, password: string, log: string, port = freePort()): Promise<Running> {
  const child = spawnTracked([BINARY, "server", "--listen", `${HOST}:${port}`, "--data-dir", dataDir], {
    env: { ...process.env, LATCHKEY_ADMIN_PASSWORD: password },
    log,
  });
  const url = `http://${HOST}:${port}`;
  await waitUntilServing(`${url}/healthz`, child, 30_000, log);
  return { child, url };
}

async function startBaseline(log: string): Promise<Running> {
  const child = spawnTracked([process.execPath, BASELINE_SCRIPT], { log, stdout: "pipe" });
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
    WRK, "-t", String(run.threads), "-c", String(run.connections), "-d", `${run.seconds}s`,
    "--latency", "--timeout", "5s",
    ...(run.script ? ["-s", run.script] : []),
    run.url,
    ...(run.scriptArgs ? ["--", ...run.scriptArgs] : []),
  ];
  const cpuBefore = cpuMicroseconds(run.server.pid);
  const child = spawnTracked(cmd, { stdout: "pipe" });
  const killer = setTimeout(() => child.kill("SIGKILL"), (run.seconds + 30) * 1000);
  const output = await new Response(child.stdout as ReadableStream<Uint8Array>).text();
  const code = await child.exited;
  clearTimeout(killer);
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`);
  const cpuAfter = cpuMicroseconds(run.server.pid);
  const result = parseWrk(output);
  if (cpuBefore !== null && cpuAfter !== null && result.requests > 0) {
    result.serverCpuUsPerRequest = (cpuAfter - cpuBefore) / result.requests;
  }
  return result;
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
    for (const [load, results] of [[target, row.runs], [baseline, row.baselineRuns]] as const) {
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
  const load = { url: `${server.url}/api/auth/login`, server: server.child, script: LOGIN_SCRIPT, scriptArgs: ["admin", password], connections, threads: 1 };
  const row: ThroughputRow = { scenario: "POST /api/auth/login", description: `correct password, ${connections} connections`, runs: [], baselineRuns: [] };
  for (let i = 0; i < options.repeat; i++) row.runs.push(await runWrk({ ...load, seconds: Math.min(options.duration, 5) }));
  return row;
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
    [process.execPath, "build", "--compile", BASELINE_SCRIPT, "--outfile", compiledBaseline, "--minify", "--bytecode",
      "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig"],
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
  const script = await coldStarts(options.coldRuns, (port) => ({ cmd: [process.execPath, BASELINE_SCRIPT, "--port", String(port)] }), "/", work);
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
  ];
}

function failures(row: ThroughputRow): string[] {
  return [...row.runs, ...row.baselineRuns].flatMap((r) => {
    const socket = r.socketErrors.connect + r.socketErrors.read + r.socketErrors.write + r.socketErrors.timeout;
    return r.non2xx > 0 || socket > 0 ? [`${row.scenario}: ${r.non2xx} non-2xx replies, ${socket} socket errors`] : [];
  });
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

  const needsServers = options.only.has("healthz") || options.only.has("rpc-query") || options.only.has("login");
  if (needsServers) {
    const dataDir = join(work, "data");
    mkdirSync(dataDir);
    const server = await startLatchkey(dataDir, password, join(work, "latchkey.log"));
    const needsBaseline = options.only.has("healthz") || options.only.has("rpc-query");
    const baseline = needsBaseline ? await startBaseline(join(work, "baseline.log")) : undefined;
    if (baseline && options.only.has("healthz")) {
      process.stdout.write("bench: GET /healthz\n");
      throughput.push(
        await compareWithBaseline(options, "GET /healthz", "liveness with a SELECT 1", { url: `${server.url}/healthz`, server: server.child }, { url: `${baseline.url}/`, server: baseline.child }),
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
    if (baseline) await stopProcess(baseline.child);
    rmSync(dataDir, { recursive: true, force: true });
  }

  const lines: string[] = [""];
  if (throughput.length > 0) {
    lines.push(
      renderTable(["scenario", "req/s", "p50", "p99", "baseline req/s", "ratio", "CPU µs/req (vs baseline)"], throughput.map(throughputCells)),
      "",
    );
  }
  if (coldStart) {
    const med = median(coldStart.samplesMs);
    lines.push(
      renderTable(
        ["cold start (spawn → first 2xx)", "median", "min–max", "latchkey ÷ this"],
        [
          ["latchkey binary, existing database", `${ms(med)} ms`, `${ms(Math.min(...coldStart.samplesMs))}–${ms(Math.max(...coldStart.samplesMs))} ms`, "1.00×"],
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
  const problems = throughput.flatMap(failures);
  for (const problem of problems) lines.push(`WARNING ${problem}`);

  const resultFile = join(work, "results.json");
  writeFileSync(resultFile, `${JSON.stringify({ date: new Date().toISOString(), machine: host, options: { ...options, only: [...options.only] }, throughput, coldStart: coldStart ?? null, problems }, null, 2)}\n`);
  lines.push(`bench: results in ${resultFile}`);
  process.stdout.write(`${lines.join("\n")}\n`);
  return problems.length > 0 ? 1 : 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (error) {
  // After Ctrl-C the children die mid-run; their errors are expected, not news.
  if (!interrupted) process.stderr.write(`bench: ${(error as Error).message}\n`);
} finally {
  await stopAll();
}
process.exit(exitCode);
