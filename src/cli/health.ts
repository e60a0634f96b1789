/**
 * `latchkey health`: asks the server on this machine for `GET /healthz` and exits 0 when it is
 * healthy, 1 when it is not. The container image has no curl, so its HEALTHCHECK runs this.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { connect } from "node:tls";
import { dataDirFlag, loadConfig, serverFlags, type Config } from "../config.ts";
import { flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec, type ParsedArgs } from "./args.ts";

/** The server's own flags, by name, with what they mean to this command. */
const serverFlag = (name: string, help: string): FlagSpec => ({ ...serverFlags.find((f) => f.name === name)!, help });

const flags: FlagSpec[] = [
  { name: "url", value: "URL", help: "check this URL instead of the configured listener (e.g. https://keys.example.com:9000/healthz)" },
  { name: "timeout", value: "SECONDS", help: "give up after this long (default 5)" },
  serverFlag("listen", "the server's listener, when not set by LATCHKEY_LISTEN or latchkey.json (default 0.0.0.0:9000)"),
  dataDirFlag,
  serverFlag("tls-cert", "the server's certificate: check over HTTPS, accepting exactly this certificate"),
  serverFlag("tls-key", "the server's key file, which goes with --tls-cert as for the server (not read)"),
];

const usage = "latchkey health [--url URL] [--timeout SECONDS] [--listen HOST:PORT] [--data-dir DIR] [--tls-cert F --tls-key F]";

const description = `Asks the server on this machine whether it is healthy (GET /healthz: it answers and its
database works), for container health checks and monitors. Exits 0 when healthy; 1 when not, when
nothing answers within --timeout, or when the settings cannot be read; 2 for a bad command line.
It finds the server the way 'latchkey server' reads its settings: flags, then LATCHKEY_* variables
(e.g. LATCHKEY_LISTEN), then latchkey.json in the data directory, then defaults; a wildcard listen
address (0.0.0.0, ::) is checked on loopback. With --tls-cert it speaks HTTPS and accepts exactly
that certificate whatever names it holds: the check goes to loopback, where the certificate's public
name cannot match, and sends nothing secret. A server presenting another certificate than the file
(e.g. the file was replaced without a restart) is reported unhealthy. --url checks that URL
instead, with the usual certificate checks.`;

/** Where to ask, and for HTTPS on loopback the SHA-256 fingerprint the server must present. */
interface Target {
  url: URL;
  pin?: { fingerprint: string; file: string };
}

class Unhealthy extends Error {}

function timeoutSeconds(args: ParsedArgs): number {
  const raw = flagValue(args, "timeout");
  if (raw === undefined) return 5;
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || value < 0.1 || value > 300)
    throw new UsageError(`${spelledFlag(args, "timeout")} must be a number of seconds from 0.1 to 300`);
  return value;
}

function urlTarget(args: ParsedArgs, raw: string): Target {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(
      `${spelledFlag(args, "url")} ${JSON.stringify(raw)} must be an http:// or https:// URL, e.g. http://127.0.0.1:9000/healthz`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new UsageError(`${spelledFlag(args, "url")} must be an http:// or https:// URL`);
  if (url.pathname === "/") url.pathname = "/healthz";
  return { url };
}

/** The listener the server would bind, from the same settings, made into an address to connect to. */
function configuredTarget(args: ParsedArgs, env: Record<string, string | undefined>): Target {
  let config: Config;
  try {
    config = loadConfig(args, env);
  } catch (error) {
    throw new Unhealthy(`cannot tell: ${(error as Error).message}`);
  }
  const { hostname, port } = config.listen;
  if (port === 0) throw new Unhealthy("cannot tell: the server listens on port 0 (a random port); pass --url");
  const host = loopbackFor(hostname);
  const url = new URL(`${config.tls ? "https" : "http"}://${isIP(host) === 6 ? `[${host}]` : host}:${port}/healthz`);
  if (!config.tls) return { url };
  let fingerprint: string;
  try {
    fingerprint = new X509Certificate(readFileSync(config.tls.cert)).fingerprint256;
  } catch (error) {
    throw new Unhealthy(`cannot tell: cannot read the certificate ${config.tls.cert} (${(error as Error).message})`);
  }
  return { url, pin: { fingerprint, file: config.tls.cert } };
}

/** A wildcard address accepts connections on every interface, loopback included. */
function loopbackFor(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (isIP(hostname) === 6 && new URL(`http://[${hostname}]/`).hostname === "[::]") return "::1";
  return hostname;
}

/**
 * The fingerprint of the certificate the server presents, from a handshake of its own: Bun's
 * fetch calls checkServerIdentity only after the chain verifies, and cannot take a leaf
 * certificate as its trust anchor, so the pin is checked here and the request then skips
 * verification. The handshake still proves the server holds the certificate's key.
 */
function presentedFingerprint(url: URL, deadline: number): Promise<string> {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host, port: Number(url.port || 443), rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) },
      () => {
        const fingerprint = socket.getPeerCertificate().fingerprint256;
        socket.destroy();
        resolve(fingerprint);
      },
    );
    const timer = setTimeout(
      () => {
        socket.destroy();
        reject(new DOMException("timed out", "TimeoutError"));
      },
      Math.max(0, deadline - Date.now()),
    );
    socket.once("close", () => clearTimeout(timer));
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function probe(target: Target, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  const where = target.url.href;
  try {
    if (target.pin) {
      const presented = await presentedFingerprint(target.url, deadline);
      if (presented !== target.pin.fingerprint) {
        throw new Unhealthy(
          `${where} presents a certificate other than ${target.pin.file} (was the file replaced without restarting the server?)`,
        );
      }
    }
    const res = await fetch(target.url, {
      redirect: "manual",
      signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
      ...(target.pin ? { tls: { rejectUnauthorized: false } } : {}),
    });
    const text = await res.text();
    let body: { status?: unknown; database?: unknown; version?: unknown } = {};
    try {
      body = JSON.parse(text) ?? {};
    } catch {
      // Not JSON: not a latchkey health reply; said below.
    }
    if (res.status === 200 && body.status === "ok")
      return `healthy: ${where} (latchkey ${String(body.version)}, database ${String(body.database)})`;
    const detail = typeof body.database === "string" ? `database ${body.database}` : "not a latchkey health reply";
    throw new Unhealthy(`${where} answered ${res.status}: ${detail}`);
  } catch (error) {
    if (error instanceof Unhealthy) throw error;
    const e = error as Error & { code?: string };
    if (e.name === "TimeoutError" || e.name === "AbortError") throw new Unhealthy(`no answer from ${where} within ${timeoutMs / 1000} s`);
    if (e.code === "ECONNREFUSED" || e.code === "ConnectionRefused")
      throw new Unhealthy(`nothing answers at ${where} (connection refused)`);
    const message = e.message.replace(/\s*For more information, pass `verbose: true`.*$/s, "");
    throw new Unhealthy(`cannot reach ${where}: ${e.code && !message.includes(e.code) ? `${e.code}: ` : ""}${message}`);
  }
}

export async function healthCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  if (args.help) {
    process.stdout.write(renderHelp(usage, description, flags));
    return 0;
  }
  if (args.positionals.length > 0)
    throw new UsageError(`health takes no arguments (got ${JSON.stringify(args.positionals[0])}); flags start with -`);
  const timeoutMs = timeoutSeconds(args) * 1000;
  const url = flagValue(args, "url");
  try {
    const target = url === undefined ? configuredTarget(args, env) : urlTarget(args, url);
    process.stdout.write(`${await probe(target, timeoutMs)}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof Unhealthy)) throw error;
    process.stderr.write(`latchkey: unhealthy: ${error.message}\n`);
    return 1;
  }
}
