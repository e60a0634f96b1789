/**
 * Load generator for the `register`, `idle` and `enroll-csr` scenarios of `scripts/bench/run.ts`,
 * run as its own Bun process so that the server under test and the 10,000 client sockets never
 * share an event loop (nor a file-descriptor limit).
 *
 *   bun scripts/bench/ws-clients.ts --url ws://127.0.0.1:PORT/ws --keys KEYS_FILE --out ASSIGN_FILE
 *                                   [--concurrency 500] [--timeout 30]
 *                                   [--requests REQUESTS_FILE [--register-only] [--issued ISSUED_FILE]]
 *
 * KEYS_FILE holds one enrollment key per line. Every key gets a fresh UUID v4 and its own
 * WebSocket, which sends one `client/register` with that key. At most --concurrency sockets are
 * between "opening" and "answered" at any moment; an answered socket stays open (an idle,
 * registered client) until this process gets SIGTERM or SIGINT.
 *
 * With --requests (`enroll-csr`), line i of REQUESTS_FILE, a JSON object `{"hostname", "csr"}`
 * made before the clock starts, belongs to key i: the client registers with that hostname and
 * then, on the same socket, sends `client/csr` with that PEM request, as the agent does. It is
 * answered once it has its certificate, which goes to ISSUED_FILE as a JSON line
 * `{uuid, key, hostname, serial, certificate, ca, ca_fingerprint}`. --register-only keeps the
 * hostnames and skips the CSR: the same clients, registering only.
 *
 * When every key has an answer (or --timeout seconds passed), it writes "uuid key" for every
 * successful registration to ASSIGN_FILE and prints one JSON line on stdout:
 *   {"event":"registered","ok":N,"failed":N,"errors":{...},"seconds":S,"open":N,"latencyMs":{...}}
 * (with --requests also "certificates":N, "csrLatencyMs" from the CSR sent to the certificate,
 * and "enrolledLatencyMs" from the socket's opening to the certificate). Then it holds the open
 * sockets, printing {"event":"closed","unexpected":N} on stderr if the server drops any, until it
 * is told to stop.
 */
import { writeFileSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    url: { type: "string" },
    keys: { type: "string" },
    out: { type: "string" },
    concurrency: { type: "string" },
    timeout: { type: "string" },
    requests: { type: "string" },
    "register-only": { type: "boolean" },
    issued: { type: "string" },
  },
  strict: true,
});
if (!values.url || !values.keys || !values.out) throw new Error("--url, --keys and --out are required");
const URL_ = values.url;
const CONCURRENCY = Number(values.concurrency ?? 500);
const TIMEOUT_MS = Number(values.timeout ?? 30) * 1000;
/** Per step (registration, certificate): how long one client waits for an answer. */
const STEP_TIMEOUT_MS = 20_000;
const keys = readFileSync(values.keys, "utf8")
  .split("\n")
  .map((k) => k.trim())
  .filter(Boolean);
const requests =
  values.requests === undefined
    ? null
    : readFileSync(values.requests, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { hostname: string; csr: string });
if (requests !== null && requests.length < keys.length) throw new Error(`--requests has ${requests.length} lines for ${keys.length} keys`);
const SEND_CSR = requests !== null && !values["register-only"];
if (SEND_CSR && !values.issued) throw new Error("--requests without --register-only needs --issued");

const open = new Set<WebSocket>();
const assignments: string[] = [];
const issued: string[] = [];
const errors: Record<string, number> = {};
const latencies: number[] = [];
const csrLatencies: number[] = [];
const enrolledLatencies: number[] = [];
/** When each client was done, in ms since the first socket: shows whether later clients get slower. */
const answeredAt: number[] = [];
let startedAt = 0;
let ok = 0;
let certificates = 0;
let failed = 0;
let stopping = false;
let unexpectedCloses = 0;

function countError(reason: string): void {
  failed++;
  errors[reason] = (errors[reason] ?? 0) + 1;
}

interface Reply {
  namespace?: string;
  name?: string;
  id?: unknown;
  args?: {
    registered?: unknown;
    message?: unknown;
    code?: unknown;
    certificate?: unknown;
    ca?: unknown;
    ca_fingerprint?: unknown;
    serial?: unknown;
  };
}

const refusal = (message: Reply) =>
  `${String(message.args?.code ?? message.name)}: ${String(message.args?.message ?? JSON.stringify(message.args))}`.slice(0, 200);

/**
 * One client: open, register (and with --requests, send its CSR), and resolve once answered; the
 * socket stays open on success.
 */
function enrollOne(index: number): Promise<void> {
  return new Promise((resolve) => {
    const key = keys[index]!;
    const request = requests?.[index];
    const uuid = crypto.randomUUID();
    const hostname = request?.hostname ?? `${uuid.slice(0, 8)}.bench.example`;
    const started = performance.now();
    let step: "register" | "csr" = "register";
    let csrSentAt = 0;
    let answered = false;
    const ws = new WebSocket(URL_);
    const done = (reason: string | null) => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      const now = performance.now();
      answeredAt.push(now - startedAt);
      if (reason === null) {
        if (step === "csr") enrolledLatencies.push(now - started);
      } else {
        countError(reason);
        // A registered client whose CSR failed is let go: not a socket the server dropped.
        open.delete(ws);
        ws.close();
      }
      resolve();
    };
    let timer = setTimeout(() => done("timeout (no answer within 20 s)"), STEP_TIMEOUT_MS);
    ws.onopen = () => {
      ws.send(
        JSON.stringify({
          namespace: "client",
          name: "register",
          id: "1",
          args: {
            uuid,
            name: `bench-${uuid.slice(0, 8)}`,
            hostname,
            version: "1",
            os: "linux",
            auth_key: key,
          },
        }),
      );
    };
    ws.onmessage = (event) => {
      let message: Reply;
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (message.namespace !== "rpc" || message.id !== (step === "register" ? "1" : "2")) return; // pushes and the like
      if (step === "register") {
        if (message.name !== "response" || message.args?.registered !== true) return done(refusal(message));
        ok++;
        latencies.push(performance.now() - started);
        assignments.push(`${uuid} ${key}`);
        open.add(ws);
        if (!SEND_CSR) return done(null);
        step = "csr";
        clearTimeout(timer);
        timer = setTimeout(() => done("csr: timeout (no answer within 20 s)"), STEP_TIMEOUT_MS);
        csrSentAt = performance.now();
        ws.send(JSON.stringify({ namespace: "client", name: "csr", id: "2", args: { csr: request!.csr } }));
        return;
      }
      const args = message.args;
      if (message.name !== "response" || typeof args?.certificate !== "string") return done(`csr: ${refusal(message)}`);
      certificates++;
      csrLatencies.push(performance.now() - csrSentAt);
      issued.push(
        JSON.stringify({
          uuid,
          key,
          hostname,
          serial: args.serial,
          certificate: args.certificate,
          ca: args.ca,
          ca_fingerprint: args.ca_fingerprint,
        }),
      );
      done(null);
    };
    ws.onerror = () => done(step === "csr" ? "csr: socket error" : "socket error");
    ws.onclose = (event) => {
      if (open.delete(ws) && !stopping) {
        unexpectedCloses++;
        process.stderr.write(
          `${JSON.stringify({ event: "closed", code: event.code, reason: event.reason, unexpected: unexpectedCloses })}\n`,
        );
      }
      done(`${step === "csr" ? "csr: " : ""}closed before an answer (${event.code})`);
    };
  });
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

function percentiles(values: number[]): { p50: number; p90: number; p99: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.at(-1) ?? 0 };
}

async function main(): Promise<void> {
  const started = performance.now();
  startedAt = started;
  let next = 0;
  const worker = async () => {
    while (next < keys.length) await enrollOne(next++);
  };
  const all = Promise.all(Array.from({ length: Math.min(CONCURRENCY, keys.length) }, worker));
  await Promise.race([all, Bun.sleep(TIMEOUT_MS)]);
  const seconds = (performance.now() - started) / 1000;
  const completed = SEND_CSR ? certificates : ok;
  if (completed + failed < keys.length) errors["not answered before --timeout"] = keys.length - completed - failed;
  writeFileSync(values.out!, assignments.join("\n") + "\n");
  if (SEND_CSR) writeFileSync(values.issued!, issued.join("\n") + "\n");
  process.stdout.write(
    `${JSON.stringify({
      event: "registered",
      keys: keys.length,
      ok,
      failed: keys.length - ok,
      errors,
      seconds,
      open: open.size,
      // Seconds each tenth of the answers took: a rising series means each registration costs more
      // as more clients are connected.
      tenthsSeconds: Array.from({ length: 10 }, (_, i) => {
        const at = (k: number) => (k <= 0 ? 0 : (answeredAt[Math.min(answeredAt.length, k) - 1] ?? 0));
        return (at(Math.round(((i + 1) * answeredAt.length) / 10)) - at(Math.round((i * answeredAt.length) / 10))) / 1000;
      }),
      latencyMs: percentiles(latencies),
      ...(SEND_CSR ? { certificates, csrLatencyMs: percentiles(csrLatencies), enrolledLatencyMs: percentiles(enrolledLatencies) } : {}),
    })}\n`,
  );
}

function stop(): void {
  stopping = true;
  for (const ws of open) ws.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

await main();
// Hold the sockets: the event loop stays alive as long as they are open; a timer makes sure of it.
setInterval(() => {}, 60_000);
