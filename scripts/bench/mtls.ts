/**
 * The `mtls` scenario, ready for `scripts/bench/run.ts` to call once latchkey's mTLS listener
 * exists. SPEC §10: "mTLS host reports over keep-alive connections with client certificates: at
 * least 60% of the throughput of a bare Bun.serve TLS server with `requestCert` in the same run;
 * new mTLS connections at least 1,000/s."
 *
 * `measureMtls(options, server, context)` sends `POST /api/hosts/{hostname}/client` host reports
 * with `mtls-load.ts` (a separate Bun process: wrk cannot send client certificates) to the
 * listener and to `mtls-baseline.ts` (a bare Bun.serve with `requestCert`), one after the other,
 * never at once, `repeat` times, alternating:
 *
 * - keep-alive: `connections` TLS connections opened before the clock starts, one report in flight
 *   on each; the SPEC's ratio is latchkey's req/s over the baseline's;
 * - handshakes: every report on a new connection (TCP, a full TLS 1.3 handshake with the client
 *   certificate, no resumption, one report, close); the SPEC's floor is 1,000 new connections/s.
 *   Every connection presents the same certificate, so the listener's verification of it is
 *   cached after the first (a warm cache). The baseline row is there to show what Bun's TLS itself
 *   allows on the machine.
 * - cold handshakes (when `server.coldCerts` is given): the same, but every connection presents a
 *   certificate the listener has not seen yet (`mtls-load.ts --certs DIR`: one bundle per
 *   registered host, each used once, `{host}` in the URL its own), so each one is verified in full.
 *   A run ends after --duration or when its directory's certificates are used up, whichever comes
 *   first, and has no warm-up (that would use certificates up); latchkey's run i takes directory i,
 *   which must be fresh. The baseline, which caches nothing, takes the first directory every time.
 *
 * Both servers get the same client certificate, and Bun's TLS layer of both checks it against the
 * same root. The baseline presents the listener's own certificate when `server.serverCert` gives
 * it, else a throwaway one (and root) made with openssl with the same key types, so that both
 * handshakes cost the same. One report is sent to each by hand first and must answer 200, so that
 * a run full of fast 401s cannot pass for a fast listener.
 *
 * The rows have run.ts's ThroughputRow shape (runs as WrkResult, plus the generator's own report);
 * `targets` are SPEC §10 verdicts for run.ts's table; `problems` are what run.ts's `failures()`
 * does not see (resumed sessions, connections the server closed); `notes` are caveats (generator
 * saturated, other work on the machine).
 *
 * Standalone, to check this file and the generator without the listener (the baseline stands in
 * for latchkey, so the ratio should come out near 100%), or to measure a listener by hand:
 *
 *   bun scripts/bench/mtls.ts --self-test [--cold N] [--duration 5] [--warmup 1] [--repeat 1] [--connections 64] [--workers 1]
 *   bun scripts/bench/mtls.ts --url https://127.0.0.1:PORT/api/hosts/HOST/client --cert host.pem --key host.key
 *                             --ca root.pem --pid SERVER_PID [--server-cert listener.pem --server-key listener.key]
 *                             [--cold-certs DIR ...] [...]
 *
 * --cold N (self-test): N client certificates per run made with openssl for the cold runs;
 * --cold-certs DIR (once per run): bundles the listener has not seen (see `coldCerts`).
 */
import type { Subprocess } from "bun";
import { X509Certificate } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { certificateFiles, DEFAULT_BODY, type LoadReport } from "./mtls-load.ts";

const LOAD_SCRIPT = join(import.meta.dir, "mtls-load.ts");
const BASELINE_SCRIPT = join(import.meta.dir, "mtls-baseline.ts");
const HOST = "127.0.0.1";

export interface MtlsOptions {
  /** Seconds per measured run. */
  duration: number;
  /** Keep-alive connections, and new connections in flight at once in the handshakes runs. */
  connections: number;
  repeat: number;
  /** Seconds of load before every measured run, inside the same generator process. */
  warmup: number;
  /**
   * Generator processes (`mtls-load.ts --workers`). 1 by default: on two cores a second one takes
   * CPU from the server, while one is enough to keep a single-threaded Bun server busy.
   */
  workers?: number;
}

/** PEM files. */
export interface MtlsCerts {
  /** The root that signed the listener's certificate and the client certificate. */
  ca: string;
  /** A client certificate (clientAuth, CN = a registered host) and its key. */
  cert: string;
  key: string;
}

export interface MtlsServer {
  /** The report route on the mTLS listener, e.g. https://127.0.0.1:PORT/api/hosts/HOST/client (HOST = the certificate's CN). */
  url: string;
  /** The process under load: its CPU time is read. */
  child: Subprocess;
  certs: MtlsCerts;
  /** The listener's own certificate and key (PEM files), for the baseline to present too. */
  serverCert?: { cert: string; key: string };
  /**
   * Directories of bundles (`HOST_https.pem` / `HOST_https.key`, each for its own registered
   * host) the listener has never seen, at least `repeat` of them: the cold-cache runs. Their
   * certificates chain to `certs.ca`.
   */
  coldCerts?: string[];
}

export interface MtlsContext {
  /** A directory for the baseline's certificates and the processes' logs. */
  work: string;
  /** How to start a process (run.ts: spawnTracked, so that it is stopped on exit). */
  spawn?: (cmd: string[], options: { log?: string; stdout?: "pipe" }) => Subprocess;
  /** How to stop one (run.ts: stopProcess). */
  stop?: (child: Subprocess) => Promise<void>;
  /** Progress lines (default: "bench: ..." on stdout). */
  log?: (line: string) => void;
}

/** run.ts's WrkResult, field for field, plus what mtls-load.ts printed. */
export interface MtlsRunResult {
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
  serverCpuUsPerRequest: number | null;
  scriptLines: string[];
  otherCpuPercent: number | null;
  generator: LoadReport;
}

/** run.ts's ThroughputRow. */
export interface MtlsRow {
  scenario: string;
  description: string;
  runs: MtlsRunResult[];
  baselineRuns: MtlsRunResult[];
}

/** run.ts's Verdict. */
export interface MtlsVerdict {
  target: string;
  measured: string;
  met: boolean;
}

export interface MtlsMeasurement {
  keepalive: MtlsRow;
  handshakes: MtlsRow;
  /** With `server.coldCerts`: new connections, each with a certificate the listener has not seen. */
  coldHandshakes: MtlsRow | null;
  targets: MtlsVerdict[];
  problems: string[];
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Processes, when the caller does not bring its own.

const ownChildren = new Set<Subprocess>();

function defaultSpawn(cmd: string[], options: { log?: string; stdout?: "pipe" }): Subprocess {
  const log = options.log === undefined ? undefined : openSync(options.log, "a");
  const child = Bun.spawn(cmd, { stdin: "ignore", stdout: options.stdout ?? log ?? "ignore", stderr: log ?? "inherit" });
  if (log !== undefined) closeSync(log);
  ownChildren.add(child);
  void child.exited.then(() => ownChildren.delete(child));
  return child;
}

async function defaultStop(child: Subprocess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(3000).then(() => false)]);
  if (!exited) {
    child.kill("SIGKILL");
    await child.exited;
  }
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

// ---------------------------------------------------------------------------------------------
// One report by hand.

interface Probe {
  status: number;
  body: string;
  serverCertificate: X509Certificate | undefined;
  tlsVersion: string;
}

/** Sends one host report on a new connection (`Connection: close`) and reads the answer to the end. */
export function probeReport(url: string, client: { cert: string; key: string }, ca: string): Promise<Probe> {
  const target = new URL(url);
  const body = Buffer.from(DEFAULT_BODY);
  const request =
    `POST ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${DEFAULT_BODY}`;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let serverCertificate: X509Certificate | undefined;
    let tlsVersion = "";
    let settled = false;
    const finish = (error: Error | null, probe?: Probe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(probe!);
    };
    const timer = setTimeout(() => finish(new Error(`${url}: no answer to a host report within 10 s`)), 10_000);
    Bun.connect({
      hostname: target.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(target.port || 443),
      tls: { cert: readFileSync(client.cert, "utf8"), key: readFileSync(client.key, "utf8"), ca: readFileSync(ca, "utf8") },
      socket: {
        handshake(socket, _success, authorizationError) {
          if (authorizationError) {
            socket.terminate();
            return finish(new Error(`${url}: its certificate does not verify against ${ca}: ${authorizationError.message}`));
          }
          serverCertificate = socket.getPeerX509Certificate();
          tlsVersion = socket.getTLSVersion();
          socket.write(request);
        },
        data(_socket, chunk) {
          chunks.push(Buffer.from(chunk));
        },
        close(_socket, error) {
          const text = Buffer.concat(chunks).toString();
          const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
          if (!status) {
            const why = error?.message ?? (text.slice(0, 200) || "closed without an answer (client certificate refused?)");
            return finish(new Error(`${url}: no HTTP answer to a host report: ${why}`));
          }
          const body = text.slice(text.indexOf("\r\n\r\n") + 4);
          finish(null, { status: Number(status[1]), body, serverCertificate, tlsVersion });
        },
        connectError(_socket, error) {
          finish(new Error(`${url}: ${error.message}`));
        },
      },
    }).catch((error: Error) => finish(new Error(`${url}: ${error.message}`)));
  });
}

// ---------------------------------------------------------------------------------------------
// Certificates for the baseline: the same key types as the listener's.

/** openssl's -newkey (and digest) for a key like this certificate's. */
function keyLike(certificate: X509Certificate): { newkey: string[]; digest: string[]; label: string } {
  const key = certificate.publicKey;
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec": {
      const curve = details.namedCurve ?? "prime256v1";
      const digest = curve === "secp384r1" ? "-sha384" : curve === "secp521r1" ? "-sha512" : "-sha256";
      return { newkey: ["-newkey", "ec", "-pkeyopt", `ec_paramgen_curve:${curve}`], digest: [digest], label: `EC ${curve}` };
    }
    case "rsa":
      return { newkey: ["-newkey", `rsa:${details.modulusLength ?? 2048}`], digest: ["-sha256"], label: `RSA ${details.modulusLength}` };
    case "ed25519":
      return { newkey: ["-newkey", "ed25519"], digest: [], label: "Ed25519" };
    default:
      throw new Error(`no openssl recipe for a ${key.asymmetricKeyType} key: give the baseline the listener's own (serverCert)`);
  }
}

function openssl(args: string[], cwd: string): void {
  const run = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${run.stderr.toString()}`);
}

/**
 * A root and a server certificate (SANs localhost and 127.0.0.1) in `dir`, made with openssl:
 * the root with the key type of `rootLike`, the leaf with that of `leafLike`.
 */
export function makeServerCertificate(
  dir: string,
  rootLike: X509Certificate,
  leafLike: X509Certificate,
): { ca: string; cert: string; key: string } {
  mkdirSync(dir, { recursive: true });
  const root = keyLike(rootLike);
  const leaf = keyLike(leafLike);
  writeFileSync(
    join(dir, "server.ext"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
      "basicConstraints=critical,CA:FALSE\n",
  );
  openssl(
    [
      ...["req", "-x509", "-new", ...root.newkey, ...root.digest, "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "7"],
      ...["-subj", "/CN=latchkey bench baseline root", "-addext", "basicConstraints=critical,CA:TRUE"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ],
    dir,
  );
  openssl(["req", "-new", ...leaf.newkey, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], dir);
  openssl(
    [
      ...["x509", "-req", "-in", "server.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial", ...root.digest],
      ...["-out", "server.pem", "-days", "7", "-extfile", "server.ext"],
    ],
    dir,
  );
  return { ca: join(dir, "root.pem"), cert: join(dir, "server.pem"), key: join(dir, "server.key") };
}

// ---------------------------------------------------------------------------------------------
// Certificates for the cold runs: one bundle per host, issued by latchkey over its REST API.

/**
 * Registers each of `hosts` (`POST /api/hosts`) and issues it a bundle (`POST
 * /api/hosts/{host}/bundle`) on the server at `apiUrl` with an admin's bearer `token`, and
 * writes the bundles into `dir` as `latchkey host bundle` would (`HOST_https.pem`,
 * `HOST_https.key`, `rootCA.pem`). `concurrency` requests at once. Returns the seconds it took.
 */
export async function issueHostBundles(apiUrl: string, token: string, hosts: string[], dir: string, concurrency = 4): Promise<number> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const started = performance.now();
  let next = 0;
  let ca: string | undefined;
  const post = async (path: string, body?: unknown) => {
    const response = await fetch(`${apiUrl}${path}`, {
      method: "POST",
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (response.status !== 201) throw new Error(`POST ${path} answered ${response.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
  const worker = async () => {
    while (next < hosts.length) {
      const host = hosts[next++]!;
      await post("/api/hosts", { hostname: host });
      const bundle = (await post(`/api/hosts/${host}/bundle`)) as { hostname: string; certificate: string; key: string; ca: string };
      writeFileSync(join(dir, `${bundle.hostname}_https.pem`), bundle.certificate, { mode: 0o644 });
      writeFileSync(join(dir, `${bundle.hostname}_https.key`), bundle.key, { mode: 0o600 });
      ca ??= bundle.ca;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, hosts.length) }, worker));
  if (ca !== undefined) writeFileSync(join(dir, "rootCA.pem"), ca, { mode: 0o644 });
  return (performance.now() - started) / 1000;
}

// ---------------------------------------------------------------------------------------------
// The generator.

interface LoadTarget {
  url: string;
  /** Verifies the server's certificate. */
  ca: string;
  pid: number;
  name: string;
}

async function runLoad(
  spawn: NonNullable<MtlsContext["spawn"]>,
  target: LoadTarget,
  client: MtlsCerts | { dir: string },
  mode: "keepalive" | "handshakes",
  options: MtlsOptions,
  log: string,
): Promise<MtlsRunResult> {
  const identity = "dir" in client ? ["--certs", client.dir] : ["--cert", client.cert, "--key", client.key];
  const cmd = [
    process.execPath,
    LOAD_SCRIPT,
    ...["--url", target.url, ...identity, "--ca", target.ca],
    ...["--mode", mode, "--connections", String(options.connections), "--workers", String(options.workers ?? 1)],
    ...["--duration", String(options.duration), "--warmup", String(options.warmup), "--server-pid", String(target.pid)],
  ];
  const child = spawn(cmd, { log, stdout: "pipe" });
  const killer = setTimeout(() => child.kill("SIGKILL"), (options.duration + options.warmup + 60) * 1000);
  const output = await new Response(child.stdout as ReadableStream<Uint8Array>).text();
  const code = await child.exited;
  clearTimeout(killer);
  const line = output.trim().split("\n").at(-1) ?? "";
  let report: LoadReport;
  try {
    report = JSON.parse(line) as LoadReport;
  } catch {
    throw new Error(`mtls-load.ts (${mode}, ${target.name}) exited with ${code} and no report:\n${output}${tail(log)}`);
  }
  return toRunResult(report, target.name);
}

/** mtls-load.ts's error kinds, sorted into wrk's four counters. */
function socketErrors(errors: Record<string, number>): MtlsRunResult["socketErrors"] {
  const counts = { connect: 0, read: 0, write: 0, timeout: 0 };
  for (const [kind, n] of Object.entries(errors)) {
    if (kind.includes("timeout")) counts.timeout += n;
    else if (kind.startsWith("connect") || kind.startsWith("handshake") || kind.startsWith("server certificate")) counts.connect += n;
    else if (kind === "write") counts.write += n;
    else counts.read += n;
  }
  return counts;
}

function toRunResult(report: LoadReport, name: string): MtlsRunResult {
  const cpu = report.cpu;
  const workers = cpu.perWorkerPercent.map((p) => (p === null ? "n/a" : `${p.toFixed(0)}%`)).join(" + ");
  const errors = Object.entries(report.errors)
    .map(([kind, n]) => `${n} ${kind}`)
    .join(", ");
  const certs = report.certs;
  return {
    requestsPerSecond: report.requestsPerSecond,
    requests: report.requests,
    seconds: report.seconds,
    p50Ms: report.latencyMs.p50,
    p75Ms: report.latencyMs.p75,
    p90Ms: report.latencyMs.p90,
    p99Ms: report.latencyMs.p99,
    maxMs: report.latencyMs.max,
    non2xx: report.non2xx,
    socketErrors: socketErrors(report.errors),
    serverCpuUsPerRequest: cpu.serverUsPerRequest,
    scriptLines: [
      `mtls-load.ts: ${name}, ${report.mode}, generator ${workers} of a core (${cpu.generatorUsPerRequest ?? "n/a"} µs/request), ` +
        `server ${cpu.serverPercent ?? "n/a"}% of a core, ${report.reconnects} reconnects, ${report.resumedSessions} resumed sessions` +
        (certs ? `, ${certs.used} of ${certs.total} new certificates in ${report.seconds} s${certs.exhausted ? " (all used)" : ""}` : "") +
        (errors ? `, errors: ${errors}` : ""),
    ],
    otherCpuPercent: cpu.otherPercent,
    generator: report,
  };
}

// ---------------------------------------------------------------------------------------------

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0 ? NaN : sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const thousands = (value: number) => Math.round(value).toLocaleString("en-US");

async function startBaseline(
  spawn: NonNullable<MtlsContext["spawn"]>,
  tls: { cert: string; key: string; ca: string },
  log: string,
): Promise<{ child: Subprocess; port: number }> {
  const child = spawn([process.execPath, BASELINE_SCRIPT, "--cert", tls.cert, "--key", tls.key, "--ca", tls.ca], { log, stdout: "pipe" });
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  const first = await Promise.race([reader.read(), Bun.sleep(10_000).then(() => null)]);
  reader.releaseLock();
  const port = first && !first.done ? Number(new TextDecoder().decode(first.value).trim()) : NaN;
  if (!Number.isInteger(port) || port <= 0) {
    child.kill();
    throw new Error(`mtls-baseline.ts did not print its port:\n${tail(log)}`);
  }
  return { child, port };
}

/**
 * Measures the mTLS listener at `server.url` against a bare Bun.serve TLS server with
 * `requestCert`, in keep-alive and in handshakes mode. See the top of this file.
 */
export async function measureMtls(options: MtlsOptions, server: MtlsServer, context: MtlsContext): Promise<MtlsMeasurement> {
  const spawn = context.spawn ?? defaultSpawn;
  const stop = context.stop ?? defaultStop;
  const say = context.log ?? ((line: string) => process.stdout.write(`bench: ${line}\n`));
  const url = new URL(server.url);
  if (url.protocol !== "https:") throw new Error(`the mTLS listener's URL must be https:// (got ${server.url})`);
  for (const file of [server.certs.ca, server.certs.cert, server.certs.key, server.serverCert?.cert, server.serverCert?.key]) {
    if (file !== undefined && !existsSync(file)) throw new Error(`mtls: no such file: ${file}`);
  }
  const cold = server.coldCerts;
  // The cold runs' URL: the same route, for the host of each connection's certificate.
  const coldPath = url.pathname.replace(/^\/api\/hosts\/[^/]+\/client$/, "/api/hosts/{host}/client");
  if (cold !== undefined) {
    if (cold.length < options.repeat) throw new Error(`mtls: ${options.repeat} cold runs need as many directories (got ${cold.length})`);
    if (coldPath === url.pathname) throw new Error(`mtls: cold runs need the report route, /api/hosts/HOST/client (got ${url.pathname})`);
    for (const dir of cold) {
      if (certificateFiles(dir).length === 0) throw new Error(`mtls: ${dir} holds no HOST_https.pem with its HOST_https.key`);
    }
  }

  const probe = await probeReport(server.url, server.certs, server.certs.ca);
  if (probe.status !== 200) {
    throw new Error(`the mTLS listener answered a host report with ${probe.status}, not 200: ${probe.body.slice(0, 300)}`);
  }
  const baselineTls = server.serverCert
    ? { ...server.serverCert, verify: server.certs.ca }
    : (() => {
        const root = new X509Certificate(readFileSync(server.certs.ca));
        if (!probe.serverCertificate) throw new Error("the mTLS listener's certificate could not be read");
        const made = makeServerCertificate(join(context.work, "mtls-baseline-certs"), root, probe.serverCertificate);
        return { cert: made.cert, key: made.key, verify: made.ca };
      })();
  const listenerKey = probe.serverCertificate ? keyLike(probe.serverCertificate).label : "unknown";
  say(`mTLS: listener answers 200 over ${probe.tlsVersion} (${listenerKey} certificate); starting mtls-baseline.ts`);

  // The baseline checks client certificates against the same root as the listener.
  const baseline = await startBaseline(
    spawn,
    { cert: baselineTls.cert, key: baselineTls.key, ca: server.certs.ca },
    join(context.work, "mtls-baseline.log"),
  );
  try {
    const baselineUrl = `https://${HOST}:${baseline.port}${url.pathname}${url.search}`;
    const baselineProbe = await probeReport(baselineUrl, server.certs, baselineTls.verify);
    if (baselineProbe.status !== 200) throw new Error(`mtls-baseline.ts answered ${baselineProbe.status}: ${baselineProbe.body}`);
    const targets = {
      latchkey: { url: server.url, ca: server.certs.ca, pid: server.child.pid, name: "latchkey" },
      baseline: { url: baselineUrl, ca: baselineTls.verify, pid: baseline.child.pid, name: "baseline" },
    };
    const workers = options.workers ?? 1;
    const rows: Record<"keepalive" | "handshakes" | "coldHandshakes", MtlsRow> = {
      keepalive: {
        scenario: "POST /api/hosts/{host}/client (mTLS keep-alive)",
        description: `host report, client certificate, ${options.connections} keep-alive TLS connections, ${workers} generator process(es)`,
        runs: [],
        baselineRuns: [],
      },
      handshakes: {
        scenario: "new mTLS connections, warm cert cache",
        description:
          `a full TLS handshake and one report per connection, ${options.connections} at once, ` +
          "every connection with the same client certificate (verified once, then cached)",
        runs: [],
        baselineRuns: [],
      },
      coldHandshakes: {
        scenario: "new mTLS connections, cold cert cache",
        description:
          `a full TLS handshake and one report per connection, ${options.connections} at once, ` +
          "every connection with a client certificate of its own that the listener has not seen (one per registered host)",
        runs: [],
        baselineRuns: [],
      },
    };
    for (const mode of ["keepalive", "handshakes"] as const) {
      say(`mTLS ${mode}: ${options.repeat} × (${options.warmup} s warm-up + ${options.duration} s) on latchkey, then on the baseline`);
      for (let i = 0; i < options.repeat; i++) {
        for (const [name, results] of [
          ["latchkey", rows[mode].runs],
          ["baseline", rows[mode].baselineRuns],
        ] as const) {
          const log = join(context.work, `mtls-load-${mode}-${name}-${i + 1}.log`);
          results.push(await runLoad(spawn, targets[name], server.certs, mode, options, log));
        }
      }
    }
    if (cold !== undefined) {
      const coldTarget = (target: LoadTarget): LoadTarget => {
        const coldUrl = new URL(target.url);
        coldUrl.pathname = coldPath;
        return { ...target, url: coldUrl.href };
      };
      say(`mTLS cold cache: ${options.repeat} × (up to ${options.duration} s, no warm-up) on latchkey, then on the baseline`);
      for (let i = 0; i < options.repeat; i++) {
        for (const [name, results, dir] of [
          ["latchkey", rows.coldHandshakes.runs, cold[i]!],
          ["baseline", rows.coldHandshakes.baselineRuns, cold[0]!],
        ] as const) {
          const log = join(context.work, `mtls-load-cold-${name}-${i + 1}.log`);
          const coldOptions = { ...options, warmup: 0 };
          results.push(await runLoad(spawn, coldTarget(targets[name]), { dir }, "handshakes", coldOptions, log));
        }
      }
    }
    const coldRow = cold === undefined ? null : rows.coldHandshakes;
    return {
      keepalive: rows.keepalive,
      handshakes: rows.handshakes,
      coldHandshakes: coldRow,
      ...judge(rows.keepalive, rows.handshakes, coldRow),
    };
  } finally {
    await stop(baseline.child);
  }
}

/** SPEC §10's two numbers, and what makes a run doubtful. */
function judge(
  keepalive: MtlsRow,
  handshakes: MtlsRow,
  coldHandshakes: MtlsRow | null,
): Pick<MtlsMeasurement, "targets" | "problems" | "notes"> {
  const rate = (runs: MtlsRunResult[]) => median(runs.map((r) => r.requestsPerSecond));
  const ratio = rate(keepalive.runs) / rate(keepalive.baselineRuns);
  const newConnections = (row: MtlsRow, cache: string): MtlsVerdict => ({
    target: `new mTLS connections ≥ 1,000/s (${cache})`,
    measured: `${thousands(rate(row.runs))}/s (baseline ${thousands(rate(row.baselineRuns))}/s)`,
    met: rate(row.runs) >= 1000,
  });
  const targets: MtlsVerdict[] = [
    {
      target: "mTLS host reports (keep-alive) ≥ 60% of bare Bun.serve TLS + requestCert",
      measured: `${(ratio * 100).toFixed(0)}% (${thousands(rate(keepalive.runs))} vs ${thousands(rate(keepalive.baselineRuns))} req/s)`,
      met: ratio >= 0.6,
    },
    newConnections(handshakes, "warm certificate cache"),
    ...(coldHandshakes ? [newConnections(coldHandshakes, "cold certificate cache")] : []),
  ];
  const problems: string[] = [];
  const notes: string[] = [];
  if (coldHandshakes) {
    for (const run of coldHandshakes.runs) {
      const certs = run.generator.certs;
      // Each connection of the window took a certificate of its own: more answers than that cannot be.
      if (certs === null || certs.used < run.requests) {
        problems.push(`mTLS cold cache: ${run.requests} answers from ${certs?.used ?? 0} certificates: some were used twice`);
      }
      if (run.requests < 1000) {
        notes.push(`mTLS cold cache (latchkey): only ${run.requests} connections in the window (${run.seconds} s): a rough rate`);
      }
    }
  }
  for (const [row, label] of [
    [keepalive, "keep-alive"],
    [handshakes, "handshakes"],
    ...(coldHandshakes ? ([[coldHandshakes, "cold handshakes"]] as const) : []),
  ] as const) {
    for (const [runs, who] of [
      [row.runs, "latchkey"],
      [row.baselineRuns, "baseline"],
    ] as const) {
      for (const run of runs) {
        const g = run.generator;
        if (g.resumedSessions > 0) problems.push(`mTLS ${label} (${who}): ${g.resumedSessions} TLS sessions were resumed, not new`);
        if (label === "keep-alive" && g.reconnects > 0) {
          problems.push(`mTLS keep-alive (${who}): the server closed connections, ${g.reconnects} new handshakes in the run`);
        }
        const busiest = Math.max(...g.cpu.perWorkerPercent.map((p) => p ?? 0));
        if (busiest >= 90) {
          notes.push(`mTLS ${label} (${who}): a generator process used ${busiest.toFixed(0)}% of a core: it may have been the limit`);
        }
        if (run.otherCpuPercent !== null && run.otherCpuPercent > 5) {
          notes.push(`mTLS ${label} (${who}): other work used ${run.otherCpuPercent.toFixed(0)}% of the machine: req/s not to be trusted`);
        }
      }
    }
  }
  return { targets, problems, notes };
}

// ---------------------------------------------------------------------------------------------
// Standalone use.

function cell(row: MtlsRow): string[] {
  const rate = (runs: MtlsRunResult[]) => runs.map((r) => thousands(r.requestsPerSecond)).join(" / ");
  const cpu = (runs: MtlsRunResult[]) => median(runs.flatMap((r) => (r.serverCpuUsPerRequest === null ? [] : [r.serverCpuUsPerRequest])));
  const gen = (runs: MtlsRunResult[]) => median(runs.map((r) => r.generator.cpu.generatorPercent ?? NaN));
  const ratio = median(row.runs.map((r) => r.requestsPerSecond)) / median(row.baselineRuns.map((r) => r.requestsPerSecond));
  return [
    row.scenario,
    rate(row.runs),
    `${median(row.runs.map((r) => r.p50Ms)).toFixed(2)} / ${median(row.runs.map((r) => r.p99Ms)).toFixed(2)} ms`,
    rate(row.baselineRuns),
    `${(ratio * 100).toFixed(0)}%`,
    `${cpu(row.runs).toFixed(1)} / ${cpu(row.baselineRuns).toFixed(1)}`,
    `${gen(row.runs).toFixed(0)}% / ${gen(row.baselineRuns).toFixed(0)}%`,
    `${Math.max(...[...row.runs, ...row.baselineRuns].map((r) => r.otherCpuPercent ?? 0)).toFixed(0)}%`,
  ];
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

/** `count` client certificates in `dir` (one key, a serial each: distinct DERs) from --self-test's root, named as bundles. */
function selfTestColdCerts(work: string, dir: string, count: number, first: number): void {
  mkdirSync(dir, { recursive: true });
  const key = readFileSync(join(work, "client.key"), "utf8");
  for (let i = 0; i < count; i++) {
    const host = `cold-${first + i}.bench.test`;
    const out = join(dir, `${host}_https.pem`);
    openssl(
      [
        ...["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", String(1000 + first + i)],
        ...["-out", out, "-days", "7", "-extfile", "client.ext"],
      ],
      work,
    );
    writeFileSync(join(dir, `${host}_https.key`), key, { mode: 0o600 });
  }
}

/** Client and server certificates (EC P-256) under one throwaway root, for --self-test. */
function selfTestCerts(dir: string): { ca: string; cert: string; key: string; serverCert: string; serverKey: string } {
  const p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  writeFileSync(join(dir, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
  openssl(["req", "-x509", "-new", ...p256, "-keyout", "ca.key", "-out", "ca.pem", "-days", "7", "-subj", "/CN=self-test root"], dir);
  for (const [name, cn] of [
    ["server", "localhost"],
    ["client", "bench-host"],
  ] as const) {
    openssl(["req", "-new", ...p256, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`], dir);
    openssl(
      [
        ...["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
        ...["-out", `${name}.pem`, "-days", "7", "-extfile", `${name}.ext`],
      ],
      dir,
    );
  }
  const at = (file: string) => join(dir, file);
  return { ca: at("ca.pem"), cert: at("client.pem"), key: at("client.key"), serverCert: at("server.pem"), serverKey: at("server.key") };
}

async function cli(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      "self-test": { type: "boolean" },
      url: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      ca: { type: "string" },
      pid: { type: "string" },
      "server-cert": { type: "string" },
      "server-key": { type: "string" },
      cold: { type: "string" },
      "cold-certs": { type: "string", multiple: true },
      duration: { type: "string" },
      warmup: { type: "string" },
      repeat: { type: "string" },
      connections: { type: "string" },
      workers: { type: "string" },
    },
    strict: true,
  });
  const int = (name: string, raw: string | undefined, fallback: number, min: number, max: number) => {
    const value = raw === undefined ? fallback : Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
    return value;
  };
  const options: MtlsOptions = {
    duration: int("duration", values.duration, 5, 1, 120),
    warmup: int("warmup", values.warmup, 1, 0, 30),
    repeat: int("repeat", values.repeat, 1, 1, 10),
    connections: int("connections", values.connections, 64, 1, 1024),
    workers: int("workers", values.workers, 1, 1, 16),
  };
  const work = mkdtempSync(join(tmpdir(), "latchkey-mtls-"));
  let server: MtlsServer;
  if (values["self-test"]) {
    // The baseline stands in for latchkey: the ratio should come out near 100%.
    const certs = selfTestCerts(work);
    const stand = await startBaseline(
      defaultSpawn,
      { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca },
      join(work, "target.log"),
    );
    const cold = int("cold", values.cold, 0, 0, 20_000);
    const coldCerts = Array.from({ length: cold > 0 ? options.repeat : 0 }, (_, i) => join(work, `cold-${i + 1}`));
    coldCerts.forEach((dir, i) => selfTestColdCerts(work, dir, cold, i * cold));
    server = {
      url: `https://${HOST}:${stand.port}/api/hosts/bench-host/client`,
      child: stand.child,
      certs,
      ...(cold > 0 ? { coldCerts } : {}),
    };
  } else {
    if (!values.url || !values.cert || !values.key || !values.ca || !values.pid) {
      throw new Error("give --self-test, or --url, --cert, --key, --ca and --pid (the listener's process)");
    }
    const pid = int("pid", values.pid, 0, 1, 2 ** 22);
    if (Boolean(values["server-cert"]) !== Boolean(values["server-key"])) throw new Error("--server-cert and --server-key go together");
    server = {
      url: values.url,
      // Only its pid is read.
      child: { pid } as Subprocess,
      certs: { ca: values.ca, cert: values.cert, key: values.key },
      ...(values["server-cert"] ? { serverCert: { cert: values["server-cert"], key: values["server-key"]! } } : {}),
      ...(values["cold-certs"] ? { coldCerts: values["cold-certs"] } : {}),
    };
  }
  const result = await measureMtls(options, server, { work });
  // What run.ts's failures() reports for its rows: any non-2xx answer or socket error.
  const rows = [result.keepalive, result.handshakes, ...(result.coldHandshakes ? [result.coldHandshakes] : [])];
  const all = rows.flatMap((row) =>
    [...row.runs, ...row.baselineRuns].map((run, i) => ({ row, run, who: i < row.runs.length ? "latchkey" : "baseline" })),
  );
  const failures = all.flatMap(({ row, run, who }) => {
    const socket = run.socketErrors.connect + run.socketErrors.read + run.socketErrors.write + run.socketErrors.timeout;
    return run.non2xx > 0 || socket > 0 ? [`${row.scenario} (${who}): ${run.non2xx} non-2xx replies, ${socket} socket errors`] : [];
  });
  const out = [
    "",
    table(
      ["scenario", "req/s", "p50 / p99", "baseline req/s", "ratio", "server CPU µs/req (vs baseline)", "generator CPU", "other CPU (max)"],
      rows.map(cell),
    ),
    "",
    table(
      ["SPEC §10 target", "measured", "status"],
      result.targets.map((t) => [t.target, t.measured, t.met ? "met" : "MISSED"]),
    ),
    "",
    ...rows.flatMap((row) => [...row.runs, ...row.baselineRuns]).flatMap((r) => r.scriptLines),
    ...result.notes.map((n) => `note: ${n}`),
    ...[...failures, ...result.problems].map((p) => `WARNING ${p}`),
    `bench: logs in ${work}`,
  ];
  writeFileSync(join(work, "results.json"), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${out.join("\n")}\n`);
  return failures.length > 0 || result.problems.length > 0 ? 1 : 0;
}

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      for (const child of ownChildren) child.kill("SIGKILL");
      process.exit(130);
    });
  }
  let code = 1;
  try {
    code = await cli();
  } catch (error) {
    process.stderr.write(`mtls: ${(error as Error).message}\n`);
  } finally {
    await Promise.all([...ownChildren].map((child) => defaultStop(child)));
  }
  process.exit(code);
}
