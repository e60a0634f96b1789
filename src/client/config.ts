/**
 * What the client agent keeps on disk, in its state directory: `client.json` (server, name, UUID,
 * the pinned root's fingerprint, the mTLS port), `auth_key` (the pre-shared key, mode 0600),
 * `last_contact` (the time and address of the last successful registration), and its certificate
 * identity (`client.key`, `client.pem`, `ca.pem`: see certificate.ts) and `last_report` (report.ts).
 * Every file is written temp → fsync → rename.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, rmdirSync } from "node:fs";
import { homedir, hostname as osHostname } from "node:os";
import { join, resolve } from "node:path";
import { writeFileAtomic } from "../core/files.ts";

/** Where a root (service) install keeps its state; shared with the server's default data dir. */
export const SERVICE_STATE_DIR = "/var/lib/latchkey";
export const CONFIG_FILE = "client.json";
export const KEY_FILE = "auth_key";
export const CONTACT_FILE = "last_contact";
/** The agent's private key (PKCS#8 PEM, 0600), its certificate and the server's root. */
export const CLIENT_KEY_FILE = "client.key";
export const CLIENT_CERT_FILE = "client.pem";
export const CA_FILE = "ca.pem";
export const REPORT_FILE = "last_report";

/** The mutual-TLS listener's port unless `-mtls-port` says otherwise (the server's `--mtls-listen` default). */
export const DEFAULT_MTLS_PORT = 9443;

export interface ClientConfig {
  /** HOST:PORT, or a ws:// / wss:// URL. */
  server: string;
  name: string;
  uuid: string;
  /**
   * The SHA-256 of the server's root certificate (DER), lower-case hex (`-ca-fingerprint`): with
   * it the agent registers over TLS to the mTLS listener, trusting only that root.
   */
  ca_fingerprint?: string;
  /** The mutual-TLS listener's port on the server's host (`-mtls-port`; DEFAULT_MTLS_PORT unless given). */
  mtls_port?: number;
  /** The port the host reports announce (`-report-port`; 0 unless given). */
  report_port?: number;
}

/** --state-dir, then LATCHKEY_CLIENT_DIR, then /var/lib/latchkey for root or ~/.config/latchkey. */
export function resolveStateDir(flag: string | undefined, env: Record<string, string | undefined>): string {
  const chosen = flag ?? env.LATCHKEY_CLIENT_DIR;
  if (chosen) return resolve(chosen);
  if (process.getuid?.() === 0) return SERVICE_STATE_DIR;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config");
  return join(base, "latchkey");
}

/** What a later `latchkey client ...` needs to find this state directory: nothing for the default one. */
export function stateDirFlag(stateDir: string, env: Record<string, string | undefined>): string[] {
  const fallback = resolveStateDir(undefined, { ...env, LATCHKEY_CLIENT_DIR: undefined });
  return resolve(stateDir) === fallback ? [] : ["--state-dir", resolve(stateDir)];
}

export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export function readConfig(dir: string): ClientConfig | null {
  const path = join(dir, CONFIG_FILE);
  if (!existsSync(path)) return null;
  let parsed: Partial<ClientConfig>;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8")) as Partial<ClientConfig>;
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${(error as Error).message}); run latchkey client install again`);
  }
  if (typeof parsed.server !== "string" || typeof parsed.name !== "string" || typeof parsed.uuid !== "string") {
    throw new Error(`${path} lacks server, name or uuid; run latchkey client install again`);
  }
  const config: ClientConfig = { server: parsed.server, name: parsed.name, uuid: parsed.uuid };
  if (parsed.ca_fingerprint !== undefined) {
    const pin = typeof parsed.ca_fingerprint === "string" ? normalizeFingerprint(parsed.ca_fingerprint) : null;
    if (pin === null) throw new Error(`${path}: ca_fingerprint is not a SHA-256 fingerprint; run latchkey client install again`);
    config.ca_fingerprint = pin;
  }
  for (const field of ["mtls_port", "report_port"] as const) {
    const value = parsed[field];
    if (value === undefined) continue;
    if (!isPort(value)) throw new Error(`${path}: ${field} is not a port number; run latchkey client install again`);
    config[field] = value;
  }
  return config;
}

function isPort(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 65535;
}

/**
 * A SHA-256 fingerprint as people copy it (hex, with or without colons or spaces, any case) →
 * 64 lower-case hex digits; null when it is not one.
 */
export function normalizeFingerprint(text: string): string | null {
  const hex = text.trim().replace(/[:\s]/g, "").toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
}

/** 64 hex digits as `openssl x509 -fingerprint -sha256` and `latchkey ca show` print them: AB:CD:... */
export function colonFingerprint(hex: string): string {
  return hex.toUpperCase().replace(/(..)(?=.)/g, "$1:");
}

export function writeConfig(dir: string, config: ClientConfig): void {
  ensureStateDir(dir);
  writeFileAtomic(join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + "\n", 0o600);
}

export function readKey(dir: string): string | null {
  const path = join(dir, KEY_FILE);
  if (!existsSync(path)) return null;
  const key = readFileSync(path, "utf8").trim();
  return key === "" ? null : key;
}

export function writeKey(dir: string, key: string): void {
  ensureStateDir(dir);
  writeFileAtomic(join(dir, KEY_FILE), key.trim() + "\n", 0o600);
}

export function readLastContact(dir: string): string | null {
  const path = join(dir, CONTACT_FILE);
  if (!existsSync(path)) return null;
  return readFileSync(path, "utf8").trim() || null;
}

/** The time of a successful registration, and where: `2026-01-01T00:00:00.000Z wss://host:9443/ws (client certificate)`. */
export function writeLastContact(dir: string, at: Date, via?: string): void {
  writeFileAtomic(join(dir, CONTACT_FILE), `${at.toISOString()}${via ? ` ${via}` : ""}\n`, 0o600);
}

/**
 * Removes the agent's own files only: as root the state directory is also the server's default
 * data directory, so the directory itself goes only when nothing else is left in it.
 */
export function purgeState(dir: string): string[] {
  const removed: string[] = [];
  for (const name of [CONFIG_FILE, KEY_FILE, CONTACT_FILE, CLIENT_KEY_FILE, CLIENT_CERT_FILE, CA_FILE, REPORT_FILE]) {
    const path = join(dir, name);
    if (!existsSync(path)) continue;
    rmSync(path, { force: true });
    removed.push(path);
  }
  try {
    rmdirSync(dir);
  } catch {
    // Not empty (or already gone): leave it.
  }
  return removed;
}

/** The machine's hostname made into a valid DNS name (the server checks RFC 1123 labels). */
export function machineHostname(): string {
  const labels = osHostname()
    .split(".")
    .map((label) =>
      label
        .replace(/[^A-Za-z0-9-]/g, "-")
        .replace(/^-+|-+$/g, "")
        .slice(0, 63),
    )
    .filter((label) => label !== "");
  return labels.join(".").slice(0, 253) || "localhost";
}
