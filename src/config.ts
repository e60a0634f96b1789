/**
 * Server configuration: flags > environment (LATCHKEY_*) > `latchkey.json` in the data
 * directory > defaults, parsed once with valibot into a `Config`.
 */
import * as v from "valibot";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { flagValue, UsageError, type FlagSpec, type ParsedArgs } from "./cli/args.ts";
import type { ServiceOptions } from "./core/services.ts";
import { isIP } from "node:net";
import { parseCidr } from "./http/client-address.ts";

export const CONFIG_FILE = "latchkey.json";

const hostPort = v.pipe(
  v.string(),
  v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, "must be HOST:PORT, e.g. 0.0.0.0:9000"),
  v.check((s) => Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535, "port must be 0-65535"),
);
const seconds = (min: number, max: number) =>
  v.pipe(
    v.union([v.number(), v.pipe(v.string(), v.regex(/^\d+$/), v.transform(Number))], "must be a whole number"),
    v.integer("must be a whole number"),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(max, `must be at most ${max}`),
  );
const bytes = (min: number, max: number) => seconds(min, max);
const count = (min: number, max: number) => seconds(min, max);
/** Extra names for the mTLS listener's certificate: DNS names or IP addresses. */
const sanList = v.pipe(
  v.union([v.string(), v.array(v.string())], "must be NAME[,NAME], e.g. keys.example.com,10.0.0.5"),
  v.transform((value) => (Array.isArray(value) ? value : value.split(",")).map((n) => n.trim()).filter((n) => n !== "")),
  v.check(
    (list) =>
      list.every(
        (n) =>
          isIP(n) !== 0 ||
          /^(?=.{1,253}$)(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(n),
      ),
    "must be DNS names or IP addresses, e.g. keys.example.com,10.0.0.5",
  ),
);
const cidrList = v.pipe(
  v.union([v.string(), v.array(v.string())], "must be CIDR[,CIDR], e.g. 127.0.0.1/32,10.0.0.0/8"),
  v.transform((value) => (Array.isArray(value) ? value : value.split(",")).map((c) => c.trim()).filter((c) => c !== "")),
  v.check(
    (list) => list.every((c) => parseCidr(c) !== null),
    "must be CIDR[,CIDR] of IPv4 or IPv6 addresses, e.g. 127.0.0.1/32,10.0.0.0/8",
  ),
);
const bool = v.union([
  v.boolean(),
  v.pipe(
    v.picklist(["true", "false", "1", "0"], "must be true or false"),
    v.transform((s) => s === "true" || s === "1"),
  ),
]);

/** A PostgreSQL connection URL; its password, if any, is never logged. */
const databaseUrl = v.pipe(
  v.string(),
  v.regex(/^postgres(ql)?:\/\/\S+$/, "must be a PostgreSQL URL, e.g. postgres://latchkey:secret@db.example:5432/latchkey"),
  v.check((s) => URL.canParse(s), "must be a PostgreSQL URL, e.g. postgres://latchkey:secret@db.example:5432/latchkey"),
);

/** Every setting, named as its flag. The schema is also the config file's schema. */
const settingsSchema = v.strictObject({
  database: v.optional(databaseUrl),
  listen: v.optional(hostPort, "0.0.0.0:9000"),
  "mtls-listen": v.optional(hostPort, "0.0.0.0:9443"),
  "tls-cert": v.optional(v.pipe(v.string(), v.minLength(1))),
  "tls-key": v.optional(v.pipe(v.string(), v.minLength(1))),
  "require-auth-key": v.optional(bool),
  "log-format": v.optional(v.picklist(["text", "json"], "must be text or json"), "text"),
  "legacy-challenge-login": v.optional(bool, false),
  "session-idle": v.optional(seconds(10, 30 * 24 * 3600), 300),
  "session-absolute": v.optional(seconds(60, 365 * 24 * 3600), 24 * 3600),
  "ws-idle": v.optional(seconds(5, 24 * 3600), 600),
  "ws-auth-timeout": v.optional(seconds(1, 3600), 10),
  "ws-unauth-per-address": v.optional(count(1, 1_000_000), 64),
  "max-connections": v.optional(count(0, 10_000_000), 0),
  "ws-send-buffer": v.optional(bytes(64 * 1024, 1024 * 1024 * 1024), 4 * 1024 * 1024),
  "trusted-proxy": v.optional(cidrList, []),
  san: v.optional(sanList, []),
  "max-body": v.optional(bytes(1024, 64 * 1024 * 1024), 1024 * 1024),
  "max-frame": v.optional(bytes(1024, 16 * 1024 * 1024), 256 * 1024),
  "receipt-ttl": v.optional(seconds(60, 366 * 24 * 3600), 7 * 24 * 3600),
  "receipt-grace": v.optional(seconds(0, 366 * 24 * 3600), 3 * 24 * 3600),
  "client-cert-days": v.optional(count(1, 3650), 30),
  "node-lease": v.optional(seconds(3, 300), 15),
});

type Settings = v.InferOutput<typeof settingsSchema>;

export interface Config {
  dataDir: string;
  /** PostgreSQL to share with other nodes; without it, SQLite in the data directory. */
  databaseUrl?: string;
  listen: { hostname: string; port: number };
  mtlsListen: { hostname: string; port: number };
  tls?: { cert: string; key: string };
  /** Only set when a flag, variable or the config file says so; otherwise the stored setting stands. */
  requireAuthKey?: boolean;
  logFormat: "text" | "json";
  legacyChallengeLogin: boolean;
  sessionIdleSeconds: number;
  sessionAbsoluteSeconds: number;
  wsIdleSeconds: number;
  wsAuthTimeoutSeconds: number;
  wsUnauthenticatedPerAddress: number;
  /** WebSockets at most: the flag, or (0) below the process's open-file limit with a reserve. */
  maxConnections: number;
  wsSendBufferBytes: number;
  /** Proxies whose X-Forwarded-For / Forwarded headers name the client (CIDRs). */
  trustedProxies: string[];
  /** Names the mTLS listener's certificate carries besides localhost, the loopback addresses and the hostname. */
  sans: string[];
  maxBodyBytes: number;
  maxFrameBytes: number;
  receiptTtlSeconds: number;
  receiptGraceSeconds: number;
  /** Validity of an enrolled client's certificate, in days. */
  clientCertificateDays: number;
  /** How long this node's hold on its clients lasts without renewal (several nodes on one database). */
  nodeLeaseSeconds: number;
}

export const dataDirFlag: FlagSpec = {
  name: "data-dir",
  value: "DIR",
  help: "data directory (default ./data, or /var/lib/latchkey for a root service)",
};

export const databaseFlag: FlagSpec = {
  name: "database",
  value: "URL",
  help: "PostgreSQL shared by several nodes, postgres://USER:PASSWORD@HOST:PORT/DB (default: SQLite in the data directory)",
};

export const serverFlags: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "HTTP and WebSocket listener (default 0.0.0.0:9000)" },
  { name: "mtls-listen", value: "HOST:PORT", help: "mutual-TLS listener for enrolled hosts (default 0.0.0.0:9443)" },
  { name: "san", value: "NAME", repeat: true, help: "another name (DNS or IP) in the mTLS listener's certificate; repeat or NAME,NAME" },
  dataDirFlag,
  databaseFlag,
  { name: "tls-cert", value: "FILE", help: "PEM certificate: serve the main listener over HTTPS" },
  { name: "tls-key", value: "FILE", help: "PEM private key for --tls-cert" },
  { name: "require-auth-key", boolean: true, help: "clients must present a pre-shared key to register" },
  { name: "log-format", value: "text|json", help: "log line format (default text)" },
  { name: "legacy-challenge-login", boolean: true, help: "enable the wsauth nonce challenge for imported accounts" },
  { name: "session-idle", value: "SECONDS", help: "session idle timeout (default 300)" },
  { name: "session-absolute", value: "SECONDS", help: "session absolute lifetime (default 86400)" },
  { name: "ws-idle", value: "SECONDS", help: "close WebSockets silent this long (default 600)" },
  { name: "ws-auth-timeout", value: "SECONDS", help: "close WebSockets that neither sign in nor register this long (default 10)" },
  { name: "ws-unauth-per-address", value: "N", help: "WebSockets one address may hold before they sign in or register (default 64)" },
  { name: "max-connections", value: "N", help: "WebSockets at most (default 0: below the open-file limit, with a reserve)" },
  { name: "ws-send-buffer", value: "BYTES", help: "unread reply bytes before a WebSocket peer is disconnected (default 4194304)" },
  { name: "trusted-proxy", value: "CIDR[,CIDR]", help: "proxies allowed to name the client in X-Forwarded-For/Forwarded (default none)" },
  { name: "max-body", value: "BYTES", help: "largest accepted request body (default 1048576)" },
  { name: "max-frame", value: "BYTES", help: "largest accepted WebSocket frame (default 262144)" },
  { name: "receipt-ttl", value: "SECONDS", help: "lifetime of signed license receipts (default 604800, 7 days)" },
  { name: "receipt-grace", value: "SECONDS", help: "offline grace past a receipt's expiry (default 259200, 3 days)" },
  { name: "client-cert-days", value: "DAYS", help: "validity of an enrolled client's certificate; renewed at 2/3 (default 30)" },
  {
    name: "node-lease",
    value: "SECONDS",
    help: "with several nodes: how soon a dead node's clients may connect to another (default 15)",
  },
];

const settingNames = Object.keys(settingsSchema.entries) as (keyof Settings)[];

function envName(setting: string): string {
  if (setting === "database") return "LATCHKEY_DATABASE_URL";
  return "LATCHKEY_" + setting.toUpperCase().replaceAll("-", "_");
}

/** The data directory: flag, then LATCHKEY_DATA_DIR, then the default. */
export function resolveDataDir(args: ParsedArgs, env: Record<string, string | undefined>): string {
  const explicit = flagValue(args, "data-dir") ?? env.LATCHKEY_DATA_DIR;
  if (explicit) return explicit;
  // A root process started by systemd (INVOCATION_ID is set) is a service: use the system path.
  const isRootService = process.getuid?.() === 0 && env.INVOCATION_ID !== undefined;
  return isRootService ? "/var/lib/latchkey" : "./data";
}

function splitHostPort(value: string): { hostname: string; port: number } {
  const colon = value.lastIndexOf(":");
  const host = value.slice(0, colon).replace(/^\[|\]$/g, "");
  return { hostname: host === "" ? "0.0.0.0" : host, port: Number(value.slice(colon + 1)) };
}

function readConfigFile(dataDir: string): Record<string, unknown> {
  const path = join(dataDir, CONFIG_FILE);
  if (!existsSync(path)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UsageError(`${path} is not valid JSON (${(error as Error).message}); fix or remove it`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`${path} must hold a JSON object of settings named like the server's flags`);
  }
  return parsed as Record<string, unknown>;
}

export function loadConfig(args: ParsedArgs, env: Record<string, string | undefined> = process.env): Config {
  const dataDir = resolveDataDir(args, env);
  const merged: Record<string, unknown> = { ...readConfigFile(dataDir) };
  for (const name of settingNames) {
    const fromEnv = env[envName(name)];
    if (fromEnv !== undefined && fromEnv !== "") merged[name] = fromEnv;
    // A repeated flag (--san) gives all its values; any other, its last.
    const fromFlags = args.flags.get(name);
    if (fromFlags !== undefined && fromFlags.length > 0) merged[name] = name === "san" ? fromFlags.join(",") : fromFlags.at(-1);
  }
  const result = v.safeParse(settingsSchema, merged);
  if (!result.success) {
    const issue = result.issues[0];
    const key = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    const what = issue.type === "strict_object" ? `unknown setting ${JSON.stringify(key)} in ${CONFIG_FILE}` : `--${key} ${issue.message}`;
    throw new UsageError(`invalid configuration: ${what} (flag --${key}, variable ${envName(key)} or ${CONFIG_FILE})`);
  }
  const s = result.output;
  if ((s["tls-cert"] === undefined) !== (s["tls-key"] === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP");
  }
  const config: Config = {
    dataDir,
    listen: splitHostPort(s.listen),
    mtlsListen: splitHostPort(s["mtls-listen"]),
    logFormat: s["log-format"],
    legacyChallengeLogin: s["legacy-challenge-login"],
    sessionIdleSeconds: s["session-idle"],
    sessionAbsoluteSeconds: s["session-absolute"],
    wsIdleSeconds: s["ws-idle"],
    wsAuthTimeoutSeconds: s["ws-auth-timeout"],
    wsUnauthenticatedPerAddress: s["ws-unauth-per-address"],
    maxConnections: s["max-connections"] || defaultMaxConnections(),
    wsSendBufferBytes: s["ws-send-buffer"],
    trustedProxies: s["trusted-proxy"],
    sans: s.san,
    maxBodyBytes: s["max-body"],
    maxFrameBytes: s["max-frame"],
    receiptTtlSeconds: s["receipt-ttl"],
    receiptGraceSeconds: s["receipt-grace"],
    clientCertificateDays: s["client-cert-days"],
    nodeLeaseSeconds: s["node-lease"],
  };
  if (s["tls-cert"] !== undefined && s["tls-key"] !== undefined) config.tls = { cert: s["tls-cert"], key: s["tls-key"] };
  if (s["require-auth-key"] !== undefined) config.requireAuthKey = s["require-auth-key"];
  if (s.database !== undefined) config.databaseUrl = s.database;
  return config;
}

/** The process's open-file limit (Linux), or null when it cannot be read. */
export function openFileLimit(): number | null {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    return soft === undefined || soft === "unlimited" ? null : Number(soft) || null;
  } catch {
    return null;
  }
}

/**
 * WebSockets are kept below the open-file limit with a reserve (a twentieth, at least 256) for
 * the database, HTTP requests such as /healthz and logins, and the listeners themselves.
 */
export function defaultMaxConnections(limit = openFileLimit()): number {
  const files = limit ?? 1024;
  return Math.max(16, files - Math.max(256, Math.floor(files / 20)));
}

/** The settings the services take, for the server and the admin commands alike. */
export function serviceOptions(config: Config): ServiceOptions {
  return {
    sessionIdleSeconds: config.sessionIdleSeconds,
    sessionAbsoluteSeconds: config.sessionAbsoluteSeconds,
    legacyChallengeLogin: config.legacyChallengeLogin,
    receiptTtlSeconds: config.receiptTtlSeconds,
    receiptGraceSeconds: config.receiptGraceSeconds,
    clientCertificateDays: config.clientCertificateDays,
    nodeLeaseSeconds: config.nodeLeaseSeconds,
  };
}
