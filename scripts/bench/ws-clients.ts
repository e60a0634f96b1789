/**
 * Load generator for the `register` and `idle` scenarios of `scripts/bench/run.ts`, run as its
 * own Bun process so that the server under test and the 10,000 client sockets never share an
 * event loop (nor a file-descriptor limit).
 *
 *   bun scripts/bench/ws-clients.ts --url ws://127.0.0.1:PORT/ws --keys KEYS_FILE --out ASSIGN_FILE
 *                                   [--concurrency 500] [--timeout 30]
 *
 * KEYS_FILE holds one enrollment key per line. Every key gets a fresh UUID v4 and its own
 * WebSocket, which sends one `client/register` with that key. At most --concurrency sockets are
 * between "opening" and "answered" at any moment; an answered socket stays open (an idle,
 * registered client) until this process gets SIGTERM or SIGINT.
 *
 * When every key has an answer (or --timeout seconds passed), it writes "uuid key" for every
 * successful registration to ASSIGN_FILE and prints one JSON line on stdout:
 *   {"event":"registered","ok":N,"failed":N,"errors":{...},"seconds":S,"open":N,"latencyMs":{...}}
 * Then it holds the open sockets, printing {"event":"closed","unexpected":N} on stderr if the server
 * drops any, until it is told to stop.
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
  },
  strict: true,
});
if (!values.url || !values.keys || !values.out) throw new Error("--url, --keys and --out are required");
const URL_ = values.url;
const CONCURRENCY = Number(values.concurrency ?? 500);
const TIMEOUT_MS = Number(values.timeout ?? 30) * 1000;
const keys = readFileSync(values.keys, "utf8")
  .split("\n")
  .map((k) => k.trim())
  .filter(Boolean);

const open = new Set<WebSocket>();
const assignments: string[] = [];
const errors: Record<string, number> = {};
const latencies: number[] = [];
/** When each answer came, in ms since the first socket: shows whether later registrations get slower. */
const answeredAt: number[] = [];
let startedAt = 0;
let ok = 0;
let failed = 0;
let stopping = false;
let unexpectedCloses = 0;

function countError(reason: string): void {
  failed++;
  errors[reason] = (errors[reason] ?? 0) + 1;
}

/** One client: open, register, and resolve once answered (the socket stays open on success). */
function registerOne(key: string): Promise<void> {
  return new Promise((resolve) => {
    const uuid = crypto.randomUUID();
    const started = performance.now();
    let answered = false;
    const ws = new WebSocket(URL_);
    const done = (reason: string | null) => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      answeredAt.push(performance.now() - startedAt);
      if (reason === null) {
        ok++;
        latencies.push(performance.now() - started);
        assignments.push(`${uuid} ${key}`);
      } else {
        countError(reason);
        ws.close();
      }
      resolve();
    };
    const timer = setTimeout(() => done("timeout (no answer within 20 s)"), 20_000);
    ws.onopen = () => {
      ws.send(
        JSON.stringify({
          namespace: "client",
          name: "register",
          id: "1",
          args: {
            uuid,
            name: `bench-${uuid.slice(0, 8)}`,
            hostname: `${uuid.slice(0, 8)}.bench.example`,
            version: "1",
            os: "linux",
            auth_key: key,
          },
        }),
      );
    };
    ws.onmessage = (event) => {
      let message: { namespace?: string; name?: string; id?: unknown; args?: { registered?: unknown; message?: unknown; code?: unknown } };
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (message.namespace !== "rpc" || message.id !== "1") return; // pushes and the like
      if (message.name === "response" && message.args?.registered === true) {
        open.add(ws);
        done(null);
      } else {
        done(
          `${String(message.args?.code ?? message.name)}: ${String(message.args?.message ?? JSON.stringify(message.args))}`.slice(0, 200),
        );
      }
    };
    ws.onerror = () => done("socket error");
    ws.onclose = (event) => {
      if (open.delete(ws) && !stopping) {
        unexpectedCloses++;
        process.stderr.write(
          `${JSON.stringify({ event: "closed", code: event.code, reason: event.reason, unexpected: unexpectedCloses })}\n`,
        );
      }
      done(`closed before an answer (${event.code})`);
    };
  });
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function main(): Promise<void> {
  const started = performance.now();
  startedAt = started;
  let next = 0;
  const worker = async () => {
    while (next < keys.length) await registerOne(keys[next++]!);
  };
  const all = Promise.all(Array.from({ length: Math.min(CONCURRENCY, keys.length) }, worker));
  await Promise.race([all, Bun.sleep(TIMEOUT_MS)]);
  const seconds = (performance.now() - started) / 1000;
  if (ok + failed < keys.length) errors["not answered before --timeout"] = keys.length - ok - failed;
  writeFileSync(values.out!, assignments.join("\n") + "\n");
  const sorted = [...latencies].sort((a, b) => a - b);
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
      latencyMs: { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.at(-1) ?? 0 },
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
