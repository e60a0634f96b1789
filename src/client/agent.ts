/**
 * `latchkey client run`: register with the server (`client/register`), keep the connection as the
 * machine's presence with `client/heartbeat`, and reconnect with capped exponential backoff and
 * jitter whenever the server goes away. Key problems follow the woho seed: AUTH_REQUIRED and
 * AUTH_FAILED are logged with the troubleshooting hint for their reason; on a terminal the agent
 * then asks for a key, and without one (a service) it stops with exit 3. The agent goes by the
 * refusal's `reason`, never by the wording of its message.
 *
 * Enrollment ends with a certificate (SPEC §4): once registered, an agent without a usable one
 * generates a key pair and sends a CSR (`client/csr`), then reconnects to the mutual-TLS listener
 * (`wss://HOST:MTLS_PORT/ws`) with it, where the certificate identifies the machine, and sends the
 * woodstock host report every `reportIntervalSeconds`. From 2/3 of the certificate's lifetime on it
 * asks for the next one, and reconnects with it. When the server stops taking the certificate (a refused registration over
 * mTLS, a 401 on a report) the agent forgets it and registers with its key again. With a pinned
 * root (`-ca-fingerprint`) even the first registration goes over TLS to the mTLS listener, trusting
 * only that root, and a server with another root is refused before the key is sent.
 *
 * Each connection takes one of two routes: "certificate" (mTLS, the client certificate, no key) or
 * "key" (the pre-shared key: plain ws:// to the main port, or TLS to the pinned root).
 */
import { createInterface } from "node:readline";
import {
  CLOSE_CLIENT_REVOKED,
  isRefusalReason,
  REFUSAL_MESSAGES,
  type ErrorEnvelope,
  type RefusalReason,
  type RequestEnvelope,
  type ResponseEnvelope,
} from "../rpc/protocol.ts";
import { VERSION } from "../version.ts";
import {
  certificateFingerprint,
  checkIssued,
  soleCertificate,
  dropIdentity,
  identityState,
  loadIdentity,
  readRoot,
  storeIdentity,
  usableIdentity,
  writeRoot,
  type Identity,
} from "./certificate.ts";
import {
  colonFingerprint,
  DEFAULT_MTLS_PORT,
  machineHostname,
  readConfig,
  readKey,
  writeKey,
  writeLastContact,
  type ClientConfig,
} from "./config.ts";
import { createCertificateRequest } from "./csr.ts";
import { clientCommandLine, EXIT_NEEDS_OPERATOR } from "./install.ts";
import { describeReport, machineInterfaces, sendReport, writeLastReport } from "./report.ts";

const REGISTER_TIMEOUT_MS = 15_000;
const CSR_TIMEOUT_MS = 30_000;
const PROBE_TIMEOUT_MS = 10_000;
/** After a certificate request, the next one waits at least this long (a failed one, or a clock that disagrees with the server's). */
const CSR_RETRY_MS = 60_000;

export interface AgentOptions {
  stateDir: string;
  heartbeatSeconds: number;
  /** The backoff starts at 1 s and doubles up to this. */
  retryMaxSeconds: number;
  /** Seconds between host reports over mTLS. */
  reportIntervalSeconds: number;
  /** Whether a person is at a terminal to type a missing key. */
  interactive: boolean;
  log?: (message: string) => void;
  /** The time the certificate's validity and renewal are judged by (tests move it); Date.now unless given. */
  clock?: () => number;
  /** Stops the agent like SIGTERM does (for running it inside another program, such as a test). */
  signal?: AbortSignal;
}

/** How one connection ended. */
export type Outcome =
  | { kind: "stopped" }
  | { kind: "auth_required"; message: string }
  | { kind: "auth_failed"; reason: string; message: string }
  | { kind: "revoked"; reason: string }
  /** `unreachable`: the socket never opened (with why, when known). */
  | { kind: "retry"; registered: boolean; message: string; retryAfterSeconds?: number; unreachable?: string }
  /** The server no longer takes the certificate: forget it, register with the key, get a new one. */
  | { kind: "certificate_refused"; message: string }
  /** There is a certificate to use (a new one, or the mTLS listener answers again): reconnect over mTLS now. */
  | { kind: "switch"; message: string }
  /** Only an operator can help (a server whose root is not the pinned one): exit 3. */
  | { kind: "operator"; message: string };

/** How a connection registers: with the client certificate over mTLS, or with the key (plain, or TLS to the pinned root). */
export interface Route {
  kind: "certificate" | "key";
  url: string;
  tls?: { ca: string; cert?: string; key?: string };
}

export function logLine(message: string): void {
  process.stderr.write(`${new Date().toISOString()} latchkey client: ${message}\n`);
}

/** `HOST:PORT` → `ws://HOST:PORT/ws`; `https://` and `wss://` addresses keep TLS. */
export function serverUrl(server: string): string {
  const match = /^(wss?|https?):\/\/(.+)$/i.exec(server);
  if (!match) return `ws://${server.replace(/\/+$/, "")}/ws`;
  const scheme = match[1]!.toLowerCase() === "https" || match[1]!.toLowerCase() === "wss" ? "wss" : "ws";
  const rest = match[2]!.replace(/\/+$/, "");
  return `${scheme}://${rest.includes("/") ? rest : `${rest}/ws`}`;
}

/** The mutual-TLS listener on the server's host: `https://HOST:MTLS_PORT`. */
export function mtlsBaseUrl(config: ClientConfig): string {
  const host = new URL(serverUrl(config.server)).hostname;
  return `https://${host}:${config.mtls_port ?? DEFAULT_MTLS_PORT}`;
}

/** The RPC WebSocket of the mutual-TLS listener. */
export function mtlsSocketUrl(config: ClientConfig): string {
  return `${mtlsBaseUrl(config).replace(/^https/, "wss")}/ws`;
}

/** The root as the main listener serves it (`/api/ca.pem`), for an agent without a pin. */
function mainRootUrl(config: ClientConfig): string {
  return serverUrl(config.server).replace(/^ws/, "http").replace(/\/ws$/, "/api/ca.pem");
}

/**
 * The root a server serves at `url`, fetched over TLS without trusting anything yet when `untrusted`:
 * what comes back is only ever compared with a fingerprint the agent already has.
 */
async function fetchRoot(
  url: string,
  untrusted: boolean,
): Promise<{ root: { pem: string; fingerprint: string } | null } | { error: string }> {
  try {
    const res = await fetch(url, {
      keepalive: false,
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      ...(untrusted ? { tls: { rejectUnauthorized: false } } : {}),
    });
    const pem = await res.text();
    if (res.status !== 200) return { error: `${url} answered ${res.status}` };
    return { root: soleCertificate(pem) };
  } catch (error) {
    return { error: `cannot fetch ${url}: ${(error as Error).message}` };
  }
}

/** What the agent says when a server's root is not the pinned one; the key has not been sent. */
function pinMismatch(config: ClientConfig, found: string | null, stateDir: string): string {
  const install = clientCommandLine(
    "install",
    [
      "-server",
      config.server,
      "-ca-fingerprint",
      "SHA256",
      ...(config.mtls_port === undefined ? [] : ["-mtls-port", String(config.mtls_port)]),
    ],
    stateDir,
    process.env,
  );
  return (
    `refusing the server at ${mtlsBaseUrl(config)}: ` +
    (found === null
      ? "what it serves at /api/ca.pem is not one certificate"
      : `its root CA has the SHA-256 fingerprint ${colonFingerprint(found)}`) +
    `, but this machine pins ${colonFingerprint(config.ca_fingerprint!)} (-ca-fingerprint); the key was not sent. ` +
    "Check the fingerprint in the install command against the one `latchkey ca show` prints on the server, " +
    "and that -server and -mtls-port name that server; if its root CA was replaced on purpose, install again with the new " +
    `fingerprint: ${install}`
  );
}

/**
 * With a pin, the agent trusts only the pinned root: `ca.pem` when it is that one, else the root
 * the mTLS listener serves, fetched without trusting anything and kept only when its SHA-256 is
 * the pin. "ok", or how this attempt ends (a retry while the server is unreachable, exit 3 when it
 * is another server).
 */
async function trustPinnedRoot(config: ClientConfig, options: AgentOptions, recheck: boolean): Promise<"ok" | Outcome> {
  const pin = config.ca_fingerprint!;
  const stored = readRoot(options.stateDir);
  if (!recheck && stored !== null && certificateFingerprint(stored) === pin) return "ok";
  const fetched = await fetchRoot(`${mtlsBaseUrl(config)}/api/ca.pem`, true);
  if ("error" in fetched) return { kind: "retry", registered: false, message: fetched.error, unreachable: fetched.error };
  const root = fetched.root;
  if (root?.fingerprint !== pin) return { kind: "operator", message: pinMismatch(config, root?.fingerprint ?? null, options.stateDir) };
  if (stored === null || certificateFingerprint(stored) !== pin) {
    // A certificate from the root pinned before (an install with a new pin) is no use with this one.
    dropIdentity(options.stateDir);
    writeRoot(options.stateDir, root.pem);
    (options.log ?? logLine)(`the root CA of ${mtlsBaseUrl(config)} is the pinned one (${colonFingerprint(pin)}); registering over TLS`);
  }
  return "ok";
}

/**
 * The reinstall command of the hints, runnable as printed: this very program, with the state
 * directory when it is not the default (without one, as `latchkey ...`).
 */
function installCommand(config: ClientConfig, stateDir?: string): string {
  const args = ["-server", config.server, "-key", "XXXX-XXXX-XXXX"];
  return stateDir === undefined ? `latchkey client install ${args.join(" ")}` : clientCommandLine("install", args, stateDir, process.env);
}

/** The woho troubleshooting table, one hint per refusal reason. */
const HINTS: Record<RefusalReason, (config: ClientConfig, stateDir?: string) => string> = {
  auth_required: (config, stateDir) =>
    "the server requires an authentication key and none is configured: " +
    `generate a key in the admin panel (Pre-Shared Keys) and reinstall with -key: ${installCommand(config, stateDir)}`,
  invalid_key: (config, stateDir) =>
    "the key was revoked or deleted, or never existed: " +
    `generate a new key in the admin panel and reinstall with -key: ${installCommand(config, stateDir)}`,
  bound_elsewhere: (config) =>
    `this key is bound to another client UUID (this machine is ${config.uuid}; e.g. it was reinstalled with a new identity): ` +
    "ask the admin to Reset the key in the panel (latchkey key reset ID), then start the client again",
  key_in_use: (config, stateDir) =>
    "another machine claimed this pending key at the same moment: " +
    `generate a separate key per machine and reinstall with -key: ${installCommand(config, stateDir)}`,
  already_connected: (config) =>
    `another machine is online with this client's UUID ${config.uuid} (a cloned machine or a copied state directory): ` +
    "give each machine its own install; retrying in case it is this machine's previous connection",
};

/** The troubleshooting hint for a refusal's reason (one this agent does not know gets a general one). */
export function authHint(reason: string, config: ClientConfig, stateDir?: string): string {
  return isRefusalReason(reason) ? HINTS[reason](config, stateDir) : "the server refused the registration; its audit log has the details";
}

/**
 * Why a `client/register` was refused: the envelope's `reason`. A server from before that field
 * sends only the seed's message, which is then looked up whole, never by its beginning.
 */
function refusalReason(args: ErrorEnvelope["args"]): string | null {
  if (typeof args.reason === "string") return args.reason;
  const known = (Object.keys(REFUSAL_MESSAGES) as RefusalReason[]).find((reason) => REFUSAL_MESSAGES[reason] === args.message);
  return known ?? null;
}

/** What an error answer to `client/register` means for the agent, decided by its reason. */
export function registerErrorOutcome(args: ErrorEnvelope["args"], registered: boolean, config: ClientConfig): Outcome {
  const reason = refusalReason(args);
  if (reason === "auth_required") return { kind: "auth_required", message: args.message };
  // A clone may be this machine's own previous connection, not yet gone: worth retrying.
  if (reason === "already_connected") return { kind: "retry", registered, message: `${args.message}: ${authHint(reason, config)}` };
  if (reason !== null) return { kind: "auth_failed", reason, message: args.message };
  return {
    kind: "retry",
    registered,
    message: `client/register failed: ${args.message}`,
    ...(args.retry_after === undefined ? {} : { retryAfterSeconds: args.retry_after }),
  };
}

/**
 * A refused registration over mTLS with the certificate: the server no longer admits the machine
 * by it (revoked or expired, issued to another client, its client deleted or its key revoked), so
 * the agent registers with its key instead. A clone, a throttle or a server error is retried as on
 * the key route.
 */
export function certificateRegisterOutcome(args: ErrorEnvelope["args"], registered: boolean, config: ClientConfig): Outcome {
  const outcome = registerErrorOutcome(args, registered, config);
  if (outcome.kind === "auth_required" || outcome.kind === "auth_failed" || args.code === 401 || args.code === 403)
    return { kind: "certificate_refused", message: `the server does not admit this machine by its certificate (${args.message})` };
  return outcome;
}

/** Asks for a line on the terminal; null when the input ends or the user presses Ctrl-C. */
function askLine(question: string): Promise<string | null> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  return new Promise((resolve) => {
    let answered = false;
    rl.on("SIGINT", () => rl.close());
    rl.on("close", () => {
      if (!answered) resolve(null);
    });
    rl.question(question, (answer) => {
      answered = true;
      rl.close();
      resolve(answer.trim());
    });
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

/** Why the agent needs a (new) certificate now, or null while the one it holds is good. */
function certificateNeed(stateDir: string, config: ClientConfig, commonName: string, now: number): string | null {
  const loaded = loadIdentity(stateDir);
  if (loaded === null) return "no certificate yet";
  if ("why" in loaded) return `the stored certificate cannot be used (${loaded.why})`;
  const { identity } = loaded;
  if (config.ca_fingerprint !== undefined && certificateFingerprint(identity.caPem) !== config.ca_fingerprint)
    return `the certificate ${identity.serial} is from another root CA than the pinned one`;
  if (identity.commonName !== commonName)
    return `the certificate ${identity.serial} is for ${identity.commonName}, this machine is ${commonName}`;
  const state = identityState(identity, now);
  if (!state.usable) return `the certificate ${identity.serial} cannot be used: ${state.why}`;
  if (state.renew)
    return `the certificate ${identity.serial} is 2/3 through its lifetime (since ${new Date(identity.renewAt).toISOString()})`;
  return null;
}

type Reply = ResponseEnvelope | ErrorEnvelope;

/** Bun's WebSocket client takes TLS options (the client certificate, the root to trust); the DOM typing knows only protocols. */
function openSocket(url: string, tls: Route["tls"]): WebSocket {
  const options: Bun.WebSocketOptions = tls ? { tls } : {};
  return new WebSocket(url, options as never);
}

/**
 * One connection: open, register, then keep it (heartbeats), obtain or renew the certificate and
 * send host reports while it lasts; says how it ended.
 */
function connectOnce(config: ClientConfig, key: string | null, route: Route, options: AgentOptions, signal: AbortSignal): Promise<Outcome> {
  const log = options.log ?? logLine;
  const clock = options.clock ?? Date.now;
  const { url } = route;
  const heartbeatMs = options.heartbeatSeconds * 1000;
  const reportMs = options.reportIntervalSeconds * 1000;
  const hostname = machineHostname();
  // The certificate is for the hostname the agent registers with, in lower case (as the server keeps it).
  const commonName = hostname.toLowerCase();
  const pin = config.ca_fingerprint;
  return new Promise<Outcome>((resolve) => {
    let settled = false;
    let opened = false;
    let registered = false;
    let connectError: string | undefined;
    let nextId = 1;
    let lastReplyAt = Date.now();
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    let reportTimer: ReturnType<typeof setInterval> | undefined;
    /** Replies awaited, by request id; null when the connection ended first or the wait ran out. */
    const waiting = new Map<string, (reply: Reply | null) => void>();
    let enrolling = false;
    let enrollNotBefore = 0;
    let reporting = false;
    /** Whether the last report of this connection failed (the next success is then logged). */
    let reportFailing = true;
    const ws = openSocket(url, route.tls);
    const onAbort = () => finish({ kind: "stopped" });
    signal.addEventListener("abort", onAbort);

    function finish(outcome: Outcome): void {
      if (settled) return;
      settled = true;
      clearInterval(heartbeat);
      clearInterval(reportTimer);
      signal.removeEventListener("abort", onAbort);
      for (const done of waiting.values()) done(null);
      waiting.clear();
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "client stopping");
      resolve(outcome);
    }

    function send(name: string, args?: unknown): string {
      const id = `${name}-${nextId++}`;
      const envelope: RequestEnvelope = { namespace: "client", name, id, args };
      ws.send(JSON.stringify(envelope));
      return id;
    }

    function request(name: string, args: unknown, timeoutMs: number): Promise<Reply | null> {
      return new Promise((done) => {
        const id = send(name, args);
        const timer = setTimeout(() => {
          waiting.delete(id);
          done(null);
        }, timeoutMs);
        waiting.set(id, (reply) => {
          clearTimeout(timer);
          done(reply);
        });
      });
    }

    /** Asks for a certificate when there is none to use or it is due for renewal, and reconnects with a new one. */
    async function keepCertificate(): Promise<void> {
      if (enrolling || settled || Date.now() < enrollNotBefore) return;
      const need = certificateNeed(options.stateDir, config, commonName, clock());
      if (need === null) return;
      enrolling = true;
      enrollNotBefore = Date.now() + CSR_RETRY_MS;
      try {
        log(`${need}: asking ${url} for one (client/csr, CN=${commonName})`);
        const csr = await createCertificateRequest(commonName);
        const reply = await request("csr", { csr: csr.csrPem }, CSR_TIMEOUT_MS);
        if (settled) return;
        const retry = `; asking again in ${CSR_RETRY_MS / 1000} s`;
        if (reply === null) return log(`no answer to client/csr within ${CSR_TIMEOUT_MS / 1000} s${retry}`);
        if (reply.name === "error") return log(`client/csr failed: ${reply.args.message}${retry}`);
        const result = reply.args as { certificate?: unknown; ca?: unknown };
        if (typeof result.certificate !== "string" || typeof result.ca !== "string")
          return log(`client/csr answered without a certificate and its root${retry}`);
        if (pin !== undefined && certificateFingerprint(result.ca) !== pin)
          return log(`client/csr answered with a root CA other than the pinned one; certificate not stored${retry}`);
        const checked = checkIssued(result.certificate, csr.keyPem, result.ca, commonName);
        if ("why" in checked) return log(`client/csr answered with a certificate this agent cannot use: ${checked.why}${retry}`);
        const identity = checked.identity;
        storeIdentity(options.stateDir, identity);
        log(
          `certificate ${identity.serial} for CN=${identity.commonName} stored in ${options.stateDir}, ` +
            `valid until ${new Date(identity.notAfter).toISOString()}, renewal due from ${new Date(identity.renewAt).toISOString()}`,
        );
        const state = identityState(identity, clock());
        if (state.usable && state.renew)
          log("the new certificate is already due for renewal: do this machine's clock and the server's agree?");
        // The connection goes on with what it presented: reconnect, so that it is the new certificate.
        finish({ kind: "switch", message: `reconnecting over mTLS (${mtlsSocketUrl(config)}) with the new certificate` });
      } catch (error) {
        log(`could not ask for a certificate: ${(error as Error).message}`);
      } finally {
        enrolling = false;
      }
    }

    /**
     * One woodstock host report, with the certificate on disk (a renewed one from its renewal on).
     * A 401 means the server no longer takes the certificate; on the key route, a report that goes
     * through means the mTLS listener answers again.
     */
    async function report(): Promise<void> {
      if (reporting || settled) return;
      const identity = usableIdentity(options.stateDir, clock());
      if (identity === null) return;
      reporting = true;
      const result = await sendReport(mtlsBaseUrl(config), identity, {
        interfaces: machineInterfaces(),
        port: config.report_port ?? 0,
        version: VERSION,
      }).finally(() => (reporting = false));
      if (settled) return;
      writeLastReport(options.stateDir, result);
      if (result.ok) {
        if (reportFailing)
          log(`host report accepted by ${mtlsBaseUrl(config)} (as ${identity.commonName}); next every ${options.reportIntervalSeconds} s`);
        reportFailing = false;
        if (route.kind === "key")
          finish({ kind: "switch", message: `the mTLS listener answers: reconnecting over ${mtlsSocketUrl(config)}` });
        return;
      }
      reportFailing = true;
      log(`host report failed: ${describeReport(result)}; trying again in ${options.reportIntervalSeconds} s`);
      if (result.status === 401)
        finish({ kind: "certificate_refused", message: `the server refused the certificate ${identity.serial} (401: ${result.message})` });
    }

    /**
     * An agent without a pin that holds a certificate but registered over the plain port (the mTLS
     * listener did not answer, or not to the root it knows): a server whose root has since changed
     * gets asked for a certificate from the new one.
     */
    async function checkRoot(): Promise<void> {
      const stored = readRoot(options.stateDir);
      if (pin !== undefined || route.kind !== "key" || stored === null || loadIdentity(options.stateDir) === null) return;
      const fetched = await fetchRoot(mainRootUrl(config), false);
      if (settled || "error" in fetched || fetched.root === null) return;
      if (fetched.root.fingerprint === certificateFingerprint(stored)) return;
      log(`the server's root CA is now ${colonFingerprint(fetched.root.fingerprint)}: the certificate from the previous one is dropped`);
      dropIdentity(options.stateDir);
    }

    async function afterRegistering(): Promise<void> {
      heartbeat = setInterval(() => {
        // A server that stopped answering (a half-open connection) is treated as gone.
        if (Date.now() - lastReplyAt > 3 * heartbeatMs)
          return finish({
            kind: "retry",
            registered,
            message: `no answer from ${url} for ${Math.round((Date.now() - lastReplyAt) / 1000)} s`,
          });
        send("heartbeat");
        void keepCertificate();
      }, heartbeatMs);
      await checkRoot();
      await keepCertificate();
      if (settled) return;
      reportTimer = setInterval(() => void report(), reportMs);
      void report();
    }

    ws.onopen = async () => {
      opened = true;
      const args: Record<string, string> = {
        uuid: config.uuid,
        name: config.name,
        hostname,
        version: VERSION,
        os: `${process.platform}-${process.arch}`,
      };
      // Over mTLS the certificate identifies the machine: the key stays home.
      if (key !== null && route.kind === "key") args.auth_key = key;
      const reply = await request("register", args, REGISTER_TIMEOUT_MS);
      if (settled) return;
      if (reply === null)
        return finish({
          kind: "retry",
          registered,
          message: `no answer to client/register from ${url} within ${REGISTER_TIMEOUT_MS / 1000} s`,
        });
      if (reply.name === "error")
        return finish((route.kind === "certificate" ? certificateRegisterOutcome : registerErrorOutcome)(reply.args, registered, config));
      const result = reply.args as { uuid?: string; group?: string | null; reconnect?: boolean };
      registered = true;
      const identity = route.kind === "certificate" ? usableIdentity(options.stateDir, clock()) : null;
      writeLastContact(options.stateDir, new Date(), route.kind === "certificate" ? `${url} (client certificate)` : url);
      log(
        `registered with ${url} as ${config.name} (uuid ${result.uuid ?? config.uuid}` +
          `${result.group ? `, group ${result.group}` : ""}${result.reconnect === false ? ", key bound to this client" : ""}` +
          `${identity ? `, client certificate ${identity.serial}` : ""})`,
      );
      void afterRegistering().catch((error: unknown) => log(`after registering: ${(error as Error).message}`));
    };

    ws.onmessage = (event) => {
      lastReplyAt = Date.now();
      let message: Reply | { namespace: string; name: string; id?: unknown; args?: unknown };
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (message.namespace !== "rpc" || typeof message.id !== "string") return;
      const done = waiting.get(message.id);
      if (!done) return;
      waiting.delete(message.id);
      done(message as Reply);
    };

    ws.onerror = (event) => {
      if (!opened) connectError = (event as ErrorEvent).message || undefined;
    };

    ws.onclose = (event) => {
      if (event.code === CLOSE_CLIENT_REVOKED) return finish({ kind: "revoked", reason: event.reason });
      if (!opened) {
        const why = connectError ?? "the connection failed";
        return finish({ kind: "retry", registered, message: `cannot connect to ${url}: ${why}`, unreachable: why });
      }
      finish({
        kind: "retry",
        registered,
        message: `connection to ${url} closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`,
      });
    };
  });
}

/** Where the next connection goes: with the certificate over mTLS when there is one to use, else with the key. */
function chooseRoute(config: ClientConfig, options: AgentOptions, preferKey: boolean): { route: Route; identity: Identity | null } {
  const identity = usableIdentity(options.stateDir, (options.clock ?? Date.now)());
  const pinned = config.ca_fingerprint !== undefined ? readRoot(options.stateDir) : null;
  if (identity && !preferKey) {
    const tls = { ca: identity.caPem, cert: identity.certificatePem, key: identity.keyPem };
    return { route: { kind: "certificate", url: mtlsSocketUrl(config), tls }, identity };
  }
  if (pinned !== null) return { route: { kind: "key", url: mtlsSocketUrl(config), tls: { ca: pinned } }, identity };
  return { route: { kind: "key", url: serverUrl(config.server) }, identity };
}

/** Runs until stopped (exit 0) or until only an operator can help (exit 3). */
export async function runAgent(options: AgentOptions): Promise<number> {
  const log = options.log ?? logLine;
  const stop = new AbortController();
  const onSignal = (name: string) => () => {
    log(`received ${name}, stopping`);
    stop.abort();
  };
  const onTerm = onSignal("SIGTERM");
  const onInt = onSignal("SIGINT");
  const onStop = () => stop.abort();
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  options.signal?.addEventListener("abort", onStop);
  if (options.signal?.aborted) stop.abort();
  try {
    let failures = 0;
    /**
     * An agent without a pin whose mTLS listener did not answer registers over the plain port
     * meanwhile (its presence is kept; reports try the listener again at each interval).
     */
    let mtlsUnreachable = false;
    for (;;) {
      if (stop.signal.aborted) return 0;
      const config = readConfig(options.stateDir);
      if (!config) {
        log(
          `not installed: no client configuration in ${options.stateDir}; ` +
            `run ${clientCommandLine("install", ["-server", "HOST:PORT", "-key", "XXXX-XXXX-XXXX"], options.stateDir, process.env)}`,
        );
        return EXIT_NEEDS_OPERATOR;
      }
      const pinned = config.ca_fingerprint !== undefined;
      const trusted = pinned ? await trustPinnedRoot(config, options, false) : "ok";
      let outcome: Outcome;
      if (trusted !== "ok") outcome = trusted;
      else {
        const { route, identity } = chooseRoute(config, options, mtlsUnreachable);
        outcome = await connectOnce(config, route.kind === "key" ? readKey(options.stateDir) : null, route, options, stop.signal);
        if (outcome.kind === "retry" && outcome.unreachable !== undefined) {
          if (pinned) {
            // Over TLS to the pinned root: was it the network, or is this another server now?
            const recheck = await trustPinnedRoot(config, options, true);
            if (recheck !== "ok" && recheck.kind === "operator") outcome = recheck;
          } else if (route.kind === "certificate") {
            mtlsUnreachable = true;
            log(
              `${outcome.message}; registering over ${serverUrl(config.server)} meanwhile ` +
                "(host reports need the mTLS listener: check -mtls-port, and that the port is open)",
            );
            continue;
          } else if (identity) {
            // Neither listener answers: the server is down; the next attempt tries mTLS first again.
            mtlsUnreachable = false;
          }
        } else if (route.kind === "key" && outcome.kind === "retry" && outcome.registered) {
          mtlsUnreachable = false;
        }
      }
      switch (outcome.kind) {
        case "stopped":
          return 0;
        case "operator":
          log(outcome.message);
          return EXIT_NEEDS_OPERATOR;
        case "switch":
          log(outcome.message);
          mtlsUnreachable = false;
          continue;
        case "auth_required":
        case "auth_failed": {
          const reason = outcome.kind === "auth_required" ? outcome.kind : outcome.reason;
          log(`${outcome.message}: ${authHint(reason, config, options.stateDir)}`);
          if (!options.interactive) return EXIT_NEEDS_OPERATOR;
          // Someone is at a terminal: a (new) key typed here is saved and tried at once.
          const key = await askLine("Enter the authentication key (empty to exit): ");
          if (!key) {
            log("no key entered; exiting");
            return EXIT_NEEDS_OPERATOR;
          }
          writeKey(options.stateDir, key);
          log(`key saved in ${options.stateDir}; registering again`);
          failures = 0;
          continue;
        }
        case "revoked":
          // Registering again tells the agent, and the log, why: normally AUTH_FAILED.
          log(`the server closed the connection: ${outcome.reason || "client revoked"}; registering again`);
          failures = 0;
          continue;
        case "certificate_refused":
        case "retry": {
          if (outcome.kind === "certificate_refused") {
            // The certificate is no use any more: register with the key and get a new one.
            dropIdentity(options.stateDir);
            mtlsUnreachable = false;
          } else if (outcome.registered) failures = 0;
          const backoffMs = Math.min(options.retryMaxSeconds * 1000, 1000 * 2 ** failures);
          // Random jitter over the upper half of the backoff keeps a fleet from reconnecting in lockstep after a restart.
          const retryAfterMs = outcome.kind === "retry" ? (outcome.retryAfterSeconds ?? 0) * 1000 : 0;
          const waitMs = Math.max(retryAfterMs, backoffMs / 2 + Math.random() * (backoffMs / 2));
          failures = Math.min(failures + 1, 30);
          const then = outcome.kind === "certificate_refused" ? "registering with the key" : "retrying";
          log(`${outcome.message}; ${then} in ${(waitMs / 1000).toFixed(1)} s`);
          await sleep(waitMs, stop.signal);
          if (stop.signal.aborted) return 0;
          continue;
        }
      }
    }
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    options.signal?.removeEventListener("abort", onStop);
  }
}
