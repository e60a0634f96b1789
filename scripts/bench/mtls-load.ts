/**
 * Load generator for the `mtls` scenario (`scripts/bench/mtls.ts`, for `scripts/bench/run.ts`):
 * HTTP/1.1 over TLS with a client certificate, which Debian's wrk and bombardier cannot send.
 *
 *   bun scripts/bench/mtls-load.ts --url https://127.0.0.1:PORT/api/hosts/HOST/client
 *       (--cert client.pem --key client.key | --certs DIR) --ca ca.pem [--connections 64] [--duration 10]
 *       [--mode keepalive|handshakes] [--body JSON] [--workers 1] [--pipeline 1] [--warmup 0]
 *       [--timeout 5] [--servername NAME] [--server-pid PID]
 *
 * Every request is `POST` of --body (a small host report by default) with `Content-Type:
 * application/json`. --ca is the root the server's certificate must chain to (it is verified, as
 * an agent would); --cert and --key are the client certificate the server asks for.
 *
 * - `keepalive` (default): --connections TLS connections are opened (and their handshakes done)
 *   before the clock starts, then each keeps one request in flight (--pipeline N: N at once),
 *   sending the next as soon as an answer is complete. Raw `Bun.connect` sockets, not fetch:
 *   fetch's pooling and per-request cost made the client the bottleneck. Answers are framed by
 *   Content-Length or chunked encoding; an answer with `Connection: close` or a dropped
 *   connection is followed by a new connection (counted under `reconnects`).
 * - `handshakes`: every request on a new connection: TCP connect, a full TLS handshake with the
 *   client certificate, one request with `Connection: close`, the answer, close. --connections of
 *   these run at once. No session is offered for resumption (Bun's client only resumes when
 *   given one with setSession); `resumedSessions` counts any the server resumed anyway, so a run
 *   shows that it measured full handshakes. The rate is new connections per second.
 *
 * --certs DIR (instead of --cert and --key): many client certificates, each used for one
 * connection only, so that a server that caches its verification of a certificate sees every one
 * for the first time (a cold cache). DIR holds bundles as `latchkey host bundle` writes them,
 * `HOST_https.pem` and `HOST_https.key` (other files are ignored); they are taken in the order of
 * their names, and `{host}` in --url stands for the HOST of each connection's certificate. Every
 * new connection, in the warm-up too, takes the next unused one; once none is left no connection
 * is started, and the measured window ends when the last connection has its answer (or at
 * --duration, whichever comes first): `certs` in the report says how many were used and whether
 * they ran out. Workers share them out by position (worker i of N takes every Nth from the ith).
 *
 * --workers N runs N child processes of this script, each with its share of the connections,
 * started and stopped together (over their stdin), with their counts summed and their latency
 * histograms merged: one Bun process may not saturate the server. --warmup S sends load for S
 * seconds before the measured --duration (the counters restart), so that both sides' JITs are warm.
 * With --server-pid, the server's CPU time is read from /proc at the start and end of the
 * measured window, as are the workers' own and the whole machine's.
 *
 * Output: one JSON line on stdout (`requestsPerSecond`, latency percentiles, `statuses`, `errors`
 * by kind, `cpu`, ...). Exit code 0 when some request was answered, 1 when none was, 2 for bad
 * arguments.
 */
import type { Socket, SocketHandler, Subprocess } from "bun";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const MODES = ["keepalive", "handshakes"] as const;
type Mode = (typeof MODES)[number];

/** What a run needs; a worker process gets it as JSON, with its share of the connections. */
interface Config {
  url: string;
  /** One client certificate for every connection; null with certsDir. */
  certFile: string | null;
  keyFile: string | null;
  /** A directory of bundles, each certificate used for one connection only; null with certFile. */
  certsDir: string | null;
  /** Which of certsDir's certificates are this worker's: every `count`th from the `index`th. */
  certsShard: { index: number; count: number };
  caFile: string;
  servername: string | null;
  connections: number;
  duration: number;
  warmup: number;
  timeout: number;
  mode: Mode;
  body: string;
  workers: number;
  pipeline: number;
  serverPid: number | null;
}

/** A host report as SPEC §5 shapes it: `{interfaces: [{name, addresses}], port, version}`. */
export const DEFAULT_BODY = JSON.stringify({
  interfaces: [{ name: "eth0", addresses: ["192.0.2.10/24", "2001:db8::10/64"] }],
  port: 22,
  version: "bench",
});

const USAGE =
  "usage: bun scripts/bench/mtls-load.ts --url https://HOST:PORT/PATH (--cert FILE --key FILE | --certs DIR) --ca FILE\n" +
  "       [--connections 64] [--duration 10] [--mode keepalive|handshakes] [--body JSON] [--workers 1]\n" +
  "       [--pipeline 1] [--warmup 0] [--timeout 5] [--servername NAME] [--server-pid PID]";

class UsageError extends Error {}

function num(name: string, raw: string | undefined, fallback: number, min: number, max: number, whole: boolean): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(value) || (whole && !Number.isInteger(value)) || value < min || value > max) {
    throw new UsageError(`--${name} must be ${whole ? "a whole number" : "a number"} from ${min} to ${max} (got ${JSON.stringify(raw)})`);
  }
  return value;
}

function pemFile(name: string, path: string | undefined, kind: RegExp): string {
  if (path === undefined) throw new UsageError(`--${name} is required`);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new UsageError(`--${name} ${path}: ${(error as Error).message}`);
  }
  if (!kind.test(text)) throw new UsageError(`--${name} ${path} holds no ${kind.source.replace(/\\/g, "")} PEM block`);
  return path;
}

/** The bundles in a --certs directory, in the order of their names: `HOST_https.pem` with its `HOST_https.key`. */
export function certificateFiles(dir: string): { host: string; cert: string; key: string }[] {
  const names = new Set(readdirSync(dir));
  return [...names]
    .filter((name) => name.endsWith("_https.pem") && names.has(name.replace(/\.pem$/, ".key")))
    .sort()
    .map((name) => ({ host: name.slice(0, -"_https.pem".length), cert: join(dir, name), key: join(dir, name.replace(/\.pem$/, ".key")) }));
}

function readConfig(argv: string[]): Config {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        url: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        certs: { type: "string" },
        ca: { type: "string" },
        servername: { type: "string" },
        connections: { type: "string" },
        duration: { type: "string" },
        warmup: { type: "string" },
        timeout: { type: "string" },
        mode: { type: "string" },
        body: { type: "string" },
        workers: { type: "string" },
        pipeline: { type: "string" },
        "server-pid": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values = parsed.values;
  if (values.url === undefined) throw new UsageError("--url is required");
  let url: URL;
  try {
    url = new URL(values.url);
  } catch {
    throw new UsageError(`--url is not a URL: ${JSON.stringify(values.url)}`);
  }
  if (url.protocol !== "https:") throw new UsageError(`--url must be https:// (got ${url.protocol}//)`);
  const mode = (values.mode ?? "keepalive") as Mode;
  if (!MODES.includes(mode)) throw new UsageError(`--mode takes ${MODES.join(" or ")} (got ${JSON.stringify(values.mode)})`);
  const body = values.body ?? DEFAULT_BODY;
  try {
    JSON.parse(body);
  } catch (error) {
    throw new UsageError(`--body is not JSON: ${(error as Error).message}`);
  }
  if (Buffer.byteLength(body) > 1 << 20) throw new UsageError("--body is over 1 MiB");
  if (values.certs !== undefined && (values.cert !== undefined || values.key !== undefined)) {
    throw new UsageError("--certs takes the place of --cert and --key: give one or the other");
  }
  if (values.certs !== undefined) {
    let count: number;
    try {
      count = certificateFiles(values.certs).length;
    } catch (error) {
      throw new UsageError(`--certs ${values.certs}: ${(error as Error).message}`);
    }
    if (count === 0) throw new UsageError(`--certs ${values.certs} holds no HOST_https.pem with its HOST_https.key`);
  }
  const config: Config = {
    url: url.href,
    certFile: values.certs === undefined ? pemFile("cert", values.cert, /CERTIFICATE/) : null,
    keyFile: values.certs === undefined ? pemFile("key", values.key, /PRIVATE KEY/) : null,
    certsDir: values.certs ?? null,
    certsShard: { index: 0, count: 1 },
    caFile: pemFile("ca", values.ca, /CERTIFICATE/),
    servername: values.servername ?? null,
    connections: num("connections", values.connections, 64, 1, 20_000, true),
    duration: num("duration", values.duration, 10, 0.1, 3600, false),
    warmup: num("warmup", values.warmup, 0, 0, 600, false),
    timeout: num("timeout", values.timeout, 5, 1, 600, true),
    mode,
    body,
    workers: num("workers", values.workers, 1, 1, 64, true),
    pipeline: num("pipeline", values.pipeline, 1, 1, 256, true),
    serverPid: values["server-pid"] === undefined ? null : num("server-pid", values["server-pid"], 0, 1, 2 ** 22, true),
  };
  if (config.workers > config.connections) throw new UsageError("--workers cannot exceed --connections (a worker needs a connection)");
  if (config.mode === "handshakes" && config.pipeline > 1) throw new UsageError("--pipeline needs --mode keepalive");
  if (config.serverPid !== null && !existsSync(`/proc/${config.serverPid}/stat`)) {
    throw new UsageError(`--server-pid ${config.serverPid}: no such process`);
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Latency: a log-linear histogram in microseconds (exact below 128 µs, then 64 buckets per power
// of two, so within 1.6%), cheap to record into and to merge across workers.

const HISTOGRAM_BUCKETS = 128 + 24 * 64;

function bucketOf(us: number): number {
  const v = Math.min(2 ** 31 - 1, Math.max(0, Math.round(us)));
  if (v < 128) return v;
  const exponent = 31 - Math.clz32(v);
  return 128 + (exponent - 7) * 64 + ((v >>> (exponent - 6)) - 64);
}

/** The middle of a bucket, in microseconds. */
function valueOf(bucket: number): number {
  if (bucket < 128) return bucket;
  const exponent = ((bucket - 128) >> 6) + 7;
  const width = 2 ** (exponent - 6);
  return (((bucket - 128) & 63) + 64) * width + width / 2;
}

interface HistogramJson {
  buckets: [number, number][];
  count: number;
  sumUs: number;
  maxUs: number;
}

class Histogram {
  counts = new Float64Array(HISTOGRAM_BUCKETS);
  count = 0;
  sumUs = 0;
  maxUs = 0;

  record(us: number): void {
    this.counts[bucketOf(us)]!++;
    this.count++;
    this.sumUs += us;
    if (us > this.maxUs) this.maxUs = us;
  }

  toJSON(): HistogramJson {
    const buckets: [number, number][] = [];
    this.counts.forEach((n, i) => {
      if (n > 0) buckets.push([i, n]);
    });
    return { buckets, count: this.count, sumUs: this.sumUs, maxUs: this.maxUs };
  }

  add(json: HistogramJson): void {
    for (const [i, n] of json.buckets) this.counts[i]! += n;
    this.count += json.count;
    this.sumUs += json.sumUs;
    this.maxUs = Math.max(this.maxUs, json.maxUs);
  }

  percentileUs(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(valueOf(i), this.maxUs);
    }
    return this.maxUs;
  }

  summaryMs() {
    const ms = (us: number) => Math.round(us) / 1000;
    return {
      p50: ms(this.percentileUs(50)),
      p75: ms(this.percentileUs(75)),
      p90: ms(this.percentileUs(90)),
      p99: ms(this.percentileUs(99)),
      max: ms(this.maxUs),
      mean: this.count === 0 ? 0 : ms(this.sumUs / this.count),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// What one worker counts over the measured window.

class Stats {
  startedAt = performance.now();
  latency = new Histogram();
  handshake = new Histogram();
  statuses: Record<string, number> = {};
  errors: Record<string, number> = {};
  requests = 0;
  non2xx = 0;
  /** keepalive: connections made again after a drop or a `Connection: close`; handshakes: after a failure. */
  reconnects = 0;
  resumedSessions = 0;
  tlsVersions: Record<string, number> = {};

  response(status: number, latencyMs: number): void {
    this.requests++;
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    if (status < 200 || status > 299) this.non2xx++;
    this.latency.record(latencyMs * 1000);
  }

  error(kind: string): void {
    this.errors[kind] = (this.errors[kind] ?? 0) + 1;
  }
}

/** A worker's report: its Stats over the window, as JSON. */
interface WorkerResult {
  seconds: number;
  requests: number;
  non2xx: number;
  statuses: Record<string, number>;
  errors: Record<string, number>;
  reconnects: number;
  resumedSessions: number;
  tlsVersions: Record<string, number>;
  latency: HistogramJson;
  handshake: HistogramJson;
  /** keepalive: connections whose handshake completed before the clock started. */
  connected: number;
  /** --certs: this worker's share, how many it took (a connection each, the warm-up's too), and whether they ran out. */
  certs: { total: number; used: number; exhausted: boolean } | null;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response framing, on bytes.

const INCOMPLETE = -1;
const MALFORMED = -2;
const NO_LENGTH = -3;
const HEAD_END = Buffer.from("\r\n\r\n");
const LINE_END = Buffer.from("\r\n");

interface Parsed {
  status: number;
  close: boolean;
}

const CONNECTION = "\r\nconnection:";
const TRANSFER_ENCODING = "\r\ntransfer-encoding:";
const CONTENT_LENGTH = "\r\ncontent-length:";

/** The value of a header in a lowercased header block, found by its "\r\nname:" needle; null when absent. */
function headerValue(head: string, needle: string): string | null {
  const at = head.indexOf(needle);
  if (at < 0) return null;
  const start = at + needle.length;
  const end = head.indexOf("\r\n", start);
  return head.slice(start, end < 0 ? head.length : end).trim();
}

/** Where the chunked body starting at `pos` ends (after its last chunk and trailers), or INCOMPLETE / MALFORMED. */
function chunkedEnd(buf: Buffer, pos: number): number {
  for (;;) {
    const lineEnd = buf.indexOf(LINE_END, pos);
    if (lineEnd < 0) return buf.length - pos > 1024 ? MALFORMED : INCOMPLETE;
    const size = parseInt(buf.toString("latin1", pos, lineEnd).split(";", 1)[0]!.trim(), 16);
    if (!Number.isInteger(size) || size < 0) return MALFORMED;
    pos = lineEnd + 2;
    if (size === 0) {
      if (buf.length < pos + 2) return INCOMPLETE;
      if (buf[pos] === 13 && buf[pos + 1] === 10) return pos + 2;
      const trailersEnd = buf.indexOf(HEAD_END, pos);
      return trailersEnd < 0 ? INCOMPLETE : trailersEnd + 4;
    }
    if (buf.length < pos + size + 2) return INCOMPLETE;
    if (buf[pos + size] !== 13 || buf[pos + size + 1] !== 10) return MALFORMED;
    pos += size + 2;
  }
}

/** Frames the response starting at `off`: returns where it ends (filling `out`), or INCOMPLETE / MALFORMED / NO_LENGTH. */
function parseResponse(buf: Buffer, off: number, out: Parsed): number {
  const headEnd = buf.indexOf(HEAD_END, off);
  if (headEnd < 0) return buf.length - off > 64 * 1024 ? MALFORMED : INCOMPLETE;
  // "HTTP/1.1 200 OK"
  if (headEnd - off < 12 || buf[off] !== 72 || buf[off + 4] !== 47 || buf[off + 8] !== 32) return MALFORMED;
  const status = (buf[off + 9]! - 48) * 100 + (buf[off + 10]! - 48) * 10 + (buf[off + 11]! - 48);
  if (!(status >= 100 && status <= 599)) return MALFORMED;
  const head = buf.toString("latin1", off, headEnd).toLowerCase();
  const connection = headerValue(head, CONNECTION);
  out.status = status;
  out.close = head.startsWith("http/1.0") ? connection !== "keep-alive" : connection !== null && connection.includes("close");
  const bodyStart = headEnd + 4;
  if (status < 200 || status === 204 || status === 304) return bodyStart;
  const transfer = headerValue(head, TRANSFER_ENCODING);
  if (transfer !== null && transfer.includes("chunked")) return chunkedEnd(buf, bodyStart);
  const length = headerValue(head, CONTENT_LENGTH);
  if (length === null) return NO_LENGTH;
  const bytes = Number(length);
  if (!Number.isInteger(bytes) || bytes < 0) return MALFORMED;
  return buf.length >= bodyStart + bytes ? bodyStart + bytes : INCOMPLETE;
}

// ---------------------------------------------------------------------------------------------
// One worker's connections, in this process.

/** One TLS connection (a new one after every reconnect, so that a late event of an old socket is harmless). */
class Conn {
  socket: Socket<Conn> | undefined;
  startedAt = performance.now();
  handshaken = false;
  /** Its outcome was counted (answered in handshakes mode, or failed): its close says nothing more. */
  settled = false;
  /** Bytes received that do not make a whole response yet. */
  buffered: Buffer | undefined;
  /** Bytes the socket did not take yet (backpressure), written on drain. */
  unwritten: Buffer | undefined;
  /** When each request in flight was sent, oldest first (a ring of --pipeline entries). */
  sentAt: Float64Array;
  head = 0;
  inFlight = 0;
  /** keepalive: counted among the first connections (opened, or failed to) of the connect phase. */
  firstDone = false;

  constructor(
    readonly slot: number,
    pipeline: number,
    /** The client certificate it presents, and the requests for its host. */
    readonly identity: Identity,
  ) {
    this.sentAt = new Float64Array(pipeline);
  }
}

const noop = () => {};

/** A client certificate (Bun.connect's `tls`) and the requests that go with it (its host is in their path). */
interface Identity {
  tls: Record<string, unknown>;
  /** requests[k] = k keep-alive requests back to back (k = 1..pipeline). */
  requests: Buffer[];
  /** One request with `Connection: close` (handshakes mode). */
  closing: Buffer;
}

class Engine {
  private readonly hostname: string;
  private readonly port: number;
  /** --cert: the one identity of every connection; --certs: one per certificate, each used once, in order. */
  private readonly identities: Identity[];
  private nextIdentity = 0;
  /** --certs: none left, and every connection that had one is over. */
  drained: Promise<void>;
  private drainedAt: number | null = null;
  private markDrained: () => void = noop;
  private readonly parsed: Parsed = { status: 0, close: false };
  private readonly conns: (Conn | undefined)[] = [];
  private readonly handlers: SocketHandler<Conn>;
  stats = new Stats();
  /** Load is being sent (between go() and stop()). */
  private running = false;
  private stopped = false;
  /** keepalive: resolves the connect phase once every first connection is done or failed. */
  private firstConnectionsLeft = 0;
  private firstConnectionsDone: () => void = noop;
  private connected = 0;

  constructor(private readonly config: Config) {
    const url = new URL(config.url);
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = url.port === "" ? 443 : Number(url.port);
    const body = Buffer.from(config.body);
    const ca = readFileSync(config.caFile, "utf8");
    const identity = (cert: string, key: string, host: string | null): Identity => {
      // `{host}` in --url (percent-encoded by URL) is the certificate's host.
      const target = `${url.pathname}${url.search}`.replace(/%7Bhost%7D|\{host\}/gi, host ?? "{host}");
      const head = (extra: string) =>
        `POST ${target} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\n${extra}\r\n`;
      const one = Buffer.concat([Buffer.from(head("")), body]);
      const requests = [Buffer.alloc(0)];
      for (let k = 1; k <= config.pipeline; k++) requests.push(k === 1 ? one : Buffer.concat(Array.from({ length: k }, () => one)));
      return {
        tls: { cert, key, ca, rejectUnauthorized: true, ...(config.servername === null ? {} : { serverName: config.servername }) },
        requests,
        closing: Buffer.concat([Buffer.from(head("Connection: close\r\n")), body]),
      };
    };
    if (config.certsDir === null) {
      this.identities = [identity(readFileSync(config.certFile!, "utf8"), readFileSync(config.keyFile!, "utf8"), null)];
      this.drained = new Promise(noop);
    } else {
      const { index, count } = config.certsShard;
      this.identities = certificateFiles(config.certsDir)
        .filter((_, i) => i % count === index)
        .map((file) => identity(readFileSync(file.cert, "utf8"), readFileSync(file.key, "utf8"), file.host));
      this.drained = new Promise((resolve) => (this.markDrained = resolve));
    }
    this.handlers = config.mode === "keepalive" ? this.keepAliveHandlers() : this.handshakeHandlers();
  }

  /**
   * --timeout, checked a few times a second (Bun's own socket timeouts tick in seconds): a
   * connection whose handshake or oldest request in flight is older fails as a timeout.
   */
  private sweeper: Timer | undefined;

  private sweep(): void {
    const now = performance.now();
    const limit = this.config.timeout * 1000;
    for (const conn of this.conns) {
      if (conn === undefined || conn.settled) continue;
      if (!conn.handshaken) {
        if (now - conn.startedAt > limit) this.fail(conn, "handshake timeout", conn.socket);
      } else if (conn.inFlight > 0 && now - conn.sentAt[conn.head]! > limit) {
        this.fail(conn, "timeout", conn.socket);
      }
    }
  }

  /** keepalive: opens every connection and waits for their handshakes (at most 30 s); handshakes: nothing. */
  async start(): Promise<{ connected: number; errors: Record<string, number> }> {
    this.sweeper = setInterval(() => this.sweep(), Math.min(250, (this.config.timeout * 1000) / 4));
    if (this.config.mode === "keepalive") {
      this.firstConnectionsLeft = this.config.connections;
      const done = new Promise<void>((resolve) => (this.firstConnectionsDone = resolve));
      for (let slot = 0; slot < this.config.connections; slot++) this.connect(slot);
      await Promise.race([done, Bun.sleep(30_000)]);
    }
    return { connected: this.connected, errors: this.stats.errors };
  }

  /** Starts the load; what it counts until measure() is warm-up. */
  go(): void {
    this.running = true;
    if (this.config.mode === "keepalive") {
      for (let slot = 0; slot < this.config.connections; slot++) {
        const conn = this.conns[slot];
        if (conn === undefined || conn.settled)
          this.connect(slot); // failed in the connect phase: try again
        else if (conn.socket && conn.handshaken) this.send(conn.socket, conn, this.config.pipeline);
        // else: still handshaking; its handshake handler sends once it is done.
      }
    } else {
      for (let slot = 0; slot < this.config.connections; slot++) this.connect(slot);
    }
  }

  /** Restarts the counters: the measured window begins. */
  measure(): void {
    const before = this.stats;
    this.stats = new Stats();
    if (this.config.mode === "keepalive") {
      // Keep-alive handshakes happen before the window: what they were stays in the report.
      this.stats.handshake = before.handshake;
      this.stats.tlsVersions = before.tlsVersions;
      this.stats.resumedSessions = before.resumedSessions;
    }
  }

  stop(): WorkerResult {
    // With --certs, the window ends when the last certificate's connection did, if that came first.
    const seconds = Math.max(0, ((this.drainedAt ?? performance.now()) - this.stats.startedAt) / 1000);
    this.running = false;
    this.stopped = true;
    clearInterval(this.sweeper);
    const s = this.stats;
    for (const conn of this.conns) conn?.socket?.terminate();
    return {
      seconds,
      requests: s.requests,
      non2xx: s.non2xx,
      statuses: s.statuses,
      errors: s.errors,
      reconnects: s.reconnects,
      resumedSessions: s.resumedSessions,
      tlsVersions: s.tlsVersions,
      latency: s.latency.toJSON(),
      handshake: s.handshake.toJSON(),
      connected: this.connected,
      certs:
        this.config.certsDir === null
          ? null
          : { total: this.identities.length, used: this.nextIdentity, exhausted: this.nextIdentity >= this.identities.length },
    };
  }

  private connect(slot: number): void {
    if (this.stopped) return;
    let identity: Identity;
    if (this.config.certsDir === null) identity = this.identities[0]!;
    else if (this.nextIdentity < this.identities.length) {
      identity = this.identities[this.nextIdentity++]!;
    } else return this.outOfCertificates();
    const conn = new Conn(slot, this.config.pipeline, identity);
    this.conns[slot] = conn;
    Bun.connect<Conn>({ hostname: this.hostname, port: this.port, tls: identity.tls, data: conn, socket: this.handlers }).catch(noop);
  }

  /** --certs: a connection that would have started had a certificate been left; the last one over ends the run. */
  private outOfCertificates(): void {
    if (!this.running && this.firstConnectionsLeft > 0 && --this.firstConnectionsLeft === 0) this.firstConnectionsDone();
    if (this.drainedAt === null && this.conns.every((conn) => conn === undefined || conn.settled)) {
      this.drainedAt = performance.now();
      this.markDrained();
    }
  }

  /** A failed connection: counted once, then replaced (after a pause when it never connected, so as not to spin). */
  private fail(conn: Conn, kind: string, socket?: Socket<Conn>): void {
    if (conn.settled) return;
    conn.settled = true;
    if (!this.stopped) this.stats.error(kind);
    socket?.terminate();
    this.firstConnectionDone(conn);
    if (this.conns[conn.slot] !== conn || this.stopped) return;
    if (this.config.mode === "keepalive" && !this.running) return; // connect phase: no retry
    if (conn.handshaken) {
      this.stats.reconnects++;
      this.connect(conn.slot);
    } else {
      setTimeout(() => this.connect(conn.slot), 20);
    }
  }

  private firstConnectionDone(conn: Conn): void {
    if (this.running || this.firstConnectionsLeft === 0 || conn.firstDone) return;
    conn.firstDone = true;
    if (--this.firstConnectionsLeft === 0) this.firstConnectionsDone();
  }

  private write(socket: Socket<Conn>, conn: Conn, bytes: Buffer): void {
    if (conn.unwritten !== undefined) {
      conn.unwritten = Buffer.concat([conn.unwritten, bytes]);
      return;
    }
    const written = socket.write(bytes);
    if (written < 0) this.fail(conn, "write", socket);
    else if (written < bytes.length) conn.unwritten = bytes.subarray(written);
  }

  private send(socket: Socket<Conn>, conn: Conn, count: number): void {
    const now = performance.now();
    const ring = conn.sentAt.length;
    for (let i = 0; i < count; i++) conn.sentAt[(conn.head + conn.inFlight++) % ring] = now;
    this.write(socket, conn, conn.identity.requests[count]!);
  }

  /** Shared by both modes: whatever ends a connection that did not end on purpose. */
  private commonHandlers(): Pick<SocketHandler<Conn>, "open" | "drain" | "error" | "connectError"> {
    return {
      open: (socket) => {
        if (socket.data.settled)
          socket.terminate(); // timed out while connecting
        else socket.data.socket = socket;
      },
      drain: (socket) => {
        const conn = socket.data;
        const pending = conn.unwritten;
        if (pending === undefined) return;
        conn.unwritten = undefined;
        this.write(socket, conn, pending);
      },
      error: (socket, error) => this.fail(socket.data, `error: ${(error as { code?: string }).code ?? error.message}`, socket),
      connectError: (socket, error) => this.fail(socket.data, `connect: ${(error as { code?: string }).code ?? error.message}`),
    };
  }

  /** Handshake done: false (and the connection failed) when the server's certificate did not verify. */
  private handshook(socket: Socket<Conn>, authorizationError: Error | null): boolean {
    const conn = socket.data;
    if (conn.settled) {
      socket.terminate();
      return false;
    }
    if (authorizationError) {
      this.fail(conn, `server certificate: ${(authorizationError as { code?: string }).code ?? authorizationError.message}`, socket);
      return false;
    }
    conn.handshaken = true;
    socket.setNoDelay(true);
    const s = this.stats;
    s.handshake.record((performance.now() - conn.startedAt) * 1000);
    if (socket.isSessionReused()) s.resumedSessions++;
    const version = socket.getTLSVersion();
    s.tlsVersions[version] = (s.tlsVersions[version] ?? 0) + 1;
    return true;
  }

  private keepAliveHandlers(): SocketHandler<Conn> {
    return {
      ...this.commonHandlers(),
      // Requests are written here, never in open(): with a handshake handler, Bun calls open()
      // before the handshake, and a write there is reported as written but never sent (Bun 1.4.5).
      handshake: (socket, _success, authorizationError) => {
        const conn = socket.data;
        if (!this.handshook(socket, authorizationError)) return;
        if (this.running) this.send(socket, conn, this.config.pipeline);
        else {
          this.connected++;
          this.firstConnectionDone(conn);
        }
      },
      data: (socket, chunk) => {
        const conn = socket.data;
        if (conn.settled) return;
        const buf = conn.buffered === undefined ? chunk : Buffer.concat([conn.buffered, chunk]);
        const now = performance.now();
        const ring = conn.sentAt.length;
        let off = 0;
        let answered = 0;
        let close = false;
        while (off < buf.length) {
          const end = parseResponse(buf, off, this.parsed);
          if (end === INCOMPLETE) break;
          if (end < 0) return this.fail(conn, end === NO_LENGTH ? "response without length" : "malformed response", socket);
          off = end;
          const status = this.parsed.status;
          if (status < 200) continue; // 1xx: the real answer follows
          if (conn.inFlight === 0) return this.fail(conn, "unrequested response", socket);
          const sentAt = conn.sentAt[conn.head]!;
          conn.head = (conn.head + 1) % ring;
          conn.inFlight--;
          this.stats.response(status, now - sentAt);
          answered++;
          if (this.parsed.close) {
            close = true;
            break;
          }
        }
        conn.buffered = off < buf.length ? Buffer.from(buf.subarray(off)) : undefined;
        if (close) {
          // The server will close: what was in flight behind this answer is lost with it.
          conn.settled = true;
          socket.end();
          if (!this.stopped) {
            this.stats.reconnects++;
            this.connect(conn.slot);
          }
        } else if (answered > 0 && this.running) {
          this.send(socket, conn, answered);
        }
      },
      close: (socket) => {
        const conn = socket.data;
        this.fail(conn, conn.handshaken ? (conn.inFlight > 0 ? "closed with requests in flight" : "closed while idle") : "handshake");
      },
    };
  }

  private handshakeHandlers(): SocketHandler<Conn> {
    return {
      ...this.commonHandlers(),
      handshake: (socket, _success, authorizationError) => {
        if (!this.handshook(socket, authorizationError)) return;
        const conn = socket.data;
        conn.inFlight = 1;
        conn.sentAt[0] = performance.now();
        this.write(socket, conn, conn.identity.closing);
      },
      data: (socket, chunk) => {
        const conn = socket.data;
        if (conn.settled) return;
        const buf = conn.buffered === undefined ? chunk : Buffer.concat([conn.buffered, chunk]);
        let off = 0;
        for (;;) {
          const end = parseResponse(buf, off, this.parsed);
          if (end === INCOMPLETE) {
            conn.buffered = Buffer.from(buf.subarray(off));
            return;
          }
          if (end < 0) return this.fail(conn, end === NO_LENGTH ? "response without length" : "malformed response", socket);
          off = end;
          if (this.parsed.status >= 200) break;
        }
        conn.settled = true;
        this.stats.response(this.parsed.status, performance.now() - conn.startedAt);
        socket.end();
        if (this.running) this.connect(conn.slot);
      },
      close: (socket) => {
        const conn = socket.data;
        this.fail(conn, conn.handshaken ? "closed before the answer" : "handshake");
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc, in microseconds.

const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

function processCpuUs(pid: number | "self"): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1e6;
  } catch {
    return null;
  }
}

function machineBusyUs(): number | null {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return ((user + nice + system + irq + softirq + steal) / CLOCK_TICKS) * 1e6;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Workers: this process, or child processes driven over their stdin.

interface Worker {
  /** The connect phase is over. */
  ready: Promise<{ connected: number; errors: Record<string, number> }>;
  /** --certs: every certificate was used and every connection is over (never, without --certs). */
  drained: Promise<void>;
  go(): void;
  measure(): void;
  stop(): Promise<WorkerResult>;
  /** The process whose CPU is the worker's. */
  pid: number | "self";
  kill(): void;
}

function inProcessWorker(config: Config): Worker {
  const engine = new Engine(config);
  return {
    ready: engine.start(),
    drained: engine.drained,
    go: () => engine.go(),
    measure: () => engine.measure(),
    stop: async () => engine.stop(),
    pid: "self",
    kill: noop,
  };
}

async function* jsonLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<Record<string, unknown>> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    for (let newline = buffer.indexOf("\n"); newline >= 0; newline = buffer.indexOf("\n")) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line.startsWith("{")) yield JSON.parse(line) as Record<string, unknown>;
    }
  }
}

function childWorker(config: Config, index: number): Worker {
  const child: Subprocess<"pipe", "pipe", "inherit"> = Bun.spawn([process.execPath, import.meta.path, "--worker", JSON.stringify(config)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  // Its lines, by event ("ready", "drained", "result"), in whatever order they come.
  const events = new Map<string, { promise: Promise<Record<string, unknown>>; resolve: (line: Record<string, unknown>) => void }>();
  const slot = (event: string) => {
    let entry = events.get(event);
    if (entry === undefined) {
      let resolve!: (line: Record<string, unknown>) => void;
      const promise = new Promise<Record<string, unknown>>((r) => (resolve = r));
      entry = { promise, resolve };
      events.set(event, entry);
    }
    return entry;
  };
  const reading = (async () => {
    for await (const line of jsonLines(child.stdout)) slot(String(line.event)).resolve(line);
  })();
  reading.catch(noop);
  const next = async (event: string): Promise<Record<string, unknown>> => {
    // A line that came before the end wins the race: its promise was settled first.
    const line = await Promise.race([slot(event).promise, reading.then(() => null)]);
    if (line === null) {
      child.kill();
      throw new Error(`worker ${index} exited (${await child.exited}) without its ${event} line`);
    }
    return line;
  };
  const say = (word: string) => {
    child.stdin.write(`${word}\n`);
    void child.stdin.flush();
  };
  return {
    ready: next("ready").then((line) => ({ connected: Number(line.connected), errors: line.errors as Record<string, number> })),
    // Not raced against the end of the worker: a worker that dies is reported by stop().
    drained: slot("drained").promise.then(noop),
    go: () => say("go"),
    measure: () => say("measure"),
    stop: async () => {
      say("stop");
      return (await next("result")).result as WorkerResult;
    },
    pid: child.pid,
    kill: () => child.kill(),
  };
}

/** Runs as a worker process: the parent says go, measure and stop on stdin, one word a line. */
async function workerMain(config: Config): Promise<void> {
  const engine = new Engine(config);
  const ready = await engine.start();
  process.stdout.write(`${JSON.stringify({ event: "ready", ...ready })}\n`);
  void engine.drained.then(() => process.stdout.write(`${JSON.stringify({ event: "drained" })}\n`));
  for await (const line of console) {
    const word = line.trim();
    if (word === "go") engine.go();
    else if (word === "measure") engine.measure();
    else if (word === "stop") {
      process.stdout.write(`${JSON.stringify({ event: "result", result: engine.stop() })}\n`);
      process.exit(0);
    }
  }
  process.exit(1); // the parent went away
}

// ---------------------------------------------------------------------------------------------

type LatencySummary = ReturnType<Histogram["summaryMs"]>;

/** The JSON line this script prints. */
export interface LoadReport {
  mode: Mode;
  url: string;
  connections: number;
  workers: number;
  pipeline: number;
  warmupSeconds: number;
  /** The measured window (the longest of the workers'). */
  seconds: number;
  /** Answers received in the window, any status. */
  requests: number;
  /** Summed over the workers, each its answers over its own window. */
  requestsPerSecond: number;
  /** handshakes mode: the same number, as what it is there (new connections, one answer each). */
  connectionsPerSecond?: number;
  /** From sending a request (handshakes: from starting to connect) to its whole answer. */
  latencyMs: LatencySummary;
  /** From starting to connect to the end of the TLS handshake (keepalive: the connect phase included). */
  handshakeMs: LatencySummary;
  statuses: Record<string, number>;
  non2xx: number;
  /** Failed connections and requests by kind, e.g. "connect: ECONNREFUSED", "timeout", "handshake". */
  errors: Record<string, number>;
  errorCount: number;
  reconnects: number;
  resumedSessions: number;
  tlsVersions: Record<string, number>;
  /** keepalive: connections open when the load started. */
  connected: number | null;
  /**
   * --certs: the certificates there were, how many were taken (one per connection started, in the
   * warm-up too), and whether they ran out (then the window ended with the last answer).
   */
  certs: { dir: string; total: number; used: number; exhausted: boolean } | null;
  cpu: {
    cores: number;
    generatorPercent: number | null;
    perWorkerPercent: (number | null)[];
    generatorUsPerRequest: number | null;
    serverPercent: number | null;
    serverUsPerRequest: number | null;
    otherPercent: number | null;
  };
}

const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

async function main(config: Config): Promise<number> {
  const workers: Worker[] = [];
  const stopAll = () => workers.forEach((w) => w.kill());
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      stopAll();
      process.exit(130);
    });
  }
  try {
    if (config.workers === 1) workers.push(inProcessWorker(config));
    else {
      for (let i = 0; i < config.workers; i++) {
        const share = Math.floor(config.connections / config.workers) + (i < config.connections % config.workers ? 1 : 0);
        const certsShard = { index: i, count: config.workers };
        workers.push(childWorker({ ...config, connections: share, workers: 1, serverPid: null, certsShard }, i));
      }
    }
    const ready = await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    if (config.warmup > 0) await Bun.sleep(config.warmup * 1000);

    const cpu = () => ({
      at: performance.now(),
      machine: machineBusyUs(),
      server: config.serverPid === null ? null : processCpuUs(config.serverPid),
      workers: workers.map((w) => processCpuUs(w.pid)),
    });
    for (const w of workers) w.measure();
    const before = cpu();
    // With --certs, the run may end sooner: when every worker's certificates are used up.
    await Promise.race([Bun.sleep(config.duration * 1000), Promise.all(workers.map((w) => w.drained))]);
    const stops = workers.map((w) => w.stop());
    const after = cpu();
    const results = await Promise.all(stops);

    const latency = new Histogram();
    const handshake = new Histogram();
    const statuses: Record<string, number> = {};
    const errors: Record<string, number> = {};
    const tlsVersions: Record<string, number> = {};
    const sum = (into: Record<string, number>, from: Record<string, number>) => {
      for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
    };
    for (const r of results) {
      latency.add(r.latency);
      handshake.add(r.handshake);
      sum(statuses, r.statuses);
      sum(errors, r.errors);
      sum(tlsVersions, r.tlsVersions);
    }
    // Errors of the connect phase (keepalive) count too: a connection that never opened is load not sent.
    for (const r of ready) sum(errors, r.errors);
    const requests = results.reduce((n, r) => n + r.requests, 0);
    const rate = results.reduce((n, r) => n + (r.seconds > 0 ? r.requests / r.seconds : 0), 0);
    const wallUs = (after.at - before.at) * 1000;
    const delta = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);
    const workerUs = workers.map((_, i) => delta(before.workers[i]!, after.workers[i]!));
    const generatorUs = workerUs.every((us) => us !== null) ? workerUs.reduce((a, b) => a! + b!, 0)! : null;
    const serverUs = delta(before.server, after.server);
    const machineUs = delta(before.machine, after.machine);
    const report: LoadReport = {
      mode: config.mode,
      url: config.url,
      connections: config.connections,
      workers: config.workers,
      pipeline: config.pipeline,
      warmupSeconds: config.warmup,
      seconds: round(Math.max(...results.map((r) => r.seconds)), 3),
      requests,
      requestsPerSecond: round(rate),
      ...(config.mode === "handshakes" ? { connectionsPerSecond: round(rate) } : {}),
      latencyMs: latency.summaryMs(),
      handshakeMs: handshake.summaryMs(),
      statuses,
      non2xx: results.reduce((n, r) => n + r.non2xx, 0),
      errors,
      errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
      reconnects: results.reduce((n, r) => n + r.reconnects, 0),
      resumedSessions: results.reduce((n, r) => n + r.resumedSessions, 0),
      tlsVersions,
      connected: config.mode === "keepalive" ? ready.reduce((n, r) => n + r.connected, 0) : null,
      certs:
        config.certsDir === null
          ? null
          : {
              dir: config.certsDir,
              total: results.reduce((n, r) => n + (r.certs?.total ?? 0), 0),
              used: results.reduce((n, r) => n + (r.certs?.used ?? 0), 0),
              exhausted: results.every((r) => r.certs?.exhausted === true),
            },
      cpu: {
        cores: availableParallelism(),
        /** Generator CPU in % of one core, all workers together; 100 × workers means every worker was saturated. */
        generatorPercent: generatorUs === null ? null : round((generatorUs / wallUs) * 100),
        perWorkerPercent: workerUs.map((us) => (us === null ? null : round((us / wallUs) * 100))),
        generatorUsPerRequest: generatorUs === null || requests === 0 ? null : round(generatorUs / requests),
        serverPercent: serverUs === null ? null : round((serverUs / wallUs) * 100),
        serverUsPerRequest: serverUs === null || requests === 0 ? null : round(serverUs / requests),
        /** Busy CPU of the whole machine that was neither the server nor the generator, in % of all cores. */
        otherPercent:
          machineUs === null || generatorUs === null || (config.serverPid !== null && serverUs === null)
            ? null
            : round(Math.max(0, ((machineUs - generatorUs - (serverUs ?? 0)) / (wallUs * availableParallelism())) * 100)),
      },
    };
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return requests > 0 ? 0 : 1;
  } finally {
    stopAll();
  }
}

const workerFlag = process.argv.indexOf("--worker");
if (!import.meta.main) {
  // Imported (for its types): nothing to run.
} else if (workerFlag >= 0) {
  await workerMain(JSON.parse(process.argv[workerFlag + 1]!) as Config);
} else {
  let config: Config;
  try {
    config = readConfig(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`mtls-load: ${error.message}\n${USAGE}\n`);
    process.exit(2);
  }
  try {
    process.exit(await main(config));
  } catch (error) {
    process.stderr.write(`mtls-load: ${(error as Error).message}\n`);
    process.exit(1);
  }
}
