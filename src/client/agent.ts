/**
 * `latchkey client run`: connect to the server's /ws, register (`client/register`), keep the
 * connection as the machine's presence with `client/heartbeat`, and reconnect with capped
 * exponential backoff and jitter whenever the server goes away. Key problems follow the woho
 * seed: AUTH_REQUIRED and AUTH_FAILED are logged with the troubleshooting hint for their reason;
 * on a terminal the agent then asks for a key, and without one (a service) it stops with exit 3.
 * The agent goes by the refusal's `reason`, never by the wording of its message.
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
import { machineHostname, readConfig, readKey, writeKey, writeLastContact, type ClientConfig } from "./config.ts";
import { clientCommandLine, EXIT_NEEDS_OPERATOR } from "./install.ts";

const REGISTER_TIMEOUT_MS = 15_000;

export interface AgentOptions {
  stateDir: string;
  heartbeatSeconds: number;
  /** The backoff starts at 1 s and doubles up to this. */
  retryMaxSeconds: number;
  /** Whether a person is at a terminal to type a missing key. */
  interactive: boolean;
  log?: (message: string) => void;
}

/** How one connection ended. */
export type Outcome =
  | { kind: "stopped" }
  | { kind: "auth_required"; message: string }
  | { kind: "auth_failed"; reason: string; message: string }
  | { kind: "revoked"; reason: string }
  | { kind: "retry"; registered: boolean; message: string; retryAfterSeconds?: number };

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

/** One connection: open, register, heartbeat until it ends; says how it ended. */
function connectOnce(config: ClientConfig, key: string | null, options: AgentOptions, signal: AbortSignal): Promise<Outcome> {
  const log = options.log ?? logLine;
  const url = serverUrl(config.server);
  const heartbeatMs = options.heartbeatSeconds * 1000;
  return new Promise<Outcome>((resolve) => {
    let settled = false;
    let opened = false;
    let registered = false;
    let nextId = 1;
    let lastReplyAt = Date.now();
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    const ws = new WebSocket(url);
    const registerTimer = setTimeout(
      () =>
        finish({ kind: "retry", registered, message: `no answer to client/register from ${url} within ${REGISTER_TIMEOUT_MS / 1000} s` }),
      REGISTER_TIMEOUT_MS,
    );
    const onAbort = () => finish({ kind: "stopped" });
    signal.addEventListener("abort", onAbort);

    function finish(outcome: Outcome): void {
      if (settled) return;
      settled = true;
      clearTimeout(registerTimer);
      clearInterval(heartbeat);
      signal.removeEventListener("abort", onAbort);
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "client stopping");
      resolve(outcome);
    }

    function send(name: string, args?: unknown): void {
      const envelope: RequestEnvelope = { namespace: "client", name, id: `${name}-${nextId++}`, args };
      ws.send(JSON.stringify(envelope));
    }

    ws.onopen = () => {
      opened = true;
      const args: Record<string, string> = {
        uuid: config.uuid,
        name: config.name,
        hostname: machineHostname(),
        version: VERSION,
        os: `${process.platform}-${process.arch}`,
      };
      if (key !== null) args.auth_key = key;
      send("register", args);
    };

    ws.onmessage = (event) => {
      lastReplyAt = Date.now();
      let message: ResponseEnvelope | ErrorEnvelope | { namespace: string; name: string; id?: unknown; args?: unknown };
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (message.namespace !== "rpc" || typeof message.id !== "string" || !message.id.startsWith("register-")) return;
      clearTimeout(registerTimer);
      if (message.name === "error") {
        return finish(registerErrorOutcome((message as ErrorEnvelope).args, registered, config));
      }
      const result = (message as ResponseEnvelope).args as { uuid?: string; group?: string | null; reconnect?: boolean };
      registered = true;
      writeLastContact(options.stateDir, new Date());
      log(
        `registered with ${url} as ${config.name} (uuid ${result.uuid ?? config.uuid}` +
          `${result.group ? `, group ${result.group}` : ""}${result.reconnect === false ? ", key bound to this client" : ""})`,
      );
      heartbeat = setInterval(() => {
        // A server that stopped answering (a half-open connection) is treated as gone.
        if (Date.now() - lastReplyAt > 3 * heartbeatMs)
          return finish({
            kind: "retry",
            registered,
            message: `no answer from ${url} for ${Math.round((Date.now() - lastReplyAt) / 1000)} s`,
          });
        send("heartbeat");
      }, heartbeatMs);
    };

    ws.onclose = (event) => {
      if (event.code === CLOSE_CLIENT_REVOKED) return finish({ kind: "revoked", reason: event.reason });
      if (!opened) return finish({ kind: "retry", registered, message: `cannot connect to ${url}` });
      finish({
        kind: "retry",
        registered,
        message: `connection to ${url} closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`,
      });
    };
  });
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
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  try {
    let failures = 0;
    for (;;) {
      const config = readConfig(options.stateDir);
      if (!config) {
        log(
          `not installed: no client configuration in ${options.stateDir}; ` +
            `run ${clientCommandLine("install", ["-server", "HOST:PORT", "-key", "XXXX-XXXX-XXXX"], options.stateDir, process.env)}`,
        );
        return EXIT_NEEDS_OPERATOR;
      }
      const outcome = await connectOnce(config, readKey(options.stateDir), options, stop.signal);
      switch (outcome.kind) {
        case "stopped":
          return 0;
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
        case "retry": {
          if (outcome.registered) failures = 0;
          const backoffMs = Math.min(options.retryMaxSeconds * 1000, 1000 * 2 ** failures);
          // Random jitter over the upper half of the backoff keeps a fleet from reconnecting in lockstep after a restart.
          const waitMs = Math.max((outcome.retryAfterSeconds ?? 0) * 1000, backoffMs / 2 + Math.random() * (backoffMs / 2));
          failures = Math.min(failures + 1, 30);
          log(`${outcome.message}; retrying in ${(waitMs / 1000).toFixed(1)} s`);
          await sleep(waitMs, stop.signal);
          if (stop.signal.aborted) return 0;
          continue;
        }
      }
    }
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
  }
}
